// The operator's roomcast command against the all-in-one stack: publish,
// replay (print and rebroadcast), tail, state, changes, revoke, and the exit
// codes a script relies on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { startStack, binary, nats, authz, socket, connected, call, once } from "./stack.mjs";

const run = promisify(execFile);

// roomcast runs one command and resolves with {code, out, err}.
async function roomcast(stack, ...args) {
  try {
    const { stdout, stderr } = await run(binary, [args[0], "-nats-url", stack.natsURL, ...args.slice(1)]);
    return { code: 0, out: stdout, err: stderr };
  } catch (e) {
    return { code: e.code, out: e.stdout, err: e.stderr };
  }
}

const lines = (out) => out.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

async function eventually(fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

test("roomcast CLI against roomcast serve", async () => {
  const stack = await startStack();
  const nc = await nats(stack);
  authz(nc, () => true);
  const sock = socket(stack, { token: stack.token("u1") });
  try {
    await connected(sock.connect());
    assert.equal((await call(sock, "addToRoom", { roomName: "board-b1" })).ok, true);

    // tail sees what gateways see.
    const tail = spawn(binary, ["tail", "-nats-url", stack.natsURL, "-count", "1", "board-b1-tasks"]);
    let tailOut = "";
    tail.stdout.on("data", (b) => (tailOut += b));
    const tailExit = once(tail, "exit", 10000);
    await once(tail.stderr, "data"); // "tailing …": subscribed

    const got = once(sock, "broadcast");
    let r = await roomcast(stack, "publish", "-data", '{"title":"a"}', "-updated-at", "1000", "board-b1-tasks", "create-task", "t1");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(lines(r.out), [{ room: "board-b1-tasks", seq: 1, duplicate: false }]);
    assert.equal((await got).seq, 1, "the socket got the published event");
    assert.deepEqual(await tailExit, [0, null], "tail -count 1 exits after one broadcast");
    assert.equal(lines(tailOut)[0].seq, 1);

    r = await roomcast(stack, "publish", "-diff", '{"title":"b"}', "-updated-at", "2000", "board-b1-tasks", "update-task", "t1");
    assert.equal(r.code, 0, r.err);

    // replay prints the room's history.
    r = await roomcast(stack, "replay", "-from-seq", "1", "-quiet", "board-b1-tasks");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(lines(r.out).map((l) => [l.seq, l.data.event]), [[1, "create-task"], [2, "update-task"]]);

    // replay -rebroadcast: the connected socket receives it again.
    const again = once(sock, "broadcast");
    r = await roomcast(stack, "replay", "-from-seq", "2", "-rebroadcast", "-quiet", "board-b1-tasks");
    assert.equal(r.code, 0, r.err);
    const b = await again;
    assert.equal(b.seq, 2);
    assert.equal(b.data.event, "update-task");

    // state and changes come from the roomstate and sync services.
    const state = await eventually(async () => {
      const s = await roomcast(stack, "state", "board-b1-tasks");
      return s.code === 0 && JSON.parse(s.out)?.seq === 2 && JSON.parse(s.out);
    });
    assert.deepEqual(state, { lastBroadcastTimestamp: 2000, seq: 2 });
    r = await roomcast(stack, "changes", "-after-seq", "0", "board-b1-tasks");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out).changes, [{ id: "t1", updatedAt: 2000, deleted: false, seq: 2 }]);

    // Exit codes: 2 for a bad command line, nothing done.
    r = await roomcast(stack, "publish", "board-*", "create-task", "t1");
    assert.equal(r.code, 2);
    r = await roomcast(stack, "frobnicate");
    assert.equal(r.code, 2);

    // revoke disconnects the user's socket, server-side.
    const gone = once(sock, "disconnect");
    r = await roomcast(stack, "revoke", "u1");
    assert.equal(r.code, 0, r.err);
    assert.equal([].concat(await gone)[0], "io server disconnect");
  } finally {
    sock.close();
    await nc.close();
    await stack.stop();
  }
});
