import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { HangarSocket, backoffDelay } = require("../src/ws.js");

test("backoff doubles up to the cap, with jitter in [ceiling/2, ceiling]", () => {
  assert.equal(backoffDelay(0, 500, 30000, () => 1), 500);
  assert.equal(backoffDelay(3, 500, 30000, () => 1), 4000);
  assert.equal(backoffDelay(3, 500, 30000, () => 0), 2000);
  assert.equal(backoffDelay(20, 500, 30000, () => 1), 30000);
});

test("reconnects after a drop and stops on a final close code", async () => {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      sockets.push(this);
    }
    close() {}
  }
  const states = [];
  const client = new HangarSocket("ws://x/ws/tenant/", {
    WebSocket: FakeSocket,
    baseDelay: 1,
    random: () => 0,
    onState: (s) => states.push(s),
  });
  client.start();
  sockets[0].onopen();
  sockets[0].onclose({ code: 1006 });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(sockets.length, 2);
  sockets[1].onclose({ code: 4401 });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(sockets.length, 2);
  assert.deepEqual(states, ["connecting", "open", "waiting", "connecting", "denied"]);
});
