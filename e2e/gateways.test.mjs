// Two gateways on one NATS behind deploy/lb, the small affinity proxy (it
// learns each session's sid from the polling handshake's answer), with the
// stock socket.io-client on its default options (long-polling, then the
// upgrade) and on long-polling alone. A session lives on one gateway: a
// polling request or an upgrade that reached the other would be answered
// "Session ID unknown" and the client would drop. So: sessions on both
// gateways, none dropped, every upgrade done, endpoints answered and a
// broadcast delivered once to every socket on either gateway.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startStack, nats, publish, socket, connected, call, authz, sleep, freePort, binary } from "./stack.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const gatewayBin = process.env.ROOMCAST_GATEWAY_BIN || join(dirname(binary), "gateway");

let stack, nc, tmp;
const procs = [];
const opened = [];

// start runs a program and resolves once url answers 200.
async function start(bin, env, url) {
  const p = spawn(bin, [], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  p.stdout.on("data", (b) => (logs += b));
  p.stderr.on("data", (b) => (logs += b));
  procs.push(p);
  for (const deadline = Date.now() + 30000; ; await sleep(50)) {
    if (p.exitCode !== null) throw new Error(`${bin} exited with ${p.exitCode}:\n${logs}`);
    try {
      if ((await fetch(url)).status === 200) return p;
    } catch {}
    if (Date.now() > deadline) throw new Error(`${bin}: ${url} not 200 within 30 s:\n${logs}`);
  }
}

let lbURL, gateways;

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "roomcast-gateways-"));
  // deploy/lb is a module of its own, outside go.work.
  const lbBin = process.env.LB_BIN || join(tmp, "lb");
  if (!process.env.LB_BIN) {
    await promisify(execFile)("go", ["build", "-o", lbBin, "."], { cwd: join(root, "deploy", "lb"), env: { ...process.env, GOWORK: "off" } });
  }
  stack = await startStack(); // gateway 1, with the embedded NATS
  nc = await nats(stack);
  authz(nc, () => true);
  const port2 = await freePort();
  await start(gatewayBin, {
    ROOMCAST_HTTP_ADDR: `127.0.0.1:${port2}`, ROOMCAST_NATS_URL: stack.natsURL,
    ROOMCAST_JWT_SECRET: stack.secret, ROOMCAST_LOG_LEVEL: process.env.ROOMCAST_LOG_LEVEL || "warn",
  }, `http://127.0.0.1:${port2}/readyz`);
  gateways = [stack.httpURL, `http://127.0.0.1:${port2}`];
  const lbPort = await freePort();
  lbURL = `http://127.0.0.1:${lbPort}`;
  await start(lbBin, {
    LB_ADDR: `127.0.0.1:${lbPort}`, LB_BACKENDS: gateways.map((g) => new URL(g).host).join(","), LB_CHECK_INTERVAL: "100ms",
  }, `${lbURL}/lb/healthz`);
  for (const deadline = Date.now() + 10000; ; await sleep(50)) {
    const st = await (await fetch(`${lbURL}/lb/status`)).json();
    if (st.every((g) => g.ready)) break;
    assert.ok(Date.now() < deadline, `both gateways ready behind lb: ${JSON.stringify(st)}`);
  }
});

after(async () => {
  for (const s of opened) s.disconnect();
  for (const p of procs.reverse()) {
    if (p.exitCode === null) {
      p.kill("SIGTERM");
      await new Promise((ok) => p.once("exit", ok));
    }
  }
  await nc?.close();
  await stack?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// socketsOn reads a gateway's roomcast_gateway_sockets.
async function socketsOn(gw) {
  const text = await (await fetch(`${gw}/metrics`)).text();
  return Number(/^roomcast_gateway_sockets (\d+)$/m.exec(text)?.[1]);
}

test("two gateways behind deploy/lb: the stock client's sessions keep to their gateway through polling and the upgrade", async () => {
  const board = "lb1";
  const clients = [];
  // One after another: lb gives a new session to the gateway with the
  // fewest open requests, and a connected socket holds one (a long-poll
  // GET or its WebSocket), so they alternate.
  for (const [i, transports] of [undefined, ["polling"], undefined, ["polling"]].entries()) {
    const s = socket({ httpURL: lbURL }, { token: stack.token(`u${i}`), clientId: `tab${i}`, transports });
    opened.push(s);
    const c = { s, transports, final: transports ? "polling" : "websocket", seqs: [], dropped: [] };
    s.on("broadcast", (b) => c.seqs.push(b.seq));
    s.on("disconnect", (why) => c.dropped.push(why));
    s.on("connect_error", (e) => c.dropped.push(e.message));
    let first;
    s.io.once("open", () => (first = s.io.engine.transport.name));
    await connected(s, 10000);
    assert.equal(first, "polling", "the session opens on long-polling");
    const joined = await call(s, "addToRoom", { roomName: `board-${board}` });
    assert.equal(joined.ok, true, JSON.stringify(joined));
    clients.push(c);
  }

  // Every default-options socket upgraded: its WebSocket, carrying the
  // sid, reached the gateway that opened the session.
  for (const c of clients) {
    for (const deadline = Date.now() + 10000; c.s.io.engine.transport.name !== c.final || c.s.io.engine.upgrading; await sleep(20)) {
      assert.ok(Date.now() < deadline, `transport ${c.s.io.engine.transport.name}, want ${c.final}`);
    }
  }
  const counts = await Promise.all(gateways.map(socketsOn));
  assert.deepEqual(counts.map((n) => n > 0), [true, true], `sockets on each gateway: ${counts}`);
  assert.equal(counts[0] + counts[1], clients.length, `sockets on each gateway: ${counts}`);

  // Broadcasts: each published once, delivered once to every socket on
  // either gateway; each is a new long-poll for the polling ones.
  const sent = [];
  for (let i = 1; i <= 5; i++) {
    const ack = await publish(nc, `rooms.board.${board}.tasks`, { event: "update-task", id: "t1", updatedAt: Date.now() + i, diff: { i } });
    sent.push(ack.seq);
  }
  for (const deadline = Date.now() + 10000; clients.some((c) => c.seqs.length < sent.length); await sleep(20)) {
    assert.ok(Date.now() < deadline, `broadcasts delivered: ${JSON.stringify(clients.map((c) => c.seqs))}`);
  }
  // Endpoints after the broadcasts, on every socket.
  for (const c of clients) {
    const active = await call(c.s, "updateClient", { isActive: true });
    assert.equal(active.ok, true, JSON.stringify(active));
    const since = await call(c.s, "getChangesSince", { roomName: `board-${board}-tasks`, since: 0 });
    assert.equal(since.ok, true, JSON.stringify(since));
    assert.ok(since.data.changes.some((ch) => ch.id === "t1"), JSON.stringify(since));
    assert.deepEqual(c.seqs, sent, "every broadcast once, in order");
    assert.deepEqual(c.dropped, [], "no socket dropped");
    assert.equal(c.s.io.engine.transport.name, c.final);
  }
});
