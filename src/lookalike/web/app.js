// lookalike's web page: plain JavaScript, no build step. Talks to the same server's API.
//
// What is shown lives in the address (?c=collection&q=...&box=...&view=...), so that Back,
// Forward, reload and a shared link show the same thing: every action changes the URL
// through go(), and render() draws whatever the URL says.
"use strict";

const $ = (selector) => document.querySelector(selector);
const PAGE_SIZE = 48;
const FACETS = ["category", "folder", "cluster"];
const NO_FILTERS = { category: null, folder: null, cluster: null };
const UPLOADED = "uploaded"; // the folder the server shows uploaded images in
const UPLOAD_CHUNK = 8;
const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
const IMAGE_NAME_RE = /\.(jpe?g|jpe|jfif|png|webp|gif|bmp|dib|tiff?|heic|heif|hif|avif)$/i;
const KEPT_UPLOAD_BYTES = 3 * 1024 * 1024; // larger uploads are not kept for a reload
const KEPT_UPLOADS = 3;
const FORMATS = "JPEG, PNG, WEBP, HEIC, AVIF, GIF, BMP or TIFF";

const state = {
  collection: null,
  collections: [],
  health: null,
  items: new Map(), // image id -> what the API said of it (name, path, score...)
  uploads: new Map(), // upload key -> File
  results: new Map(), // search key -> response
  shownSearch: null,
  searchSeq: 0,
  shownBrowse: null,
  queryUrl: null,
  queryFile: null,
  explainUrl: null, // the explained match shown in the full-size view
};

// --- small helpers ---------------------------------------------------------------------------

function plural(count, word, many = `${word}s`) {
  return `${count} ${count === 1 ? word : many}`;
}

function folderLabel(folder) {
  // the last two parts of a folder on the server; images uploaded here have no folder of theirs
  if (folder === UPLOADED) return "uploaded here";
  const parts = folder.split("/").filter(Boolean);
  return parts.length ? parts.slice(-2).join("/") : "/";
}

function canWrite() {
  return Boolean(state.health && (!state.health.writes_need_token || localStorage.getItem("lookalike-token")));
}

// --- API -------------------------------------------------------------------------------------

function authHeaders() {
  const token = localStorage.getItem("lookalike-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function readableDetail(detail, fallback) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's validation errors: [{loc: [..., "name"], msg: "..."}, ...]
    return detail
      .map((d) => {
        const where = Array.isArray(d.loc) ? d.loc[d.loc.length - 1] : "";
        return where && where !== "body" ? `${where}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  return fallback;
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
    const error = new Error(readableDetail(body && body.detail, response.statusText || `error ${response.status}`));
    error.status = response.status;
    throw error;
  }
  return body;
}

const collectionPath = (suffix = "", name = state.collection) =>
  `/collections/${encodeURIComponent(name)}${suffix}`;

// --- the address: what is shown --------------------------------------------------------------

function params() {
  return new URLSearchParams(location.search);
}

function go(changes, { replace = false, opened = false } = {}) {
  say(""); // the user moved on: what was said about the last step is done with
  const next = params();
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") next.delete(key);
    else next.set(key, String(value));
  }
  const url = `${location.pathname}${next.toString() ? `?${next}` : ""}`;
  if (replace) history.replaceState({ opened: history.state && history.state.opened }, "", url);
  else history.pushState({ opened }, "", url);
  return render();
}

async function render() {
  const p = params();
  const wanted = p.get("c");
  if (wanted && wanted !== state.collection && state.collections.some((c) => c.name === wanted)) {
    await selectCollection(wanted);
  } else if (wanted && !state.collections.some((c) => c.name === wanted)) {
    say(`There is no collection “${wanted}” here.`);
  }
  const tab = ["search", "browse", "add", "review"].includes(p.get("tab")) ? p.get("tab") : "search";
  showTab(tab);
  $("#k").value = p.get("k") || "12";
  $("#min-score").value = p.get("min") || "";
  $("#by-category").checked = p.get("cat") === "1";
  $("#localize").checked = p.get("loc") === "1";
  $("#rerank").checked = p.get("rr") === "1";
  if (tab === "search") await renderSearch(p);
  if (tab === "browse") await renderBrowse(Number(p.get("offset")) || 0, browseFilters(p));
  if (tab === "review") await renderReview(p); // review.js
  renderViewer(p.get("view"));
}

// --- messages --------------------------------------------------------------------------------

function say(text, ok = false) {
  const box = $("#message");
  box.textContent = text;
  box.classList.toggle("ok", ok);
  box.hidden = !text;
}

function loading(on) {
  $("#spinner").hidden = !on;
  $("#results").classList.toggle("loading", on);
  $("#results").setAttribute("aria-busy", String(on));
}

// --- cards -----------------------------------------------------------------------------------

// The calibrated chances that a result is the same item / the same kind as the query
// (docs/EVALUATION.md), where the collection's model has a calibration.
function confidences(item) {
  const parts = [];
  if (typeof item.same_item === "number") parts.push(`same item ${Math.round(item.same_item * 100)}%`);
  if (typeof item.same_kind === "number") parts.push(`same kind ${Math.round(item.same_kind * 100)}%`);
  return parts.join(" · ");
}

function card(item) {
  state.items.set(item.id, item);
  const node = $("#card").content.firstElementChild.cloneNode(true);
  node.dataset.id = item.id;
  const img = node.querySelector("img");
  img.src = item.thumbnail_url;
  img.alt = item.name;
  node.title = item.path;
  node.querySelector(".name").textContent = item.name;
  node.querySelector(".folder").textContent = folderLabel(item.folder);
  const score = node.querySelector(".score");
  const bar = node.querySelector(".bar-score");
  if (typeof item.score === "number") {
    score.textContent = item.score.toFixed(3);
    score.title = confidences(item);
    bar.firstElementChild.style.width = `${Math.max(0, Math.min(1, item.score)) * 100}%`;
    if (item.weak) {
      node.classList.add("weak");
      node.querySelector(".category").textContent = "weak match";
    }
  } else {
    score.remove();
    bar.hidden = true;
  }
  if (item.category) node.querySelector(".category").textContent = item.category;
  if (typeof item.score !== "number" && !item.category) node.querySelector(".row").remove();
  if (Array.isArray(item.box) && item.box.length === 4) {
    placeBox(node.querySelector(".box"), item.box);
  }
  const open = () => go({ view: item.id }, { opened: true });
  node.addEventListener("click", open);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open();
    }
  });
  return node;
}

function emptyNote(text, action = null) {
  const empty = document.createElement("div");
  empty.className = "empty";
  empty.textContent = text;
  if (action) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button";
    button.textContent = action.label;
    button.addEventListener("click", action.run);
    empty.append(document.createElement("br"), button);
  }
  return empty;
}

function fill(grid, items, emptyText) {
  grid.replaceChildren(...items.map(card));
  if (!items.length) grid.append(emptyNote(emptyText));
}

const addImagesAction = { label: "Add images", run: () => go({ tab: "add", q: null, box: null }) };

function currentInfo() {
  return state.collections.find((c) => c.name === state.collection) || null;
}

function showEmptyCollection(grid) {
  grid.replaceChildren(emptyNote("This collection is empty: add images to search it.", addImagesAction));
}

// --- searching -------------------------------------------------------------------------------

function searchParams(p) {
  const query = new URLSearchParams({ k: p.get("k") || "12" });
  if (p.get("min")) query.set("min_score", p.get("min"));
  if (p.get("cat") === "1") query.set("by_category", "true");
  if (p.get("rr") === "1") query.set("rerank", "true");
  if (p.get("box")) query.set("box", p.get("box"));
  if (p.get("t")) query.set("text", p.get("t"));
  return query;
}

function placeBox(box, [x0, y0, x1, y1]) {
  box.style.left = `${x0 * 100}%`;
  box.style.top = `${y0 * 100}%`;
  box.style.width = `${(x1 - x0) * 100}%`;
  box.style.height = `${(y1 - y0) * 100}%`;
  box.hidden = false;
}

function parseBox(text) {
  const values = (text || "").split(",").map(Number);
  return values.length === 4 && values.every((v) => Number.isFinite(v)) ? values : null;
}

function compactDrop(compact) {
  $("#drop").classList.toggle("compact", compact);
}

function clearQuery() {
  $("#query").hidden = true;
  compactDrop(false);
  state.shownSearch = null;
}

async function renderSearch(p) {
  const q = p.get("q");
  const info = currentInfo();
  if (!q) {
    clearQuery();
    if (info && info.images === 0) showEmptyCollection($("#results"));
    else $("#results").replaceChildren();
    return;
  }
  const key = `${state.collection}|${q}|${searchParams(p)}|${p.get("loc")}`;
  if (key === state.shownSearch) return;
  state.shownSearch = key;
  const box = parseBox(p.get("box"));
  if (box) placeBox($("#drag-box"), box);
  else $("#drag-box").hidden = true;
  $("#whole-photo").hidden = !box;
  $("#query-box").hidden = true;
  $("#query").hidden = false;
  compactDrop(true);

  let request;
  $("#words").value = p.get("t") || "";
  $("#query-frame").hidden = q === "words";
  $(".region-hint").hidden = q === "words";
  if (q === "words") {
    if (!p.get("t")) return;
    $("#query-title").textContent = `“${p.get("t")}”`;
    $("#query-title").title = "";
    request = () => api(`${collectionPath("/search")}?${searchParams(p)}`, { method: "POST" });
  } else if (q.startsWith("id:")) {
    const id = Number(q.slice(3));
    const known = state.items.get(id);
    showQuery(collectionPath(`/images/${id}/thumbnail`), `More like ${known ? known.name : `image #${id}`}`,
      known ? folderLabel(known.folder) : "");
    request = () => api(`${collectionPath(`/images/${id}/similar`)}?${searchParams(p)}`);
  } else if (q.startsWith("upload:")) {
    const file = await keptUpload(q.slice(7));
    if (!file) {
      $("#query").hidden = true;
      compactDrop(false);
      $("#results").replaceChildren();
      say("The photo of this search is not kept here (a link cannot carry it): choose it again.");
      return;
    }
    if (state.queryFile !== file) {
      if (state.queryUrl) URL.revokeObjectURL(state.queryUrl);
      state.queryUrl = URL.createObjectURL(file);
      state.queryFile = file;
    }
    showQuery(state.queryUrl, file.name || "pasted image", `${(file.size / 1024).toFixed(0)} KB`);
    $("#query-image").onerror = () => previewOnServer(file);
    request = () => {
      const query = searchParams(p);
      if (p.get("loc") === "1") query.set("localize", "crop");
      const form = new FormData();
      form.append("file", file, file.name || "pasted.png");
      return api(`${collectionPath("/search")}?${query}`, { method: "POST", body: form });
    };
  } else {
    return;
  }
  const seq = ++state.searchSeq;
  $("#query-status").textContent = "searching…";
  loading(true);
  try {
    const found = state.results.get(key) || (await request());
    if (seq !== state.searchSeq) return; // a newer search has started
    state.results.set(key, found);
    say("");
    showResults(found, p);
  } catch (error) {
    if (seq !== state.searchSeq) return;
    state.shownSearch = null;
    $("#query-status").textContent = "";
    if (error.status === 409) {
      showEmptyCollection($("#results"));
    } else {
      $("#results").replaceChildren();
      const title = $("#query-title").textContent;
      // The server's reason may name the file already ("holiday.jpg: not a recognised image").
      const reason = error.message.startsWith(`${title}: `) ? error.message.slice(title.length + 2) : error.message;
      say(`Cannot search with ${title}: ${reason}`);
    }
  } finally {
    if (seq === state.searchSeq) loading(false);
  }
}

function showQuery(src, title, where) {
  $("#query-image").onerror = null;
  $("#query-frame").hidden = false;
  $("#query-image").src = src;
  $("#query-title").textContent = title;
  $("#query-title").title = where;
}

function searchedCategories(searched) {
  if (!Array.isArray(searched)) return "searched every category (none is clear for this photo)";
  return `searched ${searched.length === 1 ? "category" : "categories"} ${searched.join(", ")}`;
}

function showResults(found, p) {
  if (found.query_path) {
    // "more like this" opened from a link or a reload: the query's name comes with the answer
    $("#query-title").textContent = `More like ${found.query_name}`;
    $("#query-title").title = folderLabel(found.query_folder);
  }
  if (!p.get("box") && Array.isArray(found.query_box) && found.query_box.length === 4) {
    placeBox($("#query-box"), found.query_box);
  }
  let what = p.get("box") ? "in the box" : "";
  if (!what && p.get("loc") === "1") {
    what = Array.isArray(found.query_box) ? "for the object found (red box)" : "(no object found: whole photo)";
  }
  const weak = found.results.length > 0 && found.results.every((r) => r.weak);
  $("#query-status").textContent =
    `${plural(found.results.length, "result")}${what ? ` ${what}` : ""} in ${found.took_ms.toFixed(0)} ms` +
    (p.get("cat") === "1" ? ` · ${searchedCategories(found.searched_categories)}` : "") +
    (weak ? " · only weak matches: probably nothing like it here" : "");
  fill($("#results"), found.results, "Nothing similar enough: lower the min score.");
}

async function previewOnServer(file) {
  // A photo this browser cannot draw (HEIC): the server decodes it as the search does and
  // sends a JPEG of it, so that a box can still be dragged on it.
  $("#query-image").onerror = null;
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  let blob = null;
  try {
    const response = await fetch("/preview", { method: "POST", body: form });
    if (response.ok) blob = await response.blob();
  } catch (_) {
    blob = null;
  }
  if (state.queryFile !== file) return; // another photo was chosen meanwhile
  if (!blob) {
    $("#query-frame").hidden = true; // the search says what is wrong with the file
    return;
  }
  URL.revokeObjectURL(state.queryUrl);
  state.queryUrl = URL.createObjectURL(blob);
  $("#query-image").src = state.queryUrl;
}

// --- uploads kept for Back and reload --------------------------------------------------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function keepUpload(file) {
  const key = Math.random().toString(36).slice(2, 10);
  state.uploads.set(key, file);
  if (file.size <= KEPT_UPLOAD_BYTES) {
    // The last few uploads only: the tab's storage holds about 5 MB.
    const kept = JSON.parse(sessionStorage.getItem("lookalike-uploads") || "[]");
    while (kept.length >= KEPT_UPLOADS) sessionStorage.removeItem(`lookalike-upload:${kept.shift()}`);
    try {
      const data = await readAsDataUrl(file);
      sessionStorage.setItem(`lookalike-upload:${key}`, JSON.stringify({ name: file.name, data }));
      kept.push(key);
    } catch (_) {
      // storage full: the upload is kept in memory only (Back works, reload does not)
    }
    sessionStorage.setItem("lookalike-uploads", JSON.stringify(kept));
  }
  return key;
}

async function keptUpload(key) {
  if (state.uploads.has(key)) return state.uploads.get(key);
  const kept = sessionStorage.getItem(`lookalike-upload:${key}`);
  if (!kept) return null;
  // Decoded by hand: fetch() of a data: URL is refused by the page's CSP (connect-src 'self').
  const { name, data } = JSON.parse(kept);
  const [header, base64] = data.split(",", 2);
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const file = new File([bytes], name, { type: header.slice(5).split(";")[0] });
  state.uploads.set(key, file);
  return file;
}

function looksLikeImage(file) {
  return file.type.startsWith("image/") || IMAGE_NAME_RE.test(file.name) || !file.type;
}

async function searchFile(file) {
  if (!file) return;
  if (!state.collection) return say("Create a collection first (+ new).");
  if (!looksLikeImage(file)) {
    say(`“${file.name}” is not an image (${file.type}): choose a photo (${FORMATS}).`);
    return;
  }
  const key = await keepUpload(file);
  await go({ tab: null, q: `upload:${key}`, box: null, view: null, t: null });
}

// --- dragging a box on the query: search that region -----------------------------------------

function regionSelection() {
  const frame = $("#query-frame");
  const drag = $("#drag-box");
  let start = null;
  const point = (event) => {
    const rect = $("#query-image").getBoundingClientRect();
    return [
      Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)),
      Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height)),
    ];
  };
  const boxOf = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  frame.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    start = point(event);
    frame.setPointerCapture(event.pointerId);
  });
  frame.addEventListener("pointermove", (event) => {
    if (!start) return;
    placeBox(drag, boxOf(start, point(event)));
    $("#query-box").hidden = true;
  });
  const finish = (event) => {
    if (!start) return;
    const box = boxOf(start, point(event));
    start = null;
    if (box[2] - box[0] < 0.03 || box[3] - box[1] < 0.03) {
      // a click, not a box: back to what the address says
      const current = parseBox(params().get("box"));
      if (current) placeBox(drag, current);
      else drag.hidden = true;
      return;
    }
    go({ box: box.map((v) => v.toFixed(4)).join(",") });
  };
  frame.addEventListener("pointerup", finish);
  frame.addEventListener("pointercancel", () => {
    start = null;
  });
}

// --- the full-size view ----------------------------------------------------------------------

function renderViewer(viewId) {
  const dialog = $("#viewer");
  if (!viewId) {
    if (dialog.open) dialog.close();
    return;
  }
  const id = Number(viewId);
  const item = state.items.get(id) || {
    id,
    name: `image #${id}`,
    path: "",
    folder: "",
    image_url: collectionPath(`/images/${id}`),
    thumbnail_url: collectionPath(`/images/${id}/thumbnail`),
  };
  const img = $("#viewer-image");
  img.onerror = () => {
    // a format this browser cannot show (HEIC): the server's JPEG thumbnail instead
    img.onerror = null;
    img.src = item.thumbnail_url;
  };
  img.src = item.image_url;
  img.alt = item.name;
  $("#viewer-name").textContent = item.name;
  $("#viewer-folder").textContent = item.folder === UPLOADED ? "uploaded here" : item.folder || "";
  const facts = [];
  if (typeof item.score === "number") facts.push(`score ${item.score.toFixed(3)}${item.weak ? " (weak match)" : ""}`);
  const confidence = confidences(item);
  if (confidence) facts.push(confidence);
  if (item.category) facts.push(`category ${item.category}`);
  facts.push(`#${id}`);
  $("#viewer-facts").textContent = facts.join(" · ");
  $("#viewer-original").href = item.image_url;
  const del = $("#viewer-delete");
  del.hidden = !canWrite();
  del.textContent = "Delete";
  del.dataset.armed = "";
  dialog.dataset.id = id;
  resetExplain(item);
  if (!dialog.open) dialog.showModal();
}

// --- explaining a result: heat over the query and the result (toggle in the full-size view) ---

function resetExplain(item) {
  const button = $("#viewer-explain");
  const q = params().get("q") || "";
  button.hidden = typeof item.score !== "number" || !(q.startsWith("id:") || q.startsWith("upload:"));
  button.setAttribute("aria-pressed", "false");
  button.textContent = "Why alike?";
  if (state.explainUrl) URL.revokeObjectURL(state.explainUrl);
  state.explainUrl = null;
}

async function toggleExplain() {
  const button = $("#viewer-explain");
  const img = $("#viewer-image");
  const id = Number($("#viewer").dataset.id);
  const item = state.items.get(id);
  if (button.getAttribute("aria-pressed") === "true") {
    resetExplain(item || {});
    img.src = item ? item.image_url : collectionPath(`/images/${id}`);
    return;
  }
  const p = params();
  const q = p.get("q") || "";
  const query = new URLSearchParams();
  if (p.get("box")) query.set("box", p.get("box"));
  // a narrow screen (a phone held upright): the two images one above the other
  if (window.matchMedia("(max-aspect-ratio: 1/1)").matches) query.set("stacked", "true");
  let request;
  if (q.startsWith("id:")) {
    query.set("query_id", q.slice(3));
    request = fetch(`${collectionPath(`/images/${id}/explain`)}?${query}`);
  } else if (state.queryFile) {
    const form = new FormData();
    form.append("file", state.queryFile, state.queryFile.name || "pasted.png");
    request = fetch(`${collectionPath(`/images/${id}/explain`)}?${query}`, { method: "POST", body: form });
  } else {
    say("The photo of this search is not kept here: search with it again to explain.");
    return;
  }
  button.textContent = "Explaining…";
  try {
    const response = await request;
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(readableDetail(body && body.detail, response.statusText));
    }
    const url = URL.createObjectURL(await response.blob());
    if (Number($("#viewer").dataset.id) !== id) return URL.revokeObjectURL(url); // moved on
    state.explainUrl = url;
    img.src = url;
    img.alt = `Why ${item ? item.name : `#${id}`} is like the query: bright where they match`;
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Hide why";
  } catch (error) {
    button.textContent = "Why alike?";
    say(`Cannot explain this match: ${error.message}`);
  }
}

function closeViewer() {
  if (!params().get("view")) return;
  if (history.state && history.state.opened) history.back();
  else go({ view: null }, { replace: true });
}

async function deleteViewed() {
  const del = $("#viewer-delete");
  const id = Number($("#viewer").dataset.id);
  if (!del.dataset.armed) {
    del.dataset.armed = "1";
    del.textContent = "Really delete?";
    return;
  }
  const item = state.items.get(id);
  try {
    await api(collectionPath(`/images/${id}`), { method: "DELETE" });
  } catch (error) {
    say(`Cannot delete ${item ? item.name : `#${id}`}: ${error.message}`);
    return;
  }
  state.items.delete(id);
  state.results.clear();
  state.shownSearch = null;
  state.shownBrowse = null;
  await refreshCollections();
  const p = params();
  await go({ view: null, q: p.get("q") === `id:${id}` ? null : p.get("q") }, { replace: true });
  say(`Deleted ${item ? item.name : `#${id}`}.`, true); // after the search it re-ran
}

// --- browsing --------------------------------------------------------------------------------

function browseFilters(p) {
  const filters = {};
  for (const name of FACETS) if (p.get(name) !== null && p.get(name) !== "") filters[name] = p.get(name);
  return filters;
}

function facetLabel(name, value) {
  if (name === "folder") return folderLabel(value);
  if (name === "cluster") return value === "-1" ? "no cluster (noise)" : `cluster ${value}`;
  return value;
}

function showFacets(page, filters) {
  // datasette's facets: each lists how the images that pass the other filters divide
  for (const name of FACETS) {
    const select = $(`#facet-${name}`);
    const values = page.facets[name].slice();
    const chosen = filters[name];
    if (chosen !== undefined && !values.some((v) => v.value === chosen)) values.unshift({ value: chosen, count: 0 });
    const all = document.createElement("option");
    all.value = "";
    all.textContent = name === "category" ? "all categories" : `all ${name}s`;
    select.replaceChildren(
      all,
      ...values.map((v) => {
        const option = document.createElement("option");
        option.value = v.value;
        option.textContent = `${facetLabel(name, v.value)} (${v.count})`;
        if (name === "folder") option.title = v.value;
        return option;
      }),
    );
    select.value = chosen === undefined ? "" : chosen;
    // a facet is worth showing when it divides the collection, or when it is chosen
    $(`#facet-${name}-box`).hidden = chosen === undefined && values.length < 2;
  }
  $("#facets-clear").hidden = Object.keys(filters).length === 0;
}

async function renderBrowse(offset, filters) {
  if (!state.collection) return;
  const query = new URLSearchParams({ offset, limit: PAGE_SIZE, ...filters });
  const key = `${state.collection}|${query}`;
  if (key === state.shownBrowse) return;
  state.shownBrowse = key;
  loading(true);
  try {
    const page = await api(`${collectionPath("/images")}?${query}`);
    const grid = $("#browse");
    showFacets(page, filters);
    const narrowed = Object.keys(filters).length > 0;
    if (!page.total && !narrowed) grid.replaceChildren(emptyNote("This collection is empty.", addImagesAction));
    else if (!page.total) grid.replaceChildren(emptyNote("No image passes these filters."));
    else fill(grid, page.items, "No images on this page.");
    const last = Math.min(page.total, offset + page.items.length);
    $("#page-info").textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "";
    $("#prev").disabled = offset === 0;
    $("#next").disabled = last >= page.total;
  } catch (error) {
    state.shownBrowse = null;
    say(`Cannot list images: ${error.message}`);
  } finally {
    loading(false);
  }
}

// --- adding ----------------------------------------------------------------------------------

function progress(done, total, text, failed = 0) {
  $("#progress").hidden = false;
  $("#progress-fill").style.width = total ? `${(100 * (done - failed)) / total}%` : "0";
  $("#progress-failed").style.width = total ? `${(100 * failed) / total}%` : "0";
  $("#progress-text").textContent = text;
}

function logLine(text, bad = false) {
  const line = document.createElement("li");
  line.textContent = text;
  if (bad) line.className = "bad";
  $("#add-log").prepend(line);
}

function uploadSummary(total, outcomes, failures) {
  const count = (status) => outcomes.filter((o) => o === status).length;
  const parts = [`${count("added")} new`];
  if (count("unchanged")) parts.push(`${count("unchanged")} already here`);
  if (count("updated")) parts.push(`${count("updated")} updated`);
  let text = `${plural(total, "file")}: ${parts.join(", ")}`;
  if (failures.length) {
    const which = failures.map((f) => `${f.name} (${f.reason})`).join(", ");
    text += ` · ${failures.length} failed: ${which}`;
  }
  return text;
}

function failureReason(name, message) {
  return message.startsWith(`${name}: `) ? message.slice(name.length + 2) : message;
}

async function addFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length || !state.collection) return;
  say("");
  let done = 0;
  const outcomes = []; // status of each file stored
  const failures = []; // {name, reason} of each file refused
  const record = (name, outcome) => {
    if (outcome.status === "skipped") {
      failures.push({ name, reason: outcome.reason || "skipped" });
      logLine(`${name}: ${outcome.reason || "skipped"}`, true);
    } else {
      outcomes.push(outcome.status);
      logLine(`${name}: ${outcome.status}`);
    }
  };
  progress(0, files.length, `uploading 0 / ${files.length}`);
  for (let start = 0; start < files.length; start += UPLOAD_CHUNK) {
    const chunk = files.slice(start, start + UPLOAD_CHUNK);
    const form = new FormData();
    chunk.forEach((file) => form.append("files", file, file.name));
    try {
      const report = await api(collectionPath("/images"), { method: "POST", body: form });
      for (const outcome of report.results) record(outcome.filename, outcome);
    } catch (error) {
      // One bad file refuses its whole chunk: retry the others one by one.
      for (const file of chunk) {
        const single = new FormData();
        single.append("files", file, file.name);
        try {
          const report = await api(collectionPath("/images"), { method: "POST", body: single });
          record(file.name, report.results[0]);
        } catch (singleError) {
          const reason = failureReason(file.name, singleError.message);
          failures.push({ name: file.name, reason });
          logLine(`${file.name}: ${reason}`, true);
        }
      }
    }
    done += chunk.length;
    const last = done === files.length;
    const text = last ? uploadSummary(files.length, outcomes, failures) : `uploading ${done} / ${files.length}`;
    progress(done, files.length, text, failures.length);
  }
  state.results.clear();
  state.shownBrowse = null;
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
      const leftOut = Object.values(r.left_out || {}).reduce((a, b) => a + b, 0);
      progress(1, 1, `done: ${r.added} added, ${r.updated} updated, ${r.unchanged} unchanged, ` +
        `${r.removed} removed, ${r.skipped.length + (r.skipped_before || 0)} skipped` +
        (leftOut ? `, ${plural(leftOut, "file")} left out by type` : ""));
      r.skipped.forEach((s) => logLine(`${s.path}: ${s.reason}`, true));
    } else {
      progress(0, 1, `${job.state}${job.error ? `: ${job.error}` : ""}`);
    }
    state.results.clear();
    state.shownBrowse = null;
    await refreshCollections();
  } catch (error) {
    say(`Cannot index ${path}: ${error.message}`);
  }
}

// --- collections -----------------------------------------------------------------------------

async function refreshCollections() {
  const list = await api("/collections");
  state.collections = list.collections;
  const picker = $("#collection");
  picker.replaceChildren(
    ...list.collections.map((c) => {
      const option = document.createElement("option");
      option.value = c.name;
      option.textContent = c.name;
      return option;
    }),
  );
  const names = list.collections.map((c) => c.name);
  const wanted = params().get("c") || state.collection || localStorage.getItem("lookalike-collection") ||
    list.default;
  state.collection = names.includes(wanted) ? wanted : names[0] || null;
  picker.value = state.collection || "";
  showCount();
  if (!state.collection) say("No collection yet: create one with “+ new”, then add images.", true);
}

function showCount() {
  const current = currentInfo();
  $("#count").textContent = current ? `${plural(current.images, "image")} · ${current.model}` : "no collection";
}

async function selectCollection(name) {
  state.collection = name;
  localStorage.setItem("lookalike-collection", name);
  $("#collection").value = name;
  state.shownSearch = null;
  state.shownBrowse = null;
  showCount();
  try {
    const found = await api(collectionPath("/categories"));
    $("#by-category-box").hidden = Object.keys(found.categories).length === 0;
  } catch (_) {
    $("#by-category-box").hidden = true;
  }
}

function newCollectionDialog() {
  const dialog = $("#new-dialog");
  const input = $("#new-name");
  const error = $("#new-error");
  const show = (text) => {
    error.textContent = text;
    error.hidden = !text;
    input.setAttribute("aria-invalid", String(Boolean(text)));
  };
  $("#new-collection").addEventListener("click", () => {
    input.value = "";
    show("");
    dialog.showModal();
    input.focus();
  });
  $("#new-cancel").addEventListener("click", () => dialog.close());
  input.addEventListener("input", () => show(""));
  $("#new-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name) return show("Give the collection a name.");
    if (name.length > 64) return show("At most 64 characters.");
    if (!NAME_RE.test(name)) {
      const bad = Array.from(new Set(name.replace(/[A-Za-z0-9_-]/g, "")))
        .map((c) => (c === " " ? "spaces" : `“${c}”`))
        .join(", ");
      return show(`Only letters, digits, - and _ can be used: not ${bad}.`);
    }
    try {
      await api("/collections", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
    } catch (failure) {
      return show(failure.status === 409 ? `There is already a collection “${name}”.` : failure.message);
    }
    dialog.close();
    await refreshCollections();
    await go({ c: name, tab: "add", q: null, box: null, view: null, offset: null, ...NO_FILTERS });
    say(`Created ${name}: add images to it.`, true);
  });
}

// --- tabs and wiring -------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".tabs button").forEach((button) => {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  });
  document.querySelectorAll(".tab").forEach((tab) => {
    tab.hidden = tab.id !== `tab-${name}`;
  });
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

function adaptToDevice() {
  // Touch-only devices can neither drop nor press Ctrl+V: say only what works there.
  const touchOnly = !matchMedia("(any-pointer: fine)").matches;
  document.body.classList.toggle("touch", touchOnly);
  if (/Mac|iPhone|iPad/.test(navigator.platform)) $("#paste-keys").textContent = "⌘V";
  if (matchMedia("(min-width: 760px)").matches) $("#options-box").open = true;
}

function optionsChanged() {
  const k = Math.max(1, Math.min(200, Number($("#k").value) || 12));
  go(
    {
      k: k === 12 ? null : k,
      min: $("#min-score").value,
      cat: $("#by-category").checked ? "1" : null,
      loc: $("#localize").checked ? "1" : null,
      rr: $("#rerank").checked ? "1" : null,
    },
    { replace: true },
  );
}

async function start() {
  adaptToDevice();
  document.querySelectorAll(".tabs button").forEach((button) => {
    button.addEventListener("click", () => go({ tab: button.dataset.tab === "search" ? null : button.dataset.tab, view: null }));
  });
  $("#words-form").addEventListener("submit", (event) => {
    // words alone, or with the photo shown: that photo searched among what the words find
    event.preventDefault();
    if (!state.collection) return say("Create a collection first (+ new).");
    const words = $("#words").value.trim();
    const q = params().get("q") || "";
    const photo = q.startsWith("upload:") ? q : "words";
    if (!words && photo === "words") return;
    go({ tab: null, q: photo, t: words, view: null });
  });
  $("#file").addEventListener("change", (event) => {
    searchFile(event.target.files[0]);
    event.target.value = "";
  });
  dropZone($("#drop"), (files) => searchFile(files[0]));
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
  $("#options").addEventListener("change", optionsChanged);
  $("#options").addEventListener("submit", (event) => {
    event.preventDefault();
    optionsChanged();
  });
  $("#whole-photo").addEventListener("click", () => go({ box: null }));
  regionSelection();
  FACETS.forEach((name) => {
    $(`#facet-${name}`).addEventListener("change", (event) => go({ [name]: event.target.value, offset: null }));
  });
  $("#facets-clear").addEventListener("click", () => go({ ...NO_FILTERS, offset: null }));
  $("#prev").addEventListener("click", () => go({ offset: Math.max(0, (Number(params().get("offset")) || 0) - PAGE_SIZE) || null }));
  $("#next").addEventListener("click", () => go({ offset: (Number(params().get("offset")) || 0) + PAGE_SIZE }));
  newCollectionDialog();
  $("#collection").addEventListener("change", (event) => {
    go({ c: event.target.value, q: null, box: null, view: null, offset: null, ...NO_FILTERS });
  });
  $("#token").value = localStorage.getItem("lookalike-token") || "";
  $("#token").addEventListener("change", (event) => {
    localStorage.setItem("lookalike-token", event.target.value.trim());
  });
  $("#viewer-close").addEventListener("click", closeViewer);
  $("#viewer").addEventListener("cancel", (event) => {
    event.preventDefault();
    closeViewer();
  });
  $("#viewer").addEventListener("click", (event) => {
    if (event.target === $("#viewer")) closeViewer(); // a click on the backdrop
  });
  $("#viewer-similar").addEventListener("click", () => {
    const id = $("#viewer").dataset.id;
    go({ tab: null, q: `id:${id}`, box: null, view: null, t: null });
    window.scrollTo({ top: 0 });
  });
  $("#viewer-delete").addEventListener("click", deleteViewed);
  $("#viewer-explain").addEventListener("click", toggleExplain);
  window.addEventListener("popstate", () => {
    say("");
    render();
  });
  startReview(); // review.js

  try {
    state.health = await api("/health");
    $("#token-box").hidden = !state.health.writes_need_token;
    $("#server-form").hidden = !state.health.server_paths;
    await refreshCollections();
    if (state.collection) {
      await selectCollection(state.collection);
      if (params().get("c") !== state.collection) history.replaceState(null, "", `?${new URLSearchParams({ ...Object.fromEntries(params()), c: state.collection })}`);
    }
    await render();
  } catch (error) {
    say(`The server does not answer: ${error.message}`);
  }
  document.body.dataset.ready = "true";
}

start();
