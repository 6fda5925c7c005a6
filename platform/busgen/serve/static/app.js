// BUSGen playground: a static page over the BUSGen HTTP API. Every call sends the bearer token
// the user typed (kept in sessionStorage for this tab only); the page itself holds no data.
// Every string from the server (labels, domains, model ids, class names) comes from data made
// elsewhere, so it is written with textContent through el(), never as HTML: a label such as
// <img src=x onerror=...> shows as text. The server's Content-Security-Policy forbids inline
// script as a second line of defence.
"use strict";

const $ = (id) => document.getElementById(id);

// el("div", {className: "card"}, child, "text", ...): an element whose text children are text nodes.
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
const state = { models: null, box: null, gallery: { page: 0, pages: 1 }, study: { item: 0, items: 0 } };

function token() { return sessionStorage.getItem("busgen-token") || ""; }

function say(text, ok = false) {
  $("status").textContent = text;
  $("status").className = ok ? "ok" : "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw Object.assign(new Error(`${resp.status}: ${detail}`), { status: resp.status });
  }
  return body;
}

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
  fillModel();
  options($("gen-protect"), m.protect.concat(m.protect_planned),
    m.protect.concat(m.protect_planned.map((p) => p + " (planned)")));
  [...$("gen-protect").options].forEach((o) => { o.disabled = !m.protect.includes(o.value); });
  $("gen-nearest").checked = m.nearest;
  $("gen-nearest").disabled = !m.nearest;
  $("gen-n").max = m.limits.max_n;
  $("gen-steps").max = m.limits.max_steps;
  $("gen-steps").value = Math.min(m.limits.default_steps, m.limits.max_steps);
  options($("gal-name"), m.galleries);
  if (m.galleries.length) loadGallery(0);
  say("Connected.", true);
}

function fillModel() {
  const g = state.models.generators.find((x) => x.id === $("gen-model").value);
  options($("gen-label"), g.class_names);
  options($("gen-domain"), [""].concat(g.domain_names), ["(unconditional)"].concat(g.domain_names));
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

async function generate() {
  const body = {
    model: $("gen-model").value,
    label: $("gen-label").value,
    n: Number($("gen-n").value),
    steps: Number($("gen-steps").value),
    guidance: Number($("gen-guidance").value),
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
    const grid = $("gen-results");
    grid.replaceChildren();
    out.images.forEach((img, i) => {
      const card = el("div", { className: "card gen-item" },
        el("img", { className: "generated", src: png(img), alt: "generated" }), el("div", {}, `seed ${out.seeds[i]}`));
      if (out.nearest) {
        const nn = out.nearest[i];
        card.append(el("img", { className: "nearest", src: png(nn.image), alt: "nearest training image" }),
          el("div", {}, "nearest: ", el("span", { className: "similarity" }, Number(nn.similarity).toFixed(3))));
      }
      grid.append(card);
    });
    say(`${out.images.length} image(s) from ${out.model} (${out.model_id}), ${out.sampler}, ${out.steps} steps.`, true);
  } catch (err) {
    say("Generate failed: " + err.message);
  } finally {
    $("gen-run").disabled = false;
  }
}

// --- classify ------------------------------------------------------------------------------
async function classify() {
  const file = $("clf-file").files[0];
  if (!file) { say("Choose a PNG, JPEG or DICOM file first."); return; }
  const out = $("clf-results");
  out.replaceChildren();
  for (const id of Object.keys(state.models.classifiers)) {
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const r = await api("/v1/classify?model=" + encodeURIComponent(id), { method: "POST", body: form });
      const rows = Object.entries(r.probs).map(([k, p]) => {
        const bar = el("span", { className: "bar" });
        bar.style.width = `${Math.round(Number(p) * 150)}px`;  // CSSOM, not a style attribute: allowed by the CSP
        return el("tr", {}, el("th", {}, k), el("td", {}, Number(p).toFixed(3)), el("td", {}, bar));
      });
      out.append(el("div", { className: "clf-result" },
        el("h4", {}, `${id}: `, el("span", { className: "clf-label" }, r.label)), el("table", {}, ...rows)));
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
      el("img", { src: png(it.image), alt: String(it.label) }),
      el("div", {}, `${it.label} / ${it.domain}`),
      el("div", { className: "prov" }, `model ${it.model_id ?? "-"}, seed ${it.seed ?? "-"}, ${it.sampler ?? "-"}`))));
  } catch (err) {
    say("Browse failed: " + err.message);
  }
}

// --- reader study --------------------------------------------------------------------------
async function loadStudyItem(item) {
  const reader = $("study-reader").value;
  try {
    const out = await api(`/v1/study/${encodeURIComponent(reader)}/item/${item}`);
    state.study = { item: out.item, items: out.items };
    const keep = $("study-label").value;
    options($("study-label"), [""].concat(out.labels), ["(not sure)"].concat(out.labels));
    $("study-label").value = keep;
    $("study-image").src = png(out.image);
    $("study-progress").textContent = `item ${out.item + 1} of ${out.items}`;
    $("study-box").hidden = false;
  } catch (err) {
    say("Study failed: " + err.message);
  }
}

async function answer(saysSynthetic) {
  const reader = $("study-reader").value;
  try {
    const out = await api(`/v1/study/${encodeURIComponent(reader)}/answer`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item: state.study.item, says_synthetic: saysSynthetic, says_label: $("study-label").value || null }),
    });
    say(`Saved answer ${out.item + 1}.`, true);
    if (out.next === null) { $("study-box").hidden = true; say("Study finished: thank you.", true); }
    else await loadStudyItem(out.next);
    await studyResults();
  } catch (err) {
    say("Answer failed: " + err.message);
  }
}

async function studyResults() {
  const body = document.querySelector("#study-results tbody");
  const owner = $("study-owner").value;
  try {
    const out = await api("/v1/study/results", owner ? { headers: { "X-Study-Owner-Token": owner } } : {});
    const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(3));
    const rows = Object.entries(out.readers).concat([["all", out.all]]);
    body.replaceChildren(...rows.map(([name, s]) => {
      const row = el("tr", {}, el("th", {}, name), el("td", {}, s.answered), el("td", {}, fmt(s.accuracy)),
        el("td", {}, fmt(s.label_accuracy)), el("td", {}, fmt(s.auc)));
      row.dataset.reader = name;
      return row;
    }));
  } catch (err) {
    if (err.status !== 403) { say("Results failed: " + err.message); return; }
    // Scores reveal which items were synthetic: hidden from readers until the owner closes the study.
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 5, className: "muted" },
      "Results are shown to the study owner, or to everyone once the study is closed.")));
  }
}

// --- wiring --------------------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
$("token-form").addEventListener("submit", connect);
$("gen-model").addEventListener("change", fillModel);
$("gen-run").addEventListener("click", generate);
$("clf-run").addEventListener("click", classify);
for (const id of ["gal-name", "gal-label", "gal-domain"]) $(id).addEventListener("change", () => loadGallery(0));
$("gal-prev").addEventListener("click", () => state.gallery.page > 0 && loadGallery(state.gallery.page - 1));
$("gal-next").addEventListener("click", () => state.gallery.page + 1 < state.gallery.pages && loadGallery(state.gallery.page + 1));
$("study-start").addEventListener("click", () => { loadStudyItem(0); studyResults(); });
$("study-real").addEventListener("click", () => answer(false));
$("study-synthetic").addEventListener("click", () => answer(true));
$("study-refresh").addEventListener("click", studyResults);
setupCanvas();
showTab("generate");
if (token()) connect();
