// The seed's "Frontend behavior" for one room: after every join, every
// reconnect and every detected gap, bring the app up to date, and deliver
// broadcasts in order meanwhile. Independent of the socket (it is given a
// function that calls endpoints), so its decisions are unit-tested alone.
import type { Broadcast, Change, Cursor, EndpointArgs, EndpointName, EndpointResults, Envelope, RoomState } from "./contract.js";
import { RoomcastError } from "./errors.js";
import { classify } from "./gap.js";
import type { SyncStyle } from "./rooms.js";

/** Calls one endpoint and resolves with its ack data, or rejects with a RoomcastError. */
export type Caller = <E extends EndpointName>(name: E, args: EndpointArgs[E]) => Promise<EndpointResults[E]>;

/** What a resync of a board's children room found. */
export interface ChangeSet {
  /** Resources created or changed since the cursor: fetch them (by id) and upsert. */
  upserts: Change[];
  /** Resources deleted since the cursor: remove them. */
  deletions: Change[];
}

/**
 * Why a room was brought up to date: "recovered" is a reconnect the
 * gateway recovered (nothing was read: the broadcasts the socket missed
 * follow as ordinary ones, in order).
 */
export type SyncReason = "join" | "reconnect" | "gap" | "manual" | "retry" | "recovered";

/**
 * Where a room stands:
 * - joining: waiting for the socket, or addToRoom and the first resync after it are under way;
 * - joined: in the room and synced; live broadcasts are applied (a gap's resync may be running);
 * - retrying: the last join or resync failed with an answer that may change
 *   (unavailable, rate_limited, a timeout: e.g. the authorizer has not
 *   answered yet after a restart); it is tried again after a backoff;
 * - failed: the gateway's answer is final (forbidden, invalid_argument): no
 *   retry until the next reconnect or a manual resync.
 */
export type RoomStatus = "joining" | "joined" | "retrying" | "failed";

/** How many times one page of history is asked for while the answer is rate_limited. */
const MAX_PAGE_ATTEMPTS = 8;

/** Error codes that a retry cannot change. */
const FINAL_CODES: ReadonlySet<string> = new Set(["forbidden", "invalid_argument"]);

/** isFinal says whether err is an answer that retrying cannot change. */
export function isFinal(err: unknown): boolean {
  return err instanceof RoomcastError && FINAL_CODES.has(err.code);
}

export interface RoomHandlers {
  /** Every broadcast to the room, in stream order, also those that arrived while a resync ran. */
  onEvent?(data: Envelope, broadcast: Broadcast): void;
  /**
   * Resource rooms (user-, org-, board-): the updatedAt of the resource the
   * app holds, compared with the room's lastBroadcastTimestamp.
   */
  updatedAt?(): number | undefined;
  /**
   * Fetch the room's data whole from the domain API: a resource room whose
   * resource is out of date; a children room on its first join (no cursor)
   * or when history no longer reaches back (complete:false); a chat whose
   * history no longer reaches back.
   */
  refetch?(): unknown | Promise<unknown>;
  /** Children rooms (board-B-tasks, -sprints): what changed since the cursor. */
  onChanges?(changes: ChangeSet): unknown | Promise<unknown>;
  /** Chat rooms: messages since the cursor, in stream order (may repeat some already seen). */
  onMessages?(messages: Envelope[]): void;
  /** A failed join, resync or hook. The room keeps going: it retries later. */
  onError?(err: unknown): void;
  /**
   * After each resync: why it ran and the room's last seq now. Also when a
   * recovered reconnect took the room up where it stood (reason
   * "recovered", nothing read or refetched): from then on the room is in
   * step, as after a resync.
   */
  onSynced?(info: { reason: SyncReason; lastSeq: number; refetched: boolean }): void;
  /**
   * Where the app's data already stands, for children and chat rooms: a
   * seq (exact) or a publisher time. Without it the first join refetches
   * whole (children) or reads all of the stream's history (chat).
   */
  cursor?: Cursor;
}

export interface RoomSyncOptions {
  /** Entries per getChangesSince / getChatMessagesSince page. Default 500. */
  pageLimit?: number;
  /**
   * Most pages one resync follows before it refetches whole instead.
   * Default 20: each page is one call of the socket's budget (20 a second
   * by default, shared by its rooms), so a room far behind is brought up to
   * date sooner by one refetch than by paging through thousands of changes.
   */
  maxPages?: number;
  /**
   * Delay before retrying a failed join or resync, doubled after each
   * failure up to retryMaxMs (default 500 and 5000, socket.io-client's own
   * reconnection bounds); each wait is drawn
   * between half of that step and all of it, so rooms that failed together
   * (a gateway restart) do not retry together.
   */
  retryMs?: number;
  retryMaxMs?: number;
  /** Most broadcasts held while a room resyncs or waits to; beyond, they are dropped and read again. Default 10000. */
  maxQueued?: number;
  /** A number in [0, 1) for the jitter, replaceable in tests. Default Math.random. */
  random?: () => number;
  /** Timers, replaceable in tests. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (t: unknown) => void;
}

/**
 * RoomSync keeps one room in step: join() joins it (addToRoom, retried
 * until joined or refused for good) and resyncs it; pause() says the socket
 * is gone. Used alone, without join(), resync() brings an already joined
 * room up to date.
 */
export class RoomSync {
  /** The last seq the app holds for the room; undefined before the first sync. */
  lastSeq: number | undefined;
  private _status: RoomStatus = "joining";
  private lastError: unknown;
  private initial: Cursor | undefined;
  private running: Promise<void> | undefined;
  private again: { reason: SyncReason } | undefined;
  private queue: Broadcast[] = [];
  private failures = 0;
  private retryTimer: unknown;
  private stopped = false;
  // online: the socket is up (pause() clears it, join() sets it).
  // needsJoin: the room must be joined (again) before it can be resynced.
  // epoch: bumped by join() and pause(), so that an answer to a call made
  // for an earlier socket changes nothing.
  private online = true;
  private needsJoin = false;
  private epoch = 0;
  // held: this session's socket is in the room on the server (an addToRoom
  // succeeded, or a recovered session kept it). resumeAs: what pause() saw,
  // for resume(): "in-step" (held, joined, no resync running: the missed
  // broadcasts alone bring it up to date), "resync" (held, but it was
  // behind: a resync was running or waiting for its retry), undefined (not
  // held: join again).
  private held = false;
  private resumeAs: "in-step" | "resync" | undefined;
  private waiters: { ok: () => void; fail: (err: unknown) => void }[] = [];
  private readonly statusListeners = new Set<(status: RoomStatus, err?: unknown) => void>();
  private readonly o: Required<Omit<RoomSyncOptions, "setTimeout" | "clearTimeout">> & Pick<RoomSyncOptions, "setTimeout" | "clearTimeout">;

  constructor(
    readonly name: string,
    readonly style: SyncStyle,
    private readonly handlers: RoomHandlers,
    private readonly call: Caller,
    opts: RoomSyncOptions = {},
  ) {
    this.initial = handlers.cursor;
    if (handlers.cursor?.afterSeq !== undefined) this.lastSeq = handlers.cursor.afterSeq;
    this.o = { pageLimit: 500, maxPages: 20, retryMs: 500, retryMaxMs: 5000, maxQueued: 10000, random: Math.random, ...opts };
  }

  /** True while a resync runs (broadcasts are queued meanwhile). */
  get syncing(): boolean {
    return this.running !== undefined;
  }

  get status(): RoomStatus {
    return this._status;
  }

  /** onStatus calls fn on every status change (every retry too), with the error that caused it. */
  onStatus(fn: (status: RoomStatus, err?: unknown) => void): () => void {
    this.statusListeners.add(fn);
    return () => this.statusListeners.delete(fn);
  }

  /**
   * ready resolves when the room is joined and synced (at once when it is
   * and no resync runs), and rejects with the gateway's error when the room
   * failed for good, or when it is left.
   */
  ready(): Promise<void> {
    if (this.stopped) return Promise.reject(new RoomcastError("disconnected", "the room was left"));
    if (this._status === "joined" && !this.running) return Promise.resolve();
    if (this._status === "failed") return Promise.reject(this.lastError);
    return new Promise((ok, fail) => this.waiters.push({ ok, fail }));
  }

  /**
   * join joins the room on a connected socket and resyncs it, retrying
   * with backoff until it is joined or the answer is final. The promise
   * settles when this attempt ends, not when the room is joined: ready()
   * says that.
   */
  join(reason: SyncReason): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.resumeAs = undefined;
    // What was queued came on the old session's subscription: the read
    // after this join must not take it for the start of the new one (see
    // readTarget). A recovered session continues that subscription, so
    // resume() keeps it.
    this.queue = [];
    this.epoch++;
    this.online = true;
    this.needsJoin = true;
    this.cancelRetry();
    this.setStatus("joining");
    return this.attemptJoin(this.epoch, reason);
  }

  /**
   * pause says the socket is gone: the room is joined again at the next
   * join(), or taken up where it stood by resume(); no retry until then.
   */
  pause(): void {
    if (this.stopped) return;
    if (this.online) {
      const held = this.held && !this.needsJoin;
      this.resumeAs = !held ? undefined : this._status === "joined" && !this.running && this.lastSeq !== undefined ? "in-step" : "resync";
    }
    this.held = false;
    this.epoch++;
    this.online = false;
    this.needsJoin = true;
    this.cancelRetry();
    if (this._status !== "failed") this.setStatus("joining");
  }

  /**
   * resume says the socket came back and the server recovered its session
   * (socket.io's connection state recovery): the server kept every room the
   * socket was in and sends the broadcasts it missed as ordinary ones, in
   * order. A room that was in step is not joined again nor resynced: those
   * broadcasts take it on from its last seq, and one whose prevSeq does not
   * follow still starts a resync. A room the server held but that was
   * behind (a resync running or retrying) resyncs without joining again; a
   * room the socket was not in (never joined, failed, tracked while away) is
   * joined as after any reconnect.
   */
  resume(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    const as = this.resumeAs;
    this.resumeAs = undefined;
    if (as === undefined) return this.join("reconnect");
    this.epoch++;
    this.online = true;
    this.needsJoin = false;
    this.held = true;
    this.cancelRetry();
    if (as === "resync") return this.resync("reconnect");
    this.setStatus("joined");
    const lastSeq = this.lastSeq ?? 0;
    this.safe(() => this.handlers.onSynced?.({ reason: "recovered", lastSeq, refetched: false }));
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.ok();
    return Promise.resolve();
  }

  /**
   * refresh brings the room up to date now: joins it again when it is not
   * in it (it failed, or a join is waiting for its retry), resyncs it
   * otherwise. Nothing happens while the socket is down: the next join
   * does it.
   */
  refresh(reason: SyncReason): Promise<void> {
    if (this.stopped || !this.online) return Promise.resolve();
    if (!this.needsJoin) return this.resync(reason);
    this.epoch++;
    this.cancelRetry();
    // A retry stays "retrying" until it succeeds; a failed room joined again by hand is joining.
    if (this._status === "failed") this.setStatus("joining");
    return this.attemptJoin(this.epoch, reason);
  }

  private async attemptJoin(epoch: number, reason: SyncReason): Promise<void> {
    let ack: EndpointResults["addToRoom"];
    try {
      ack = await this.call("addToRoom", { roomName: this.name });
    } catch (err) {
      if (epoch !== this.epoch || this.stopped) return;
      this.failures++;
      this.safe(() => this.handlers.onError?.(err));
      this.failed(err);
      return;
    }
    if (epoch !== this.epoch || this.stopped) return;
    this.needsJoin = false;
    this.held = true;
    const state: RoomState | null =
      ack.seq === null || ack.seq === undefined ? null : { seq: ack.seq, lastBroadcastTimestamp: ack.lastBroadcastTimestamp ?? 0 };
    await this.resync(reason, state);
  }

  // failed decides what a failed join or resync leads to: a final answer
  // stops the room, anything else is retried after a backoff.
  private failed(err: unknown): void {
    this.lastError = err;
    if (isFinal(err)) {
      this.needsJoin = true;
      this.setStatus("failed", err);
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w.fail(err);
      return;
    }
    this.setStatus("retrying", err);
    this.scheduleRetry();
  }

  private setStatus(s: RoomStatus, err?: unknown): void {
    if (this._status === s && s !== "retrying") return;
    this._status = s;
    for (const fn of this.statusListeners) this.safe(() => fn(s, err));
  }

  /**
   * onBroadcast takes a broadcast to this room: delivered at once when it
   * follows the last seq held, queued while a resync runs, and a resync is
   * started when it shows a gap.
   */
  onBroadcast(b: Broadcast): void {
    if (this.stopped) return;
    // Until a resync succeeds (joining, retrying) what is held is not a
    // base to apply broadcasts to: the next resync covers them.
    if (this.running || this.lastSeq === undefined || this._status !== "joined") {
      this.enqueue(b);
      return;
    }
    this.deliver(b);
  }

  // enqueue holds a broadcast for after the next resync. The queue is
  // bounded: a room that cannot resync for long (the history service is
  // down) while broadcasts flow would otherwise hold them all. Dropping it
  // loses nothing: a resync that starts later reads everything after
  // lastSeq, and after one that was already running the newest broadcast,
  // always kept, shows the gap the dropped ones leave.
  private enqueue(b: Broadcast): void {
    if (this.queue.length >= this.o.maxQueued) this.queue = [];
    this.queue.push(b);
  }

  private deliver(b: Broadcast): void {
    const held = this.lastSeq ?? 0;
    const arrival = classify(held, b);
    if (arrival === "gap") {
      this.enqueue(b);
      void this.resync("gap");
      return;
    }
    if (arrival === "in-order" && b.seq > held) this.lastSeq = b.seq;
    this.safe(() => this.handlers.onEvent?.(b.data, b));
  }

  /**
   * resync brings the room up to date. state is the room state at hand (the
   * addToRoom ack carries it), or undefined to ask getRoomState. Calls made
   * while one runs make it run once more afterwards.
   */
  resync(reason: SyncReason, state?: RoomState | null): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = { reason };
      return this.running;
    }
    this.cancelRetry();
    this.running = this.run(reason, state);
    return this.running;
  }

  /** stop drops queued broadcasts and pending retries (the room was left); ready() rejects from now on. */
  stop(): void {
    this.stopped = true;
    this.epoch++;
    this.queue = [];
    this.cancelRetry();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.fail(new RoomcastError("disconnected", "the room was left"));
  }

  private cancelRetry(): void {
    if (this.retryTimer === undefined) return;
    (this.o.clearTimeout ?? ((t) => clearTimeout(t as ReturnType<typeof setTimeout>)))(this.retryTimer);
    this.retryTimer = undefined;
  }

  private async run(reason: SyncReason, state: RoomState | null | undefined): Promise<void> {
    let epoch = this.epoch;
    let ok = true;
    let error: unknown;
    for (;;) {
      this.again = undefined;
      epoch = this.epoch;
      try {
        await this.once(reason, state);
        this.failures = 0;
        ok = true;
      } catch (err) {
        ok = false;
        error = err;
        this.failures++;
        this.safe(() => this.handlers.onError?.(err));
      }
      // Set by resync() calls made while this one awaited.
      const again = this.again as { reason: SyncReason } | undefined;
      if (!again || this.stopped) break;
      reason = again.reason;
      state = undefined;
    }
    this.running = undefined;
    // The socket went away (or came back) meanwhile: the join that follows
    // decides, and the queue waits for it.
    if (epoch !== this.epoch || this.stopped) return;
    if (!ok) {
      // Keep the queue until a resync succeeds: delivering it on top of a
      // failed one would find the same gap and spin.
      this.failed(error);
      return;
    }
    this.setStatus("joined");
    const queued = this.queue;
    this.queue = [];
    for (const b of queued) {
      if (this.running) {
        this.enqueue(b);
        continue;
      }
      this.deliver(b);
    }
    if (this.running) return; // a delivered broadcast showed a gap: ready() waits for its resync
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.ok();
  }

  private scheduleRetry(): void {
    if (this.stopped || !this.online) return;
    this.cancelRetry();
    const ms = this.backoff(this.failures, this.lastError);
    const set = this.o.setTimeout ?? ((fn, d) => setTimeout(fn, d));
    this.retryTimer = set(() => {
      this.retryTimer = undefined;
      void this.refresh("retry");
    }, ms);
  }

  // once is one resync. Whatever it reads was stored after every broadcast
  // queued so far arrived, so it covers them: their highest seq is a floor
  // for the room's last seq afterwards.
  private async once(reason: SyncReason, state: RoomState | null | undefined): Promise<void> {
    const floor = this.queue.reduce((m, b) => Math.max(m, b.seq), 0);
    const cursor = this.lastSeq;
    let refetched = false;
    let seen = Math.max(cursor ?? 0, floor);
    switch (this.style) {
      case "resource": {
        if (state === undefined) state = await this.call("getRoomState", { roomName: this.name });
        const { updatedAt, refetch } = this.handlers;
        if (state && refetch && decideResource(updatedAt?.(), state) === "refetch") {
          await refetch();
          refetched = true;
        }
        seen = Math.max(seen, state?.seq ?? 0);
        break;
      }
      case "children": {
        seen = Math.max(seen, state?.seq ?? 0);
        const from = cursor !== undefined ? { afterSeq: cursor } : this.initial;
        if (from === undefined) {
          await this.refetchWhole();
          refetched = true;
          break;
        }
        const read = await this.readChanges(from);
        if (!read.complete) {
          await this.refetchWhole();
          refetched = true;
        } else if (read.changes.upserts.length + read.changes.deletions.length > 0) {
          await this.handlers.onChanges?.(read.changes);
        }
        seen = Math.max(seen, read.lastSeq);
        break;
      }
      case "chat": {
        seen = Math.max(seen, state?.seq ?? 0);
        const from = cursor !== undefined ? { afterSeq: cursor } : (this.initial ?? { afterSeq: 0 });
        const read = await this.readChat(from);
        if (read.messages.length > 0) this.safe(() => this.handlers.onMessages?.(read.messages));
        if (!read.complete && this.handlers.refetch) {
          await this.handlers.refetch();
          refetched = true;
        }
        seen = Math.max(seen, read.lastSeq);
        break;
      }
      case "none":
        break;
    }
    this.lastSeq = seen;
    this.initial = undefined;
    this.safe(() => this.handlers.onSynced?.({ reason, lastSeq: seen, refetched }));
  }

  private async refetchWhole(): Promise<void> {
    if (!this.handlers.refetch) return;
    await this.handlers.refetch();
  }

  private async readChanges(from: Cursor): Promise<{ changes: ChangeSet; complete: boolean; lastSeq: number }> {
    const latest = new Map<string, Change>();
    let complete = true;
    let cursor: Cursor | undefined = from;
    let lastSeq = 0;
    for (let page = 0; cursor; page++) {
      if (page >= this.o.maxPages) return { changes: { upserts: [], deletions: [] }, complete: false, lastSeq };
      const r: EndpointResults["getChangesSince"] = await this.page("getChangesSince", {
        roomName: this.name,
        ...cursor,
        limit: this.o.pageLimit,
      } as EndpointArgs["getChangesSince"]);
      if (!r.complete) complete = false;
      for (const c of r.changes ?? []) {
        const had = latest.get(c.id);
        if (!had || c.seq >= had.seq) latest.set(c.id, c);
        lastSeq = Math.max(lastSeq, c.seq);
      }
      if (r.next?.afterSeq !== undefined) lastSeq = Math.max(lastSeq, r.next.afterSeq);
      cursor = r.next;
      if (cursor && this.readEnough(lastSeq)) break;
    }
    return { changes: splitChanges([...latest.values()]), complete, lastSeq };
  }

  private async readChat(from: Cursor): Promise<{ messages: Envelope[]; complete: boolean; lastSeq: number }> {
    const messages: Envelope[] = [];
    let complete = true;
    let cursor: Cursor | undefined = from;
    let lastSeq = 0;
    for (let page = 0; cursor; page++) {
      if (page >= this.o.maxPages) return { messages, complete: false, lastSeq };
      const r: EndpointResults["getChatMessagesSince"] = await this.page("getChatMessagesSince", {
        roomName: this.name,
        ...cursor,
        limit: this.o.pageLimit,
      } as EndpointArgs["getChatMessagesSince"]);
      if (r.complete === false) complete = false;
      messages.push(...(r.messages ?? []));
      if (r.next?.afterSeq !== undefined) lastSeq = Math.max(lastSeq, r.next.afterSeq);
      cursor = r.hasMore ? r.next : undefined;
      if (cursor && this.readEnough(lastSeq)) break;
    }
    return { messages, complete, lastSeq };
  }

  /**
   * readEnough says whether a read that has reached seq may stop: the
   * broadcasts queued since it started carry the rest. Without it a read
   * of a room whose messages come faster than its pages (a small page
   * limit, the socket's call budget) chases the stream's end for ever.
   */
  private readEnough(seq: number): boolean {
    const target = this.readTarget();
    return target !== undefined && seq >= target;
  }

  // readTarget is how far a read must go so that, with the queued
  // broadcasts, nothing is missed: the prevSeq of the queued broadcast
  // after which the queue's prevSeq chain is unbroken (everything the room
  // stored later is in the queue, or will come). Undefined when nothing is
  // queued: the read goes to the end.
  private readTarget(): number | undefined {
    const q = this.queue;
    if (q.length === 0) return undefined;
    let target = q[0]!.prevSeq;
    let last = q[0]!.seq;
    for (let i = 1; i < q.length; i++) {
      const b = q[i]!;
      if (b.seq <= last) continue; // a repeat
      if (b.prevSeq !== last) target = b.prevSeq;
      last = b.seq;
    }
    return target;
  }

  /**
   * page reads one page of history. A page refused as rate_limited is asked
   * again after a backoff, from the same cursor: the calls of a long resync
   * can exceed the socket's burst, and starting the resync over from its
   * beginning would meet the same limit at the same page, for ever.
   */
  private async page<E extends "getChangesSince" | "getChatMessagesSince">(name: E, args: EndpointArgs[E]): Promise<EndpointResults[E]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.call(name, args);
      } catch (err) {
        if (!(err instanceof RoomcastError) || err.code !== "rate_limited" || attempt >= MAX_PAGE_ATTEMPTS || this.stopped) throw err;
        const epoch = this.epoch;
        await new Promise<void>((ok) => (this.o.setTimeout ?? ((fn, d) => setTimeout(fn, d)))(ok, this.backoff(attempt, err)));
        if (epoch !== this.epoch) throw err; // the socket went away meanwhile: the next join resyncs
      }
    }
  }

  // backoff is the wait after the n-th failure in a row: between half of
  // a step doubling from retryMs to retryMaxMs and all of it, and never
  // shorter than the gateway's retryAfterMs when it gave one.
  private backoff(n: number, err?: unknown): number {
    const step = Math.min(this.o.retryMaxMs, this.o.retryMs * 2 ** Math.min(n - 1, 16));
    const after = err instanceof RoomcastError ? (err.retryAfterMs ?? 0) : 0;
    return Math.max(after, step / 2 + (this.o.random() * step) / 2);
  }

  private safe(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (this.handlers.onError) this.handlers.onError(err);
      else queueMicrotask(() => {
        throw err;
      });
    }
  }
}

/**
 * decideResource is the seed's rule for a room that tracks one resource:
 * refetch it when the room's lastBroadcastTimestamp differs from the
 * resource's updatedAt (or the app holds none).
 */
export function decideResource(updatedAt: number | undefined, state: RoomState | null): "refetch" | "up-to-date" {
  if (!state) return "up-to-date";
  return updatedAt === state.lastBroadcastTimestamp ? "up-to-date" : "refetch";
}

/** splitChanges separates upserts from deletions, in stream order. */
export function splitChanges(changes: Change[]): ChangeSet {
  const sorted = [...changes].sort((a, b) => a.seq - b.seq);
  return { upserts: sorted.filter((c) => !c.deleted), deletions: sorted.filter((c) => c.deleted) };
}
