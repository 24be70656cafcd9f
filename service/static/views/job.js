// One job: its arguments, state timeline, progress, live log, result or error, attempts, and the
// Cancel and Retry buttons (not for a read token).
//
// The job's own stream (GET /jobs/<id>/events) replays its whole history first, so the timeline
// and the log tail come from the same place as what happens next. The stream ends with the job;
// a retry opens it again from the last event seen.

import { ApiError, api } from "../api.js";
import { TERMINAL, badge, between, dotted, duration, fill, h, loading, pretty, progressBar, throttle, when } from "../dom.js";
import { LiveStream } from "../stream.js";

const MAX_LOG_LINES_SHOWN = 2000;

export function jobPage(root, jobId, { readOnly = false } = {}) {
  let job = null;
  const title = h("h1", {}, "Job ", h("code", {}, jobId));
  const stateCell = h("span", { class: "job-state" });
  const progressCell = h("span", { class: "job-progress" });
  const outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" });
  // disabled until the job is in: what they may do depends on its state
  const cancelButton = h("button", { type: "button", class: "danger", disabled: true, onclick: () => act("cancel") }, "Cancel");
  const retryButton = h("button", { type: "button", disabled: true, onclick: () => act("retry") }, "Retry");
  const pending = loading(); // until the job is read
  const facts = h("dl", { class: "facts" });
  const timeline = h("ol", { class: "timeline" });
  const argsBlock = h("pre", { class: "json" });
  const resultSection = h("section", { "aria-labelledby": "result-h" });
  const attemptsSection = h("section", { "aria-labelledby": "attempts-h" });
  const logList = h("ol", { class: "log", "aria-live": "off", tabindex: 0, "aria-label": "log lines" });
  const logNote = h("p", { class: "muted" });
  const logStatus = h("p", { class: "log-status muted" }, "Loading…"); // while the log has no lines
  let logLines = 0;
  let lastAttempt = null; // the attempt of the newest line shown
  let streamed = false; // the stream has sent something: its replay of the job is under way
  let ended = false; // the newest state the stream told of is a terminal one

  fill(
    root,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    title,
    h("div", { class: "job-head" }, stateCell, progressCell, readOnly ? null : h("div", { class: "actions" }, cancelButton, retryButton)),
    outcome,
    pending,
    facts,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "timeline-h" }, h("h2", { id: "timeline-h" }, "Timeline"), timeline),
      h("section", { "aria-labelledby": "args-h" }, h("h2", { id: "args-h" }, "Arguments"), argsBlock),
    ),
    resultSection,
    h("section", { "aria-labelledby": "log-h" }, h("h2", { id: "log-h" }, "Log"), logNote, logStatus, logList),
    attemptsSection,
  );

  /** The state and the buttons: all an event changes before the job is read again. */
  function renderHead() {
    fill(stateCell, badge(job.state));
    fill(progressCell, progressBar(job.progress));
    cancelButton.disabled = TERMINAL.has(job.state);
    retryButton.disabled = !(job.state === "failed" || job.state === "canceled");
  }

  function render() {
    pending.remove();
    fill(title, h("span", { class: "task" }, dotted(job.task)), " ", h("code", { class: "muted" }, job.id));
    renderHead();
    const fact = (name, value) => (value === null || value === undefined || value === "" ? null : h("div", {}, h("dt", {}, name), h("dd", {}, value)));
    fill(
      facts,
      fact("queue", job.options.queue),
      fact("priority", job.options.priority),
      fact("key", job.key),
      fact("workflow", job.workflow_id ? h("a", { href: `#/workflows/${encodeURIComponent(job.workflow_id)}`, title: "the workflow this job is a step of" }, job.workflow_id.slice(0, 8)) : null),
      fact("waits for", job.depends_on.length ? h("span", {}, job.depends_on.flatMap((id, i) => [i ? ", " : "", h("a", { href: `#/jobs/${encodeURIComponent(id)}` }, h("code", {}, id.slice(0, 8)))])) : null),
      fact("schedule", job.schedule_id ? h("a", { href: `#/jobs?schedule=${encodeURIComponent(job.schedule_id)}`, title: "the jobs this schedule made" }, job.schedule_id) : null),
      fact("created", when(job.created_at)),
      fact("scheduled for", when(job.scheduled_at)),
      fact("started", when(job.started_at)),
      fact("finished", when(job.finished_at)),
      fact("took", duration(job.started_at && job.finished_at ? between(job.started_at, job.finished_at) : null)),
      fact("attempt", job.attempt ? `${job.attempt}${job.options.max_retries ? ` (up to ${job.options.max_retries + 1})` : ""}` : null),
      fact("timeout", job.options.timeout_s ? `${job.options.timeout_s} s` : null),
      fact("memory limit", job.options.memory_limit_mb ? `${job.options.memory_limit_mb} MB` : null),
    );
    fill(argsBlock, pretty({ args: job.args, kwargs: job.kwargs }));
    if (job.state === "succeeded") {
      fill(resultSection, h("h2", { id: "result-h" }, "Result"), h("pre", { class: "json result" }, pretty(job.result)));
    } else if (job.error) {
      fill(
        resultSection,
        h("h2", { id: "result-h" }, "Error"),
        h("p", { class: "error-line" }, h("strong", {}, job.error.type), ": ", job.error.message),
        job.error.traceback ? h("pre", { class: "traceback" }, job.error.traceback) : null,
      );
    } else {
      fill(resultSection);
    }
    fill(
      attemptsSection,
      job.attempts.length ? h("h2", { id: "attempts-h" }, "Attempts") : null,
      job.attempts.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "attempts cards" },
              h("thead", {}, h("tr", {}, ["attempt", "started", "finished", "outcome"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                job.attempts.map((a) =>
                  h(
                    "tr",
                    {},
                    h("td", { class: "num", "data-label": "attempt" }, a.number),
                    h("td", { "data-label": "started" }, when(a.started_at)),
                    h("td", { "data-label": "finished" }, when(a.finished_at)),
                    h("td", { class: "wide" }, badge(a.outcome), a.error ? ` ${a.error.type}: ${a.error.message}` : ""),
                  ),
                ),
              ),
            ),
          )
        : null,
    );
  }

  function addLog(entries, dropped) {
    const atBottom = logList.scrollTop + logList.clientHeight >= logList.scrollHeight - 8;
    for (const entry of entries) {
      if (lastAttempt !== null && entry.attempt !== lastAttempt) logList.append(attemptMark(entry.attempt));
      lastAttempt = entry.attempt;
      const where = entry.stream === "log" ? `${entry.level || ""} ${entry.logger || ""}`.trim() : entry.stream;
      logList.append(
        h(
          "li",
          { class: `log-${entry.stream} ${entry.level ? "level-" + entry.level.toLowerCase() : ""}`, "data-attempt": entry.attempt },
          when(entry.at),
          h("span", { class: "log-where" }, where),
          h("span", { class: "log-text" }, entry.text),
        ),
      );
      logLines += 1;
    }
    while (logList.childElementCount > MAX_LOG_LINES_SHOWN) logList.firstElementChild.remove();
    markOldestAttempt();
    if (dropped) logNote.textContent = `Earlier lines were dropped (the service keeps the newest ones).`;
    if (atBottom) logList.scrollTop = logList.scrollHeight; // follow, unless scrolled up to read
    logList.dataset.lines = String(logLines);
    renderLogStatus();
  }

  /** The row that starts the lines of an attempt, in a log that holds more than one. */
  function attemptMark(attempt) {
    return h("li", { class: "log-attempt" }, `attempt ${attempt}`);
  }

  // The oldest lines shown get their mark too once another attempt's follow, or when they are
  // not the first attempt's; a job that ran once has none.
  function markOldestAttempt() {
    const first = logList.firstElementChild;
    if (!first || first.classList.contains("log-attempt")) return;
    if (first.dataset.attempt > 1 || logList.querySelector(".log-attempt")) logList.prepend(attemptMark(first.dataset.attempt));
  }

  /** Said in place of the lines while there are none: what the stream has told so far. */
  function renderLogStatus() {
    logStatus.hidden = logLines > 0;
    logStatus.textContent = !streamed ? "Loading…" : ended ? "No output." : "No output yet.";
  }

  function addTimeline(data, at) {
    timeline.append(
      h(
        "li",
        { "data-state": data.state },
        when(at),
        " ",
        badge(data.state),
        data.attempt ? h("span", { class: "muted" }, ` attempt ${data.attempt}`) : null,
        data.error ? h("span", { class: "error-line" }, ` ${data.error.type}: ${data.error.message}`) : null,
      ),
    );
  }

  // the full job (result, traceback, attempts) is read again after each change of state
  const reread = throttle(async () => {
    try {
      job = await api(`/jobs/${encodeURIComponent(jobId)}`);
      render();
    } catch {
      /* shown as it is; the next event tries again */
    }
  }, 100);

  const stream = new LiveStream(
    `/jobs/${encodeURIComponent(jobId)}/events`,
    (kind, data) => {
      streamed = true;
      if (kind === "state") {
        ended = TERMINAL.has(data.state); // the replay tells of a run again after a terminal state
        renderLogStatus();
        addTimeline(data, data.at);
        // the replay also tells of earlier attempts: those do not change what the header shows
        const current = job && data.attempt >= job.attempt;
        if (current) {
          job.state = data.state;
          renderHead(); // the result or error comes with the job, read again just below
        }
        reread();
        // the stream ends with the job (the server closes it after this event)
        if (current && TERMINAL.has(data.state)) stream.pause();
      } else if (kind === "progress") {
        if (job) {
          job.progress = data.progress;
          fill(progressCell, progressBar(data.progress));
        }
      } else if (kind === "log") {
        addLog(data.entries, data.dropped);
      }
    },
    { shouldResume: () => !job || !TERMINAL.has(job.state) },
  );

  async function act(action) {
    cancelButton.disabled = retryButton.disabled = true;
    outcome.className = "outcome";
    outcome.textContent = action === "cancel" ? "Canceling…" : "Retrying…";
    try {
      job = await api(`/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
      outcome.textContent = action === "cancel" ? `Canceled: the job is now ${job.state}.` : `Queued again as attempt ${job.attempt + 1}.`;
      outcome.classList.add("ok");
      render();
      if (action === "retry") stream.resume();
    } catch (error) {
      outcome.textContent = error instanceof ApiError ? `Not ${action === "cancel" ? "canceled" : "retried"}: ${error.message}` : String(error);
      outcome.classList.add("bad");
      if (error instanceof ApiError && error.body.job) job = error.body.job;
      if (job) render();
    }
  }

  api(`/jobs/${encodeURIComponent(jobId)}`)
    .then((loaded) => {
      job = loaded;
      render();
    })
    .catch((error) => {
      stream.close();
      fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")), h("h1", {}, "Job not found"),
        h("p", { class: "error" }, error instanceof ApiError && error.status === 404 ? `There is no job ${jobId}: it never existed, or the retention removed it.` : error.message));
    });

  return () => {
    reread.cancel();
    stream.close();
  };
}
