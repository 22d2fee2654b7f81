// The seed's resync flow against the real stack: a client cut off while a
// board's tasks and a chat change converges, through getRoomState,
// getChangesSince and getChatMessagesSince, to exactly the view of a client
// that never left; and when the stream's retention no longer reaches back,
// it is told so (complete:false) and refetches whole.
//
// The domain service is the official nats client: it answers authz.join,
// publishes envelopes with Nats-Msg-Id, and its own store (`db`) stands for
// the domain API that clients refetch resources from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startStack, nats, publish, socket, connected, call, once, jc, sleep } from "./stack.mjs";

const BOARD = "board-b1";
const TASKS = "board-b1-tasks";
const CHAT = "chat-alice-bob";
const TASKS_SUBJECT = "rooms.board.b1.tasks";
const CHAT_SUBJECT = "rooms.chat.alice.bob";

// domain is the publishing domain service with its database.
function domain(nc) {
  const db = new Map(); // task id → task
  let clock = Date.now();
  const at = () => ++clock; // strictly increasing updatedAt
  return {
    nc,
    db,
    async create(id, fields) {
      const task = { id, ...fields };
      db.set(id, task);
      return publish(nc, TASKS_SUBJECT, { event: "create-task", id, updatedAt: at(), data: task });
    },
    async update(id, diff) {
      Object.assign(db.get(id), diff);
      return publish(nc, TASKS_SUBJECT, { event: "update-task", id, updatedAt: at(), diff });
    },
    async remove(id) {
      db.delete(id);
      return publish(nc, TASKS_SUBJECT, { event: "delete-task", id, updatedAt: at() });
    },
    async message(id, from, text) {
      return publish(nc, CHAT_SUBJECT, { event: "new-message", id, updatedAt: at(), data: { from, text } });
    },
    // fetch is the domain API a client refetches a resource from.
    fetch: (id) => (db.has(id) ? structuredClone(db.get(id)) : null),
    all: () => new Map([...db].map(([id, t]) => [id, structuredClone(t)])),
  };
}

// answerAuthz lets alice and bob into board b1 (and its tasks and sprints).
function answerAuthz(nc) {
  const allowed = new Set([BOARD, TASKS, "board-b1-sprints"]);
  const sub = nc.subscribe("authz.join");
  (async () => {
    for await (const m of sub) {
      const { userId, roomName } = jc.decode(m.data);
      m.respond(jc.encode({ allow: (userId === "alice" || userId === "bob") && allowed.has(roomName) }));
    }
  })();
  return sub;
}

// client is a frontend: a socket and the view it builds from broadcasts.
function client(stack, user) {
  const view = {
    tasks: new Map(),
    chat: [], // envelopes in order
    lastTs: {}, // room → largest updatedAt seen
    lastSeq: {}, // room → last seq seen
    received: 0,
  };
  const sock = socket(stack, { token: stack.token(user), clientId: `${user}-tab` });
  sock.on("broadcast", ({ destination, data, seq }) => {
    view.received++;
    view.lastSeq[destination] = seq;
    view.lastTs[destination] = Math.max(view.lastTs[destination] ?? 0, data.updatedAt);
    if (destination === TASKS) applyTask(view.tasks, data);
    if (destination === CHAT && !view.chat.some((m) => m.id === data.id)) view.chat.push(data);
  });
  return { sock, view, user };
}

// applyTask applies a broadcast envelope, as a frontend does.
function applyTask(tasks, env) {
  switch (env.event) {
    case "create-task":
      tasks.set(env.id, structuredClone(env.data));
      break;
    case "update-task":
      if (tasks.has(env.id)) Object.assign(tasks.get(env.id), env.diff);
      break;
    case "delete-task":
      tasks.delete(env.id);
      break;
  }
}

async function ok(sock, endpoint, args) {
  const ack = await call(sock, endpoint, args);
  assert.equal(ack.ok, true, `${endpoint} ${JSON.stringify(args)}: ${JSON.stringify(ack)}`);
  return ack.data;
}

async function until(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// cutOff kills the socket's connection without a goodbye, as a network
// failure does: no close frame, no Socket.IO disconnect packet.
async function cutOff(c) {
  const gone = once(c.sock, "disconnect");
  c.sock.io.engine.transport.ws.terminate();
  const reason = await gone;
  assert.equal(Array.isArray(reason) ? reason[0] : reason, "transport close");
}

// changesSince follows getChangesSince's continuation cursors.
async function changesSince(sock, cursor, limit) {
  const changes = [];
  const perPage = [];
  let complete = true;
  for (let cur = cursor; cur; ) {
    const page = await ok(sock, "getChangesSince", { roomName: TASKS, ...cur, limit });
    changes.push(...page.changes);
    perPage.push(page.changes.map((c) => c.id));
    complete &&= page.complete;
    cur = page.next;
  }
  return { changes, complete, pages: perPage.length, perPage };
}

// chatSince follows getChatMessagesSince's pages.
async function chatSince(sock, cursor, limit) {
  const messages = [];
  let complete = true;
  let pages = 0;
  for (let cur = cursor; cur; pages++) {
    const page = await ok(sock, "getChatMessagesSince", { roomName: CHAT, ...cur, limit });
    messages.push(...page.messages);
    complete &&= page.complete;
    cur = page.hasMore ? page.next : null;
  }
  return { messages, complete, pages };
}

// resync is the seed's frontend flow after a reconnect.
async function resync(c, api) {
  await ok(c.sock, "addToRoom", { roomName: BOARD }); // live first, so nothing slips between
  const state = await ok(c.sock, "getRoomState", { roomName: TASKS });
  const since = c.view.lastTs[TASKS] ?? 0;
  const result = { state, since };
  if (state === null || state.lastBroadcastTimestamp > since) {
    const got = await changesSince(c.sock, { since }, 2);
    result.tasks = got;
    if (!got.complete) {
      c.view.tasks = api.all(); // history is gone: refetch the board whole
    } else {
      for (const ch of got.changes) {
        if (ch.deleted) c.view.tasks.delete(ch.id);
        else c.view.tasks.set(ch.id, api.fetch(ch.id));
      }
    }
  }
  const chat = await chatSince(c.sock, { afterSeq: c.view.lastSeq[CHAT] ?? 0 }, 1);
  result.chat = chat;
  for (const m of chat.messages) if (!c.view.chat.some((x) => x.id === m.id)) c.view.chat.push(m);
  return result;
}

function sorted(map) {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
}

async function scenario({ env, away }) {
  // Recovery off: this is the seed's resync after a reconnect that is a
  // new session (a recovered one gets the missed broadcasts replayed:
  // recovery.test.mjs).
  const stack = await startStack({ env: { ROOMCAST_RECOVERY_TTL: "0", ...env } });
  const nc = await nats(stack);
  answerAuthz(nc);
  const api = domain(nc);
  const a = client(stack, "alice");
  const b = client(stack, "bob");
  try {
    await connected(a.sock);
    await ok(a.sock, "addToRoom", { roomName: BOARD });
    await connected(b.sock);
    const joined = await ok(b.sock, "addToRoom", { roomName: BOARD });
    assert.equal(joined.roomName, BOARD);

    // Both online.
    await api.create("t1", { title: "one", done: false });
    await api.create("t2", { title: "two", done: false });
    await api.update("t1", { done: true });
    await api.message("m1", "alice", "hello bob");
    await until("both clients saw the first four broadcasts", () => a.view.received >= 4 && b.view.received >= 4);
    assert.deepEqual(sorted(b.view.tasks), sorted(a.view.tasks));

    await cutOff(b);
    await away(api);
    const total = 4 + api.awayCount;
    await until("alice saw everything", () => a.view.received >= total);
    assert.deepEqual(sorted(a.view.tasks), sorted(api.all()), "alice's view is the domain's");

    // Bob reconnects (same tab) and resyncs.
    b.sock.connect();
    await connected(b.sock);
    return { stack, nc, a, b, api, resync: await resync(b, api) };
  } catch (err) {
    a.sock.disconnect();
    b.sock.disconnect();
    await nc.close();
    await stack.stop();
    throw err;
  }
}

async function close({ stack, nc, a, b }) {
  a.sock.disconnect();
  b.sock.disconnect();
  await nc.close();
  await stack.stop();
}

test("a client cut off converges to the view of one that stayed", async () => {
  const s = await scenario({
    env: {},
    away: async (api) => {
      await api.create("t3", { title: "three", done: false });
      await api.update("t2", { title: "two, renamed" });
      await api.remove("t1");
      await api.update("t3", { done: true });
      await api.update("t3", { title: "three, done" });
      await api.create("t4", { title: "short-lived" });
      await api.remove("t4");
      await api.message("m2", "alice", "are you there?");
      await api.message("m3", "alice", "ping");
      api.awayCount = 9;
    },
  });
  try {
    const { a, b, resync: r } = s;
    // Room state runs behind the stream by a fold; it reports the newer timestamp.
    assert.ok(r.state, "getRoomState has the board's tasks");
    assert.ok(r.state.lastBroadcastTimestamp > r.since, "the room moved on while bob was away");
    assert.equal(r.tasks.complete, true);
    assert.ok(r.tasks.pages >= 2, "limit 2 made getChangesSince paginate");
    const byId = Object.fromEntries(r.tasks.changes.map((c) => [c.id, c]));
    assert.equal(byId.t1?.deleted, true, "t1's delete is reported");
    assert.equal(byId.t4?.deleted, true, "t4, created and deleted while away, is reported deleted");
    assert.equal(byId.t3?.deleted, false);
    for (const ids of r.tasks.perPage) {
      assert.ok(ids.length <= 2, "a page holds at most limit entries");
      assert.equal(new Set(ids).size, ids.length, "one entry per resource in a page");
    }
    // Pages come in stream order, so the last entry of a resource is its latest change.
    assert.deepEqual(r.chat.messages.map((m) => m.id), ["m2", "m3"]);
    assert.equal(r.chat.complete, true);

    assert.deepEqual(sorted(b.view.tasks), sorted(a.view.tasks), "bob's tasks are alice's");
    assert.deepEqual(b.view.chat, a.view.chat, "bob's chat is alice's");
    assert.deepEqual(sorted(b.view.tasks), sorted(s.api.all()));

    // Live again: the next change reaches both.
    const next = once(b.sock, "broadcast");
    await s.api.update("t2", { done: true });
    const got = await next;
    assert.equal(got.destination, TASKS);
  } finally {
    await close(s);
  }
});

test("away longer than the stream's retention: complete:false, refetch whole", async () => {
  const s = await scenario({
    env: { ROOMCAST_MAX_AGE: "2s" },
    away: async (api) => {
      await api.create("t3", { title: "three" });
      await api.remove("t1");
      await api.message("m2", "alice", "gone soon");
      api.awayCount = 3;
      // Wait until the stream has dropped what bob saw last.
      const jsm = await api.nc.jetstreamManager();
      const first = (await jsm.streams.info("ROOMS")).state.last_seq;
      await until("retention dropped old messages", async () => (await jsm.streams.info("ROOMS")).state.first_seq > first, 20000);
      await api.update("t2", { title: "after the drop" });
      api.awayCount = 4;
    },
  });
  try {
    const { a, b, resync: r } = s;
    assert.ok(r.tasks, "bob asked for the changes");
    assert.equal(r.tasks.complete, false, "history no longer reaches back: complete:false");
    assert.equal(r.chat.complete, false);
    assert.deepEqual(sorted(b.view.tasks), sorted(a.view.tasks), "after a whole refetch bob's tasks are alice's");
  } finally {
    await close(s);
  }
});
