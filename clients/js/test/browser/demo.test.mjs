// The demo board in headless Chromium (Debian's chromium, driven by
// playwright-core; never a downloaded browser): two users on one board, a
// card dragged on one screen moves on the other; one goes offline while the
// other moves, creates and deletes cards and writes in the chat, and catches
// up when it is back (its session recovered: the indicator goes from
// disconnected to live); a
// task published with roomcast publish shows live and survives a reload;
// with WebSockets refused in the pages the board works over long-polling.
// The first test takes the README's screenshot, docs/demo-board.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort, sleep } from "../../../../e2e/stack.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../../..");
const demoBin = process.env.ROOMCAST_DEMO_BIN || join(root, "bin", "demo");
const roomcastBin = process.env.ROOMCAST_BIN || join(root, "bin", "roomcast");
const run = promisify(execFile);
const artifacts = join(root, "clients", "js", "test-artifacts");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

let demo, logs = "", url, browser;

before(async () => {
  if (!existsSync(demoBin)) throw new Error(`${demoBin} is missing: go build -o bin/demo ./examples/demo`);
  if (!existsSync(roomcastBin)) throw new Error(`${roomcastBin} is missing: make build`);
  if (!existsSync(chromiumPath)) throw new Error(`${chromiumPath} is missing: apt-get install -y chromium`);
  mkdirSync(artifacts, { recursive: true });
  const [pagePort, gwPort] = [await freePort(), await freePort()];
  url = `http://127.0.0.1:${pagePort}`;
  // Short pings: a page whose network went away notices within ~2 s
  // (socket.io-client closes when no ping arrives in interval + timeout).
  demo = spawn(demoBin, [
    "-addr", `127.0.0.1:${pagePort}`, "-gateway-addr", `127.0.0.1:${gwPort}`,
    "-client-dir", join(root, "clients", "js"), "-ping-interval", "1s", "-ping-timeout", "1s",
  ], { stdio: ["ignore", "pipe", "pipe"] });
  demo.stdout.on("data", (b) => (logs += b));
  demo.stderr.on("data", (b) => (logs += b));
  const deadline = Date.now() + 30000;
  for (;;) {
    if (demo.exitCode !== null) throw new Error(`demo exited:\n${logs}`);
    try {
      if ((await fetch(`${url}/api/config`)).ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`demo not up:\n${logs}`);
    await sleep(50);
  }
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  if (demo && demo.exitCode === null) {
    demo.kill("SIGTERM");
    await new Promise((ok) => demo.once("exit", ok));
  }
});

async function openBoard(user, { noWebSocket = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  if (noWebSocket) await context.addInitScript(blockWebSocket);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  const polls = [];
  page.on("request", (r) => r.url().includes("transport=polling") && polls.push(r.url()));
  if (noWebSocket) page.on("websocket", (w) => problems.push(`a WebSocket opened: ${w.url()}`));
  await page.goto(`${url}/?user=${user}`);
  // Every state the indicator shows, in order, for the test to read back.
  await page.evaluate(() => {
    const s = document.querySelector("#status");
    window.states = [s.dataset.state];
    new MutationObserver(() => window.states.push(s.dataset.state)).observe(s, { attributes: true, attributeFilter: ["data-state"] });
  });
  await live(page);
  return { context, page, problems, polls };
}

// blockWebSocket runs in the page before its scripts, as a network that
// refuses WebSockets looks to it: every WebSocket fails (error, then close
// 1006) and is counted in window.refusedWebSockets.
function blockWebSocket() {
  window.refusedWebSockets = 0;
  window.WebSocket = class extends EventTarget {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor(url) {
      super();
      this.url = String(url);
      this.readyState = 0;
      window.refusedWebSockets++;
      setTimeout(() => {
        this.readyState = 3;
        for (const e of [new Event("error"), new CloseEvent("close", { code: 1006 })]) {
          this["on" + e.type]?.(e);
          this.dispatchEvent(e);
        }
      });
    }
    send() { throw new DOMException("not open", "InvalidStateError"); }
    close() {}
  };
}

const live = (page, timeout = 15000) => page.waitForSelector('#status[data-state="live"]', { timeout });

// shown is what a page shows: each column's cards, the sprints, the chat.
function shown(page) {
  return page.evaluate(() => ({
    columns: Object.fromEntries([...document.querySelectorAll(".column")].map((c) => [c.dataset.status, [...c.querySelectorAll(".card .title")].map((t) => t.textContent).sort()])),
    sprints: [...document.querySelectorAll("#sprints li b")].map((b) => b.textContent),
    chat: [...document.querySelectorAll("#chat li")].map((li) => ({ id: li.dataset.id, text: li.textContent })),
  }));
}

const columnOf = async (page, title) => {
  const cols = (await shown(page)).columns;
  return Object.keys(cols).find((c) => cols[c].includes(title));
};
const card = (page, title) => page.locator(".card", { has: page.locator(".title", { hasText: new RegExp(`^${title}$`) }) });
const column = (page, status) => page.locator(`.column[data-status="${status}"]`);

async function addTask(page, title) {
  await page.fill("#new-task input", title);
  await page.click("#new-task button");
  await page.waitForFunction((t) => [...document.querySelectorAll(".card .title")].some((e) => e.textContent === t), title);
}

async function until(what, fn, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last === true) return;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}: ${JSON.stringify(last)}`);
    await sleep(50);
  }
}

test("two users on the board: a drag moves the card on the other screen; one goes offline, the other edits, the first catches up", async (t) => {
  const a = await openBoard("alice");
  const b = await openBoard("bob");

  // The seeded board: three sprints, tasks in every column, the same on both.
  const first = await shown(a.page);
  assert.deepEqual(first.sprints, ["Sprint 13", "Sprint 14", "Sprint 15"]);
  for (const c of ["todo", "doing", "done"]) assert.ok(first.columns[c].length > 0, `seeded ${c}`);
  await until("both pages show the seeded board", async () => JSON.stringify(await shown(b.page)) === JSON.stringify(first) || shown(b.page));

  // Who is active: both, once each page has said so (updateClient).
  for (const p of [a.page, b.page]) {
    await p.waitForSelector('#presence li[data-user="alice"].active');
    await p.waitForSelector('#presence li[data-user="bob"].active');
  }

  // A drag on alice's screen moves the card on bob's.
  assert.equal(await columnOf(b.page, "Write the release notes"), "todo");
  await card(a.page, "Write the release notes").dragTo(column(a.page, "doing"));
  await until("the card moved on bob's screen", async () => (await columnOf(b.page, "Write the release notes")) === "doing" || shown(b.page));
  assert.equal(await columnOf(a.page, "Write the release notes"), "doing");

  // Bob's page loses its network.
  await b.context.setOffline(true);
  const cut = Date.now();
  await b.page.waitForSelector('#status[data-state="disconnected"]', { timeout: 15000 });
  t.diagnostic(`bob's page said disconnected after ${Date.now() - cut} ms`);
  await b.page.evaluate(() => (window.states = [document.querySelector("#status").dataset.state]));

  // Meanwhile alice moves, creates and deletes tasks and writes to bob.
  await card(a.page, "Add keyboard shortcuts to the board").dragTo(column(a.page, "done"));
  await until("moved on alice's page", async () => (await columnOf(a.page, "Add keyboard shortcuts to the board")) === "done");
  await addTask(a.page, "Review the API draft");
  await card(a.page, "Set up the staging database backup").hover();
  await card(a.page, "Set up the staging database backup").locator("button.delete").click();
  await until("deleted on alice's page", async () => (await columnOf(a.page, "Set up the staging database backup")) === undefined);
  await a.page.fill("#send input", "Bob, the release notes are in progress");
  await a.page.click("#send button");
  await a.page.waitForSelector("#chat li");

  const missed = await shown(b.page);
  assert.equal(await columnOf(b.page, "Add keyboard shortcuts to the board"), "todo", "bob's page saw nothing while offline");
  assert.equal(missed.chat.length, 0);

  await b.context.setOffline(false);
  const back = Date.now();
  await live(b.page, 30000);
  t.diagnostic(`bob's page was live again ${Date.now() - back} ms after the network came back`);
  const want = await shown(a.page);
  assert.equal(want.chat.length, 1);
  await until("bob's page shows exactly what alice's shows", async () => {
    const got = await shown(b.page);
    return JSON.stringify(got) === JSON.stringify(want) || got;
  });
  t.diagnostic(`and showed what alice's page shows ${Date.now() - back} ms after`);
  // The gateway recovered bob's session (connection state recovery): his
  // page got what it missed as ordinary broadcasts and read nothing, so the
  // indicator went from disconnected to live at once (a new session shows
  // catching up while it resyncs).
  assert.equal(await b.page.evaluate(() => window.roomcast.recovered), true, "bob's session was recovered");
  const states = await b.page.evaluate(() => window.states);
  assert.deepEqual(states.filter((s, i) => s !== states[i - 1]), ["disconnected", "live"], "the indicator: disconnected, then live");

  // The README's picture, taken from alice's screen as it is now.
  await a.page.waitForSelector('#presence li[data-user="bob"].active');
  await a.page.mouse.move(0, 0);
  await a.page.screenshot({ path: join(root, "docs", "demo-board.png"), clip: { x: 0, y: 0, width: 1280, height: 520 } });
  await b.page.screenshot({ path: join(artifacts, "demo-bob.png") });
  assert.deepEqual(a.problems, []);
  assert.deepEqual(b.problems, []);
  await a.context.close();
  await b.context.close();
});

test("with WebSockets refused in both pages, the board works over long-polling: a drag moves the card on the other screen", async () => {
  const a = await openBoard("alice", { noWebSocket: true });
  const b = await openBoard("bob", { noWebSocket: true });
  const title = "Write the release notes";
  const from = await columnOf(a.page, title);
  assert.ok(from, "the board shows the card");
  await until("both pages show it in one column", async () => (await columnOf(b.page, title)) === from || shown(b.page));
  const to = from === "done" ? "todo" : "done";
  await card(a.page, title).dragTo(column(a.page, to));
  await until("the card moved on bob's screen", async () => (await columnOf(b.page, title)) === to || shown(b.page));
  await card(b.page, title).dragTo(column(b.page, from));
  await until("and back on alice's", async () => (await columnOf(a.page, title)) === from || shown(a.page));
  for (const p of [a, b]) {
    // The stock client tried its upgrade and stayed on polling: its
    // session's requests went on after the refused WebSocket.
    assert.ok(await p.page.evaluate(() => window.refusedWebSockets) > 0, "the client tried to upgrade");
    assert.ok(p.polls.filter((u) => u.includes("sid=")).length > 2, `the session polled: ${p.polls.length} requests`);
    assert.deepEqual(p.problems, []);
    await p.context.close();
  }
});

test("a task published with roomcast publish shows live and is still there after a reload", async () => {
  const natsURL = /^  nats +(\S+)/m.exec(logs)?.[1];
  assert.ok(natsURL, `the demo prints its NATS URL:\n${logs}`);
  const line = /^  publish +(bin\/roomcast publish .*)$/m.exec(logs)?.[1];
  assert.ok(line, "the demo prints a publish line");
  const a = await openBoard("alice");
  const { stdout } = await run("sh", ["-c", line], { cwd: root });
  assert.equal(JSON.parse(stdout).room, "board-demo-tasks");
  await until("the task shows live", async () => (await columnOf(a.page, "From the terminal")) === "todo");
  await run(roomcastBin, ["publish", "board-demo-tasks", "update-task", "t-cli", "--diff", '{"status":"done"}', "--nats-url", natsURL]);
  await until("and moves live", async () => (await columnOf(a.page, "From the terminal")) === "done");
  await a.page.reload();
  await live(a.page);
  assert.equal(await columnOf(a.page, "From the terminal"), "done", "the demo's store has it: it consumes the stream");
  assert.deepEqual(a.problems, []);
  await a.context.close();
});

test("the README's frontend example works as pasted into the demo", async () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Frontend: the client library"));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, "the README has the example");
  const page = readFileSync(join(root, "examples", "demo", "web", "snippet.html"), "utf8");
  assert.ok(page.includes(code), "snippet.html holds the README's example exactly");
  assert.ok(code.trim().split("\n").length <= 10);

  const context = await browser.newContext();
  const p = await context.newPage();
  await p.goto(`${url}/snippet.html`);
  await p.waitForFunction(() => document.body.textContent.includes("Plan the sprint"), null, { timeout: 15000 });
  await context.close();
});
