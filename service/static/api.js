// The service's public REST API, as the dashboard uses it, and its token.
//
// With CONVEYOR_TOKEN set, every data endpoint answers 401 until the page sends the token. The
// page asks for it once and keeps it in sessionStorage: for this browser tab's session only.
// Streams never get the token itself in their URL, but a short-lived signed stand-in.
//
// A token may be a read token: the service then refuses every write (403). The page learns
// which kind it has from the answer to POST /stream-token, which names the scope of the token
// it was asked with, and offers no control that the service would refuse.

const TOKEN_KEY = "conveyor.token";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

let askForToken = async () => null; // replaced by the page: shows the token dialog

export function onTokenNeeded(ask) {
  askForToken = ask;
}

export function hasToken() {
  return sessionStorage.getItem(TOKEN_KEY) !== null;
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let asking = null; // one dialog for every request that got a 401 meanwhile
let knownScope = null; // "read" or "write", as the service last said; null: to be asked

async function newToken(wrong) {
  if (!asking) {
    asking = askForToken(wrong).finally(() => {
      asking = null;
    });
  }
  const token = await asking;
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    knownScope = null; // another token: maybe another scope
  }
  return token;
}

/** JSON from the API; throws ApiError with the API's {error, detail} for any non-2xx answer. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  for (let tries = 0; ; tries++) {
    const sent = { ...headers };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) sent.Authorization = `Bearer ${token}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (response.status === 401 && tries < 5) {
      if (await newToken(token !== null)) continue; // asked again until it is right
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: "bad_response", detail: text.slice(0, 200) };
    }
    // a write refused although the page offered it: the token's scope changed (the service
    // was restarted with other tokens); the next view asks again
    if (response.status === 403) knownScope = null;
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
}

/** The URL of a stream, with a fresh stream token (and where to resume, if anywhere). */
export async function streamUrl(path, lastEventId) {
  const { token } = learnScope(await api("/stream-token", { method: "POST" }));
  const query = new URLSearchParams({ token });
  if (lastEventId) query.set("last_event_id", String(lastEventId));
  return `${path}?${query}`;
}

/** What the page's token may do: "read" or "write" ("write" too when the service has no token).
 * Asked once, then kept up to date by every stream token the page gets. */
export async function scope() {
  if (knownScope === null) {
    try {
      learnScope(await api("/stream-token", { method: "POST" }));
    } catch {
      return "write"; // not known now: the page offers everything, and the service still decides
    }
  }
  return knownScope;
}

function learnScope(answer) {
  knownScope = answer.scope === "read" ? "read" : "write";
  return answer;
}
