// The model upload page: hash each file (sha256, streamed in slices, never the whole file in
// memory), open an upload through the REST API with the session, send the chunks at the offsets
// the server holds, resume after a broken chunk, then complete (the server verifies every sha256
// and registers the model). An upload left open is resumed with the same files.
(function (global) {
  "use strict";

  // --- SHA-256, incremental (FIPS 180-4). crypto.subtle.digest has no streaming form, and a
  // model file may be many GiB.
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);

  class Sha256 {
    constructor() {
      this.h = new Uint32Array([
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
      ]);
      this.w = new Uint32Array(64);
      this.block = new Uint8Array(64);
      this.filled = 0; // bytes waiting in this.block
      this.length = 0; // bytes hashed in all (a double holds up to 2^53 exactly)
    }

    compress(bytes, at) {
      const w = this.w;
      for (let i = 0; i < 16; i++) {
        const j = at + i * 4;
        w[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
      }
      for (let i = 16; i < 64; i++) {
        const a = w[i - 15];
        const b = w[i - 2];
        const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
        const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      const h = this.h;
      let [a, b, c, d, e, f, g, k] = h;
      for (let i = 0; i < 64; i++) {
        const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (k + s1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        k = g;
        g = f;
        f = e;
        e = (d + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      h[0] += a;
      h[1] += b;
      h[2] += c;
      h[3] += d;
      h[4] += e;
      h[5] += f;
      h[6] += g;
      h[7] += k;
    }

    update(bytes) {
      let at = 0;
      this.length += bytes.length;
      if (this.filled) {
        const take = Math.min(64 - this.filled, bytes.length);
        this.block.set(bytes.subarray(0, take), this.filled);
        this.filled += take;
        at = take;
        if (this.filled < 64) return this;
        this.compress(this.block, 0);
        this.filled = 0;
      }
      for (; at + 64 <= bytes.length; at += 64) this.compress(bytes, at);
      this.block.set(bytes.subarray(at), 0);
      this.filled = bytes.length - at;
      return this;
    }

    hex() {
      const bits = this.length * 8;
      const tail = new Uint8Array(this.filled < 56 ? 64 : 128);
      tail.set(this.block.subarray(0, this.filled));
      tail[this.filled] = 0x80;
      const view = new DataView(tail.buffer);
      view.setUint32(tail.length - 8, Math.floor(bits / 0x100000000));
      view.setUint32(tail.length - 4, bits >>> 0);
      for (let at = 0; at < tail.length; at += 64) this.compress(tail, at);
      return Array.from(this.h, (x) => x.toString(16).padStart(8, "0")).join("");
    }
  }

  // --- the page ------------------------------------------------------------------------------
  const SLICE = 4 * 1024 * 1024; // bytes read at a time while hashing
  const RETRIES = 6; // a chunk is tried this many times (with backoff) before the upload pauses

  function mib(n) {
    return (n / 1048576).toFixed(1) + " MiB";
  }

  // A file's name inside the model: the path under the chosen folder, or the file's own name.
  function relativeName(file) {
    const path = file.webkitRelativePath || file.name;
    const parts = path.split("/");
    return parts.length > 1 ? parts.slice(1).join("/") : path;
  }

  function init(form) {
    const api = form.dataset.api;
    const chunkBytes = Number(form.dataset.chunkBytes);
    const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
    const status = document.getElementById("up-status");
    const phase = document.getElementById("up-phase");
    const bar = document.getElementById("up-progress");
    const detail = document.getElementById("up-detail");
    const errors = document.getElementById("up-errors");
    const pause = document.getElementById("up-cancel");
    const nameInput = document.getElementById("up-name");
    const descriptionInput = document.getElementById("up-description");
    const folderInput = document.getElementById("up-folder");
    const filesInput = document.getElementById("up-files");
    let resumeId = null;
    let paused = false;

    function show(text, done, total, more) {
      status.hidden = false;
      phase.textContent = text;
      bar.max = total || 1;
      bar.value = done || 0;
      detail.textContent = more || "";
    }

    function fail(message) {
      errors.hidden = false;
      document.getElementById("up-error").textContent = message;
    }

    async function call(method, url, body, headers) {
      const response = await fetch(url, {
        method,
        body,
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json", ...(headers || {}) },
      });
      const text = await response.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_) {
        data = null;
      }
      return { ok: response.ok, status: response.status, data };
    }

    // The REST API's errors: {detail, code, errors: {field: [messages]}}.
    function errorText(answer) {
      const data = answer.data;
      if (!data || !data.detail) return `The server answered ${answer.status}.`;
      const fields = Object.entries(data.errors || {}).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`);
      return [data.detail, ...fields].join(" ");
    }

    function chosenFiles() {
      const picked = [...folderInput.files, ...filesInput.files];
      return picked.filter((f) => !relativeName(f).split("/").some((p) => p.startsWith(".")));
    }

    async function hashAll(files) {
      const total = files.reduce((n, f) => n + f.size, 0);
      let done = 0;
      const out = [];
      for (const file of files) {
        const sha = new Sha256();
        for (let at = 0; at < file.size; at += SLICE) {
          sha.update(new Uint8Array(await file.slice(at, at + SLICE).arrayBuffer()));
          done += Math.min(SLICE, file.size - at);
          show(`Checking ${relativeName(file)}`, done, total, `sha256 of ${mib(done)} of ${mib(total)}`);
        }
        out.push({ file, name: relativeName(file), size: file.size, sha256: sha.hex() });
      }
      return out;
    }

    async function sendAll(upload, entries) {
      const total = entries.reduce((n, e) => n + e.size, 0);
      const received = Object.fromEntries(upload.files.map((f) => [f.name, f.received]));
      let done = Object.values(received).reduce((a, b) => a + b, 0);
      const started = performance.now();
      const startBytes = done;
      for (const entry of entries) {
        let offset = received[entry.name] || 0;
        let failures = 0;
        while (offset < entry.size) {
          if (paused) throw new Error(`Paused at ${mib(done)} of ${mib(total)}. Resume it from the list below.`);
          const url = `${api}${upload.id}/chunk/?file=${encodeURIComponent(entry.name)}&offset=${offset}`;
          let answer;
          try {
            answer = await call("PUT", url, entry.file.slice(offset, offset + chunkBytes), {
              "Content-Type": "application/octet-stream",
            });
          } catch (_) {
            answer = { ok: false, status: 0, data: null }; // the connection broke
          }
          if (answer.ok) {
            done += answer.data.received - offset;
            offset = answer.data.received;
            failures = 0;
            const seconds = (performance.now() - started) / 1000;
            const rate = seconds > 0 ? (done - startBytes) / seconds : 0;
            show(`Sending ${entry.name}`, done, total, `${mib(done)} of ${mib(total)} at ${mib(rate)}/s`);
            continue;
          }
          if (answer.status >= 400 && answer.status < 500 && answer.status !== 409 && answer.status !== 429) {
            throw new Error(errorText(answer));
          }
          // A broken connection, a server error, a throttle or an offset the server does not
          // hold: wait, ask the server what it has, and go on from there.
          failures += 1;
          if (failures >= RETRIES) throw new Error(`Sending ${entry.name} failed ${failures} times; resume it later.`);
          show(`Sending ${entry.name}`, done, total, `connection lost; resuming (attempt ${failures + 1})…`);
          await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** failures, 8000)));
          const state = await call("GET", `${api}${upload.id}/`);
          if (!state.ok) throw new Error(errorText(state));
          const held = state.data.files.find((f) => f.name === entry.name).received;
          done += held - offset;
          offset = held;
        }
      }
    }

    async function run() {
      errors.hidden = true;
      paused = false;
      const files = chosenFiles();
      if (!files.length) throw new Error("Choose a model folder or its files.");
      const entries = await hashAll(files);
      let upload;
      if (resumeId) {
        const state = await call("GET", `${api}${resumeId}/`);
        if (!state.ok) throw new Error(errorText(state));
        upload = state.data;
        const declared = new Map(upload.files.map((f) => [f.name, f]));
        for (const e of entries) {
          const d = declared.get(e.name);
          if (!d || d.size !== e.size || d.sha256 !== e.sha256) {
            throw new Error(`${e.name} is not a file of this upload (or has changed since): choose the same files.`);
          }
        }
        if (entries.length !== declared.size) throw new Error(`This upload has ${declared.size} files: choose them all.`);
      } else {
        const body = {
          tenant: form.dataset.tenant,
          name: nameInput.value.trim(),
          description: descriptionInput.value.trim(),
          files: entries.map(({ name, size, sha256 }) => ({ name, size, sha256 })),
        };
        const created = await call("POST", api, JSON.stringify(body), { "Content-Type": "application/json" });
        if (!created.ok) throw new Error(errorText(created));
        upload = created.data;
      }
      pause.hidden = false;
      await sendAll(upload, entries);
      pause.hidden = true;
      show("Verifying", 1, 1, "The server checks every file's sha256 and reads the model's metadata…");
      const completed = await call("POST", `${api}${upload.id}/complete/`);
      if (!completed.ok) throw new Error(errorText(completed));
      show("Registered", 1, 1, `${completed.data.name} is in the catalog.`);
      global.location.assign(`${form.dataset.modelsUrl}${completed.data.id}/`);
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const button = document.getElementById("up-start");
      button.disabled = true;
      run()
        .catch((err) => fail(err.message))
        .finally(() => {
          button.disabled = false;
          pause.hidden = true;
        });
    });
    pause.addEventListener("click", () => {
      paused = true;
    });
    document.querySelectorAll("[data-resume]").forEach((button) =>
      button.addEventListener("click", () => {
        resumeId = button.dataset.resume;
        nameInput.value = button.dataset.name;
        nameInput.readOnly = true;
        show(`Resuming ${button.dataset.name}`, 0, 1, "Choose the same files again, then press Upload.");
      }),
    );
    document.querySelectorAll("[data-abort]").forEach((button) =>
      button.addEventListener("click", async () => {
        if (!global.confirm("Abort this upload? The bytes received are removed.")) return;
        const answer = await call("DELETE", `${api}${button.dataset.abort}/`);
        if (answer.ok) button.closest("tr").remove();
        else fail(errorText(answer));
      }),
    );
  }

  global.HangarUpload = { Sha256, relativeName };
  if (typeof module !== "undefined") module.exports = { Sha256, relativeName };
  if (typeof document !== "undefined") {
    document.addEventListener("DOMContentLoaded", () => {
      const form = document.getElementById("upload");
      if (form) init(form);
    });
  }
})(typeof window !== "undefined" ? window : globalThis);
