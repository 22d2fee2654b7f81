// Errors the client surfaces: a failed endpoint call carries the server's
// code, so an app can decide (retry on unavailable, back off on
// rate_limited, give up on forbidden).
import type { ErrorCode } from "./contract.js";

/** A failed endpoint call, or a local failure with a code of the contract. */
export class RoomcastError extends Error {
  override readonly name = "RoomcastError";
  constructor(
    readonly code: ErrorCode | "timeout" | "disconnected",
    message: string,
    readonly endpoint?: string,
    /** rate_limited: how long the gateway asks the caller to wait before calling again. */
    readonly retryAfterMs?: number,
  ) {
    super(endpoint ? `${endpoint}: ${code}: ${message}` : `${code}: ${message}`);
  }
}
