// One workflow, drawn as a graph: each job a box coloured by its state, linked to its job page,
// with an arrow to each job that waits for it; live, from the workflow's own stream
// (GET /workflows/<id>/events), and with Cancel (not for a read token). The same jobs are listed
// below the graph, for the keyboard and for screen readers.
//
// Layout: a job's column is the longest way to it from a job that waits for none; within a
// column, jobs keep the order the workflow made them in (upstream first).

import { ApiError, api } from "../api.js";
import { TERMINAL, badge, fill, h, loading, pretty, throttle } from "../dom.js";
import { LiveStream } from "../stream.js";

const SVG = "http://www.w3.org/2000/svg";
const BOX_W = 170;
const BOX_H = 46;
const GAP_X = 56;
const GAP_Y = 14;
const PAD = 8;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== null && value !== undefined) el.setAttribute(name, value);
  for (const child of children) if (child !== null && child !== undefined) el.append(child);
  return el;
}

/** Each job's column and row: longest path from a root, then made order within a column. */
export function layout(jobs) {
  const column = new Map();
  for (const job of jobs) {
    // upstream first: every job it waits for has its column already
    const before = job.depends_on.map((id) => column.get(id)).filter((c) => c !== undefined);
    column.set(job.id, before.length ? Math.max(...before) + 1 : 0);
  }
  const rows = new Map();
  const place = new Map();
  for (const job of jobs) {
    const c = column.get(job.id);
    const r = rows.get(c) || 0;
    rows.set(c, r + 1);
    place.set(job.id, { x: PAD + c * (BOX_W + GAP_X), y: PAD + r * (BOX_H + GAP_Y) });
  }
  const width = PAD * 2 + (Math.max(0, ...column.values()) + 1) * (BOX_W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(1, ...rows.values()) * (BOX_H + GAP_Y) - GAP_Y;
  return { place, width, height };
}

function shortTask(task) {
  const name = task.split(".").pop();
  return name.length > 22 ? name.slice(0, 21) + "…" : name;
}

export function workflowPage(root, workflowId, { readOnly = false } = {}) {
  let workflow = null;
  const boxes = new Map(); // job id -> the <g> of its box
  const rows = new Map(); // job id -> its row in the list
  const title = h("h1", {}, "Workflow ", h("code", {}, workflowId));
  const stateCell = h("span", { class: "workflow-state" });
  const outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" });
  const cancelButton = h("button", { type: "button", class: "danger", disabled: true, onclick: cancel }, "Cancel workflow");
  const graph = h("div", { class: "graph-wrap" }, loading());
  const resultSection = h("section", { "aria-labelledby": "wf-result-h" });
  const list = h("ol", { class: "workflow-jobs" });

  fill(
    root,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    title,
    h("div", { class: "job-head" }, stateCell, readOnly ? null : h("div", { class: "actions" }, cancelButton)),
    outcome,
    h("section", { "aria-labelledby": "graph-h" }, h("h2", { id: "graph-h" }, "Steps"), graph),
    resultSection,
    h("section", { "aria-labelledby": "wf-jobs-h" }, h("h2", { id: "wf-jobs-h" }, "Jobs"), list),
  );

  function renderHead() {
    fill(stateCell, badge(workflow.state));
    cancelButton.disabled = workflow.state !== "running";
    if (workflow.state === "succeeded") {
      fill(resultSection, h("h2", { id: "wf-result-h" }, "Result"), h("pre", { class: "json result" }, pretty(workflow.result)));
    } else {
      fill(resultSection);
    }
  }

  function draw() {
    const { place, width, height } = layout(workflow.jobs);
    const edges = workflow.edges.map(({ from, to }) => {
      const a = place.get(from);
      const b = place.get(to);
      const x1 = a.x + BOX_W;
      const y1 = a.y + BOX_H / 2;
      const x2 = b.x;
      const y2 = b.y + BOX_H / 2;
      const bend = (x2 - x1) / 2;
      return svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" });
    });
    boxes.clear();
    const nodes = workflow.jobs.map((job) => {
      const { x, y } = place.get(job.id);
      const stateText = svg("text", { x: x + 10, y: y + 36, class: "node-state" }, job.state);
      const box = svg(
        "a",
        { href: `#/jobs/${encodeURIComponent(job.id)}`, class: `node state-${job.state}`, "data-job-id": job.id, "aria-label": `${job.task}: ${job.state}` },
        svg("title", {}, `${job.task} (${job.id})`),
        svg("rect", { x, y, width: BOX_W, height: BOX_H, rx: 6 }),
        svg("text", { x: x + 10, y: y + 18, class: "node-task" }, shortTask(job.task)),
        stateText,
      );
      box.stateText = stateText;
      boxes.set(job.id, box);
      return box;
    });
    const arrow = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
    fill(graph, svg("svg", { class: "workflow-graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${workflow.jobs.length} jobs and the order they run in` }, svg("defs", {}, arrow), ...edges, ...nodes));
    rows.clear();
    fill(
      list,
      workflow.jobs.map((job) => {
        const row = h("li", { "data-job-id": job.id }, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.task, " ", h("code", {}, job.id.slice(0, 8))), " ", badge(job.state));
        rows.set(job.id, row);
        return row;
      }),
    );
  }

  function setState(jobId, state) {
    const job = workflow && workflow.jobs.find((j) => j.id === jobId);
    if (!job) return;
    job.state = state;
    const box = boxes.get(jobId);
    if (box) {
      box.setAttribute("class", `node state-${state}`);
      box.setAttribute("aria-label", `${job.task}: ${state}`);
      box.stateText.textContent = state;
    }
    const row = rows.get(jobId);
    if (row) fill(row, row.firstChild, " ", badge(state)); // the link stays, the badge is new
  }

  // the workflow's state and result come from the service once its jobs move
  const reread = throttle(async () => {
    try {
      workflow = await api(`/workflows/${encodeURIComponent(workflowId)}`);
      renderHead();
      for (const job of workflow.jobs) setState(job.id, job.state);
      if (workflow.state !== "running") stream.pause();
    } catch {
      /* shown as it is; the next event tries again */
    }
  }, 200);

  const stream = new LiveStream(
    `/workflows/${encodeURIComponent(workflowId)}/events`,
    (kind, data) => {
      if (kind !== "state") return;
      setState(data.job_id, data.state);
      if (TERMINAL.has(data.state)) reread();
    },
    { shouldResume: () => !workflow || workflow.state === "running" },
  );

  async function cancel() {
    cancelButton.disabled = true;
    outcome.className = "outcome";
    outcome.textContent = "Canceling…";
    try {
      workflow = await api(`/workflows/${encodeURIComponent(workflowId)}/cancel`, { method: "POST" });
      outcome.textContent = `Canceled: the workflow is now ${workflow.state}.`;
      outcome.classList.add("ok");
      renderHead();
      for (const job of workflow.jobs) setState(job.id, job.state);
    } catch (error) {
      outcome.textContent = `Not canceled: ${error.message}`;
      outcome.classList.add("bad");
      if (workflow) renderHead();
    }
  }

  api(`/workflows/${encodeURIComponent(workflowId)}`)
    .then((loaded) => {
      workflow = loaded;
      renderHead();
      draw();
    })
    .catch((error) => {
      stream.close();
      fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")), h("h1", {}, "Workflow not found"),
        h("p", { class: "error" }, error instanceof ApiError && error.status === 404 ? `There is no workflow ${workflowId}: it never existed, or the retention removed it.` : error.message));
    });

  return () => {
    reread.cancel();
    stream.close();
  };
}
