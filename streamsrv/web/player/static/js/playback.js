// Playing a track in one <audio> element: HLS through hls.js (or the
// browser's own HLS on Safari), or a progressive stream — the original file
// or a transcode — and the playback reports that fill the server's analytics.
//
// Credentials: hls.js sends the token with the master playlist only (its
// child URIs carry their own signed credentials).  An <audio src> cannot send
// a header, so a progressive stream goes without one: fine on a development
// server (anonymous listener); a production frontend plays signed URLs made
// by its backend instead (docs/integration/react-frontend.md).

import Hls from "../vendor/hls.min.mjs";
import { encodePath, getToken } from "./api.js";

const PROGRESS_EVERY_MS = 15000;

const newSessionId = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");

/** The URL to play *path* with: HLS master playlist, or /stream with `format`/`bitrate`. */
export function sourceUrl(path, { mode, format }) {
  if (mode === "hls") return `/hls/${encodePath(path)}/master.m3u8`;
  const url = `/stream/${encodePath(path)}`;
  if (!format) return url;
  const [name, bitrate] = format.split(":");
  const query = new URLSearchParams({ format: name });
  if (bitrate) query.set("bitrate", bitrate);
  return `${url}?${query}`;
}

export class Player {
  /**
   * @param {HTMLAudioElement} audio
   * @param {(kind: string, data: object) => void} report  sends a playback report (the event socket's)
   * @param {(text: string) => void} status  shows what is going on
   */
  constructor(audio, report, status) {
    this.audio = audio;
    this.report = report;
    this.status = status;
    this.hls = null;
    this.session = null;
    this._timer = null;
    this._listen();
  }

  /** Start *track* (catalog JSON) with the chosen delivery; resolves once metadata is known. */
  async play(track, choice) {
    this.stop();
    this.session = { id: newSessionId(), path: track.path, requestedAt: performance.now(), stalledAt: 0 };
    const url = sourceUrl(track.path, choice);
    const audio = this.audio;
    if (choice.mode === "hls" && Hls.isSupported()) {
      this.hls = new Hls({
        enableWorker: false, // a worker would need `worker-src blob:` in the page's CSP
        xhrSetup: (xhr, requested) => {
          const token = getToken();
          if (token && requested.includes("/master.m3u8")) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
        },
      });
      this.hls.on(Hls.Events.ERROR, (_, data) => {
        if (data.fatal) this.status(`HLS error: ${data.details}`);
      });
      this.hls.loadSource(url);
      this.hls.attachMedia(audio);
      this.status("HLS via hls.js (MediaSource)");
    } else {
      audio.src = url; // Safari plays HLS natively; everything plays progressive this way
      this.status(choice.mode === "hls" ? "HLS, native" : `Progressive: ${url}`);
    }
    const metadata = new Promise((resolve, reject) => {
      audio.addEventListener("loadedmetadata", resolve, { once: true });
      audio.addEventListener("error", () => reject(new Error(`cannot play ${url}`)), { once: true });
    });
    audio.play().catch(() => this.status("Press play to start (the browser blocked autoplay)."));
    return metadata;
  }

  stop() {
    if (this.session && !this.audio.paused) this.report("pause", this._position());
    clearInterval(this._timer);
    this._timer = null;
    this.hls?.destroy();
    this.hls = null;
    this.audio.removeAttribute("src");
    this.audio.load();
    this.session = null;
  }

  _position() {
    const report = { session_id: this.session.id, path: this.session.path, position_s: this.audio.currentTime || 0 };
    if (Number.isFinite(this.audio.duration)) report.duration_s = this.audio.duration;
    return report;
  }

  // Playback reports (docs/api/websockets.md): play with its startup time, buffering with the
  // stall's length, seek (to where), pause, ended, and progress every 15 s while playing.  The
  // server takes session_id, path, position_s, duration_s, startup_ms, stall_ms, bitrate_kbps.
  _listen() {
    const audio = this.audio;
    const on = (name, handler) =>
      audio.addEventListener(name, () => {
        if (this.session) handler(this.session);
      });
    on("playing", (s) => {
      if (s.requestedAt) {
        this.report("play", { ...this._position(), startup_ms: Math.round(performance.now() - s.requestedAt) });
        s.requestedAt = 0;
      }
      if (s.stalledAt) {
        this.report("buffering", { ...this._position(), stall_ms: Math.round(performance.now() - s.stalledAt) });
        s.stalledAt = 0;
      }
      this._timer ??= setInterval(() => this.session && this.report("progress", this._position()), PROGRESS_EVERY_MS);
    });
    on("waiting", (s) => {
      s.stalledAt = performance.now();
    });
    on("pause", (s) => {
      // (A pause queued by the previous track's teardown arrives before this one played.)
      if (!audio.ended && !s.requestedAt) this.report("pause", this._position());
      clearInterval(this._timer);
      this._timer = null;
    });
    on("seeked", () => this.report("seek", this._position()));
    on("ended", () => {
      this.report("ended", this._position());
      clearInterval(this._timer);
      this._timer = null;
    });
  }
}
