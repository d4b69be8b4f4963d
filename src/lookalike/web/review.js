// The review of duplicates (?tab=review&g=N): group by group, side by side, keep or remove,
// driven by the keyboard. Loaded before app.js, whose helpers ($, api, go, params, say,
// collectionPath, canWrite, emptyNote, folderLabel, plural, refreshCollections) it uses.
//
// Removals are deferred: k / r only mark images (the server's suggestion is the starting
// mark), u undoes the last mark, and nothing changes until Remove (a) is pressed and
// confirmed. Undoing a removal already made could only re-index the file from its path,
// which an uploaded file (deleted with its image) or a file deleted on disk cannot give back,
// so the page never needs to: every choice stays undoable until it is applied.
"use strict";

const review = {
  collection: null, // whose groups these are
  groups: null, // GET .../duplicates: groups[].images[] (id, tier, keep, why, ...)
  loading: null,
  marks: new Map(), // image id -> "keep" | "remove" (what the user chose, or the suggestion)
  undo: [], // [{ id, before }], last choice last
  focus: 0, // the photo of the shown group that k / r act on
  armed: false, // Remove pressed once: the next press removes
};

const TIER_TEXT = {
  exact: "exact copies",
  near: "near-duplicates: the same picture edited",
  similar: "similar: other shots of one scene",
};
const BADGE = { keep: "keep", exact: "exact copy", near: "near copy", similar: "another shot" };

function reviewShown() {
  return !$("#tab-review").hidden;
}

async function loadGroups() {
  const name = state.collection;
  if (review.collection === name && review.groups) return;
  if (!review.loading || review.collection !== name) {
    review.collection = name;
    review.groups = null;
    review.loading = api(collectionPath("/duplicates")).then((found) => {
      if (review.collection !== name) return;
      review.groups = found.groups;
      review.marks = new Map();
      review.undo = [];
      for (const group of found.groups) {
        for (const image of group.images) review.marks.set(image.id, image.keep ? "keep" : "remove");
      }
    });
  }
  try {
    await review.loading;
  } finally {
    review.loading = null;
  }
}

function groupIndex(p) {
  const count = review.groups ? review.groups.length : 0;
  const wanted = Number(p.get("g")) || 1;
  return Math.min(Math.max(wanted, 1), Math.max(count, 1)) - 1;
}

async function renderReview(p) {
  if (!state.collection) return;
  const box = $("#review-group");
  if (!review.groups || review.collection !== state.collection) {
    box.replaceChildren(emptyNote("Looking for duplicates: every grouped file is read once…"));
    try {
      await loadGroups();
    } catch (error) {
      box.replaceChildren(emptyNote(`Cannot look for duplicates: ${error.message}`));
      return;
    }
  }
  drawGroup(groupIndex(p));
}

function removals() {
  return Array.from(review.marks).filter(([, mark]) => mark === "remove").map(([id]) => id);
}

function drawGroup(at) {
  const box = $("#review-group");
  const groups = review.groups || [];
  $("#review-prev").disabled = at <= 0;
  $("#review-next").disabled = at >= groups.length - 1;
  $("#review-files-box").hidden = !(state.health && state.health.file_deletion);
  $("#review-files-note").hidden = Boolean(state.health && state.health.file_deletion);
  showMarked();
  if (!groups.length) {
    $("#review-pos").textContent = "";
    $("#review-tier").textContent = "";
    box.replaceChildren(emptyNote("No duplicates in this collection."));
    return;
  }
  const group = groups[at];
  box.dataset.group = String(at);
  $("#review-pos").textContent = `group ${at + 1} of ${groups.length}`;
  $("#review-tier").textContent = `${TIER_TEXT[group.tier]} · ${plural(group.size, "photo")}`;
  $("#review-tier").dataset.tier = group.tier;
  review.focus = Math.min(review.focus, group.images.length - 1);
  box.replaceChildren(
    ...group.images.map((image, n) => reviewCard(image, n, group)),
  );
}

function reviewCard(image, n, group) {
  const node = $("#review-card").content.firstElementChild.cloneNode(true);
  node.dataset.id = image.id;
  node.dataset.tier = image.tier;
  const img = node.querySelector("img");
  img.src = image.thumbnail_url;
  img.alt = image.name;
  node.title = image.path;
  node.querySelector(".review-badge").textContent =
    group.pictures > 1 ? `${BADGE[image.tier]} · picture ${image.picture + 1}` : BADGE[image.tier];
  const size = [`${image.width} × ${image.height}`];
  if (image.format) size.push(image.jpeg_quality ? `${image.format} q${image.jpeg_quality}` : image.format);
  if (image.bytes) size.push(`${Math.max(1, Math.round(image.bytes / 1024))} KB`);
  node.querySelector(".review-size").textContent = image.error ? image.error : size.join(" · ");
  node.querySelector(".name").textContent = image.name;
  node.querySelector(".folder").textContent = folderLabel(image.folder);
  node.querySelector(".review-why").textContent = image.why;
  const mark = review.marks.get(image.id);
  node.classList.toggle("removing", mark === "remove");
  node.classList.toggle("keeping", mark === "keep");
  node.classList.toggle("focused", n === review.focus);
  node.querySelector(".review-keep").setAttribute("aria-pressed", String(mark === "keep"));
  node.querySelector(".review-remove").setAttribute("aria-pressed", String(mark === "remove"));
  node.querySelector(".review-keep").addEventListener("click", () => choose(n, "keep"));
  node.querySelector(".review-remove").addEventListener("click", () => choose(n, "remove"));
  node.querySelector(".review-shot").addEventListener("click", () => {
    review.focus = n;
    redraw();
  });
  return node;
}

function shownGroup() {
  const at = Number($("#review-group").dataset.group);
  return review.groups && review.groups[at] ? { at, group: review.groups[at] } : null;
}

function redraw() {
  const shown = shownGroup();
  if (shown) drawGroup(shown.at);
}

function choose(n, mark) {
  const shown = shownGroup();
  if (!shown) return;
  const image = shown.group.images[n];
  review.focus = n;
  const before = review.marks.get(image.id);
  if (before !== mark) {
    review.undo.push({ id: image.id, before, at: shown.at, n });
    review.marks.set(image.id, mark);
  }
  review.armed = false;
  redraw();
}

function undoLast() {
  const last = review.undo.pop();
  if (!last) return say("Nothing to undo.", true);
  review.marks.set(last.id, last.before);
  review.armed = false;
  review.focus = last.n;
  const shown = shownGroup();
  if (shown && shown.at !== last.at) return go({ g: last.at + 1 });
  redraw();
}

function showMarked() {
  const count = removals().length;
  $("#review-marked").textContent = count ? `${plural(count, "photo")} marked for removal` : "nothing marked";
  const apply = $("#review-apply");
  apply.disabled = count === 0 || !canWrite();
  apply.title = canWrite() ? "" : "Removing needs the API token";
  apply.textContent = review.armed ? `Really remove ${plural(count, "photo")}?` : `Remove ${count || ""}`.trim();
}

async function applyRemovals() {
  const ids = removals();
  if (!ids.length || !canWrite()) return;
  if (!review.armed) {
    review.armed = true;
    showMarked();
    return;
  }
  review.armed = false;
  const deleteFiles = $("#review-files").checked && state.health && state.health.file_deletion;
  const suffix = deleteFiles ? "?delete_file=true" : "";
  let removed = 0;
  const failed = [];
  for (const id of ids) {
    try {
      await api(collectionPath(`/images/${id}${suffix}`), { method: "DELETE" });
      removed += 1;
    } catch (error) {
      if (error.status === 404) removed += 1; // already gone
      else failed.push(`#${id}: ${error.message}`);
    }
  }
  review.groups = null; // the groups left, from the server
  state.results.clear();
  state.shownSearch = null;
  state.shownBrowse = null;
  await refreshCollections();
  await go({ g: null }, { replace: true });
  const what = deleteFiles ? "removed, files deleted" : "removed from the collection (files kept)";
  say(failed.length ? `${removed} ${what}; failed: ${failed.join("; ")}` : `${plural(removed, "photo")} ${what}.`,
    !failed.length);
}

function moveGroup(step) {
  const shown = shownGroup();
  if (!shown) return;
  const next = shown.at + step;
  if (next < 0 || next >= review.groups.length) return;
  review.focus = 0;
  review.armed = false;
  go({ g: next + 1 });
}

function reviewKeys(event) {
  if (!reviewShown() || event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target instanceof HTMLInputElement && event.target.type !== "checkbox";
  if (typing || event.target instanceof HTMLSelectElement) return;
  if (document.querySelector("dialog[open]")) return;
  const shown = shownGroup();
  const count = shown ? shown.group.images.length : 0;
  const actions = {
    k: () => choose(review.focus, "keep"),
    r: () => choose(review.focus, "remove"),
    n: () => moveGroup(1),
    p: () => moveGroup(-1),
    u: undoLast,
    a: applyRemovals,
    ArrowRight: () => {
      review.focus = Math.min(count - 1, review.focus + 1);
      redraw();
    },
    ArrowLeft: () => {
      review.focus = Math.max(0, review.focus - 1);
      redraw();
    },
  };
  const action = actions[event.key];
  if (!action || (!shown && event.key !== "u")) return;
  event.preventDefault();
  action();
}

function startReview() {
  $("#review-prev").addEventListener("click", () => moveGroup(-1));
  $("#review-next").addEventListener("click", () => moveGroup(1));
  $("#review-apply").addEventListener("click", applyRemovals);
  $("#collection").addEventListener("change", () => {
    review.groups = null;
  });
  document.addEventListener("keydown", reviewKeys);
}
