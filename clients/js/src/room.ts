// The seed's "Frontend behavior" for one room: after every join, every
// reconnect and every detected gap, bring the app up to date, and deliver
// broadcasts in order meanwhile. Independent of the socket (it is given a
// function that calls endpoints), so its decisions are unit-tested alone.
import type { Broadcast, Change, Cursor, EndpointArgs, EndpointName, EndpointResults, Envelope, RoomState } from "./contract.js";
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

export type SyncReason = "join" | "reconnect" | "gap" | "manual" | "retry";

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
  /** After each resync: why it ran and the room's last seq now. */
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
  /** Most pages one resync follows before it refetches whole instead. Default 100. */
  maxPages?: number;
  /** Delay before retrying a failed resync, doubled each time up to retryMaxMs. Default 500. */
  retryMs?: number;
  retryMaxMs?: number;
  /** Timers, replaceable in tests. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (t: unknown) => void;
}

/** RoomSync keeps one room in step. */
export class RoomSync {
  /** The last seq the app holds for the room; undefined before the first sync. */
  lastSeq: number | undefined;
  private initial: Cursor | undefined;
  private running: Promise<void> | undefined;
  private again: { reason: SyncReason } | undefined;
  private queue: Broadcast[] = [];
  private failures = 0;
  private retryTimer: unknown;
  private stopped = false;
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
    this.o = { pageLimit: 500, maxPages: 100, retryMs: 500, retryMaxMs: 30000, ...opts };
  }

  /** True while a resync runs (broadcasts are queued meanwhile). */
  get syncing(): boolean {
    return this.running !== undefined;
  }

  /**
   * onBroadcast takes a broadcast to this room: delivered at once when it
   * follows the last seq held, queued while a resync runs, and a resync is
   * started when it shows a gap.
   */
  onBroadcast(b: Broadcast): void {
    if (this.stopped) return;
    if (this.running || this.lastSeq === undefined || this.failures > 0) {
      this.queue.push(b);
      return;
    }
    this.deliver(b);
  }

  private deliver(b: Broadcast): void {
    const held = this.lastSeq ?? 0;
    const arrival = classify(held, b);
    if (arrival === "gap") {
      this.queue.push(b);
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

  /** stop drops queued broadcasts and pending retries (the room was left). */
  stop(): void {
    this.stopped = true;
    this.queue = [];
    this.cancelRetry();
  }

  private cancelRetry(): void {
    if (this.retryTimer === undefined) return;
    (this.o.clearTimeout ?? ((t) => clearTimeout(t as ReturnType<typeof setTimeout>)))(this.retryTimer);
    this.retryTimer = undefined;
  }

  private async run(reason: SyncReason, state: RoomState | null | undefined): Promise<void> {
    let ok = true;
    for (;;) {
      this.again = undefined;
      try {
        await this.once(reason, state);
        this.failures = 0;
        ok = true;
      } catch (err) {
        ok = false;
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
    if (!ok) {
      // Keep the queue until a resync succeeds: delivering it on top of a
      // failed one would find the same gap and spin.
      this.scheduleRetry();
      return;
    }
    const queued = this.queue;
    this.queue = [];
    for (const b of queued) {
      if (this.running) {
        this.queue.push(b);
        continue;
      }
      this.deliver(b);
    }
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    const ms = Math.min(this.o.retryMaxMs, this.o.retryMs * 2 ** Math.min(this.failures - 1, 16));
    const set = this.o.setTimeout ?? ((fn, d) => setTimeout(fn, d));
    this.retryTimer = set(() => {
      this.retryTimer = undefined;
      void this.resync("retry");
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
      const r: EndpointResults["getChangesSince"] = await this.call("getChangesSince", {
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
      const r: EndpointResults["getChatMessagesSince"] = await this.call("getChatMessagesSince", {
        roomName: this.name,
        ...cursor,
        limit: this.o.pageLimit,
      } as EndpointArgs["getChatMessagesSince"]);
      if (r.complete === false) complete = false;
      messages.push(...(r.messages ?? []));
      if (r.next?.afterSeq !== undefined) lastSeq = Math.max(lastSeq, r.next.afterSeq);
      cursor = r.hasMore ? r.next : undefined;
    }
    return { messages, complete, lastSeq };
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
