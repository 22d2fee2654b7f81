// What a newcomer does in the first hour, on a fresh checkout, as the
// README's "first five minutes" says: `roomcast serve` with no settings
// (free ports aside, and no ./data yet), the token its banner prints, a
// page on a localhost origin that joins a board with no authorizer running,
// the README's publish line pasted into a shell delivering to that page,
// and presence reading false until updateClient.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { io } from "socket.io-client";
import { binary, freePort, once, sleep, call } from "./stack.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const run = promisify(execFile);

// readmeSection is the README's "first five minutes", up to the next "## ".
function readmeSection() {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf("## The first five minutes");
  assert.ok(start >= 0, "the README has its first five minutes");
  return readme.slice(start, readme.indexOf("\n## ", start + 1));
}

// startFresh runs `roomcast serve` in an empty directory with no ROOMCAST_*
// setting but the two addresses, and resolves with its banner's parts.
async function startFresh() {
  const cwd = mkdtempSync(join(tmpdir(), "roomcast-first-hour-"));
  const [httpPort, natsPort] = [await freePort(), await freePort()];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ROOMCAST_")));
  env.ROOMCAST_HTTP_ADDR = `127.0.0.1:${httpPort}`;
  env.ROOMCAST_NATS_ADDR = `127.0.0.1:${natsPort}`;
  const child = spawn(binary, ["serve"], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "", logs = "";
  child.stdout.on("data", (b) => (out += b));
  child.stderr.on("data", (b) => (logs += b));
  const deadline = Date.now() + 30000;
  while (!/^eyJ\S+$/m.test(out)) {
    if (child.exitCode !== null) throw new Error(`roomcast serve exited ${child.exitCode}:\n${out}${logs}`);
    if (Date.now() > deadline) throw new Error(`no banner with a token:\n${out}${logs}`);
    await sleep(20);
  }
  const field = (label) => new RegExp(`^  ${label} +(\\S+)`, "m").exec(out)?.[1];
  const stop = async () => {
    if (child.exitCode === null) child.kill("SIGTERM");
    const [code] = child.exitCode === null ? await once(child, "exit", 15000) : [child.exitCode];
    rmSync(cwd, { recursive: true, force: true });
    return code;
  };
  return {
    banner: out,
    logs: () => logs,
    cwd,
    token: /^eyJ\S+$/m.exec(out)[0],
    httpURL: `http://127.0.0.1:${httpPort}`,
    sockets: field("sockets"),
    natsURL: field("nats"),
    stop,
  };
}

test("the first hour on a fresh checkout", async (t) => {
  const section = readmeSection();
  const s = await startFresh();
  let sock;
  try {
    // The banner: where things are, what development mode allows, and the
    // setting that turns each allowance off.
    assert.equal(s.sockets, `ws://${new URL(s.httpURL).host}/socket.io/?EIO=4&transport=websocket`);
    assert.match(s.banner, /ROOMCAST_AUTHZ_OPTIONAL=false refuses them/);
    assert.match(s.banner, /http:\/\/localhost:\* http:\/\/127\.0\.0\.1:\* may connect \(ROOMCAST_ALLOWED_ORIGINS= allows none\)/);
    assert.ok(existsSync(join(s.cwd, "data", "dev-jwt-secret")), "the development secret is kept in ./data");

    // The README's page, as a page served from localhost runs it: its
    // gateway URL (the default address, here the test's port), the
    // printed token, the room it joins.
    const html = /```html\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(html, "the README has the page");
    assert.match(html, /io\("http:\/\/127\.0\.0\.1:8080", \{ auth: \{ token \} \}\)/);
    const room = /roomName: "([^"]+)"/.exec(html)[1];
    const pageOrigin = `http://localhost:${await freePort()}`;
    // The page's default options: long-polling first, then the upgrade.
    sock = io(s.httpURL, {
      auth: { token: s.token }, reconnection: false, forceNew: true,
      extraHeaders: { Origin: pageOrigin },
    });
    let opened;
    sock.io.once("open", () => (opened = sock.io.engine.transport.name));
    const joined = once(sock, "connect", 10000).then(() => call(sock, "addToRoom", { roomName: room }));
    const ack = await joined;
    assert.equal(opened, "polling", "the page's session opens on long-polling");
    for (const deadline = Date.now() + 10000; sock.io.engine.transport.name !== "websocket"; await sleep(20)) {
      assert.ok(Date.now() < deadline, "the page's session upgrades to WebSocket");
    }
    assert.deepEqual(ack, { ok: true, data: { roomName: room, lastBroadcastTimestamp: null, seq: null } },
      "a board join with no authorizer running");
    assert.ok(section.includes(JSON.stringify(ack)), "the README shows this very ack");

    // Presence: connected, but false until updateClient.
    const presence = async () => {
      const { stdout } = await run(binary, ["presence", "dev", "--nats-url", s.natsURL]);
      return JSON.parse(stdout);
    };
    assert.deepEqual(await presence(), { active: { dev: false } }, "connected without updateClient: not active");
    assert.equal((await call(sock, "updateClient", { isActive: true })).ok, true);
    for (const deadline = Date.now() + 10000; ; await sleep(50)) {
      if ((await presence()).active.dev === true) break;
      assert.ok(Date.now() < deadline, "presence true after updateClient");
    }

    // The README's publish line, pasted into a shell at the checkout's root
    // (NATS at the test's port instead of 4222).
    const line = section.split("\n").find((l) => l.startsWith("bin/roomcast publish "));
    assert.ok(line, "the README has a publish line");
    const got = once(sock, "broadcast", 10000);
    const env = { ...process.env, ROOMCAST_NATS_URL: s.natsURL };
    if (process.env.ROOMCAST_BIN) env.PATH = `${dirname(binary)}:${env.PATH}`;
    const { stdout } = await run("sh", ["-c", process.env.ROOMCAST_BIN ? line.replace(/^bin\//, "") : line], { cwd: root, env });
    assert.deepEqual(JSON.parse(stdout), { room: room, seq: 1, duplicate: false });
    const b = await got;
    assert.equal(b.destination, room);
    assert.equal(b.seq, 1);
    assert.equal(b.prevSeq, 0);
    assert.equal(b.data.event, "create-task");
    t.diagnostic(`the page got ${JSON.stringify(b)}`);

    // A page from anywhere else is refused before the upgrade.
    const evil = io(s.httpURL, { transports: ["websocket"], auth: { token: s.token }, reconnection: false, forceNew: true, extraHeaders: { Origin: "https://evil.example" } });
    await once(evil, "connect_error", 5000);
    evil.close();

    // Another user's token without a restart.
    const { stdout: tok } = await run(binary, ["token", "alice", "--data-dir", join(s.cwd, "data")]);
    const alice = io(s.httpURL, { transports: ["websocket"], auth: { token: tok.trim() }, reconnection: false, forceNew: true });
    await once(alice, "connect", 10000);
    alice.close();
  } finally {
    sock?.close();
    assert.equal(await s.stop(), 0, s.logs());
  }
});
