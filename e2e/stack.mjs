// The harness of the end-to-end tests: starts the all-in-one binary
// (bin/roomcast serve, built by `make build`) on free ports with an embedded
// NATS, and gives tests the stock clients connected to it.
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { connect as natsConnect, headers as natsHeaders, JSONCodec } from "nats";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const binary = process.env.ROOMCAST_BIN || join(root, "bin", "roomcast");
export const jc = JSONCodec();

// tcpProxy is a client's network in front of a server (target: its URL or
// port). Every connection through it is a pair in pairs (down: the
// client's side, up: the server's). cut(pair, kind) ends one: "close",
// "reset", or "stall" (nothing flows any more and nobody is told: each
// side finds out by its heartbeat); cutAll() closes them all and refuses
// new ones, refuse() only refuses new ones, restore(to) lets them through
// again, to another server when to is given.
export async function tcpProxy(target) {
  const portOf = (t) => (typeof t === "number" ? t : Number(new URL(t).port));
  let port = portOf(target);
  let refusing = false;
  const pairs = new Set();
  const server = createServer((down) => {
    if (refusing) return down.destroy();
    const up = tcpConnect(port, "127.0.0.1");
    const pair = { down, up, stalled: false };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      s.on("error", drop);
      s.on("close", drop);
    }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const px = {
    url: `http://127.0.0.1:${server.address().port}`,
    pairs,
    cut(pair, kind = "close") {
      if (kind === "reset") {
        pair.down.resetAndDestroy();
        pair.up.resetAndDestroy();
      } else if (kind === "stall") {
        pair.stalled = true;
        pair.down.unpipe(pair.up);
        pair.up.unpipe(pair.down);
        pair.down.pause();
        pair.up.pause();
      } else {
        pair.down.destroy();
        pair.up.destroy();
      }
    },
    cutAll() {
      refusing = true;
      for (const pair of [...pairs]) px.cut(pair);
      pairs.clear();
    },
    refuse() {
      refusing = true;
    },
    restore(to) {
      if (to !== undefined) port = portOf(to);
      refusing = false;
    },
    close() {
      px.cutAll();
      return new Promise((ok) => server.close(ok));
    },
  };
  return px;
}

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

// startStack runs `roomcast serve` and resolves once /readyz answers 200.
// env is added to the process environment (e.g. ROOMCAST_MAX_AGE).
// stack.restart() stops the process and starts it again on the same ports,
// secret and data directory; stack.unexpectedExits lists every exit the
// test did not ask for (a crash), with the end of the logs.
export async function startStack({ env = {}, readyTimeoutMs = 30000 } = {}) {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run "make build" first`);
  const [httpPort, natsPort] = [await freePort(), await freePort()];
  const dataDir = mkdtempSync(join(tmpdir(), "roomcast-e2e-"));
  const secret = randomBytes(32).toString("hex");
  const httpURL = `http://127.0.0.1:${httpPort}`;
  const natsURL = `nats://127.0.0.1:${natsPort}`;
  let logs = "";
  let child, exited;
  let stopping = false;
  const unexpectedExits = [];

  async function launch() {
    stopping = false;
    child = spawn(binary, ["serve"], {
      env: {
        ...process.env,
        ROOMCAST_HTTP_ADDR: `127.0.0.1:${httpPort}`,
        ROOMCAST_NATS_ADDR: `127.0.0.1:${natsPort}`,
        ROOMCAST_NATS_URL: "",
        ROOMCAST_DATA_DIR: dataDir,
        ROOMCAST_JWT_SECRET: secret,
        ROOMCAST_LOG_LEVEL: process.env.ROOMCAST_LOG_LEVEL || "warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (b) => (logs += b));
    child.stderr.on("data", (b) => (logs += b));
    exited = new Promise((ok) =>
      child.on("exit", (code, signal) => {
        if (!stopping) unexpectedExits.push({ code, signal, at: new Date().toISOString(), logs: logs.slice(-8000) });
        ok({ code, signal });
      }),
    );

    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`roomcast serve exited with ${child.exitCode}:\n${logs}`);
      try {
        const r = await fetch(`${httpURL}/readyz`);
        if (r.status === 200) break;
      } catch {}
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`roomcast serve not ready within ${readyTimeoutMs} ms:\n${logs}`);
      }
      await sleep(50);
    }
  }

  // halt ends the process with signal (SIGKILL after 10 s) and resolves with its exit.
  async function halt(signal) {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
    const res = await exited;
    clearTimeout(timer);
    return res;
  }

  await launch();
  const stack = {
    httpURL,
    natsURL,
    httpPort,
    natsPort,
    secret,
    dataDir,
    get child() {
      return child;
    },
    unexpectedExits,
    logs: () => logs,
    token: (sub, opts = {}) => signJWT({ sub, ...opts }, opts.secret ?? secret),
    // restart stops the process with signal and starts it again on the
    // same data; it resolves once the new one is ready, with the old
    // process's exit and how long stopping and starting took.
    async restart({ signal = "SIGTERM" } = {}) {
      const t0 = Date.now();
      const res = await halt(signal);
      const t1 = Date.now();
      await launch();
      return { ...res, stoppedMs: t1 - t0, readyMs: Date.now() - t1 };
    },
    // stop sends SIGTERM and resolves with the exit {code, signal}.
    async stop() {
      const res = await halt("SIGTERM");
      rmSync(dataDir, { recursive: true, force: true });
      return res;
    },
  };
  return stack;
}

// until polls fn every 20 ms until it returns something truthy; a throw
// counts as not yet (its message is kept for the failure), and past ms it
// fails naming what it waited for.
export async function until(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    let last;
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}${last ? ": " + last.message : ""}`);
    await new Promise((ok) => setTimeout(ok, 20));
  }
}

export function sleep(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64url");
}

// signJWT signs claims with HS256 (alg may be overridden to test refusals).
// exp defaults to an hour from now; pass exp: null to leave it out.
export function signJWT(claims, secret, { alg = "HS256" } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const body = { iat: now, exp: now + 3600, ...claims };
  for (const k of Object.keys(body)) if (body[k] === null || body[k] === undefined) delete body[k];
  delete body.secret;
  const head = b64url(JSON.stringify({ alg, typ: "JWT" }));
  const payload = b64url(JSON.stringify(body));
  if (alg === "none") return `${head}.${payload}.`;
  const sig = b64url(createHmac("sha256", secret).update(`${head}.${payload}`).digest());
  return `${head}.${payload}.${sig}`;
}

// socket opens a stock socket.io-client socket over WebSocket only. It does
// not connect until .connect() unless autoConnect is true.
export function socket(stack, { token, clientId, ...opts } = {}) {
  return io(stack.httpURL, {
    transports: ["websocket"],
    auth: clientId ? { token, clientId } : { token },
    reconnection: false,
    forceNew: true,
    ...opts,
  });
}

// once resolves with the first emission of event (its arguments, or its
// one argument alone), or rejects after ms. A "broadcast" resolves with its
// payload: with connection state recovery on, the offset follows it as a
// second argument, which is socket.io-client's business.
export function once(emitter, event, ms = 5000) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no "${event}" within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      ok(event === "broadcast" || args.length <= 1 ? args[0] : args);
    });
  });
}

export async function connected(sock, ms = 5000) {
  if (sock.connected) return sock;
  const err = new Promise((_, fail) => sock.once("connect_error", (e) => fail(e)));
  await Promise.race([once(sock, "connect", ms), err]);
  return sock;
}

// call emits an endpoint call and resolves with its ack {ok, data|error}.
export function call(sock, endpointName, endpointArgs, ms = 5000) {
  return sock.timeout(ms).emitWithAck("endpoint", { endpointName, endpointArgs });
}

// nats connects the official client to the stack's NATS (opts: the
// client's ConnectionOptions, e.g. how it reconnects across a restart).
export async function nats(stack, opts = {}) {
  return natsConnect({ servers: stack.natsURL, ...opts });
}

// authz answers authz.join with allow(userId, roomName) → boolean.
export function authz(nc, allow) {
  const sub = nc.subscribe("authz.join");
  (async () => {
    for await (const m of sub) {
      const req = jc.decode(m.data);
      m.respond(jc.encode({ allow: Boolean(allow(req.userId, req.roomName)) }));
    }
  })();
  return sub;
}

// publish stores an envelope in stream ROOMS under subject, as a domain
// service does (with Nats-Msg-Id), and resolves with the stream's ack.
export async function publish(nc, subject, envelope, msgId) {
  const js = nc.jetstream();
  const h = natsHeaders();
  h.set("Nats-Msg-Id", msgId ?? randomBytes(12).toString("hex"));
  return js.publish(subject, jc.encode(envelope), { headers: h });
}
