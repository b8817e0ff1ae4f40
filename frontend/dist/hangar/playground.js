// Playground: chat with a deployed model through the gateway (/v1/chat/completions), reading
// the SSE stream with fetch() + ReadableStream so tokens appear as they are generated.
(function () {
  "use strict";

  // Split an SSE byte stream into "data:" payloads; yields parsed JSON objects.
  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        try {
          yield JSON.parse(data);
        } catch (err) {
          /* ignore keep-alives and partial garbage */
        }
      }
    }
  }

  function bubble(log, role, text) {
    const div = document.createElement("div");
    div.className = "msg msg-" + role;
    const who = document.createElement("strong");
    who.textContent = role;
    const body = document.createElement("span");
    body.className = "content";
    body.textContent = text;
    div.append(who, " ", body);
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return body;
  }

  function setup(form) {
    const log = document.getElementById("chat-log");
    const status = document.getElementById("chat-status");
    const history = [];
    let controller = null;

    document.getElementById("chat-stop").addEventListener("click", () => controller && controller.abort());

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = form.elements.api_key.value.trim();
      const prompt = form.elements.prompt.value.trim();
      if (!key) { status.textContent = "Paste an API key or create a playground key first."; return; }
      if (!prompt) return;
      history.push({ role: "user", content: prompt });
      bubble(log, "user", prompt);
      form.elements.prompt.value = "";
      const out = bubble(log, "assistant", "");
      const body = {
        model: form.elements.model.value,
        messages: form.elements.system.value ? [{ role: "system", content: form.elements.system.value }].concat(history) : history,
        stream: true,
        max_tokens: Number(form.elements.max_tokens.value),
        temperature: Number(form.elements.temperature.value),
        top_p: Number(form.elements.top_p.value),
      };
      controller = new AbortController();
      status.textContent = "streaming…";
      const started = performance.now();
      let tokens = 0;
      let firstAt = null;
      try {
        const response = await fetch(form.dataset.endpoint, {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
          body: JSON.stringify(body),
          signal: controller.signal,
        });
        if (!response.ok) {
          let detail = response.status + " " + response.statusText;
          try { const err = await response.json(); detail = (err.error && err.error.message) || detail; } catch (e) { /* not JSON */ }
          throw new Error(detail);
        }
        for await (const chunk of sseEvents(response)) {
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (firstAt === null) firstAt = performance.now();
            tokens += 1;
            out.textContent += delta.content;
            out.dataset.chunks = String(tokens);
            log.scrollTop = log.scrollHeight;
          }
        }
        history.push({ role: "assistant", content: out.textContent });
        const secs = (performance.now() - started) / 1000;
        status.textContent = tokens + " chunks in " + secs.toFixed(2) + " s" +
          (firstAt !== null ? ", first after " + ((firstAt - started) / 1000).toFixed(2) + " s" : "");
      } catch (err) {
        out.parentElement.classList.add("msg-error");
        status.textContent = err.name === "AbortError" ? "stopped" : "error: " + err.message;
      } finally {
        controller = null;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("playground");
    if (form) setup(form);
  });
})();
