// The jobs list: newest first, filtered, paged with the API's cursor, rows updated in place.
//
// The stream is open before the first page is read, so nothing that happens meanwhile is lost:
// its events wait until the page is in, then apply in order. A new job that matches the filters
// is read (GET /jobs, once per burst) and put on top; nothing is ever polled.

import { api } from "../api.js";
import { STATES, badge, brief, dotted, fill, h, progressBar, throttle, when } from "../dom.js";
import { LiveStream } from "../stream.js";

const PAGE = 50;

/** The arguments on one line: positional ones, then keyword ones, as JSON; null for none. */
function argsText(job) {
  const parts = [];
  if (job.args.length) parts.push(brief(job.args, 60));
  if (Object.keys(job.kwargs).length) parts.push(brief(job.kwargs, 60));
  return parts.length ? h("code", {}, parts.join(" ")) : null;
}

export function jobsList(root, params, tasks) {
  const filters = {
    state: params.get("state") || "",
    task: params.get("task") || "",
    queue: params.get("queue") || "",
    q: params.get("q") || "",
    schedule: params.get("schedule") || "", // the jobs a schedule made (linked from #/schedules)
  };
  const rows = new Map(); // job id → {tr, job}
  let next = null;
  let buffered = [];
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => loadPage(next) }, "Load more");
  const status = h("p", { class: "muted", role: "status" }, "Loading…"); // until the first page is in

  const field = (label, control) => h("label", { class: "field" }, h("span", {}, label), control);
  const stateSelect = h(
    "select",
    { name: "state" },
    h("option", { value: "" }, "any"),
    STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s)),
  );
  const taskSelect = h(
    "select",
    { name: "task" },
    h("option", { value: "" }, "any"),
    tasks.map((t) => h("option", { value: t.name, selected: t.name === filters.task }, t.name)),
  );
  const queueInput = h("input", { name: "queue", value: filters.queue, placeholder: "any", autocomplete: "off", size: 10 });
  const textInput = h("input", { name: "q", type: "search", value: filters.q, placeholder: "text in the arguments", autocomplete: "off" });
  // kept across the other filters; said above the list, with the way back to every job
  const scheduleInput = filters.schedule ? h("input", { type: "hidden", name: "schedule", value: filters.schedule }) : null;
  const form = h(
    "form",
    { class: "filters", role: "search", onsubmit: (e) => (e.preventDefault(), applyFilters()) },
    field("State", stateSelect),
    field("Task", taskSelect),
    field("Queue", queueInput),
    field("Search", textInput),
    scheduleInput,
    h("button", { type: "submit" }, "Filter"),
  );
  const applyFilters = () => {
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) query.set(name, String(value).trim());
    location.hash = `#/jobs${query.size ? "?" + query : ""}`;
  };
  stateSelect.addEventListener("change", applyFilters);
  taskSelect.addEventListener("change", applyFilters);

  const table = h(
    "div",
    { class: "table-wrap", hidden: true }, // shown with its first row
    h(
      "table",
      { class: "jobs cards" },
      h("thead", {}, h("tr", {}, ["job", "task", "state", "progress", "queue", "created", "arguments"].map((t) => h("th", { scope: "col" }, t)))),
      tbody,
    ),
  );
  fill(root, h("h1", {}, "Jobs"), form, scheduleNote(), table, status, more);

  function scheduleNote() {
    if (!filters.schedule) return null;
    const others = query({ schedule: "" });
    return h(
      "p",
      { class: "filter-note" },
      "The jobs of schedule ",
      h("code", {}, filters.schedule),
      " · ",
      h("a", { href: `#/jobs${others.size ? "?" + others : ""}` }, "every job"),
      " · ",
      h("a", { href: "#/schedules" }, "the schedules"),
    );
  }

  function query(extra = {}) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries({ ...filters, ...extra })) if (value) q.set(name, value);
    return q;
  }

  function row(job) {
    const cells = {
      state: h("td", {}, badge(job.state)),
      progress: h("td", { class: "progress-cell" }, progressBar(job.progress)),
    };
    const link = h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, h("code", {}, job.id.slice(0, 8)));
    // data-label names a cell where a narrow screen shows the row as a card, without headers
    const tr = h(
      "tr",
      { "data-job-id": job.id },
      h("td", {}, link),
      h("td", { class: "task lead" }, dotted(job.task)),
      cells.state,
      cells.progress,
      h("td", { "data-label": "queue" }, job.options.queue || "default"),
      h("td", { class: "nowrap", "data-label": "created" }, when(job.created_at)),
      h("td", { class: "args wide" }, argsText(job)),
    );
    return { tr, job, cells };
  }

  function show(jobs, { newest = false } = {}) {
    for (const job of jobs) {
      if (rows.has(job.id)) continue;
      const r = row(job);
      if (newest) {
        // in its place by age: a job that just entered the filtered state may be an old one
        const after = [...tbody.children].find((tr) => rows.get(tr.dataset.jobId).job.created_at < job.created_at);
        if (!after && next) continue; // older than this page: it belongs to a later one
        rows.set(job.id, r);
        tbody.insertBefore(r.tr, after || null);
      } else {
        rows.set(job.id, r);
        tbody.append(r.tr);
      }
    }
    status.textContent = rows.size ? "" : "No jobs match.";
    table.hidden = !rows.size;
  }

  async function loadPage(cursor) {
    more.disabled = true;
    try {
      const page = await api(`/jobs?${query({ limit: PAGE, cursor: cursor || "" })}`);
      show(page.jobs);
      next = page.next;
    } catch (error) {
      status.textContent = `Could not load the jobs: ${error.message}`;
    }
    more.hidden = !next;
    more.disabled = false;
  }

  let catchUp = null; // events that came while the newest page was being read

  // new jobs that may belong on top: read the newest page, at most a few times a second
  const readNewest = throttle(async () => {
    // events that come while the page is read may be newer than it, or not: all are applied
    // again once its rows are in, in order, which leaves each row at its latest
    catchUp = [];
    try {
      const page = await api(`/jobs?${query({ limit: PAGE })}`);
      if (page.next && !page.jobs.some((job) => rows.has(job.id))) {
        // more new jobs than a page: start again from this one, with its cursor, so that
        // "Load more" reaches every job in between
        rows.clear();
        tbody.replaceChildren();
        next = page.next;
        show(page.jobs);
        more.hidden = false;
      } else {
        show(page.jobs, { newest: true });
      }
    } catch {
      /* the next new job tries again */
    } finally {
      const missed = catchUp;
      catchUp = null;
      for (const [kind, data] of missed) apply(kind, data);
    }
  }, 300);

  function matches(data) {
    if (filters.task && data.task !== filters.task) return false;
    if (filters.queue && data.queue !== filters.queue) return false;
    if (filters.state && !filters.state.split(",").includes(data.state)) return false;
    return true;
  }

  function apply(kind, data) {
    if (catchUp) catchUp.push([kind, data]);
    const known = rows.get(data.job_id);
    if (kind === "state") {
      if (known) {
        known.job.state = data.state;
        fill(known.cells.state, badge(data.state));
      } else if (matches(data)) {
        readNewest(); // a new job, or one that just entered the state filtered on
      }
    } else if (kind === "progress" && known) {
      known.job.progress = data.progress;
      fill(known.cells.progress, progressBar(data.progress));
    }
  }

  const stream = new LiveStream("/events", (kind, data) => {
    if (buffered) buffered.push([kind, data]);
    else apply(kind, data);
  });

  (async () => {
    await stream.ready;
    await loadPage(null);
    const pending = buffered;
    buffered = null;
    for (const [kind, data] of pending) apply(kind, data);
  })();

  return () => {
    readNewest.cancel();
    stream.close();
  };
}
