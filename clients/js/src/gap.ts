// Exact gap detection. Every broadcast carries its sequence in stream ROOMS
// and the sequence of the room's previous message, so a client that knows
// the last sequence it holds for a room knows exactly whether it missed one.

export type Arrival =
  /** prevSeq is the last seq held: nothing was missed. */
  | "in-order"
  /** seq is not beyond what is held (a duplicate, or covered by a resync's read): apply idempotently. */
  | "old"
  /** something between the last seq held and this one was missed: resync. */
  | "gap";

/** classify decides what a broadcast means for a room whose last seq is lastSeq. */
export function classify(lastSeq: number, b: { seq: number; prevSeq: number }): Arrival {
  if (b.seq !== 0 && b.seq <= lastSeq) return "old";
  if (b.prevSeq === lastSeq) return "in-order";
  return "gap";
}
