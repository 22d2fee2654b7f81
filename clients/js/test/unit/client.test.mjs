// The client's session decisions, against a scripted socket: tokens are
// asked for on every connect, an expired token is replaced, a revoked
// session stops, presence follows visibility, rooms are joined again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, tokenExpiry, isExpired, refreshable } from "../../dist/index.js";

function jwt(claims) {
  const b = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b({ alg: "HS256", typ: "JWT" })}.${b(claims)}.sig`;
}
const now = () => Date.now();
const fresh = () => jwt({ sub: "u1", exp: Math.floor(now() / 1000) + 3600 });
const expired = () => jwt({ sub: "u1", exp: Math.floor(now() / 1000) - 10 });

// A scripted socket.io-client socket: the test plays the server.
class FakeSocket {
  constructor(opts) {
    this.opts = opts;
    this.handlers = {};
    this.connected = false;
    this.active = false;
    this.connects = 0;
    this.auths = [];
    this.calls = [];
    // The Manager's reconnection delays (socket.io-client's defaults).
    this.io = { reconnectionDelay: () => 1000, reconnectionDelayMax: () => 5000 };
    this.answer = (call) => ({ ok: true, data: call.endpointName === "addToRoom" ? { roomName: call.endpointArgs.roomName, seq: null, lastBroadcastTimestamp: null } : {} });
  }
  on(ev, fn) {
    (this.handlers[ev] ??= []).push(fn);
    return this;
  }
  fire(ev, ...args) {
    for (const fn of this.handlers[ev] ?? []) fn(...args);
  }
  connect() {
    this.connects++;
    this.active = true;
    return new Promise((ok) => this.opts.auth((a) => ok(this.auths.push(a))));
  }
  // up connects; recovered says what socket.io-client found in the
  // gateway's CONNECT answer (its pid was the one it presented).
  up(recovered = false) {
    this.connected = true;
    this.recovered = recovered;
    this.fire("connect");
  }
  // cut is a transport close: the reconnect is the stock client's.
  cut() {
    this.connected = false;
    this.fire("disconnect", "transport close");
  }
  serverDisconnect() {
    this.connected = false;
    this.active = false;
    this.fire("disconnect", "io server disconnect");
  }
  refuse(message, code = 401) {
    this.active = false;
    this.fire("connect_error", Object.assign(new Error(message), { data: { code } }));
  }
  disconnect() {
    this.connected = false;
    this.active = false;
    this.fire("disconnect", "io client disconnect");
  }
  timeout() {
    return this;
  }
  async emitWithAck(_ev, call) {
    this.calls.push(call);
    return this.answer(call);
  }
}

function open(opts) {
  let sock;
  const io = (url, o) => (sock = new FakeSocket(o));
  const statuses = [];
  const c = connect("http://x", { visibility: false, storage: null, ...opts, io });
  c.on("status", (s, d) => statuses.push(d ? `${s}: ${d}` : s));
  return { c, sock, statuses };
}
const tick = () => new Promise((ok) => setImmediate(ok));

test("tokenExpiry, isExpired and refreshable read what the gateway says", () => {
  assert.equal(tokenExpiry(jwt({ exp: 1700000000 })), 1700000000000);
  assert.equal(tokenExpiry("nope"), undefined);
  assert.equal(isExpired(expired(), now()), true);
  assert.equal(isExpired(fresh(), now()), false);
  assert.equal(refreshable("token expired"), true);
  assert.equal(refreshable("token signature invalid"), false);
});

test("a token function is asked on every connect; the clientId is stable and sent each time", async () => {
  let n = 0;
  const storage = new Map();
  const st = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v) };
  const { c, sock } = open({ token: async () => `${fresh()}#${++n}`, storage: st });
  await tick();
  assert.equal(sock.auths.length, 1);
  await sock.connect();
  assert.equal(n, 2);
  assert.equal(sock.auths[0].clientId, c.clientId);
  assert.equal(sock.auths[1].clientId, c.clientId);
  assert.match(c.clientId, /^[0-9a-f-]{36}$/);
  const again = open({ token: "t", storage: st });
  assert.equal(again.c.clientId, c.clientId, "the same tab (storage) keeps its clientId");
});

test("a server disconnect with a valid token is a revocation: no reconnect, a clear signal", async () => {
  const { c, sock, statuses } = open({ token: () => fresh() });
  await tick();
  sock.up();
  let revoked = 0;
  c.on("revoked", () => revoked++);
  sock.serverDisconnect();
  await tick();
  assert.equal(c.status, "revoked");
  assert.equal(revoked, 1);
  assert.equal(sock.connects, 1, "no reconnect");
  assert.deepEqual(statuses.slice(0, 1), ["connected"]);
});

test("a server disconnect of an expired token reconnects with a fresh one", async () => {
  // The socket connected with a token that has expired since; the gateway
  // ended the session.
  let tok = expired();
  const { c, sock } = open({ token: () => tok });
  await tick();
  sock.up();
  tok = fresh();
  sock.serverDisconnect();
  await tick();
  assert.equal(c.status, "reconnecting");
  assert.equal(sock.connects, 2);
  assert.equal(sock.auths.at(-1).token, tok, "the function was asked again");
});

test("a refused expired token is retried with a fresh one, twice at most", async () => {
  const { c, sock } = open({ token: () => expired() });
  await tick();
  sock.refuse("token expired");
  await tick();
  assert.equal(sock.connects, 2);
  sock.refuse("token expired");
  await tick();
  assert.equal(sock.connects, 3);
  let err;
  c.on("error", (e) => (err = e));
  sock.refuse("token expired");
  await tick();
  assert.equal(sock.connects, 3, "a token function that keeps giving expired tokens is not looped on");
  assert.equal(c.status, "unauthorized");
  assert.equal(err.code, "unauthenticated");
});

test("a static token or another refusal is final", async () => {
  const a = open({ token: expired() });
  await tick();
  a.sock.refuse("token expired");
  assert.equal(a.c.status, "unauthorized");
  assert.equal(a.sock.connects, 1);
  const b = open({ token: () => fresh() });
  await tick();
  b.sock.refuse("token signature invalid");
  assert.equal(b.c.status, "unauthorized");
  assert.equal(b.sock.connects, 1);
});

test("a token refused as revoked ends as revoked, with no retry", async () => {
  const { c, sock } = open({ token: () => fresh() });
  let revoked = 0;
  c.on("revoked", () => revoked++);
  await tick();
  sock.refuse("token revoked: it was issued before the user's last revoke; sign in again");
  await tick();
  assert.equal(c.status, "revoked");
  assert.equal(revoked, 1);
  assert.equal(sock.connects, 1, "another token of the same sign-in would be refused too");
});

test("presence: updateClient on connect and on every visibility change", async () => {
  let visible = true;
  let onChange;
  const { sock } = open({
    token: "t",
    visibility: { visible: () => visible, subscribe: (fn) => ((onChange = fn), () => {}) },
  });
  sock.up();
  visible = false;
  onChange();
  visible = true;
  onChange();
  await tick();
  assert.deepEqual(
    sock.calls.filter((c) => c.endpointName === "updateClient").map((c) => c.endpointArgs.isActive),
    [true, false, true],
  );
});

test("rooms are joined on connect and joined again after a reconnect", async () => {
  const { c, sock } = open({ token: "t" });
  const r = c.room("board-b1-tasks", { refetch: () => {} });
  c.room("chat-bob-alice", {});
  sock.up();
  await r.ready();
  sock.connected = false;
  sock.fire("disconnect", "transport close");
  assert.equal(c.status, "reconnecting");
  sock.up();
  await r.ready();
  const joins = sock.calls.filter((x) => x.endpointName === "addToRoom").map((x) => x.endpointArgs.roomName);
  assert.deepEqual(joins, ["board-b1-tasks", "chat-alice-bob", "board-b1-tasks", "chat-alice-bob"], "chat names are canonical");
  await r.leave();
  assert.equal(sock.calls.at(-1).endpointName, "removeFromRoom");
  assert.throws(() => c.room("board-*"), TypeError);
});

// A scripted clock for the rooms' retries: timers run when the test says.
function timers() {
  const pending = [];
  return {
    pending,
    setTimeout: (fn, ms) => {
      const t = { fn, ms, cleared: false };
      pending.push(t);
      return t;
    },
    clearTimeout: (t) => (t.cleared = true),
    // fire runs the one live timer and says how long it was set for.
    fire() {
      const live = pending.filter((t) => !t.cleared);
      assert.equal(live.length, 1, "one retry pending");
      pending.length = 0;
      live[0].fn();
      return live[0].ms;
    },
    live: () => pending.filter((t) => !t.cleared).length,
  };
}
// watch follows a promise from now on; settled says where it stands after the work queued so far.
const watch = (p) => {
  const w = { state: "pending" };
  p.then(() => (w.state = "resolved"), (e) => (w.state = `rejected: ${e.code}`));
  return w;
};
const settled = async (p) => {
  const w = p.state ? p : watch(p);
  for (let i = 0; i < 5; i++) await tick();
  return w.state;
};
const refusing = (codes) => (call) => {
  if (call.endpointName === "addToRoom" && codes.length > 0) {
    const code = codes.shift();
    return { ok: false, error: { code, message: `${code} for now` } };
  }
  return { ok: true, data: call.endpointName === "addToRoom" ? { roomName: call.endpointArgs.roomName, seq: 7, lastBroadcastTimestamp: 1 } : null };
};

test("a join the gateway cannot answer yet (unavailable, timeout) is retried with growing, jittered waits until joined; ready() waits for it", async () => {
  const clock = timers();
  const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100, retryMaxMs: 400, random: () => 0.5 } });
  const codes = ["unavailable", "timeout", "rate_limited", "unavailable"];
  sock.answer = refusing(codes);
  const seen = [];
  const errors = [];
  c.on("error", (e) => errors.push(e.code));
  const r = c.room("board-b1", {});
  r.onStatus((s, err) => seen.push(err ? `${s}: ${err.code}` : s));
  sock.up();
  const ready = watch(r.ready());
  await tick();
  assert.equal(r.status, "retrying");
  assert.equal(await settled(ready), "pending", "not joined: ready() waits");
  // Waits of step/2 + random·step/2, the step doubling from retryMs up to retryMaxMs.
  const waits = [];
  for (let i = 0; i < 4; i++) {
    waits.push(clock.fire());
    await tick();
  }
  assert.deepEqual(waits, [75, 150, 300, 300]);
  assert.equal(r.status, "joined");
  assert.equal(await settled(ready), "resolved");
  assert.equal(r.lastSeq, 7, "synced from the join's state");
  assert.deepEqual(seen, ["retrying: unavailable", "retrying: timeout", "retrying: rate_limited", "retrying: unavailable", "joined"]);
  assert.deepEqual(errors, ["unavailable", "timeout", "rate_limited", "unavailable"], "a room without onError reports to the client");
  assert.equal(sock.calls.filter((x) => x.endpointName === "addToRoom").length, 5);
  assert.equal(clock.live(), 0, "no retry left once joined");
});

test("the jitter spreads each wait between half the step and the whole step", async () => {
  for (const [random, want] of [
    [0, [50, 100, 200]],
    [0.999, [99.95, 199.9, 399.8]],
  ]) {
    const clock = timers();
    const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100, retryMaxMs: 400, random: () => random } });
    sock.answer = refusing(["unavailable", "unavailable", "unavailable", "unavailable"]);
    c.room("board-b1", {});
    sock.up();
    await tick();
    const waits = [];
    for (let i = 0; i < 3; i++) {
      waits.push(clock.fire());
      await tick();
    }
    assert.deepEqual(waits.map((w) => Math.round(w * 100) / 100), want);
  }
});

test("a final answer (forbidden, invalid_argument) stops the retries: failed, ready() rejects; a reconnect tries again", async () => {
  for (const code of ["forbidden", "invalid_argument"]) {
    const clock = timers();
    const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100 } });
    sock.answer = refusing(["unavailable", code]);
    const errors = [];
    const r = c.room("board-b1", { onError: (e) => errors.push(e.code) });
    sock.up();
    const ready = watch(r.ready());
    await tick();
    clock.fire();
    await tick();
    assert.equal(r.status, "failed");
    assert.equal(await settled(ready), `rejected: ${code}`);
    assert.equal(await settled(r.ready()), `rejected: ${code}`, "a later ready() rejects too");
    assert.equal(clock.live(), 0, "no retry after a final answer");
    assert.deepEqual(errors, ["unavailable", code]);
    sock.connected = false;
    sock.fire("disconnect", "transport close");
    assert.equal(r.status, "failed", "still failed while away");
    sock.up();
    await tick();
    assert.equal(r.status, "joined", "the next connect joins again");
    assert.equal(await settled(r.ready()), "resolved");
  }
});

test("a disconnect cancels a pending retry; the reconnect joins at once", async () => {
  const clock = timers();
  const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100 } });
  sock.answer = refusing(["unavailable"]);
  const r = c.room("board-b1", {});
  sock.up();
  await tick();
  assert.equal(r.status, "retrying");
  assert.equal(clock.live(), 1);
  sock.connected = false;
  sock.fire("disconnect", "transport close");
  assert.equal(r.status, "joining");
  assert.equal(clock.live(), 0, "no retry while the socket is down");
  sock.up();
  await tick();
  assert.equal(r.status, "joined");
  assert.equal(sock.calls.filter((x) => x.endpointName === "addToRoom").length, 2);
});

test("the answer to a join made before a disconnect changes nothing after it", async () => {
  const clock = timers();
  const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100 } });
  let release;
  sock.answer = (call) =>
    call.endpointName === "addToRoom" && !release
      ? new Promise((ok) => (release = () => ok({ ok: false, error: { code: "unavailable", message: "late" } })))
      : { ok: true, data: call.endpointName === "addToRoom" ? { roomName: "board-b1", seq: null, lastBroadcastTimestamp: null } : null };
  const r = c.room("board-b1", {});
  sock.up();
  await tick();
  sock.connected = false;
  sock.fire("disconnect", "transport close");
  release();
  await tick();
  assert.equal(r.status, "joining", "the late failure of the old session is ignored");
  assert.equal(clock.live(), 0);
});

test("a room tracked before the first connect is not ready until joined; a left room's ready() rejects", async () => {
  const { c, sock } = open({ token: "t" });
  const r = c.room("board-b1", {});
  assert.equal(r.status, "joining");
  const ready = watch(r.ready());
  assert.equal(await settled(ready), "pending", "not connected: not ready");
  sock.up();
  assert.equal(await settled(ready), "resolved");
  const other = c.room("board-b2", {});
  sock.connected = false;
  sock.fire("disconnect", "transport close");
  const waiting = watch(other.ready());
  await other.leave();
  assert.equal(await settled(waiting), "rejected: disconnected");
});

test("a rate_limited answer's retryAfterMs is a floor for the wait before the retry", async () => {
  const clock = timers();
  const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100, random: () => 0 } });
  let refused = 0;
  sock.answer = (call) =>
    call.endpointName === "addToRoom" && refused++ === 0
      ? { ok: false, error: { code: "rate_limited", message: "slow down", retryAfterMs: 700 } }
      : { ok: true, data: call.endpointName === "addToRoom" ? { roomName: "board-b1", seq: null, lastBroadcastTimestamp: null } : null };
  let err;
  const r = c.room("board-b1", { onError: (e) => (err = e) });
  sock.up();
  await tick();
  assert.equal(err.retryAfterMs, 700);
  assert.equal(clock.fire(), 700, "the gateway's hint, not the 50 ms backoff");
  await tick();
  assert.equal(r.status, "joined");
});

test("a CONNECT refused with 429 (too many sockets, a flood's cooldown) is tried again after a growing, jittered wait, not given up", async () => {
  const clock = timers();
  const { c, sock, statuses } = open({ token: () => fresh(), sync: { ...clock, random: () => 0 } });
  await tick();
  let errors = 0;
  c.on("error", () => errors++);
  const waits = [];
  for (let i = 0; i < 4; i++) {
    sock.refuse("too many sockets for this user: at most 32 on this gateway", 429);
    assert.equal(c.status, "connecting");
    waits.push(clock.fire());
    await tick();
  }
  assert.deepEqual(waits, [500, 1000, 2000, 2500], "half of a step doubling from reconnectionDelay up to reconnectionDelayMax, and up to all of it");
  assert.equal(sock.connects, 5);
  assert.equal(errors, 0, "not an error: it passes");
  assert.equal(statuses.filter((x) => x === "connecting: too many sockets for this user: at most 32 on this gateway").length, 4, "each refusal says why");
  sock.up();
  assert.equal(c.status, "connected");
  sock.connected = false;
  sock.fire("disconnect", "transport close");
  sock.refuse("rate limit exceeded: a socket of this user was closed for flooding", 429);
  assert.equal(c.status, "reconnecting");
  assert.equal(clock.fire(), 500, "the wait starts over after a connect");
  assert.ok(statuses.includes("reconnecting: rate limit exceeded: a socket of this user was closed for flooding"), statuses.join(", "));
});

test("close() cancels the reconnect planned after a 429", async () => {
  const clock = timers();
  const { c, sock } = open({ token: "t", sync: { ...clock } });
  sock.refuse("too many sockets", 429);
  assert.equal(clock.live(), 1);
  c.close();
  assert.equal(clock.live(), 0);
  assert.equal(sock.connects, 1);
});

// Connection state recovery. A scripted history of one children room
// (board-b1-tasks: seq 10, 11 in stream ROOMS) and one chat, answering
// joins and reads; broadcasts come with their offset, as the gateway sends
// them when recovery is on.
function history(sock) {
  const rooms = { "board-b1-tasks": [10, 11], "chat-alice-bob": [20] };
  sock.answer = (call) => {
    const { endpointName: name, endpointArgs: a } = call;
    const seqs = rooms[a.roomName] ?? [];
    const last = seqs.at(-1) ?? null;
    switch (name) {
      case "addToRoom":
        return { ok: true, data: { roomName: a.roomName, seq: last, lastBroadcastTimestamp: last } };
      case "getRoomState":
        return { ok: true, data: last === null ? null : { seq: last, lastBroadcastTimestamp: last } };
      case "getChangesSince":
        return { ok: true, data: { changes: seqs.filter((q) => q > (a.afterSeq ?? 0)).map((q) => ({ id: `t${q}`, updatedAt: q, deleted: false, seq: q })), complete: true } };
      case "getChatMessagesSince":
        return { ok: true, data: { messages: seqs.filter((q) => q > (a.afterSeq ?? 0)).map((q) => ({ event: "new-message", id: `m${q}`, updatedAt: q, data: {} })), hasMore: false, complete: true } };
    }
    return { ok: true, data: {} };
  };
  // publish stores the next message of a room and returns its broadcast with
  // its offset, as the frame's two arguments.
  return (room, seq) => {
    const prevSeq = rooms[room].at(-1) ?? 0;
    rooms[room].push(seq);
    return [{ destination: room, data: { event: room.startsWith("chat") ? "new-message" : "update-task", id: `x${seq}`, updatedAt: seq, diff: {} }, seq, prevSeq }, String(seq)];
  };
}
// since lists the calls made after the n-th, as "endpoint room".
const since = (sock, n) => sock.calls.slice(n).map((x) => `${x.endpointName} ${x.endpointArgs.roomName ?? ""}`.trim());

function tracked(c) {
  const log = [];
  const synced = [];
  const tasks = c.room("board-b1-tasks", {
    cursor: { afterSeq: 0 },
    onSynced: (s) => synced.push(`${s.reason} ${s.lastSeq} ${s.refetched}`),
    onEvent: (env, b) => log.push(`tasks ${b.seq}`),
    onChanges: (ch) => log.push(`changes ${ch.upserts.map((u) => u.seq).join(",")}`),
    refetch: () => log.push("refetch"),
  });
  const chat = c.room("chat-bob-alice", {
    onEvent: (env, b) => log.push(`chat ${b.seq}`),
    onMessages: (ms) => log.push(`messages ${ms.map((m) => m.updatedAt).join(",")}`),
  });
  return { log, synced, tasks, chat };
}

test("a recovered reconnect takes the rooms up where they stood: no join, no resync; the missed broadcasts (with their offsets) are applied in order", async () => {
  const { c, sock, statuses } = open({ token: "t" });
  const publish = history(sock);
  const { log, synced, tasks, chat } = tracked(c);
  sock.up();
  await tasks.ready();
  await chat.ready();
  assert.equal(tasks.lastSeq, 11);
  assert.equal(c.recovered, false, "a first connect is not a recovery");
  assert.deepEqual(synced, ["join 11 false"]);
  sock.fire("broadcast", ...publish("board-b1-tasks", 12));
  assert.equal(tasks.lastSeq, 12);

  sock.cut();
  assert.equal(tasks.status, "joining");
  const n = sock.calls.length;
  log.length = 0;
  sock.up(true);
  assert.equal(c.status, "connected");
  assert.equal(statuses.at(-1), "connected: recovered");
  assert.equal(c.recovered, true);
  assert.equal(tasks.status, "joined", "in step at once");
  assert.equal(chat.status, "joined");
  assert.deepEqual(synced, ["join 11 false", "recovered 12 false"], "onSynced says the room is in step again, from its last seq");
  // The gateway replays what the socket missed on both rooms, then live ones.
  for (const [room, seq] of [["board-b1-tasks", 13], ["chat-alice-bob", 21], ["board-b1-tasks", 14], ["board-b1-tasks", 15], ["chat-alice-bob", 22]]) {
    sock.fire("broadcast", ...publish(room, seq));
  }
  await tick();
  assert.deepEqual(log, ["tasks 13", "chat 21", "tasks 14", "tasks 15", "chat 22"]);
  assert.deepEqual(since(sock, n), [], "neither joined again nor resynced");
  assert.equal(tasks.lastSeq, 15);
  assert.equal(chat.lastSeq, 22);
  assert.equal(await settled(tasks.ready()), "resolved");
});

test("a recovered room still detects a gap: a replayed broadcast that does not follow its last seq resyncs it, without joining again", async () => {
  const { c, sock } = open({ token: "t" });
  const publish = history(sock);
  const { log, tasks, chat } = tracked(c);
  sock.up();
  await tasks.ready();
  await chat.ready();
  sock.cut();
  const n = sock.calls.length;
  log.length = 0;
  sock.up(true);
  publish("board-b1-tasks", 12); // stored, but not replayed
  sock.fire("broadcast", ...publish("board-b1-tasks", 13));
  await tick();
  await tasks.ready();
  assert.deepEqual(since(sock, n), ["getChangesSince board-b1-tasks"], "a resync of that room alone");
  assert.deepEqual(sock.calls.at(-1).endpointArgs, { roomName: "board-b1-tasks", afterSeq: 11, limit: 500 });
  // The broadcast that showed the gap is handed over after the resync (old by then: applied idempotently).
  assert.deepEqual(log, ["changes 12,13", "tasks 13"]);
  assert.equal(tasks.lastSeq, 13);
  sock.fire("broadcast", ...publish("board-b1-tasks", 14));
  assert.deepEqual(log, ["changes 12,13", "tasks 13", "tasks 14"], "live again after the resync");
});

test("a reconnect that is not recovered (a new session) joins and resyncs every room as before", async () => {
  const { c, sock, statuses } = open({ token: "t" });
  const publish = history(sock);
  const { log, tasks, chat } = tracked(c);
  sock.up();
  await tasks.ready();
  await chat.ready();
  sock.up(true); // a recovered flag on a connect that follows no disconnect changes nothing either
  sock.cut();
  sock.up(true);
  sock.cut();
  const n = sock.calls.length;
  publish("board-b1-tasks", 12);
  log.length = 0;
  sock.up(false);
  assert.equal(statuses.at(-1), "connected");
  assert.equal(c.recovered, false);
  await tasks.ready();
  await chat.ready();
  assert.deepEqual(since(sock, n), ["addToRoom board-b1-tasks", "addToRoom chat-alice-bob", "getChangesSince board-b1-tasks", "getChatMessagesSince chat-alice-bob"]);
  assert.deepEqual(log, ["changes 12"]);
  assert.equal(tasks.lastSeq, 12);
});

test("on a recovered reconnect, rooms the session did not hold are joined (tracked while away, failed), and a room cut mid-resync resyncs without a join", async () => {
  const clock = timers();
  const { c, sock } = open({ token: "t", sync: { ...clock, retryMs: 100 } });
  const publish = history(sock);
  const answer = sock.answer;
  const { log, tasks, chat } = tracked(c);
  // A chat read that the cut leaves unanswered: socket.io-client fails the
  // acks it waits for when the socket closes.
  let hold, fail;
  sock.answer = (call) => {
    if (call.endpointArgs.roomName === "board-secret") return { ok: false, error: { code: "forbidden", message: "no" } };
    if (call.endpointName === "getChatMessagesSince" && hold) return new Promise((_, f) => (fail = () => f(new Error("socket has been disconnected"))));
    return answer(call);
  };
  const secret = c.room("board-secret", { onError: () => {} });
  sock.up();
  await tasks.ready();
  await chat.ready();
  assert.equal(secret.status, "failed");
  // A gap in the chat starts a resync; the socket is cut before its answer.
  hold = true;
  sock.fire("broadcast", ...publish("chat-alice-bob", 22).map((x, i) => (i === 0 ? { ...x, prevSeq: 21 } : x)));
  await tick();
  assert.equal(sock.calls.at(-1).endpointName, "getChatMessagesSince");
  sock.cut();
  fail();
  hold = false;
  const away = c.room("board-b2", {});
  const n = sock.calls.length;
  log.length = 0;
  sock.up(true);
  await chat.ready();
  await away.ready();
  await tick();
  assert.deepEqual(since(sock, n).sort(), ["addToRoom board-b2", "addToRoom board-secret", "getChatMessagesSince chat-alice-bob"]);
  assert.equal(tasks.status, "joined");
  assert.equal(chat.lastSeq, 22);
  assert.equal(secret.status, "failed", "refused again");
  assert.equal(clock.live(), 0);
});

test("a broadcast listener of the client gets the broadcast alone, the offset that follows it aside", async () => {
  const { c, sock } = open({ token: "t" });
  const publish = history(sock);
  const got = [];
  c.on("broadcast", (...args) => got.push(args));
  sock.up();
  const [b, offset] = publish("board-b1-tasks", 12);
  sock.fire("broadcast", b, offset);
  assert.deepEqual(got, [[b]]);
});

test("a room left while away is left at a recovered reconnect (the session still holds it), not after a new session", async () => {
  for (const recovered of [true, false]) {
    const { c, sock } = open({ token: "t" });
    history(sock);
    const { tasks, chat } = tracked(c);
    const board = c.room("board-b1", {});
    sock.up();
    await tasks.ready();
    await chat.ready();
    await board.ready();
    sock.cut();
    const n = sock.calls.length;
    await tasks.leave(); // board-b1 shares its socket list: nothing to leave
    await chat.leave();
    assert.equal(sock.calls.length, n, "nothing called while away");
    sock.up(recovered);
    await board.ready();
    await tick();
    if (recovered) assert.deepEqual(since(sock, n), ["removeFromRoom chat-alice-bob"]);
    else assert.deepEqual(since(sock, n), ["addToRoom board-b1"], "a new session joins what is tracked and leaves nothing");
  }
});
