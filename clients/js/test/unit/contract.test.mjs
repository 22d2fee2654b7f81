// The TypeScript constants say exactly what proto declares: proto writes
// contract.json from its declarations (checked fresh by a Go test), and this
// test compares it with the constants the types are derived from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  EVENTS, ENDPOINTS, ERROR_CODES, ROOM_KINDS, INCOMING_EVENT, OUTGOING_EVENT, ID_MAX_LEN, ID_REGEXP,
  roomKind, rooms, opOf,
} from "../../dist/index.js";

const contract = JSON.parse(readFileSync(new URL("../../../../proto/contract.json", import.meta.url), "utf8"));

test("event names, ops and room kinds match proto", () => {
  assert.deepEqual(EVENTS.map((e) => ({ name: e.name, op: e.op, roomKinds: [...e.roomKinds] })), contract.events);
  for (const e of contract.events) assert.equal(opOf(e.name), e.op);
  assert.equal(opOf("rename-task"), undefined);
});

test("endpoints, error codes and socket event names match proto", () => {
  assert.deepEqual([...ENDPOINTS], contract.endpoints);
  assert.deepEqual([...ERROR_CODES], contract.errorCodes);
  assert.equal(INCOMING_EVENT, contract.incomingEvent);
  assert.equal(OUTGOING_EVENT, contract.outgoingEvent);
});

test("room kinds, their name patterns and ids match proto", () => {
  assert.deepEqual(ROOM_KINDS.map((k) => ({ ...k })), contract.roomKinds);
  assert.equal(ID_MAX_LEN, contract.id.maxLen);
  // Go's RE2 syntax for this regexp is also valid JavaScript.
  assert.equal(ID_REGEXP.source, contract.id.regexp);
  for (const k of contract.roomKinds) {
    const name = k.pattern.replace("<id>", "x1").replace("<a>", "a1").replace("<b>", "b1");
    assert.equal(roomKind(name), k.kind, name);
  }
});

test("room names: helpers, canonical chats, refusals", () => {
  assert.equal(rooms.boardTasks("b1"), "board-b1-tasks");
  assert.equal(rooms.chat("bob", "alice"), "chat-alice-bob");
  const u = "123e4567-e89b-12d3-a456-426614174000";
  assert.equal(roomKind(`chat-${u}-bob`), "chat");
  assert.equal(roomKind(`board-${u}-tasks`), "board-tasks");
  for (const bad of ["board-*", "board-", "board-a.b", "nope-1", "chat-a-a", "chat-a", "user-" + "x".repeat(65), "client-a b"]) {
    assert.equal(roomKind(bad), undefined, bad);
  }
  assert.throws(() => rooms.board("a.b"), TypeError);
  assert.throws(() => rooms.chat("a", "a"), TypeError);
});
