// The gateway as a frontend and a domain service meet it: the stock
// socket.io-client (WebSocket only) and the official nats client as the
// authz.join responder, publisher and revoker.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startStack, nats, publish, socket, connected, call, once, signJWT, jc, sleep,
} from "./stack.mjs";

let stack, nc;
const opened = [];

before(async () => {
  stack = await startStack();
  nc = await nats(stack);
  // The domain service: u1 may see board-b1 only; a question about
  // org-slow is taken and never answered.
  const sub = nc.subscribe("authz.join");
  (async () => {
    for await (const m of sub) {
      const { userId, roomName } = jc.decode(m.data);
      if (roomName === "org-slow") continue;
      m.respond(jc.encode({ allow: userId === "u1" && roomName === "board-b1" }));
    }
  })();
});

after(async () => {
  for (const s of opened) s.disconnect();
  await nc?.close();
  await stack?.stop();
});

// reasonOf is a disconnect event's reason (the client also passes details).
const reasonOf = (args) => (Array.isArray(args) ? args[0] : args);

function open(opts) {
  const s = socket(stack, opts);
  opened.push(s);
  return s;
}

test("connect, join an authorized board, get a task broadcast with seq and prevSeq", async () => {
  const s = open({ token: stack.token("u1"), clientId: "tab1" });
  await connected(s);
  const joined = await call(s, "addToRoom", { roomName: "board-b1" });
  assert.equal(joined.ok, true, JSON.stringify(joined));
  assert.equal(joined.data.roomName, "board-b1");

  const env1 = { event: "create-task", id: "t1", updatedAt: Date.now(), data: { title: "one", tags: ["a", "b"] } };
  const env2 = { event: "update-task", id: "t1", updatedAt: Date.now() + 1, diff: { title: "two" } };
  const got = once(s, "broadcast");
  const a1 = await publish(nc, "rooms.board.b1.tasks", env1);
  const b1 = await got;
  assert.equal(b1.destination, "board-b1-tasks");
  assert.deepEqual(b1.data, env1, "the envelope arrives unchanged");
  assert.equal(b1.seq, a1.seq);
  assert.equal(typeof b1.prevSeq, "number");

  const got2 = once(s, "broadcast");
  const a2 = await publish(nc, "rooms.board.b1.tasks", env2);
  const b2 = await got2;
  assert.deepEqual(b2.data, env2);
  assert.equal(b2.seq, a2.seq);
  assert.equal(b2.prevSeq, a1.seq, "prevSeq is the room's previous message");
});

test("a denied room, an unanswered authz request and board-* are refused", async () => {
  const s = open({ token: stack.token("u2") });
  await connected(s);
  const denied = await call(s, "addToRoom", { roomName: "board-b1" });
  assert.deepEqual([denied.ok, denied.error.code], [false, "forbidden"]);

  const wildcard = await call(s, "addToRoom", { roomName: "board-*" });
  assert.deepEqual([wildcard.ok, wildcard.error.code], [false, "invalid_argument"]);

  const t0 = Date.now();
  const slow = await call(s, "addToRoom", { roomName: "org-slow" });
  assert.deepEqual([slow.ok, slow.error.code], [false, "unavailable"], "an unanswered authz.join fails closed");
  assert.ok(Date.now() - t0 < 4000, "within the authz timeout");

  const unknown = await call(s, "nope", {});
  assert.deepEqual([unknown.ok, unknown.error.code], [false, "invalid_argument"]);
});

test("ctl.users.<U>.revoke disconnects every socket of U, server-side", async () => {
  const s1 = open({ token: stack.token("u3") });
  const s2 = open({ token: stack.token("u3") });
  const other = open({ token: stack.token("u4") });
  await Promise.all([connected(s1), connected(s2), connected(other)]);
  const d1 = once(s1, "disconnect");
  const d2 = once(s2, "disconnect");
  nc.publish("ctl.users.u3.revoke", jc.encode({}));
  assert.equal(reasonOf(await d1), "io server disconnect");
  assert.equal(reasonOf(await d2), "io server disconnect");
  assert.equal(s1.active, false, "the stock client does not reconnect by itself");
  await sleep(100);
  assert.equal(other.connected, true);
});

test("an expired, a wrong-key and an alg:none token are refused with connect_error", async () => {
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    ["expired", signJWT({ sub: "u1", exp: now - 60 }, stack.secret), /expired/],
    ["wrong key", signJWT({ sub: "u1" }, "not-the-secret"), /signature/],
    ["alg none", signJWT({ sub: "u1" }, stack.secret, { alg: "none" }), /algorithm/],
    ["no sub", signJWT({}, stack.secret), /sub/],
  ];
  for (const [name, token, want] of cases) {
    const s = open({ token });
    const err = await once(s, "connect_error");
    assert.match(err.message, want, name);
    assert.equal(err.data?.code, 401, name);
    assert.equal(s.connected, false, name);
  }
});

test("a socket is disconnected when its token expires", async () => {
  const exp = Math.floor(Date.now() / 1000) + 2;
  const s = open({ token: signJWT({ sub: "u5", exp }, stack.secret) });
  await connected(s);
  const reason = reasonOf(await once(s, "disconnect", 5000));
  assert.equal(reason, "io server disconnect");
});

test("wrong Engine.IO version or transport is refused before the upgrade", async () => {
  for (const q of ["EIO=3&transport=websocket", "EIO=3&transport=polling", "EIO=4&transport=flashsocket"]) {
    const r = await fetch(`${stack.httpURL}/socket.io/?${q}`);
    assert.equal(r.status, 400, q);
  }
});
