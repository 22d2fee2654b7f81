// Resync decisions of one room, against a scripted history: what the room
// asks for after a join, a reconnect and a gap, and what it hands the app.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RoomSync, RoomcastError, decideResource, splitChanges } from "../../dist/index.js";

// history is one room's messages in a stream; calls records every request.
function fakeServer({ firstSeq = 1 } = {}) {
  const msgs = []; // {seq, env}
  const calls = [];
  let seq = 100;
  const srv = {
    calls,
    msgs,
    fail: 0,
    publish(env) {
      seq += 3; // other rooms' messages in between
      const prevSeq = msgs.at(-1)?.seq ?? 0;
      msgs.push({ seq, env });
      return { destination: "r", data: env, seq, prevSeq };
    },
    state() {
      const last = msgs.at(-1);
      return last ? { seq: last.seq, lastBroadcastTimestamp: Math.max(...msgs.map((m) => m.env.updatedAt)) } : null;
    },
    async call(name, args) {
      calls.push([name, args]);
      await null;
      if (srv.fail > 0) {
        srv.fail--;
        throw Object.assign(new Error("unavailable"), { code: "unavailable" });
      }
      const after = args.afterSeq ?? 0;
      const complete = args.afterSeq !== undefined ? after + 1 >= firstSeq : true;
      const rest = msgs.filter((m) => m.seq > after && (args.since === undefined || m.env.updatedAt >= args.since));
      const page = rest.slice(0, args.limit ?? 100);
      const next = page.length < rest.length ? { afterSeq: page.at(-1).seq } : undefined;
      switch (name) {
        case "getRoomState":
          return srv.state();
        case "addToRoom": {
          const st = srv.state();
          return { roomName: args.roomName, seq: st?.seq ?? null, lastBroadcastTimestamp: st?.lastBroadcastTimestamp ?? null };
        }
        case "getChangesSince": {
          const latest = new Map();
          for (const m of page) latest.set(m.env.id, { id: m.env.id, updatedAt: m.env.updatedAt, deleted: m.env.event.startsWith("delete"), seq: m.seq });
          return { changes: [...latest.values()].sort((a, b) => a.seq - b.seq), complete, ...(next ? { next } : {}) };
        }
        case "getChatMessagesSince":
          return { messages: page.map((m) => m.env), hasMore: Boolean(next), complete, ...(next ? { next } : {}) };
      }
      throw new Error("unexpected " + name);
    },
  };
  return srv;
}

const t = (id, at, event = "create-task") => ({ event, id, updatedAt: at, ...(event.startsWith("create") ? { data: { title: id } } : event.startsWith("update") ? { diff: { title: id + at } } : {}) });

function recorder() {
  const log = [];
  return {
    log,
    handlers: {
      onEvent: (env, b) => log.push(["event", env.id, b.seq]),
      refetch: () => log.push(["refetch"]),
      onChanges: (c) => log.push(["changes", c.upserts.map((x) => x.id), c.deletions.map((x) => x.id)]),
      onMessages: (ms) => log.push(["messages", ms.map((m) => m.id)]),
      onError: (err) => log.push(["error", err.message]),
    },
  };
}

test("children room, first join: refetch whole and hold the joined state's seq", async () => {
  const srv = fakeServer();
  srv.publish(t("t1", 10));
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call);
  await room.resync("join", srv.state());
  assert.deepEqual(r.log, [["refetch"]]);
  assert.equal(room.lastSeq, 103);
  assert.deepEqual(srv.calls, [], "the join ack's state is used, nothing is asked");
});

test("children room, reconnect: changes after the last seq, following next, upserts and deletions", async () => {
  const srv = fakeServer();
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call, { pageLimit: 2 });
  await room.resync("join", srv.state());
  room.onBroadcast(srv.publish(t("t1", 10)));
  assert.equal(room.lastSeq, 103);
  // Away: four changes the socket never saw.
  srv.publish(t("t2", 11));
  srv.publish(t("t1", 12, "update-task"));
  srv.publish(t("t3", 13));
  srv.publish(t("t2", 14, "delete-task"));
  r.log.length = 0;
  await room.resync("reconnect", srv.state());
  assert.deepEqual(r.log, [["changes", ["t1", "t3"], ["t2"]]]);
  assert.deepEqual(srv.calls.map(([, a]) => a.afterSeq), [103, 109], "from the last seq, then next");
  assert.equal(room.lastSeq, 115);
});

test("children room: complete:false asks for a whole refetch", async () => {
  const srv = fakeServer({ firstSeq: 200 });
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call, {});
  room.lastSeq = 103;
  srv.publish(t("t1", 10));
  await room.resync("reconnect");
  assert.deepEqual(r.log, [["refetch"]]);
});

test("a gap triggers a resync; broadcasts meanwhile are delivered after it, in order", async () => {
  const srv = fakeServer();
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call);
  await room.resync("join", null);
  room.onBroadcast(srv.publish(t("t1", 10))); // 103, in order
  srv.publish(t("t2", 11)); // 106: lost
  const b3 = srv.publish(t("t3", 12)); // 109, prevSeq 106: a gap
  const b4 = srv.publish(t("t4", 13)); // 112, arrives while the resync runs
  r.log.length = 0;
  room.onBroadcast(b3);
  assert.ok(room.syncing, "the gap started a resync");
  room.onBroadcast(b4);
  await room.resync("manual"); // waits for the running one (and runs once more)
  assert.deepEqual(r.log[0], ["changes", ["t2", "t3", "t4"], []]);
  assert.deepEqual(
    r.log.filter((e) => e[0] === "event"),
    [["event", "t3", 109], ["event", "t4", 112]],
    "the queued broadcasts are delivered after the resync, idempotently",
  );
  assert.equal(room.lastSeq, 112);
  assert.deepEqual(srv.calls.filter(([n]) => n === "getChangesSince")[0][1].afterSeq, 103);
});

test("a repeated or old broadcast does not trigger a resync", async () => {
  const srv = fakeServer();
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call);
  await room.resync("join", null);
  const b = srv.publish(t("t1", 10));
  room.onBroadcast(b);
  room.onBroadcast(b);
  assert.equal(room.syncing, false);
  assert.deepEqual(srv.calls, []);
});

test("resource room: refetch when lastBroadcastTimestamp differs from the resource's updatedAt", async () => {
  assert.equal(decideResource(10, { lastBroadcastTimestamp: 10, seq: 3 }), "up-to-date");
  assert.equal(decideResource(10, { lastBroadcastTimestamp: 12, seq: 3 }), "refetch");
  assert.equal(decideResource(undefined, { lastBroadcastTimestamp: 12, seq: 3 }), "refetch");
  assert.equal(decideResource(10, null), "up-to-date", "never broadcast to");

  const srv = fakeServer();
  srv.publish({ event: "update-board", id: "b1", updatedAt: 50, diff: { name: "x" } });
  let held = 50;
  const r = recorder();
  const room = new RoomSync("board-b1", "resource", { ...r.handlers, updatedAt: () => held }, srv.call);
  await room.resync("join");
  assert.deepEqual(r.log, [], "up to date: no refetch");
  assert.deepEqual(srv.calls.map(([n]) => n), ["getRoomState"]);
  srv.publish({ event: "update-board", id: "b1", updatedAt: 60, diff: { name: "y" } });
  await room.resync("reconnect");
  assert.deepEqual(r.log, [["refetch"]]);
  assert.equal(room.lastSeq, 106);
});

test("chat room: all of the history on the first join, then messages after the last seq, paged", async () => {
  const srv = fakeServer();
  const m = (id, at) => ({ event: "new-message", id, updatedAt: at, data: { text: id } });
  srv.publish(m("m1", 1));
  srv.publish(m("m2", 2));
  srv.publish(m("m3", 3));
  const r = recorder();
  const room = new RoomSync("chat-a-b", "chat", r.handlers, srv.call, { pageLimit: 2 });
  await room.resync("join", srv.state());
  assert.deepEqual(r.log, [["messages", ["m1", "m2", "m3"]]]);
  assert.deepEqual(srv.calls.map(([, a]) => a.afterSeq), [0, 106]);
  srv.publish(m("m4", 4));
  r.log.length = 0;
  srv.calls.length = 0;
  await room.resync("reconnect", srv.state());
  assert.deepEqual(r.log, [["messages", ["m4"]]]);
  assert.deepEqual(srv.calls.map(([, a]) => a.afterSeq), [109]);
});

test("a failed resync reports the error, holds broadcasts and retries", async () => {
  const srv = fakeServer();
  const r = recorder();
  const timers = [];
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call, {
    setTimeout: (fn, ms) => timers.push({ fn, ms }),
    clearTimeout: () => {},
  });
  room.lastSeq = 100;
  srv.fail = 1;
  await room.resync("reconnect");
  assert.deepEqual(r.log, [["error", "unavailable"]]);
  assert.equal(room.status, "retrying");
  assert.equal(timers.length, 1);
  const b = srv.publish(t("t1", 10));
  room.onBroadcast(b);
  assert.deepEqual(r.log.filter((e) => e[0] === "event"), [], "held until a resync succeeds");
  timers[0].fn();
  await room.resync("manual");
  assert.deepEqual(r.log.slice(1), [["changes", ["t1"], []], ["event", "t1", 103]]);
  assert.equal(room.status, "joined");
});

test("a resync refused for good (forbidden: the user was removed from the board) fails the room; no retry", async () => {
  const r = recorder();
  const timers = [];
  const forbidden = async () => {
    throw new RoomcastError("forbidden", "access to board-b1-tasks denied", "getChangesSince");
  };
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, forbidden, { setTimeout: (fn, ms) => timers.push({ fn, ms }), clearTimeout: () => {} });
  room.lastSeq = 100;
  await room.resync("gap");
  assert.equal(room.status, "failed");
  assert.equal(timers.length, 0);
  await assert.rejects(room.ready(), { code: "forbidden" });
});

test("splitChanges keeps stream order", () => {
  const c = splitChanges([
    { id: "b", updatedAt: 1, deleted: true, seq: 9 },
    { id: "a", updatedAt: 2, deleted: false, seq: 4 },
  ]);
  assert.deepEqual(c.upserts.map((x) => x.id), ["a"]);
  assert.deepEqual(c.deletions.map((x) => x.id), ["b"]);
});

test("a page refused as rate_limited is asked again from the same cursor after a backoff, not the resync from its start", async () => {
  const srv = fakeServer();
  for (let i = 0; i < 6; i++) srv.publish(t(`t${i}`, 10 + i));
  const r = recorder();
  const waits = [];
  // Every third page call is refused, as a socket's exhausted budget would.
  let n = 0;
  const call = async (name, args) => {
    if (name === "getChangesSince" && ++n % 3 === 0) throw new RoomcastError("rate_limited", "more than 20 endpoint calls per second", name);
    return srv.call(name, args);
  };
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, call, {
    pageLimit: 1,
    retryMs: 100,
    random: () => 0,
    setTimeout: (fn, ms) => (waits.push(ms), fn()),
    clearTimeout: () => {},
  });
  room.lastSeq = 100;
  await room.resync("reconnect");
  assert.equal(room.status, "joined");
  assert.deepEqual(r.log, [["changes", ["t0", "t1", "t2", "t3", "t4", "t5"], []]]);
  const cursors = srv.calls.map(([, a]) => a.afterSeq);
  assert.deepEqual(cursors, [100, 103, 106, 109, 112, 115], "each page once, in order, after its retry");
  assert.deepEqual(waits, [50, 50], "one backoff per refused page (calls 3 and 6)");
});

test("the broadcasts held while a room cannot resync are bounded; dropping them loses nothing", async () => {
  const srv = fakeServer();
  const r = recorder();
  const timers = [];
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call, {
    maxQueued: 3,
    setTimeout: (fn, ms) => timers.push({ fn, ms }),
    clearTimeout: () => {},
  });
  await room.resync("join", null);
  srv.fail = 1;
  await room.resync("manual");
  assert.equal(room.status, "retrying");
  r.log.length = 0;
  for (let i = 0; i < 7; i++) room.onBroadcast(srv.publish(t(`t${i}`, 10 + i)));
  await room.resync("retry");
  assert.equal(room.status, "joined");
  assert.deepEqual(r.log[0], ["changes", ["t0", "t1", "t2", "t3", "t4", "t5", "t6"], []], "the read brings what was dropped");
  assert.equal(room.lastSeq, srv.msgs.at(-1).seq);
});

test("broadcasts dropped while a resync runs are read again: the newest, kept, shows the gap", async () => {
  const srv = fakeServer();
  const r = recorder();
  let release;
  let reads = 0;
  // The first read answers what was stored before the broadcasts below.
  const call = async (name, args) => {
    if (name === "getChangesSince" && reads++ === 0) {
      const answer = await srv.call(name, args);
      await new Promise((ok) => (release = ok));
      return answer;
    }
    return srv.call(name, args);
  };
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, call, { maxQueued: 2 });
  room.lastSeq = 100;
  const running = room.resync("reconnect");
  await new Promise((ok) => setImmediate(ok));
  for (let i = 0; i < 5; i++) room.onBroadcast(srv.publish(t(`t${i}`, 10 + i)));
  release();
  await running;
  await room.ready();
  assert.equal(reads, 2, "read again after the drop");
  assert.ok(r.log.some((e) => e[0] === "event"), "the kept broadcast was delivered");
  assert.deepEqual(r.log.filter((e) => e[0] === "changes").at(-1), ["changes", ["t0", "t1", "t2", "t3", "t4"], []]);
  assert.equal(room.lastSeq, srv.msgs.at(-1).seq);
});

test("a read stops once it reaches the first queued broadcast's prevSeq: a room published to faster than its pages are read is not chased for ever", async () => {
  const srv = fakeServer();
  for (let i = 0; i < 5; i++) srv.publish(t(`old${i}`, i + 1));
  const r = recorder();
  let room;
  let reads = 0;
  // Two messages are stored and broadcast while each page is read.
  const call = async (name, args) => {
    if (name === "getChangesSince" && ++reads < 50) {
      room.onBroadcast(srv.publish(t(`live${reads}a`, 100 + reads)));
      room.onBroadcast(srv.publish(t(`live${reads}b`, 100 + reads)));
    }
    return srv.call(name, args);
  };
  room = new RoomSync("board-b1-tasks", "children", r.handlers, call, { pageLimit: 1 });
  room.lastSeq = 100;
  await room.resync("reconnect");
  assert.ok(reads <= 7, `the missed five and not much more: ${reads} pages`);
  const changed = r.log.filter((e) => e[0] === "changes").flatMap((e) => e[1]);
  const events = r.log.filter((e) => e[0] === "event").map((e) => e[1]);
  for (let i = 0; i < 5; i++) assert.ok(changed.includes(`old${i}`), `old${i} read`);
  for (let i = 1; i <= reads; i++) for (const x of "ab") assert.ok(changed.includes(`live${i}${x}`) || events.includes(`live${i}${x}`), `live${i}${x} read or delivered`);
  assert.equal(room.lastSeq, srv.msgs.at(-1).seq);
});

test("a queued broadcast after a lost one moves the read's end to the loss", async () => {
  const srv = fakeServer();
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call, { pageLimit: 1 });
  await room.resync("join", null);
  srv.fail = 1;
  await room.resync("manual"); // failed: broadcasts are queued until a resync succeeds
  const b1 = srv.publish(t("t1", 10));
  srv.publish(t("t2", 11)); // lost on its way to this socket
  const b3 = srv.publish(t("t3", 12));
  room.onBroadcast(b1);
  room.onBroadcast(b3);
  r.log.length = 0;
  await room.resync("retry");
  assert.ok(r.log.some((e) => e[0] === "changes" && e[1].includes("t2")), "the lost one is read");
  assert.equal(room.lastSeq, b3.seq);
});

test("what was queued on the old socket does not end the read after a reconnect", async () => {
  const srv = fakeServer();
  const r = recorder();
  const room = new RoomSync("board-b1-tasks", "children", r.handlers, srv.call, { pageLimit: 1 });
  await room.resync("join", null);
  srv.fail = 1;
  await room.resync("manual");
  room.onBroadcast(srv.publish(t("t1", 10))); // queued: the resync failed
  room.pause();
  srv.publish(t("t2", 11)); // while away
  srv.publish(t("t3", 12));
  r.log.length = 0;
  await room.join("reconnect");
  assert.deepEqual(r.log.filter((e) => e[0] === "changes").flatMap((e) => e[1]), ["t1", "t2", "t3"]);
  assert.equal(room.lastSeq, srv.msgs.at(-1).seq);
});
