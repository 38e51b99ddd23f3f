// useStreamsrvPlayer.js — one <audio>, one event socket, playback reports
// (docs/integration/react-frontend.md explains each part).
import { useEffect, useRef, useState, useCallback } from "react";

export function useStreamsrvPlayer({ wsUrl, tokens }) {
  const audio = useRef(null);
  const ws = useRef(null);
  const session = useRef(null);           // {id, path}
  const [events, setEvents] = useState([]);

  const send = useCallback((type, data) => {
    if (ws.current?.readyState === WebSocket.OPEN) ws.current.send(JSON.stringify({ type, data }));
  }, []);

  // One socket, authenticated by its first message, re-authenticated in place.
  useEffect(() => {
    let closed = false, retry = 1000;
    const open = async () => {
      const socket = new WebSocket(wsUrl);
      ws.current = socket;
      socket.onopen = async () => {
        const token = await tokens.get();
        socket.send(JSON.stringify({ type: "auth", data: token ? { token } : {} }));   // {}: anonymous (development)
      };
      socket.onmessage = async ({ data }) => {
        const msg = JSON.parse(data);
        if (msg.type === "ready") { retry = 1000; send("subscribe", { channels: ["user:me"] }); }
        else if (msg.type === "token.expiring") send("auth", { token: await tokens.refresh() });
        else if (msg.type === "event" || msg.type === "notification") setEvents((e) => [...e.slice(-49), msg]);
      };
      socket.onclose = ({ code }) => {
        if (closed || code === 4403) return;                   // closed by us, or 4403: not allowed; do not retry
        setTimeout(open, (retry = Math.min(retry * 2, 30_000)));   // 1001, 4401, 4008, network: back off
      };
    };
    open();
    return () => { closed = true; ws.current?.close(1000); };
  }, [wsUrl, tokens, send]);

  // Playback reports: play (with startup time), pause, seek, buffering (with stall time), progress, ended.
  useEffect(() => {
    const el = audio.current;
    if (!el) return;
    let requestedAt = 0, stalledAt = 0, timer = null;
    const base = () => ({ session_id: session.current?.id, path: session.current?.path, position_s: el.currentTime });
    const on = {
      play: () => { requestedAt = performance.now(); },
      playing: () => {
        if (requestedAt) { send("playback.play", { ...base(), startup_ms: Math.round(performance.now() - requestedAt) }); requestedAt = 0; }
        if (stalledAt) { send("playback.buffering", { ...base(), stall_ms: Math.round(performance.now() - stalledAt) }); stalledAt = 0; }
        timer ??= setInterval(() => send("playback.progress", base()), 15_000);
      },
      waiting: () => { stalledAt = performance.now(); },
      pause: () => { send("playback.pause", base()); clearInterval(timer); timer = null; },
      seeked: () => send("playback.seek", base()),
      ended: () => { send("playback.ended", base()); clearInterval(timer); timer = null; },
    };
    for (const [name, fn] of Object.entries(on)) el.addEventListener(name, fn);
    return () => { for (const [name, fn] of Object.entries(on)) el.removeEventListener(name, fn); clearInterval(timer); };
  }, [send]);

  // Play a track from a URL the caller chose: the backend's signed URL, or (development,
  // anonymous listener) the plain /stream URL with format=… for a transcode.
  const play = useCallback((path, streamUrl) => {
    session.current = { id: crypto.getRandomValues(new Uint32Array(4)).join("-"), path };
    audio.current.src = streamUrl;
    return audio.current.play();
  }, []);

  return { audio, play, events };
}
