// The console speaks only to Switchboard's public REST API, on this origin, with the signed-in
// user's token as a Bearer header. The token lives in sessionStorage (this tab only): never in a
// URL, in localStorage, or in a log.

const TOKEN_KEY = "switchboard.console.token";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** A refused call: the API's OpenAI-shaped error ({error: {message, type, param, code}}). */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "";
  }
}

/** One API call; answers the parsed JSON body, or throws ApiError. A 401 signs the tab out. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
    referrerPolicy: "no-referrer",
  });
  const text = await answer.text();
  let json = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = {};
  }
  if (!answer.ok) {
    if (answer.status === 401) window.dispatchEvent(new CustomEvent("switchboard:unauthorized"));
    throw new ApiError(answer.status, json);
  }
  return json;
}

/** A path segment: every reserved character escaped (hub ids "org/name" become "org%2Fname"). */
export const seg = encodeURIComponent;

/** A query string from the entries whose value is not empty. */
export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

/** Every page of a paged listing: the first answer, with `key` holding the items of all pages. */
export async function allPages(path, key) {
  const first = await api("GET", path + query({ pageSize: 1000 }));
  let next = first.nextPageToken;
  while (next) {
    const page = await api("GET", path + query({ pageSize: 1000, pageToken: next }));
    first[key].push(...page[key]);
    next = page.nextPageToken;
  }
  return first;
}
