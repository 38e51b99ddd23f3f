// The demo player's page: catalog, now playing (audio, waveform, spectrogram),
// live events and analytics.  Plain ES modules against the public API; the
// reference for a frontend integration (docs/modules/player.md).

import { adoptFragmentToken, claims, encodePath, getJson, getObjectUrl, setToken } from "./api.js";
import { connectEvents } from "./events.js";
import { Player } from "./playback.js";
import { hideWaveform, showWaveform, zoomIn, zoomOut } from "./waveform.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 50;

/** A new element with text content (never innerHTML: catalog text is data, not markup). */
function el(tag, text = "", className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

const formatTime = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

function toast(title, body) {
  const box = el("div", "", "toast");
  box.append(el("strong", title), el("span", body));
  $("toasts").append(box);
  setTimeout(() => box.remove(), 8000);
}

function logEvent(type, text) {
  const item = el("li");
  item.append(el("span", type, "type"), ` ${text}`);
  $("events").prepend(item);
  while ($("events").children.length > 50) $("events").lastChild.remove();
}

// -- who we are ----------------------------------------------------------------------------

adoptFragmentToken();
const me = claims();
$("who").textContent = me ? `${me.sub} (${(me.roles ?? []).join(", ") || "no roles"})` : "anonymous";
const isAdmin = (me?.roles ?? []).includes("admin");
const readsAnalytics = isAdmin || (me?.permissions ?? []).includes("analytics:read");

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("token-input").value);
  location.reload();
});
$("token-forget").addEventListener("click", () => {
  setToken(null);
  location.reload();
});

// -- live events ---------------------------------------------------------------------------

const events = connectEvents({
  getToken: () => sessionStorage.getItem("streamsrv.token"),
  channels: isAdmin ? ["user:me", "system"] : ["user:me"],
  onState: (state, data) => {
    $("socket").textContent = `events: ${state}`;
    $("socket").classList.toggle("off", state !== "ready");
    if (state === "offline" && data?.code) logEvent("socket", `closed (${data.code})`);
  },
  onMessage: (message) => {
    const { type, data } = message;
    if (type === "notification") {
      toast(data.title ?? "Notification", data.body ?? data.text ?? "");
      logEvent("notification", data.title ?? "");
    } else if (type === "event") {
      const event = data.event;
      logEvent(event.type, event.path ?? event.alert ?? "");
      if (event.type.startsWith("track.")) loadCatalog();
      if (event.type.startsWith("stream.") || event.type.startsWith("playback.")) refreshListeners();
    } else if (type === "error") {
      logEvent("error", `${data.code}: ${data.message}`);
    }
  },
});

// -- catalog -------------------------------------------------------------------------------

let cursor = null;
let nowPlaying = null;

async function loadCatalog({ more = false } = {}) {
  const page = await getJson("/api/v1/tracks", {
    q: $("search").value,
    limit: PAGE_SIZE,
    cursor: more ? cursor : undefined,
  });
  if (!more) $("tracks").replaceChildren();
  for (const track of page.items) {
    const button = el("button", track.title || track.path);
    button.type = "button";
    button.dataset.path = track.path;
    button.append(el("span", [track.artist, track.album, formatTime(track.duration_s)].filter(Boolean).join(" · "), "meta"));
    button.addEventListener("click", () => play(track));
    const item = el("li");
    item.append(button);
    $("tracks").append(item);
  }
  cursor = page.next_cursor;
  $("more").hidden = !cursor;
}

let searchTimer = null;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => loadCatalog().catch(showError), 250);
});
$("more").addEventListener("click", () => loadCatalog({ more: true }).catch(showError));

// -- now playing ---------------------------------------------------------------------------

const status = (text) => ($("status").textContent = text);
const showError = (error) => status(String(error.message ?? error));
const player = new Player($("audio"), events.report, status);

$("mode").addEventListener("change", () => {
  $("format").disabled = $("mode").value === "hls";
  if (nowPlaying) play(nowPlaying);
});
$("format").addEventListener("change", () => nowPlaying && play(nowPlaying));
$("zoom-in").addEventListener("click", zoomIn);
$("zoom-out").addEventListener("click", zoomOut);

async function play(track) {
  nowPlaying = track;
  for (const button of $("tracks").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.path === track.path));
  }
  $("now-title").textContent = track.title || track.path;
  $("now-meta").textContent = [
    track.artist,
    track.album,
    track.codec,
    track.bitrate && `${Math.round(track.bitrate / 1000)} kb/s`,
    formatTime(track.duration_s),
  ].filter(Boolean).join(" · ");
  hideWaveform();
  showSpectrogram(track.path);
  if (isAdmin) events.subscribe([`track:${track.path}`]);
  try {
    await player.play(track, { mode: $("mode").value, format: $("format").value });
    const shown = await showWaveform($("audio"), track.path, { zoomview: $("zoomview"), overview: $("overview") });
    if (shown) document.body.dataset.waveform = track.path; // for tests and curious readers
  } catch (error) {
    showError(error);
  }
}

async function showSpectrogram(path) {
  const image = $("spectrogram");
  if (image.src) URL.revokeObjectURL(image.src);
  image.hidden = true;
  try {
    const url = await getObjectUrl(`/api/v1/spectrum/${encodePath(path)}?format=png`);
    if (nowPlaying?.path !== path) return URL.revokeObjectURL(url); // another track was picked meanwhile
    image.src = url;
    image.hidden = false;
  } catch (error) {
    logEvent("spectrum", error.message);
  }
}

// -- listeners and analytics (analytics:read, e.g. the development admin token) --------------

async function refreshListeners() {
  const list = $("listeners");
  if (!readsAnalytics) {
    list.replaceChildren(el("li", "needs a token with analytics:read", "muted"));
    return;
  }
  try {
    const active = await getJson("/api/v1/analytics/active");
    list.replaceChildren(
      ...active.items.map((s) => el("li", `${s.user_sub ?? "someone"} · ${s.track_path} · ${formatTime(s.position_s)}`)),
    );
    if (!active.items.length) list.append(el("li", "nobody", "muted"));
  } catch (error) {
    list.replaceChildren(el("li", `needs analytics:read (${error.code ?? error.message})`, "muted"));
  }
}

async function refreshAnalytics() {
  const summary = $("summary");
  const top = $("top");
  refreshListeners();
  if (!readsAnalytics) {
    summary.replaceChildren(el("dt", "needs"), el("dd", "a token with analytics:read (the development admin token)"));
    return;
  }
  try {
    const [totals, best] = await Promise.all([
      getJson("/api/v1/analytics/summary"),
      getJson("/api/v1/analytics/top-tracks", { limit: 5 }),
    ]);
    summary.replaceChildren();
    for (const [label, value] of [
      ["listeners", totals.listeners],
      ["sessions", totals.sessions],
      ["listening", formatTime(totals.listening_time_s)],
      ["completed", `${Math.round(totals.completion_rate * 100)} %`],
    ]) {
      summary.append(el("dt", label), el("dd", String(value)));
    }
    top.replaceChildren(...best.items.map((t) => el("li", `${t.path} · ${formatTime(t.listening_time_s)}`)));
  } catch (error) {
    summary.replaceChildren(el("dt", "needs analytics:read"), el("dd", error.code ?? error.message));
    top.replaceChildren();
  }
}

$("analytics-refresh").addEventListener("click", refreshAnalytics);
setInterval(refreshAnalytics, 30000);

loadCatalog().catch(showError);
refreshAnalytics();
