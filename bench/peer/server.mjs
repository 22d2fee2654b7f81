// The Socket.IO reference peer of roomcast's load tool (`roomcast bench
// -target peer`): what a team would write instead of roomcast with the stock
// socket.io server and its in-memory adapter. It speaks the same protocol as
// the gateway, so the same load tool drives both:
//
//   - handshake auth: an HS256 JWT in auth.token (or ?token=), sub = user id,
//     exp required; refused with connect_error "unauthorized: <why>";
//   - every socket joins user-<sub> and client-<clientId|socket id> at connect;
//   - emit("endpoint", {endpointName, endpointArgs}, ack) with addToRoom,
//     removeFromRoom, getRoomState and updateClient; acks {ok:true,data} or
//     {ok:false,error:{code,message}};
//   - emit("broadcast", {destination, data, seq, prevSeq}) to a room's members.
//
// Publishing is an HTTP POST (the peer's stand-in for NATS): POST /publish
// with {room, data} or an array of them. A board's -tasks and -sprints rooms
// share the board's member list (roomcast's includeSocketIdsInRoom), so a
// socket joins one Socket.IO room per board, as a careful Socket.IO user would.
//
// Environment: PEER_PORT (0 = any free port), PEER_HOST (default 127.0.0.1),
// PEER_JWT_SECRET (required), PEER_DEFLATE (a threshold in bytes: turn on
// Socket.IO's perMessageDeflate, off by default, for messages from that size;
// the load tool's -deflate sets 512, roomcast's default threshold). Prints
// "PEER_LISTENING <port>" once listening.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { Server } from "socket.io";

const secret = process.env.PEER_JWT_SECRET;
if (!secret) {
  console.error("peer: PEER_JWT_SECRET is required");
  process.exit(2);
}
const host = process.env.PEER_HOST || "127.0.0.1";
const port = Number(process.env.PEER_PORT || 0);

// Room names, as in roomcast's proto.ParseRoom.
const ID = "(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[A-Za-z0-9_]{1,64})";
const ROOM = new RegExp(`^(user|client|org|board|chat)-(${ID})(?:-(tasks|sprints|${ID}))?$`);

function parseRoom(name) {
  if (typeof name !== "string" || name.length > 140) return null;
  const m = ROOM.exec(name);
  if (!m) return null;
  const [, kind, id, rest] = m;
  if (kind === "chat") {
    if (!rest || rest === "tasks" || rest === "sprints" || rest === id) return null;
    const [a, b] = id < rest ? [id, rest] : [rest, id];
    return { kind, name: `chat-${a}-${b}`, members: [a, b], socketRoom: `chat-${a}-${b}` };
  }
  if (rest !== undefined) {
    if (kind !== "board" || (rest !== "tasks" && rest !== "sprints")) return null;
    return { kind: `board-${rest}`, name, id, socketRoom: `board-${id}` };
  }
  return { kind, name, id, socketRoom: name };
}

// verify checks an HS256 JWT and returns its claims, or throws with the reason.
function verify(token) {
  if (typeof token !== "string") throw new Error("no token");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("malformed token");
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  if (header.alg !== "HS256") throw new Error(`alg ${header.alg} refused`);
  const want = createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const got = Buffer.from(parts[2], "base64url");
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new Error("bad signature");
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  const now = Date.now() / 1000;
  if (typeof claims.exp !== "number") throw new Error("exp is required");
  if (claims.exp < now) throw new Error("token expired");
  if (typeof claims.nbf === "number" && claims.nbf > now + 5) throw new Error("token not valid yet");
  if (typeof claims.sub !== "string" || !new RegExp(`^${ID}$`).test(claims.sub)) throw new Error("bad sub");
  return claims;
}

// Room state: the peer's in-memory stand-in for KV ROOM_STATE and stream
// sequences, so broadcasts carry seq/prevSeq like roomcast's.
let seq = 0;
const lastSeq = new Map();
const lastTs = new Map();

function publish(room, data) {
  const r = parseRoom(room);
  if (!r || r.kind === "client") return false;
  seq++;
  const prevSeq = lastSeq.get(r.name) || 0;
  lastSeq.set(r.name, seq);
  if (data && typeof data.updatedAt === "number") {
    lastTs.set(r.name, Math.max(lastTs.get(r.name) || 0, data.updatedAt));
  }
  io.to(r.socketRoom).emit("broadcast", { destination: r.name, data, seq, prevSeq });
  return true;
}

const fail = (code, message) => ({ ok: false, error: { code, message } });

const http = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.end("ok\n");
    return;
  }
  if (req.method !== "POST" || req.url !== "/publish") {
    res.statusCode = 404;
    res.end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch (e) {
      res.statusCode = 400;
      res.end(`bad json: ${e.message}\n`);
      return;
    }
    const msgs = Array.isArray(body) ? body : [body];
    let published = 0;
    for (const m of msgs) if (m && publish(m.room, m.data)) published++;
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ published }));
  });
});

// polling too: the load tool's -transport polling compares the long-polling
// transports (a WebSocket client is not affected by it being allowed).
// perMessageDeflate compresses per socket (the ws library's deflate on each
// connection), where roomcast compresses a broadcast once per gateway.
const deflate = process.env.PEER_DEFLATE ? { threshold: Number(process.env.PEER_DEFLATE) } : false;
const io = new Server(http, { serveClient: false, transports: ["websocket", "polling"], perMessageDeflate: deflate });

io.use((socket, next) => {
  const token = socket.handshake.auth?.token ?? socket.handshake.query?.token;
  try {
    const claims = verify(token);
    socket.data.userId = claims.sub;
    next();
  } catch (e) {
    next(new Error(`unauthorized: ${e.message}`));
  }
});

io.on("connection", (socket) => {
  const userId = socket.data.userId;
  const cid = socket.handshake.auth?.clientId;
  const clientId = typeof cid === "string" && new RegExp(`^${ID}$`).test(cid) ? cid : socket.id;
  socket.join([`user-${userId}`, `client-${clientId}`]);

  socket.on("endpoint", (call, ack) => {
    if (typeof ack !== "function") return;
    const args = (call && call.endpointArgs) || {};
    switch (call && call.endpointName) {
      case "addToRoom":
      case "removeFromRoom":
      case "getRoomState": {
        const r = parseRoom(args.roomName);
        if (!r) return ack(fail("invalid_argument", `bad room name ${JSON.stringify(args.roomName)}`));
        if (r.kind === "client") return ack(fail("forbidden", "client rooms are server-managed"));
        if (r.kind === "user" && r.id !== userId) return ack(fail("forbidden", "not your user room"));
        if (r.kind === "chat" && !r.members.includes(userId)) return ack(fail("forbidden", "not your chat"));
        const state = { lastBroadcastTimestamp: lastTs.get(r.name) ?? null, seq: lastSeq.get(r.name) ?? null };
        if (call.endpointName === "addToRoom") {
          socket.join(r.socketRoom);
          return ack({ ok: true, data: { roomName: r.name, ...state } });
        }
        if (call.endpointName === "removeFromRoom") {
          socket.leave(r.socketRoom);
          return ack({ ok: true, data: {} });
        }
        return ack({ ok: true, data: state.seq === null ? null : state });
      }
      case "updateClient":
        return ack({ ok: true, data: {} });
      case "getChangesSince":
      case "getChatMessagesSince":
        return ack(fail("unavailable", "the reference peer keeps no history"));
      default:
        return ack(fail("invalid_argument", `unknown endpoint ${JSON.stringify(call && call.endpointName)}`));
    }
  });
});

http.listen(port, host, () => {
  console.log(`PEER_LISTENING ${http.address().port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
