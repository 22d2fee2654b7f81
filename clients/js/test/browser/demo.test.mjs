// The demo board in headless Chromium (Debian's chromium, driven by
// playwright-core; never a downloaded browser): two pages on one board
// converge, also after one of them was offline while tasks were created,
// updated and deleted and a chat message was sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { freePort, sleep } from "../../../../e2e/stack.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../../..");
const demoBin = process.env.ROOMCAST_DEMO_BIN || join(root, "bin", "demo");
const artifacts = join(root, "clients", "js", "test-artifacts");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

let demo, logs = "", url, browser;

before(async () => {
  if (!existsSync(demoBin)) throw new Error(`${demoBin} is missing: go build -o bin/demo ./examples/demo`);
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

async function openBoard(user) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(`${url}/?user=${user}`);
  await connected(page);
  return { context, page, problems };
}

const connected = (page, timeout = 15000) => page.waitForSelector('#status[data-status="connected"]', { timeout });

// shown is what a page shows: its tasks (title, done) and chat messages.
function shown(page) {
  return page.evaluate(() => ({
    tasks: [...document.querySelectorAll("#tasks li")].map((li) => ({
      id: li.dataset.id,
      title: li.querySelector(".title").textContent,
      done: li.querySelector("input.done").checked,
    })),
    chat: [...document.querySelectorAll("#chat li")].map((li) => ({ id: li.dataset.id, text: li.textContent })),
  }));
}

async function addTask(page, title) {
  await page.fill("#new-task input", title);
  await page.click("#new-task button");
  await page.waitForFunction((t) => [...document.querySelectorAll("#tasks .title")].some((e) => e.textContent === t), title);
}

const taskRow = (page, title) => page.locator("#tasks li", { has: page.locator(".title", { hasText: new RegExp(`^${title}$`) }) });

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

test("two pages on one board converge, also after one was offline", async (t) => {
  const a = await openBoard("alice");
  const b = await openBoard("bob");

  await addTask(a.page, "Plan the sprint");
  await until("the task shows on the other page", async () => (await shown(b.page)).tasks.some((t) => t.title === "Plan the sprint"));

  // Bob's page loses its network.
  await b.context.setOffline(true);
  const cut = Date.now();
  await until("bob's page notices", async () => (await b.page.getAttribute("#status", "data-status")) !== "connected");

  t.diagnostic(`bob's page noticed the lost network after ${Date.now() - cut} ms`);

  // Meanwhile alice creates, updates and deletes tasks and writes to bob.
  await addTask(a.page, "Write the release notes");
  await addTask(a.page, "Throw this one away");
  await addTask(a.page, "Fix the login bug");
  await taskRow(a.page, "Plan the sprint").locator("input.done").check();
  await a.page.waitForSelector("#tasks li.done");
  await taskRow(a.page, "Throw this one away").locator("button.delete").click();
  await until("deleted on alice's page", async () => !(await shown(a.page)).tasks.some((t) => t.title === "Throw this one away"));
  await a.page.fill("#send input", "Bob, the sprint is planned");
  await a.page.click("#send button");
  await a.page.waitForSelector("#chat li");

  const missed = await shown(b.page);
  assert.equal(missed.tasks.length, 1, "bob's page saw nothing while offline");
  assert.equal(missed.chat.length, 0);

  await b.context.setOffline(false);
  const back = Date.now();
  await connected(b.page, 30000);
  t.diagnostic(`bob's page reconnected ${Date.now() - back} ms after the network came back`);
  const want = await shown(a.page);
  assert.equal(want.tasks.length, 3);
  assert.equal(want.chat.length, 1);
  await until("bob's page shows exactly what alice's shows", async () => {
    const got = await shown(b.page);
    return JSON.stringify(got) === JSON.stringify(want) || got;
  });
  t.diagnostic(`and showed what alice's page shows ${Date.now() - back} ms after`);

  await a.page.screenshot({ path: join(artifacts, "demo-alice.png") });
  await b.page.screenshot({ path: join(artifacts, "demo-bob.png") });
  assert.deepEqual(a.problems, []);
  assert.deepEqual(b.problems, []);
  await a.context.close();
  await b.context.close();
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
