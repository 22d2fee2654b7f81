// The compose stack, end to end, with the stock socket.io-client and the
// official nats client: run by deploy/compose/test.sh (make test-deploy)
// against a stack it brought up (deploy/compose/stack.sh up). Each phase
// prints how long it took. Phases:
//   0. every container runs as nobody, read-only, from a localhost/ image;
//   1. one client through each gateway (the lb spreads them), both join
//      board-demo (the demo service authorizes), a publisher's events arrive
//      at both with seq/prevSeq unbroken;
//   2. the NATS node leading stream ROOMS stops: publishing goes on (acked
//      by the new leader), delivery goes on, and resynced clients hold every
//      event the publisher was acknowledged for; the node comes back;
//   3. gateway-1 stops: its client comes back through gateway-2 and gets
//      what follows; gateway-1 comes back.
// Not run by `node --test` in e2e/ (the file name keeps it out).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { connect as natsConnect, headers as natsHeaders, JSONCodec } from "nats";
import { signJWT, sleep } from "./stack.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const project = process.env.ROOMCAST_STACK || "roomcast";
const lb = `http://127.0.0.1:${process.env.ROOMCAST_LB_PORT || 8080}`;
const natsPorts = [1, 2, 3].map((n) => process.env[`ROOMCAST_NATS_PORT_${n}`] || String(4221 + n));
const secrets = Object.fromEntries(
  readFileSync(join(here, "..", "deploy", "compose", ".env"), "utf8")
    .split("\n")
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
);
const jc = JSONCodec();
const board = "board-demo";
const tasks = "board-demo-tasks";
const subject = "rooms.board.demo.tasks";

const container = (service) => `${project}_${service}_1`;
const podman = (...args) => execFileSync("podman", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();

// until polls f until it returns something truthy, or fails after ms.
async function until(what, f, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

const timings = [];
async function phase(name, f) {
  const start = Date.now();
  process.stdout.write(`phase: ${name}\n`);
  await f();
  const s = ((Date.now() - start) / 1000).toFixed(1);
  timings.push([name, s]);
  process.stdout.write(`phase: ${name}: ${s} s\n`);
}

async function healthy(service) {
  await until(`${service} healthy`, () => {
    try {
      podman("healthcheck", "run", container(service));
      return true;
    } catch {
      return false;
    }
  }, 90000);
}

// streamInfo is `roomcast streams info` as an operator runs it, as admin,
// from inside the stack's network (any roomcast container has the CLI).
function streamInfo() {
  const pw = secrets.ROOMCAST_ADMIN_PASSWORD;
  const url = [1, 2, 3].map((n) => `nats://admin:${pw}@nats-${n}:4222`).join(",");
  const out = podman("exec", container("roomstate-1"), "/bin/roomcast", "streams", "info", "--nats-url", url, "--timeout", "5s");
  return JSON.parse(out).stream;
}

async function lbStatus() {
  return (await fetch(`${lb}/lb/status`)).json();
}

// A client: a stock socket.io-client socket that joins board-demo at every
// connect the session was not recovered for, and keeps what it received.
function client(user, transports) {
  const c = { user, seqs: new Map(), broken: 0, last: 0, connects: 0 };
  c.sock = io(lb, {
    transports,
    auth: { token: signJWT({ sub: user }, secrets.ROOMCAST_JWT_SECRET) },
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  c.sock.on("broadcast", (b) => {
    if (b.destination !== tasks) return;
    if (c.last !== 0 && b.prevSeq !== c.last) c.broken++; // a gap: resync fills it
    c.last = b.seq;
    c.seqs.set(b.seq, b.data.id);
  });
  c.sock.on("connect", async () => {
    c.connects++;
    if (c.sock.recovered) return;
    c.joined = call(c.sock, "addToRoom", { roomName: board });
    assert.equal((await c.joined).ok, true, `${user} joins ${board}`);
  });
  return c;
}

function call(sock, endpointName, endpointArgs, ms = 10000) {
  return sock.timeout(ms).emitWithAck("endpoint", { endpointName, endpointArgs });
}

// resync reads every change of the room since afterSeq, page by page, into
// c.seqs: what a client that saw a gap does.
async function resync(c, afterSeq = 0) {
  for (let cursor = { afterSeq }; cursor; ) {
    // unavailable says "retry": a client retries it (sync may be reading
    // from a stream that is electing a leader).
    const ack = await until(`${c.user} reads ${tasks}`, async () => {
      const a = await call(c.sock, "getChangesSince", { roomName: tasks, ...cursor, limit: 100 });
      if (!a.ok && a.error.code === "unavailable") {
        c.unavailable = (c.unavailable ?? 0) + 1;
        return null;
      }
      return a;
    });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    for (const ch of ack.data.changes) c.seqs.set(ch.seq, ch.id);
    cursor = ack.data.next;
  }
}

const acked = new Map(); // seq → id, every publish the stream acknowledged
let nc, js;

async function publish(n, tag) {
  for (let i = 0; i < n; i++) {
    const id = `${tag}-${i}`;
    const h = natsHeaders();
    h.set("Nats-Msg-Id", `${id}-${randomBytes(4).toString("hex")}`);
    const env = { event: "update-task", id, updatedAt: Date.now(), diff: { title: id } };
    // A retry during a leader election is stored once (Nats-Msg-Id).
    const ack = await until(`publish ${id}`, async () => {
      try {
        return await js.publish(subject, jc.encode(env), { headers: h, timeout: 2000 });
      } catch {
        return null;
      }
    }, 60000);
    acked.set(ack.seq, id);
  }
}

const has = (c, seqs) => [...seqs].every((s) => c.seqs.has(s));

async function main() {
  let alice, bob, carol;
  await phase("every container runs as nobody on a read-only root filesystem, from an image built here", async () => {
    const names = podman("ps", "--filter", `name=^${project}_`, "--format", "{{.Names}}").trim().split("\n");
    assert.equal(names.length, 11, `the stack's 11 containers: ${names}`);
    for (const n of names) {
      const [user, ro, image] = podman("inspect", n, "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.ImageName}}").trim().split(" ");
      assert.equal(user, "65534:65534", `${n} runs as nobody`);
      assert.equal(ro, "true", `${n} has a read-only root filesystem`);
      assert.match(image, /^localhost\/roomcast(-nats|-lb)?:/, `${n} runs an image built here`);
    }
  });

  await phase("connect through each gateway, join, publish, deliver", async () => {
    // The default transports (polling, then WebSocket) need the lb's
    // session affinity; a gateway without polling is tested over WebSocket.
    const open = await fetch(`${lb}/socket.io/?EIO=4&transport=polling`);
    const polling = open.ok && (await open.text()).startsWith("0{");
    const transports = polling ? undefined : ["websocket"];
    process.stdout.write(`  transports: ${polling ? "polling, then websocket" : "websocket (the gateway has no polling)"}\n`);
    alice = client("alice", transports);
    await until("alice connected and joined", async () => alice.joined && (await alice.joined).ok);
    bob = client("bob", transports);
    await until("bob connected and joined", async () => bob.joined && (await bob.joined).ok);
    // The lb sent them to different gateways: each holds one open socket.
    await until("one socket on each gateway", async () => (await lbStatus()).every((g) => g.ready && g.active >= 1), 10000);

    // Which send path the gateways' fan-out took: a container runtime's
    // seccomp profile may refuse io_uring (docs/operations.md).
    const metrics = await (await fetch(`${lb}/metrics`)).text();
    const batched = metrics.match(/^roomcast_gateway_fanout_batched_workers (\S+)$/m);
    assert.ok(batched, "a gateway's /metrics says which send path its fan-out took");
    process.stdout.write(`  fan-out sends: ${Number(batched[1]) > 0 ? `io_uring (${batched[1]} workers)` : "writev (io_uring missing or refused here)"}\n`);

    nc = await natsConnect({
      servers: natsPorts.map((p) => `127.0.0.1:${p}`),
      user: "service",
      pass: secrets.ROOMCAST_SERVICE_PASSWORD,
      ignoreClusterUpdates: true, // the cluster's own addresses are the containers'
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
    js = nc.jetstream();
    await publish(20, "before");
    for (const c of [alice, bob]) {
      await until(`${c.user} receives every event`, () => has(c, acked.keys()), 15000);
      assert.equal(c.broken, 0, `${c.user}: seq/prevSeq unbroken`);
    }
  });

  await phase("the NATS node leading stream ROOMS stops; delivery and resync go on; it comes back", async () => {
    const leader = streamInfo().leader;
    process.stdout.write(`  ROOMS leader: ${leader}; stopping it\n`);
    podman("stop", "-t", "10", container(leader));
    await publish(20, "during");
    const info = await until("a new leader", () => {
      try {
        const st = streamInfo();
        return st.leader && st.leader !== leader && st;
      } catch {
        return null; // the CLI's node was the one stopped: asked again
      }
    });
    process.stdout.write(`  new leader: ${info.leader}\n`);
    const lastID = acked.get(Math.max(...acked.keys()));
    for (const c of [alice, bob]) {
      // Delivery goes on: the latest event arrives live.
      await until(`${c.user} receives ${lastID} live`, () => [...c.seqs.values()].includes(lastID), 30000);
      await resync(c);
      assert.ok(has(c, acked.keys()), `${c.user}, resynced, holds every acknowledged event`);
      if (c.unavailable) process.stdout.write(`  ${c.user}: getChangesSince answered unavailable ${c.unavailable} times before it read\n`);
    }
    carol = client("carol", ["websocket"]);
    await until("carol connected and joined", async () => carol.joined && (await carol.joined).ok);
    await resync(carol);
    assert.ok(has(carol, acked.keys()), "a client that was away holds every acknowledged event after resync");
    podman("start", container(leader));
    await healthy(leader);
    await until("ROOMS has its three replicas current", () => {
      try {
        const st = streamInfo();
        return st.followers.length === 2 && st.followers.every((r) => r.current);
      } catch {
        return false;
      }
    }, 60000);
  });

  await phase("gateway-1 stops; its client comes back through gateway-2; gateway-1 comes back", async () => {
    const before = alice.connects + bob.connects;
    podman("stop", "-t", "10", container("gateway-1"));
    await until("a client reconnected", () => alice.connects + bob.connects > before, 30000);
    await until("both connected and joined", async () => {
      for (const c of [alice, bob]) if (!c.sock.connected || !(c.sock.recovered || (c.joined && (await c.joined).ok))) return false;
      return true;
    });
    await until("the lb has gateway-1 out and both sockets on gateway-2", async () => {
      const st = await lbStatus();
      return !st.find((g) => g.gateway.startsWith("gateway-1")).ready && st.find((g) => g.gateway.startsWith("gateway-2")).active >= 2;
    }, 10000);
    await publish(5, "after");
    for (const c of [alice, bob]) {
      await until(`${c.user} receives what follows`, () => has(c, [...acked.keys()].slice(-5)), 15000);
    }
    podman("start", container("gateway-1"));
    await healthy("gateway-1");
    await until("the lb sees gateway-1 ready", async () => (await lbStatus()).every((g) => g.ready), 10000);
  });

  for (const c of [alice, bob, carol]) c?.sock.close();
  await nc.close();
  process.stdout.write(`deploy test: ${acked.size} events acknowledged, all delivered or resynced\n`);
  for (const [name, s] of timings) process.stdout.write(`  ${s.padStart(6)} s  ${name}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error("deploy test failed:", err);
    process.exit(1);
  },
);
