// consume() against a real bucketd: every transition once and in order, long-polls, a restart
// that resumes from the saved cursor, stream resets, retries of a failed handler, backoff on
// 503 and on a dead server, and a stop by AbortSignal.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  consume,
  createBucketdClient,
  type BucketdClient,
  type ConsumeOptions,
  type Cursor,
  type StreamReset,
  type Transition,
} from "../src/index.js";
import { Bucketd, tempDir } from "./bucketd.js";

const FAST_RETRY = { initialDelayMs: 5, maxDelayMs: 20 };

// "power": two uses within a day; the clock moving two days on makes every member leave.
async function defineBuckets(client: BucketdClient): Promise<void> {
  const { response } = await client.POST("/v1/buckets", {
    body: {
      id: "power",
      name: "Power users",
      entryLimit: "unlimited",
      criteria: {
        type: "event",
        eventName: "used",
        check: "count",
        operator: "gte",
        value: 2,
        within: "1d",
      },
    },
  });
  assert.equal(response.status, 201);
  const manual = await client.PUT("/v1/buckets/{bucketId}", {
    params: { path: { bucketId: "vip" } },
    body: { name: "VIP", kind: "manual" },
  });
  assert.equal(manual.response.status, 201);
}

async function use(client: BucketdClient, ...users: string[]): Promise<void> {
  const events = users.flatMap((userId) => [
    { userId, event: "used" },
    { userId, event: "used" },
  ]);
  const { data, error } = await client.POST("/v1/events", { body: events });
  assert.ok(data, JSON.stringify(error));
  assert.equal(data.accepted, events.length);
}

async function advance(client: BucketdClient, now: string): Promise<void> {
  const { data, error } = await client.POST("/v1/clock", { body: { now } });
  assert.ok(data, JSON.stringify(error));
}

async function stream(client: BucketdClient, afterSeq = 0): Promise<Transition[]> {
  const { data, error } = await client.GET("/v1/transitions", {
    params: { query: { after: afterSeq, limit: 10000 } },
  });
  assert.ok(data, JSON.stringify(error));
  return data.transitions;
}

// A cursor store in memory, recording every save.
class MemoryCursor {
  saves: Cursor[] = [];
  constructor(public cursor: Cursor | null = null) {}
  load = () => this.cursor;
  save = (cursor: Cursor) => {
    this.cursor = { ...cursor };
    this.saves.push(this.cursor);
  };
}

interface Run {
  delivered: Transition[];
  keys: string[];
  resets: StreamReset[];
  errors: unknown[];
  done: Promise<void>;
}

// Runs consume() until `count` transitions were handled (then aborts it), with `overrides`.
function consumeUntil(
  client: BucketdClient,
  store: MemoryCursor,
  count: number,
  overrides: Partial<ConsumeOptions> = {},
): Run {
  const controller = new AbortController();
  const run: Run = { delivered: [], keys: [], resets: [], errors: [], done: Promise.resolve() };
  const handler = overrides.handler;
  run.done = consume({
    client,
    loadCursor: store.load,
    saveCursor: store.save,
    onReset: (reset) => {
      run.resets.push(reset);
      return 0;
    },
    onError: (error) => run.errors.push(error),
    retry: FAST_RETRY,
    waitSeconds: 30,
    signal: controller.signal,
    ...overrides,
    handler: async (transition, delivery) => {
      if (handler) await handler(transition, delivery);
      run.delivered.push(transition);
      run.keys.push(delivery.idempotencyKey);
      if (run.delivered.length === count) controller.abort();
    },
  });
  return run;
}

const seqs = (ts: Transition[]) => ts.map((t) => t.seq);

describe("consume() against a real bucketd", () => {
  const dir = tempDir();
  let server: Bucketd;
  let client: BucketdClient;

  before(async () => {
    server = await Bucketd.start(`${dir.path}/a`);
    client = server.client();
    await defineBuckets(client);
    await use(client, "u1", "u2", "u3");
    await advance(client, "2026-01-03T00:00:00Z");
  });
  after(async () => {
    await server.stop();
    dir.remove();
  });

  test("hands every transition to the handler once, in seq order, with its key, saving the cursor after each", async () => {
    const expected = await stream(client);
    assert.deepEqual(
      expected.map((t) => t.kind),
      ["entered", "entered", "entered", "left", "left", "left"],
    );
    const store = new MemoryCursor();
    const savedWhenHandled: number[] = [];
    const run = consumeUntil(client, store, expected.length, {
      handler: () => {
        savedWhenHandled.push(store.cursor?.after ?? 0);
      },
    });
    await run.done;
    assert.deepEqual(run.delivered, expected);
    assert.deepEqual(run.keys, expected.map((t) => t.idempotencyKey));
    // At least once: a transition's cursor is saved only after its handler resolved.
    assert.deepEqual(savedWhenHandled, [0, ...seqs(expected).slice(0, -1)]);
    const { data: state } = await client.GET("/v1/state");
    assert.deepEqual(store.cursor, { streamId: state?.streamId, after: expected.at(-1)?.seq });
    assert.deepEqual(run.resets, []);
    assert.deepEqual(run.errors, []);
  });

  test("a long-poll that is caught up delivers what arrives while it waits", async () => {
    const before = await stream(client);
    const store = new MemoryCursor({ streamId: null, after: before.at(-1)?.seq ?? 0 });
    let waiting!: () => void;
    const polled = new Promise<void>((resolve) => (waiting = resolve));
    // The first poll comes back empty only when its wait ends: tell the test once it is sent.
    const run = consumeUntil(client, store, 2, {
      client: createBucketdClient({
        baseUrl: server.baseUrl,
        fetch: (input, init) => {
          waiting();
          return fetch(input, init);
        },
      }),
    });
    await polled;
    await use(client, "u4", "u5");
    await run.done;
    const arrived = await stream(client, before.at(-1)?.seq);
    assert.deepEqual(run.delivered, arrived);
    assert.deepEqual(
      arrived.map((t) => `${t.kind} ${t.userId}`),
      ["entered u4", "entered u5"],
    );
  });

  test("filters by bucket and kind, and the cursor moves past what the filter skipped", async () => {
    await client.POST("/v1/buckets/{bucketId}/members", {
      params: { path: { bucketId: "vip" } },
      body: { userId: "m1" },
    });
    const all = await stream(client);
    const store = new MemoryCursor();
    const run = consumeUntil(client, store, 1, { bucket: "vip", kinds: ["entered"] });
    await run.done;
    assert.deepEqual(
      run.delivered.map((t) => `${t.bucketId} ${t.kind} ${t.userId}`),
      ["vip entered m1"],
    );
    assert.equal(store.cursor?.after, all.find((t) => t.bucketId === "vip")?.seq);
  });

  test("a failed handler gets the same transition again; nothing after it comes first", async () => {
    const expected = await stream(client);
    const store = new MemoryCursor();
    let failures = 0;
    const attempts: number[] = [];
    const run = consumeUntil(client, store, expected.length, {
      handler: (transition) => {
        attempts.push(transition.seq);
        if (transition.seq === 2 && failures++ === 0) throw new Error("receiver down");
      },
    });
    await run.done;
    assert.deepEqual(attempts, [1, 2, ...seqs(expected).slice(1)]);
    assert.deepEqual(run.delivered, expected);
    assert.equal(run.errors.length, 1);
    assert.match(String(run.errors[0]), /receiver down/);
  });

  test("backs off on a 503 and goes on", async () => {
    const expected = await stream(client);
    let unavailable = 2;
    const flaky = createBucketdClient({
      baseUrl: server.baseUrl,
      fetch: async (input, init) => {
        if (unavailable-- > 0) {
          const body = { error: { code: "unavailable", message: "starting" }, status: "starting" };
          return new Response(JSON.stringify(body), {
            status: 503,
            headers: { "Content-Type": "application/json" },
          });
        }
        return fetch(input, init);
      },
    });
    const run = consumeUntil(flaky, new MemoryCursor(), expected.length, { client: flaky });
    await run.done;
    assert.deepEqual(run.delivered, expected);
    assert.deepEqual(
      run.errors.map((e) => (e as { status?: number }).status),
      [503, 503],
    );
  });

  test("backs off while nothing listens, and stops on the AbortSignal", async () => {
    const dead = createBucketdClient({ baseUrl: "http://127.0.0.1:1" });
    const controller = new AbortController();
    let handled = 0;
    let errors = 0;
    await consume({
      client: dead,
      loadCursor: () => null,
      saveCursor: () => {},
      onReset: () => null,
      handler: () => {
        handled++;
      },
      retry: FAST_RETRY,
      signal: controller.signal,
      onError: () => {
        if (++errors === 3) controller.abort();
      },
    });
    assert.equal(errors, 3);
    assert.equal(handled, 0);
  });
});

describe("consume() across restarts and resets", () => {
  const dir = tempDir();
  after(() => dir.remove());

  test("a restart of bucketd (and of the consumer) resumes from the saved cursor", async () => {
    let server = await Bucketd.start(`${dir.path}/r`);
    await defineBuckets(server.client());
    await use(server.client(), "u1", "u2");
    const store = new MemoryCursor();
    const first = consumeUntil(server.client(), store, 1);
    await first.done;
    assert.equal(store.cursor?.after, 1);
    await server.stop();

    server = await Bucketd.start(`${dir.path}/r`);
    try {
      await advance(server.client(), "2026-01-03T00:00:00Z");
      const expected = await stream(server.client(), 1);
      assert.equal(expected.length, 3); // entered u2, left u1, left u2
      const second = consumeUntil(server.client(), store, expected.length);
      await second.done;
      assert.deepEqual(second.delivered, expected);
      assert.deepEqual(second.resets, []);
    } finally {
      await server.stop();
    }
  });

  test("a cursor beyond a new stream's end is reported as a reset, and resumes where onReset says", async () => {
    const old = await Bucketd.start(`${dir.path}/old`);
    await defineBuckets(old.client());
    await use(old.client(), "u1", "u2", "u3");
    const store = new MemoryCursor();
    await consumeUntil(old.client(), store, 3).done;
    await old.stop();
    const oldCursor = store.cursor;

    // The data dir is replaced by an empty one: a new stream, shorter than the cursor.
    const fresh = await Bucketd.start(`${dir.path}/fresh`);
    try {
      await defineBuckets(fresh.client());
      await use(fresh.client(), "v1");
      const { data: state } = await fresh.client().GET("/v1/state");
      const run = consumeUntil(fresh.client(), store, 1);
      await run.done;
      assert.deepEqual(run.resets, [
        { reason: "cursor_ahead", cursor: oldCursor, streamId: state?.streamId, lastSeq: 1 },
      ]);
      assert.deepEqual(
        run.delivered.map((t) => t.userId),
        ["v1"],
      );
      assert.deepEqual(store.saves.slice(-2), [
        { streamId: state?.streamId, after: 0 },
        { streamId: state?.streamId, after: 1 },
      ]);
    } finally {
      await fresh.stop();
    }
  });

  test("a cursor of another stream id is reported as a reset even when the seq exists", async () => {
    const server = await Bucketd.start(`${dir.path}/other`);
    try {
      await defineBuckets(server.client());
      await use(server.client(), "w1", "w2");
      const { data: state } = await server.client().GET("/v1/state");
      const stale = { streamId: "another-stream", after: 1 };
      const store = new MemoryCursor(stale);
      const skipPast = consumeUntil(server.client(), store, 0, {
        onReset: (reset) => {
          skipPast.resets.push(reset);
          return null; // stop: the operator decides
        },
      });
      await skipPast.done;
      assert.deepEqual(skipPast.resets, [
        { reason: "stream_changed", cursor: stale, streamId: state?.streamId, lastSeq: 2 },
      ]);
      assert.deepEqual(store.cursor, stale); // stopping saved nothing
    } finally {
      await server.stop();
    }
  });
});
