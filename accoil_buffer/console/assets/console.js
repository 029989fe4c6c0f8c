// The console page: polls the daemon's /console/api and draws what it answers. Every value
// from a message goes in as text (textContent), never as markup.
"use strict";

const API = "/console/api";
const POLL_EVENTS_MS = 1000;
const POLL_STATE_MS = 3000;
const POLL_HISTORY_MS = 15000;
const HISTORY_AFTER_EVENTS_MS = 2000; // new events redraw the day chart this soon at most
const SVG = "http://www.w3.org/2000/svg";
const SERIES = [
  ["delivered", "delivered", "#3b82f6"],
  ["pending", "folded, waiting for delivery", "#f59e0b"],
  ["anonymous", "held under anonymous ids", "#a855f7"],
  ["unfolded", "received, not yet folded", "#10b981"],
];
const PALETTE = ["#ef4444", "#f97316", "#eab308", "#84cc16", "#06b6d4", "#6366f1", "#ec4899",
  "#78716c", "#14b8a6", "#8b5cf6"];

const live = { entries: [], last: 0, size: 500, open: new Set() };
let historyAt = 0;

function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function number(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : value;
}

async function api(path, options = {}) {
  const answer = await fetch(API + path, { headers: { Accept: "application/json" }, ...options });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.message || `HTTP ${answer.status}`);
  return body;
}

function reached(problem) {
  document.getElementById("updated").textContent = problem
    ? `cannot read the daemon: ${problem.message}`
    : `updated ${new Date().toLocaleTimeString()}`;
}

// --- Delivery state and what waits -----------------------------------------------------------

async function refreshState() {
  const state = await api("/state");
  const { overview } = state;
  const badge = document.getElementById("state");
  badge.textContent = overview.state + (overview.storing ? "" : ", NOT STORING");
  badge.className = `badge ${overview.state}`;
  document.getElementById("headline").textContent = overview.headline;
  document.getElementById("facts").replaceChildren(
    ...overview.facts.flatMap(([label, value]) =>
      [el("dt", {}, label), el("dd", {}, number(value))]),
  );
  document.querySelector("#pending tbody").replaceChildren(
    ...overview.pending.map(([label, n]) =>
      el("tr", {}, el("th", {}, label), el("td", {}, number(n)))),
  );
  drawLetters(state);
}

function drawLetters(state) {
  const total = state.dead_letters_total;
  const shown = state.dead_letters.length;
  document.getElementById("dead-count").textContent = !total ? "(none)"
    : total > shown ? `(${total}, the first ${shown} shown)` : `(${total})`;
  const all = document.getElementById("replay-all");
  all.disabled = !state.replay_enabled || !total;
  all.title = state.replay_enabled ? "" : "replay needs an api_key";
  document.querySelector("#letters tbody").replaceChildren(
    ...state.dead_letters.map((letter) =>
      el("tr", { "data-letter": letter.id },
        el("td", {}, letter.id),
        el("td", {}, letter.type),
        el("td", {}, `HTTP ${letter.status ?? "?"}`, el("br"), el("small", {}, letter.created_at)),
        el("td", {}, el("code", {}, letter.response || "")),
        el("td", {}, jsonDetails(letter.message_id, letter.payload)),
        el("td", {}, el("button", {
          type: "button", "data-replay": letter.id, disabled: !state.replay_enabled,
        }, "Replay")),
      )),
  );
}

async function replay(ids) {
  const result = document.getElementById("replay-result");
  result.textContent = "replaying…";
  try {
    const answer = await api("/dead-letters/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(ids === null ? {} : { ids }),
    });
    result.textContent = `${answer.accepted} accepted, ${answer.refused} refused again`;
  } catch (problem) {
    result.textContent = `replay failed: ${problem.message}`;
  }
  await refreshState().catch(reached);
}

// --- The day charts ---------------------------------------------------------------------------

async function refreshHistory() {
  historyAt = Date.now();
  const history = await api("/history");
  drawBars(document.getElementById("days"), "days-legend", history.days,
    SERIES.map(([key, label, color]) => ({ key, label, color, values: history[key] })));
  drawBars(document.getElementById("drops"), "drops-legend", history.days,
    Object.entries(history.drops).map(([reason, values], i) => ({
      key: reason, label: reason, color: PALETTE[i % PALETTE.length], values,
    })));
}

function drawBars(svg, legendId, days, series) {
  const [width, height, left, bottom, top] = [620, 180, 44, 20, 8];
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + s.values[i], 0));
  const most = Math.max(1, ...totals);
  const slot = (width - left) / days.length;
  const scale = (n) => (n / most) * (height - bottom - top);
  const nodes = [
    el("svg:line",
      { x1: left, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" }),
    el("svg:text", { x: left - 6, y: top + 8, class: "tick", "text-anchor": "end" }, most),
    el("svg:text", { x: left - 6, y: height - bottom, class: "tick", "text-anchor": "end" }, 0),
    el("svg:text", { x: left, y: height - 4, class: "tick" }, days[0]),
    el("svg:text", { x: width, y: height - 4, class: "tick", "text-anchor": "end" },
      days[days.length - 1]),
  ];
  days.forEach((day, i) => {
    let base = height - bottom;
    for (const s of series) {
      const n = s.values[i];
      if (!n) continue;
      const tall = Math.max(1, scale(n));
      base -= tall;
      nodes.push(el("svg:rect", {
        x: left + i * slot + 1, y: base, width: Math.max(1, slot - 2), height: tall,
        fill: s.color, "data-day": day, "data-series": s.key, "data-value": n,
      }, el("svg:title", {}, `${day}: ${s.label} ${n}`)));
    }
  });
  if (!series.length || !totals.some(Boolean)) {
    nodes.push(el("svg:text",
      { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" },
      "nothing in the last 30 days"));
  }
  svg.replaceChildren(...nodes);
  document.getElementById(legendId).replaceChildren(...series.map((s) =>
    el("span", {}, el("svg:svg", { width: 10, height: 10 },
      el("svg:rect", { width: 10, height: 10, fill: s.color })), ` ${s.label}`)));
}

// --- Live events --------------------------------------------------------------------------------

async function refreshEvents() {
  const answer = await api(`/events?after=${live.last}`);
  live.size = answer.size;
  if (!answer.entries.length) return;
  if (answer.entries[0].seq <= live.last) live.entries = []; // the daemon restarted
  live.entries.push(...answer.entries);
  live.entries.splice(0, Math.max(0, live.entries.length - live.size));
  live.last = live.entries[live.entries.length - 1].seq;
  drawEvents();
  if (Date.now() - historyAt > HISTORY_AFTER_EVENTS_MS) refreshHistory().catch(reached);
}

function matches(entry, filters) {
  const has = (value, wanted) => !wanted || (value || "").toLowerCase().includes(wanted);
  const type = entry.outcome === "rejected" ? "rejected" : entry.type;
  return (!filters.type || filters.type === type)
    && (has(entry.userId, filters.user) || has(entry.anonymousId, filters.user))
    && has(entry.name, filters.event);
}

function drawEvents() {
  const form = new FormData(document.getElementById("filters"));
  const filters = Object.fromEntries(
    [...form.entries()].map(([name, value]) => [name, String(value).trim().toLowerCase()]));
  const shown = live.entries.filter((entry) => matches(entry, filters)).reverse();
  document.getElementById("live-count").textContent =
    `(${shown.length} of the last ${live.entries.length}; at most ${live.size} are kept)`;
  document.querySelector("#events tbody").replaceChildren(...shown.map(eventRow));
}

function eventRow(entry) {
  const who = entry.userId || (entry.anonymousId ? `anonymous ${entry.anonymousId}` : "");
  const became = entry.outcome === "rejected"
    ? [el("li", {}, entry.error)]
    : entry.became.map((b) => el("li", {},
      b.mapping ? el("strong", {}, `${b.mapping}: `) : "",
      b.dropped ? `dropped: ${b.dropped} (counted as ${b.reason})` : `${b.action} → ${b.where}`));
  if (entry.note) became.push(el("li", { class: "muted" }, entry.note));
  if (entry.corrections && entry.corrections.length) {
    became.push(el("li", { class: "muted" }, `corrected: ${entry.corrections.join(", ")}`));
  }
  const details = entry.outcome === "rejected"
    ? textDetails("as received", entry.preview)
    : jsonDetails("message", entry.message);
  details.open = live.open.has(entry.seq);
  details.addEventListener("toggle", () => {
    if (details.open) live.open.add(entry.seq); else live.open.delete(entry.seq);
  });
  return el("tr", { class: `event ${entry.outcome}`, "data-seq": entry.seq,
    "data-message-id": entry.messageId },
    el("td", {}, new Date(entry.received_at).toLocaleTimeString()),
    el("td", {}, entry.type || "—"),
    el("td", {}, entry.name || ""),
    el("td", {}, who),
    el("td", {}, el("span", { class: `outcome ${entry.outcome}` }, entry.outcome)),
    el("td", {}, el("ul", { class: "became" }, became), details),
  );
}

function jsonDetails(summary, value) {
  return textDetails(summary, JSON.stringify(value, null, 2));
}

function textDetails(summary, text) {
  return el("details", {}, el("summary", {}, summary), el("pre", {}, text));
}

// --- Start ----------------------------------------------------------------------------------

function every(ms, work) {
  const run = () => work().then(() => reached(null), reached).finally(() => setTimeout(run, ms));
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filters").addEventListener("input", drawEvents);
  document.getElementById("replay-all").addEventListener("click", () => replay(null));
  document.querySelector("#letters tbody").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-replay]");
    if (button) replay([Number(button.dataset.replay)]);
  });
  every(POLL_STATE_MS, refreshState);
  every(POLL_EVENTS_MS, refreshEvents);
  every(POLL_HISTORY_MS, refreshHistory);
  document.body.dataset.ready = "true";
});
