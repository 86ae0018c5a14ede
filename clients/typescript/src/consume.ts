// consume(): an at-least-once consumer of bucketd's transition stream (docs/consumers.md).
//
// It long-polls GET /v1/transitions from a cursor the caller persists, hands each transition
// to a handler with its idempotency key, and saves the cursor only once the handler resolved:
// a crash or a failed handler means the transition is delivered again, never skipped. The
// cursor is stored with the stream's id, so that a cursor kept for another stream (a reset or
// restored data dir) is noticed, and the caller decides where to resume (onReset).
import type { BucketdClient, CursorAheadError, Transition, TransitionKind } from "./index.js";

/** Where a consumer is in a stream: the last seq it handled, and the stream's id. */
export interface Cursor {
  /** The stream the cursor belongs to; null before the first page named it. */
  streamId: string | null;
  /** Pass as `after`: every transition up to this seq was handled. */
  after: number;
}

/** What the handler gets with each transition. */
export interface Delivery {
  /** Dedupe by it: a transition delivered again (at least once) carries the same key. */
  idempotencyKey: string;
  seq: number;
  /** null from a cluster node, whose pages name no stream (docs/cluster.md). */
  streamId: string | null;
}

/** The stored cursor does not belong to the server's stream. */
export interface StreamReset {
  /**
   * `cursor_ahead`: the cursor is beyond the stream's end (409): a reset or restored data dir.
   * `stream_changed`: the server names another stream id than the stored one.
   */
  reason: "cursor_ahead" | "stream_changed";
  /** The cursor as stored. */
  cursor: Cursor;
  /** The server's stream. */
  streamId: string;
  /** The server's last seq: resume from it to skip the new stream's past. */
  lastSeq: number;
}

export interface ConsumeOptions {
  client: BucketdClient;
  /** The saved cursor; null (or undefined) starts at the beginning of the stream. */
  loadCursor: () => Promise<Cursor | null | undefined> | Cursor | null | undefined;
  /** Persist the cursor (called after each handled transition, and when a page moved it). */
  saveCursor: (cursor: Cursor) => Promise<void> | void;
  /** Handles one transition. A rejection is retried (after a backoff) with the same transition. */
  handler: (transition: Transition, delivery: Delivery) => Promise<void> | void;
  /**
   * The cursor belongs to another stream. Return where to resume on `reset.streamId`: `0`
   * replays the new stream from its start, `reset.lastSeq` skips its past; `null` stops
   * consume(). The returned position is saved before anything is delivered from it.
   */
  onReset: (reset: StreamReset) => Promise<number | null> | number | null;
  /** Only this bucket's transitions (the cursor still moves over the others). */
  bucket?: string;
  /** Only these kinds. */
  kinds?: TransitionKind[];
  /** Transitions per page, 1..10000 (default 100). */
  limit?: number;
  /** How long one long-poll waits for a transition, seconds, 0..30 (default 25). */
  waitSeconds?: number;
  /** Stops consume(): the pending poll or backoff is abandoned, and consume() resolves. */
  signal?: AbortSignal;
  /** Backoff after a 5xx, a 429 or a network error, and after a handler failed. */
  retry?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Told of every error that is retried, with the delay before the next attempt. */
  onError?: (error: unknown, attempt: number, delayMs: number) => void;
}

/** A refusal that retrying cannot fix (400, 401, 403, 404): consume() rejects with it. */
export class BucketdError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`bucketd answered ${status}: ${JSON.stringify(body)}`);
    this.name = "BucketdError";
  }
}

const RETRIED_STATUSES = new Set([408, 429, 500, 502, 503, 504, 507]);

function isCursorAhead(body: unknown): body is CursorAheadError {
  const error = (body as CursorAheadError | undefined)?.error;
  return typeof error?.lastSeq === "number" && typeof error?.streamId === "string";
}

// Resolves after `ms`, or at once when `signal` aborts.
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Delivers the stream to `handler`, at least once and in seq order, until `signal` aborts
 * (resolves), `onReset` returns null (resolves) or the server refuses the request for good
 * (rejects with a BucketdError).
 */
export async function consume(options: ConsumeOptions): Promise<void> {
  const { client, signal } = options;
  const limit = options.limit ?? 100;
  const wait = String(options.waitSeconds ?? 25);
  const initialDelayMs = options.retry?.initialDelayMs ?? 250;
  const maxDelayMs = options.retry?.maxDelayMs ?? 30_000;
  let cursor: Cursor = (await options.loadCursor()) ?? { streamId: null, after: 0 };
  let attempt = 0;

  // Exponential backoff with jitter: half the delay fixed, half random, so that consumers
  // that failed together do not retry together.
  const backOff = async (error: unknown) => {
    const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 30));
    const delayMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    attempt += 1;
    options.onError?.(error, attempt, delayMs);
    await sleep(delayMs, signal);
  };
  // The caller picks where to resume on the server's stream; false: stop.
  const reset = async (r: StreamReset): Promise<boolean> => {
    const after = await options.onReset(r);
    if (after === null || signal?.aborted) return false;
    cursor = { streamId: r.streamId, after };
    await options.saveCursor(cursor);
    return true;
  };

  while (!signal?.aborted) {
    let result;
    try {
      result = await client.GET("/v1/transitions", {
        params: {
          query: {
            after: cursor.after,
            limit,
            wait,
            ...(options.bucket !== undefined ? { bucket: options.bucket } : {}),
            ...(options.kinds?.length ? { kind: options.kinds } : {}),
          },
        },
        signal,
      });
    } catch (error) {
      if (signal?.aborted) return;
      await backOff(error);
      continue;
    }
    const { data, error, response } = result;
    if (response.status === 409 && isCursorAhead(error)) {
      const { streamId, lastSeq } = error.error;
      if (!(await reset({ reason: "cursor_ahead", cursor, streamId, lastSeq }))) return;
      continue;
    }
    if (RETRIED_STATUSES.has(response.status)) {
      await backOff(new BucketdError(response.status, error));
      continue;
    }
    if (!data) throw new BucketdError(response.status, error);
    attempt = 0;
    // A cluster node's pages name no stream: its cursors are then kept without one.
    const streamId: string | null = data.streamId ?? null;
    if (cursor.streamId !== null && streamId !== cursor.streamId) {
      const r: StreamReset = {
        reason: "stream_changed",
        cursor,
        streamId: data.streamId,
        lastSeq: data.lastSeq,
      };
      if (!(await reset(r))) return;
      continue;
    }
    try {
      for (const transition of data.transitions) {
        if (signal?.aborted) return;
        const { idempotencyKey, seq } = transition;
        await options.handler(transition, { idempotencyKey, seq, streamId });
        cursor = { streamId, after: seq };
        await options.saveCursor(cursor);
      }
      // A filtered page moves the cursor past what it looked at, matched or not.
      if (data.next > cursor.after) {
        cursor = { streamId, after: data.next };
        await options.saveCursor(cursor);
      }
    } catch (error) {
      if (signal?.aborted) return;
      await backOff(error);
    }
  }
}
