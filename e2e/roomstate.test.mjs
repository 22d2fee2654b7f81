// Room state end to end: a domain service publishes to board-b1-tasks with
// the official nats client, roomstate folds it into KV ROOM_STATE, and a
// stock socket.io-client socket reads it back through getRoomState and
// addToRoom.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startStack, nats, publish, socket, connected, call, authz, jc, sleep } from "./stack.mjs";

let stack, nc;
const opened = [];

before(async () => {
  stack = await startStack();
  nc = await nats(stack);
  // The domain service: u1 may see every board room, u2 none.
  authz(nc, (userId, roomName) => userId === "u1" && roomName.startsWith("board-"));
});

after(async () => {
  for (const s of opened) s.disconnect();
  await nc?.close();
  await stack?.stop();
});

async function open(user) {
  const s = socket(stack, { token: stack.token(user) });
  opened.push(s);
  return connected(s);
}

// waitState polls getRoomState until its seq reaches seq: the state is
// written a few milliseconds after the publish is acknowledged.
async function waitState(s, roomName, seq, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ack = await call(s, "getRoomState", { roomName });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    if (ack.data && ack.data.seq >= seq) return ack.data;
    if (Date.now() > deadline) throw new Error(`${roomName}: state ${JSON.stringify(ack.data)} never reached seq ${seq}`);
    await sleep(20);
  }
}

test("getRoomState holds the largest updatedAt and the latest seq of board-b1-tasks", async () => {
  const s = await open("u1");
  const t0 = Date.now();
  // Out of order on purpose: the newest change is published second.
  await publish(nc, "rooms.board.b1.tasks", { event: "create-task", id: "t1", updatedAt: t0, data: { title: "a" } });
  await publish(nc, "rooms.board.b1.tasks", { event: "update-task", id: "t1", updatedAt: t0 + 50, diff: { title: "b" } });
  const last = await publish(nc, "rooms.board.b1.tasks", { event: "update-task", id: "t2", updatedAt: t0 + 20, diff: { title: "c" } }, "last-msg");

  const state = await waitState(s, "board-b1-tasks", last.seq);
  assert.deepEqual(state, { lastBroadcastTimestamp: t0 + 50, seq: last.seq });

  // A retried publish (same Nats-Msg-Id) is stored once and changes nothing.
  const again = await publish(nc, "rooms.board.b1.tasks", { event: "update-task", id: "t2", updatedAt: t0 + 20, diff: { title: "c" } }, "last-msg");
  assert.equal(again.duplicate, true);
  const same = await call(s, "getRoomState", { roomName: "board-b1-tasks" });
  assert.deepEqual(same, { ok: true, data: { lastBroadcastTimestamp: t0 + 50, seq: last.seq } });

  // addToRoom carries the same state.
  const joined = await call(s, "addToRoom", { roomName: "board-b1-tasks" });
  assert.deepEqual(joined, { ok: true, data: { roomName: "board-b1-tasks", lastBroadcastTimestamp: t0 + 50, seq: last.seq } });

  // And so does roomstate.get asked directly over NATS, as the gateway does.
  const direct = await nc.request("roomstate.get", jc.encode({ roomName: "board-b1-tasks" }), { timeout: 5000 });
  assert.deepEqual(jc.decode(direct.data), { lastBroadcastTimestamp: t0 + 50, seq: last.seq });
});

test("a room never broadcast to has null state", async () => {
  const s = await open("u1");
  const ack = await call(s, "getRoomState", { roomName: "board-b9-tasks" });
  assert.deepEqual(ack, { ok: true, data: null });
  const joined = await call(s, "addToRoom", { roomName: "board-b9" });
  assert.deepEqual(joined, { ok: true, data: { roomName: "board-b9", lastBroadcastTimestamp: null, seq: null } });
});

test("reading a room's state needs the right to join it, and a valid name", async () => {
  const s = await open("u2");
  const denied = await call(s, "getRoomState", { roomName: "board-b1-tasks" });
  assert.deepEqual([denied.ok, denied.error?.code], [false, "forbidden"]);
  const bad = await call(s, "getRoomState", { roomName: "board-*" });
  assert.deepEqual([bad.ok, bad.error?.code], [false, "invalid_argument"]);
});
