// Submit a job: a form made from GET /tasks, one field per parameter, defaults filled in.
// What the API refuses comes back per field ({fields: [{field, message}]}) and shows beside it.

import { ApiError, api } from "../api.js";
import { fill, h } from "../dom.js";

const OPTIONS = [
  // [name, label, input attributes, what it means]
  ["queue", "Queue", { type: "text", autocomplete: "off" }, "the queue whose concurrency limit applies"],
  ["priority", "Priority", { type: "number", step: 1 }, "higher runs first"],
  ["delay_s", "Delay (s)", { type: "number", step: "any", min: 0 }, "run no sooner than this"],
  ["timeout_s", "Timeout (s)", { type: "number", step: "any", min: 0 }, "kill the job after this long"],
  ["max_retries", "Retries", { type: "number", step: 1, min: 0 }, "failures to retry"],
  ["key", "Unique key", { type: "text", autocomplete: "off" }, "at most one unfinished job per key"],
  ["rate_limit", "Rate limit", { type: "text", autocomplete: "off", placeholder: "100/m" }, "this task's jobs start at most this often"],
];
const NUMERIC_OPTIONS = new Set(["priority", "delay_s", "timeout_s", "max_retries"]);

/** What kind of input a parameter's annotation asks for, and whether it may be left empty. */
function inputKind(param) {
  let type = (param.type || "").replace(/\s/g, "");
  let nullable = false;
  const optional = /^Optional\[(.*)\]$/.exec(type);
  if (optional) [type, nullable] = [optional[1], true];
  if (/(^|\|)None($|\|)/.test(type)) {
    type = type.split("|").filter((t) => t !== "None").join("|");
    nullable = true;
  }
  if (param.kind === "var_positional") return { kind: "json", nullable: true, shape: "array" };
  if (param.kind === "var_keyword") return { kind: "json", nullable: true, shape: "object" };
  if (type === "int") return { kind: "int", nullable };
  if (type === "float" || type === "int|float" || type === "float|int") return { kind: "float", nullable };
  if (type === "str") return { kind: "str", nullable };
  if (type === "bool") return { kind: "bool", nullable };
  return { kind: "json", nullable };
}

export function submitForm(root, params, tasks, { readOnly = false } = {}) {
  if (readOnly) {
    fill(root, h("h1", {}, "Submit a job"), h("p", { class: "empty" }, "This token may only read: submitting a job needs a write token. Sign out to enter another one."));
    return () => {};
  }
  const chosen = params.get("task") || (tasks[0] && tasks[0].name) || "";
  const taskSelect = h(
    "select",
    { id: "task", name: "task", required: true },
    tasks.map((t) => h("option", { value: t.name, selected: t.name === chosen }, t.name)),
  );
  const doc = h("p", { class: "doc" });
  const rateNote = h("p", { class: "rate-note muted", hidden: true }); // the task's rate limit, and whom it holds
  const paramsBox = h("fieldset", { class: "params" });
  const optionsBox = h("details", { class: "options" });
  const formError = h("p", { class: "error", role: "alert" });
  const submitButton = h("button", { type: "submit" }, "Submit job");
  const inputs = new Map(); // field name → {input, error, param, kind}
  const form = h(
    "form",
    { class: "submit", novalidate: true, onsubmit: (e) => (e.preventDefault(), send()) },
    h("div", { class: "field" }, h("label", { for: "task" }, "Task"), taskSelect),
    doc,
    rateNote,
    paramsBox,
    optionsBox,
    formError,
    submitButton,
  );
  fill(root, h("h1", {}, "Submit a job"), tasks.length ? form : h("p", { class: "empty" }, "The service has no tasks."));
  taskSelect.addEventListener("change", () => {
    history.replaceState(null, "", `#/submit?task=${encodeURIComponent(taskSelect.value)}`);
    build();
  });

  function control(id, name, label, attrs, hint, error) {
    const input = attrs.kind === "json" ? h("textarea", { id, name, rows: 2, spellcheck: "false", "aria-describedby": `${id}-error ${id}-hint` })
      : h("input", { id, name, ...attrs.input, "aria-describedby": `${id}-error ${id}-hint` });
    const row = h(
      "div",
      { class: `field${attrs.kind === "bool" ? " check" : ""}` },
      h("label", { for: id }, label, attrs.required ? h("span", { class: "required", title: "required" }, " *") : null),
      input,
      h("small", { id: `${id}-hint`, class: "hint" }, hint),
      h("small", { id: `${id}-error`, class: "field-error", "aria-live": "polite" }, error || ""),
    );
    return { row, input, error: row.querySelector(".field-error") };
  }

  function build() {
    inputs.clear();
    formError.textContent = "";
    const task = tasks.find((t) => t.name === taskSelect.value);
    if (!task) return;
    doc.textContent = task.doc || "";
    const rate = task.options && task.options.rate_limit;
    rateNote.hidden = !rate && !task.held_by_rate;
    rateNote.textContent = [rate ? `Rate limit: ${rate}, evenly spaced` : null, task.held_by_rate ? `${task.held_by_rate} job(s) waiting on it now` : null].filter(Boolean).join(" · ");
    const rows = [];
    for (const param of task.params) {
      const { kind, nullable, shape } = inputKind(param);
      const input = {};
      if (kind === "int") Object.assign(input, { type: "number", step: 1 });
      else if (kind === "float") Object.assign(input, { type: "number", step: "any" });
      else if (kind === "bool") Object.assign(input, { type: "checkbox" });
      else if (kind === "str") Object.assign(input, { type: "text" });
      const typeText = param.type || "any JSON value";
      const hint = kind === "json" ? (shape === "array" ? "more positional arguments, as a JSON array" : shape === "object" ? "more keyword arguments, as a JSON object" : `${typeText}, as JSON`) : typeText;
      const made = control(`field-${param.name}`, param.name, param.name, { kind, input, required: param.required }, hint + (nullable ? " (may be empty)" : ""));
      if ("default" in param) {
        if (kind === "bool") made.input.checked = Boolean(param.default);
        else if (param.default !== null) made.input.value = kind === "json" || typeof param.default !== "string" ? (kind === "json" ? JSON.stringify(param.default) : String(param.default)) : param.default;
      }
      inputs.set(param.name, { ...made, param, kind, shape });
      rows.push(made.row);
    }
    fill(paramsBox, h("legend", {}, "Arguments"), rows.length ? rows : h("p", { class: "muted" }, "This task takes no arguments."));
    const optionRows = OPTIONS.map(([name, label, attrs, hint]) => {
      // ids and keys of their own: a task may have a parameter called "key" or "queue"
      const made = control(`option-${name}`, `option-${name}`, label, { kind: "option", input: attrs }, hint);
      const own = task.options && task.options[name];
      if (own !== null && own !== undefined) made.input.placeholder = String(own);
      inputs.set(`option:${name}`, { ...made, option: name });
      return made.row;
    });
    fill(optionsBox, h("summary", {}, "Options"), optionRows);
  }

  /** The value of one field, or throws a message for the field. Undefined: leave it out. */
  function valueOf(entry) {
    const { input, kind, param, shape } = entry;
    if (kind === "bool") return input.checked;
    const text = input.value.trim();
    if (text === "") return undefined; // the task's default, or "required" from the API
    if (kind === "int") {
      const n = Number(text);
      if (!Number.isInteger(n)) throw new Error("expected a whole number");
      return n;
    }
    if (kind === "float") {
      const n = Number(text);
      if (!Number.isFinite(n)) throw new Error("expected a number");
      return n;
    }
    if (kind === "str") return input.value;
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      throw new Error("not valid JSON (text goes in double quotes)");
    }
    if (shape === "array" && !Array.isArray(value)) throw new Error("expected a JSON array");
    if (shape === "object" && (typeof value !== "object" || value === null || Array.isArray(value))) throw new Error("expected a JSON object");
    return value;
  }

  /** Put each {field, message} next to its field: ``where`` says whether they name options
   * (fields of the request) or parameters (arguments). */
  function showErrors(fields, fallback, where) {
    let placed = 0;
    for (const { field, message } of fields) {
      const entry = inputs.get(where === "options" ? `option:${field}` : String(field));
      if (!entry) continue;
      entry.error.textContent = message;
      entry.input.setAttribute("aria-invalid", "true");
      if (entry.option) optionsBox.open = true;
      if (placed++ === 0) entry.input.focus();
    }
    if (!placed) formError.textContent = fallback;
  }

  /** {args, kwargs} from the fields, as the task's signature wants them. */
  function argumentsOf(values) {
    const params = [...inputs.values()].filter((e) => e.param).map((e) => e.param);
    const positional = params.filter((p) => p.kind === "positional_only" || p.kind === "positional_or_keyword");
    const star = params.find((p) => p.kind === "var_positional");
    const extra = star && values.get(star.name) !== undefined ? values.get(star.name) : [];
    // up to the last value that must go by position (positional-only ones, or any before a
    // non-empty *args), everything goes by position, defaults filling the gaps
    let last = -1;
    positional.forEach((p, i) => {
      if (values.get(p.name) !== undefined && (p.kind === "positional_only" || extra.length)) last = i;
    });
    if (extra.length) last = positional.length - 1;
    const args = [];
    const kwargs = {};
    positional.forEach((p, i) => {
      const value = values.get(p.name);
      if (i <= last) args.push(value !== undefined ? value : "default" in p ? p.default : null);
      else if (value !== undefined) kwargs[p.name] = value;
    });
    args.push(...extra);
    for (const p of params) {
      const value = values.get(p.name);
      if (value === undefined) continue;
      if (p.kind === "keyword_only") kwargs[p.name] = value;
      else if (p.kind === "var_keyword") Object.assign(kwargs, value);
    }
    return { args, kwargs };
  }

  async function send() {
    formError.textContent = "";
    for (const entry of inputs.values()) {
      entry.error.textContent = "";
      entry.input.removeAttribute("aria-invalid");
    }
    const body = { task: taskSelect.value };
    const values = new Map();
    const problems = [];
    for (const [name, entry] of inputs) {
      if (entry.option) {
        const text = entry.input.value.trim();
        if (text) body[entry.option] = NUMERIC_OPTIONS.has(entry.option) ? Number(text) : text;
        continue;
      }
      try {
        values.set(name, valueOf(entry));
      } catch (error) {
        problems.push({ field: name, message: error.message });
      }
    }
    if (problems.length) {
      showErrors(problems, "", "params");
      return;
    }
    Object.assign(body, argumentsOf(values));
    submitButton.disabled = true;
    try {
      const job = await api("/jobs", { method: "POST", body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (error) {
      if (!(error instanceof ApiError)) formError.textContent = String(error);
      else if (error.body.error === "invalid_arguments") showErrors(error.body.fields || [], error.message, "params");
      else showErrors(error.body.fields || [], error.message, "options");
    } finally {
      submitButton.disabled = false;
    }
  }

  build();
  return () => {};
}
