// The playground of plmkit serve: chat (streamed), a task model, an encoder's attention map.
"use strict";

const $ = (id) => document.getElementById(id);
const keyBox = $("api-key");
keyBox.value = localStorage.getItem("plmkit-api-key") || "";
keyBox.addEventListener("change", () => { localStorage.setItem("plmkit-api-key", keyBox.value); loadModels(); });

function headers() {
  const h = { "Content-Type": "application/json" };
  if (keyBox.value) h.Authorization = "Bearer " + keyBox.value;
  return h;
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.status + " " + response.statusText; }
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

let models = [];

function fill(select, list) {
  select.innerHTML = "";
  for (const m of list) select.add(new Option(m.id + (m.task ? " (" + m.task + ")" : ""), m.id));
  select.disabled = list.length === 0;
  if (!list.length) select.add(new Option("(no such model served)", ""));
}

async function loadModels() {
  const status = $("status");
  try {
    const health = await fetch("/health");
    if (health.status === 503) { status.textContent = "loading models…"; setTimeout(loadModels, 1000); return; }
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) throw new Error(await errorText(response));
    models = (await response.json()).data;
    status.textContent = models.length + " model" + (models.length === 1 ? "" : "s") + " served";
    status.className = "status";
  } catch (err) {
    status.textContent = err.message;
    status.className = "status error";
    return;
  }
  fill($("chat-model"), models.filter((m) => m.kind === "decoder"));
  fill($("task-model"), models.filter((m) => m.kind === "task"));
  fill($("attn-model"), models.filter((m) => m.endpoints.includes("/v1/attention")));
  showRoute();
  document.body.dataset.ready = "yes";
}

// -- chat ---------------------------------------------------------------------------------------
let history = [];

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("chat-log").appendChild(div);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return div;
}

async function sendChat() {
  const text = $("chat-input").value.trim();
  const model = $("chat-model").value;
  if (!text || !model) return;
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  $("chat-log").dataset.state = "streaming";
  bubble("user", text);
  const reply = bubble("assistant", "");
  const messages = history.concat([{ role: "user", content: text }]);
  try {
    const response = await post("/v1/chat/completions", {
      model, messages, stream: true, stream_options: { include_usage: true },
      temperature: Number($("chat-temperature").value), max_tokens: Number($("chat-max-tokens").value),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", usage = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const chunk = JSON.parse(event.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices) reply.textContent += choice.delta.content || "";
        $("chat-log").scrollTop = $("chat-log").scrollHeight;
      }
    }
    history = messages.concat([{ role: "assistant", content: reply.textContent }]);
    $("chat-note").textContent = usage ? usage.prompt_tokens + " prompt tokens, " + usage.completion_tokens +
      " generated" : "";
  } catch (err) {
    reply.classList.add("error");
    reply.textContent = err.message;
  } finally {
    $("chat-send").disabled = false;
    $("chat-log").dataset.state = "done";
  }
}

$("chat-send").addEventListener("click", sendChat);
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendChat(); }
});
$("chat-reset").addEventListener("click", () => { history = []; $("chat-log").innerHTML = ""; });

// -- task -----------------------------------------------------------------------------------------
function taskRoute() {
  const m = models.find((x) => x.id === $("task-model").value);
  return m ? m.endpoints.find((e) => e !== "/v1/attention") : null;
}

function showRoute() { $("task-route").textContent = taskRoute() || ""; }
$("task-model").addEventListener("change", showRoute);

$("task-run").addEventListener("click", async () => {
  const out = $("task-output");
  const raw = $("task-input").value.trim();
  if (!raw || !taskRoute()) return;
  let record = raw;
  if (raw.startsWith("{")) {
    try { record = JSON.parse(raw); } catch (e) { out.textContent = "not valid JSON: " + e.message; return; }
  }
  out.className = "";
  out.textContent = "…";
  try {
    const response = await post(taskRoute(), { model: $("task-model").value, input: [record] });
    out.textContent = JSON.stringify((await response.json()).data[0], null, 2);
  } catch (err) {
    out.className = "error";
    out.textContent = err.message;
  }
});

// -- attention ------------------------------------------------------------------------------------
$("attn-run").addEventListener("click", async () => {
  const note = $("attn-note");
  const layers = $("attn-layers").value.trim();
  const body = { model: $("attn-model").value, input: $("attn-input").value };
  if (layers) body.layers = layers.split(",").map((x) => Number(x.trim()));
  note.className = "note";
  note.textContent = "drawing…";
  try {
    const response = await post("/v1/attention", body);
    const image = $("attn-image");
    if (image.src) URL.revokeObjectURL(image.src);
    image.src = URL.createObjectURL(await response.blob());
    note.textContent = "Head-averaged attention probabilities of each layer: row = query token, column = key token.";
  } catch (err) {
    note.className = "note error";
    note.textContent = err.message;
  }
});

loadModels();
