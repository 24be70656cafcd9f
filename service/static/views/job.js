// One job: its arguments, state timeline, progress, live log, result or error, attempts, and the
// Cancel and Retry buttons.
//
// The job's own stream (GET /jobs/<id>/events) replays its whole history first, so the timeline
// and the log tail come from the same place as what happens next. The stream ends with the job;
// a retry opens it again from the last event seen.

import { ApiError, api } from "../api.js";
import { TERMINAL, badge, between, duration, fill, h, pretty, throttle, time, updateProgress } from "../dom.js";
import { LiveStream } from "../stream.js";

const MAX_LOG_LINES_SHOWN = 2000;

export function jobPage(root, jobId) {
  let job = null;
  const title = h("h1", {}, "Job ", h("code", {}, jobId));
  const stateCell = h("span", { class: "job-state" });
  const progressCell = h("span", { class: "progress" });
  const outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" });
  const cancelButton = h("button", { type: "button", class: "danger", onclick: () => act("cancel") }, "Cancel");
  const retryButton = h("button", { type: "button", onclick: () => act("retry") }, "Retry");
  const facts = h("dl", { class: "facts" });
  const timeline = h("ol", { class: "timeline" });
  const argsBlock = h("pre", { class: "json" });
  const resultSection = h("section", { "aria-labelledby": "result-h" });
  const attemptsSection = h("section", { "aria-labelledby": "attempts-h" });
  const logList = h("ol", { class: "log", "aria-live": "off", tabindex: 0, "aria-label": "log lines" });
  const logNote = h("p", { class: "muted" });
  let logLines = 0;

  fill(
    root,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    title,
    h("div", { class: "job-head" }, stateCell, progressCell, h("div", { class: "actions" }, cancelButton, retryButton)),
    outcome,
    facts,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "timeline-h" }, h("h2", { id: "timeline-h" }, "Timeline"), timeline),
      h("section", { "aria-labelledby": "args-h" }, h("h2", { id: "args-h" }, "Arguments"), argsBlock),
    ),
    resultSection,
    h("section", { "aria-labelledby": "log-h" }, h("h2", { id: "log-h" }, "Log"), logNote, logList),
    attemptsSection,
  );

  /** The state and the buttons: all an event changes before the job is read again. */
  function renderHead() {
    fill(stateCell, badge(job.state));
    updateProgress(progressCell, job.progress, job.state);
    cancelButton.disabled = TERMINAL.has(job.state);
    retryButton.disabled = !(job.state === "failed" || job.state === "canceled");
  }

  function render() {
    fill(title, h("span", { class: "task" }, job.task), " ", h("code", { class: "muted" }, job.id));
    renderHead();
    const fact = (name, value) => (value === null || value === undefined || value === "" ? null : h("div", {}, h("dt", {}, name), h("dd", {}, value)));
    fill(
      facts,
      fact("queue", job.options.queue),
      fact("priority", job.options.priority),
      fact("key", job.key),
      fact("created", time(job.created_at)),
      fact("scheduled for", time(job.scheduled_at)),
      fact("started", time(job.started_at)),
      fact("finished", time(job.finished_at)),
      fact("took", duration(job.started_at && job.finished_at ? between(job.started_at, job.finished_at) : null)),
      fact("attempt", job.attempt ? `${job.attempt}${job.options.max_retries ? ` (up to ${job.options.max_retries + 1})` : ""}` : null),
      fact("timeout", job.options.timeout_s ? `${job.options.timeout_s} s` : null),
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
              {},
              h("thead", {}, h("tr", {}, ["attempt", "started", "finished", "outcome"].map((t) => h("th", { scope: "col" }, t)))),
              h(
                "tbody",
                {},
                job.attempts.map((a) =>
                  h(
                    "tr",
                    {},
                    h("td", { class: "num" }, a.number),
                    h("td", {}, time(a.started_at)),
                    h("td", {}, time(a.finished_at)),
                    h("td", {}, badge(a.outcome), a.error ? ` ${a.error.type}: ${a.error.message}` : ""),
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
      const where = entry.stream === "log" ? `${entry.level || ""} ${entry.logger || ""}`.trim() : entry.stream;
      logList.append(
        h(
          "li",
          { class: `log-${entry.stream} ${entry.level ? "level-" + entry.level.toLowerCase() : ""}` },
          h("time", { datetime: entry.at }, time(entry.at)),
          h("span", { class: "log-where" }, where),
          h("span", { class: "log-text" }, entry.text),
        ),
      );
      logLines += 1;
    }
    while (logList.childElementCount > MAX_LOG_LINES_SHOWN) logList.firstElementChild.remove();
    if (dropped) logNote.textContent = `Earlier lines were dropped (the service keeps the newest ones).`;
    if (atBottom) logList.scrollTop = logList.scrollHeight; // follow, unless scrolled up to read
    logList.dataset.lines = String(logLines);
  }

  function addTimeline(data, at) {
    timeline.append(
      h(
        "li",
        { "data-state": data.state },
        h("time", { datetime: at }, time(at)),
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
      if (kind === "state") {
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
          updateProgress(progressCell, data.progress, job.state);
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
