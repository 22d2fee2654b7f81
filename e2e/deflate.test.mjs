// permessage-deflate with the stock socket.io-client in Node: its ws
// offers the extension by default, the gateway accepts it (without
// context takeover), and a large broadcast arrives compressed and intact
// while a small one goes plain; a gateway with ROOMCAST_DEFLATE_THRESHOLD
// -1 negotiates nothing and still delivers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startStack, nats, publish, socket, connected, call, once, authz } from "./stack.mjs";

let stack, nc;
const opened = [];

before(async () => {
  stack = await startStack();
  nc = await nats(stack);
  authz(nc, () => true);
});

after(async () => {
  for (const s of opened) s.disconnect();
  await nc?.close();
  await stack?.stop();
});

// deflated is the gateway's count of broadcasts it compressed.
async function deflated(httpURL) {
  const text = await (await fetch(`${httpURL}/metrics`)).text();
  const m = text.match(/^roomcast_gateway_deflated_messages_total (\S+)$/m);
  return m ? Number(m[1]) : 0;
}

function bigDiff(n) {
  const diff = {};
  for (let i = 0; JSON.stringify(diff).length < n; i++) diff[`field${i}`] = `the value of field ${i}, in words`;
  return diff;
}

async function joined(st, user, board) {
  const s = socket(st, { token: st.token(user), clientId: `tab${user}` });
  opened.push(s);
  await connected(s);
  const r = await call(s, "addToRoom", { roomName: `board-${board}` });
  assert.equal(r.ok, true, JSON.stringify(r));
  return s;
}

test("the stock client negotiates permessage-deflate and receives compressed broadcasts", async () => {
  const s = await joined(stack, "ud1", "d1");
  const ws = s.io.engine.transport.ws;
  assert.equal(ws.extensions, "permessage-deflate");
  // The parameters the gateway answered with (ws keeps them on its
  // extension, not in a public property).
  const params = ws._extensions["permessage-deflate"].params;
  assert.equal(params.server_no_context_takeover, true, JSON.stringify(params));
  assert.equal(params.client_no_context_takeover, true, JSON.stringify(params));

  const before = await deflated(stack.httpURL);
  const env = { event: "update-task", id: "t1", updatedAt: Date.now(), diff: bigDiff(3000) };
  let got = once(s, "broadcast");
  let ack = await publish(nc, "rooms.board.d1.tasks", env);
  let b = await got;
  assert.deepEqual(b.data, env);
  assert.equal(b.seq, ack.seq);
  assert.equal(await deflated(stack.httpURL), before + 1);

  const small = { event: "update-task", id: "t1", updatedAt: Date.now() + 1, diff: { title: "v2" } };
  got = once(s, "broadcast");
  ack = await publish(nc, "rooms.board.d1.tasks", small);
  b = await got;
  assert.deepEqual(b.data, small);
  assert.equal(await deflated(stack.httpURL), before + 1, "a broadcast under the threshold is not compressed");

  // A call the client sends compressed (ws compresses what passes its
  // own 1 KB threshold) is inflated and answered.
  const state = await call(s, "getRoomState", { roomName: "board-d1", pad: "x".repeat(2000) });
  assert.equal(typeof state.ok, "boolean", JSON.stringify(state));
});

test("ROOMCAST_DEFLATE_THRESHOLD=-1: nothing negotiated, broadcasts still arrive", async () => {
  const off = await startStack({ env: { ROOMCAST_DEFLATE_THRESHOLD: "-1" } });
  const offNC = await nats(off);
  try {
    authz(offNC, () => true);
    const s = await joined(off, "ud2", "d2");
    assert.equal(s.io.engine.transport.ws.extensions, "");
    const env = { event: "update-task", id: "t1", updatedAt: Date.now(), diff: bigDiff(3000) };
    const got = once(s, "broadcast");
    await publish(offNC, "rooms.board.d2.tasks", env);
    assert.deepEqual((await got).data, env);
    assert.equal(await deflated(off.httpURL), 0);
    s.disconnect();
  } finally {
    await offNC.close();
    await off.stop();
  }
});
