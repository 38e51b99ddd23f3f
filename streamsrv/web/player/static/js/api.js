// The HTTP side: the access token, and fetches of the JSON API with it.
//
// The token never goes into a URL the server sees: it arrives in the page's
// fragment (`/demo/#token=…`, which browsers do not send), is kept in
// sessionStorage for this tab, and is sent as `Authorization: Bearer`.
// Without one, a development server answers as the anonymous listener.

const TOKEN_KEY = "streamsrv.token";

/** Move a `#token=…` fragment into sessionStorage and out of the address bar. */
export function adoptFragmentToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    setToken(token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The token's claims (unverified: only to show who we are), or null. */
export function claims() {
  const token = getToken();
  if (!token) return null;
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return null;
  }
}

export const authHeaders = () => {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
};

/** A track path (`Artist/Album/01 - Song.mp3`) as URL path segments. */
export const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

/** An API error: `code` is the contract's error code (`UNAUTHENTICATED`, `FORBIDDEN`…). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

async function request(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...authHeaders(), ...options.headers } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = body.error ?? { code: `HTTP_${response.status}`, message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return response;
}

/** GET a JSON document of the API. */
export async function getJson(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""));
  const response = await request(query.size ? `${path}?${query}` : path);
  return response.json();
}

/** GET a binary resource (the spectrogram) as an object URL, for an <img>. */
export async function getObjectUrl(path) {
  const response = await request(path);
  return URL.createObjectURL(await response.blob());
}
