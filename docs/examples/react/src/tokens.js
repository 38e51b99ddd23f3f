// tokens.js — keeps the access token fresh; one refresh at a time
// (docs/integration/react-frontend.md).  Without an access token (a
// development server's anonymous listener) get() answers null.
export function createTokenStore({ baseUrl, accessToken, refreshToken }) {
  let access = accessToken, refresh = refreshToken, inflight = null;
  const expiry = (jwt) => JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000;
  async function doRefresh() {
    const r = await fetch(`${baseUrl}/api/v1/auth/refresh`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: refresh }),
    });
    if (!r.ok) throw new Error(`refresh failed: ${(await r.json()).error.code}`);   // TOKEN_REVOKED: log in again
    const body = await r.json();
    access = body.access_token;
    refresh = body.refresh_token;          // rotated: the old one is now spent
    return access;
  }
  return {
    // A valid access token, refreshed when it has less than a minute left (and a refresh token is known).
    async get() {
      if (!access) return null;
      if (!refresh || Date.now() < expiry(access) - 60_000) return access;
      inflight ??= doRefresh().finally(() => (inflight = null));
      return inflight;
    },
    refresh: () => (inflight ??= doRefresh().finally(() => (inflight = null))),
  };
}
