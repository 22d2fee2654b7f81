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
  up() {
    this.connected = true;
    this.fire("connect");
  }
  serverDisconnect() {
    this.connected = false;
    this.active = false;
    this.fire("disconnect", "io server disconnect");
  }
  refuse(message) {
    this.active = false;
    this.fire("connect_error", Object.assign(new Error(message), { data: { code: 401 } }));
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
