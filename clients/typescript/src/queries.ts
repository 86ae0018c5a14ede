// The read-only questions of SPEC §3b as plain functions over the typed client: preview a
// definition, explain a user's membership, read a contact. Each answers the response's body
// or throws a BucketdError carrying the server's error (status, code, message, field path).
import type { BucketDefinition, BucketdClient, Schemas } from "./index.js";

export type Preview = Schemas["Preview"];
export type Explanation = Schemas["Explain"];
export type ExplainLeg = Schemas["ExplainLeg"];
export type ExplainBlocker = Schemas["ExplainBlocker"];
export type User = Schemas["User"];
export type ErrorDetail = Schemas["ErrorDetail"];

/** A refusal or failure answered by bucketd: the HTTP status and the body's `error`. */
export class BucketdError extends Error {
  readonly status: number;
  readonly code: ErrorDetail["code"] | undefined;
  /** The field to blame, e.g. `criteria.conditions[0].value`, when the server names one. */
  readonly field: string | undefined;

  constructor(status: number, detail: ErrorDetail | undefined) {
    super(detail ? `${status} ${detail.code}: ${detail.message}` : `HTTP ${status}`);
    this.name = "BucketdError";
    this.status = status;
    this.code = detail?.code;
    this.field = detail?.field;
  }
}

function failure(response: Response, error: unknown): BucketdError {
  const detail = (error as { error?: ErrorDetail } | undefined)?.error;
  return new BucketdError(response.status, detail);
}

/**
 * POST /v1/buckets/preview: who `definition` would hold now (`count`, the smallest 20 userIds
 * as `sample`) and, against the stored bucket of the same id, how many would enter and leave.
 * Nothing is logged. Throws BucketdError for a definition the server refuses (400, with the
 * field path).
 */
export async function preview(
  client: BucketdClient,
  definition: BucketDefinition,
): Promise<Preview> {
  const { data, error, response } = await client.POST("/v1/buckets/preview", {
    body: definition,
  });
  if (data === undefined) throw failure(response, error);
  return data;
}

/**
 * GET /v1/buckets/{bucketId}/explain/{userId}: whether `userId` is a member of `bucketId` and
 * why, every leg with its path, value, `heldSince` and `next`, and what blocks a join or leave.
 * Throws BucketdError (404) for an unknown bucket or user, or a deleted contact.
 */
export async function explain(
  client: BucketdClient,
  bucketId: string,
  userId: string,
): Promise<Explanation> {
  const { data, error, response } = await client.GET("/v1/buckets/{bucketId}/explain/{userId}", {
    params: { path: { bucketId, userId } },
  });
  if (data === undefined) throw failure(response, error);
  return data;
}

/**
 * GET /v1/users/{userId}: the contact (email, properties, deleted) and per event name its
 * count, first and last instant; null for a user never seen (or erased). A deleted contact
 * answers with `deleted: true` and nothing else.
 */
export async function getUser(client: BucketdClient, userId: string): Promise<User | null> {
  const { data, error, response } = await client.GET("/v1/users/{userId}", {
    params: { path: { userId } },
  });
  if (data !== undefined) return data;
  if (response.status === 404) return null;
  throw failure(response, error);
}
