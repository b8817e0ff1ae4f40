// Dashboard page glue: live updates over the websocket, uPlot charts, copy buttons.
// Pages opt in with data attributes; nothing here knows about page layout beyond them.
(function () {
  "use strict";

  const MAX_POINTS = 300;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.from((root || document).querySelectorAll(sel)); }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toFixed(digits === undefined ? 1 : digits);
  }

  function setField(root, name, text) {
    $all('[data-field="' + name + '"]', root).forEach((el) => {
      el.textContent = text;
      if (name === "phase") el.className = "badge phase-" + String(text).toLowerCase();
    });
  }

  // The progress steps come from the page (an object {order, ready, failed} of step values, rendered
  // from ProgressStep in controlplane/deployments/choices.py): the reconciler writes exactly these.
  function progressSteps() {
    const el = document.getElementById("progress-steps");
    return el ? JSON.parse(el.textContent) : null;
  }

  function showProgress(root, progress, phase) {
    const list = $("[data-progress]", root);
    const steps = progressSteps();
    if (!list || !steps) return;
    let step = progress && steps.order.includes(progress.step) ? progress.step : null;
    if (phase === "Running") step = steps.ready;
    const failed = (progress && progress.step === steps.failed) || phase === "Failed";
    list.classList.toggle("failed", failed);
    const index = step ? steps.order.indexOf(step) : -1;
    $all("li[data-step]", list).forEach((li) => {
      const i = steps.order.indexOf(li.dataset.step);
      li.classList.toggle("done", index >= 0 && (i < index || step === steps.ready));
      li.classList.toggle("current", i === index && step !== steps.ready);
    });
    const detail = $("[data-progress-detail]", root);
    if (detail && progress) detail.textContent = progress.detail || "";
  }

  // ----------------------------------------------------------------- charts

  const CHARTS = {
    tps: { title: "tokens/s", series: [["tokens_per_second", "tokens/s", "#2563eb"]] },
    latency: {
      title: "latency (ms)",
      series: [["latency_p50", "p50", "#16a34a"], ["latency_p95", "p95", "#dc2626"]],
      scale: 1000,
    },
    ttft: { title: "time to first token (ms)", series: [["ttft_p50", "TTFT p50", "#9333ea"]], scale: 1000 },
    inflight: { title: "in flight", series: [["in_flight", "in flight", "#ea580c"]] },
  };

  class Chart {
    constructor(el, spec, initial) {
      this.el = el;
      this.spec = spec;
      this.data = [[]].concat(spec.series.map(() => []));
      if (initial && initial.ts) {
        initial.ts.forEach((ts, i) => this.push(ts, spec.series.map(([key]) => initial[key] ? initial[key][i] : null)));
      }
      this.points = 0;
      this.plot = new uPlot(this.options(), this.data, el);
      el.dataset.points = String(this.data[0].length);
      window.addEventListener("resize", () => this.plot.setSize(this.size()));
    }

    size() {
      return { width: Math.max(240, this.el.clientWidth || 300), height: 180 };
    }

    options() {
      const s = this.size();
      return {
        title: this.spec.title,
        width: s.width,
        height: s.height,
        scales: { x: { time: true } },
        series: [{}].concat(this.spec.series.map(([, label, stroke]) => ({ label, stroke, width: 2, spanGaps: true }))),
        axes: [{}, { size: 50 }],
      };
    }

    push(ts, values) {
      const scale = this.spec.scale || 1;
      this.data[0].push(ts);
      values.forEach((v, i) => this.data[i + 1].push(v === null || v === undefined ? null : v * scale));
      if (this.data[0].length > MAX_POINTS) this.data.forEach((col) => col.shift());
    }

    add(payload) {
      this.push(payload.ts, this.spec.series.map(([key]) => payload[key]));
      this.plot.setData(this.data);
      this.el.dataset.points = String(this.data[0].length);
    }
  }

  // ----------------------------------------------------------------- pages

  function replicaRow(r) {
    const tr = document.createElement("tr");
    tr.dataset.replica = r.id;
    [r.name, r.state, r.endpoint || "", r.tokens_per_second === undefined ? "–" : fmt(r.tokens_per_second),
      r.in_flight === undefined ? "–" : fmt(r.in_flight, 0), r.last_error || ""].forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 3 || i === 4) td.className = "num";
      if (i === 1) {
        const span = document.createElement("span");
        span.className = "badge state-" + text;
        span.textContent = text;
        td.appendChild(span);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    });
    return tr;
  }

  function eventItem(ev) {
    const li = document.createElement("li");
    li.className = "event event-" + String(ev.type).toLowerCase();
    li.dataset.event = ev.id;
    const time = document.createElement("time");
    time.textContent = new Date(ev.created_at).toLocaleTimeString();
    const reason = document.createElement("strong");
    reason.textContent = ev.reason;
    const message = document.createElement("span");
    message.textContent = " " + ev.message + (ev.actor ? " — " + ev.actor : "");
    li.append(time, " ", reason, message);
    return li;
  }

  function deploymentPage(root) {
    const initialEl = document.getElementById("chart-data");
    const initial = initialEl ? JSON.parse(initialEl.textContent) : {};
    const charts = {};
    $all("[data-chart]", root).forEach((el) => {
      const spec = CHARTS[el.dataset.chart];
      if (spec && typeof uPlot !== "undefined") charts[el.dataset.chart] = new Chart(el, spec, initial);
    });
    window.hangarCharts = charts;  // for tests and debugging in the console
    const id = Number(root.dataset.deployment);
    const progressEl = document.getElementById("progress-data");
    const phaseEl = $('[data-field="phase"]', root);
    showProgress(root, progressEl ? JSON.parse(progressEl.textContent) : null, phaseEl ? phaseEl.textContent.trim() : null);
    return function onMessage(msg) {
      if (msg.deployment !== undefined && Number(msg.deployment) !== id) return;
      if (msg.kind === "metrics") {
        Object.values(charts).forEach((c) => c.add(msg));
        setField(root, "tps", fmt(msg.tokens_per_second));
        setField(root, "in_flight", fmt(msg.in_flight, 0));
      }
      const rows = msg.kind === "metrics" ? msg.replicas : msg.replica_rows;
      if (Array.isArray(rows)) {
        const body = $("#replicas", root);
        if (body && rows.length) body.replaceChildren(...rows.map(replicaRow));
      }
      if (msg.kind === "deployment" && msg.deleted) {
        setField(root, "phase", "Deleted");
        setField(root, "phase_message", "This deployment and its replicas were removed.");
        return;
      }
      if (msg.kind === "deployment" || msg.kind === "metrics") {
        if (msg.phase) setField(root, "phase", msg.phase);
        if (msg.ready_replicas !== undefined) setField(root, "ready_replicas", String(msg.ready_replicas));
        if (msg.replicas !== undefined && !Array.isArray(msg.replicas)) setField(root, "replicas", String(msg.replicas));
        if (msg.progress || msg.phase) showProgress(root, msg.progress, msg.phase);
        if (msg.phase_message !== undefined) setField(root, "phase_message", msg.phase_message);
      }
      if (msg.kind === "event" && msg.event) {
        const list = $("#events", root);
        if (list && !$('[data-event="' + msg.event.id + '"]', list)) list.prepend(eventItem(msg.event));
      }
    };
  }

  function overviewPage(root) {
    return function onMessage(msg) {
      const row = msg.deployment !== undefined && $('[data-deployment-row="' + msg.deployment + '"]', root);
      if (!row) return;
      if (msg.phase) setField(row, "phase", msg.phase);
      if (msg.ready_replicas !== undefined) setField(row, "ready_replicas", String(msg.ready_replicas));
      if (typeof msg.replicas === "number") setField(row, "replicas", String(msg.replicas));
      if (msg.kind === "metrics") {
        setField(row, "tps", fmt(msg.tokens_per_second));
        setField(row, "error_rate", msg.error_rate === null || msg.error_rate === undefined ? "–" : fmt(msg.error_rate * 100) + "%");
      }
    };
  }

  function connectLive() {
    const root = $("[data-ws]");
    if (!root || typeof HangarSocket === "undefined") {
      const idle = $(".ws-state");
      if (idle) idle.hidden = true;  // nothing live on this page
      return;
    }
    const handler = root.dataset.deployment ? deploymentPage(root) : overviewPage(root);
    const indicator = $("[data-ws-state]");
    const socket = new HangarSocket(root.dataset.ws, {
      // The server re-scoped this socket to a new role: render the page's controls for it.
      onMessage: (msg) => (msg.kind === "access" ? window.location.reload() : handler(msg)),
      onState: (state) => {
        if (indicator) {
          indicator.dataset.wsState = state;
          indicator.textContent = state === "open" ? "live" : state;
        }
        document.body.dataset.wsState = state;
      },
    });
    socket.start();
    window.hangarSocket = socket;
  }

  function copyButtons() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("[data-copy]");
      if (!button) return;
      const source = document.querySelector(button.dataset.copy);
      const text = source ? (source.value !== undefined ? source.value : source.textContent) : "";
      const done = () => { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, () => {});
      } else if (source && source.select) {
        source.select();
        document.execCommand("copy");
        done();
      }
    });
  }

  // Forms with data-confirm ask before submitting (the server still checks permissions).
  function confirmations() {
    document.addEventListener("submit", (event) => {
      const form = event.target.closest("form[data-confirm]");
      if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
    }, true);
  }

  // Selects with data-submit-on-change submit their form when changed (the tenant switcher);
  // a listener here, not an inline handler, which the Content-Security-Policy would refuse.
  function submitOnChange() {
    document.addEventListener("change", (event) => {
      const select = event.target.closest("[data-submit-on-change]");
      if (select && select.form) select.form.submit();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    confirmations();
    submitOnChange();
    copyButtons();
    connectLive();
  });
})();
