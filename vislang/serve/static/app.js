// The vislang web page: search the index, caption / ask about / classify an image, generate images from a
// prompt. Plain JavaScript, no build step; every request goes to this server's /v1 API (docs/serve.md).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "vislang-token";
// page panel -> the tasks whose models serve it (`task` of GET /v1/models)
const PANELS = { search: ["retrieval"], caption: ["caption"], ask: ["vqa"], classify: ["classify"],
  generate: ["generate"] };
// the element shown or hidden for a panel (the image tasks are forms of one panel)
const PANEL_ELEMENT = { search: "search-panel", generate: "generate-panel" };

let image = null;      // the chosen image (a File or Blob)
let previewUrl = null; // its object URL
let blobUrls = [];     // thumbnails fetched with the token, revoked on the next search

// ------------------------------------------------------------------------------------------ requests

class ApiError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** fetch `path` with the token; answers the Response, or throws ApiError with the error body's message. */
async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  let res;
  try {
    res = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError("The server cannot be reached (" + e.message + ").");
  }
  if (res.ok) return res;
  let message = res.status + " " + res.statusText;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (e) { /* not JSON: keep the status line */ }
  if (res.status === 401) {
    $("auth").hidden = false;
    $("token").focus();
  }
  throw new ApiError(message);
}

/** POST a multipart form built from `fields` (values left out when null or ""); answers the JSON. */
async function post(path, fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value === null || value === undefined || value === "") continue;
    if (value instanceof Blob) form.append(name, value, value.name || "image");
    else form.append(name, String(value));
  }
  if ($("explain").checked) form.append("explain", "true");
  return (await request(path, { method: "POST", body: form })).json();
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

/** Run `work` with `button` disabled, reporting errors in the status region. */
async function busy(button, label, work) {
  button.disabled = true;
  say(label + "…");
  try {
    await work();
    say(label + ": done.");
  } catch (e) {
    say(e instanceof ApiError ? e.message : "Error: " + e.message, true);
    if (!(e instanceof ApiError)) console.error(e);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------ models

function fillModels(panel, models) {
  const select = $(panel + "-model");
  const several = models.length > 1;
  select.hidden = !several;
  select.previousElementSibling.hidden = !several;
  select.replaceChildren(...models.map((m) => new Option(m.name, m.name, m.default, m.default)));
}

function modelOf(panel) {
  const select = $(panel + "-model");
  return select.hidden ? null : select.value;
}

async function loadModels() {
  let body;
  try {
    body = await (await request("v1/models")).json();
  } catch (e) {
    $("models-summary").textContent = "Models could not be listed.";
    say(e.message, true);
    return;
  }
  const names = [];
  for (const [panel, tasks] of Object.entries(PANELS)) {
    const models = body.models.filter((m) => tasks.includes(m.task));
    let shown = models.length > 0;
    if (panel === "search") shown = shown && body.index !== null;
    $(PANEL_ELEMENT[panel] || panel + "-form").hidden = !shown;
    if (shown) fillModels(panel, models);
  }
  $("image-panel").hidden = ["caption", "ask", "classify"].every((p) => $(p + "-form").hidden);
  for (const m of body.models) names.push(m.name + " (" + m.task + ")");
  let summary = names.length ? "Models: " + names.join(", ") + "." : "No models loaded.";
  if (body.index) summary += " Index: " + body.index.size + " " + body.index.modality + " items.";
  $("models-summary").textContent = summary;
  if (!$("status").classList.contains("error")) say("");
}

// ------------------------------------------------------------------------------------------ search

/** An <img> source for a thumbnail URL: the URL itself, or with a token a blob URL of its fetched bytes. */
async function thumbnailSrc(url) {
  if (!token()) return url;
  const blob = await (await request(url)).blob();
  const src = URL.createObjectURL(blob);
  blobUrls.push(src);
  return src;
}

function hitCard(hit) {
  const li = document.createElement("li");
  li.className = "card";
  const scoreText = "#" + hit.rank + " · " + hit.score.toFixed(3);
  let body;
  if (hit.thumbnail) {
    body = document.createElement("button");
    body.type = "button";
    body.className = "hit";
    body.title = "Search by this image";
    body.setAttribute("aria-label", "Search by image " + hit.id + " (score " + hit.score.toFixed(3) + ")");
    body.addEventListener("click", () => busy(body, "Searching by image", () => searchByImage(hit)));
    const img = document.createElement("img");
    img.alt = hit.id;
    img.className = "thumb";
    thumbnailSrc(hit.thumbnail).then((src) => { img.src = src; }, (e) => say(e.message, true));
    body.append(img);
  } else {
    body = document.createElement("p");
    body.className = "hit-text";
    body.textContent = hit.text || "";
  }
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = scoreText;
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = hit.id;
  li.append(body, score, id);
  if (hit.explanation && hit.explanation.png) li.append(explanationImg(hit.explanation.png, "Regions of " + hit.id + " matching the query"));
  return li;
}

function explanationImg(src, alt) {
  const img = document.createElement("img");
  img.className = "explanation";
  img.src = src;
  img.alt = alt;
  return img;
}

function showHits(body) {
  blobUrls.forEach((u) => URL.revokeObjectURL(u));
  blobUrls = [];
  $("search-query").textContent = body.query.text !== undefined
    ? body.hits.length + " results for “" + body.query.text + "”"
    : body.hits.length + " results for the image";
  $("results").replaceChildren(...body.hits.map(hitCard));
}

function searchFields(extra) {
  return { k: $("search-k").value, model: modelOf("search"), ...extra };
}

async function searchByText() {
  showHits(await post("v1/search", searchFields({ text: $("search-text").value.trim() })));
}

async function searchByImage(hit) {
  const blob = await (await request(hit.thumbnail)).blob();
  showHits(await post("v1/search", searchFields({ image: new File([blob], hit.id.split("/").pop() || "image") })));
}

// ------------------------------------------------------------------------------------------ image tasks

function chooseImage(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    say(file.name + " is not an image.", true);
    return;
  }
  image = file;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  $("preview").src = previewUrl;
  $("preview").alt = "The chosen image: " + (file.name || "dropped image");
  $("preview").hidden = false;
  say("Image: " + (file.name || "dropped image") + ".");
}

function needImage() {
  if (!image) throw new ApiError("Pick or drop an image first.");
  return image;
}

function showExplanation(id, explanation) {
  const img = $(id);
  img.hidden = !(explanation && explanation.png);
  if (!img.hidden) img.src = explanation.png;
}

function showTop(id, rows, key) {
  $(id).replaceChildren(...rows.map((r) => {
    const li = document.createElement("li");
    li.textContent = r[key] + " " + (100 * r.p).toFixed(1) + "%";
    return li;
  }));
}

async function caption() {
  const body = await post("v1/caption", { image: needImage(), model: modelOf("caption") });
  $("caption-text").textContent = body.caption || "(an empty caption)";
  showExplanation("caption-explanation", body.explanation);
}

async function ask() {
  const question = $("question").value.trim();
  const body = await post("v1/ask", { image: needImage(), question, model: modelOf("ask") });
  let text = body.answer + " (" + (100 * body.confidence).toFixed(1) + "%)";
  if (body.notes && body.notes.length) text += " — " + body.notes.join("; ");
  $("answer").textContent = text;
  showTop("answer-top", body.top || [], "answer");
  showExplanation("ask-explanation", body.explanation);
}

async function classify() {
  const text = $("classify-text").value.trim();
  const body = await post("v1/classify", { image: needImage(), text, model: modelOf("classify") });
  let shown = body.label + " (" + (100 * body.confidence).toFixed(1) + "%)";
  const weights = body.explanation && body.explanation.modality_weights;
  if (weights) shown += " — image " + weights.image.toFixed(2) + ", text " + weights.text.toFixed(2);
  $("label").textContent = shown;
  showTop("label-top", body.top || [], "label");
  showExplanation("classify-explanation", body.explanation);
}

// ------------------------------------------------------------------------------------------ generate

function generatedCard(generated, prompt) {
  const li = document.createElement("li");
  li.className = "card";
  const link = document.createElement("a");
  link.href = generated.png;
  link.download = "generated-seed-" + generated.seed + ".png";
  link.title = "Download (seed " + generated.seed + ")";
  const img = document.createElement("img");
  img.className = "generated-image";
  img.src = generated.png;
  img.alt = "“" + prompt + "”, seed " + generated.seed;
  link.append(img);
  const seed = document.createElement("span");
  seed.className = "score";
  seed.textContent = "seed " + generated.seed;
  li.append(link, seed);
  return li;
}

async function generate() {
  $("generate-warnings").textContent = "";
  $("generated").replaceChildren();
  showExplanation("generate-explanation", null);
  const body = await post("v1/generate", {
    prompt: $("prompt").value, n: $("generate-n").value, guidance: $("guidance").value,
    steps: $("steps").value, seed: $("seed").value, sampler: $("sampler").value, model: modelOf("generate"),
  });
  $("generate-warnings").textContent = (body.warnings || []).join(" ");
  $("generated").replaceChildren(...body.images.map((g) => generatedCard(g, body.prompt)));
  showExplanation("generate-explanation", body.explanation);
}

// ------------------------------------------------------------------------------------------ wiring

function onSubmit(formId, buttonId, label, work) {
  $(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    busy($(buttonId), label, work);
  });
}

function init() {
  onSubmit("search-form", "search-button", "Searching", searchByText);
  onSubmit("caption-form", "caption-button", "Captioning", caption);
  onSubmit("ask-form", "ask-button", "Asking", ask);
  onSubmit("classify-form", "classify-button", "Classifying", classify);
  onSubmit("generate-form", "generate-button", "Generating", generate);
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("auth").hidden = true;
    say("Token set.");
    loadModels();
  });
  $("image-input").addEventListener("change", (e) => chooseImage(e.target.files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    chooseImage(e.dataTransfer.files[0]);
  });
  loadModels();
}

init();
