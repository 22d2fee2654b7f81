// The README's "first five minutes" page in headless Chromium: saved as
// hello.html and served from http://localhost, against `roomcast serve`
// with no settings (development mode; free ports aside), it joins the board
// room with the token the banner printed (typed into its prompt), and the
// README's publish line, run in a shell, shows on it; with the stock
// client's default options it opens on long-polling and upgrades. The page is the
// README's text; only the gateway's port is the test's, and the CDN's
// socket.io-client is answered from the installed copy (no network).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { freePort, sleep } from "../../../../e2e/stack.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../../..");
const roomcastBin = process.env.ROOMCAST_BIN || join(root, "bin", "roomcast");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const sioESM = join(root, "clients", "js", "node_modules", "socket.io-client", "dist", "socket.io.esm.min.js");
const run = promisify(execFile);

test("the README's page, served from localhost, joins a board and shows the README's publish", async (t) => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf("## The first five minutes");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const html = /```html\n([\s\S]*?)```/.exec(section)?.[1];
  const line = section.split("\n").find((l) => l.startsWith("bin/roomcast publish "));
  assert.ok(html && line, "the README has the page and the publish line");

  // roomcast serve, fresh directory, no ROOMCAST_* but the addresses.
  const cwd = mkdtempSync(join(tmpdir(), "roomcast-first-page-"));
  const [httpPort, natsPort, pagePort] = [await freePort(), await freePort(), await freePort()];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ROOMCAST_")));
  Object.assign(env, { ROOMCAST_HTTP_ADDR: `127.0.0.1:${httpPort}`, ROOMCAST_NATS_ADDR: `127.0.0.1:${natsPort}` });
  const serve = spawn(roomcastBin, ["serve"], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  serve.stdout.on("data", (b) => (out += b));
  serve.stderr.on("data", (b) => (out += b));
  const page = createServer((req, res) => {
    if (req.url !== "/hello.html") return res.writeHead(404).end();
    res.writeHead(200, { "content-type": "text/html" }).end(html.replace("http://127.0.0.1:8080", `http://127.0.0.1:${httpPort}`));
  });
  await new Promise((ok) => page.listen(pagePort, "localhost", ok));
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"] });
  try {
    for (const deadline = Date.now() + 30000; !/^eyJ\S+$/m.test(out); await sleep(20)) {
      assert.ok(serve.exitCode === null && Date.now() < deadline, `roomcast serve printed no token:\n${out}`);
    }
    const token = /^eyJ\S+$/m.exec(out)[0];

    const context = await browser.newContext();
    await context.route("https://cdn.socket.io/**", (route) => route.fulfill({ path: sioESM, contentType: "text/javascript" }));
    const p = await context.newPage();
    p.on("dialog", (d) => d.accept(token)); // the token, pasted into the prompt
    // The page gives no transports: the stock client opens on long-polling
    // and upgrades its session (the WebSocket carries the polling sid).
    const polls = [], sockets = [];
    p.on("request", (r) => r.url().includes("transport=polling") && polls.push(r.url()));
    p.on("websocket", (w) => sockets.push(w.url()));
    await p.goto(`http://localhost:${pagePort}/hello.html`);
    const joined = '{"ok":true,"data":{"roomName":"board-b1-tasks","lastBroadcastTimestamp":null,"seq":null}}';
    await p.waitForFunction((s) => document.body.textContent.includes(s), joined, { timeout: 15000 });
    assert.ok(section.includes(joined), "the README shows what the page shows");
    assert.ok(polls.length > 0 && !polls[0].includes("sid="), `the page opened on long-polling: ${polls}`);
    const sid = new URL(polls.find((u) => u.includes("sid="))).searchParams.get("sid");
    for (const deadline = Date.now() + 10000; !sockets.some((u) => u.includes("transport=websocket") && u.includes(`sid=${sid}`)); await sleep(20)) {
      assert.ok(Date.now() < deadline, `the page's session upgraded to WebSocket: ${sockets}`);
    }

    const { stdout } = await run("sh", ["-c", line], { cwd: root, env: { ...process.env, ROOMCAST_NATS_URL: `nats://127.0.0.1:${natsPort}` } });
    assert.equal(JSON.parse(stdout).seq, 1);
    await p.waitForFunction(() => document.body.textContent.includes('"destination":"board-b1-tasks"'), null, { timeout: 15000 });
    const text = await p.evaluate(() => document.body.textContent);
    assert.match(text, /"event":"create-task","id":"t1"/);
    assert.match(text, /"seq":1,"prevSeq":0/);
    t.diagnostic(text);
  } finally {
    await browser.close();
    page.close();
    serve.kill("SIGTERM");
    await new Promise((ok) => (serve.exitCode !== null ? ok() : serve.once("exit", ok)));
    rmSync(cwd, { recursive: true, force: true });
  }
});
