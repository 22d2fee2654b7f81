// The library against a gateway that recovers sessions (issue 20): after a
// network cut the stock client comes back recovered, and the library takes
// its rooms up where they stood (no addToRoom, no resync: the gateway's
// replay brings the store up to date); a replayed broadcast that does not
// follow still starts a resync; a reconnect the gateway does not recover
// joins and resyncs as before. Every scenario ends with the client's store
// equal to the domain's data.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startStack, nats, publish, jc, tcpProxy, until } from "../../../../e2e/stack.mjs";
import { connect, rooms } from "../../dist/index.js";

let stack, nc;
const clients = [];
const proxies = [];

before(async () => {
  stack = await startStack(); // recovery on (the default)
  nc = await nats(stack);
  const sub = nc.subscribe("authz.join");
  (async () => {
    for await (const m of sub) m.respond(jc.encode({ allow: true }));
  })();
});

after(async () => {
  for (const c of clients) c.close();
  for (const px of proxies) px.close();
  await nc?.close();
  await stack?.stop();
});

const subject = (room) => "rooms." + room.replace(/-/g, ".");

// A board's tasks and a chat, changed in the domain's store, then published.
function domain(board, user) {
  const tasks = new Map();
  const messages = [];
  let clock = Date.now();
  const room = rooms.boardTasks(board);
  const chat = rooms.chat(user, "zz");
  return {
    room,
    chat,
    tasks,
    messages,
    fetches: 0,
    async create(id, title) {
      const t = { id, title, updatedAt: ++clock };
      tasks.set(id, t);
      await publish(nc, subject(room), { event: "create-task", id, updatedAt: t.updatedAt, data: { title } });
    },
    async update(id, title) {
      const t = { ...tasks.get(id), title, updatedAt: ++clock };
      tasks.set(id, t);
      await publish(nc, subject(room), { event: "update-task", id, updatedAt: t.updatedAt, diff: { title } });
    },
    async remove(id) {
      tasks.delete(id);
      await publish(nc, subject(room), { event: "delete-task", id, updatedAt: ++clock });
    },
    async say(id) {
      messages.push(id);
      await publish(nc, subject(chat), { event: "new-message", id, updatedAt: ++clock, data: { text: id } });
    },
    view: () => [...tasks.values()].sort((a, b) => a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : 1)),
  };
}
const canonical = (list) => JSON.stringify(list.map((r) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)))));

// open connects a library client through its own proxy and tracks the
// domain's board and chat; calls lists the endpoints it calls.
async function open(user, d) {
  const px = await tcpProxy(stack.httpURL);
  proxies.push(px);
  const c = connect(px.url, {
    token: () => stack.token(user),
    storage: null,
    visibility: false,
    ioOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200, forceNew: true },
    sync: { retryMs: 100 },
  });
  clients.push(c);
  const statuses = [];
  c.on("status", (s, why) => statuses.push(why ? `${s}: ${why}` : s));
  const calls = [];
  c.socket.onAnyOutgoing((event, call) => event === "endpoint" && calls.push(`${call.endpointName} ${call.endpointArgs.roomName ?? ""}`.trim()));
  const synced = [];
  const col = c.collection(d.room, {
    fetchAll: async () => (d.fetches++, [...d.tasks.values()].map((t) => ({ ...t }))),
    fetchByIds: async (ids) => (d.fetches++, ids.filter((id) => d.tasks.has(id)).map((id) => ({ ...d.tasks.get(id) }))),
    onSynced: (s) => synced.push(s.reason),
  });
  const chat = c.chat(d.chat);
  const t = {
    c,
    px,
    calls,
    statuses,
    synced,
    store: col.store,
    room: col.room,
    chat,
    same: () => canonical(col.store.all()) === canonical(d.view()) && chat.messages.all().map((m) => m.id).join() === d.messages.join(),
  };
  await col.room.ready();
  await chat.room.ready();
  return t;
}

// away cuts t's network, runs fn while it is away, and restores it.
async function away(t, fn) {
  t.px.cutAll();
  await until("the client saw the loss", () => t.c.status === "reconnecting");
  await fn();
  t.px.restore();
  await until("connected again", () => t.c.status === "connected");
}

test("a recovered reconnect: the rooms are neither joined again nor resynced, the replayed broadcasts bring the store up to date", async () => {
  const d = domain("rb1", "ra");
  await d.create("t1", "before the join");
  const t = await open("ra", d);
  await d.create("t2", "live");
  await d.say("m1");
  await until("live", () => t.same());
  const fetches = d.fetches;
  const synced = t.synced.length;
  const n = t.calls.length;
  const id = t.c.socket.id;
  await away(t, async () => {
    await d.create("t3", "while away");
    await d.update("t1", "renamed while away");
    await d.remove("t2");
    await d.say("m2");
    await d.say("m3");
  });
  assert.equal(t.c.recovered, true, "the gateway recovered the session");
  assert.equal(t.statuses.at(-1), "connected: recovered");
  assert.equal(t.c.socket.id, id);
  await until("converged from the replay", () => t.same());
  await d.create("t4", "live after");
  await d.say("m4");
  await until("live after the recovery", () => t.same());
  assert.deepEqual(t.calls.slice(n), [], "no join, no resync");
  assert.deepEqual(t.synced.slice(synced), ["recovered"], "onSynced once, for the recovery: nothing read");
  assert.equal(d.fetches, fetches, "nothing fetched: the broadcasts carried it all");
  assert.equal(t.room.status, "joined");
});

test("a replayed broadcast that does not follow the room's last seq still resyncs that room, without a join", async () => {
  const d = domain("rb2", "rb");
  const t = await open("rb", d);
  await d.create("g1", "live");
  await until("live", () => t.same());
  const n = t.calls.length;
  // Lose the first broadcast of the board after the reconnect, on its way
  // from the socket to the library (the gateway's replay itself is exact).
  let drop = 1;
  const deliver = t.c.onBroadcast.bind(t.c);
  t.c.onBroadcast = (b) => (b.destination === d.room && t.c.recovered && drop > 0 ? void drop-- : deliver(b));
  await away(t, async () => {
    await d.create("g2", "lost on the way");
    await d.create("g3", "shows the gap");
  });
  assert.equal(t.c.recovered, true);
  await until("converged", () => t.same() && t.store.size === 3);
  assert.equal(drop, 0);
  assert.deepEqual(t.calls.slice(n), [`getChangesSince ${d.room}`], "a resync of the board alone, no join");
  assert.deepEqual(t.synced.at(-1), "gap");
});

test("a reconnect the gateway does not recover (the session record gone) joins and resyncs every room", async () => {
  const d = domain("rb3", "rc");
  const t = await open("rc", d);
  await d.create("x1", "live");
  await until("live", () => t.same());
  const n = t.calls.length;
  const id = t.c.socket.id;
  // socket.io-client keeps the pid it presents in the private field _pid;
  // the gateway's record of it is the key in the SESSIONS bucket.
  const pid = t.c.socket._pid;
  assert.equal(typeof pid, "string");
  await away(t, async () => {
    await d.create("x2", "while away");
    await d.say("n1");
    const kv = await nc.jetstream().views.kv("SESSIONS", { bindOnly: true });
    await until("the record written", async () => (await kv.get(pid))?.operation === "PUT");
    await kv.delete(pid);
  });
  assert.equal(t.c.recovered, false, "a new session");
  assert.equal(t.statuses.at(-1), "connected");
  assert.notEqual(t.c.socket.id, id);
  await until("converged by the resync", () => t.same());
  assert.deepEqual(t.calls.slice(n).sort(), [`addToRoom ${d.room}`, `addToRoom ${d.chat}`, `getChangesSince ${d.room}`, `getChatMessagesSince ${d.chat}`]);
  assert.equal(t.synced.at(-1), "reconnect");
});
