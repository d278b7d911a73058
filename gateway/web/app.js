// parklight's dashboard: plain JavaScript, no build step, no network beyond the gateway.
// Hash routes: #/ map, #/zone/{site}/{zone}, #/alerts, #/usage, #/control. The session is an HttpOnly
// cookie set by POST /api/v1/login; live updates come over Server-Sent Events.

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
let me = null;       // {name, role}
let live = null;     // the EventSource
const state = { zones: new Map(), nodes: new Map(), faults: new Set() };

const mayOperate = () => me && (me.role === "operator" || me.role === "maintenance");
const mayUsage = () => me && (me.role === "operator" || me.role === "partnership");
const mayControl = () => me && me.role === "operator";
const enc = encodeURIComponent;

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: options.body ? { "Content-Type": "application/json" } : {},
    ...options,
    body: options.body ? JSON.stringify(options.body) : undefined,
  });
  if (response.status === 401) { showLogin(); throw new Error("not logged in"); }
  if (response.status === 204) return null;
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function element(tag, attributes = {}, ...children) {
  const node = attributes.svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "svg" || value === undefined || value === null) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const time = (ms) => (ms ? new Date(ms).toLocaleString() : "–");

function showLogin() {
  me = null;
  if (live) { live.close(); live = null; }
  state.zones.clear();
  state.nodes.clear();
  state.faults.clear();
  $("#login").hidden = false;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#view").replaceChildren();
}

async function start() {
  try {
    me = await api("/api/v1/whoami");
  } catch {
    return;
  }
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `${me.name} (${me.role})`;
  // Links to pages the role may not use are not in the page at all.
  const may = { operations: mayOperate(), usage: mayUsage(), control: mayControl() };
  for (const link of document.querySelectorAll("[data-needs]")) if (!may[link.dataset.needs]) link.remove();
  follow();
  route();
}

// Live updates: subscribe before fetching, so nothing falls between.
function follow() {
  if (live) live.close();
  live = new EventSource("/api/v1/events");
  live.addEventListener("zone", (e) => {
    const z = JSON.parse(e.data);
    const key = `${z.site}/${z.zone}`;
    const known = state.zones.get(key);
    if (known) Object.assign(known, { status: z.status, severity: z.severity, judged_at: z.judged_at });
    paintZone(key);
  });
  live.addEventListener("node", (e) => {
    const n = JSON.parse(e.data);
    const known = state.nodes.get(n.node);
    if (known) known.online = n.online;
    paintNode(n.node);
  });
  live.addEventListener("alert", () => {
    // Not under a crew's fingers: a note being typed stays.
    const typing = [...document.querySelectorAll("tr[data-alert] input")].some((i) => i.value);
    if (location.hash.startsWith("#/alerts") && !typing) route();
    else refreshFaults();
  });
  live.addEventListener("resync", () => route());
}

function route() {
  let parts = [];
  try {
    parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  } catch {
    parts = [];
  }
  const view = parts[0] === "alerts" && mayOperate() ? alertsView()
    : parts[0] === "usage" && mayUsage() ? usageView()
    : parts[0] === "control" && mayControl() ? controlView()
    : parts[0] === "zone" && parts.length === 3 ? zoneView(parts[1], parts[2])
    : mapView();
  view.catch((error) => {
    if (me) $("#view").replaceChildren(element("p", { class: "error", role: "alert" }, `Could not load this page: ${error.message}`));
  });
}

const zoneLink = (site, zone) => `#/zone/${encodeURIComponent(site)}/${encodeURIComponent(zone)}`;

// The map: zones from the site's GeoJSON, coloured by status; nodes as dots.
async function mapView() {
  const [sites, zones] = await Promise.all([api("/api/v1/sites"), api("/api/v1/zones")]);
  state.zones.clear();
  for (const f of zones.features) state.zones.set(f.id, f.properties);
  if (mayOperate()) {
    const nodes = await api("/api/v1/nodes");
    state.nodes = new Map(nodes.map((n) => [n.node, n]));
    await refreshFaults();
  }
  const view = element("div");
  for (const site of sites) {
    const features = zones.features.filter((f) => f.properties.site === site.id);
    const nodes = [...state.nodes.values()].filter((n) => n.site === site.id && n.position);
    view.append(element("h1", {}, site.name),
      element("div", { class: "layout" }, siteMap(site, features, nodes), zoneTable(features)));
  }
  $("#view").replaceChildren(view);
}

function siteMap(site, features, nodes) {
  const points = features.flatMap((f) => f.geometry.coordinates[0]).concat(nodes.map((n) => n.position));
  if (points.length === 0) return element("p", {}, "Nothing to draw: the site has no zones.");
  const lons = points.map((p) => p[0]);
  const lats = points.map((p) => p[1]);
  const [minLon, maxLon, minLat, maxLat] = [Math.min(...lons), Math.max(...lons), Math.min(...lats), Math.max(...lats)];
  const shrink = Math.cos((site.lat * Math.PI) / 180);
  const width = 1000;
  const scale = width / Math.max((maxLon - minLon) * shrink, 1e-9);
  const height = Math.max(200, (maxLat - minLat) * scale);
  const project = ([lon, lat]) => [((lon - minLon) * shrink * scale).toFixed(1), ((maxLat - lat) * scale).toFixed(1)];
  const svg = element("svg", { svg: true, class: "map", viewBox: `-10 -10 ${width + 20} ${height + 20}`, "data-site": site.id });
  for (const f of features) {
    const d = "M" + f.geometry.coordinates[0].map((p) => project(p).join(",")).join("L") + "Z";
    const path = element("path", { svg: true, d, "data-zone": f.id, onclick: () => (location.hash = zoneLink(f.properties.site, f.properties.zone)) },
      element("title", { svg: true }, f.properties.name || f.properties.zone));
    svg.append(path);
  }
  for (const n of nodes) {
    const [x, y] = project(n.position);
    svg.append(element("circle", { svg: true, cx: x, cy: y, r: (Math.max(width, height) / 120).toFixed(1), "data-node": n.node }, element("title", { svg: true }, n.node)));
  }
  setTimeout(() => { features.forEach((f) => paintZone(f.id)); nodes.forEach((n) => paintNode(n.node)); });
  return svg;
}

function zoneTable(features) {
  return element("table", {},
    element("thead", {}, element("tr", {}, element("th", {}, "Zone"), element("th", {}, "Class"), element("th", {}, "Status"))),
    element("tbody", {}, features.map((f) => element("tr", {},
      element("td", {}, element("a", { href: zoneLink(f.properties.site, f.properties.zone) }, f.properties.name || f.properties.zone)),
      element("td", {}, f.properties.class || ""),
      element("td", { "data-status-of": f.id })))));
}

function paintZone(key) {
  const zone = state.zones.get(key);
  if (!zone) return;
  const label = zone.status === "dark" && zone.severity ? `dark (${zone.severity})` : zone.status.replace("_", " ");
  for (const path of document.querySelectorAll(`path[data-zone="${CSS.escape(key)}"]`)) {
    path.setAttribute("class", zone.status);
    path.setAttribute("data-severity", zone.severity || "");
  }
  for (const cell of document.querySelectorAll(`[data-status-of="${CSS.escape(key)}"]`)) {
    cell.replaceChildren(element("span", { class: `badge ${zone.status}` }, label));
  }
}

function paintNode(id) {
  const node = state.nodes.get(id);
  if (!node) return;
  const kind = state.faults.has(id) ? "fault" : node.online ? "online" : "offline";
  for (const dot of document.querySelectorAll(`circle[data-node="${CSS.escape(id)}"]`)) dot.setAttribute("class", kind);
}

async function refreshFaults() {
  if (!mayOperate()) return;
  const open = await api("/api/v1/alerts?state=open&kind=lamp_fault&limit=5000");
  state.faults = new Set(open.map((a) => a.node));
  for (const id of state.nodes.keys()) paintNode(id);
}

// A zone: lux against what its class requires, and its detections, over the last day.
async function zoneView(site, zone) {
  const key = `${site}/${zone}`;
  const zones = await api(`/api/v1/zones?site=${encodeURIComponent(site)}`);
  const feature = zones.features.find((f) => f.id === key);
  if (!feature) return mapView();
  state.zones.set(key, feature.properties);
  const view = element("div", {}, element("h1", {}, feature.properties.name || zone),
    element("p", {}, "Status now: ", element("span", { "data-status-of": key })));
  $("#view").replaceChildren(view);
  paintZone(key);
  if (!mayOperate()) return;
  // 48 hours hold the last whole night, whenever it is asked (before dawn, the night before).
  const to = Date.now();
  const series = await api(`/api/v1/series?site=${encodeURIComponent(site)}&zone=${encodeURIComponent(zone)}&from=${to - 48 * 3600e3}&to=${to}&step_s=300`);
  view.append(element("h2", {}, "The last two nights (48 hours)"), chart(series.points),
    element("p", { class: "legend" }, element("span", {}, "— average lux"), element("span", {}, "- - required"), element("span", {}, "▮ detections")));
}

function chart(points) {
  const svg = element("svg", { svg: true, class: "chart", viewBox: "0 0 1000 260", preserveAspectRatio: "none" });
  if (points.length === 0) return element("p", {}, "No reports in the last 48 hours.");
  const t0 = points[0].start;
  const t1 = points[points.length - 1].start || t0 + 1;
  const luxTop = Math.max(1, ...points.map((p) => Math.max(p.lux_avg || 0, p.required_avg || 0))) * 1.1;
  const detectionsTop = Math.max(1, ...points.map((p) => p.detections));
  const x = (t) => (((t - t0) / Math.max(t1 - t0, 1)) * 980 + 10).toFixed(1);
  const y = (lux) => (250 - (lux / luxTop) * 240).toFixed(1);
  for (const p of points) {
    const h = (p.detections / detectionsTop) * 60;
    svg.append(element("rect", { svg: true, class: "detections", x: x(p.start), y: (250 - h).toFixed(1), width: 2, height: h.toFixed(1) }));
  }
  const line = (value, cls) => {
    const d = points.filter((p) => value(p) !== null && value(p) !== undefined).map((p) => `${x(p.start)},${y(value(p))}`);
    if (d.length) svg.append(element("polyline", { svg: true, class: cls, points: d.join(" ") }));
  };
  line((p) => p.lux_avg, "lux");
  line((p) => p.required_avg, "required");
  return svg;
}

// Open alerts, newest first, with acknowledge and resolve.
async function alertsView() {
  const alerts = await api("/api/v1/alerts?state=open&limit=5000");
  const rows = alerts.map((a) => {
    const note = element("input", { placeholder: "note", "aria-label": `note for ${a.id}` });
    const act = (verb) => async () => {
      try {
        await api(`/api/v1/alerts/${encodeURIComponent(a.id)}/${verb}`, { method: "POST", body: { note: note.value || verb } });
        alertsView();
      } catch (error) {
        status.textContent = error.message;
      }
    };
    const status = element("span", { class: "error" });
    return element("tr", { "data-alert": a.id, "data-state": a.state, "data-kind": a.kind, "data-zone": a.zone, "data-node": a.node },
      element("td", { class: `severity-${a.severity}` }, a.severity),
      element("td", {}, a.kind.replace(/_/g, " ")),
      element("td", {}, [a.site, a.zone || a.node || a.circuit].filter(Boolean).join(" / ")),
      element("td", {}, a.detail, element("br"), `since ${time(a.since)}`),
      element("td", {}, a.state, a.by ? ` by ${a.by}` : ""),
      element("td", {}, note,
        a.state === "raised" ? element("button", { "data-action": "ack", onclick: act("ack") }, "Acknowledge") : null,
        element("button", { "data-action": "resolve", onclick: act("resolve") }, "Resolve"), status));
  });
  $("#view").replaceChildren(element("h1", {}, "Open alerts"),
    rows.length ? element("table", {}, element("tbody", {}, rows)) : element("p", {}, "Nothing is open."));
}

// Use over the last 28 days: each zone's detections by weekday and local hour.
async function usageView() {
  const sites = await api("/api/v1/sites");
  const to = Date.now();
  const from = to - 28 * 24 * 3600e3;
  const view = element("div", {}, element("h1", {}, "Use over the last 28 days"));
  $("#view").replaceChildren(view);
  for (const site of sites) {
    const usage = await api(`/api/v1/usage?site=${encodeURIComponent(site.id)}&from=${from}&to=${to}`);
    const count = (n) => (n === null ? "few" : String(n));
    view.append(element("h2", {}, site.name),
      element("p", {}, `Hours and weekdays in ${usage.timezone}.`,
        usage.suppressed_below ? ` Each hour's counts below ${usage.suppressed_below} are left out and the rest rounded to a multiple of ${usage.suppressed_below}, up or down at random; "few" is a figure whose hours each had fewer than ${usage.suppressed_below}.` : ""),
      element("table", { "data-usage": site.id },
        element("thead", {}, element("tr", {}, ["Zone", "Detections", "After dark", "Share after dark", "Occupied dark minutes"].map((h) => element("th", {}, h)))),
        element("tbody", {}, usage.zones.map((z) => element("tr", {},
          element("td", {}, z.name || z.zone), element("td", {}, count(z.detections)),
          element("td", {}, count(z.after_dark_detections)),
          element("td", {}, z.after_dark_share === null ? "–" : `${Math.round(z.after_dark_share * 100)} %`),
          element("td", {}, count(z.occupied_dark_minutes)))))));
    for (const z of usage.zones) view.append(element("h3", {}, z.name || z.zone), heatMap(z.heat, count));
    view.append(beforeAfter(site, usage.zones));
  }
}

// Before and after a date (e.g. new lighting) for a zone against control zones, or the
// whole site: matched nights and dark minutes with a 95 % interval, and the naive figures.
function beforeAfter(site, zones) {
  const zone = element("select", { name: "zone", "aria-label": "zone" }, element("option", { value: "" }, "whole site"),
    zones.map((z) => element("option", { value: z.zone }, z.name || z.zone)));
  const date = element("input", { name: "date", type: "date", required: true, "aria-label": "first night after the change" });
  const weeks = element("input", { name: "weeks", type: "number", min: 1, max: 13, value: 4, "aria-label": "weeks each side" });
  const controls = element("span", { class: "controls" });
  const pickControls = () => controls.replaceChildren(...(zone.value ? zones.filter((z) => z.zone !== zone.value).map((z) =>
    element("label", {}, element("input", { type: "checkbox", name: "control", value: z.zone, checked: true }), ` ${z.name || z.zone} `)) : []));
  zone.onchange = pickControls;
  const result = element("div", { "data-change": site.id });
  const compare = async (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ site: site.id, date: date.value, weeks: weeks.value });
    if (zone.value) {
      query.set("zone", zone.value);
      query.set("controls", [...controls.querySelectorAll("input:checked")].map((c) => c.value).join(","));
    }
    try {
      result.replaceChildren(changeTable(await api(`/api/v1/usage/change?${query}`)));
    } catch (error) {
      result.replaceChildren(element("p", { class: "error" }, error.message));
    }
  };
  return element("section", {}, element("h3", {}, "Before and after a date"),
    element("form", { onsubmit: compare }, zone, " first night after the change ", date, " weeks each side ", weeks,
      element("button", {}, "Compare"), element("div", {}, controls)), result);
}

function changeTable(change) {
  const percent = (v) => (v === null ? "–" : `${v > 0 ? "+" : ""}${Math.round(v * 100)} %`);
  const minutes = (v) => (v === null ? "–" : `${v > 0 ? "+" : ""}${v.toFixed(1)}`);
  const figure = (v) => (v === null ? "–" : String(Math.round(v * 10) / 10));
  const rows = [["After-dark detections", change.after_dark_detections, percent], ["Occupied dark minutes per night", change.occupied_dark_minutes, minutes]]
    .flatMap(([name, methods, show]) => [["matched", methods.matched], ["naive", methods.naive]].map(([method, c]) =>
      element("tr", { "data-figure": name, "data-method": method }, element("td", {}, name), element("td", {}, method),
        [element("td", {}, figure(c.before)), element("td", {}, figure(c.after)), element("td", {}, show(c.change)),
          element("td", {}, c.low === null ? "–" : `${show(c.low)} to ${show(c.high)}`)])));
  return element("div", {},
    element("p", {}, `${change.pairs.length} pairs of nights (same weekday, ${change.weeks} weeks apart), compared over the minutes dark in both`,
      change.controls.length ? `, against ${change.controls.join(", ")}.` : ", without control zones.",
      ` Intervals: ${Math.round(change.confidence * 100)} %.`),
    element("table", {}, element("thead", {}, element("tr", {}, ["Figure", "Method", "Before", "After", "Change", "Interval"].map((h) => element("th", {}, h)))),
      element("tbody", {}, rows)));
}

function heatMap(heat, count) {
  const top = Math.max(1, ...heat.flat().filter((n) => n !== null));
  const days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
  const hours = [...Array(24).keys()];
  return element("table", { class: "heat" },
    element("thead", {}, element("tr", {}, element("th", {}), hours.map((h) => element("th", {}, String(h))))),
    element("tbody", {}, heat.map((row, day) => element("tr", {}, element("th", {}, days[day]),
      row.map((n) => element("td", { class: n === null ? "heat-suppressed" : `heat-${Math.ceil((n / top) * 5)}`, title: count(n) }, n === null ? "·" : ""))))));
}

// Lamp control: each zone's lighting (edit, reset to the site file, hold for an event)
// and the latest changes with what each node answered.
async function controlView() {
  const sites = await api("/api/v1/sites");
  const view = element("div", {}, element("h1", {}, "Lamp control"));
  for (const site of sites) {
    const path = `/api/v1/control/${enc(site.id)}`;
    const [control, audit] = await Promise.all([api(path), api(`${path}/audit?limit=20`)]);
    view.append(element("h2", {}, site.name),
      element("table", { "data-control": site.id },
        element("thead", {}, element("tr", {}, ["Zone", "In force", "Night's lighting", ""].map((h) => element("th", {}, h)))),
        element("tbody", {}, control.zones.map((z) => zoneControl(site.id, z, control.nodes.filter((n) => n.zone === z.zone))))),
      element("h3", {}, "Latest changes"), auditTable(audit));
  }
  $("#view").replaceChildren(view);
}

function zoneControl(site, zone, nodes) {
  const steps = element("div", { class: "steps" });
  const addStep = (step = { at: "23:00", level: 50 }) => steps.append(element("span", { class: "step" },
    element("input", { name: "at", value: step.at, size: 6, "aria-label": "from (sunset or HH:MM)" }),
    element("input", { name: "level", type: "number", min: 0, max: 100, value: step.level, "aria-label": "level %" }),
    element("input", { name: "class", value: step.class || "", size: 3, placeholder: "class", "aria-label": "class" }),
    element("button", { type: "button", title: "remove", onclick: (e) => e.target.parentElement.remove() }, "×")));
  zone.lighting.profile.forEach((step) => addStep(step));
  const boost = zone.lighting.motion_boost;
  const boostLevel = element("input", { name: "boost-level", type: "number", min: 0, max: 100, value: boost?.level ?? "", "aria-label": "boost level %" });
  const boostHold = element("input", { name: "boost-hold", type: "number", min: 0, value: boost?.hold_s ?? "", "aria-label": "boost hold s" });
  const holdLevel = element("input", { name: "hold-level", type: "number", min: 0, max: 100, value: 100, "aria-label": "override level %" });
  const holdHours = element("input", { name: "hold-hours", type: "number", min: 1, max: 168, value: 4, "aria-label": "override hours" });
  const message = element("p", { class: "message", role: "status" });
  const lighting = () => ({
    profile: [...steps.querySelectorAll(".step")].map((span) => {
      const value = (name) => span.querySelector(`[name=${name}]`).value.trim();
      if (value("level") === "") throw new Error("every step needs a level, 0 to 100");
      const step = { at: value("at"), level: Number(value("level")) };
      if (value("class")) step.class = value("class");
      return step;
    }),
    motion_boost: boostAsked(),
  });
  const boostAsked = () => {
    if (boostLevel.value === "" && boostHold.value === "") return null;
    if (boostLevel.value === "" || boostHold.value === "") throw new Error("a motion boost needs a level and a hold time");
    return { level: Number(boostLevel.value), hold_s: Number(boostHold.value) };
  };
  const path = `/api/v1/control/${enc(site)}`;
  const act = (run) => async () => {
    try {
      const answer = await run();
      await controlView();
      const row = document.querySelector(`table[data-control="${site}"] tr[data-zone="${zone.zone}"] .message`);
      row.textContent = [`Sent to ${answer.nodes.length} nodes.`, ...answer.warnings.map((w) => `Warning: ${w}`)].join(" ");
      row.classList.toggle("warning", answer.warnings.length > 0);
    } catch (error) {
      message.textContent = error.message;
      message.className = "message error";
    }
  };
  const zonePath = `${path}/zones/${enc(zone.zone)}`;
  const running = nodes.filter((n) => n.applied && n.source !== "node").length;
  const own = nodes.filter((n) => n.source === "node").length;
  return element("tr", { "data-zone": zone.zone, "data-source": zone.source },
    element("td", {}, zone.zone, element("br"), zone.class),
    element("td", {}, zone.source === "zone" ? `set by ${zone.set_by}, ${time(zone.set_at)}` : "site file",
      element("br"), `${running} of ${nodes.length - own} nodes run it`, own ? `; ${own} with their own` : ""),
    element("td", {}, steps, element("button", { type: "button", onclick: () => addStep() }, "+ step"),
      element("div", {}, "motion boost ", boostLevel, " % for ", boostHold, " s"), message),
    element("td", {},
      element("button", { "data-action": "save", onclick: act(() => api(`${zonePath}/lighting`, { method: "PUT", body: lighting() })) }, "Save"),
      zone.source === "zone" ? element("button", { "data-action": "reset", onclick: act(() => api(`${zonePath}/lighting`, { method: "DELETE" })) }, "Reset to site file") : null,
      element("div", { class: "hold" }, "hold at ", holdLevel, " % for ", holdHours, " h ",
        element("button", { "data-action": "override", onclick: act(() => api(`${zonePath}/override`, { method: "POST", body: { level: Number(holdLevel.value), until: Math.round(Date.now() + Number(holdHours.value) * 3600e3) } })) }, "Hold"))));
}

function auditTable(entries) {
  if (!entries.length) return element("p", {}, "No changes yet.");
  const results = (nodes) => Object.entries(nodes.reduce((counts, n) => ({ ...counts, [n.result]: (counts[n.result] || 0) + 1 }), {}))
    .map(([result, count]) => `${count} ${result}`).join(", ") || "–";
  return element("table", { class: "audit" }, element("tbody", {}, entries.map((e) => element("tr", { "data-entry": e.id },
    element("td", {}, time(e.at)), element("td", {}, e.by), element("td", {}, e.action.replace(/_/g, " ")),
    element("td", {}, `${e.target_kind} ${e.target}`), element("td", {}, results(e.nodes))))));
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  const response = await fetch("/api/v1/login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("#token").value.trim() }),
  });
  if (!response.ok) {
    $("#login-error").textContent = (await response.json()).message;
    return;
  }
  $("#token").value = "";
  start();
});
$("#logout").addEventListener("click", async () => {
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
  // A fresh page: nothing of the last person's view stays in memory.
  location.hash = "";
  location.reload();
});
window.addEventListener("hashchange", () => me && route());
start().then(() => { if (!me) showLogin(); });
