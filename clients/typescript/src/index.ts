// A typed client for bucketd's HTTP API. The types come from docs/openapi.json
// (openapi-typescript, `npm run generate`), the calls from openapi-fetch: every path, parameter,
// body and response is checked by the compiler against the document the server serves.
import createClient, { type Client } from "openapi-fetch";

import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };
export type Schemas = components["schemas"];
export type Transition = Schemas["Transition"];
export type TransitionKind = Transition["kind"];
export type TransitionsPage = Schemas["TransitionsPage"];
export type ApiError = Schemas["Error"];
export type CursorAheadError = Schemas["CursorAheadError"];
export type BucketDefinition = Schemas["BucketDefinition"];
export type Bucket = Schemas["Bucket"];
export type Event = Schemas["Event"];

export type BucketdClient = Client<paths>;

export interface ClientOptions {
  /** The server, e.g. "http://127.0.0.1:7411". */
  baseUrl: string;
  /** The bearer token of a server started with --auth-token. */
  token?: string;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof globalThis.fetch;
}

/**
 * A client for every route of docs/openapi.json:
 *   const { data, error } = await client.GET("/v1/buckets/{bucketId}/count",
 *       { params: { path: { bucketId: "power-users" } } });
 */
export function createBucketdClient(options: ClientOptions): BucketdClient {
  const headers: Record<string, string> = {};
  if (options.token) headers["Authorization"] = `Bearer ${options.token}`;
  return createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    headers,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}

export { BucketdError, explain, getUser, preview } from "./queries.js";
export type { ExplainBlocker, ExplainLeg, Explanation, Preview, User } from "./queries.js";

export { consume } from "./consume.js";
export type {
  ConsumeOptions,
  Cursor,
  Delivery,
  StreamReset,
} from "./consume.js";
