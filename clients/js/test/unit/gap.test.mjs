// Exact gap detection from seq and prevSeq.
import { test } from "node:test";
import assert from "node:assert/strict";
import { classify } from "../../dist/index.js";

test("a broadcast whose prevSeq is the last seq held is in order", () => {
  assert.equal(classify(0, { seq: 5, prevSeq: 0 }), "in-order", "the room's first message");
  assert.equal(classify(5, { seq: 9, prevSeq: 5 }), "in-order", "seqs of other rooms in between do not matter");
});

test("a broadcast whose prevSeq is beyond the last seq held is a gap", () => {
  assert.equal(classify(5, { seq: 12, prevSeq: 9 }), "gap");
  assert.equal(classify(0, { seq: 12, prevSeq: 9 }), "gap", "joined a room with history, held nothing");
});

test("a broadcast not beyond the last seq held is old (a repeat, or read by a resync)", () => {
  assert.equal(classify(9, { seq: 9, prevSeq: 5 }), "old");
  assert.equal(classify(12, { seq: 9, prevSeq: 5 }), "old");
});

test("client rooms (seq 0, prevSeq 0) are always in order", () => {
  assert.equal(classify(0, { seq: 0, prevSeq: 0 }), "in-order");
});
