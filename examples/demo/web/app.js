// The demo board: a board's tasks in three columns, its sprints, who is
// active, and a chat, kept live by @roomcast/client. What the library does
// for the page is here in a few calls: connect, collection (the board's
// tasks and sprints in stores, resynced after every reconnect and gap),
// chat (messages, caught up the same way), status (the indicator).
import { connect, rooms, isExpired } from "@roomcast/client";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};
const config = await (await fetch("/api/config")).json();
const user = new URLSearchParams(location.search).get("user") || config.users[0];
const peer = config.users.find((u) => u !== user);
const board = config.board;

// A token from the demo's identity service, reused until it expires: the
// library asks for it again on every reconnect.
let session;
async function token() {
  if (!session || isExpired(session.token, Date.now())) {
    const r = await fetch(`/api/token?user=${encodeURIComponent(user)}`);
    if (!r.ok) throw new Error((await r.json()).error);
    session = await r.json();
  }
  return session.token;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${await token()}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function showError(err) {
  $("#error").hidden = false;
  $("#error").textContent = String(err?.message ?? err);
}

// The indicator: disconnected while the socket is down, catching up from
// the moment it is back until the board's tasks are resynced, then live.
function setState(state, detail = "") {
  const s = $("#status");
  s.dataset.state = state;
  s.querySelector("b").textContent = state.replace("-", " ");
  s.title = detail;
}

const rc = connect(config.gatewayURL, { token });
window.roomcast = rc; // for poking at it from the console
rc.on("status", (status, detail) => {
  if (status === "connected") setState("catching-up");
  else setState("disconnected", `${status}${detail ? ": " + detail : ""}`);
  if (status === "revoked") showError("The server ended this session: sign in again.");
});
rc.on("error", showError);

const byIds = (kind) => (ids) => api("GET", `/api/boards/${board}/${kind}?ids=${ids.map(encodeURIComponent).join(",")}`);
const tasks = rc.collection(rooms.boardTasks(board), {
  fetchAll: () => api("GET", `/api/boards/${board}/tasks`),
  fetchByIds: byIds("tasks"),
  onError: showError,
  onSynced: () => {
    if (rc.status === "connected") setState("live");
    document.body.dataset.synced = String(Date.now());
  },
});
tasks.store.subscribe(renderTasks);
const sprints = rc.collection(rooms.boardSprints(board), {
  fetchAll: () => api("GET", `/api/boards/${board}/sprints`),
  fetchByIds: byIds("sprints"),
  onError: showError,
});
sprints.store.subscribe(renderSprints);
const chat = rc.chat(rooms.chat(user, peer), { onError: showError });
chat.messages.subscribe(renderChat);

$("#board-name").textContent = `board ${board}`;
$("#who").textContent = `signed in as ${user}`;
$("#peer").textContent = peer;

function renderTasks(list) {
  for (const col of document.querySelectorAll(".column")) {
    const cards = list.filter((t) => t.status === col.dataset.status);
    col.querySelector(".count").textContent = cards.length;
    col.querySelector("ul").replaceChildren(...cards.map(card));
  }
}

function card(t) {
  const li = el("li", { className: "card", draggable: true }, el("span", { className: "title", textContent: t.title }),
    el("button", { className: "delete", textContent: "✕", title: "Delete", onclick: () => api("DELETE", `/api/boards/${board}/tasks/${t.id}`).catch(showError) }));
  li.dataset.id = t.id;
  li.ondragstart = (e) => e.dataTransfer.setData("text/plain", t.id);
  li.querySelector(".title").ondblclick = () => {
    const title = prompt("Rename the task", t.title);
    if (title && title !== t.title) api("PATCH", `/api/boards/${board}/tasks/${t.id}`, { title }).catch(showError);
  };
  return li;
}

// Dropping a card on a column is an update-task with the diff {status}.
for (const col of document.querySelectorAll(".column")) {
  col.ondragover = (e) => (e.preventDefault(), col.classList.add("over"));
  col.ondragleave = () => col.classList.remove("over");
  col.ondrop = (e) => {
    e.preventDefault();
    col.classList.remove("over");
    const id = e.dataTransfer.getData("text/plain");
    const t = tasks.store.get(id);
    if (t && t.status !== col.dataset.status) api("PATCH", `/api/boards/${board}/tasks/${id}`, { status: col.dataset.status }).catch(showError);
  };
}

function renderSprints(list) {
  const today = new Date().toISOString().slice(0, 10);
  $("#sprints").replaceChildren(
    ...[...list].sort((a, b) => a.start.localeCompare(b.start)).map((s) => {
      const li = el("li", {}, el("b", { textContent: s.name }), el("span", { textContent: `${s.start.slice(5)} → ${s.end.slice(5)}` }), el("em", { textContent: s.goal }));
      li.dataset.id = s.id;
      li.className = s.end < today ? "past" : s.start <= today ? "current" : "next";
      return li;
    }),
  );
}

function renderChat(messages) {
  const ul = $("#chat");
  ul.replaceChildren(
    ...messages.map((m) => {
      const li = el("li", { className: m.data.from === user ? "mine" : "" }, el("span", { className: "from", textContent: m.data.from }), m.data.text);
      li.dataset.id = m.id;
      return li;
    }),
  );
  ul.scrollTop = ul.scrollHeight;
}

// Who is active now: presence.get through the demo's API (true for a user
// while one of their pages is visible: the library sends updateClient).
async function renderPresence() {
  try {
    const { active } = await api("GET", `/api/boards/${board}/presence`);
    $("#presence").replaceChildren(...config.users.map((u) => {
      const li = el("li", { className: active[u] ? "active" : "" }, el("i"), u === user ? `${u} (you)` : u);
      li.dataset.user = u;
      return li;
    }));
  } catch {
    // offline: the list stays as it was, the indicator says why
  }
}
renderPresence();
setInterval(renderPresence, 2000);

$("#new-task").onsubmit = (e) => {
  e.preventDefault();
  const input = e.target.elements.title;
  api("POST", `/api/boards/${board}/tasks`, { title: input.value, status: "todo" }).then(() => (input.value = ""), showError);
};
$("#send").onsubmit = (e) => {
  e.preventDefault();
  const input = e.target.elements.text;
  api("POST", `/api/chats/${peer}/messages`, { text: input.value }).then(() => (input.value = ""), showError);
};
