// One EventSource per view, resuming where it left off.
//
// The browser reconnects by itself after a drop and sends Last-Event-ID, so the server replays
// what was missed. It gives up for good when the stream answers anything but 200 (an expired
// stream token, a service that is restarting behind a proxy): then this opens a new one, with a
// fresh token and ?last_event_id= where the old one stopped.

import { streamUrl } from "./api.js";

const KINDS = ["state", "progress", "log", "pruned"];
const MAX_BACKOFF_MS = 10_000;

export class LiveStream {
  /**
   * @param {string} path  /events or /jobs/<id>/events
   * @param {(kind: string, data: object, id: number) => void} onEvent
   * @param {{lastEventId?: number, shouldResume?: () => boolean}} options
   */
  constructor(path, onEvent, { lastEventId = 0, shouldResume = () => true, onRewind = () => location.reload() } = {}) {
    this.path = path;
    this.onEvent = onEvent;
    this.shouldResume = shouldResume;
    this.onRewind = onRewind; // the service's store was replaced: what the view shows is stale
    this.attempt = 0; // which connect() is current: an older one that finishes late gives up
    this.lastEventId = lastEventId;
    this.source = null;
    this.closed = false;
    this.failures = 0;
    this.timer = null;
    // resolves once the stream is open: what the view loads after that, the stream completes
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    this.connect();
  }

  async connect() {
    if (this.closed) return;
    const attempt = ++this.attempt;
    let url;
    try {
      url = await streamUrl(this.path, this.lastEventId);
    } catch {
      if (attempt === this.attempt) this.retryLater();
      return;
    }
    if (this.closed || attempt !== this.attempt) return;
    if (this.source) this.source.close();
    const source = new EventSource(url);
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      setStatus("live");
      this.markReady();
    };
    // the stream's first message: its position, so a resume from here misses nothing
    source.onmessage = (message) => {
      const id = Number(message.lastEventId);
      if (id < this.lastEventId) this.onRewind(); // ids the store never gave out: it is new
      this.lastEventId = id;
    };
    for (const kind of KINDS) {
      source.addEventListener(kind, (message) => {
        const id = Number(message.lastEventId);
        if (id && id <= this.lastEventId) return; // already seen (a replay overlapping)
        if (id) this.lastEventId = id;
        this.onEvent(kind, JSON.parse(message.data), id);
      });
    }
    source.onerror = () => {
      if (this.closed) return;
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        if (this.shouldResume()) this.retryLater();
        else setStatus("live");
      } else {
        setStatus("reconnecting"); // the browser is at it, with Last-Event-ID
      }
    };
  }

  retryLater() {
    setStatus("reconnecting");
    this.failures += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures, 5));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Open again from where it stopped (a job stream that ended, after a retry). */
  resume() {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.connect();
  }

  /** Stop listening for now: nothing more is to come (the job finished). */
  pause() {
    this.attempt += 1; // a connect under way is not wanted either
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  close() {
    this.closed = true;
    this.attempt += 1;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}

/** The header's connection indicator. */
export function setStatus(status) {
  const el = document.getElementById("connection");
  if (!el) return;
  el.dataset.status = status;
  el.textContent = status === "live" ? "live" : "reconnecting…";
  el.title = status === "live" ? "receiving events as they happen" : "connection lost; resuming";
}
