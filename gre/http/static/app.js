// gre's try-it page (gre/http/static/index.html). No framework, no build step.
//
// It calls only the public API: GET /api/model once, then POST /api/classify with the raw
// image bytes as the body (as `curl --data-binary @cat.jpg` does). Whatever the server sends
// is put in the page as text (textContent, never innerHTML): a label is a line of the model's
// synset words and may carry markup.
//
// The page is served with `Content-Security-Policy: default-src 'self'`, so this file holds
// all the script (none inline), style.css all the style, and the preview loads no URL: the
// file is decoded with createImageBitmap and drawn on a canvas (a blob: or data: URL in an
// <img> would be refused).

const $ = (id) => document.getElementById(id);

const form = $("form");
const fileInput = $("file");
const topK = $("top-k");
const again = $("classify");
const drop = $("drop");
const result = $("result");
const statusLine = $("status");
const labels = $("labels");
const errorBox = $("error");
const timing = $("timing");
const raw = $("raw");

/** The longest side of the preview, in canvas pixels. */
const PREVIEW_SIDE = 640;

/** The file being classified (null before the first). */
let current = null;
/** Each classification's number: an answer to an older one than the latest is dropped. */
let sequence = 0;
/** top_k as last sent, so that leaving the field unchanged sends nothing. */
let sentTopK = null;
/** Answers shown so far (result's data-answers: what the tests wait on). */
let answers = 0;

function setState(state, text) {
  if (state !== "busy") result.dataset.answers = String(++answers);
  result.dataset.state = state;
  result.setAttribute("aria-busy", String(state === "busy"));
  statusLine.textContent = text;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** GET /api/model: name, engine, classes, devices, batching into the header; top_k's bound. */
async function loadModel() {
  try {
    const response = await fetch("/api/model", { headers: { Accept: "application/json" } });
    const model = await response.json();
    if (!response.ok) throw new Error(`${model.error}: ${model.message}`);
    $("model-name").textContent = model.name;
    $("model-engine").textContent = model.engine;
    $("model-classes").textContent = String(model.classes ?? "unknown");
    $("model-devices").textContent = model.devices.join(", ");
    $("model-batching").textContent = Object.entries(model.batching)
      .map(([key, value]) => `${key} ${value}`)
      .join(", ");
    if (Number.isInteger(model.classes)) {
      // gre refuses a top_k above the class count (422 bad_top_k): start within it.
      topK.max = String(model.classes);
      if (Number(topK.value) > model.classes) topK.value = String(model.classes);
    }
  } catch (error) {
    $("model-name").textContent = `unavailable (${error.message})`;
  }
}

const modelLoaded = loadModel();

function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

/** A file name as a shell word, for the curl line. */
function shellWord(name) {
  return /^[\w.,+@%/-]+$/.test(name) ? name : `'${name.replaceAll("'", "'\\''")}'`;
}

async function showPreview(file) {
  const canvas = $("preview");
  $("file-name").textContent = `${file.name || "pasted image"} · ${formatBytes(file.size)}`;
  $("preview-figure").hidden = false;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    if (file === current) {
      canvas.hidden = true;
      $("preview-note").hidden = false;
    }
    return;
  }
  if (file !== current) {
    bitmap.close();
    return;
  }
  const scale = Math.min(1, PREVIEW_SIDE / Math.max(bitmap.width, bitmap.height));
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  canvas.setAttribute("aria-label", `preview of ${file.name || "the pasted image"}`);
  canvas.hidden = false;
  $("preview-note").hidden = true;
}

function clearResult() {
  labels.replaceChildren();
  $("timings").replaceChildren();
  $("timing-bar").replaceChildren();
  errorBox.hidden = true;
  timing.hidden = true;
  raw.hidden = true;
}

/** 200: one row per class, most probable first, with its confidence as text and a bar. */
function showLabels(answer) {
  for (const { label, confidence } of answer) {
    const row = element("li", "row");
    const value = element("data", "confidence", `${(confidence * 100).toFixed(2)}%`);
    value.value = String(confidence);
    value.title = String(confidence);
    const bar = element("span", "bar");
    bar.setAttribute("aria-hidden", "true");
    const fill = element("span", "fill");
    // The CSSOM, not a style attribute: the CSP allows the one, not the other.
    fill.style.width = `${Math.min(1, Math.max(0, confidence)) * 100}%`;
    bar.append(fill);
    row.append(element("span", "label", label), value, bar);
    labels.append(row);
  }
}

/** `queue;dur=0.041, preprocess;dur=3.1, inference;dur=20.5` -> [{name, dur}, ...] */
function parseServerTiming(header) {
  return header
    .split(",")
    .map((entry) => {
      const [name, ...params] = entry.split(";").map((part) => part.trim());
      const dur = params.find((param) => param.startsWith("dur="));
      return { name, dur: dur === undefined ? NaN : Number(dur.slice(4)) };
    })
    .filter((metric) => metric.name);
}

function showTiming(header, roundTripMs) {
  const list = $("timings");
  const bar = $("timing-bar");
  for (const { name, dur } of parseServerTiming(header ?? "")) {
    const term = element("dt", "", name);
    term.prepend(element("span", `swatch swatch-${name}`));
    list.append(term, element("dd", "", Number.isFinite(dur) ? `${dur.toFixed(2)} ms` : "?"));
    if (Number.isFinite(dur)) {
      const segment = element("span", `segment swatch-${name}`);
      segment.style.flexGrow = String(dur);
      segment.title = `${name} ${dur.toFixed(2)} ms`;
      bar.append(segment);
    }
  }
  list.append(element("dt", "total", "round trip (browser)"));
  list.append(element("dd", "total", `${roundTripMs.toFixed(2)} ms`));
  timing.hidden = false;
}

/** A refusal: gre's error JSON (`{"error": code, "message": ...}`) as it came. */
function showError(response, body, text) {
  const isGre = body !== null && typeof body === "object" && typeof body.error === "string";
  $("error-code").textContent = isGre ? body.error : "error";
  $("error-status").textContent = `HTTP ${response.status} ${response.statusText}`.trim();
  $("error-body").textContent = body === undefined ? text : JSON.stringify(body, null, 2);
  errorBox.hidden = false;
  const why = isGre && typeof body.message === "string" ? body.message : `HTTP ${response.status}`;
  setState("error", `Refused: ${why}`);
}

async function classify() {
  if (current === null) return;
  const file = current;
  const mine = ++sequence;
  sentTopK = topK.value;
  await modelLoaded;
  if (mine !== sequence) return;
  const k = topK.value.trim();
  const url = k === "" ? "/api/classify" : `/api/classify?top_k=${encodeURIComponent(k)}`;
  const name = file.name || "image";
  $("curl").textContent = `curl --data-binary @${shellWord(name)} '${location.origin}${url}'`;
  setState("busy", `Classifying ${name}…`);
  const started = performance.now();
  let response;
  let text;
  try {
    response = await fetch(url, {
      method: "POST",
      body: file,
      headers: { "Content-Type": "application/octet-stream" },
    });
    text = await response.text();
  } catch (error) {
    if (mine !== sequence) return;
    clearResult();
    setState("error", `No answer from gre: ${error.message}`);
    return;
  }
  if (mine !== sequence) return;
  const roundTripMs = performance.now() - started;
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  clearResult();
  if (response.ok && Array.isArray(body)) {
    showLabels(body);
    showTiming(response.headers.get("Server-Timing"), roundTripMs);
    $("raw-body").textContent = JSON.stringify(body, null, 2);
    raw.hidden = false;
    const top = body.length ? `: ${body[0].label}` : "";
    setState("done", `${name}, top ${body.length}${top}`);
  } else {
    showError(response, body, text);
  }
}

function use(file) {
  current = file;
  again.disabled = false;
  showPreview(file);
  classify();
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) use(fileInput.files[0]);
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  classify();
});

topK.addEventListener("change", () => {
  if (topK.value !== sentTopK) classify();
});

function carriesFiles(event) {
  return event.dataTransfer !== null && Array.from(event.dataTransfer.types).includes("Files");
}

// A file dropped anywhere on the page is classified (rather than opened by the browser).
document.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  drop.classList.add("over");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) drop.classList.remove("over");
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) {
    fileInput.value = "";
    use(event.dataTransfer.files[0]);
  }
});

// A pasted image (a screenshot, a copied picture) too; pasted text is left alone.
document.addEventListener("paste", (event) => {
  const files = event.clipboardData ? event.clipboardData.files : [];
  if (!files.length) return;
  event.preventDefault();
  fileInput.value = "";
  use(files[0]);
});
