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

/** "14:03:07" for today, else "2026-11-20 14:03:07", in the browser's time zone. */
export function time(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const clock = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  const today = new Date();
  if (at.toDateString() === today.toDateString()) return clock;
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${clock}`;
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

/** A progress bar (a real <progress>, so it is announced) with its text beside it. */
export function progressBar(progress, state) {
  const wrap = h("span", { class: "progress" });
  updateProgress(wrap, progress, state);
  return wrap;
}

export function updateProgress(wrap, progress, state) {
  const bar = h("progress", { max: 1, "aria-label": "progress" });
  let label = "";
  if (progress && progress.total) {
    const ratio = Math.max(0, Math.min(1, progress.done / progress.total));
    bar.value = ratio;
    label = `${Math.round(ratio * 100)}%`;
  } else if (progress) {
    label = String(progress.done);
  } else if (state === "succeeded") {
    bar.value = 1;
  } else {
    bar.value = 0;
  }
  if (state === "running" && !progress) bar.removeAttribute("value"); // indeterminate
  const message = progress && progress.message ? progress.message : "";
  fill(wrap, bar, h("span", { class: "progress-text" }, [label, message].filter(Boolean).join(" · ")));
}

export const STATES = ["scheduled", "queued", "running", "succeeded", "failed", "canceled"];
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
