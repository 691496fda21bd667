// kpi-monitor's live page: polls /kpis?view=table, long-polls /decisions/changes, draws one
// campaign's last hour and today from /kpis?campaign=. No dependencies, no build step.
"use strict";

const POLL_MS = 3000;
const state = {
  sort: "attention", order: "asc", window: null, channel: "", owner: "", search: "",
  selected: null, previous: null, cursor: "", decisions: [], loadedAt: Date.now(),
};
window.kpiMonitorPage = state; // tests read loadedAt: the page is never reloaded

const $ = (id) => document.getElementById(id);
const fmt = {
  ratio: (v) => (v == null ? "–" : (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%"),
  money: (v) => (v == null ? "–" : v.toLocaleString(undefined, { maximumFractionDigits: 2 })),
  times: (v) => (v == null ? "–" : v.toFixed(2) + "×"),
  seconds: (v) => {
    if (v == null) return "–";
    if (v < 120) return Math.round(v) + " s";
    if (v < 7200) return Math.round(v / 60) + " min";
    return (v / 3600).toFixed(1) + " h";
  },
  count: (v) => (v == null ? "–" : Math.round(v).toLocaleString()),
};

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function tableUrl() {
  const params = new URLSearchParams({ view: "table", limit: "200", order: state.order });
  params.set("sort", state.sort === "campaign" || state.sort === "attention" || state.sort === "oldest_lead"
    ? state.sort : `${state.sort}:${state.window}`);
  if (state.channel) params.set("channel", state.channel);
  if (state.owner) params.set("owner", state.owner);
  if (state.search) params.set("q", state.search);
  return "/kpis?" + params.toString();
}

function fillSelect(select, values, current) {
  const wanted = ["", ...values];
  const have = [...select.options].map((o) => o.value);
  if (have.join("\u0000") === wanted.join("\u0000")) return;
  select.replaceChildren(...wanted.map((v) => el("option", { value: v, text: v || "all" })));
  select.value = current;
}

function share(part, whole) {
  return whole > 0 ? part / whole : null;
}

function drawPipeline(p, at) {
  const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  const events = sum(p.events_total);
  // Rates over at least two seconds: a refresh right after another (a filter changed) would
  // divide a few events by a few milliseconds.
  if (state.previous && at - state.previous.at < 2000) return drawCounters(p, events);
  if (state.previous) {
    const seconds = (at - state.previous.at) / 1000;
    const rate = (events - state.previous.events) / seconds;
    $("rate").textContent = fmt.count(Math.max(0, rate));
    $("rates").textContent = Object.entries(p.events_total)
      .map(([type, n]) => `${type} ${fmt.count(Math.max(0, (n - (state.previous.byType[type] || 0)) / seconds))}`)
      .join(" · ");
  }
  state.previous = { at, events, byType: p.events_total };
  drawCounters(p, events);
}

function drawCounters(p, events) {
  const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  const rejected = sum(p.rejected_total);
  $("lag").textContent = fmt.count(p.lag_messages);
  $("rejected").textContent = `${fmt.count(rejected)} (${fmt.ratio(share(rejected, events + rejected))})`;
  $("late").textContent = fmt.ratio(share(sum(p.late_total), events));
  $("duplicate").textContent = fmt.ratio(share(sum(p.duplicate_total), events));
  $("budget").textContent = `${fmt.count(p.campaigns_tracked)} / ${fmt.count(p.campaign_budget)}`;
}

function holdingOn(entry, kpi) {
  return entry.holding.filter((h) => h.kpi === kpi);
}

function kpiCell(entry, kpi, value, format, better) {
  const td = el("td", { class: "num", "data-kpi": kpi, text: format(value) });
  const holding = holdingOn(entry, kpi);
  const target = entry.targets[kpi];
  if (holding.length) {
    td.classList.add("breach");
    td.title = holding.map((h) => `${h.rule}: ${kpi} ${h.window || ""} ${format(h.value)} vs ${format(h.threshold)}`).join("\n");
  } else if (target != null && value != null) {
    const good = better === "high" ? value >= target : value <= target;
    td.classList.add(good ? "on-target" : "off-target");
    td.title = `target ${format(target)}`;
  }
  return td;
}

function stateCell(entry) {
  const verdicts = Object.values(entry.verdicts);
  let label = "ok", cls = "ok";
  if (verdicts.includes("pause")) { label = "paused"; cls = "paused"; }
  else if (entry.holding.length) { label = "breaching"; cls = "breaching"; }
  else if (verdicts.includes("notify")) { label = "notified"; cls = "notified"; }
  const span = el("span", { class: `state ${cls}`, text: label });
  if (entry.holding.length) span.title = [...new Set(entry.holding.map((h) => h.rule))].join(", ");
  return el("td", {}, span);
}

function drawTable(body) {
  const windows = body.windows;
  const select = $("window");
  if ([...select.options].map((o) => o.value).join() !== windows.join()) {
    select.replaceChildren(...windows.map((w) => el("option", { value: w, text: w })));
  }
  if (!state.window || !windows.includes(state.window)) {
    state.window = windows.includes("15m") ? "15m" : windows[0];
  }
  select.value = state.window;
  fillSelect($("channel"), body.channels, state.channel);
  fillSelect($("owner"), body.owners, state.owner);
  $("count").textContent = `${body.matched} of ${body.total} campaigns` +
    (body.matched > body.campaigns.length ? ` (first ${body.campaigns.length})` : "");
  const trailing = windows.find((w) => body.campaigns.some((c) => c.windows[w]?.response_p95_seconds != null)) || windows[0];
  const rows = body.campaigns.map((entry) => {
    const w = entry.windows[state.window] || {};
    const tr = el("tr", { "data-campaign": entry.campaign },
      el("td", { text: entry.campaign }),
      el("td", { text: entry.channel || "–" }),
      el("td", { text: entry.owner || "–" }),
      stateCell(entry),
      kpiCell(entry, "ctr", w.ctr, fmt.ratio, "high"),
      kpiCell(entry, "conversion", w.conversion, fmt.ratio, "high"),
      kpiCell(entry, "cpa", w.cpa, fmt.money, "low"),
      kpiCell(entry, "roas", w.roas, fmt.times, "high"),
      kpiCell(entry, "spend", w.spend, fmt.money, "low"),
      kpiCell(entry, "response_p95", entry.windows[trailing]?.response_p95_seconds, fmt.seconds, "low"),
      kpiCell(entry, "oldest_uncontacted_lead_age", entry.oldest_uncontacted_lead_age_seconds, fmt.seconds, "low"),
      kpiCell(entry, "budget_used", entry.pacing?.budget_used_ratio, fmt.ratio, "low"),
      kpiCell(entry, "budget_pacing", entry.pacing?.pacing_ratio, fmt.times, "low"),
    );
    if (entry.campaign === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select_(entry.campaign));
    return tr;
  });
  $("campaigns").tBodies[0].replaceChildren(...rows);
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", state.order === "asc");
  }
}

async function refresh() {
  try {
    const body = await getJSON(tableUrl());
    drawPipeline(body.pipeline, body.generated_at_ms);
    drawTable(body);
    $("status").textContent = `updated ${new Date(body.generated_at_ms).toLocaleTimeString()}` +
      (body.decision_mode ? ` · decisions ${body.decision_mode}` : "");
    if (state.selected) await drawDetail();
  } catch (error) {
    $("status").textContent = `not updated: ${error.message}`;
  }
}

function polyline(points, max, color) {
  if (!points.length) return "";
  const step = 600 / Math.max(1, points.length - 1);
  const coords = points.map((v, i) => `${(i * step).toFixed(1)},${(135 - (v == null ? 0 : v / (max || 1)) * 125).toFixed(1)}`);
  return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${coords.join(" ")}"/>`;
}

function drawChart(svg, legend, points, lines) {
  const parts = [];
  const text = [];
  for (const [name, values, color, format] of lines(points)) {
    const max = Math.max(...values.map((v) => v || 0));
    parts.push(polyline(values, max, color));
    const last = values.length ? values[values.length - 1] : null;
    text.push(`<span style="color:${color}">■ ${name} (max ${format(max)}, now ${format(last)})</span>`);
  }
  svg.innerHTML = parts.join("");
  legend.innerHTML = text.join(" &nbsp; ");
}

const ratioOf = (a, b) => (b > 0 ? a / b : null);
const number = (v) => (v == null ? "–" : +v.toPrecision(4));

async function drawDetail() {
  const campaign = state.selected;
  let body;
  try {
    body = await getJSON("/kpis?campaign=" + encodeURIComponent(campaign));
  } catch (error) {
    $("detail-title").textContent = `${campaign}: ${error.message}`;
    return;
  }
  $("detail").hidden = false;
  $("detail-title").textContent = `${campaign} · ${body.channel || "no channel"}${body.owner ? " · " + body.owner : ""}`;
  const f = body.series.fields;
  const at = (name) => f.indexOf(name);
  const bucketSeconds = body.series.bucket_ms / 1000;
  $("title-hour").textContent = `last ${body.series.minutes.length} buckets of ${bucketSeconds < 60 ? bucketSeconds + " s" : bucketSeconds / 60 + " min"}`;
  drawChart($("chart-hour"), $("legend-hour"), body.series.minutes, (ps) => [
    ["CTR", ps.map((p) => ratioOf(p[at("clicks")], p[at("impressions")])), "#0277bd", fmt.ratio],
    ["conversion", ps.map((p) => ratioOf(p[at("sales")], p[at("clicks")])), "#2e7d32", fmt.ratio],
  ]);
  drawChart($("chart-day"), $("legend-day"), body.series.hours, (ps) => [
    ["CTR", ps.map((p) => ratioOf(p[at("clicks")], p[at("impressions")])), "#0277bd", fmt.ratio],
    ["spend", ps.map((p) => p[at("spend")]), "#ef6c00", fmt.money],
  ]);
  $("detail-holding").replaceChildren(...(body.holding.length ? body.holding.map((h) =>
    el("li", { text: `${h.rule}: ${h.kpi}${h.window ? " over " + h.window : ""} = ${number(h.value)} (threshold ${number(h.threshold)})` }))
    : [el("li", { class: "muted", text: "no rule's condition holds" })]));
  const mine = state.decisions.filter((d) => d.campaign_id === campaign);
  $("detail-decisions").replaceChildren(...(mine.length ? mine.map(decisionItem)
    : [el("li", { class: "muted", text: "none" })]));
}

function select_(campaign) {
  state.selected = campaign;
  for (const tr of $("campaigns").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.campaign === campaign);
  drawDetail();
}

function decisionItem(d) {
  const evidence = d.evidence || {};
  const said = Object.entries(evidence)
    .filter(([, v]) => v != null && typeof v !== "object")
    .map(([k, v]) => `${k}=${typeof v === "number" ? +v.toPrecision(4) : v}`).join(", ");
  return el("li", { "data-decision": d.decision_id, "data-campaign": d.campaign_id },
    el("span", { class: `verdict-${d.verdict}`, text: d.verdict }),
    ` ${d.campaign_id} by ${d.rule} at ${new Date(d.issued_at_ms).toLocaleTimeString()} (${d.mode}) — ${said}`);
}

function drawDecisions() {
  const newest = state.decisions.slice(-50).reverse();
  $("decisions").replaceChildren(...(newest.length ? newest.map(decisionItem)
    : [el("li", { class: "muted", text: "no decision yet" })]));
}

async function followDecisions() {
  try {
    const first = await getJSON("/decisions");
    state.cursor = first.cursor;
    state.decisions = Object.values(first.campaigns).flatMap((byRule) => Object.values(byRule))
      .sort((a, b) => a.issued_at_ms - b.issued_at_ms);
    drawDecisions();
  } catch (error) {
    $("decisions").replaceChildren(el("li", { class: "muted", text: `decisions unavailable: ${error.message}` }));
    setTimeout(followDecisions, 10000);
    return;
  }
  for (;;) {
    try {
      const changes = await getJSON(`/decisions/changes?wait=25&cursor=${encodeURIComponent(state.cursor)}`);
      if (changes.reset) return followDecisions();
      state.cursor = changes.cursor;
      if (changes.decisions.length) {
        state.decisions.push(...changes.decisions);
        state.decisions = state.decisions.slice(-1000);
        drawDecisions();
        refresh();
      }
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
  }
}

function wireControls() {
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const sort = th.dataset.sort;
      if (state.sort === sort) state.order = state.order === "asc" ? "desc" : "asc";
      else { state.sort = sort; state.order = sort === "campaign" ? "asc" : "desc"; }
      refresh();
    });
  }
  $("window").addEventListener("change", (e) => { state.window = e.target.value; refresh(); });
  $("channel").addEventListener("change", (e) => { state.channel = e.target.value; refresh(); });
  $("owner").addEventListener("change", (e) => { state.owner = e.target.value; refresh(); });
  let typing;
  $("search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.search = e.target.value.trim(); refresh(); }, 250);
  });
}

wireControls();
refresh();
setInterval(refresh, POLL_MS);
followDecisions();
