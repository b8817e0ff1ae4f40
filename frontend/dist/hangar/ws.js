// Hangar's websocket client: reconnects with exponential backoff and jitter, so a restarted
// server or a dropped network is healed without reloading the page (and without a thundering
// herd of clients reconnecting at the same instant).
(function (global) {
  "use strict";

  // Close codes the server uses to say "do not come back" (logged out, forbidden, not found).
  const FINAL_CODES = new Set([4401, 4403, 4404]);

  function backoffDelay(attempt, base, max, random) {
    const ceiling = Math.min(max, base * Math.pow(2, attempt));
    // "Full jitter": anywhere between half the ceiling and the ceiling.
    return Math.round(ceiling / 2 + (random() * ceiling) / 2);
  }

  class HangarSocket {
    constructor(path, options) {
      const opts = options || {};
      this.path = path;
      this.onMessage = opts.onMessage || function () {};
      this.onState = opts.onState || function () {};
      this.baseDelay = opts.baseDelay || 500;
      this.maxDelay = opts.maxDelay || 30000;
      this.random = opts.random || Math.random;
      this.WebSocketImpl = opts.WebSocket || global.WebSocket;
      this.attempt = 0;
      this.stopped = false;
      this.socket = null;
      this.timer = null;
    }

    url() {
      if (/^wss?:\/\//.test(this.path)) return this.path;
      const loc = global.location;
      const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
      return scheme + "//" + loc.host + this.path;
    }

    start() {
      this.stopped = false;
      this.connect();
      return this;
    }

    stop() {
      this.stopped = true;
      if (this.timer) clearTimeout(this.timer);
      if (this.socket) this.socket.close(1000);
    }

    connect() {
      this.onState("connecting");
      const socket = new this.WebSocketImpl(this.url());
      this.socket = socket;
      socket.onopen = () => {
        this.attempt = 0;
        this.onState("open");
      };
      socket.onmessage = (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        this.onMessage(data);
      };
      socket.onclose = (event) => {
        this.socket = null;
        if (this.stopped) return this.onState("closed");
        if (FINAL_CODES.has(event.code)) return this.onState("denied", event.code);
        const delay = backoffDelay(this.attempt, this.baseDelay, this.maxDelay, this.random);
        this.attempt += 1;
        this.onState("waiting", delay);
        this.timer = setTimeout(() => this.connect(), delay);
      };
    }
  }

  global.HangarSocket = HangarSocket;
  global.HangarSocket.backoffDelay = backoffDelay;
  if (typeof module !== "undefined") module.exports = { HangarSocket, backoffDelay };
})(typeof window !== "undefined" ? window : globalThis);
