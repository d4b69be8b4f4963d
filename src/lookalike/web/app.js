// lookalike's web page: plain JavaScript, no build step. Talks to the same server's API.
"use strict";

const $ = (selector) => document.querySelector(selector);
const PAGE_SIZE = 48;
const UPLOAD_CHUNK = 8;

const state = {
  collection: null,
  health: null,
  lastQuery: null, // {kind: "file", file} or {kind: "id", id, name, thumb}
  browseOffset: 0,
  queryUrl: null,
};

// --- API -------------------------------------------------------------------------------------

function authHeaders() {
  const token = localStorage.getItem("lookalike-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const method = options.method || "GET";
  const headers = Object.assign({}, options.headers || {}, method === "GET" ? {} : authHeaders());
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail : JSON.stringify(detail || response.statusText);
    const error = new Error(text);
    error.status = response.status;
    throw error;
  }
  return body;
}

const collectionPath = (suffix = "") =>
  `/collections/${encodeURIComponent(state.collection)}${suffix}`;

// --- messages --------------------------------------------------------------------------------

function say(text, ok = false) {
  const box = $("#message");
  box.textContent = text;
  box.classList.toggle("ok", ok);
  box.hidden = !text;
}

// --- cards -----------------------------------------------------------------------------------

function card(item) {
  const node = $("#card").content.firstElementChild.cloneNode(true);
  node.dataset.id = item.id;
  const img = node.querySelector("img");
  img.src = item.thumbnail_url;
  img.alt = item.name;
  node.title = item.path;
  node.querySelector(".name").textContent = item.name;
  const score = node.querySelector(".score");
  const bar = node.querySelector(".bar-score");
  if (typeof item.score === "number") {
    score.textContent = item.score.toFixed(3);
    bar.firstElementChild.style.width = `${Math.max(0, Math.min(1, item.score)) * 100}%`;
  } else {
    score.textContent = `#${item.id}`;
    bar.hidden = true;
  }
  node.querySelector(".category").textContent = item.category || "";
  if (Array.isArray(item.box) && item.box.length === 4) {
    placeBox(node.querySelector(".box"), item.box);
  }
  const open = () => moreLikeThis(item);
  node.addEventListener("click", open);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter") open();
  });
  return node;
}

function fill(grid, items, emptyText) {
  grid.replaceChildren(...items.map(card));
  if (!items.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = emptyText;
    grid.append(empty);
  }
}

// --- searching -------------------------------------------------------------------------------

function searchParams() {
  const params = new URLSearchParams({ k: $("#k").value || "12" });
  const minScore = $("#min-score").value;
  if (minScore !== "") params.set("min_score", minScore);
  if ($("#by-category").checked) params.set("by_category", "true");
  return params;
}

function showQuery(src, title, meta) {
  $("#query").hidden = false;
  $("#query-box").hidden = true;
  $("#query-image").src = src;
  $("#query-title").textContent = title;
  $("#query-meta").textContent = meta;
}

async function searchFile(file) {
  if (!state.collection) return say("Create a collection first (+ new).");
  if (state.queryUrl) URL.revokeObjectURL(state.queryUrl);
  state.queryUrl = URL.createObjectURL(file);
  state.lastQuery = { kind: "file", file };
  showTab("search");
  showQuery(state.queryUrl, file.name || "pasted image", "searching…");
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  try {
    const params = searchParams();
    if ($("#localize").checked) params.set("localize", "crop");
    const found = await api(`${collectionPath("/search")}?${params}`, {
      method: "POST",
      body: form,
    });
    say("");
    showResults(found, `${(file.size / 1024).toFixed(0)} KB`);
  } catch (error) {
    $("#query-meta").textContent = "";
    $("#results").replaceChildren();
    say(`Cannot search with ${file.name || "this image"}: ${error.message}`);
  }
}

async function moreLikeThis(item) {
  state.lastQuery = { kind: "id", item };
  showTab("search");
  showQuery(item.thumbnail_url, `More like ${item.name}`, "searching…");
  try {
    const found = await api(`${collectionPath(`/images/${item.id}/similar`)}?${searchParams()}`);
    say("");
    showResults(found, `#${item.id}`);
    window.scrollTo({ top: 0, behavior: "smooth" });
  } catch (error) {
    say(`Cannot search: ${error.message}`);
  }
}

function placeBox(box, [x0, y0, x1, y1]) {
  box.style.left = `${x0 * 100}%`;
  box.style.top = `${y0 * 100}%`;
  box.style.width = `${(x1 - x0) * 100}%`;
  box.style.height = `${(y1 - y0) * 100}%`;
  box.hidden = false;
}

function showResults(found, what) {
  if (Array.isArray(found.query_box) && found.query_box.length === 4) {
    placeBox($("#query-box"), found.query_box);
  }
  $("#query-meta").textContent =
    `${what} · ${found.results.length} results in ${found.took_ms.toFixed(0)} ms`;
  fill($("#results"), found.results, "Nothing similar enough.");
}

function rerun() {
  const last = state.lastQuery;
  if (!last) return;
  if (last.kind === "file") searchFile(last.file);
  else moreLikeThis(last.item);
}

function firstImage(files) {
  return Array.from(files || []).find((f) => f.type.startsWith("image/") || !f.type) || null;
}

// --- browsing --------------------------------------------------------------------------------

async function browse(offset = state.browseOffset) {
  if (!state.collection) return;
  try {
    const page = await api(`${collectionPath("/images")}?offset=${offset}&limit=${PAGE_SIZE}`);
    state.browseOffset = offset;
    fill($("#browse"), page.items, "No images yet: add some.");
    const last = Math.min(page.total, offset + page.items.length);
    $("#page-info").textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "";
    $("#prev").disabled = offset === 0;
    $("#next").disabled = last >= page.total;
  } catch (error) {
    say(`Cannot list images: ${error.message}`);
  }
}

// --- adding ----------------------------------------------------------------------------------

function progress(done, total, text) {
  $("#progress").hidden = false;
  $("#progress-fill").style.width = total ? `${(100 * done) / total}%` : "0";
  $("#progress-text").textContent = text;
}

function logLine(text, bad = false) {
  const line = document.createElement("li");
  line.textContent = text;
  if (bad) line.className = "bad";
  $("#add-log").prepend(line);
}

async function addFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length || !state.collection) return;
  let done = 0;
  let added = 0;
  progress(0, files.length, `uploading 0 / ${files.length}`);
  for (let start = 0; start < files.length; start += UPLOAD_CHUNK) {
    const chunk = files.slice(start, start + UPLOAD_CHUNK);
    const form = new FormData();
    chunk.forEach((file) => form.append("files", file, file.name));
    try {
      const report = await api(collectionPath("/images"), { method: "POST", body: form });
      for (const outcome of report.results) {
        if (outcome.status === "added") added += 1;
        logLine(`${outcome.filename}: ${outcome.status}${outcome.reason ? ` (${outcome.reason})` : ""}`);
      }
    } catch (error) {
      // One bad file refuses its whole chunk: retry the others one by one.
      for (const file of chunk) {
        const single = new FormData();
        single.append("files", file, file.name);
        try {
          const report = await api(collectionPath("/images"), { method: "POST", body: single });
          if (report.results[0].status === "added") added += 1;
          logLine(`${file.name}: ${report.results[0].status}`);
        } catch (singleError) {
          const text = singleError.message;
          logLine(text.startsWith(`${file.name}: `) ? text : `${file.name}: ${text}`, true);
        }
      }
    }
    done += chunk.length;
    progress(done, files.length, `uploaded ${done} / ${files.length}, ${added} new`);
  }
  await refreshCollections();
}

async function indexServerPath(path) {
  try {
    let job = await api(collectionPath("/jobs/index"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ paths: [path] }),
    });
    progress(0, 1, "queued");
    while (job.state === "queued" || job.state === "running") {
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await api(`/jobs/${job.id}`);
      const total = job.total == null ? "?" : job.total;
      progress(job.done, job.total || 0, `${job.state}: ${job.done} / ${total}`);
    }
    if (job.state === "done") {
      const r = job.report;
      progress(1, 1, `done: ${r.added} added, ${r.updated} updated, ${r.unchanged} unchanged, ` +
        `${r.removed} removed, ${r.skipped.length} skipped`);
      r.skipped.forEach((s) => logLine(`${s.path}: ${s.reason}`, true));
    } else {
      progress(0, 1, `${job.state}${job.error ? `: ${job.error}` : ""}`);
    }
    await refreshCollections();
  } catch (error) {
    say(`Cannot index ${path}: ${error.message}`);
  }
}

// --- collections -----------------------------------------------------------------------------

async function refreshCollections(select = null) {
  const list = await api("/collections");
  const picker = $("#collection");
  const wanted = select || state.collection || localStorage.getItem("lookalike-collection") ||
    list.default;
  picker.replaceChildren(
    ...list.collections.map((c) => {
      const option = document.createElement("option");
      option.value = c.name;
      option.textContent = c.name;
      return option;
    }),
  );
  const names = list.collections.map((c) => c.name);
  state.collection = names.includes(wanted) ? wanted : names[0] || null;
  picker.value = state.collection || "";
  const current = list.collections.find((c) => c.name === state.collection);
  $("#count").textContent = current ? `${current.images} images · ${current.model}` : "no collection";
  if (!current) say("No collection yet: create one with “+ new”, then add images.", true);
  await refreshCategories();
}

async function refreshCategories() {
  if (!state.collection) return;
  try {
    const found = await api(collectionPath("/categories"));
    $("#by-category-box").hidden = Object.keys(found.categories).length === 0;
  } catch (_) {
    $("#by-category-box").hidden = true;
  }
}

async function newCollection() {
  const name = prompt("Name of the new collection (letters, digits, - and _):");
  if (!name) return;
  try {
    await api("/collections", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    state.collection = name;
    localStorage.setItem("lookalike-collection", name);
    say(`Created ${name}: add images to it.`, true);
    await refreshCollections(name);
    showTab("add");
  } catch (error) {
    say(`Cannot create ${name}: ${error.message}`);
  }
}

// --- tabs and wiring -------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".tabs button").forEach((button) => {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  });
  document.querySelectorAll(".tab").forEach((tab) => {
    tab.hidden = tab.id !== `tab-${name}`;
  });
  if (name === "browse") browse(state.browseOffset);
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    onFiles(event.dataTransfer.files);
  });
}

async function start() {
  document.querySelectorAll(".tabs button").forEach((button) => {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  });
  $("#file").addEventListener("change", (event) => {
    const file = firstImage(event.target.files);
    if (file) searchFile(file);
    event.target.value = "";
  });
  dropZone($("#drop"), (files) => {
    const file = firstImage(files);
    if (file) searchFile(file);
  });
  document.addEventListener("paste", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.type !== "file") return;
    const item = Array.from(event.clipboardData.items).find((i) => i.type.startsWith("image/"));
    if (item) searchFile(item.getAsFile());
  });
  $("#add-files").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";
  });
  dropZone($("#add-drop"), addFiles);
  $("#server-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const path = $("#server-path").value.trim();
    if (path) indexServerPath(path);
  });
  $("#options").addEventListener("change", rerun);
  $("#options").addEventListener("submit", (event) => {
    event.preventDefault();
    rerun();
  });
  $("#prev").addEventListener("click", () => browse(Math.max(0, state.browseOffset - PAGE_SIZE)));
  $("#next").addEventListener("click", () => browse(state.browseOffset + PAGE_SIZE));
  $("#new-collection").addEventListener("click", newCollection);
  $("#collection").addEventListener("change", async (event) => {
    state.collection = event.target.value;
    localStorage.setItem("lookalike-collection", state.collection);
    state.browseOffset = 0;
    await refreshCollections(state.collection);
    $("#results").replaceChildren();
    $("#query").hidden = true;
    if (!$("#tab-browse").hidden) browse(0);
  });
  $("#token").value = localStorage.getItem("lookalike-token") || "";
  $("#token").addEventListener("change", (event) => {
    localStorage.setItem("lookalike-token", event.target.value.trim());
  });

  try {
    state.health = await api("/health");
    $("#token-box").hidden = !state.health.writes_need_token;
    $("#server-form").hidden = !state.health.server_paths;
    await refreshCollections();
  } catch (error) {
    say(`The server does not answer: ${error.message}`);
  }
  document.body.dataset.ready = "true";
}

start();
