// Overview: jobs by state and by queue, what finished over the last minutes, the workers.
//
// The counts come from GET /stats once, then follow the stream's state events (each names the
// state a job left and the one it entered). The workers are read again when a job starts or ends.

import { api } from "../api.js";
import { STATES, TERMINAL, between, clockText, dotted, duration, fill, h, loading, progressBar, svg, throttle, timeTitle } from "../dom.js";
import { LiveStream } from "../stream.js";

export function overview(root) {
  const counts = new Map(); // "queue\u0000state" → jobs
  let throughput = null; // {bucket_s, window_s, buckets: [{at, succeeded, failed, canceled}]}
  let statsEventId = Infinity; // events up to this id are already in the counts
  let buffered = [];

  // each part says it is loading until its first data is in
  const stateTiles = h("div", { class: "tiles", role: "list" }, loading());
  const queueTable = h("div", { class: "table-wrap" }, loading());
  const chart = h("figure", { class: "chart" }, loading());
  const workersList = h("div", { class: "table-wrap" }, loading());
  fill(
    root,
    h("h1", {}, "Overview"),
    h("section", { "aria-labelledby": "states-h" }, h("h2", { id: "states-h" }, "Jobs by state"), stateTiles),
    h("section", { "aria-labelledby": "thr-h" }, h("h2", { id: "thr-h" }, "Finished jobs, last 15 minutes"), chart),
    h("section", { "aria-labelledby": "workers-h" }, h("h2", { id: "workers-h" }, "Workers"), workersList),
    h("section", { "aria-labelledby": "queues-h" }, h("h2", { id: "queues-h" }, "Jobs by queue"), queueTable),
  );

  const add = (queue, state, n) => {
    const key = `${queue}\u0000${state}`;
    const left = (counts.get(key) || 0) + n;
    if (left > 0) counts.set(key, left);
    else counts.delete(key);
  };

  function apply(kind, data, id) {
    if (kind === "progress") {
      // a worker's job moved on: its bar follows without reading /workers again
      const cell = workersList.querySelector(`tr[data-job-id="${CSS.escape(data.job_id)}"] .progress-cell`);
      if (cell) fill(cell, progressBar(data.progress));
      const busy = workers && workers.workers.find((w) => w.job && w.job.id === data.job_id);
      if (busy) busy.job.progress = data.progress;
      return;
    }
    if (id <= statsEventId) return;
    if (kind === "pruned") {
      for (const removed of data.removed) add(removed.queue, removed.state, -removed.jobs);
      renderCounts();
      return;
    }
    if (kind !== "state") return;
    if (data.from) add(data.queue, data.from, -1);
    add(data.queue, data.state, 1);
    if (TERMINAL.has(data.state) && throughput) {
      const bucketMs = throughput.bucket_s * 1000;
      const start = Math.floor(new Date(data.at).getTime() / bucketMs) * bucketMs;
      let bucket = throughput.buckets.find((b) => new Date(b.at).getTime() === start);
      if (!bucket) {
        bucket = { at: new Date(start).toISOString(), succeeded: 0, failed: 0, canceled: 0 };
        throughput.buckets.push(bucket);
      }
      bucket[data.state] += 1;
    }
    renderCounts();
    renderChart();
    refreshWorkers(); // a job started or ended, or a worker may have been replaced
  }

  const stream = new LiveStream("/events", (kind, data, id) => {
    if (buffered) buffered.push([kind, data, id]);
    else apply(kind, data, id);
  });

  function renderCounts() {
    const byState = Object.fromEntries(STATES.map((s) => [s, 0]));
    const byQueue = new Map();
    for (const [key, n] of counts) {
      const [queue, state] = key.split("\u0000");
      byState[state] += n;
      if (!byQueue.has(queue)) byQueue.set(queue, Object.fromEntries(STATES.map((s) => [s, 0])));
      byQueue.get(queue)[state] = n;
    }
    fill(
      stateTiles,
      STATES.map((state) =>
        h(
          "div",
          { role: "listitem" },
          h(
            "a",
            { class: `tile state-${state}`, href: `#/jobs?state=${state}`, "data-state": state },
            h("span", { class: "tile-count" }, byState[state].toLocaleString()),
            h("span", { class: "tile-label" }, state),
          ),
        ),
      ),
    );
    const queues = [...byQueue.keys()].sort();
    fill(
      queueTable,
      queues.length === 0
        ? h("p", { class: "empty" }, "No jobs stored yet.")
        : h(
            "table",
            { class: "queues cards" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "queue"), STATES.map((s) => h("th", { scope: "col", class: "num" }, s)))),
            h(
              "tbody",
              {},
              queues.map((queue) =>
                h(
                  "tr",
                  {},
                  h("th", { scope: "row", class: "lead" }, h("a", { href: `#/jobs?queue=${encodeURIComponent(queue)}` }, queue)),
                  STATES.map((s) => h("td", { class: "num", "data-label": s }, byQueue.get(queue)[s].toLocaleString())),
                ),
              ),
            ),
          ),
    );
  }

  function renderChart() {
    if (!throughput) return;
    const bucketMs = throughput.bucket_s * 1000;
    const now = Math.floor(Date.now() / bucketMs) * bucketMs;
    const count = throughput.window_s / throughput.bucket_s;
    const first = now - (count - 1) * bucketMs;
    throughput.buckets = throughput.buckets.filter((b) => new Date(b.at).getTime() >= first);
    const byStart = new Map(throughput.buckets.map((b) => [new Date(b.at).getTime(), b]));
    const width = 600;
    const height = 120;
    const barW = width / count;
    const series = [];
    let peak = 0;
    let lastMinute = 0;
    for (let i = 0; i < count; i++) {
      const start = first + i * bucketMs;
      const b = byStart.get(start) || { succeeded: 0, failed: 0, canceled: 0 };
      const total = b.succeeded + b.failed + b.canceled;
      peak = Math.max(peak, total);
      if (start > now - 60_000) lastMinute += total;
      series.push([start, b]);
    }
    const scale = peak ? (height - 4) / peak : 0;
    const bars = [];
    series.forEach(([start, b], i) => {
      let y = height;
      for (const state of ["succeeded", "failed", "canceled"]) {
        const barH = b[state] * scale;
        if (barH <= 0) continue;
        y -= barH;
        bars.push(
          svg(
            "rect",
            { x: (i * barW + 0.5).toFixed(1), y: y.toFixed(1), width: Math.max(1, barW - 1).toFixed(1), height: barH.toFixed(1), class: `bar state-${state}` },
            svg("title", {}, `${clockText(new Date(start))}: ${b[state]} ${state}`),
          ),
        );
      }
    });
    const total = series.reduce((sum, [, b]) => sum + b.succeeded + b.failed + b.canceled, 0);
    fill(
      chart,
      svg(
        "svg",
        { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": `${total} jobs finished in the last 15 minutes, ${lastMinute} in the last minute` },
        svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }),
        bars,
      ),
      h(
        "figcaption",
        {},
        h("span", {}, "15 min ago"),
        h("span", { class: "chart-summary" }, `${lastMinute.toLocaleString()} in the last minute · peak ${peak.toLocaleString()} per ${throughput.bucket_s} s`),
        h("span", {}, "now"),
      ),
    );
  }

  let workers = null; // the last GET /workers
  const refreshWorkers = throttle(async () => {
    try {
      workers = await api("/workers");
      renderWorkers(workers);
    } catch (error) {
      fill(workersList, h("p", { class: "error" }, `Could not load the workers: ${error.message}`));
    }
  }, 500);

  function renderWorkers(body) {
    // several services share the database: say whose each worker is (a pid alone is not unique)
    const shared = body.workers.some((w) => w.service);
    const heads = ["worker", ...(shared ? ["service"] : []), "state", "job", "progress", "running for", "jobs run"];
    fill(
      workersList,
      h("p", { class: "muted" }, `${body.busy} busy, ${body.idle} idle of ${body.size}`),
      h(
        "table",
        { class: "workers cards" },
        h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          {},
          body.workers.map((w) =>
            h(
              "tr",
              { "data-pid": w.pid, "data-job-id": w.job ? w.job.id : null },
              h("td", { title: w.started_at ? `started ${timeTitle(new Date(w.started_at))}` : null }, `pid ${w.pid}`),
              shared ? h("td", { "data-label": "service", title: w.service ? `service ${w.service}` : null }, w.service_at || "—") : null,
              h("td", {}, h("span", { class: `badge worker-${w.state}` }, w.state)),
              h("td", { class: "wide" }, w.job ? h("a", { href: `#/jobs/${encodeURIComponent(w.job.id)}` }, dotted(w.job.task), " ", h("code", {}, w.job.id.slice(0, 8))) : "—"),
              h("td", { class: "progress-cell" }, w.job ? progressBar(w.job.progress) : null),
              w.job
                ? h("td", { "data-label": "running for", title: `started ${timeTitle(new Date(w.job.started_at))}` }, duration(between(w.job.started_at)))
                : h("td", {}),
              h("td", { class: "num", "data-label": "jobs run" }, w.jobs_run),
            ),
          ),
        ),
      ),
    );
  }

  async function load() {
    buffered = buffered || [];
    await stream.ready; // whatever happens from here on, the stream has
    const stats = await api("/stats");
    counts.clear();
    for (const [queue, states] of Object.entries(stats.by_queue)) {
      for (const [state, n] of Object.entries(states)) if (n) add(queue, state, n);
    }
    throughput = stats.throughput;
    statsEventId = stats.event_id;
    renderCounts();
    renderChart();
    const pending = buffered;
    buffered = null;
    for (const [kind, data, id] of pending) apply(kind, data, id);
    refreshWorkers();
  }

  load().catch((error) => {
    buffered = null;
    stream.close();
    fill(root, h("p", { class: "error" }, `Could not load the overview: ${error.message}`));
  });
  const clock = setInterval(() => {
    renderChart(); // the window slides with time
    if (workers) renderWorkers(workers); // and "running for" grows
  }, 5000);
  // other services' workers change without an event of theirs reaching this page at that
  // moment (each service shows its workers to the others within half a second): read again
  const others = setInterval(() => {
    if (workers && workers.workers.some((w) => w.service)) refreshWorkers();
  }, 1000);
  return () => {
    clearInterval(clock);
    clearInterval(others);
    refreshWorkers.cancel();
    stream.close();
  };
}
