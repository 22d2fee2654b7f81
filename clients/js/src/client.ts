// The client: one socket.io-client socket to a roomcast gateway, the rooms
// the app asked for (joined again and resynced after every reconnect, or
// taken up where they stood when the gateway recovered the session), the
// tab's presence, and the session's fate (a fresh token on expiry; a clear
// stop when the server revoked the session).
import { io as stockIO, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";
import {
  INCOMING_EVENT,
  OUTGOING_EVENT,
  type Ack,
  type Broadcast,
  type EndpointArgs,
  type EndpointName,
  type EndpointResults,
  type Envelope,
  type Resource,
} from "./contract.js";
import { RoomcastError } from "./errors.js";
import { RoomSync, type RoomHandlers, type RoomStatus, type RoomSyncOptions, type SyncReason } from "./room.js";
import { roomKind, rooms as roomNames, syncStyleOf } from "./rooms.js";
import { MessageStore, ResourceStore } from "./store.js";
import { isExpired, refreshable, revokedRefusal, type TokenSource } from "./token.js";

/**
 * Where the connection stands:
 * - connecting: the first connect is under way (said again, with why,
 *   after each failed attempt);
 * - connected: the socket is up (rooms are being joined and resynced: see
 *   each room's status); said with the detail "recovered" when the gateway
 *   recovered the session (see RoomcastClient.recovered);
 * - reconnecting: the connection was lost (or the token expired, or the
 *   gateway asked to wait: too many sockets of this user, a cooldown after a
 *   flood) and is being restored;
 * - revoked: the server ended the session (password changed, account closed),
 *   or refused a token issued before the user's last revoke: no reconnect;
 *   sign the user in again;
 * - unauthorized: the gateway refused the token and a fresh one did not help;
 * - closed: close() was called.
 */
export type Status = "connecting" | "connected" | "reconnecting" | "revoked" | "unauthorized" | "closed";

/** The page's visibility: the client tells the gateway (updateClient) when it changes. */
export interface VisibilitySource {
  visible(): boolean;
  subscribe(onChange: () => void): () => void;
}

/** Where the tab's clientId is kept (sessionStorage in a browser: one per tab, kept across reloads). */
export interface IdStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ClientOptions {
  /** A token, or a function returning one, called on every connect and reconnect. */
  token: TokenSource;
  /** The tab's id; default: kept in storage, made once per tab. */
  clientId?: string;
  /** Where a generated clientId is kept; default sessionStorage when there is one. null: keep none. */
  storage?: IdStorage | null;
  /** The page's visibility; default document's when there is one. false: never send updateClient. */
  visibility?: VisibilitySource | false;
  /** socket.io-client's io (default the imported one). */
  io?: typeof stockIO;
  /**
   * Extra socket.io-client options. By default the stock client's transports:
   * long-polling first, then the upgrade to WebSocket (it stays on polling
   * where WebSockets are blocked); `transports: ["websocket"]` skips polling.
   */
  ioOptions?: Partial<ManagerOptions & SocketOptions>;
  /** How long an endpoint call may wait for its ack. Default 10 s. */
  callTimeoutMs?: number;
  /** How rooms resync (page sizes, retry delays). */
  sync?: RoomSyncOptions;
  /** Clock, replaceable in tests. */
  now?: () => number;
}

type Listeners = {
  status: (status: Status, detail?: string) => void;
  broadcast: (b: Broadcast) => void;
  revoked: () => void;
  error: (err: unknown) => void;
};

/** A room the app tracks. */
export interface RoomHandle {
  readonly name: string;
  /** The last seq the app holds for the room (undefined before the first sync). */
  readonly lastSeq: number | undefined;
  /** joining, joined, retrying or failed (see RoomStatus). */
  readonly status: RoomStatus;
  /** Calls fn on every status change, with the error behind retrying and failed; returns the unsubscribe. */
  onStatus(fn: (status: RoomStatus, err?: unknown) => void): () => void;
  /**
   * Resolves when the room is joined and synced; rejects with the
   * gateway's error when it was refused for good (forbidden,
   * invalid_argument), or when the room is left.
   */
  ready(): Promise<void>;
  /** Resync now (e.g. after the app suspects it is behind); joins again a room that failed. */
  resync(): Promise<void>;
  /** Stop tracking the room, and leave it on the server when no tracked room shares its socket list. */
  leave(): Promise<void>;
}

export interface CollectionOptions<T extends Resource> {
  /** The room's resources, whole, from the domain API. */
  fetchAll(): Promise<T[]>;
  /** Some resources by id (missing ones were deleted); default: fetchAll. */
  fetchByIds?(ids: string[]): Promise<T[]>;
  store?: ResourceStore<T>;
  onError?(err: unknown): void;
  onSynced?: RoomHandlers["onSynced"];
}

interface Entry {
  name: string;
  sync: RoomSync;
}

const CLIENT_ID_KEY = "roomcast.clientId";

/** connect opens a client to the gateway at url (e.g. "http://127.0.0.1:8080"). */
export function connect(url: string, opts: ClientOptions): RoomcastClient {
  return new RoomcastClient(url, opts);
}

export class RoomcastClient {
  readonly socket: Socket;
  readonly clientId: string;
  private _status: Status = "connecting";
  private token = "";
  private authRetries = 0;
  // Refusals in a row that say "too many requests" (429), and the timer of the reconnect after one.
  private busyRefusals = 0;
  private busyTimer: unknown;
  private everConnected = false;
  private readonly entries = new Map<string, Entry>();
  // Rooms left while the socket was down: a recovered session is still in
  // them on the server, so they are left at its connect (a new one is not).
  private readonly leftAway = new Set<string>();
  private readonly listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    status: new Set(),
    broadcast: new Set(),
    revoked: new Set(),
    error: new Set(),
  };
  private readonly visibility: VisibilitySource | undefined;
  private unsubscribeVisibility: (() => void) | undefined;
  private readonly now: () => number;

  constructor(
    url: string,
    private readonly opts: ClientOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.clientId = opts.clientId ?? stableClientId(opts.storage === undefined ? defaultStorage() : opts.storage);
    this.visibility = opts.visibility === false ? undefined : (opts.visibility ?? documentVisibility());
    const io = opts.io ?? stockIO;
    this.socket = io(url, {
      ...opts.ioOptions,
      autoConnect: false,
      auth: (cb: (data: object) => void) => {
        const src = this.opts.token;
        Promise.resolve()
          .then(() => (typeof src === "function" ? src() : src))
          .then(
            (t) => {
              this.token = t;
              cb({ token: t, clientId: this.clientId });
            },
            (err) => {
              this.fail(err);
              cb({ token: "", clientId: this.clientId });
            },
          );
      },
    });
    this.socket.on("connect", () => this.onConnect());
    this.socket.on("disconnect", (reason) => this.onDisconnect(reason));
    this.socket.on("connect_error", (err) => this.onConnectError(err as Error & { data?: unknown }));
    // With recovery on, a stored room's broadcast carries its offset as a
    // second argument, which socket.io-client keeps for the reconnect; the
    // library needs only the broadcast.
    this.socket.on(OUTGOING_EVENT, (b: Broadcast) => this.onBroadcast(b));
    if (this.visibility) this.unsubscribeVisibility = this.visibility.subscribe(() => void this.sendPresence());
    this.socket.connect();
  }

  get status(): Status {
    return this._status;
  }

  get connected(): boolean {
    return this.socket.connected;
  }

  /**
   * Whether the last reconnect recovered the session (socket.io's
   * connection state recovery, offered by a gateway with
   * ROOMCAST_RECOVERY_TTL > 0): the socket kept its id and its rooms, and
   * the broadcasts it missed came as ordinary ones, so the rooms that were
   * in step were neither joined again nor resynced. False after the first
   * connect and after a reconnect that is a new session.
   */
  get recovered(): boolean {
    return this.everConnected && this.socket.connected && this.socket.recovered === true;
  }

  on<K extends keyof Listeners>(event: K, fn: Listeners[K]): () => void {
    this.listeners[event].add(fn);
    return () => this.listeners[event].delete(fn);
  }

  /** call calls an endpoint and resolves with its ack data; a failed ack rejects with a RoomcastError. */
  async call<E extends EndpointName>(name: E, args: EndpointArgs[E]): Promise<EndpointResults[E]> {
    if (!this.socket.connected) throw new RoomcastError("disconnected", "not connected", name);
    let ack: Ack<E>;
    try {
      ack = await this.socket
        .timeout(this.opts.callTimeoutMs ?? 10000)
        .emitWithAck(INCOMING_EVENT, { endpointName: name, endpointArgs: args });
    } catch {
      throw new RoomcastError(this.socket.connected ? "timeout" : "disconnected", "no answer", name);
    }
    if (!ack || typeof ack !== "object") throw new RoomcastError("internal", "malformed ack", name);
    if (!ack.ok) {
      const after = ack.error?.retryAfterMs;
      throw new RoomcastError(ack.error?.code ?? "internal", ack.error?.message ?? "", name, typeof after === "number" && after > 0 ? after : undefined);
    }
    return ack.data;
  }

  /**
   * room tracks a room: joins it now (or at the next connect), and after
   * every join and reconnect, and every gap, resyncs it as the seed says.
   * Tracking a room twice replaces its handlers.
   */
  room(name: string, handlers: RoomHandlers = {}): RoomHandle {
    const kind = roomKind(name);
    if (kind === undefined) throw new TypeError(`roomcast: ${JSON.stringify(name)} is not a room name`);
    if (kind === "chat") name = chatName(name) ?? name;
    this.entries.get(name)?.sync.stop();
    const sync = new RoomSync(name, syncStyleOf(kind), handlers, (n, a) => this.call(n, a), this.opts.sync);
    const entry: Entry = { name, sync };
    this.entries.set(name, entry);
    // A room without its own onError reports failed joins and resyncs to
    // the client's error listeners.
    if (!handlers.onError) sync.onStatus((_, err) => err !== undefined && this.fail(err));
    if (this.socket.connected) void sync.join("join");
    else sync.pause();
    return {
      name,
      get lastSeq() {
        return sync.lastSeq;
      },
      get status() {
        return sync.status;
      },
      onStatus: (fn) => sync.onStatus(fn),
      ready: () => sync.ready(),
      resync: () => sync.refresh("manual"),
      leave: () => this.leave(entry),
    };
  }

  /**
   * collection tracks a room of resources (board-B-tasks, -sprints) in a
   * ResourceStore: broadcasts are applied to it, changes since the cursor
   * fetched by id, and the whole collection refetched when history no longer
   * reaches back (and on the first join).
   */
  collection<T extends Resource>(name: string, opts: CollectionOptions<T>): { store: ResourceStore<T>; room: RoomHandle } {
    const store = opts.store ?? new ResourceStore<T>();
    const report = (err: unknown) => (opts.onError ? opts.onError(err) : this.fail(err));
    const fetchIds = async (ids: string[]) => {
      if (!opts.fetchByIds) return store.replaceAll(await opts.fetchAll());
      const got = await opts.fetchByIds(ids);
      store.upsertMany(got);
    };
    const room = this.room(name, {
      onEvent: (env) => {
        if (store.apply(env) === "missing") fetchIds([env.id]).catch(report);
      },
      refetch: async () => store.replaceAll(await opts.fetchAll()),
      onChanges: async ({ upserts, deletions }) => {
        for (const d of deletions) store.remove(d.id, d.updatedAt);
        if (upserts.length === 0) return;
        if (!opts.fetchByIds) return store.replaceAll(await opts.fetchAll());
        const got = await opts.fetchByIds(upserts.map((u) => u.id));
        store.upsertMany(got);
        const have = new Set(got.map((r) => r.id));
        // Asked for but gone: deleted after the change was read.
        for (const u of upserts) if (!have.has(u.id)) store.remove(u.id, u.updatedAt);
      },
      onError: report,
      ...(opts.onSynced ? { onSynced: opts.onSynced } : {}),
    });
    return { store, room };
  }

  /** chat tracks a chat room's messages in a MessageStore. */
  chat(name: string, opts: { onError?(err: unknown): void; messages?: MessageStore } = {}): { messages: MessageStore; room: RoomHandle } {
    const messages = opts.messages ?? new MessageStore();
    const room = this.room(name, {
      onEvent: (env: Envelope) => {
        if (env.event === "new-message") messages.add(env);
      },
      onMessages: (ms) => messages.add(...ms.filter((m) => m.event === "new-message")),
      onError: (err) => (opts.onError ? opts.onError(err) : this.fail(err)),
    });
    return { messages, room };
  }

  /** close disconnects for good. */
  close(): void {
    if (this.busyTimer !== undefined) (this.opts.sync?.clearTimeout ?? ((t) => clearTimeout(t as ReturnType<typeof setTimeout>)))(this.busyTimer);
    for (const e of this.entries.values()) e.sync.stop();
    this.entries.clear();
    this.unsubscribeVisibility?.();
    this.setStatus("closed");
    this.socket.disconnect();
  }

  private async leave(entry: Entry): Promise<void> {
    if (this.entries.get(entry.name) !== entry) return;
    entry.sync.stop();
    this.entries.delete(entry.name);
    if (this.shared(entry.name)) return;
    if (this.socket.connected) await this.call("removeFromRoom", { roomName: entry.name });
    else this.leftAway.add(entry.name);
  }

  /** shared says whether a tracked room shares name's socket list (board-B and board-B-tasks do). */
  private shared(name: string): boolean {
    const family = familyOf(name);
    return [...this.entries.keys()].some((n) => familyOf(n) === family);
  }

  private onConnect(): void {
    this.authRetries = 0;
    this.busyRefusals = 0;
    const reason: SyncReason = this.everConnected ? "reconnect" : "join";
    // socket.io-client sets recovered when the gateway answered the pid it
    // presented: the same session, its rooms kept on the server, the missed
    // broadcasts following this connect as ordinary ones.
    const recovered = this.everConnected && this.socket.recovered === true;
    this.everConnected = true;
    this.setStatus("connected", recovered ? "recovered" : undefined);
    void this.sendPresence();
    for (const e of this.entries.values()) void (recovered ? e.sync.resume() : e.sync.join(reason));
    const left = [...this.leftAway];
    this.leftAway.clear();
    if (!recovered) return;
    for (const name of left) {
      if (!this.shared(name)) this.call("removeFromRoom", { roomName: name }).catch((err) => this.fail(err));
    }
  }

  private onDisconnect(reason: Socket.DisconnectReason): void {
    if (this._status === "closed") return;
    // A new session holds none of the rooms: they are joined again at its
    // connect; a recovered one holds them all (see RoomSync.resume).
    for (const e of this.entries.values()) e.sync.pause();
    if (reason === "io server disconnect") {
      // The gateway ends a session with a server DISCONNECT for two reasons:
      // the token expired, or the session was revoked. The token says which.
      if (this.token && isExpired(this.token, this.now())) {
        if (typeof this.opts.token === "function") {
          this.setStatus("reconnecting", "token expired");
          this.socket.connect();
        } else {
          this.setStatus("unauthorized", "token expired");
        }
        return;
      }
      this.setStatus("revoked", "the server ended the session");
      for (const fn of this.listeners.revoked) fn();
      return;
    }
    if (reason === "io client disconnect") return;
    this.setStatus("reconnecting", reason);
  }

  private onConnectError(err: Error & { data?: unknown }): void {
    if (this._status === "closed") return;
    if (this.socket.active) {
      this.setStatus(this.everConnected ? "reconnecting" : "connecting", err.message);
      return;
    }
    // Refused by the gateway: the stock client does not retry by itself.
    if (tooManyRequests(err)) {
      // Too many sockets of this user, or a cooldown after a flood: it
      // passes. Connect again after a wait that grows like the stock
      // client's reconnection delay, with jitter, so the tabs refused
      // together do not come back together.
      this.busyRefusals++;
      this.setStatus(this.everConnected ? "reconnecting" : "connecting", err.message);
      const m = this.socket.io;
      const step = Math.min(m.reconnectionDelayMax(), m.reconnectionDelay() * 2 ** Math.min(this.busyRefusals - 1, 16));
      const hint = (err.data as { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
      const wait = Math.max(typeof hint === "number" ? hint : 0, step / 2 + ((this.opts.sync?.random ?? Math.random)() * step) / 2);
      const set = this.opts.sync?.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
      this.busyTimer = set(() => {
        this.busyTimer = undefined;
        if (this._status !== "closed") this.socket.connect();
      }, wait);
      return;
    }
    if (revokedRefusal(err.message)) {
      this.setStatus("revoked", err.message);
      for (const fn of this.listeners.revoked) fn();
      return;
    }
    if (refreshable(err.message) && typeof this.opts.token === "function" && this.authRetries < 2) {
      this.authRetries++;
      this.setStatus(this.everConnected ? "reconnecting" : "connecting", err.message);
      this.socket.connect();
      return;
    }
    this.setStatus("unauthorized", err.message);
    this.fail(new RoomcastError("unauthenticated", err.message));
  }

  private onBroadcast(b: Broadcast): void {
    for (const fn of this.listeners.broadcast) fn(b);
    this.entries.get(b?.destination)?.sync.onBroadcast(b);
  }

  private async sendPresence(): Promise<void> {
    if (!this.visibility || !this.socket.connected) return;
    try {
      await this.call("updateClient", { isActive: this.visibility.visible() });
    } catch (err) {
      this.fail(err);
    }
  }

  private setStatus(s: Status, detail?: string): void {
    // connecting and reconnecting repeat: each failed attempt says why.
    if (this._status === s && s !== "reconnecting" && s !== "connecting") return;
    this._status = s;
    for (const fn of this.listeners.status) fn(s, detail);
  }

  private fail(err: unknown): void {
    if (this.listeners.error.size === 0) return;
    for (const fn of this.listeners.error) fn(err);
  }
}

/** tooManyRequests says whether a CONNECT was refused for a while (429), not for good. */
function tooManyRequests(err: Error & { data?: unknown }): boolean {
  return (err.data as { code?: unknown } | undefined)?.code === 429;
}

/** The canonical name of a chat room (members sorted), undefined when name is not one. */
function chatName(name: string): string | undefined {
  const rest = name.slice("chat-".length);
  // A UUID member holds dashes: it is exactly 36 characters.
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
  let a: string, b: string;
  if (rest.length > 37 && uuid.test(rest) && rest[36] === "-") [a, b] = [rest.slice(0, 36), rest.slice(37)];
  else {
    const i = rest.indexOf("-");
    if (i < 0) return undefined;
    [a, b] = [rest.slice(0, i), rest.slice(i + 1)];
  }
  try {
    return roomNames.chat(a, b);
  } catch {
    return undefined;
  }
}

/** The room whose socket list a room shares: board-B for board-B-tasks and -sprints. */
function familyOf(name: string): string {
  return name.replace(/-(tasks|sprints)$/, "");
}

function stableClientId(storage: IdStorage | null): string {
  const stored = storage?.getItem(CLIENT_ID_KEY);
  if (stored && /^[A-Za-z0-9_]{1,64}$|^[0-9a-f-]{36}$/.test(stored)) return stored;
  const id = globalThis.crypto.randomUUID();
  storage?.setItem(CLIENT_ID_KEY, id);
  return id;
}

function defaultStorage(): IdStorage | null {
  try {
    return (globalThis as { sessionStorage?: IdStorage }).sessionStorage ?? null;
  } catch {
    return null; // sessionStorage throws where storage is disabled
  }
}

function documentVisibility(): VisibilitySource | undefined {
  const doc = (globalThis as { document?: Document }).document;
  if (!doc) return undefined;
  return {
    visible: () => doc.visibilityState === "visible",
    subscribe(onChange) {
      doc.addEventListener("visibilitychange", onChange);
      return () => doc.removeEventListener("visibilitychange", onChange);
    },
  };
}
