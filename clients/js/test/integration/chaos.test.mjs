// A chaos test of our own: does every client converge whatever the network
// and the server do? bin/roomcast serve (embedded NATS, on a data
// directory), a publisher with the official nats client doing acknowledged
// JetStream publishes (create, update, delete over several boards), tens of
// clients on @roomcast/client and a few on the bare socket.io-client (those
// keep their own state with getRoomState/getChangesSince and seq/prevSeq gap
// detection), all through a TCP proxy that cuts connections at random, in
// storms, and stalls some without a word; the server is restarted on the
// same data directory, and the authorizer (a NATS responder on authz.join)
// stays silent for a moment after the restart.
//
// It checks: every store equals the truth computed from what the publisher
// was acknowledged for; no connected client stays behind an acknowledged
// publish for more than MAX_LAG_MS, counted from when the authorizer
// answers again; the server never exits by itself.
//
// Randomness is seeded: CHAOS_SEED=<n> replays a run's plan (the timings of
// the machine are its own). CHAOS_MS sets how long the chaos lasts.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { io } from "socket.io-client";
import { startStack, nats, jc, sleep, tcpProxy } from "../../../../e2e/stack.mjs";
import { connect, rooms, ResourceStore } from "../../dist/index.js";

const SEED = Number(process.env.CHAOS_SEED ?? randomInt(2 ** 31));
const MAX_LAG_MS = Number(process.env.CHAOS_MAX_LAG_MS ?? 5000);
const CONVERGE_MS = 20000;
// How far behind a bare client reads a board whole instead of its changes.
const FAR_BEHIND = 500;

// mulberry32: a small seeded generator, good enough to draw a plan.
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = generator(SEED);
const between = (a, b) => a + rnd() * (b - a);
const int = (a, b) => Math.floor(between(a, b + 1));
const pick = (xs) => xs[int(0, xs.length - 1)];

const chaosMs = Number(process.env.CHAOS_MS ?? int(15000, 25000));
const plan = {
  seed: SEED,
  chaosMs,
  boards: int(3, 6),
  libClients: int(20, 36),
  bareClients: int(3, 5),
  // The longest title of a task: bodies from a few bytes to several KB.
  titleMax: pick([24, 300, 2000, 9000]),
  opWaitMs: [0, int(2, 60)],
  // At most this many publishes a second over all boards. Unbounded, a
  // plan of six boards published ~600 a second on two cores (seed
  // 1649271110), and clients that came back thousands of changes behind
  // took longer than MAX_LAG_MS to read up at the user's call budget,
  // with recovery off as well: throughput, not the convergence this test
  // is about.
  maxRate: int(100, 300),
  cutWaitMs: [int(20, 200), int(300, 1500)],
  stormWaitMs: [int(2000, 4000), int(5000, 9000)],
  stormShare: [between(0.2, 0.5), between(0.6, 1)],
  // What a cut does: close (FIN), reset (RST) or stall (the bytes stop, both sides keep the socket).
  cutKinds: pick([["close"], ["close", "reset"], ["close", "reset", "stall"], ["stall", "reset"]]),
  restartAtMs: int(Math.floor(chaosMs * 0.3), Math.floor(chaosMs * 0.6)),
  restartSignal: pick(["SIGTERM", "SIGKILL"]),
  authzSilentMs: int(500, 3000),
  fetchLatencyMs: [0, int(0, 40)],
};

const stats = { ops: 0, publishRetries: 0, cuts: 0, storms: 0, stalls: 0, authzSilenced: 0, authzAnswered: 0, restartMs: 0, maxLagMs: 0 };
const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
});

// --- the domain service: its data (the truth) and its API ------------------

// The truth is what the publisher was acknowledged for: each board's tasks,
// changed first in the domain's own store and then published, retried with
// the same Nats-Msg-Id until the stream acknowledges it (a publish lost in
// the restart is stored once, never twice). Publishes of one board are
// sequential, so the order of acks is the order in the stream.
class Domain {
  constructor(boards) {
    this.tasks = new Map(boards.map((b) => [b, new Map()]));
    this.acks = new Map(boards.map((b) => [b, { seqs: [], at: [] }]));
    this.log = new Map(boards.map((b) => [b, []])); // the envelopes acknowledged, in stream order
    this.clock = 0;
    this.next = 0;
  }
  now() {
    return (this.clock = Math.max(this.clock + 1, Date.now()));
  }
  async fetchAll(board) {
    await sleep(between(...plan.fetchLatencyMs));
    return [...this.tasks.get(board).values()].map((t) => ({ ...t }));
  }
  async fetchByIds(board, ids) {
    await sleep(between(...plan.fetchLatencyMs));
    const m = this.tasks.get(board);
    return ids.filter((id) => m.has(id)).map((id) => ({ ...m.get(id) }));
  }
  acked(board, seq, env) {
    this.log.get(board).push(env);
    const a = this.acks.get(board);
    if (a.seqs.length && seq <= a.seqs.at(-1)) throw new Error(`board ${board}: ack seq ${seq} after ${a.seqs.at(-1)}`);
    a.seqs.push(seq);
    a.at.push(Date.now());
  }
  lastSeq(board) {
    return this.acks.get(board).seqs.at(-1) ?? 0;
  }
  // firstMissed is when the first acknowledged publish after seq was acknowledged (undefined: none).
  firstMissed(board, seq) {
    const { seqs, at } = this.acks.get(board);
    let lo = 0, hi = seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seqs[mid] <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo < seqs.length ? at[lo] : undefined;
  }
  view(board) {
    return sorted(this.tasks.get(board).values());
  }
  // truth replays the envelopes the stream acknowledged: what every store must hold in the end.
  truth(board) {
    const m = new Map();
    for (const env of this.log.get(board)) {
      if (env.event === "create-task") m.set(env.id, { ...env.data, id: env.id, updatedAt: env.updatedAt });
      else if (env.event === "update-task") m.set(env.id, { ...m.get(env.id), ...env.diff, updatedAt: env.updatedAt });
      else m.delete(env.id);
    }
    return sorted(m.values());
  }
}

function sorted(tasks) {
  return [...tasks].sort((a, b) => a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : 1));
}

// Titles of whole code points (one to four UTF-8 bytes each), from a pool.
const CHARS = Array.from("abcdefghijklmnopqrstuvwxyz ÄÖÜ€ü🙂\"\\");
const POOL = Array.from({ length: 20000 }, () => CHARS[Math.floor(rnd() * CHARS.length)]);
const title = () => {
  const n = int(0, plan.titleMax);
  const at = int(0, POOL.length - n);
  return POOL.slice(at, at + n).join("");
};
const subject = (room) => "rooms." + room.replace(/-/g, ".");

async function publishUntilAcked(js, subj, env, msgID, deadline) {
  for (;;) {
    try {
      return await js.publish(subj, jc.encode(env), { msgID, timeout: 2000 });
    } catch (err) {
      stats.publishRetries++;
      if (Date.now() > deadline) throw new Error(`publish ${msgID} not acknowledged: ${err.message}`);
      await sleep(between(20, 200));
    }
  }
}

// publisher creates, updates and deletes one board's tasks until stop().
async function publisher(js, domain, board, isRunning, deadline) {
  const tasks = domain.tasks.get(board);
  const room = rooms.boardTasks(board);
  while (isRunning()) {
    const ids = [...tasks.keys()];
    const r = rnd();
    let env;
    if (ids.length < 3 || (ids.length < 150 && r < 0.4)) {
      const id = `t${domain.next++}`;
      const t = { id, title: title(), done: false, n: 0, updatedAt: domain.now() };
      tasks.set(id, t);
      env = { event: "create-task", id, updatedAt: t.updatedAt, data: { title: t.title, done: false, n: 0 } };
    } else if (r < 0.85) {
      const id = pick(ids);
      const cur = tasks.get(id);
      const diff = {};
      if (rnd() < 0.6) diff.title = title();
      if (rnd() < 0.5) diff.done = !cur.done;
      diff.n = cur.n + 1;
      const t = { ...cur, ...diff, updatedAt: domain.now() };
      tasks.set(id, t);
      env = { event: "update-task", id, updatedAt: t.updatedAt, diff };
    } else {
      const id = pick(ids);
      tasks.delete(id);
      env = { event: "delete-task", id, updatedAt: domain.now() };
    }
    const ack = await publishUntilAcked(js, subject(room), env, `${board}-${stats.ops++}`, deadline);
    domain.acked(board, ack.seq, env);
    const wait = Math.max(between(...plan.opWaitMs), (plan.boards * 1000) / plan.maxRate);
    if (wait >= 1) await sleep(wait);
    else await new Promise((ok) => setImmediate(ok));
  }
}

// --- the network: a TCP proxy that cuts ------------------------------------

// --- the clients -------------------------------------------------------------

// Each client knows when its socket last connected (undefined: it is not
// connected), what it holds per board (a store and a last seq), and the
// longest it stayed connected while behind.
function libClient(name, user, boards, url, token, domain) {
  const errors = {};
  const c = connect(url, {
    token: () => token(user),
    storage: null,
    visibility: false,
    ioOptions: { reconnectionDelay: int(50, 500), reconnectionDelayMax: int(1000, 3000), forceNew: true },
    sync: { retryMs: 100, retryMaxMs: 1000, pageLimit: pick([25, 100, 500]) },
  });
  const client = { name, kind: "lib", user, boards: new Map(), errors, connects: 0, connectedSince: undefined, maxLagMs: 0 };
  c.socket.on("connect", () => (client.connects++, (client.connectedSince = Date.now())));
  c.socket.on("disconnect", () => (client.connectedSince = undefined));
  for (const b of boards) {
    const col = c.collection(rooms.boardTasks(b), {
      fetchAll: () => domain.fetchAll(b),
      fetchByIds: (ids) => domain.fetchByIds(b, ids),
      onError: (e) => (errors[e?.code ?? e?.message] = (errors[e?.code ?? e?.message] ?? 0) + 1),
    });
    client.boards.set(b, { store: col.store, lastSeq: () => col.room.lastSeq, status: () => col.room.status });
  }
  client.connected = () => c.connected;
  client.close = () => c.close();
  return client;
}

// A client on the bare socket.io-client: the seed's frontend behaviour
// written again, without the library, so the server is checked by two
// independent readers. Per board: join, read what it missed since its last
// seq (or take a snapshot on the first join), apply broadcasts that follow
// it, resync on a gap.
function bareClient(name, user, boards, url, token, domain, polling) {
  const errors = {};
  const pageLimit = pick([50, 200, 1000]);
  // The stock client's transports: WebSocket alone, long-polling alone
  // (behind a proxy that blocks WebSocket), or its default: polling, then the upgrade.
  let transports = pick([["websocket"], ["polling"], ["polling", "websocket"]]);
  if (!polling) transports = ["websocket"];
  const sock = io(url, {
    transports,
    auth: (cb) => cb({ token: token(user) }),
    forceNew: true,
    reconnectionDelay: int(50, 500),
    reconnectionDelayMax: int(1000, 3000),
  });
  const client = { name, kind: `bare ${transports.join("+")}`, user, boards: new Map(), errors, connects: 0, connectedSince: undefined, maxLagMs: 0 };
  const state = new Map();
  const error = (e) => (errors[e?.code ?? e?.message] = (errors[e?.code ?? e?.message] ?? 0) + 1);
  for (const b of boards) {
    const st = { store: new ResourceStore(), lastSeq: undefined, joined: false, syncing: false, again: false, queue: [], timer: undefined };
    state.set(rooms.boardTasks(b), { board: b, st });
    client.boards.set(b, { store: st.store, lastSeq: () => st.lastSeq, status: () => (st.joined ? (st.syncing ? "syncing" : "joined") : "joining") });
  }
  const call = async (endpointName, endpointArgs) => {
    const ack = await sock.timeout(5000).emitWithAck("endpoint", { endpointName, endpointArgs });
    if (!ack?.ok) throw Object.assign(new Error(`${endpointName}: ${ack?.error?.code}`), { code: ack?.error?.code, retryAfterMs: ack?.error?.retryAfterMs });
    return ack.data;
  };
  // A page refused as rate_limited is asked again from its cursor.
  const page = async (args) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call("getChangesSince", args);
      } catch (e) {
        if (e.code !== "rate_limited" || attempt >= 8 || !sock.connected) throw e;
        error(e);
        await sleep(Math.max(e.retryAfterMs ?? 0, 100 * attempt + Math.random() * 100));
      }
    }
  };
  const later = (st, fn) => {
    clearTimeout(st.timer);
    st.timer = setTimeout(() => sock.connected && fn(), 100 + Math.random() * 400);
  };
  const apply = (board, st, env) => {
    if (st.store.apply(env) === "missing") {
      domain.fetchByIds(board, [env.id]).then((got) => st.store.upsertMany(got), error);
    }
  };
  const join = async (room) => {
    const { board, st } = state.get(room);
    try {
      await call("addToRoom", { roomName: room });
      st.joined = true;
      await sync(room);
    } catch (e) {
      error(e);
      if (!st.joined) later(st, () => join(room));
    }
  };
  const snapshot = async (room, board, st, floor) => {
    const s = await call("getRoomState", { roomName: room });
    // The domain writes before it publishes: a snapshot taken after the
    // state was read holds everything up to its seq.
    st.store.replaceAll(await domain.fetchAll(board));
    return Math.max(s?.seq ?? 0, floor);
  };
  const sync = async (room) => {
    const { board, st } = state.get(room);
    if (st.syncing) {
      st.again = true;
      return;
    }
    st.syncing = true;
    try {
      do {
        st.again = false;
        // Broadcasts queued so far were stored before this read: the read covers them.
        const floor = st.queue.reduce((m, b) => Math.max(m, b.seq), 0);
        if (st.lastSeq === undefined) {
          st.lastSeq = await snapshot(room, board, st, floor);
        } else if (st.queue.length && st.queue[0].seq - st.lastSeq > FAR_BEHIND) {
          // Far behind (a long cut at a high publish rate): the board read
          // whole, as a frontend would, not page after page at the user's
          // call budget (40 a second: seconds for thousands of changes).
          st.lastSeq = await snapshot(room, board, st, floor);
        } else {
          const latest = new Map();
          let last = st.lastSeq;
          let complete = true;
          let cursor = { afterSeq: st.lastSeq };
          while (cursor) {
            const r = await page({ roomName: room, ...cursor, limit: pageLimit });
            if (!r.complete) complete = false;
            for (const ch of r.changes ?? []) {
              if ((latest.get(ch.id)?.seq ?? -1) < ch.seq) latest.set(ch.id, ch);
              last = Math.max(last, ch.seq);
            }
            if (r.next?.afterSeq !== undefined) last = Math.max(last, r.next.afterSeq);
            cursor = r.next;
            // Read as far as the queued broadcasts do not reach, not to the
            // stream's end (which moves on while the pages are read).
            const target = readTarget(st.queue);
            if (target !== undefined && last >= target) break;
          }
          if (!complete) {
            st.lastSeq = await snapshot(room, board, st, floor);
          } else {
            const ups = [];
            for (const ch of latest.values()) {
              if (ch.deleted) st.store.remove(ch.id, ch.updatedAt);
              else ups.push(ch);
            }
            if (ups.length) {
              const got = await domain.fetchByIds(board, ups.map((u) => u.id));
              st.store.upsertMany(got);
              const have = new Set(got.map((t) => t.id));
              for (const u of ups) if (!have.has(u.id)) st.store.remove(u.id, u.updatedAt);
            }
            // Read to the end, the read covers the queued broadcasts;
            // cut short where their chain takes over, only up to last:
            // the chain carries on from there (a recovered session's
            // replay queues what it missed before the read).
            st.lastSeq = cursor ? last : Math.max(last, floor);
          }
        }
        const queued = st.queue;
        st.queue = [];
        for (const [i, b] of queued.entries()) {
          if (b.seq <= st.lastSeq) continue;
          if (b.prevSeq !== st.lastSeq) {
            st.queue.push(...queued.slice(i));
            st.again = true;
            break;
          }
          st.lastSeq = b.seq;
          apply(board, st, b.data);
        }
      } while (st.again);
    } catch (e) {
      error(e);
      st.again = false;
      later(st, () => sync(room));
    } finally {
      st.syncing = false;
    }
  };
  sock.on("connect", () => {
    client.connects++;
    client.connectedSince = Date.now();
    for (const room of state.keys()) void join(room);
  });
  sock.on("disconnect", () => {
    client.connectedSince = undefined;
    for (const { st } of state.values()) {
      st.joined = false;
      st.queue = []; // the old subscription's: the next read covers them
      clearTimeout(st.timer);
    }
  });
  sock.on("broadcast", (b) => {
    const entry = state.get(b?.destination);
    if (!entry) return;
    const { board, st } = entry;
    if (!st.joined || st.syncing || st.lastSeq === undefined) return void st.queue.push(b);
    if (b.seq <= st.lastSeq) return;
    if (b.prevSeq !== st.lastSeq) {
      st.queue.push(b);
      return void sync(b.destination);
    }
    st.lastSeq = b.seq;
    apply(board, st, b.data);
  });
  client.connected = () => sock.connected;
  client.close = () => sock.close();
  return client;
}

// readTarget is how far a read must go so that the queued broadcasts carry
// the rest: the prevSeq of the first one after which their prevSeq chain is
// unbroken; undefined when none is queued.
function readTarget(queue) {
  if (queue.length === 0) return undefined;
  let target = queue[0].prevSeq;
  let last = queue[0].seq;
  for (const b of queue.slice(1)) {
    if (b.seq <= last) continue;
    if (b.prevSeq !== last) target = b.prevSeq;
    last = b.seq;
  }
  return target;
}

// --- checks ------------------------------------------------------------------

const canonical = (list) => JSON.stringify(list.map((r) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)))));

// sampleLag finds clients connected for longer than MAX_LAG_MS that still
// miss a publish acknowledged more than MAX_LAG_MS ago. While the
// authorizer is silent no client can join a board, so the clock of a lag
// starts no earlier than the moment it answers again (answeringSince).
function sampleLag(clients, domain, violations, answeringSince) {
  const now = Date.now();
  if (now < answeringSince) return;
  for (const c of clients) {
    if (c.connectedSince === undefined || !c.connected()) continue;
    for (const [b, h] of c.boards) {
      const missedAt = domain.firstMissed(b, h.lastSeq() ?? 0);
      if (missedAt === undefined) continue;
      const lag = now - Math.max(missedAt, c.connectedSince, answeringSince);
      c.maxLagMs = Math.max(c.maxLagMs, lag);
      if (lag <= stats.maxLagMs && lag <= MAX_LAG_MS) continue;
      const key = `${c.name} board ${b}`;
      const what = `${key}: connected and behind for ${lag} ms (holds seq ${h.lastSeq()}, acknowledged ${domain.lastSeq(b)}, status ${h.status()}, connected ${now - c.connectedSince} ms ago)`;
      if (lag > stats.maxLagMs) [stats.maxLagMs, stats.maxLag] = [lag, what];
      if (lag > MAX_LAG_MS && lag > (violations.get(key)?.lag ?? 0)) violations.set(key, { lag, what });
    }
  }
}

function converged(c, truths) {
  return c.connected() && [...c.boards].every(([b, h]) => canonical(h.store.all()) === truths.get(b));
}

function table(clients, domain) {
  const rows = clients.map((c) => {
    const row = { client: c.name, kind: c.kind, connected: c.connected(), connects: c.connects, maxLagMs: c.maxLagMs };
    row.boards = [...c.boards]
      .map(([b, h]) => {
        const ok = canonical(h.store.all()) === canonical(domain.truth(b));
        return `${b}:${ok ? "ok" : "DIFF"} seq ${h.lastSeq() ?? "-"}/${domain.lastSeq(b)} n ${h.store.size}/${domain.tasks.get(b).size} ${h.status()}`;
      })
      .join("; ");
    row.errors = Object.entries(c.errors).map(([k, v]) => `${k}×${v}`).join(" ");
    return row;
  });
  return rows.map((r) => `${r.client.padEnd(8)} ${r.kind.padEnd(22)} connected=${r.connected} connects=${r.connects} maxLag=${r.maxLagMs}ms | ${r.boards} | ${r.errors}`).join("\n");
}

function diffSample(clients, domain) {
  for (const c of clients) {
    for (const [b, h] of c.boards) {
      const have = new Map(h.store.all().map((t) => [t.id, t]));
      const want = new Map(domain.truth(b).map((t) => [t.id, t]));
      const out = [];
      for (const [id, t] of want) {
        const got = have.get(id);
        if (!got) out.push(`${id} missing (updatedAt ${t.updatedAt})`);
        else if (canonical([got]) !== canonical([t])) out.push(`${id} differs: held updatedAt ${got.updatedAt} n ${got.n}, truth ${t.updatedAt} n ${t.n}`);
      }
      for (const [id, t] of have) if (!want.has(id)) out.push(`${id} held but deleted (held updatedAt ${t.updatedAt})`);
      if (out.length) return `first difference: ${c.name} board ${b}: ${out.slice(0, 5).join("; ")}`;
    }
  }
  return "";
}

test(`chaos: every client converges through cuts, storms, a restart and a silent authorizer (seed ${SEED})`, { timeout: 150000 }, async () => {
  const started = Date.now();
  console.log(`chaos seed ${SEED} (rerun with CHAOS_SEED=${SEED}): ${JSON.stringify(plan)}`);
  const stack = await startStack({
    env: { ROOMCAST_PING_INTERVAL: "1s", ROOMCAST_PING_TIMEOUT: "1s", ROOMCAST_DRAIN_GRACE: "1s" },
  });
  cleanup.push(() => stack.stop());
  const natsOpts = { maxReconnectAttempts: -1, reconnectTimeWait: 100, pingInterval: 2000 };

  // The authorizer: allows everyone, but says nothing while silentUntil is ahead.
  let silentUntil = 0;
  const authzNc = await nats(stack, natsOpts);
  cleanup.push(() => authzNc.close());
  const authzSub = authzNc.subscribe("authz.join");
  (async () => {
    for await (const m of authzSub) {
      if (Date.now() < silentUntil) {
        stats.authzSilenced++;
        continue;
      }
      stats.authzAnswered++;
      m.respond(jc.encode({ allow: true }));
    }
  })();

  const boards = Array.from({ length: plan.boards }, (_, i) => `c${i}`);
  const domain = new Domain(boards);
  const proxy = await tcpProxy(stack.httpPort);
  const cut = (pair, kind) => {
    stats.cuts++;
    if (kind === "stall") stats.stalls++;
    proxy.cut(pair, kind);
  };
  cleanup.push(() => proxy.close());

  // Long-polling is used by some bare clients once the gateway serves it (issue 15).
  const polling = (await fetch(`${stack.httpURL}/socket.io/?EIO=4&transport=polling`)).status === 200;
  if (!polling) console.log("the gateway does not serve long-polling: every bare client uses WebSocket");
  const clients = [];
  cleanup.push(async () => clients.forEach((c) => c.close()));
  const subset = () => boards.filter(() => rnd() < 0.6);
  for (let i = 0; i < plan.libClients; i++) {
    const mine = subset();
    clients.push(libClient(`lib${i}`, `u${i % Math.ceil(plan.libClients / 2)}`, mine.length ? mine : [pick(boards)], proxy.url, stack.token, domain));
  }
  for (let i = 0; i < plan.bareClients; i++) {
    clients.push(bareClient(`bare${i}`, `bare${i}`, boards, proxy.url, stack.token, domain, polling));
  }

  // The publisher.
  const pubNc = await nats(stack, natsOpts);
  cleanup.push(() => pubNc.close());
  const js = pubNc.jetstream();
  let publishing = true;
  const publishDeadline = Date.now() + chaosMs + 30000;
  const publishers = Promise.all(boards.map((b) => publisher(js, domain, b, () => publishing, publishDeadline)));

  // The lag sampler.
  const violations = new Map(); // client and board → the longest lag beyond MAX_LAG_MS
  const sampler = setInterval(() => sampleLag(clients, domain, violations, silentUntil), 200);
  cleanup.push(async () => clearInterval(sampler));

  // The chaos: random cuts, storms, one restart.
  const chaosEnd = Date.now() + chaosMs;
  let chaos = true;
  const cutter = (async () => {
    while (chaos) {
      await sleep(between(...plan.cutWaitMs));
      const live = [...proxy.pairs].filter((p) => !p.stalled);
      if (chaos && live.length) cut(pick(live), pick(plan.cutKinds));
    }
  })();
  const stormer = (async () => {
    while (chaos) {
      await sleep(between(...plan.stormWaitMs));
      if (!chaos) break;
      stats.storms++;
      const share = between(...plan.stormShare);
      for (const p of [...proxy.pairs]) if (!p.stalled && rnd() < share) cut(p, pick(plan.cutKinds));
    }
  })();
  // Connection state recovery's results (roomcast_gateway_recoveries_total),
  // summed over the server's two lives: how many reconnects were recovered.
  const recoveries = {};
  const countRecoveries = async () => {
    try {
      const text = await (await fetch(`${stack.httpURL}/metrics`)).text();
      for (const m of text.matchAll(/^roomcast_gateway_recoveries_total\{result="(\w+)"\} (\d+)/gm)) recoveries[m[1]] = (recoveries[m[1]] ?? 0) + Number(m[2]);
    } catch {
      // the server is down: counted at the next
    }
  };
  const restarter = (async () => {
    await sleep(plan.restartAtMs);
    await countRecoveries();
    silentUntil = Infinity;
    const t0 = Date.now();
    const exit = await stack.restart({ signal: plan.restartSignal });
    stats.restartMs = Date.now() - t0;
    stats.restartExit = exit;
    silentUntil = Date.now() + plan.authzSilentMs;
  })();

  while (Date.now() < chaosEnd && stack.unexpectedExits.length === 0) await sleep(100);
  chaos = false;
  await Promise.all([cutter, stormer, restarter]);
  publishing = false;
  await publishers;
  // The network heals: stalled connections are closed, so their clients reconnect now.
  for (const p of [...proxy.pairs]) if (p.stalled) p.down.destroy(), p.up.destroy();

  // The truth: the acknowledged envelopes replayed. The domain's own data,
  // which the clients fetched from, must be the same.
  const truths = new Map(boards.map((b) => [b, canonical(domain.truth(b))]));
  const failures = [];
  for (const b of boards) if (truths.get(b) !== canonical(domain.view(b))) failures.push(`board ${b}: the domain's data is not what the stream acknowledged (a bug of this test)`);

  const healed = Date.now();
  while (Date.now() - healed < CONVERGE_MS && stack.unexpectedExits.length === 0 && !clients.every((c) => converged(c, truths))) await sleep(100);
  const convergedMs = Date.now() - healed;
  sampleLag(clients, domain, violations, silentUntil);
  clearInterval(sampler);

  await countRecoveries();
  const errorLines = stack.logs().split("\n").filter((l) => l.includes('"level":"error"')).length;
  const summary = `chaos seed ${SEED}: ${stats.ops} publishes (${stats.publishRetries} retried), ${stats.cuts} cuts (${stats.stalls} stalls) in ${stats.storms} storms and between, restart by ${plan.restartSignal} took ${stats.restartMs} ms (stopped in ${stats.restartExit?.stoppedMs}, ready in ${stats.restartExit?.readyMs}), authz silenced ${stats.authzSilenced} and answered ${stats.authzAnswered} joins, max lag of a connected client ${stats.maxLagMs} ms${stats.maxLag ? ` (${stats.maxLag})` : ""}, converged ${convergedMs} ms after the chaos, reconnects asking for their session: ${Object.entries(recoveries).map(([k, v]) => `${k} ${v}`).join(", ") || "none"}, ${errorLines} error lines in the server's log, ${((Date.now() - started) / 1000).toFixed(1)} s in all`;
  console.log(summary);
  for (const e of stack.unexpectedExits) failures.push(`the server exited by itself (code ${e.code}, signal ${e.signal}) at ${e.at}:\n${e.logs}`);
  // A panic stopped at a handler's boundary (process/panicguard) keeps the
  // process up, but it is a bug all the same.
  const panics = stack.logs().split("\n").filter((l) => /panic/i.test(l));
  if (panics.length) failures.push(`the server logged ${panics.length} panics, the first:\n${panics[0].slice(0, 4000)}`);
  const behind = clients.filter((c) => !converged(c, truths));
  if (behind.length) failures.push(`${behind.length} of ${clients.length} clients do not hold the truth ${CONVERGE_MS} ms after the chaos; ${diffSample(behind, domain)}`);
  if (violations.size) failures.push(`connected clients stayed behind for more than ${MAX_LAG_MS} ms:\n  ${[...violations.values()].map((v) => v.what).join("\n  ")}`);
  if (failures.length) {
    console.log(`per client (seq held/acknowledged, tasks held/true):\n${table(clients, domain)}`);
    console.log(`server logs (end):\n${stack.logs().slice(-6000)}`);
  }
  assert.deepEqual(failures, [], `${summary}\n${failures.join("\n")}`);
});
