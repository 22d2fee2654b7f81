// Room names on the client side: which kind a name is, and the names of a
// board's children and of a chat. The patterns come from the contract.
import { ID_REGEXP, ROOM_KINDS, type RoomKind } from "./contract.js";

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const ID = `(?:${UUID}|[A-Za-z0-9_]{1,64})`;

// One regexp per kind, built from the contract's patterns; the most specific
// (board-<id>-tasks) are tried before board-<id>.
const matchers: { kind: RoomKind; re: RegExp }[] = [...ROOM_KINDS]
  .sort((a, b) => b.pattern.length - a.pattern.length)
  .map((k) => ({
    kind: k.kind,
    re: new RegExp("^" + k.pattern.replace("<id>", `(${ID})`).replace("<a>", `(${ID})`).replace("<b>", `(${ID})`) + "$"),
  }));

/** The kind of a room name, or undefined when it is not a valid name. */
export function roomKind(name: string): RoomKind | undefined {
  for (const m of matchers) {
    const g = m.re.exec(name);
    if (!g) continue;
    if (m.kind === "chat" && g[1] === g[2]) return undefined;
    return m.kind;
  }
  return undefined;
}

/** How the client resyncs a room of each kind (the seed's "Frontend behavior"). */
export type SyncStyle = "resource" | "children" | "chat" | "none";

export function syncStyleOf(kind: RoomKind | undefined): SyncStyle {
  switch (kind) {
    case "user":
    case "org":
    case "board":
      return "resource";
    case "board-tasks":
    case "board-sprints":
      return "children";
    case "chat":
      return "chat";
    default:
      return "none";
  }
}

function checkID(id: string): string {
  if (!ID_REGEXP.test(id)) throw new TypeError(`roomcast: ${JSON.stringify(id)} is not a valid id`);
  return id;
}

function fill(kind: RoomKind, id: string): string {
  return ROOM_KINDS.find((k) => k.kind === kind)!.pattern.replace("<id>", checkID(id));
}

export const rooms = {
  user: (id: string) => fill("user", id),
  org: (id: string) => fill("org", id),
  board: (id: string) => fill("board", id),
  boardTasks: (id: string) => fill("board-tasks", id),
  boardSprints: (id: string) => fill("board-sprints", id),
  /** The chat between a and b, in either order (members sorted, as the server does). */
  chat(a: string, b: string): string {
    checkID(a);
    checkID(b);
    if (a === b) throw new TypeError("roomcast: a chat needs two different users");
    const [x, y] = a < b ? [a, b] : [b, a];
    return ROOM_KINDS.find((k) => k.kind === "chat")!.pattern.replace("<a>", x).replace("<b>", y);
  },
};
