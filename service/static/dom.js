// Building the page. Every value a user typed or a task returned goes in as a text node or an
// attribute value, never as markup: there is no innerHTML anywhere in the dashboard.

/**
 * An element: h("a", {href: "#/", class: "x", onclick: f}, "text", child, [more]).
 * Strings and numbers become text nodes; null, undefined and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside ``el`` with ``children``. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// -- formatting ----------------------------------------------------------------------------------

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n) => String(n).padStart(2, "0");

/**
 * "14:03:07" today, "3 Dec 14:03" another day this year, "3 Dec 2025 14:03" before that: jobs
 * are kept for days, and a bare clock would not say which. In the browser's time zone.
 */
export function clockText(at, now = new Date()) {
  const clock = `${pad(at.getHours())}:${pad(at.getMinutes())}`;
  if (at.toDateString() === now.toDateString()) return `${clock}:${pad(at.getSeconds())}`;
  const day = `${at.getDate()} ${MONTHS[at.getMonth()]}`;
  return at.getFullYear() === now.getFullYear() ? `${day} ${clock}` : `${day} ${at.getFullYear()} ${clock}`;
}

/** "just now", "40 s ago", "5 min ago", "in 2 h", "3 days ago": whole units, rounded down. */
export function relative(at, now = new Date()) {
  const seconds = (at - now) / 1000;
  const size = Math.abs(seconds);
  if (size < 5) return "just now";
  let amount;
  if (size < 60) amount = `${Math.floor(size)} s`;
  else if (size < 3600) amount = `${Math.floor(size / 60)} min`;
  else if (size < 86400) amount = `${Math.floor(size / 3600)} h`;
  else amount = Math.floor(size / 86400) === 1 ? "1 day" : `${Math.floor(size / 86400)} days`;
  return seconds < 0 ? `${amount} ago` : `in ${amount}`;
}

/** The hover text of a time: how long ago it was, and the whole date to the second. */
export function timeTitle(at) {
  const date = `${at.getDate()} ${MONTHS[at.getMonth()]} ${at.getFullYear()}`;
  return `${relative(at)} · ${date} ${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
}

/** A <time> for an ISO timestamp of the API, shown as clockText, relative on hover; or null. */
export function when(iso) {
  if (!iso) return null;
  const at = new Date(iso);
  const el = h("time", { datetime: iso, title: timeTitle(at) }, clockText(at));
  el.addEventListener("mouseenter", () => (el.title = timeTitle(at))); // "ago" as of the hover
  return el;
}

/** "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

export function between(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso) : new Date();
  return (end - new Date(startIso)) / 1000;
}

/** JSON on one line, cut to ``max`` characters: for table cells. */
export function brief(value, max = 80) {
  const text = JSON.stringify(value);
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** A state badge: the colour comes from the CSS class of the state. */
export function badge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state);
}

/**
 * A job's progress as it reported it: a bar (a real <progress>, so it is announced) with its
 * text beside it; without a total, a bar that moves and the count done. Null for a job that never
 * reported any: a bar then would claim a share nobody knows.
 */
export function progressBar(progress) {
  if (progress === null || progress === undefined) return null;
  const bar = h("progress", { max: 1, "aria-label": "progress" });
  let label = String(progress.done);
  if (progress.total) {
    const ratio = Math.max(0, Math.min(1, progress.done / progress.total));
    bar.value = ratio;
    label = `${Math.round(ratio * 100)}%`;
  }
  const text = [label, progress.message].filter(Boolean).join(" · ");
  return h("span", { class: "progress" }, bar, h("span", { class: "progress-text" }, text));
}

/** A dotted name ("tests.sample_tasks.report") that a narrow column wraps after a dot. */
export function dotted(name) {
  return name.split(/(?<=\.)/).flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
}

/** What a view shows while its first data is on the way (rather than an empty table). */
export function loading() {
  return h("p", { class: "muted loading", role: "status" }, "Loading…");
}

export const STATES = ["waiting", "scheduled", "queued", "running", "succeeded", "failed", "canceled"];
export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

/**
 * Run ``fn`` soon after a call, then at most once per ``ms`` however many calls come: a steady
 * stream of calls still gets one run per interval (a debounce would wait for the stream to end).
 */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  let pending = false;
  const run = () => {
    timer = null;
    pending = false;
    last = Date.now();
    fn();
  };
  const call = () => {
    if (pending) return;
    pending = true;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  call.cancel = () => clearTimeout(timer);
  return call;
}
