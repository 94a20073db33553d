// The chat page: streams replies from POST /api/chat and renders them as Markdown.
//
// Safety: markdown-it runs with html: false, so any HTML in a reply is escaped and shown as text;
// links must be http(s) or mailto and open with rel="noopener noreferrer"; images are off, so a
// reply cannot make the browser fetch anything. User messages are plain text. The page's CSP
// (index.html) refuses inline scripts and handlers as a second line of defence.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("ask");
const input = document.getElementById("message");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const newButton = document.getElementById("new");
const list = document.getElementById("conversations");
const sidebar = document.getElementById("sidebar");
const menuButton = document.getElementById("menu");
const errorBox = document.getElementById("error");
const STORE = { conversation: "parley.conversation", key: "parley.apiKey" };
const STOP_GRACE_MS = 3000; // after /stop, hang up if the stream has not ended by then

const SAFE_LINK = /^(https?:|mailto:)/i;
const md = window.markdownit ? markdown(window.markdownit) : null; // null: the vendored file did not load

function markdown(markdownit) {
  const renderer = markdownit({ html: false, linkify: true, typographer: false, breaks: true });
  renderer.disable("image");
  renderer.validateLink = (url) => SAFE_LINK.test(url.trim());
  renderer.renderer.rules.link_open = (tokens, idx, options, _env, self) => {
    tokens[idx].attrSet("target", "_blank");
    tokens[idx].attrSet("rel", "noopener noreferrer");
    return self.renderToken(tokens, idx, options);
  };
  return renderer;
}

let current = localStorage.getItem(STORE.conversation); // the conversation on screen, or null for a new one
let running = null; // the reply streaming now: { controller, reply, conversationId, stopping, timer }

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem(STORE.key);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function showError(message) { errorBox.textContent = message || ""; }

async function errorText(response) {
  try { const body = await response.json(); return body.error.message; } catch { return response.status + " " + response.statusText; }
}

async function needKey(response) {
  if (response.status !== 401) return false;
  const key = prompt("This Parley needs an API key:");
  if (key) { localStorage.setItem(STORE.key, key.trim()); return true; }
  return false;
}

function setCurrent(id) {
  current = id;
  if (id) localStorage.setItem(STORE.conversation, id); else localStorage.removeItem(STORE.conversation);
  for (const button of list.querySelectorAll("button")) button.setAttribute("aria-current", String(button.dataset.id === id));
}

// turns

function nearBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 48; }

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const turn = { el: div, text: text || "", frame: 0, content: null, queue: null };
  if (role === "user") {
    div.textContent = turn.text;
  } else {
    turn.content = document.createElement("div");
    turn.content.className = "content";
    div.appendChild(turn.content);
    render(turn);
  }
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return turn;
}

function render(turn) {
  if (turn.frame) { cancelAnimationFrame(turn.frame); turn.frame = 0; }
  const stick = nearBottom();
  if (!md) {
    turn.content.className = "content plain";
    turn.content.textContent = turn.text;
    if (stick) log.scrollTop = log.scrollHeight;
    return;
  }
  turn.content.innerHTML = md.render(turn.text);
  for (const pre of turn.content.querySelectorAll("pre")) {
    const box = document.createElement("div");
    box.className = "code";
    pre.replaceWith(box);
    box.appendChild(pre);
    const language = /language-(\S+)/.exec(pre.firstElementChild?.className || "");
    if (language) {
      const label = document.createElement("span");
      label.className = "lang";
      label.textContent = language[1];
      box.appendChild(label);
    }
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy the code");
    box.appendChild(copy);
  }
  if (stick) log.scrollTop = log.scrollHeight;
}

// A reply grows by many small deltas: parse and paint at most once per frame.
function renderSoon(turn) {
  if (!turn.frame) turn.frame = requestAnimationFrame(() => { turn.frame = 0; render(turn); });
}

function markStatus(turn, status) {
  if (!status || status === "complete") return;
  turn.el.classList.add(status);
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = "(" + status + ")";
  turn.el.appendChild(note);
}

// One server-sent event: its name ("queue"; none for text) and its data line.
function parseFrame(frame) {
  let name = null, data = null;
  for (const line of frame.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data = line.slice(6);
  }
  return { name, data };
}

function ordinal(n) {
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] || "th";
  return n + suffix;
}

// While the reply waits for the model: the place in line and the server's estimate (already rounded).
function queueText(queue) {
  const where = queue.position <= 1 ? "you are next" : "you are " + ordinal(queue.position) + " in line";
  const eta = queue.eta_seconds;
  let when = "";
  if (eta !== null && eta !== undefined) {
    when = eta <= 10 ? ", in under 10 s" : eta < 60 ? ", about " + eta + " s" : ", about " + Math.round(eta / 60) + " min";
  }
  return "Waiting for the model: " + where + when + ".";
}

function showQueue(turn, queue) {
  if (!queue) { if (turn.queue) { turn.queue.remove(); turn.queue = null; } return; }
  if (!turn.queue) {
    turn.queue = document.createElement("div");
    turn.queue.className = "note queue";
    turn.queue.setAttribute("role", "status");
    turn.el.appendChild(turn.queue);
  }
  turn.queue.textContent = queueText(queue);
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = document.createElement("textarea"); // plain http beyond localhost has no clipboard API
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  try { if (!document.execCommand("copy")) throw new Error("the browser refused to copy"); } finally { area.remove(); }
}

log.addEventListener("click", async (event) => {
  const button = event.target.closest(".copy");
  if (!button) return;
  const code = button.parentElement.querySelector("code");
  try {
    await copyText(code ? code.textContent : "");
    button.textContent = "Copied";
  } catch (err) {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
});

// conversations

function when(seconds) {
  const date = new Date(seconds * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : date.toLocaleDateString();
}

async function loadList() {
  const response = await fetch("/api/conversations", { headers: headers() });
  if (await needKey(response)) return loadList();
  if (!response.ok) { showError(await errorText(response)); return; }
  const body = await response.json();
  const items = body.conversations.map((c) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = c.conversation_id;
    button.setAttribute("aria-current", String(c.conversation_id === current));
    button.disabled = running !== null;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = c.title || "(untitled)";
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = when(c.updated_at) + " · " + c.turn_count + (c.turn_count === 1 ? " turn" : " turns");
    button.append(title, meta);
    button.title = c.title;
    li.appendChild(button);
    return li;
  });
  list.replaceChildren(...items);
}

async function loadConversation(id) {
  const response = await fetch("/api/conversations/" + encodeURIComponent(id), { headers: headers() });
  if (await needKey(response)) return loadConversation(id);
  if (response.status === 404) { if (current === id) setCurrent(null); return; }
  if (!response.ok) { showError(await errorText(response)); return; }
  const body = await response.json();
  log.replaceChildren();
  showError("");
  for (const t of body.turns) {
    const turn = addTurn(t.role, t.text);
    if (t.role === "assistant") markStatus(turn, t.status);
  }
  setCurrent(id);
}

list.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-id]");
  if (!button || running) return;
  sidebar.classList.remove("open");
  menuButton.setAttribute("aria-expanded", "false");
  try { await loadConversation(button.dataset.id); } catch (err) { showError("Could not load the conversation: " + err.message); }
  input.focus();
});

menuButton.addEventListener("click", () => {
  const open = sidebar.classList.toggle("open");
  menuButton.setAttribute("aria-expanded", String(open));
});

newButton.addEventListener("click", () => {
  if (running) return;
  setCurrent(null);
  log.replaceChildren();
  showError("");
  sidebar.classList.remove("open");
  menuButton.setAttribute("aria-expanded", "false");
  input.focus();
});

// asking and stopping

function setBusy(busy) {
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  stopButton.disabled = false;
  newButton.disabled = busy;
  for (const button of list.querySelectorAll("button")) button.disabled = busy;
}

async function ask(message) {
  showError("");
  const body = { message };
  if (current) body.conversation_id = current;
  const controller = new AbortController();
  const response = await fetch("/api/chat", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
  if (await needKey(response)) return ask(message);
  if (!response.ok) { showError(await errorText(response)); return false; }
  const reply = addTurn("assistant", "");
  reply.el.classList.add("streaming");
  reply.el.setAttribute("aria-busy", "true");
  running = { controller, reply, conversationId: current, stopping: false, timer: 0 };
  setBusy(true);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", ended = false, failed = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (frame.data === null) continue;
        const event = JSON.parse(frame.data);
        running.conversationId = event.conversation_id;
        if (current !== event.conversation_id) setCurrent(event.conversation_id);
        if (frame.name === "queue") { showQueue(reply, event); continue; }
        if (event.delta || event.done || event.text !== undefined) showQueue(reply, null);
        if (event.delta) reply.text += event.delta;
        if (event.command && event.text !== undefined && !event.done) reply.text += (reply.text ? "\n\n" : "") + event.text;
        if (event.error) { showError(event.error.message); failed = true; }
        if (event.done && event.text !== undefined) reply.text = event.text;
        if (event.done) ended = true;
        renderSoon(reply);
      }
    }
  } catch (err) {
    if (!(running.stopping && err.name === "AbortError")) showError("The connection was lost: " + err.message);
  } finally {
    clearTimeout(running.timer);
    showQueue(reply, null);
    render(reply);
    reply.el.classList.remove("streaming");
    reply.el.removeAttribute("aria-busy");
    if (running.stopping) markStatus(reply, "stopped");
    else if (failed) markStatus(reply, "failed");
    else if (!ended) markStatus(reply, "interrupted");
    running = null;
    setBusy(false);
  }
  loadList().catch(() => {});
  return true;
}

// Stop asks the server with /stop, which ends the reply and keeps its text; if the reply has no
// conversation yet, or the stream does not end soon, the page hangs up, which stops it too.
async function stop() {
  if (!running || running.stopping) return;
  const reply = running;
  reply.stopping = true;
  stopButton.disabled = true;
  reply.timer = setTimeout(() => reply.controller.abort(), STOP_GRACE_MS);
  if (!reply.conversationId) { reply.controller.abort(); return; }
  try {
    const body = { message: "/stop", conversation_id: reply.conversationId, stream: false };
    const response = await fetch("/api/chat", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) reply.controller.abort();
  } catch {
    reply.controller.abort();
  }
}

stopButton.addEventListener("click", stop);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (!message || running) return;
  sendButton.disabled = true;
  const mine = addTurn("user", message);
  input.value = "";
  try {
    const sent = await ask(message);
    if (sent === false) { mine.el.remove(); input.value = message; } // not sent: keep the text
  } catch (err) {
    showError("Could not reach Parley: " + err.message);
    mine.el.remove();
    input.value = message;
  } finally {
    sendButton.disabled = false;
    input.focus();
  }
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running) { event.preventDefault(); stop(); }
});

const start = current ? loadConversation(current) : Promise.resolve();
start.catch((err) => showError("Could not load the conversation: " + err.message)).then(() => loadList())
  .catch((err) => showError("Could not load your conversations: " + err.message))
  .then(() => { if (!md) showError("The Markdown renderer did not load, so replies are shown as plain text."); });
