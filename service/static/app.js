// The dashboard: a hash router over six views, each built from the public REST + SSE API.
//
//   #/              overview
//   #/jobs?...      the jobs list (state, task, queue, schedule, q)
//   #/jobs/<id>     one job
//   #/workflows/<id> one workflow, as a graph
//   #/schedules     the schedules, and a form to make one
//   #/submit?task=  the submit form
//
// With a read token every view is built without its write controls, and the header says so.

import { api, forgetToken, hasToken, onTokenNeeded, scope } from "./api.js";
import { fill, h } from "./dom.js";
import { jobPage } from "./views/job.js";
import { jobsList } from "./views/jobs.js";
import { overview } from "./views/overview.js";
import { schedulesPage } from "./views/schedules.js";
import { submitForm } from "./views/submit.js";
import { workflowPage } from "./views/workflow.js";

const main = document.getElementById("view");
let leave = () => {};
let tasks = null; // GET /tasks, read once

async function taskList() {
  if (!tasks) tasks = (await api("/tasks")).tasks;
  return tasks;
}

let generation = 0; // which route() is current: one overtaken while it awaits gives up

async function route() {
  if (location.hash && !location.hash.startsWith("#/")) return; // an in-page anchor
  const mine = ++generation;
  leave();
  leave = () => {};
  const [path, queryText] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(queryText || "");
  const parts = (path || "/").split("/").filter(Boolean);
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.view === (parts[0] || "overview");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const connection = document.getElementById("connection");
  connection.textContent = parts[0] === "submit" ? "" : "connecting…"; // a view with a stream says more
  connection.dataset.status = "connecting";
  try {
    // before the view is built: which controls it has depends on it (asked once, and again
    // after a token is entered: the first visit with a token shows the dialog here)
    const readOnly = (await scope()) === "read";
    if (mine !== generation) return;
    document.getElementById("read-only").hidden = !readOnly;
    document.querySelector('nav a[data-view="submit"]').hidden = readOnly;
    document.getElementById("sign-out").hidden = !hasToken();
    if (parts[0] === "jobs" && parts[1]) {
      document.title = "Job · Conveyor";
      leave = jobPage(main, decodeURIComponent(parts[1]), { readOnly });
    } else if (parts[0] === "workflows" && parts[1]) {
      document.title = "Workflow · Conveyor";
      leave = workflowPage(main, decodeURIComponent(parts[1]), { readOnly });
    } else if (parts[0] === "jobs") {
      document.title = "Jobs · Conveyor";
      const known = await taskList();
      if (mine !== generation) return;
      leave = jobsList(main, params, known);
    } else if (parts[0] === "schedules") {
      document.title = "Schedules · Conveyor";
      const known = await taskList();
      if (mine !== generation) return;
      leave = schedulesPage(main, known, { readOnly });
    } else if (parts[0] === "submit") {
      document.title = "Submit · Conveyor";
      const known = await taskList();
      if (mine !== generation) return;
      leave = submitForm(main, params, known, { readOnly });
    } else {
      document.title = "Conveyor";
      leave = overview(main);
    }
  } catch (error) {
    if (mine === generation) fill(main, h("p", { class: "error" }, `Could not load this page: ${error.message}`));
  }
  main.focus({ preventScroll: true });
}

// -- the token dialog ------------------------------------------------------------------------

const dialog = document.getElementById("token-dialog");
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
const tokenError = document.getElementById("token-error");

onTokenNeeded(
  (wrong) =>
    new Promise((resolve) => {
      tokenError.textContent = wrong ? "That token was not accepted. Try again." : "";
      tokenInput.value = "";
      tokenForm.onsubmit = (event) => {
        event.preventDefault();
        const token = tokenInput.value.trim();
        if (!token) return;
        dialog.close();
        resolve(token);
      };
      dialog.oncancel = (event) => event.preventDefault(); // nothing works without it
      dialog.showModal();
      tokenInput.focus();
    }),
);

document.getElementById("sign-out").addEventListener("click", () => {
  forgetToken();
  location.reload();
});

document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault(); // "#view" is no route: move the focus, keep the page
  main.focus();
});

window.addEventListener("hashchange", route);
route();
