// The demo board: tasks of one board and a chat, kept live by
// @roomcast/client. Everything the library does for the page is here in a
// few calls: connect, collection (the board's tasks in a store, resynced
// after every reconnect and gap), chat (messages, caught up the same way),
// status (the connection indicator).
import { connect, rooms, isExpired } from "@roomcast/client";

const $ = (sel) => document.querySelector(sel);
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
  const el = $("#error");
  el.hidden = false;
  el.textContent = String(err?.message ?? err);
}

const rc = connect(config.gatewayURL, { token });
window.roomcast = rc; // for poking at it from the console

rc.on("status", (status, detail) => {
  const el = $("#status");
  el.dataset.status = status;
  el.querySelector("b").textContent = status;
  el.title = detail ?? "";
  if (status === "revoked") showError("The server ended this session: sign in again.");
});
rc.on("error", showError);

const tasks = rc.collection(rooms.boardTasks(board), {
  fetchAll: () => api("GET", `/api/boards/${board}/tasks`),
  fetchByIds: (ids) => api("GET", `/api/boards/${board}/tasks?ids=${ids.map(encodeURIComponent).join(",")}`),
  onError: showError,
  onSynced: () => (document.body.dataset.synced = String(Date.now())),
});
tasks.store.subscribe(renderTasks);

const chat = rc.chat(rooms.chat(user, peer), { onError: showError });
chat.messages.subscribe(renderChat);

$("#board-name").textContent = `· board ${board}`;
$("#who").textContent = `signed in as ${user}`;
$("#peer").textContent = peer;

function renderTasks(list) {
  const ul = $("#tasks");
  ul.replaceChildren(
    ...list.map((t) => {
      const li = document.createElement("li");
      li.dataset.id = t.id;
      li.className = t.done ? "done" : "";
      const box = Object.assign(document.createElement("input"), { type: "checkbox", className: "done", checked: Boolean(t.done) });
      box.onchange = () => api("PATCH", `/api/boards/${board}/tasks/${t.id}`, { done: box.checked }).catch(showError);
      const title = Object.assign(document.createElement("span"), { className: "title", textContent: t.title });
      title.ondblclick = () => {
        const next = prompt("Rename the task", t.title);
        if (next && next !== t.title) api("PATCH", `/api/boards/${board}/tasks/${t.id}`, { title: next }).catch(showError);
      };
      const del = Object.assign(document.createElement("button"), { className: "delete", textContent: "✕", title: "Delete" });
      del.onclick = () => api("DELETE", `/api/boards/${board}/tasks/${t.id}`).catch(showError);
      li.append(box, title, del);
      return li;
    }),
  );
}

function renderChat(messages) {
  const ul = $("#chat");
  ul.replaceChildren(
    ...messages.map((m) => {
      const li = document.createElement("li");
      li.dataset.id = m.id;
      li.className = m.data.from === user ? "mine" : "";
      li.append(Object.assign(document.createElement("span"), { className: "from", textContent: m.data.from }), m.data.text);
      return li;
    }),
  );
  ul.scrollTop = ul.scrollHeight;
}

$("#new-task").onsubmit = (e) => {
  e.preventDefault();
  const input = e.target.elements.title;
  api("POST", `/api/boards/${board}/tasks`, { title: input.value }).then(() => (input.value = ""), showError);
};
$("#send").onsubmit = (e) => {
  e.preventDefault();
  const input = e.target.elements.text;
  api("POST", `/api/chats/${peer}/messages`, { text: input.value }).then(() => (input.value = ""), showError);
};
