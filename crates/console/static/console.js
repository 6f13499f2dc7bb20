// Live updates of the recalls a page shows, from the console's server-sent events (a Kubernetes
// watch made as the person). Everything from the server is set as text, never as HTML.
"use strict";

const samples = new Map(); // recall name -> [[time ms, users done], ...] of the last minute

function text(root, field, value) {
  root.querySelectorAll(`[data-field="${field}"]`).forEach((el) => { el.textContent = value; });
}

function duration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// Users per second over the last minute, and the time left at that rate.
function rateAndEta(view) {
  const now = Date.now();
  const list = (samples.get(view.name) || []).filter(([t]) => now - t <= 60000);
  list.push([now, view.done]);
  samples.set(view.name, list);
  const [t0, d0] = list[0];
  const seconds = (now - t0) / 1000;
  if (seconds < 1 || view.done <= d0) return ["–", view.done >= view.targeted && view.targeted > 0 ? "done" : "–"];
  const rate = (view.done - d0) / seconds;
  return [`${rate.toFixed(1)} users/s`, duration((view.targeted - view.done) / rate)];
}

function bar(backend) {
  const div = document.createElement("div");
  div.className = "bar";
  div.dataset.backend = backend.name;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = backend.name;
  const progress = document.createElement("progress");
  progress.max = 100;
  const count = document.createElement("span");
  count.className = "count";
  div.append(label, progress, count);
  return div;
}

function updateBars(root, view) {
  const holder = root.querySelector('[data-field="backends"]');
  for (const backend of view.backends) {
    let row = [...root.querySelectorAll("[data-backend]")].find((el) => el.dataset.backend === backend.name);
    if (!row && holder) { row = bar(backend); holder.append(row); }
    if (!row) continue;
    const progress = row.querySelector("progress");
    if (progress) progress.value = backend.percent;
    const count = row.querySelector(".count");
    if (count) count.textContent = `${backend.done}/${backend.targeted}${backend.listing ? "+" : ""}`;
    row.querySelectorAll("[data-count]").forEach((cell) => { cell.textContent = backend[cell.dataset.count]; });
  }
}

function newRow(view) {
  const body = document.querySelector("#recalls tbody");
  if (!body) return null;
  body.querySelector("tr.empty")?.remove();
  const tr = document.createElement("tr");
  tr.dataset.recall = view.name;
  const cell = (field) => { const td = document.createElement("td"); if (field) td.dataset.field = field; tr.append(td); return td; };
  const link = document.createElement("a");
  link.href = `/recalls/${encodeURIComponent(view.name)}`;
  link.textContent = view.name;
  cell().append(link);
  const phase = document.createElement("span");
  phase.className = "phase";
  phase.dataset.field = "phase";
  cell().append(phase);
  cell("reason");
  cell("backends");
  const done = cell();
  const d = document.createElement("span"); d.dataset.field = "done";
  const t = document.createElement("span"); t.dataset.field = "targeted";
  done.append(d, "/", t);
  cell("rate");
  cell("eta");
  body.prepend(tr);
  return tr;
}

function apply(view) {
  let roots = [...document.querySelectorAll("[data-recall]")].filter((el) => el.dataset.recall === view.name);
  if (roots.length === 0) { const row = newRow(view); if (row) roots = [row]; }
  const [rate, eta] = rateAndEta(view);
  for (const root of roots) {
    text(root, "phase", view.phase);
    root.querySelectorAll('[data-field="phase"]').forEach((el) => { el.dataset.phase = view.phase; });
    text(root, "reason", view.reason);
    text(root, "message", view.message);
    text(root, "done", view.done);
    text(root, "targeted", view.targeted);
    text(root, "rate", rate);
    text(root, "eta", eta);
    if (view.auditHead) text(root, "auditHead", view.auditHead);
    if (view.approvedBy) text(root, "approvedBy", view.approvedBy);
    updateBars(root, view);
  }
  // A plan that became ready, or a recall that now waits for approval, changes what can be done
  // on its page (the plan to read, a button to press): the page is rendered again for it.
  const shown = document.body.dataset.shownPhase;
  if (shown && shown !== view.phase && ["Planned", "AwaitingApproval"].includes(view.phase) && document.querySelector("h1 [data-field=phase]")) {
    window.location.reload();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  const phase = document.querySelector("h1 [data-field=phase]");
  if (phase) document.body.dataset.shownPhase = phase.textContent;
  const status = document.getElementById("live-status");
  const source = new EventSource(live.dataset.live);
  source.addEventListener("open", () => { if (status) status.textContent = "Live: updated as the operator works."; });
  // A stream refused (the session ended, the rights were taken away) is closed by the browser,
  // which does not try again: the page says so rather than showing stale counts as live.
  source.addEventListener("error", () => {
    if (!status) return;
    status.textContent = source.readyState === EventSource.CLOSED ? "Not live: your session ended or you may no longer watch. Reload the page." : "Live: reconnecting…";
  });
  source.addEventListener("recall", (event) => {
    const view = JSON.parse(event.data);
    apply(view);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  });
  source.addEventListener("gone", (event) => {
    [...document.querySelectorAll("tr[data-recall]")].filter((el) => el.dataset.recall === event.data).forEach((el) => el.remove());
  });
});
