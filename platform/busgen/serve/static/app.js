// BUSGen playground: a static page over the BUSGen HTTP API. Every call sends the bearer token
// the user typed (kept in sessionStorage for this tab only); the page itself holds no data.
// Every string from the server (labels, domains, model ids, class names) comes from data made
// elsewhere, so it is written with textContent through el(), never as HTML: a label such as
// <img src=x onerror=...> shows as text. The server's Content-Security-Policy forbids inline
// script as a second line of defence.
//
// Two modes: the API-token page (generate, classify, browse, the study owner's view), and the
// reader page, opened from a link /ui/index.html#reader=<token>: it shows the reader's study
// items and nothing else, and calls the API with that reader token only.
"use strict";

const $ = (id) => document.getElementById(id);

// el("div", {className: "card"}, child, "text", ...): an element whose text children are text nodes.
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
const state = { models: null, box: null, gallery: { page: 0, pages: 1 }, study: { item: 0, items: 0 }, upload: null };

function token() { return sessionStorage.getItem("busgen-token") || ""; }
function readerToken() { return sessionStorage.getItem("busgen-reader") || ""; }

function say(text, ok = false) {
  $("status").textContent = text;
  $("status").className = ok ? "ok" : "";
}

async function call(path, options, auth) {
  const headers = Object.assign(auth, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw Object.assign(new Error(`${resp.status}: ${detail}`), { status: resp.status });
  }
  return body;
}
const api = (path, options = {}) => call(path, options, { Authorization: "Bearer " + token() });
const readerApi = (path, options = {}) => call(path, options, { "X-Study-Reader-Token": readerToken() });

function options(select, values, labels) {
  select.replaceChildren();
  values.forEach((v, i) => {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = labels ? labels[i] : v;
    select.appendChild(o);
  });
}

function png(b64) { return "data:image/png;base64," + b64; }

function showTab(name) {
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "tab-" + name));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
}

// --- image views: native pixels x integer zoom, window/level, lesion box ---------------------
// Every image is a canvas redrawn from its original PNG whenever the zoom or window/level
// changes: integer scales with smoothing off, so one image pixel is an exact square.
const view = { zoom: 4, width: 256, level: 128, box: true };
const views = new Set();

function imageView(src, box = null, className = "view") {
  const canvas = el("canvas", { className });
  const img = new Image();
  canvas.source = { img, box };
  img.addEventListener("load", () => renderView(canvas));
  img.src = src;
  views.add(canvas);
  return canvas;
}

function windowed(ctx, w, h) {
  // Window/level: grey values in [level - width/2, level + width/2] stretched to 0..255.
  if (view.width === 256 && view.level === 128) return;  // the identity: leave the pixels alone
  const lo = view.level - view.width / 2, scale = 255 / (view.width - 1);
  const lut = new Uint8ClampedArray(256).map((_, v) => Math.round((v - lo) * scale));
  const data = ctx.getImageData(0, 0, w, h);
  for (let i = 0; i < data.data.length; i += 4) {
    data.data[i] = lut[data.data[i]]; data.data[i + 1] = lut[data.data[i + 1]]; data.data[i + 2] = lut[data.data[i + 2]];
  }
  ctx.putImageData(data, 0, 0);
}

function renderView(canvas) {
  const { img, box } = canvas.source;
  if (!img.complete || !img.naturalWidth) return;
  const w = img.naturalWidth, h = img.naturalHeight, z = view.zoom;
  const native = el("canvas", { width: w, height: h });
  const nctx = native.getContext("2d");
  nctx.drawImage(img, 0, 0);
  windowed(nctx, w, h);
  canvas.width = w * z;
  canvas.height = h * z;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(native, 0, 0, w * z, h * z);
  if (view.box && box && box.length === 4) {
    ctx.strokeStyle = "#ffcc00";
    ctx.lineWidth = Math.max(1, z / 2);
    ctx.strokeRect(box[0] * w * z, box[1] * h * z, (box[2] - box[0]) * w * z, (box[3] - box[1]) * h * z);
  }
  canvas.dataset.zoom = String(z);
}

function renderAll() {
  for (const canvas of [...views]) {
    if (canvas.isConnected) renderView(canvas);
    else views.delete(canvas);  // replaced results: forget them
  }
}

function setupViewbar() {
  const read = () => {
    view.zoom = Number($("zoom").value);
    view.width = Number($("win-width").value);
    view.level = Number($("win-level").value);
    view.box = $("show-box").checked;
    $("win-width-value").textContent = view.width;
    $("win-level-value").textContent = view.level;
    renderAll();
  };
  for (const id of ["zoom", "win-width", "win-level", "show-box"]) $(id).addEventListener("input", read);
  $("zoom").addEventListener("change", read);
  $("win-reset").addEventListener("click", () => { $("win-width").value = 256; $("win-level").value = 128; read(); });
  $("zoom").value = String(view.zoom);
}

function defaultZoom(size, target = 160) {
  // The largest offered integer scale that keeps an image within ~target px on screen.
  return [8, 6, 4, 3, 2, 1].find((z) => size * z <= target) || 1;
}

// --- downloads: the original bytes, never the windowed view ----------------------------------
function pngLink(b64, name, text = "PNG") {
  return el("a", { href: png(b64), download: name, className: "download" }, text);
}

function jsonLink(obj, name, text = "JSON") {
  const href = "data:application/json;charset=utf-8," + encodeURIComponent(JSON.stringify(obj, null, 2));
  return el("a", { href, download: name, className: "download" }, text);
}

function b64Blob(b64, type = "image/png") {
  return new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type });
}

// --- connection ---------------------------------------------------------------------------
async function connect(ev) {
  if (ev) ev.preventDefault();
  if ($("token").value) sessionStorage.setItem("busgen-token", $("token").value);
  try {
    state.models = await api("/v1/models");
  } catch (err) {
    $("conn").textContent = "not connected";
    say("Cannot connect: " + err.message);
    return;
  }
  const m = state.models;
  $("conn").textContent = `connected: ${m.generators.length} generator(s), ${Object.keys(m.classifiers).length} classifier(s)`;
  options($("gen-model"), m.generators.map((g) => g.id));
  $("gen-model").value = m.default_generator;
  options($("gen-sampler"), m.samplers);
  options($("gen-protect"), m.protect.concat(m.protect_planned),
    m.protect.concat(m.protect_planned.map((p) => p + " (planned)")));
  [...$("gen-protect").options].forEach((o) => { o.disabled = !m.protect.includes(o.value); });
  $("gen-nearest").checked = m.nearest;
  $("gen-nearest").disabled = !m.nearest;
  $("gen-n").max = m.limits.max_n;
  $("gen-steps").max = m.limits.max_steps;
  fillModel();
  options($("gal-name"), m.galleries);
  if (m.galleries.length) loadGallery(0);
  loadExamples();
  say("Connected.", true);
}

function generatorInfo() { return state.models.generators.find((x) => x.id === $("gen-model").value); }

function fillModel() {
  const g = generatorInfo(), d = g.defaults, limits = state.models.limits;
  options($("gen-label"), g.class_names);
  options($("gen-domain"), [""].concat(g.domain_names), ["(unconditional)"].concat(g.domain_names));
  // The model card's recommended settings (its sampler_defaults), within the server's limits.
  $("gen-steps").value = Math.min(d.steps, limits.max_steps);
  $("gen-guidance").value = d.guidance;
  $("gen-sampler").value = d.sampler;
  const capped = d.steps > limits.max_steps ? ` (this server allows at most ${limits.max_steps} steps)` : "";
  $("gen-defaults").textContent =
    `Model card defaults: ${d.steps} steps, guidance ${d.guidance}, ${d.sampler}${capped}. Images are ${g.image_size} px.`;
  view.zoom = defaultZoom(g.image_size);
  $("zoom").value = String(view.zoom);
  renderAll();
  fillGenerateExamples(g);
}

// --- generate ------------------------------------------------------------------------------
function drawBox() {
  const c = $("box-canvas"), ctx = c.getContext("2d");
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, c.width, c.height);
  if (!state.box) { $("box-value").textContent = "drawn from the prior"; return; }
  const [x0, y0, x1, y1] = state.box;
  ctx.strokeStyle = "#ffcc00";
  ctx.lineWidth = 2;
  ctx.strokeRect(x0 * c.width, y0 * c.height, (x1 - x0) * c.width, (y1 - y0) * c.height);
  $("box-value").textContent = state.box.map((v) => v.toFixed(2)).join(", ");
}

function setupCanvas() {
  const c = $("box-canvas");
  let start = null;
  const at = (ev) => {
    const r = c.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)),
            Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))];
  };
  c.addEventListener("mousedown", (ev) => { start = at(ev); });
  c.addEventListener("mousemove", (ev) => {
    if (!start) return;
    const p = at(ev);
    const box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    if (box[2] - box[0] > 0.01 && box[3] - box[1] > 0.01) { state.box = box; drawBox(); }
  });
  window.addEventListener("mouseup", () => { start = null; });
  $("box-clear").addEventListener("click", () => { state.box = null; drawBox(); });
  drawBox();
}

// Example requests: a small lesion, a large one, and the class's own box prior.
const EXAMPLE_BOXES = [["small lesion, upper left", [0.15, 0.2, 0.42, 0.45]],
  ["large lesion, centre", [0.22, 0.25, 0.8, 0.72]], ["box from the prior", null]];

function fillGenerateExamples(g) {
  const buttons = EXAMPLE_BOXES.map(([what, box], i) => {
    const label = g.class_names[i % g.class_names.length];
    const b = el("button", { type: "button", className: "example" }, `${label}: ${what}`);
    b.addEventListener("click", () => {
      $("gen-label").value = label;
      state.box = box;
      $("gen-seed").value = 100 + i;
      drawBox();
      generate();
    });
    return b;
  });
  $("gen-examples").replaceChildren(...buttons);
}

function nearestLine(nn, metric) {
  const verdict = nn.possible_copy ? "possible copy: check before sharing" : "not a copy";
  const out = el("div", { className: "nearest-info" },
    "nearest training image: r = ", el("span", { className: "similarity" }, Number(nn.similarity).toFixed(3)), " ",
    el("span", { className: "verdict " + (nn.possible_copy ? "copy" : "ok") }, verdict),
    ` (threshold ${metric.threshold})`);
  if (nn.percentile !== null && nn.percentile !== undefined) {
    out.append(el("div", { className: "muted" },
      `higher than the nearest-neighbour similarity of ${nn.percentile}% of training images`));
  }
  return out;
}

async function generate() {
  const body = {
    model: $("gen-model").value,
    label: $("gen-label").value,
    n: Number($("gen-n").value),
    steps: Number($("gen-steps").value),
    guidance: Number($("gen-guidance").value),
    sampler: $("gen-sampler").value,
    seed: Number($("gen-seed").value),
    protect: $("gen-protect").value,
    nearest: $("gen-nearest").checked,
  };
  if ($("gen-domain").value) body.domain = $("gen-domain").value;
  if (state.box) body.box = state.box.map((v) => Math.round(v * 1000) / 1000);
  say("Generating...", true);
  $("gen-run").disabled = true;
  try {
    const out = await api("/v1/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const stem = `busgen-${out.model_id}-${out.label}`;
    const summary = [jsonLink(out, `${stem}-seed${out.seeds[0]}.json`, "Download the result (JSON)")];
    if (out.nearest_metric) {
      const m = out.nearest_metric;
      summary.push(el("p", { className: "muted legend" },
        `Nearest training image: ${m.metric}, searched over ${m.reference_size} training images; ` +
        `r >= ${m.threshold} flags a possible copy (the training images' own nearest-neighbour median is ` +
        `${m.reference_median}).`));
    }
    $("gen-summary").replaceChildren(...summary);
    $("gen-results").replaceChildren(...out.images.map((img, i) => {
      const card = el("div", { className: "card gen-item" },
        imageView(png(img), out.boxes[i], "view generated"),
        el("div", {}, `seed ${out.seeds[i]} `, pngLink(img, `${stem}-seed${out.seeds[i]}.png`)),
        el("div", { className: "muted box-text" },
          out.boxes[i].length ? "box " + out.boxes[i].map((v) => v.toFixed(2)).join(", ") : "no box"));
      if (out.nearest) {
        const nn = out.nearest[i];
        card.append(imageView(png(nn.image), null, "view nearest"), nearestLine(nn, out.nearest_metric),
          el("div", { className: "prov" }, nn.source, " ", pngLink(nn.image, `nearest-seed${out.seeds[i]}.png`)));
      }
      return card;
    }));
    say(`${out.images.length} image(s) from ${out.model} (${out.model_id}), ${out.sampler}, ${out.steps} steps, ` +
      `guidance ${out.guidance}.`, true);
  } catch (err) {
    say("Generate failed: " + err.message);
  } finally {
    $("gen-run").disabled = false;
  }
}

// --- classify ------------------------------------------------------------------------------
function chooseUpload(blob, name) {
  state.upload = { blob, name };
  $("clf-preview-name").textContent = name;
  $("clf-results").replaceChildren();
  if (/\.(dcm|dicom)$/i.test(name) || blob.type === "application/dicom") {
    $("clf-preview-image").replaceChildren(el("p", { className: "muted" },
      "DICOM: decoded on the server only, so no preview here."));
    return;
  }
  const reader = new FileReader();  // a data: URL (the page's CSP allows data: images, not blob:)
  reader.addEventListener("load", () => $("clf-preview-image").replaceChildren(imageView(reader.result, null, "view upload")));
  reader.readAsDataURL(blob);
}

async function loadExamples() {
  const buttons = [];
  const add = (b64, name, caption) => {
    const b = el("button", { type: "button", className: "card example-image" },
      imageView(png(b64), null, "view thumb"), el("div", {}, caption));
    b.addEventListener("click", () => chooseUpload(b64Blob(b64), name));
    buttons.push(b);
  };
  try {
    for (const ex of (await api("/v1/examples")).examples) add(ex.image, ex.name, `phantom (${ex.label})`);
    const gallery = state.models.galleries[0];
    if (gallery) {
      const page = await api(`/v1/gallery/${encodeURIComponent(gallery)}?page_size=3`);
      page.items.forEach((it) => add(it.image, `${gallery}-${it.row}.png`, `${gallery}: ${it.label}`));
    }
  } catch (err) {
    say("Examples failed: " + err.message);
  }
  $("clf-examples").replaceChildren(...buttons);
}

async function classify() {
  if (!state.upload) { say("Choose a PNG, JPEG or DICOM file, or an example, first."); return; }
  const { blob, name } = state.upload;
  const out = $("clf-results");
  out.replaceChildren();
  for (const id of Object.keys(state.models.classifiers)) {
    const form = new FormData();
    form.append("file", blob, name);
    try {
      const r = await api("/v1/classify?model=" + encodeURIComponent(id), { method: "POST", body: form });
      const rows = Object.entries(r.probs).map(([k, p]) => {
        const bar = el("span", { className: "bar" });
        bar.style.width = `${Math.round(Number(p) * 150)}px`;  // CSSOM, not a style attribute: allowed by the CSP
        return el("tr", {}, el("th", {}, k), el("td", {}, Number(p).toFixed(3)), el("td", {}, bar));
      });
      out.append(el("div", { className: "clf-result" },
        el("h4", {}, `${id}: `, el("span", { className: "clf-label" }, r.label), " ",
          jsonLink({ file: name, ...r }, `classify-${id}-${name}.json`)),
        el("div", { className: "muted" }, `model ${r.model_id}, version ${r.model_version}`),
        el("table", {}, ...rows)));
    } catch (err) {
      say(`Classify (${id}) failed: ` + err.message);
      return;
    }
  }
  say("Classified.", true);
}

// --- browse --------------------------------------------------------------------------------
async function loadGallery(page) {
  const name = $("gal-name").value;
  if (!name) return;
  const q = new URLSearchParams({ page, page_size: 12 });
  if ($("gal-label").value) q.set("label", $("gal-label").value);
  if ($("gal-domain").value) q.set("domain", $("gal-domain").value);
  try {
    const out = await api(`/v1/gallery/${encodeURIComponent(name)}?` + q);
    state.gallery = { page: out.page, pages: out.pages };
    for (const [sel, values] of [["gal-label", out.labels], ["gal-domain", out.domains]]) {
      const keep = $(sel).value;
      options($(sel), [""].concat(values), ["(all)"].concat(values));
      $(sel).value = keep;
    }
    $("gal-page").textContent = `page ${out.page + 1} / ${out.pages} (${out.total} images)`;
    $("gal-grid").replaceChildren(...out.items.map((it) => el("div", { className: "card gal-item" },
      imageView(png(it.image), it.box || null, "view"),
      el("div", {}, `${it.label} / ${it.domain} `, pngLink(it.image, `${name}-${it.row}.png`), " ",
        jsonLink(it, `${name}-${it.row}.json`)),
      el("div", { className: "prov" }, `model ${it.model_id ?? "-"}, seed ${it.seed ?? "-"}, ${it.sampler ?? "-"}`))));
  } catch (err) {
    say("Browse failed: " + err.message);
  }
}

// --- reader study: the owner's view ----------------------------------------------------------
function ownerHeaders() { return { "X-Study-Owner-Token": $("study-owner").value }; }

async function addReaders() {
  try {
    const out = await api("/v1/study/readers", {
      method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, ownerHeaders()),
      body: JSON.stringify({ count: Number($("study-count").value) }),
    });
    const body = document.querySelector("#study-links tbody");
    for (const r of out.readers) {
      const link = el("input", { value: location.origin + r.link, readOnly: true, size: 48, className: "link" });
      const copy = el("button", { type: "button" }, "copy");
      copy.addEventListener("click", () => { link.select(); navigator.clipboard?.writeText(link.value); });
      const row = el("tr", {}, el("th", {}, r.reader), el("td", {}, link, copy));
      row.dataset.reader = r.reader;
      body.append(row);
    }
    say(`Created ${out.readers.length} reader link(s): send each to one reader.`, true);
    await studyResults();
  } catch (err) {
    say("Creating readers failed: " + err.message);
  }
}

async function studyResults() {
  const body = document.querySelector("#study-results tbody");
  const owner = $("study-owner").value;
  try {
    const out = await api("/v1/study/results", owner ? { headers: ownerHeaders() } : {});
    const fmt = (v, d = 3) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
    const rows = Object.entries(out.readers).concat([["all", out.all]]);
    body.replaceChildren(...rows.map(([name, s]) => {
      const row = el("tr", {}, el("th", {}, name), el("td", {}, s.answered), el("td", {}, fmt(s.accuracy)),
        el("td", {}, fmt(s.label_accuracy)), el("td", {}, fmt(s.mean_confidence, 2)), el("td", {}, fmt(s.auc)));
      row.dataset.reader = name;
      return row;
    }));
    if (out.closed) say("The study is closed: scores are final and visible to every API client.", true);
  } catch (err) {
    if (err.status !== 403) { say("Results failed: " + err.message); return; }
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 6, className: "muted" },
      "Results are shown to the study owner, or to everyone once the study is closed.")));
  }
}

async function closeStudy() {
  try {
    await api("/v1/study/close", { method: "POST", headers: ownerHeaders() });
    await studyResults();
  } catch (err) {
    say("Closing failed: " + err.message);
  }
}

// --- reader study: the reader's page (#reader=<token>) ---------------------------------------
function confidence() {
  const chosen = document.querySelector("input[name=confidence]:checked");
  return chosen ? Number(chosen.value) : null;
}

function resetAnswer() {
  document.querySelectorAll("input[name=confidence]").forEach((r) => { r.checked = false; });
  $("study-real").disabled = $("study-synthetic").disabled = true;
}

function readerFinished() {
  $("reader-box").hidden = true;
  $("reader-done").hidden = false;
  $("study-progress").textContent = "";
}

async function loadStudyItem(item) {
  try {
    const out = await readerApi(`/v1/study/item/${item}`);
    state.study = Object.assign(state.study, { item: out.item, items: out.items });
    const keep = $("study-label").value;
    options($("study-label"), [""].concat(out.labels), ["(not sure)"].concat(out.labels));
    $("study-label").value = keep;
    const canvas = imageView(png(out.image), null, "view study-image");
    if (!state.study.zoomed) {  // the first item sets a reading size (~320 px); the reader may change it
      canvas.source.img.addEventListener("load", () => {
        view.zoom = defaultZoom(canvas.source.img.naturalWidth, 320);
        $("zoom").value = String(view.zoom);
        renderAll();
      }, { once: true });
    }
    state.study.zoomed = true;
    $("study-view").replaceChildren(canvas);
    $("study-progress").textContent = `${out.reader}: image ${out.item + 1} of ${out.items}`;
    resetAnswer();
  } catch (err) {
    say("Study failed: " + err.message);
  }
}

async function answer(saysSynthetic) {
  try {
    const out = await readerApi("/v1/study/answer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item: state.study.item, says_synthetic: saysSynthetic, confidence: confidence(),
        says_label: $("study-label").value || null }),
    });
    say(`Saved answer ${out.item + 1}.`, true);
    if (out.next === null) readerFinished();
    else await loadStudyItem(out.next);
  } catch (err) {
    say("Answer failed: " + err.message);
  }
}

async function startReader() {
  document.body.classList.add("reader-mode");  // only the study items: no token, tabs or scores
  showTab("reader");
  try {
    const me = await readerApi("/v1/study/me");
    if (me.next === null) readerFinished();
    else await loadStudyItem(me.next);
  } catch (err) {
    say("This study link does not work: " + err.message);
    $("reader-box").hidden = true;
  }
}

// --- wiring --------------------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
$("token-form").addEventListener("submit", connect);
$("gen-model").addEventListener("change", fillModel);
$("gen-run").addEventListener("click", generate);
$("clf-file").addEventListener("change", () => { const f = $("clf-file").files[0]; if (f) chooseUpload(f, f.name); });
$("clf-run").addEventListener("click", classify);
for (const id of ["gal-name", "gal-label", "gal-domain"]) $(id).addEventListener("change", () => loadGallery(0));
$("gal-prev").addEventListener("click", () => state.gallery.page > 0 && loadGallery(state.gallery.page - 1));
$("gal-next").addEventListener("click", () => state.gallery.page + 1 < state.gallery.pages && loadGallery(state.gallery.page + 1));
$("study-add").addEventListener("click", addReaders);
$("study-refresh").addEventListener("click", studyResults);
$("study-close").addEventListener("click", closeStudy);
document.querySelectorAll("input[name=confidence]").forEach((r) => r.addEventListener("change", () => {
  $("study-real").disabled = $("study-synthetic").disabled = confidence() === null;
}));
$("study-real").addEventListener("click", () => answer(false));
$("study-synthetic").addEventListener("click", () => answer(true));
setupCanvas();
setupViewbar();
const fromLink = new URLSearchParams(location.hash.slice(1)).get("reader");
if (fromLink) {
  sessionStorage.setItem("busgen-reader", fromLink);
  history.replaceState(null, "", location.pathname);  // the token leaves the address bar (and screenshots)
}
if (readerToken()) startReader();
else {
  showTab("generate");
  if (token()) connect();
}
