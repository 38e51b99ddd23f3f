// The /ws event socket (docs/api/websockets.md): authenticate with the first
// message, subscribe, hand events to the page, send playback reports, and
// reconnect with back-off — unless the page closed it or the server said
// "not allowed" (4403).

const NO_RETRY = new Set([4403]);

export function connectEvents({ getToken, channels, onMessage, onState }) {
  let socket = null;
  let seq = 0;
  let retryMs = 1000;
  let closedByUs = false;

  const send = (type, data = {}) => {
    if (socket?.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify({ type, id: `c${++seq}`, ts: new Date().toISOString(), data }));
    return true;
  };

  const open = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws`);
    onState("connecting");
    // Without a token a development server authenticates the anonymous listener.
    socket.onopen = () => send("auth", getToken() ? { token: getToken() } : {});
    socket.onmessage = ({ data }) => {
      const message = JSON.parse(data);
      if (message.type === "ready") {
        retryMs = 1000;
        onState("ready", message.data);
        send("subscribe", { channels });
      }
      onMessage(message);
    };
    socket.onclose = ({ code }) => {
      onState("offline", { code });
      if (closedByUs || NO_RETRY.has(code)) return;
      setTimeout(open, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    };
  };

  open();
  return {
    send,
    /** `report("progress", {session_id, path, position_s})` sends `playback.progress`. */
    report: (kind, data) => send(`playback.${kind}`, data),
    subscribe: (names) => send("subscribe", { channels: names }),
    unsubscribe: (names) => send("unsubscribe", { channels: names }),
    close: () => {
      closedByUs = true;
      socket?.close(1000);
    },
  };
}
