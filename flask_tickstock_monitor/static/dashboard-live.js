// The live link: the official socket.io-client (vendored) on the monitoring namespace, with its
// own reconnection and transports. Without it (no Socket.IO on the server, or the library not
// loaded) the page polls the JSON view instead (see dashboard.js).

const EVENTS = ["tickstock_error", "tickstock_health", "cache_invalidated"];

/**
 * Connects when ``info.available``; calls ``onEvent(name, payload)`` for each event and
 * ``onLive(bool)`` as the link comes and goes. Returns the socket, or null.
 */
export function connectLive(info, { onEvent, onLive }) {
  if (!info.available || typeof window.io !== "function") return null;
  const socket = window.io(info.namespace || "/", {
    path: info.path || "/socket.io/",
    reconnection: info.reconnection ?? true,
    reconnectionDelay: info.reconnection_delay_ms ?? 1000,
    reconnectionDelayMax: info.reconnection_delay_max_ms ?? 10000,
    timeout: info.timeout_ms ?? 10000,
    withCredentials: true,
  });
  for (const name of EVENTS) socket.on(name, (payload) => onEvent(name, payload));
  socket.on("connect", () => onLive(true));
  socket.on("disconnect", () => onLive(false));
  socket.on("connect_error", () => onLive(false));
  window.tickstockSocket = socket; // for the browser tests and the curious
  return socket;
}
