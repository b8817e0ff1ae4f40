// Playground: chat with a deployed model through the gateway (/v1/chat/completions), reading
// the SSE stream with fetch() + ReadableStream so tokens appear as they are generated.
// The "JSON schema and tools" panel adds response_format (json_object / json_schema) and
// tools / tool_choice / parallel_tool_calls; such answers come whole (stream: false) and are
// rendered as formatted JSON and tool calls; the message after a tool call is its result.
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

  function parseJson(text, what) {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new Error(what + " is not valid JSON: " + err.message);
    }
  }

  // The panel's fields as request fields; throws an Error (shown, nothing sent) when invalid.
  function structuredFields(form) {
    const el = form.elements;
    const fields = {};
    const format = el.response_format.value;
    if (format === "json_object") fields.response_format = { type: "json_object" };
    if (format === "json_schema") {
      const schema = parseJson(el.schema.value, "the JSON schema");
      if (!schema || typeof schema !== "object" || Array.isArray(schema)) throw new Error("the JSON schema must be an object");
      const name = el.schema_name.value.trim() || "answer";
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new Error("the schema name may use letters, digits, _ and - (64 at most)");
      fields.response_format = { type: "json_schema", json_schema: { name: name, schema: schema, strict: el.strict.checked } };
    }
    const toolsText = el.tools.value.trim();
    if (toolsText) {
      const tools = parseJson(toolsText, "the tools");
      if (!Array.isArray(tools) || tools.length === 0) throw new Error("the tools must be a non-empty JSON array");
      // Accept bare function definitions too: {"name": ..., "parameters": ...}.
      fields.tools = tools.map((tool, i) => {
        const fn = tool && tool.type === "function" ? tool.function : tool;
        if (!fn || typeof fn !== "object" || typeof fn.name !== "string" || !fn.name) throw new Error("tool " + (i + 1) + " needs a function name");
        return { type: "function", function: fn };
      });
      const choice = el.tool_choice.value;
      if (choice === "function") {
        const name = el.tool_name.value.trim();
        if (!fields.tools.some((t) => t.function.name === name)) throw new Error('no tool is named "' + name + '"');
        fields.tool_choice = { type: "function", function: { name: name } };
      } else {
        fields.tool_choice = choice;
      }
      fields.parallel_tool_calls = el.parallel_tool_calls.checked;
    }
    return fields;
  }

  // A whole (non-streamed) answer: content, formatted when it is JSON, and tool calls.
  function renderMessage(out, message) {
    out.textContent = "";
    const content = message.content || "";
    if (content) {
      let parsed;
      try { parsed = JSON.parse(content); } catch (e) { parsed = undefined; }
      if (parsed !== undefined && typeof parsed === "object" && parsed !== null) {
        const pre = document.createElement("pre");
        pre.className = "json";
        pre.dataset.json = "valid";
        pre.textContent = JSON.stringify(parsed, null, 2);
        out.appendChild(pre);
      } else {
        out.append(content);
      }
    }
    for (const call of message.tool_calls || []) {
      const fn = call.function || {};
      const box = document.createElement("div");
      box.className = "tool-call";
      box.dataset.toolCall = fn.name || "";
      const head = document.createElement("strong");
      head.textContent = "calls " + (fn.name || "?");
      const args = document.createElement("pre");
      let pretty = fn.arguments || "";
      try { pretty = JSON.stringify(JSON.parse(pretty), null, 2); } catch (e) { /* shown as sent */ }
      args.textContent = pretty;
      box.append(head, args);
      out.appendChild(box);
    }
  }

  function noteModel(form) {
    const note = document.getElementById("pg-model-note");
    const option = form.elements.model.selectedOptions[0];
    if (!note || !option) return;
    const name = option.value;
    if (option.dataset.randomWeights) {
      note.textContent = name + " runs a model with random weights (Hangar's tiny demo model): its answers are gibberish by design, not a fault. Deploy a trained model for real answers.";
    } else if (option.dataset.task === "embed") {
      note.textContent = name + " is an embedding model: it answers /v1/embeddings, not chat.";
    } else {
      note.textContent = "";
    }
    note.hidden = !note.textContent;
  }

  function setup(form) {
    const log = document.getElementById("chat-log");
    const status = document.getElementById("chat-status");
    const history = [];
    let pendingCalls = []; // tool calls of the last answer: the next message is their result
    let controller = null;
    form.elements.model.addEventListener("change", () => noteModel(form));
    noteModel(form);

    document.getElementById("chat-stop").addEventListener("click", () => controller && controller.abort());

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = form.elements.api_key.value.trim();
      const prompt = form.elements.prompt.value.trim();
      if (!key) { status.textContent = "Paste an API key or create a playground key first."; return; }
      if (!prompt) return;
      let fields;
      try {
        fields = structuredFields(form);
      } catch (err) {
        status.textContent = "error: " + err.message;
        return;
      }
      const whole = Object.keys(fields).length > 0;
      if (pendingCalls.length) {
        for (const call of pendingCalls) history.push({ role: "tool", tool_call_id: call.id, content: prompt });
        pendingCalls = [];
        bubble(log, "tool", prompt);
      } else {
        history.push({ role: "user", content: prompt });
        bubble(log, "user", prompt);
      }
      form.elements.prompt.value = "";
      const out = bubble(log, "assistant", "");
      const body = Object.assign({
        model: form.elements.model.value,
        messages: form.elements.system.value ? [{ role: "system", content: form.elements.system.value }].concat(history) : history,
        stream: !whole,
        max_tokens: Number(form.elements.max_tokens.value),
        temperature: Number(form.elements.temperature.value),
        top_p: Number(form.elements.top_p.value),
      }, fields);
      controller = new AbortController();
      status.textContent = whole ? "waiting for the answer…" : "streaming…";
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
        if (whole) {
          const answer = await response.json();
          const choice = (answer.choices && answer.choices[0]) || {};
          const message = choice.message || {};
          renderMessage(out, message);
          const turn = { role: "assistant", content: message.content || null };
          if (message.tool_calls && message.tool_calls.length) {
            turn.tool_calls = message.tool_calls;
            pendingCalls = message.tool_calls;
          }
          history.push(turn);
          const secs = (performance.now() - started) / 1000;
          status.textContent = "answered in " + secs.toFixed(2) + " s (" + (choice.finish_reason || "?") + ")" +
            (pendingCalls.length ? "; your next message is the tool's result" : "");
          return;
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
