// The xcombus XCom browser: DAGs -> runs -> task instances -> XComs -> one XCom's history.
// Vanilla JS, no build step. Every piece of data is put in the page with textContent or
// setAttribute, never as HTML. The API token (if the server wants one) is kept in
// sessionStorage and sent as "Authorization: Bearer <token>".
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "xcombus.apiToken";
const $ = (id) => document.getElementById(id);

// -- small helpers -------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const enc = encodeURIComponent;
const hashOf = (...parts) => "#/" + parts.map(enc).join("/");

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace("Z", " UTC") : "";
}

function compact(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 160 ? text.slice(0, 157) + "…" : text;
}

const time = (iso) => ({ text: when(iso), cls: "time" });

function tiLabel(task, mapIndex) {
  return Number(mapIndex) === -1 ? task : `${task}[${mapIndex}]`;
}

// -- the API -------------------------------------------------------------------------------
class ApiError extends Error {}

async function api(path, params) {
  const url = new URL(API + path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) url.searchParams.set(name, value);
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch(url, { headers });
  } catch (err) {
    throw new ApiError(`cannot reach the server: ${err.message}`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const title = (body && body.title) || response.statusText;
    const detail = (body && body.detail) || "";
    if (response.status === 401) $("token-input").focus();
    throw new ApiError(`${response.status} ${title}${detail ? ": " + detail : ""}`);
  }
  return body;
}

const tiPath = (dag, run, task) =>
  `/dags/${enc(dag)}/dagRuns/${enc(run)}/taskInstances/${enc(task)}/xcomEntries`;

// -- rendering -----------------------------------------------------------------------------
function setStatus(text) {
  $("status").textContent = text;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function crumbs(items) {
  const nav = $("breadcrumbs");
  nav.replaceChildren();
  items.forEach(([label, href], i) => {
    if (i > 0) nav.append(el("span", { class: "sep" }, "›"));
    nav.append(href ? el("a", { href, "data-testid": "crumb" }, label) : el("span", { "data-testid": "crumb" }, label));
  });
}

// rows: [{cells: [text | Node], attrs: {...}, onClick}], cells with {text, cls, title, testid}
// for a class, a tooltip and a data-testid.
function table(columns, rows) {
  $("listing-head").replaceChildren(el("tr", {}, ...columns.map((c) => el("th", {}, c))));
  const body = $("listing-body");
  body.replaceChildren();
  for (const row of rows) {
    const tr = el("tr", row.attrs);
    for (const cell of row.cells) {
      if (cell instanceof Node) tr.append(el("td", {}, cell));
      else if (cell && typeof cell === "object") {
        tr.append(el("td", { class: cell.cls, title: cell.title, "data-testid": cell.testid }, cell.text));
      }
      else tr.append(el("td", {}, cell ?? ""));
    }
    if (row.onClick) tr.addEventListener("click", (event) => {
      if (event.target.closest("a")) return; // a link in the row does its own thing
      row.onClick(tr);
    });
    body.append(tr);
  }
  $("listing").hidden = false;
}

function linkRow(href, cells, attrs) {
  return { cells, attrs, onClick: () => { window.location.hash = href; } };
}

function begin(title, trail) {
  $("view-title").textContent = title;
  crumbs(trail);
  showError("");
  setStatus("Loading…");
  $("detail").hidden = true;
  $("legend").hidden = true;
  $("listing-head").replaceChildren();
  $("listing-body").replaceChildren();
}

function counted(n, total, noun) {
  const shown = n === total ? `${n}` : `${n} of ${total}`;
  setStatus(n ? `${shown} ${noun}${total === 1 ? "" : "s"}` : `No ${noun}s here yet.`);
}

// -- the views -----------------------------------------------------------------------------
async function showDags() {
  begin("DAGs", [["DAGs"]]);
  const data = await api("/dags");
  table(["DAG", "runs", "XComs"], data.dags.map((d) => linkRow(hashOf("dags", d.dag_id), [
    el("a", { href: hashOf("dags", d.dag_id) }, d.dag_id), d.runs, d.xcoms,
  ], { "data-testid": "dag-row", "data-dag-id": d.dag_id })));
  counted(data.dags.length, data.total_entries, "DAG");
}

async function showRuns(dag) {
  begin(`Runs of ${dag}`, [["DAGs", "#/"], [dag]]);
  const data = await api(`/dags/${enc(dag)}/dagRuns`);
  table(["run", "logical date", "XComs", "last push"], data.dag_runs.map((r) => {
    const href = hashOf("dags", dag, "runs", r.dag_run_id);
    return linkRow(href, [el("a", { href }, r.dag_run_id), time(r.logical_date), r.xcoms, time(r.last_push)],
      { "data-testid": "run-row", "data-run-id": r.dag_run_id });
  }));
  counted(data.dag_runs.length, data.total_entries, "run");
}

async function showTaskInstances(dag, run) {
  begin(`Task instances of ${dag} / ${run}`, [["DAGs", "#/"], [dag, hashOf("dags", dag)], [run]]);
  const data = await api(`/dags/${enc(dag)}/dagRuns/${enc(run)}/taskInstances`);
  table(["task", "map index", "XComs", "last push"], data.task_instances.map((t) => {
    const href = hashOf("dags", dag, "runs", run, "tasks", t.task_id, String(t.map_index));
    return linkRow(href, [el("a", { href }, t.task_id), t.map_index, t.xcoms, time(t.last_push)],
      { "data-testid": "ti-row", "data-task-id": t.task_id, "data-map-index": t.map_index });
  }));
  counted(data.task_instances.length, data.total_entries, "task instance");
}

async function showFullValue(dag, run, task, mapIndex, key, row) {
  for (const r of document.querySelectorAll("#listing-body tr.selected")) r.classList.remove("selected");
  row.classList.add("selected");
  $("detail").hidden = false;
  $("detail-title").textContent = `${key} — full value`;
  $("full-value").textContent = "Loading…";
  $("history-link").setAttribute("href", hashOf("dags", dag, "runs", run, "tasks", task, mapIndex, "xcoms", key));
  try {
    const entry = await api(`${tiPath(dag, run, task)}/${enc(key)}`,
      { map_index: mapIndex, deserialize: "true", stringify: "false" });
    $("full-value").textContent = JSON.stringify(entry.value, null, 2);
  } catch (err) {
    $("full-value").textContent = "";
    showError(err.message);
  }
}

async function showXComs(dag, run, task, mapIndex) {
  const label = tiLabel(task, mapIndex);
  begin(`XComs of ${label}`, [["DAGs", "#/"], [dag, hashOf("dags", dag)], [run, hashOf("dags", dag, "runs", run)], [label]]);
  const data = await api(tiPath(dag, run, task), { map_index: mapIndex, limit: 1000 });
  table(["key", "value (light)", "pushed", "logical date", ""], data.xcom_entries.map((x) => {
    const history = hashOf("dags", dag, "runs", run, "tasks", task, mapIndex, "xcoms", x.key);
    return {
      cells: [
        { text: x.key, cls: "mono" },
        { text: compact(x.value), cls: "value", title: "click for the full value" },
        time(x.timestamp), time(x.logical_date),
        el("a", { href: history, "data-testid": "xcom-history" }, "history"),
      ],
      attrs: { "data-testid": "xcom-row", "data-key": x.key },
      onClick: (tr) => showFullValue(dag, run, task, mapIndex, x.key, tr),
    };
  }));
  counted(data.xcom_entries.length, data.total_entries, "XCom");
}

// What each kind of history row means, for the badge's tooltip and the legend.
const KIND_HELP = {
  push: "a value a task pushed",
  clear: "a new try cleared every XCom of the task instance",
  override: "a manual change, with who made it and why",
  fenced: "an event of an older try than the task instance's current one: kept on the topic, never applied",
};

function historyEvent(e) {
  const badge = el("span", { class: `kind ${e.kind}`, title: KIND_HELP[e.kind], "data-testid": "history-kind" }, e.kind);
  const detail = e.kind === "fenced" ? `${e.operation} · never applied`
    : e.kind === "override" ? e.operation : "";
  return detail ? el("span", { class: "event" }, badge, " ", el("span", { class: "operation" }, detail)) : badge;
}

function historyValue(e) {
  if (e.operation === "clear") {
    return e.kind === "fenced" ? "(nothing cleared)" : "(all its XComs cleared)";
  }
  if (e.operation === "delete") return "(deleted)";
  return compact(e.value);
}

async function showHistory(dag, run, task, mapIndex, key) {
  const label = tiLabel(task, mapIndex);
  const tiHref = hashOf("dags", dag, "runs", run, "tasks", task, mapIndex);
  begin(`History of ${key}`, [["DAGs", "#/"], [dag, hashOf("dags", dag)], [run, hashOf("dags", dag, "runs", run)],
    [label, tiHref], [key]]);
  setStatus("Reading the topic…");
  const data = await api(`${tiPath(dag, run, task)}/${enc(key)}/history`, { map_index: mapIndex });
  table(["position", "event", "try", "time", "by", "reason", "replaced", "value"], data.events.map((e) => ({
    cells: [
      { text: `${e.partition}:${e.offset}`, cls: "mono" },
      historyEvent(e),
      e.try_number ?? "",
      time(e.timestamp),
      e.actor
        ? { text: e.actor, cls: "actor", testid: "history-actor", title: "who made this override" }
        : { text: e.producer ?? "", cls: "mono muted", title: "the producer that wrote it" },
      { text: e.reason ?? "", cls: "reason", testid: "history-reason" },
      e.replaces
        ? { text: `${e.replaces.partition}:${e.replaces.offset}`, cls: "mono", testid: "history-replaces",
            title: "the position of the version this override replaced" }
        : "",
      { text: historyValue(e), cls: "value" },
    ],
    attrs: {
      "data-testid": "history-row", "data-kind": e.kind, "data-operation": e.operation,
      "data-try": e.try_number, class: e.kind === "fenced" ? "fenced" : undefined,
    },
  })));
  const count = (kind) => data.events.filter((e) => e.kind === kind).length;
  const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;
  const [pushes, clears, overrides, fenced] = ["push", "clear", "override", "fenced"].map(count);
  const parts = [plural(pushes + overrides, "version") + (overrides ? ` (${plural(overrides, "override")})` : ""),
    plural(clears, "clear")];
  if (fenced) parts.push(`${fenced} fenced (never applied)`);
  setStatus(`${parts.join(", ")}, in log order`);
  const legend = $("legend");
  legend.replaceChildren(...Object.entries(KIND_HELP).flatMap(([kind, help]) =>
    [el("span", { class: `kind ${kind}` }, kind), ` ${help}. `]));
  legend.hidden = false;
}

// -- routing -------------------------------------------------------------------------------
async function route() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [d, dag, r, run, t, task, mapIndex, x, key] = parts;
  try {
    if (d !== "dags" || !dag) await showDags();
    else if (r !== "runs" || !run) await showRuns(dag);
    else if (t !== "tasks" || !task) await showTaskInstances(dag, run);
    else if (x !== "xcoms" || !key) await showXComs(dag, run, task, mapIndex ?? "-1");
    else await showHistory(dag, run, task, mapIndex, key);
  } catch (err) {
    setStatus("");
    showError(err instanceof ApiError ? err.message : `unexpected error: ${err}`);
  }
}

function init() {
  const input = $("token-input");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", init);
