// The wire contract of roomcast, as TypeScript: event names, envelopes,
// endpoints with their arguments and results, error codes, room kinds.
// test/unit/contract.test.mjs compares these constants with
// proto/contract.json, which the Go side writes from its own declarations,
// so the two cannot drift apart. Types are derived from the constants, so
// checking the constants checks the types.

/** The one event a client emits (with an ack). */
export const INCOMING_EVENT = "endpoint" as const;
/** The one event a client listens to. */
export const OUTGOING_EVENT = "broadcast" as const;

/** Every event of the seed: what it does and the room kinds it may go to. */
export const EVENTS = [
  { name: "update-user", op: "update", roomKinds: ["user"] },
  { name: "create-organization", op: "create", roomKinds: ["org"] },
  { name: "update-organization", op: "update", roomKinds: ["org"] },
  { name: "delete-organization", op: "delete", roomKinds: ["org"] },
  { name: "create-board", op: "create", roomKinds: ["board", "org"] },
  { name: "update-board", op: "update", roomKinds: ["board", "org"] },
  { name: "delete-board", op: "delete", roomKinds: ["board", "org"] },
  { name: "create-task", op: "create", roomKinds: ["board-tasks"] },
  { name: "update-task", op: "update", roomKinds: ["board-tasks"] },
  { name: "delete-task", op: "delete", roomKinds: ["board-tasks"] },
  { name: "create-sprint", op: "create", roomKinds: ["board-sprints"] },
  { name: "update-sprint", op: "update", roomKinds: ["board-sprints"] },
  { name: "delete-sprint", op: "delete", roomKinds: ["board-sprints"] },
  { name: "new-message", op: "message", roomKinds: ["chat"] },
] as const;

export type EventName = (typeof EVENTS)[number]["name"];
export type Op = (typeof EVENTS)[number]["op"];

/** Events by what they do to their resource. */
export type EventOf<O extends Op> = Extract<(typeof EVENTS)[number], { op: O }>["name"];

/** The endpoints a client may call. */
export const ENDPOINTS = [
  "addToRoom",
  "removeFromRoom",
  "getRoomState",
  "updateClient",
  "getChangesSince",
  "getChatMessagesSince",
] as const;
export type EndpointName = (typeof ENDPOINTS)[number];

/** The codes a failed ack may carry. */
export const ERROR_CODES = [
  "invalid_argument",
  "unauthenticated",
  "forbidden",
  "not_found",
  "rate_limited",
  "unavailable",
  "internal",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * Room kinds, their names and the NATS subjects domain services publish them
 * to: <id> is one id, <a>/<b> a chat's members, <user> the user a client
 * room belongs to. A client room's name (the broadcast's destination) is the
 * tab's clientId alone, but its subject names the user too: a clientId
 * reaches only the sockets of the user who holds it.
 */
export const ROOM_KINDS = [
  { kind: "user", pattern: "user-<id>", subject: "rooms.user.<id>", stored: true },
  { kind: "client", pattern: "client-<id>", subject: "live.rooms.client.<user>.<id>", stored: false },
  { kind: "org", pattern: "org-<id>", subject: "rooms.org.<id>", stored: true },
  { kind: "board", pattern: "board-<id>", subject: "rooms.board.<id>", stored: true },
  { kind: "board-tasks", pattern: "board-<id>-tasks", subject: "rooms.board.<id>.tasks", stored: true },
  { kind: "board-sprints", pattern: "board-<id>-sprints", subject: "rooms.board.<id>.sprints", stored: true },
  { kind: "chat", pattern: "chat-<a>-<b>", subject: "rooms.chat.<a>.<b>", stored: true },
] as const;
export type RoomKind = (typeof ROOM_KINDS)[number]["kind"];

/** A valid id: a lower-case UUID or 1–64 of [A-Za-z0-9_]. */
export const ID_MAX_LEN = 64;
export const ID_REGEXP = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[A-Za-z0-9_]{1,64})$/;

/** A resource as the app sees it: an id and the time of its last change. */
export interface Resource {
  id: string;
  updatedAt: number;
  [field: string]: unknown;
}

/** What a domain service publishes and a client receives as data. */
export type Envelope =
  | { event: EventOf<"create">; id: string; updatedAt: number; data: Record<string, unknown> }
  | { event: EventOf<"update">; id: string; updatedAt: number; diff: Record<string, unknown> }
  | { event: EventOf<"delete">; id: string; updatedAt: number }
  | { event: EventOf<"message">; id: string; updatedAt: number; data: Record<string, unknown> };

/**
 * The first argument of every "broadcast". With connection state recovery
 * on, a stored room's broadcast has a second one: its offset, a string
 * (the same number as seq) that socket.io-client keeps for the reconnect.
 */
export interface Broadcast {
  destination: string;
  data: Envelope;
  /** The message's sequence in stream ROOMS (0 for client rooms). */
  seq: number;
  /** The sequence of the room's previous message (0: none). */
  prevSeq: number;
}

/** Where a history read starts: after a publisher timestamp or a sequence. */
export type Cursor = { since: number; afterSeq?: never } | { afterSeq: number; since?: never };

export interface RoomState {
  lastBroadcastTimestamp: number;
  seq: number;
}

export interface Change {
  id: string;
  updatedAt: number;
  deleted: boolean;
  seq: number;
}

/** Arguments of each endpoint. */
export interface EndpointArgs {
  addToRoom: { roomName: string };
  removeFromRoom: { roomName: string };
  getRoomState: { roomName: string };
  updateClient: { isActive: boolean };
  getChangesSince: { roomName: string; limit?: number } & Cursor;
  getChatMessagesSince: { roomName: string; limit?: number } & Cursor;
}

/** Ack data of each endpoint. */
export interface EndpointResults {
  addToRoom: { roomName: string; lastBroadcastTimestamp: number | null; seq: number | null };
  removeFromRoom: Record<string, never>;
  getRoomState: RoomState | null;
  updateClient: Record<string, never>;
  getChangesSince: { changes: Change[]; complete: boolean; next?: Cursor };
  getChatMessagesSince: { messages: Envelope[]; hasMore: boolean; complete?: boolean; next?: Cursor };
}

/** Every endpoint's ack: {ok:true, data} or {ok:false, error}. */
export type Ack<E extends EndpointName> =
  | { ok: true; data: EndpointResults[E] }
  | { ok: false; error: { code: ErrorCode; message: string; retryAfterMs?: number } };

// Compile-time checks: the argument and result maps name exactly the
// endpoints (the contract test checks ENDPOINTS against Go).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const endpointArgsCover: Same<keyof EndpointArgs, EndpointName> = true;
const endpointResultsCover: Same<keyof EndpointResults, EndpointName> = true;
void endpointArgsCover;
void endpointResultsCover;

/** The op of an event name, undefined for an unknown one. */
export function opOf(event: string): Op | undefined {
  return EVENTS.find((e) => e.name === event)?.op;
}
