// The stock socket.io-client with each transport: its default options
// (long-polling, then the upgrade to WebSocket), long-polling alone and
// WebSocket alone. Every endpoint a page uses and the broadcasts work on
// each, and the upgrade under a stream of broadcasts loses and doubles
// nothing (by seq).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { startStack, nats, publish, socket, connected, call, once, authz, sleep } from "./stack.mjs";

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

const modes = {
  "default options (polling, then the upgrade)": { transports: undefined, final: "websocket" },
  "polling alone": { transports: ["polling"], final: "polling" },
  "websocket alone": { transports: ["websocket"], final: "websocket" },
};

function open(user, transports) {
  const s = socket(stack, { token: stack.token(user), clientId: `tab${user}`, transports });
  opened.push(s);
  return s;
}

// settled resolves once the socket's transport is want (an upgrade, if
// one is coming, is over).
async function settled(s, want, ms = 5000) {
  const until = Date.now() + ms;
  while (s.io.engine.transport.name !== want || s.io.engine.upgrading) {
    if (Date.now() > until) throw new Error(`transport still ${s.io.engine.transport.name}, not ${want}`);
    await sleep(20);
  }
}

let n = 0;
for (const [mode, { transports, final }] of Object.entries(modes)) {
  test(`${mode}: endpoints and broadcasts`, async () => {
    const board = `t${++n}`;
    const s = open(`u${board}`, transports);
    await connected(s);
    if (transports?.length === 1) assert.equal(s.io.engine.transport.name, transports[0]);
    const joined = await call(s, "addToRoom", { roomName: `board-${board}` });
    assert.equal(joined.ok, true, JSON.stringify(joined));
    await settled(s, final);
    for (let i = 1; i <= 3; i++) {
      const env = { event: "update-task", id: "t1", updatedAt: Date.now() + i, diff: { title: `v${i}` } };
      const got = once(s, "broadcast");
      const ack = await publish(nc, `rooms.board.${board}.tasks`, env);
      const b = await got;
      assert.equal(b.destination, `board-${board}-tasks`);
      assert.deepEqual(b.data, env);
      assert.equal(b.seq, ack.seq);
    }
    const changes = await call(s, "getChangesSince", { roomName: `board-${board}-tasks`, afterSeq: 0 });
    assert.equal(changes.ok, true, JSON.stringify(changes));
    assert.deepEqual(changes.data.changes.map((c) => c.id), ["t1"]);
    // A chat: its first message reaches the member's socket, then its history.
    const chat = `chat-u${board}-zz`;
    const msg = { event: "new-message", id: "m1", updatedAt: Date.now(), data: { text: "hi" } };
    const got = once(s, "broadcast");
    const sent = await publish(nc, `rooms.chat.u${board}.zz`, msg);
    const b = await got;
    assert.equal(b.destination, chat);
    assert.deepEqual(b.data, msg);
    assert.equal(b.seq, sent.seq);
    const messages = await call(s, "getChatMessagesSince", { roomName: chat, afterSeq: 0 });
    assert.equal(messages.ok, true, JSON.stringify(messages));
    assert.deepEqual(messages.data.messages, [msg]);
    const active = await call(s, "updateClient", { isActive: true });
    assert.equal(active.ok, true, JSON.stringify(active));
    const state = await call(s, "getRoomState", { roomName: `board-${board}` });
    assert.equal(typeof state.ok, "boolean", JSON.stringify(state));
    const left = await call(s, "removeFromRoom", { roomName: `board-${board}` });
    assert.equal(left.ok, true, JSON.stringify(left));
    const bad = await call(s, "noSuchEndpoint", {});
    assert.equal(bad.ok, false);
    assert.equal(s.io.engine.transport.name, final);
    s.disconnect();
  });
}

// slowUpgrades is a TCP proxy to the gateway that holds a connection
// opening a WebSocket for ms before passing it on, so that the stock
// client's upgrade comes while the test is broadcasting; polling passes
// at once.
async function slowUpgrades(ms) {
  const target = new URL(stack.httpURL);
  const server = net.createServer((c) => {
    c.once("data", (first) => {
      c.pause();
      const delay = first.includes("transport=websocket") ? ms : 0;
      setTimeout(() => {
        const up = net.connect(Number(target.port), target.hostname, () => {
          up.write(first);
          c.pipe(up).pipe(c);
          c.resume();
        });
        up.on("error", () => c.destroy());
        c.on("error", () => up.destroy());
        c.on("close", () => up.destroy());
        up.on("close", () => c.destroy());
      }, delay);
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

test("the upgrade under a stream of broadcasts: nothing lost, nothing doubled", async () => {
  const board = "stream";
  const proxy = await slowUpgrades(700);
  const s = socket({ ...stack, httpURL: proxy.url }, { token: stack.token("ustream"), clientId: "tabstream", transports: undefined });
  opened.push(s);
  const seqs = [];
  s.on("broadcast", (b) => seqs.push(b.seq));
  await connected(s);
  assert.equal(s.io.engine.transport.name, "polling", "the stock client opens with polling");
  const joined = await call(s, "addToRoom", { roomName: `board-${board}` });
  assert.equal(joined.ok, true, JSON.stringify(joined));
  assert.equal(s.io.engine.transport.name, "polling", "joined before the upgrade");
  // Publish before, during and after the upgrade.
  const sent = [];
  let upgradedAt = -1;
  s.io.engine.once("upgrade", () => { upgradedAt = sent.length; });
  const stop = Date.now() + 10000;
  for (let i = 0; Date.now() < stop && (upgradedAt < 0 || sent.length < upgradedAt + 50); i++) {
    const ack = await publish(nc, `rooms.board.${board}.tasks`, { event: "update-task", id: "t1", updatedAt: Date.now() + i, diff: { i } });
    sent.push(ack.seq);
    await sleep(2);
  }
  assert.ok(upgradedAt > 10, `the client upgraded amid the stream (after ${upgradedAt} of ${sent.length})`);
  const until = Date.now() + 5000;
  while (seqs.length < sent.length && Date.now() < until) await sleep(20);
  await sleep(100); // a doubled one would come now
  assert.deepEqual(seqs, sent, "every broadcast once, in order");
  assert.equal(s.io.engine.transport.name, "websocket");
  s.disconnect();
  proxy.close();
});
