// preview(), explain() and getUser() against a real bucketd on a manual clock: exact answers
// for a windowed sum, the preview's entering/leaving against the stored bucket, the refusals
// as BucketdError with the server's code and field, and nothing logged by either question.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  BucketdError,
  explain,
  getUser,
  preview,
  type BucketdClient,
  type Event,
} from "../src/index.js";
import { Bucketd, tempDir } from "./bucketd.js";

const DAY = "2026-01-01T00:00:00.000Z";

async function ingest(client: BucketdClient, ...events: Event[]): Promise<void> {
  const { data, error } = await client.POST("/v1/events", { body: events });
  assert.ok(data, JSON.stringify(error));
  assert.equal(data.accepted, events.length);
}

async function advance(client: BucketdClient, now: string): Promise<void> {
  const { data, error } = await client.POST("/v1/clock", { body: { now } });
  assert.ok(data, JSON.stringify(error));
}

async function logSeq(client: BucketdClient): Promise<number> {
  const { data, error } = await client.GET("/v1/state");
  assert.ok(data, JSON.stringify(error));
  return data.logSeq;
}

const bigSpenders = {
  id: "big-spenders",
  name: "Big spenders",
  criteria: {
    type: "event" as const,
    eventName: "purchase",
    check: "sum" as const,
    property: "amount",
    operator: "gte" as const,
    value: 100,
    within: "30d",
  },
};

describe("preview, explain and getUser", () => {
  const dir = tempDir();
  let server: Bucketd;
  let client: BucketdClient;

  before(async () => {
    server = await Bucketd.start(dir.path);
    client = server.client();
    const { response } = await client.POST("/v1/buckets", { body: bigSpenders });
    assert.equal(response.status, 201);
    // At 2026-01-01: u1 spends 60 (below 100), u2 150 (a member), u3 only looks.
    await ingest(
      client,
      {
        userId: "u1",
        event: "purchase",
        email: " Ann@Example.COM ",
        contactProperties: { plan: "pro", seats: 3 },
        properties: { amount: 60 },
      },
      { userId: "u2", event: "purchase", properties: { amount: 150 } },
      { userId: "u3", event: "page.viewed" },
    );
  });

  after(async () => {
    await server.stop();
    dir.remove();
  });

  test("preview counts who a definition would hold, against the stored bucket", async () => {
    const seq = await logSeq(client);
    // The same id with a lower threshold: u1 would enter, u2 stays, nobody leaves.
    const lower = await preview(client, {
      ...bigSpenders,
      criteria: { ...bigSpenders.criteria, value: 50 },
    });
    assert.deepEqual(lower, { count: 2, sample: ["u1", "u2"], entering: 1, leaving: 0 });
    // A higher one: u2 would leave.
    const higher = await preview(client, {
      ...bigSpenders,
      criteria: { ...bigSpenders.criteria, value: 200 },
    });
    assert.deepEqual(higher, { count: 0, sample: [], entering: 0, leaving: 1 });
    // A new id: everyone selected enters.
    const lookers = await preview(client, {
      id: "lookers",
      name: "Lookers",
      criteria: { type: "event", eventName: "page.viewed", check: "exists" },
    });
    assert.deepEqual(lookers, { count: 1, sample: ["u3"], entering: 1, leaving: 0 });
    assert.equal(await logSeq(client), seq, "a preview logs nothing");
  });

  test("preview refuses what a define would, with the field path", async () => {
    await assert.rejects(
      preview(client, {
        id: "broken",
        name: "Broken",
        criteria: {
          type: "event",
          eventName: "purchase",
          check: "sum",
          operator: "gte",
          value: 100,
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof BucketdError);
        assert.equal(e.status, 400);
        assert.equal(e.code, "invalid_argument");
        assert.equal(e.field, "criteria.property");
        return true;
      },
    );
  });

  test("explain says why, since when and until when", async () => {
    const seq = await logSeq(client);
    const below = await explain(client, "big-spenders", "u1");
    assert.equal(below.member, false);
    assert.equal(below.holds, false);
    assert.equal(below.heldSince, null);
    assert.equal(below.next, null);
    assert.equal(below.membership, null);
    assert.deepEqual(below.blockers, []);
    assert.equal(below.legs.length, 1);
    assert.deepEqual(below.legs[0], {
      path: "criteria",
      type: "event",
      check: "sum",
      holds: false,
      heldSince: null,
      next: null,
      value: { aggregate: 60, contributions: 1, capped: false, windowStart: "2025-12-02T00:00:00.000Z" },
    });

    // Ten days on, 50 more: 110 from then until the 60 ages out, 30 days after it occurred.
    await advance(client, "2026-01-11T00:00:00.000Z");
    await ingest(client, { userId: "u1", event: "purchase", properties: { amount: 50 } });
    const member = await explain(client, "big-spenders", "u1");
    assert.equal(member.now, "2026-01-11T00:00:00.000Z");
    assert.equal(member.member, true);
    assert.equal(member.holds, true);
    assert.equal(member.heldSince, "2026-01-11T00:00:00.000Z");
    assert.equal(member.next, "2026-01-31T00:00:00.000Z");
    assert.equal(member.nextDueAt, "2026-01-31T00:00:00.000Z");
    assert.deepEqual(member.membership, {
      active: true,
      enteredAt: "2026-01-11T00:00:00.000Z",
      entryCount: 1,
      source: "event",
      dwellAnchorAt: null,
      leftAt: null,
      maxDwellAt: null,
    });
    assert.deepEqual(member.legs[0]?.value, {
      aggregate: 110,
      contributions: 2,
      capped: false,
      windowStart: "2025-12-12T00:00:00.000Z",
    });
    assert.equal(await logSeq(client), seq + 2, "the clock move and the event only");

    // What explain predicted is what happens.
    await advance(client, "2026-02-01T00:00:00.000Z");
    const { data } = await client.GET("/v1/transitions", { params: { query: { after: 0 } } });
    const left = data?.transitions.filter((t) => t.userId === "u1" && t.kind === "left");
    assert.deepEqual(left?.map((t) => [t.at, t.reason]), [["2026-01-31T00:00:00.000Z", "criteria"]]);
  });

  test("explain answers 404 for an unknown bucket or user", async () => {
    for (const [bucket, user] of [["big-spenders", "nobody"], ["no-such-bucket", "u1"]] as const) {
      await assert.rejects(explain(client, bucket, user), (e: unknown) => {
        assert.ok(e instanceof BucketdError);
        assert.equal(e.status, 404);
        assert.equal(e.code, "not_found");
        return true;
      });
    }
  });

  test("getUser returns the contact and its events; null for a user never seen", async () => {
    const u1 = await getUser(client, "u1");
    assert.deepEqual(u1, {
      userId: "u1",
      email: "ann@example.com",
      deleted: false,
      properties: { plan: "pro", seats: 3 },
      events: {
        purchase: { count: 2, firstAt: DAY, lastAt: "2026-01-11T00:00:00.000Z" },
      },
    });
    assert.equal(await getUser(client, "nobody"), null);
    // A deleted contact keeps only its id.
    const { response } = await client.DELETE("/v1/contacts/{userId}", {
      params: { path: { userId: "u3" } },
    });
    assert.equal(response.status, 200);
    assert.deepEqual(await getUser(client, "u3"), {
      userId: "u3",
      email: null,
      deleted: true,
      properties: {},
      events: {},
    });
  });
});
