// Schedules: each with its cron expression, next and last tick, paused or active, where it comes
// from and a link to the jobs it made; Pause, Resume and Delete on each, and a form to make one
// (neither for a read token).
//
// The list is read again after each action, and (at most once a second) when the stream tells of
// a new job: a tick's job is when a schedule's last and next tick move. Rows are updated in place,
// never rebuilt, so a button stays the same element while a per-second schedule ticks under it.

import { ApiError, api } from "../api.js";
import { dotted, fill, h, loading, throttle, when } from "../dom.js";
import { LiveStream } from "../stream.js";

const DECLARED = "declared by @task(cron=...) in the code: remove it there";
const DONE = { pause: "paused", resume: "resumed", delete: "deleted" };
const COLUMNS = ["id", "task", "cron", "next tick", "last tick", "state", "source", "jobs", ""];

const schedulePath = (id) => `/schedules/${encodeURIComponent(id)}`;

export function schedulesPage(root, tasks, { readOnly = false } = {}) {
  const rows = new Map(); // schedule id → {tr, cells, toggle, remove, schedule}
  const columns = readOnly ? COLUMNS.slice(0, -1) : COLUMNS; // the last one holds the buttons
  const tbody = h("tbody", {});
  const status = loading(); // until the first read is in
  const empty = h("p", { class: "empty", hidden: true }, "No schedules yet.");
  const outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" });
  const table = h(
    "div",
    { class: "table-wrap", hidden: true }, // shown with its first row
    h("table", { class: "schedules cards" }, h("thead", {}, h("tr", {}, columns.map((t) => h("th", { scope: "col" }, t)))), tbody),
  );
  const form = readOnly
    ? null
    : scheduleForm(tasks, (made) => {
        say(`Schedule ${made.id} created.`, "ok");
        refresh();
      });
  fill(
    root,
    h("h1", {}, "Schedules"),
    outcome,
    table,
    status,
    empty,
    form && h("section", { "aria-labelledby": "new-schedule-h" }, h("h2", { id: "new-schedule-h" }, "New schedule"), form),
  );

  function say(text, tone) {
    outcome.textContent = text;
    outcome.className = `outcome ${tone}`;
  }

  function row(schedule) {
    const declared = schedule.source === "task";
    const entry = { schedule };
    entry.cells = {
      next: h("td", { "data-label": "next" }),
      last: h("td", { "data-label": "last" }),
      state: h("td", {}),
    };
    entry.toggle = h("button", { type: "button", class: "secondary", onclick: () => act(entry, entry.schedule.paused ? "resume" : "pause") });
    entry.remove = h(
      "button",
      { type: "button", class: "danger", disabled: declared, title: declared ? DECLARED : "its jobs stay", onclick: () => act(entry, "delete") },
      "Delete",
    );
    // data-label names a cell where a narrow screen shows the row as a card, without headers
    entry.tr = h(
      "tr",
      { "data-schedule-id": schedule.id },
      h("td", { class: "lead" }, h("code", {}, dotted(schedule.id))),
      h("td", { class: "task" }, dotted(schedule.task)),
      h("td", { "data-label": "cron" }, h("code", { class: "nowrap" }, schedule.cron), " ", h("span", { class: "zone", title: "the time zone it is read in" }, schedule.timezone)),
      entry.cells.next,
      entry.cells.last,
      entry.cells.state,
      h("td", { "data-label": "from", title: declared ? DECLARED : "made with POST /schedules" }, schedule.source),
      h("td", { class: "nowrap" }, h("a", { class: "schedule-jobs", href: `#/jobs?schedule=${encodeURIComponent(schedule.id)}` }, "its jobs")),
      readOnly ? null : h("td", { class: "wide" }, h("div", { class: "row-actions" }, entry.toggle, entry.remove)),
    );
    show(entry, schedule, null);
    return entry;
  }

  /** The cells that change: only where they did, so that a time's hover text stays put. */
  function show(entry, schedule, before) {
    entry.schedule = schedule;
    if (!before || before.next_run_at !== schedule.next_run_at || before.paused !== schedule.paused) {
      fill(entry.cells.next, when(schedule.next_run_at) || (schedule.paused ? "none while paused" : "none"));
    }
    if (!before || before.last_run_at !== schedule.last_run_at) fill(entry.cells.last, when(schedule.last_run_at) || "never");
    if (!before || before.paused !== schedule.paused) {
      const state = schedule.paused ? "paused" : "active";
      fill(entry.cells.state, h("span", { class: `badge schedule-${state}`, "data-state": state }, state));
      entry.toggle.textContent = schedule.paused ? "Resume" : "Pause";
    }
  }

  function render(schedules) {
    const listed = new Set(schedules.map((s) => s.id));
    for (const [id, entry] of rows) {
      if (!listed.has(id)) {
        entry.tr.remove();
        rows.delete(id);
      }
    }
    schedules.forEach((schedule, i) => {
      let entry = rows.get(schedule.id);
      if (entry && entry.schedule.created_at !== schedule.created_at) {
        entry.tr.remove(); // made anew under the same id (a declaration that changed)
        entry = null;
      }
      if (entry) show(entry, schedule, entry.schedule);
      else rows.set(schedule.id, (entry = row(schedule)));
      // moved only when out of place: a button under the pointer keeps its click
      if (tbody.children[i] !== entry.tr) tbody.insertBefore(entry.tr, tbody.children[i] || null);
    });
    status.remove();
    table.hidden = !rows.size;
    empty.hidden = rows.size > 0;
  }

  let reads = 0; // which read is the newest: an older one that answers late is dropped
  async function refresh() {
    const mine = ++reads;
    try {
      const { schedules } = await api("/schedules");
      if (mine === reads) render(schedules);
    } catch (error) {
      if (mine === reads) status.textContent = `Could not load the schedules: ${error.message}`;
    }
  }

  async function act(entry, action) {
    const { id } = entry.schedule;
    entry.toggle.disabled = entry.remove.disabled = true;
    try {
      if (action === "delete") await api(schedulePath(id), { method: "DELETE" });
      else await api(`${schedulePath(id)}/${action}`, { method: "POST" });
      say(`Schedule ${id} ${DONE[action]}.`, "ok");
    } catch (error) {
      say(`Could not ${action} schedule ${id}: ${error.message}`, "bad");
    } finally {
      entry.toggle.disabled = false;
      entry.remove.disabled = entry.schedule.source === "task";
    }
    await refresh();
  }

  const refreshSoon = throttle(refresh, 1000);
  const stream = new LiveStream("/events", (kind, data) => {
    if (kind === "state" && data.from === null) refreshSoon(); // a new job: a tick, maybe
  });
  refresh();

  return () => {
    refreshSoon.cancel();
    stream.close();
  };
}

// -- the form ---------------------------------------------------------------------------------

/** A labelled input with its hint and the place for its error. */
function field(id, label, input, hint) {
  input.id = id;
  input.setAttribute("aria-describedby", `${id}-error ${id}-hint`);
  const error = h("small", { id: `${id}-error`, class: "field-error", "aria-live": "polite" });
  const row = h("div", { class: "field" }, h("label", { for: id }, label), input, h("small", { id: `${id}-hint`, class: "hint" }, hint), error);
  return { row, input, error };
}

/** The task's parameters as a hint: what its arguments are. */
function paramsHint(task) {
  if (!task || !task.params.length) return "this task takes no arguments";
  return `${task.name}(${task.params.map((p) => (p.required ? p.name : `${p.name}=…`)).join(", ")})`;
}

/** A JSON field's value (undefined when empty); throws a message for the field. */
function jsonValue(input, shape) {
  const text = input.value.trim();
  if (!text) return undefined;
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error("not valid JSON (text goes in double quotes)");
  }
  const isArray = Array.isArray(value);
  if (shape === "array" && !isArray) throw new Error("expected a JSON array, e.g. [1, \"a\"]");
  if (shape === "object" && (isArray || typeof value !== "object" || value === null)) throw new Error('expected a JSON object, e.g. {"name": 1}');
  return value;
}

function scheduleForm(tasks, onCreated) {
  if (!tasks.length) return h("p", { class: "empty" }, "The service has no tasks to schedule.");
  const taskSelect = h("select", { name: "task", required: true }, tasks.map((t) => h("option", { value: t.name }, t.name)));
  const fields = {
    task: field("schedule-task", "Task", taskSelect, paramsHint(tasks[0])),
    cron: field("schedule-cron", "Cron", h("input", { name: "cron", required: true, autocomplete: "off", spellcheck: "false", placeholder: "*/5 * * * *" }),
      "minute hour day month weekday; 6 fields with seconds first; or @hourly, @daily…"),
    args: field("schedule-args", "Arguments", h("textarea", { name: "args", rows: 2, spellcheck: "false", placeholder: "[]" }), "positional, as a JSON array"),
    kwargs: field("schedule-kwargs", "Keyword arguments", h("textarea", { name: "kwargs", rows: 2, spellcheck: "false", placeholder: "{}" }), "as a JSON object"),
    id: field("schedule-id", "Id", h("input", { name: "id", autocomplete: "off", spellcheck: "false", placeholder: "made up if empty" }), "letters, digits, '.', '_', '-'"),
  };
  const formError = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit" }, "Create schedule");
  const form = h(
    "form",
    { class: "submit schedule-form", novalidate: true, onsubmit: (e) => (e.preventDefault(), send()) },
    Object.values(fields).map((f) => f.row),
    formError,
    submit,
  );
  taskSelect.addEventListener("change", () => {
    fields.task.row.querySelector(".hint").textContent = paramsHint(tasks.find((t) => t.name === taskSelect.value));
  });

  function clearErrors() {
    formError.textContent = "";
    for (const f of Object.values(fields)) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
  }

  /** Put each message next to its field (the first one gets the focus); the rest above the button. */
  function showErrors(problems, fallback) {
    const shown = [];
    for (const [name, message] of problems) {
      const f = fields[name];
      if (!f) continue;
      f.error.textContent = f.error.textContent ? `${f.error.textContent}; ${message}` : message;
      f.input.setAttribute("aria-invalid", "true");
      shown.push(f);
    }
    if (shown.length) shown[0].input.focus();
    else formError.textContent = fallback;
  }

  /** [field, message] pairs of what the API refused. */
  function refusals(error, body) {
    const problems = error.body.fields || [];
    if (error.body.error === "invalid_arguments") {
      // by parameter: beside the keyword arguments if it was given that way, else the positional;
      // a call that binds to no signature at all ("too many positional arguments") names none
      const beside = (name) => (body.kwargs && name in body.kwargs ? "kwargs" : "args");
      if (!problems.length) return [[body.kwargs && !body.args ? "kwargs" : "args", error.message]];
      return problems.map(({ field: name, message }) => [beside(name), `${name}: ${message}`]);
    }
    if (error.body.error === "unknown_task") return [["task", error.message]];
    if (error.status === 409) return [["id", error.message]];
    return problems.map(({ field: name, message }) => [String(name).split(".")[0], message]);
  }

  async function send() {
    clearErrors();
    const body = { task: taskSelect.value, cron: fields.cron.input.value.trim() };
    const problems = [];
    for (const [name, shape] of [["args", "array"], ["kwargs", "object"]]) {
      try {
        const value = jsonValue(fields[name].input, shape);
        if (value !== undefined) body[name] = value;
      } catch (error) {
        problems.push([name, error.message]);
      }
    }
    const id = fields.id.input.value.trim();
    if (id) body.id = id;
    if (problems.length) return showErrors(problems, "");
    submit.disabled = true;
    try {
      const made = await api("/schedules", { method: "POST", body });
      for (const name of ["cron", "args", "kwargs", "id"]) fields[name].input.value = "";
      onCreated(made);
    } catch (error) {
      if (error instanceof ApiError) showErrors(refusals(error, body), error.message);
      else formError.textContent = String(error);
    } finally {
      submit.disabled = false;
    }
  }

  return form;
}
