// The example's page: the catalog, a player, the live events.
//
// Where the server is: ?server=http://127.0.0.1:8080 (the default).  A token, if any:
// #token=ACCESS[&refresh=REFRESH] in the page's URL (never sent to a server).  A real app
// gets both from its backend, along with signed stream URLs (docs/integration/go-backend.md).
import { useEffect, useMemo, useState } from "react";
import { createTokenStore } from "./tokens.js";
import { useStreamsrvPlayer } from "./useStreamsrvPlayer.js";

const server = new URLSearchParams(location.search).get("server") ?? "http://127.0.0.1:8080";
const fragment = new URLSearchParams(location.hash.slice(1));
const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

export function App() {
  const tokens = useMemo(
    () => createTokenStore({ baseUrl: server, accessToken: fragment.get("token"), refreshToken: fragment.get("refresh") }),
    [],
  );
  const wsUrl = `${server.replace(/^http/, "ws")}/ws`;
  const { audio, play, events } = useStreamsrvPlayer({ wsUrl, tokens });
  const [tracks, setTracks] = useState([]);
  const [error, setError] = useState(null);
  const [playing, setPlaying] = useState(null);

  useEffect(() => {
    (async () => {
      const token = await tokens.get();
      const r = await fetch(`${server}/api/v1/tracks?limit=50`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
      const body = await r.json();
      if (!r.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
      setTracks(body.items);
    })().catch((e) => setError(String(e.message ?? e)));
  }, [tokens]);

  const start = (track) => {
    setPlaying(track);
    // A transcode seekable from the first request; a production app plays its backend's signed URL.
    play(track.path, `${server}/stream/${encodePath(track.path)}?format=mp3&bitrate=128`).catch((e) => setError(e.message));
  };

  return (
    <main style={{ fontFamily: "system-ui, sans-serif", maxWidth: "40rem", margin: "2rem auto" }}>
      <h1>streamsrv · React</h1>
      {error && <p role="alert">{error}</p>}
      <ul>
        {tracks.map((t) => (
          <li key={t.path}>
            <button className="track" onClick={() => start(t)}>
              {t.title || t.path}
            </button>{" "}
            {t.artist} · {Math.round(t.duration_s)} s
          </li>
        ))}
      </ul>
      <p>{playing ? `Playing ${playing.title || playing.path}` : "Pick a track"}</p>
      <audio ref={audio} controls preload="metadata" />
      <h2>Events</h2>
      <ul>{events.map((e) => <li key={e.id}>{e.data.event?.type ?? e.type}</li>)}</ul>
    </main>
  );
}
