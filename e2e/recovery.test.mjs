// Connection state recovery (issue 20) with the stock socket.io-client and
// no library of ours: after a cut, the client presents the pid the
// gateway gave it and the offset of the last broadcast it got; the gateway
// gives it back its session (recovered, the same id, its rooms) and every
// broadcast it missed, in order and once, then the live ones, on the same
// gateway, across a gateway restart and on another gateway of the same
// NATS. When it cannot (a pid of another user, the room's history cut by
// the stream's max age, the client's own disconnect, recovery off) the
// client gets a new session and nothing of the old one.
//
// The stacks: `roomcast serve` (gateway A and the embedded NATS) and a
// standalone gateway B (bin/gateway) on the same NATS; a TCP proxy in front
// of a gateway plays the network: it drops the client's connections and
// refuses new ones while "cut", and may send the client to the other
// gateway when the cut ends (a load balancer failing over). Each test
// publishes on rooms of its own (the user's room, a board's tasks, a chat)
// while the client is cut off, and asserts the exact broadcasts each room
// delivered: seq, prevSeq, offset, none twice, none missing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join as joinPath } from "node:path";
import { io } from "socket.io-client";
import { startStack, nats, publish, call, authz, freePort, binary, jc, tcpProxy } from "./stack.mjs";

const gatewayBin = process.env.ROOMCAST_GATEWAY_BIN || joinPath(dirname(binary), "gateway");

let stack, nc, A, B;
// "user:room" pairs the authorizer refuses from now on (a membership the
// domain removed).
const denied = new Set();
const opened = [];
const proxies = [];
const cleanups = [];

before(async () => {
  stack = await startStack(); // gateway A, recovery on by default
  nc = await nats(stack);
  authz(nc, (user, room) => !denied.has(`${user}:${room}`));
  A = stack.httpURL;
  B = gateway(stack, await freePort());
  await B.start();
});

after(async () => {
  for (const s of opened) s.disconnect();
  for (const p of proxies) p.close();
  for (const fn of cleanups.reverse()) await fn();
  await B?.stop();
  await nc?.close();
  await stack?.stop();
});

// poll calls fn until it returns true, for at most ms: for server state
// that has no event to wait on (a metric, the stream's first sequence).
async function poll(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    let last;
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((ok) => setTimeout(ok, 25));
  }
}

// gateway is a standalone gateway on the stack's NATS at port; start()
// resolves once it is ready, stop() sends a signal and resolves with its
// exit. It can be started again on the same port.
function gateway(st, port, env = {}) {
  let p, exited;
  let logs = "";
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    logs: () => logs,
    async start() {
      p = spawn(gatewayBin, [], {
        env: {
          ...process.env,
          ROOMCAST_HTTP_ADDR: `127.0.0.1:${port}`,
          ROOMCAST_NATS_URL: st.natsURL,
          ROOMCAST_JWT_SECRET: st.secret,
          ROOMCAST_LOG_LEVEL: process.env.ROOMCAST_LOG_LEVEL || "warn",
          // A stopping gateway closes its sockets at once, not over 5 s.
          ROOMCAST_DRAIN_GRACE: "100ms",
          ...env,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      p.stdout.on("data", (b) => (logs += b));
      p.stderr.on("data", (b) => (logs += b));
      exited = new Promise((ok) => p.once("exit", (code, signal) => ok({ code, signal })));
      await poll(`${gatewayBin} ready at ${url}`, async () => {
        if (p.exitCode !== null) throw new Error(`exited with ${p.exitCode}:\n${logs}`);
        return (await fetch(`${url}/readyz`)).status === 200;
      }, 30000);
    },
    async stop(signal = "SIGTERM") {
      if (!p) return;
      if (p.exitCode === null && p.signalCode === null) p.kill(signal);
      return exited;
    },
  };
}

// proxy is the client's network (stack.mjs's tcpProxy), closed after
// the tests.
async function proxy(target) {
  const px = await tcpProxy(target);
  proxies.push(px);
  return px;
}

// client opens a stock socket.io-client socket (WebSocket, its own
// reconnection with short delays) and records what it lives through:
// every broadcast with its arguments, every connect with what the client
// made of the CONNECT answer, disconnects, refused reconnects, and the
// Socket.IO frames both ways (for the failure messages).
function client(url, user, opts = {}) {
  const s = io(url, {
    transports: ["websocket"],
    auth: { token: stack.token(user) },
    forceNew: true,
    reconnectionDelay: 300,
    reconnectionDelayMax: 600,
    ...opts,
    // Connected below, once the frames are watched (the CONNECT goes out
    // on the manager's "open": this listener must come before the socket's).
    autoConnect: false,
  });
  opened.push(s);
  const c = { s, user, got: [], connects: [], disconnects: [], refused: 0, frames: [] };
  const waiters = new Set();
  const notify = () => {
    for (const w of waiters) if (w.pred()) w.done();
  };
  s.on("broadcast", (...args) => {
    const [b, offset] = args;
    c.got.push({ room: b.destination, seq: b.seq, prevSeq: b.prevSeq, offset, args: args.length });
    notify();
  });
  s.on("connect", () => {
    c.connects.push({ id: s.id, pid: s._pid, recovered: s.recovered });
    notify();
  });
  s.on("disconnect", (why) => {
    c.disconnects.push(why);
    notify();
  });
  s.io.on("reconnect_error", () => {
    c.refused++;
    notify();
  });
  s.io.on("open", () => {
    // The engine's packets both ways; a token is not written out.
    const e = s.io.engine;
    e.on("packet", (p) => c.frames.push(`< ${p.type} ${p.data ?? ""}`));
    e.on("packetCreate", (p) => c.frames.push(`> ${p.type} ${String(p.data ?? "").replace(/"token":"[^"]*"/, '"token":"…"')}`));
  });
  // until resolves once pred() holds, checked on every event of the socket.
  c.until = (what, pred, ms = 10000) =>
    new Promise((ok, fail) => {
      if (pred()) return ok();
      const w = {
        pred,
        done: () => {
          waiters.delete(w);
          clearTimeout(timer);
          ok();
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        fail(new Error(`${user}: not within ${ms} ms: ${what}\n${c.report()}`));
      }, ms);
      waiters.add(w);
    });
  c.connected = (n = c.connects.length + 1) => c.until(`connect #${n}`, () => c.connects.length >= n);
  c.report = () => `connects ${JSON.stringify(c.connects)}\ndisconnects ${JSON.stringify(c.disconnects)}\ngot ${JSON.stringify(c.got.map((g) => `${g.room}:${g.seq}/${g.prevSeq}@${g.offset}`))}\nlast frames:\n  ${c.frames.slice(-30).join("\n  ")}`;
  c.has = (room, seq) => c.got.some((g) => g.room === room && g.seq === seq);
  if (opts.autoConnect !== false) s.connect();
  return c;
}

// Rooms of a test and what was published to each, in order.
const chatOf = (a, b) => (a < b ? `chat-${a}-${b}` : `chat-${b}-${a}`);
function subjectOf(room) {
  let m;
  if ((m = /^user-(\w+)$/.exec(room))) return { subject: `rooms.user.${m[1]}`, env: (i) => ({ event: "update-user", id: m[1], updatedAt: Date.now(), diff: { i } }) };
  if ((m = /^board-(\w+)-tasks$/.exec(room))) return { subject: `rooms.board.${m[1]}.tasks`, env: (i, pad) => ({ event: "update-task", id: "t1", updatedAt: Date.now(), diff: pad ? { i, pad } : { i } }) };
  if ((m = /^chat-(\w+)-(\w+)$/.exec(room))) return { subject: `rooms.chat.${m[1]}.${m[2]}`, env: (i) => ({ event: "new-message", id: `m${i}`, updatedAt: Date.now(), data: { text: `${i}` } }) };
  throw new Error(`no subject for ${room}`);
}
function ledger() {
  const sent = new Map();
  let i = 0;
  return {
    sent,
    // publish stores one broadcast of room (a board's carries pad, when
    // given, in its diff) and resolves with its seq.
    async publish(room, pad) {
      const { subject, env } = subjectOf(room);
      const ack = await publish(nc, subject, env(++i, pad));
      if (!sent.has(room)) sent.set(room, []);
      sent.get(room).push(ack.seq);
      return ack.seq;
    },
    // round publishes n broadcasts on each room, the rooms interleaved.
    async round(rooms, n) {
      for (let k = 0; k < n; k++) for (const r of rooms) await this.publish(r);
    },
    last: (room) => sent.get(room).at(-1),
    count: () => [...sent.values()].reduce((n, s) => n + s.length, 0),
  };
}

// delivered asserts that c got exactly what was published to each room:
// every seq once, in the room's order, each prevSeq the room's previous
// seq, each offset its seq in decimal (the contract's offset).
function delivered(c, book, rooms) {
  for (const room of rooms) {
    const mine = c.got.filter((g) => g.room === room);
    const want = book.sent.get(room);
    assert.deepEqual(mine.map((g) => g.seq), want, `${room}: every broadcast once, in order\n${c.report()}`);
    assert.deepEqual(mine.map((g) => g.prevSeq), [0, ...want.slice(0, -1)], `${room}: each prevSeq the room's previous seq`);
    assert.deepEqual(mine.map((g) => g.offset), want.map(String), `${room}: each broadcast's offset is its seq`);
  }
  assert.equal(c.got.length, book.count(), `nothing else delivered\n${c.report()}`);
}

// caughtUp waits until c holds the last broadcast of each room; the
// exact check comes after (a duplicate of an earlier one would be before it).
const caughtUp = (c, book, rooms, what, ms) => c.until(what, () => rooms.every((r) => c.has(r, book.last(r))), ms);

async function metric(gw, name, labels = "") {
  const text = await (await fetch(`${gw}/metrics`)).text();
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (m && m[1] === name && (!labels || (m[2] ?? "").includes(labels))) return Number(m[3]);
  }
  return 0;
}
const recoveries = (gw, result) => metric(gw, "roomcast_gateway_recoveries_total", `result="${result}"`);
const replayed = (gw) => metric(gw, "roomcast_gateway_replayed_total");

// join joins a board on c's socket and fails the test when refused.
async function join(c, board) {
  const ack = await call(c.s, "addToRoom", { roomName: `board-${board}` });
  assert.equal(ack.ok, true, JSON.stringify(ack));
}

// lastConnect is the CONNECT the client sent last, as sent; presented
// is what it carried.
const lastConnect = (c) => c.frames.filter((f) => f.startsWith("> message 0")).at(-1) ?? "";
const presented = (c) => JSON.parse(lastConnect(c).slice("> message 0".length) || "{}");

// A session on gw through a proxy, in three rooms, with two live
// broadcasts each already delivered.
async function session(gw, user, board, opts = {}) {
  const px = await proxy(gw);
  const c = client(px.url, user, opts);
  await c.connected(1);
  const rooms = [`user-${user}`, `board-${board}-tasks`, chatOf(user, "zz")];
  await join(c, board);
  const book = ledger();
  await book.round(rooms, 2);
  await caughtUp(c, book, rooms, "the live broadcasts before the cut");
  return { px, c, rooms, book };
}

// record reads pid's session record (KV bucket SESSIONS, key the pid),
// through the connection conn to the stack's NATS: the entry, or null.
async function record(conn, pid) {
  const kv = await conn.jetstream().views.kv("SESSIONS", { bindOnly: true });
  return kv.get(pid);
}

// cutOff ends c's connection the given way and waits until the gateway has
// closed the socket and recorded its session, so that the broadcasts that
// follow are missed, not in flight.
async function cutOff(c, px, how) {
  if (how === "network") px.cutAll();
  else {
    // The client closes its own transport (a WebSocket close frame, not a
    // Socket.IO disconnect): the stock client reconnects by itself.
    px.refuse();
    c.s.io.engine.close();
  }
  await c.until("the disconnect", () => c.disconnects.length >= 1);
  const pid = c.connects.at(-1).pid;
  await poll(`the gateway recorded the session ${pid}`, async () => (await record(nc, pid))?.operation === "PUT");
}

// settled waits until c's transport is want and no upgrade is under way.
const settled = (c, want) => poll(`transport ${want}`, () => c.s.io.engine?.transport.name === want && !c.s.io.engine.upgrading);

for (const [i, { how, transports, title }] of [
  { how: "network", transports: ["websocket"], title: "the network drops the connection" },
  { how: "client", transports: ["websocket"], title: "the client closes its transport (socket.io.engine.close())" },
  // The stock client's default: the session comes back on long-polling,
  // so the replay goes out as polling answers, and the upgrade follows.
  { how: "network", transports: undefined, title: "the network drops the connection; default transports, the replay over long-polling" },
].entries()) {
  test(`a cut of a few seconds (${title}): recovered, the same id, every missed broadcast once and in order on each of three rooms, then live ones`, async () => {
    const user = `ra${i}`;
    const [rec0, rep0] = [await recoveries(A, "recovered"), await replayed(A)];
    const { px, c, rooms, book } = await session(A, user, user, { transports });
    const final = transports?.[0] ?? "websocket";
    await settled(c, final);
    const first = c.connects[0];
    assert.equal(typeof first.pid, "string", `the CONNECT answer carries a pid\n${c.report()}`);
    assert.equal(first.recovered, false);
    assert.deepEqual(c.got.map((g) => g.args), [2, 2, 2, 2, 2, 2], "every broadcast carries its offset");

    const cutAt = Date.now();
    await cutOff(c, px, how);
    const had = c.got.length;
    const lastOffset = c.got.at(-1).offset;
    await book.round(rooms, 3);
    // Several reconnects refused: the client stays away a few seconds.
    await c.until("three reconnects refused", () => c.refused >= 3);
    px.restore();
    await c.connected(2);
    const awayMs = Date.now() - cutAt;
    const back = c.connects[1];
    assert.deepEqual([presented(c).pid, presented(c).offset], [first.pid, lastOffset], "the client presented its pid and the last offset it got");
    assert.equal(back.recovered, true, `recovered\n${c.report()}`);
    assert.equal(back.id, first.id, "the same socket id");
    assert.equal(back.pid, first.pid, "the same pid");
    await caughtUp(c, book, rooms, "the missed broadcasts");
    assert.equal(c.got.length - had, 9, "nine missed");
    await book.round(rooms, 2);
    await caughtUp(c, book, rooms, "the live broadcasts after the recovery");
    await settled(c, final);
    await book.round(rooms, 1);
    await caughtUp(c, book, rooms, `the live broadcasts on ${final}`);
    delivered(c, book, rooms);
    assert.ok(awayMs >= 1000, `away ${awayMs} ms`);
    assert.equal(await recoveries(A, "recovered"), rec0 + 1);
    assert.equal(await replayed(A), rep0 + 9, "the nine missed ones replayed");
    c.s.disconnect();
  });
}

// Over long-polling what is queued waits for the client's next GET: a
// replay is queued at once, so the gateway bounds it by half the send
// queue (1 MiB by default). Within it, the session is recovered and every
// broadcast replayed; beyond, it is a new session (the client reads its
// rooms again), once: never a slow-consumer cut whose recovery replays
// the same again.
for (const [n, want] of [[100, "recovered"], [400, "too_much"]]) {
  test(`a replay over long-polling of ${n} missed broadcasts of 4.5 KB (${((n * 4.5) / 1000).toFixed(2)} MB; a replay holds at most half the 1 MiB send queue): ${want === "recovered" ? "recovered, every one delivered once and in order" : "a new session, once"}, no slow-consumer cut`, async () => {
    // A gateway of its own with a short heartbeat: a polling session's
    // cut is found by its ping timeout.
    const gw = gateway(stack, await freePort(), { ROOMCAST_PING_INTERVAL: "500ms", ROOMCAST_PING_TIMEOUT: "500ms" });
    await gw.start();
    cleanups.push(() => gw.stop());
    const user = `rp${n}`;
    const { px, c, rooms, book } = await session(gw.url, user, user, { transports: ["polling"] });
    const first = c.connects[0];
    const slow0 = await metric(gw.url, "roomcast_gateway_slow_consumer_disconnects_total");
    const result0 = await recoveries(gw.url, want);
    await cutOff(c, px, "network");
    const pad = "p".repeat(4500);
    for (let i = 0; i < n; i++) await book.publish(rooms[1], pad);
    px.restore();
    await c.connected(2);
    assert.equal(c.connects[1].recovered, want === "recovered", `${want}\n${c.report()}`);
    if (want === "recovered") {
      await caughtUp(c, book, rooms, "the missed broadcasts", 30000);
      await book.round(rooms, 1);
      await caughtUp(c, book, rooms, "the live broadcasts after the replay");
      assert.equal(c.connects[1].id, first.id);
      delivered(c, book, rooms);
    } else {
      assert.notEqual(c.connects[1].id, first.id, "a new session has a new id");
    }
    assert.equal(await recoveries(gw.url, want), result0 + 1);
    const slow = (await metric(gw.url, "roomcast_gateway_slow_consumer_disconnects_total")) - slow0;
    assert.equal(slow, 0, `no slow-consumer cut (${c.connects.length - 1} reconnects, ${c.disconnects.length} disconnects)\n${c.report()}`);
    assert.equal(c.disconnects.length, 1, "the cut alone");
    assert.equal(c.connects.length, 2);
    c.s.disconnect();
  });
}

test("a session recovered again and again: three cuts in a row (the second right after the first replay), each recovered with exactly what it missed", async () => {
  const user = "rr";
  const { px, c, rooms, book } = await session(A, user, user);
  const first = c.connects[0];
  for (let k = 1; k <= 3; k++) {
    await cutOff(c, px, "network");
    await book.round(rooms, 2 + k);
    px.restore();
    await c.connected(k + 1);
    assert.equal(c.connects[k].recovered, true, `recovery #${k}\n${c.report()}`);
    assert.equal(c.connects[k].id, first.id);
    await caughtUp(c, book, rooms, `the missed broadcasts of cut #${k}`);
    // The session's record after a replay alone must say where the
    // replay left each room, as well as after live broadcasts.
    if (k === 2) {
      await book.round(rooms, 1);
      await caughtUp(c, book, rooms, `the live broadcasts after recovery #${k}`);
    }
    delivered(c, book, rooms);
  }
  await book.round(rooms, 1);
  await caughtUp(c, book, rooms, "the live broadcasts at the end");
  delivered(c, book, rooms);
  c.s.disconnect();
});

test("a cut across a gateway restart (SIGTERM, started again on the same port): recovered, every missed broadcast once and in order, then live ones", async () => {
  const user = "rb";
  const c = client(B.url, user);
  await c.connected(1);
  const rooms = [`user-${user}`, `board-${user}-tasks`, chatOf(user, "zz")];
  await join(c, user);
  const book = ledger();
  await book.round(rooms, 2);
  await caughtUp(c, book, rooms, "the live broadcasts before the restart");
  const first = c.connects[0];

  const exit = await B.stop("SIGTERM");
  assert.equal(exit.code, 0, `gateway B exited cleanly: ${JSON.stringify(exit)}\n${B.logs()}`);
  await c.until("the disconnect", () => c.disconnects.length >= 1);
  assert.equal(c.disconnects[0], "transport close", "the drain's going-away close: the client reconnects by itself");
  await book.round(rooms, 3);
  await c.until("a reconnect refused while B is down", () => c.refused >= 1);
  await B.start();
  await c.connected(2);
  assert.equal(c.connects[1].recovered, true, `recovered after the restart\n${c.report()}`);
  assert.equal(c.connects[1].id, first.id);
  await caughtUp(c, book, rooms, "the missed broadcasts");
  await book.round(rooms, 2);
  await caughtUp(c, book, rooms, "the live broadcasts after the restart");
  delivered(c, book, rooms);
  assert.equal(await recoveries(B.url, "recovered"), 1, "counted by the new process");
  c.s.disconnect();
});

test("a reconnect to another gateway of the same NATS: recovered there, every missed broadcast once and in order, then live ones", async () => {
  // The proxy is a load balancer whose first gateway went away: when the
  // cut ends it sends the client's stock reconnect to gateway B, with the
  // pid and offset gateway A gave it.
  const user = "rc";
  const bRec = await recoveries(B.url, "recovered");
  const { px, c, rooms, book } = await session(A, user, user);
  const first = c.connects[0];
  await cutOff(c, px, "network");
  await book.round(rooms, 3);
  await c.until("a reconnect refused", () => c.refused >= 1);
  px.restore(B.url);
  await c.connected(2);
  assert.equal(c.connects[1].recovered, true, `recovered on gateway B\n${c.report()}`);
  assert.equal(c.connects[1].id, first.id);
  await caughtUp(c, book, rooms, "the missed broadcasts");
  await book.round(rooms, 2);
  await caughtUp(c, book, rooms, "the live broadcasts on B");
  delivered(c, book, rooms);
  assert.equal(await recoveries(B.url, "recovered"), bRec + 1, "recovered on B");
  c.s.disconnect();
});

// witnessed publishes on room and waits until witness got it: by then the
// gateway has fanned it out to its members there.
async function witnessed(witness, book, room) {
  const seq = await book.publish(room);
  await witness.until(`the witness got ${room}:${seq}`, () => witness.has(room, seq));
  return seq;
}

test("a pid presented by another user: a new session, recovered false, none of the first user's rooms or broadcasts", async () => {
  const [u1, u2] = ["rd1", "rd2"];
  const other0 = await recoveries(A, "other_user");
  const { px, c, rooms, book } = await session(A, u1, "rd");
  const first = c.connects[0];
  const witness = client(A, "rdw");
  await witness.connected(1);
  await join(witness, "rd");
  await cutOff(c, px, "network");
  await book.round(rooms, 2); // missed by u1

  // socket.io-client keeps the pid and the last offset in the private
  // fields _pid and _lastOffset, and sends them in its CONNECT when _pid
  // is set: put u1's there on a socket with u2's token.
  const d = client(A, u2, { autoConnect: false, reconnection: false });
  d.s._pid = first.pid;
  d.s._lastOffset = String(book.sent.get(rooms[2])[1]);
  d.s.connect();
  await d.connected(1);
  assert.equal(presented(d).pid, first.pid, "u2 presented u1's pid");
  assert.equal(d.connects[0].recovered, false, `a new session\n${d.report()}`);
  assert.notEqual(d.connects[0].id, first.id, "a new id");
  assert.notEqual(d.connects[0].pid, first.pid, "a new pid");
  // Live broadcasts of u1's rooms reach the witness, not u2; u2's own room reaches u2.
  await witnessed(witness, book, `board-rd-tasks`);
  await book.publish(`user-${u1}`);
  const own = await book.publish(`user-${u2}`);
  await d.until("u2's own broadcast", () => d.has(`user-${u2}`, own));
  assert.deepEqual(d.got.map((g) => `${g.room}:${g.seq}`), [`user-${u2}:${own}`], `u2 got its own room's broadcast alone\n${d.report()}`);
  assert.equal(await recoveries(A, "other_user"), other0 + 1);
  for (const s of [c.s, d.s, witness.s]) s.disconnect();
});

test("a session cut before its first broadcast (no offset to present): recovered, every missed broadcast once and in order", async () => {
  const user = "ro";
  const px = await proxy(A);
  const c = client(px.url, user);
  await c.connected(1);
  await join(c, user);
  const rooms = [`user-${user}`, `board-${user}-tasks`];
  const book = ledger();
  await cutOff(c, px, "network");
  await book.round(rooms, 2);
  px.restore();
  await c.connected(2);
  assert.deepEqual(presented(c), { pid: c.connects[0].pid, token: "…" }, "a pid, no offset: the client got no broadcast");
  assert.equal(c.connects[1].recovered, true, `recovered\n${c.report()}`);
  assert.equal(c.connects[1].id, c.connects[0].id);
  await caughtUp(c, book, rooms, "the missed broadcasts");
  await book.round(rooms, 1);
  await caughtUp(c, book, rooms, "the live broadcasts");
  delivered(c, book, rooms);
  c.s.disconnect();
});

// The chat is in no session record (no broadcast of it had reached the
// socket): the gateway reads the user's chats new to the session too.
test("a chat whose first message comes while its member is away: recovered with that message", async () => {
  const user = "rn";
  const { px, c, book } = await session(A, user, user);
  const chat = chatOf(user, "yy"); // a chat of this user that has had no message yet
  await cutOff(c, px, "network");
  const seq = await book.publish(chat);
  px.restore();
  await c.connected(2);
  assert.equal(c.connects[1].recovered, true, `recovered\n${c.report()}`);
  await c.until("the chat's first message, replayed", () => c.has(chat, seq));
  c.s.disconnect();
});

test("an unusable offset (not a number): a new session, recovered false", async () => {
  for (const [k, offset] of ["garbage", "-1"].entries()) {
    const user = `rq${k}`;
    const { px, c, rooms, book } = await session(A, user, user);
    const first = c.connects[0];
    const bad0 = await recoveries(A, "bad_offset");
    await cutOff(c, px, "network");
    await book.round(rooms, 1);
    // socket.io-client sends _lastOffset (a private field) as the offset.
    c.s._lastOffset = offset;
    px.restore();
    await c.connected(2);
    assert.equal(presented(c).offset, offset);
    assert.equal(c.connects[1].recovered, false, `${offset}: a new session\n${c.report()}`);
    assert.notEqual(c.connects[1].id, first.id, `${offset}: a new id`);
    assert.equal(await recoveries(A, "bad_offset"), bad0 + 1, offset);
    c.s.disconnect();
  }
});

test("a room now forbidden (the membership removed and kicked while the client was away): a new session, none of the room's broadcasts", async () => {
  const user = "rk";
  const { px, c, rooms, book } = await session(A, user, user);
  const first = c.connects[0];
  const witness = client(A, "rkw");
  await witness.connected(1);
  await join(witness, user);
  const forbidden0 = await recoveries(A, "forbidden");
  await cutOff(c, px, "network");
  denied.add(`${user}:board-${user}`);
  nc.publish("ctl.rooms.kick", jc.encode({ roomName: `board-${user}`, userId: user }));
  await nc.flush();
  await book.round([rooms[1]], 2); // missed, and no longer the user's
  px.restore();
  await c.connected(2);
  assert.equal(c.connects[1].recovered, false, `a new session\n${c.report()}`);
  assert.notEqual(c.connects[1].id, first.id);
  const had = c.got.length;
  await witnessed(witness, book, rooms[1]);
  const own = await book.publish(rooms[0]);
  await c.until("the user's own broadcast", () => c.has(rooms[0], own));
  assert.deepEqual(c.got.slice(had).map((g) => `${g.room}:${g.seq}`), [`${rooms[0]}:${own}`], `none of the board's\n${c.report()}`);
  assert.equal(await recoveries(A, "forbidden"), forbidden0 + 1);
  c.s.disconnect();
  witness.s.disconnect();
});

test("a recovery after the room's history was cut by the stream's max age: a new session, recovered false, none of the missed broadcasts", async () => {
  // A stack of its own whose stream keeps messages 2 s.
  const st = await startStack({ env: { ROOMCAST_MAX_AGE: "2s" } });
  cleanups.push(() => st.stop());
  const nc2 = await nats(st);
  cleanups.push(() => nc2.close());
  authz(nc2, () => true);
  const px = await proxy(st.httpURL);
  const user = "re";
  const c = client(px.url, user, { auth: { token: st.token(user) } });
  await c.connected(1);
  const ack = await call(c.s, "addToRoom", { roomName: "board-re" });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  const pub = async (i) => (await publish(nc2, "rooms.board.re.tasks", { event: "update-task", id: "t1", updatedAt: Date.now(), diff: { i } })).seq;
  const seen = await pub(1);
  await c.until("the live broadcast", () => c.has("board-re-tasks", seen));
  const first = c.connects[0];
  px.cutAll();
  await c.until("the disconnect", () => c.disconnects.length >= 1);
  await poll("the gateway recorded the session", async () => (await record(nc2, first.pid))?.operation === "PUT");
  const missed = await pub(2);
  // Wait until the stream has dropped everything up to the missed one.
  const jsm = await nc2.jetstreamManager();
  await poll("the stream's max age dropped the missed broadcast", async () => (await jsm.streams.info("ROOMS")).state.first_seq > missed, 20000);
  const cut0 = await recoveries(st.httpURL, "history_cut");
  px.restore();
  await c.connected(2);
  assert.deepEqual([presented(c).pid, presented(c).offset], [first.pid, String(seen)], "the client presented its pid and last offset");
  assert.equal(c.connects[1].recovered, false, `a new session\n${c.report()}`);
  assert.notEqual(c.connects[1].id, first.id);
  // Not back in the board (a new session has the personal rooms alone),
  // and the missed broadcast was not replayed.
  const w = client(px.url, "rew", { auth: { token: st.token("rew") } });
  await w.connected(1);
  assert.equal((await call(w.s, "addToRoom", { roomName: "board-re" })).ok, true);
  const later = await pub(3);
  await w.until("the witness got the board's broadcast", () => w.has("board-re-tasks", later));
  const own = (await publish(nc2, `rooms.user.${user}`, { event: "update-user", id: user, updatedAt: Date.now(), diff: {} })).seq;
  await c.until("the user's own broadcast", () => c.has(`user-${user}`, own));
  assert.deepEqual(c.got.map((g) => `${g.room}:${g.seq}`), [`board-re-tasks:${seen}`, `user-${user}:${own}`], `nothing missed replayed, the board left\n${c.report()}`);
  assert.equal(await recoveries(st.httpURL, "history_cut"), cut0 + 1);
  c.s.disconnect();
  w.s.disconnect();
});

// The gateway reads what was missed before the socket takes the session's
// id: too much is a new session with a new id.
test("more missed than one replay carries (1,500 broadcasts; the gateway replays at most 1,000): a new session, a new id, none of the missed broadcasts", async () => {
  const user = "rm";
  const { px, c, rooms, book } = await session(A, user, user);
  const first = c.connects[0];
  const witness = client(A, "rmw");
  await witness.connected(1);
  await join(witness, user);
  const much0 = await recoveries(A, "too_much");
  await cutOff(c, px, "network");
  for (let i = 0; i < 1500; i++) await book.publish(rooms[1]);
  px.restore();
  await c.connected(2);
  assert.equal(presented(c).pid, first.pid);
  assert.equal(c.connects[1].recovered, false, `a new session\n${c.report()}`);
  assert.notEqual(c.connects[1].id, first.id, `a new session has a new id\n${c.report()}`);
  assert.notEqual(c.connects[1].pid, first.pid);
  const had = c.got.length;
  await witnessed(witness, book, rooms[1]);
  const own = await book.publish(rooms[0]);
  await c.until("the user's own broadcast", () => c.has(rooms[0], own));
  assert.deepEqual(c.got.slice(had).map((g) => `${g.room}:${g.seq}`), [`${rooms[0]}:${own}`], `nothing replayed, not back in the board\n${c.report()}`);
  assert.equal(await recoveries(A, "too_much"), much0 + 1);
  c.s.disconnect();
  witness.s.disconnect();
});

test("a recovery after the record expired (ROOMCAST_RECOVERY_TTL=1s): a new session, recovered false, none of the missed broadcasts", async () => {
  // A stack of its own: the records' bucket has the TTL of the first
  // gateway that made it.
  const st = await startStack({ env: { ROOMCAST_RECOVERY_TTL: "1s" } });
  cleanups.push(() => st.stop());
  const nc2 = await nats(st);
  cleanups.push(() => nc2.close());
  authz(nc2, () => true);
  const px = await proxy(st.httpURL);
  const user = "rh";
  const c = client(px.url, user, { auth: { token: st.token(user) } });
  await c.connected(1);
  assert.equal((await call(c.s, "addToRoom", { roomName: "board-rh" })).ok, true);
  const pub = async (i) => (await publish(nc2, "rooms.board.rh.tasks", { event: "update-task", id: "t1", updatedAt: Date.now(), diff: { i } })).seq;
  const seen = await pub(1);
  await c.until("the live broadcast", () => c.has("board-rh-tasks", seen));
  const first = c.connects[0];
  px.cutAll();
  await c.until("the disconnect", () => c.disconnects.length >= 1);
  // The record is written at the close and expires a TTL later.
  await poll("the gateway recorded the session", async () => (await record(nc2, first.pid))?.operation === "PUT");
  await pub(2); // missed
  await poll("the session record expired", async () => (await record(nc2, first.pid)) === null, 15000).catch(async (err) => {
    const ttl = (await (await nc2.jetstreamManager()).streams.info("KV_SESSIONS")).config.max_age / 1e9;
    throw new Error(`${err.message} (the bucket's TTL: ${ttl} s)\n${st.logs().slice(-3000)}`);
  });
  const unknown0 = await recoveries(st.httpURL, "unknown");
  px.restore();
  await c.connected(2);
  assert.equal(presented(c).pid, first.pid);
  assert.equal(c.connects[1].recovered, false, `a new session\n${c.report()}`);
  assert.notEqual(c.connects[1].id, first.id);
  const own = (await publish(nc2, `rooms.user.${user}`, { event: "update-user", id: user, updatedAt: Date.now(), diff: {} })).seq;
  await c.until("the user's own broadcast", () => c.has(`user-${user}`, own));
  assert.deepEqual(c.got.map((g) => `${g.room}:${g.seq}`), [`board-rh-tasks:${seen}`, `user-${user}:${own}`], `nothing replayed\n${c.report()}`);
  assert.equal(await recoveries(st.httpURL, "unknown"), unknown0 + 1);
  c.s.disconnect();
});

test("the client's own disconnect() then connect(): a new session, though the stock client presents its pid", async () => {
  const user = "rf";
  const c = client(A, user);
  await c.connected(1);
  await join(c, "rf");
  const book = ledger();
  await book.round([`board-rf-tasks`], 1);
  await caughtUp(c, book, [`board-rf-tasks`], "the live broadcast");
  const first = c.connects[0];
  c.s.disconnect();
  assert.deepEqual(c.disconnects, ["io client disconnect"]);
  c.s.connect();
  await c.connected(2);
  assert.equal(presented(c).pid, first.pid, "the stock client presented its pid");
  assert.equal(c.connects[1].recovered, false, `a new session\n${c.report()}`);
  assert.notEqual(c.connects[1].id, first.id);
  assert.notEqual(c.connects[1].pid, first.pid);
  const witness = client(A, "rfw");
  await witness.connected(1);
  await join(witness, "rf");
  await witnessed(witness, book, "board-rf-tasks");
  const own = await book.publish(`user-${user}`);
  await c.until("the user's own broadcast", () => c.has(`user-${user}`, own));
  assert.deepEqual(c.got.map((g) => `${g.room}:${g.seq}`), [`board-rf-tasks:${book.sent.get("board-rf-tasks")[0]}`, `user-${user}:${own}`], `not back in the board\n${c.report()}`);
  c.s.disconnect();
  witness.s.disconnect();
});

test("with ROOMCAST_RECOVERY_TTL=0 no pid is offered, broadcasts carry no offset, and a reconnect is a new session", async () => {
  const off = gateway(stack, await freePort(), { ROOMCAST_RECOVERY_TTL: "0" });
  await off.start();
  cleanups.push(() => off.stop());
  const px = await proxy(off.url);
  const user = "rg";
  const c = client(px.url, user);
  await c.connected(1);
  const answer = c.frames.find((f) => f.startsWith("< message 0"));
  assert.match(answer, /^< message 0\{"sid":"[^"]+"\}$/, "the CONNECT answer has a sid alone");
  assert.equal(c.connects[0].pid, undefined);
  await join(c, "rg");
  const book = ledger();
  await book.round([`board-rg-tasks`], 1);
  await caughtUp(c, book, [`board-rg-tasks`], "the live broadcast");
  assert.equal(c.got[0].args, 1, "no offset");
  assert.match(c.frames.find((f) => f.startsWith("< message 2")), /^< message 2\["broadcast",\{[^\]]*\}\]$/, "the frame has two elements");
  px.cutAll();
  await c.until("the disconnect", () => c.disconnects.length >= 1);
  px.restore();
  await c.connected(2);
  assert.equal(presented(c).pid, undefined, "nothing to present");
  assert.equal(typeof presented(c).token, "string", c.report());
  // socket.io-client's recovered is `pid && pid === its pid`: undefined
  // when the answer has no pid.
  assert.equal(c.connects[1].recovered, undefined);
  assert.notEqual(c.connects[1].id, c.connects[0].id);
  c.s.disconnect();
});
