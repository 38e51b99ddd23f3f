// The waveform: the server's peaks (GET /api/v1/waveform/{path}, the BBC
// audiowaveform JSON format peaks.js reads as is) drawn by peaks.js, with a
// zoomable view and an overview; clicking either seeks the <audio> element.

import { encodePath, getJson } from "./api.js";

/** Zoom levels in samples per pixel, closest first (the server's default is 256). */
const ZOOM_LEVELS = [256, 512, 1024, 2048, 4096];

let current = null;
let generation = 0; // a newer call supersedes one still loading

/**
 * Draw *path*'s waveform, bound to *audio*.  Call once the element has its
 * metadata: peaks.js reloads a media element that has none, which would
 * reset hls.js's MediaSource.
 */
export async function showWaveform(audio, path, containers) {
  hideWaveform();
  const mine = ++generation;
  const json = await getJson(`/api/v1/waveform/${encodePath(path)}`, { format: "json" });
  if (mine !== generation) return null;
  const Peaks = window.peaks;
  return new Promise((resolve, reject) => {
    Peaks.init(
      {
        zoomview: { container: containers.zoomview, waveformColor: "#2b6cb0", playheadColor: "#c53030" },
        overview: { container: containers.overview, waveformColor: "#90b4e0", highlightColor: "#2b6cb0" },
        mediaElement: audio,
        waveformData: { json },
        zoomLevels: ZOOM_LEVELS,
        keyboard: false,
      },
      (error, peaks) => {
        if (error) return reject(error);
        if (mine !== generation) {
          peaks.destroy();
          return resolve(null);
        }
        current = peaks;
        // Shown to tests and curious readers: samples per pixel of the zoomable view.
        document.body.dataset.zoom = String(ZOOM_LEVELS[0]);
        peaks.on("zoom.update", ({ currentZoom }) => (document.body.dataset.zoom = String(currentZoom)));
        resolve(peaks);
      },
    );
  });
}

export function hideWaveform() {
  current?.destroy();
  current = null;
}

export const zoomIn = () => current?.zoom.zoomIn();
export const zoomOut = () => current?.zoom.zoomOut();
