// The live dashboard: one WebSocket (/ws) brings a frame a second from the server's one feed; the
// tail (GET /logs/tail, Server-Sent Events read with fetch so it can carry the token) and the search
// box (GET /logs) are plain HTTP. Written without a framework or a build step: it is compiled into
// the binary as it is.
"use strict";

(() => {
  const body = document.body;
  const settings = {
    operator: body.dataset.audience === "operator",
    tokenRequired: body.dataset.auth === "jwt",
    search: body.dataset.search === "on",
    tail: body.dataset.tail === "on",
  };
  const HISTORY = 300;
  const TAIL_LINES = 200;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "log-analyzer.token";

  // ---- token -------------------------------------------------------------------------------
  let token = settings.tokenRequired ? sessionStorage.getItem(TOKEN_KEY) : null;
  const authHeaders = () => (token ? { Authorization: `Bearer ${token}` } : {});
  let started = false;

  function askToken(why) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    $("token-error").textContent = why || "";
    setConnection("refused", why ? `token refused: ${why}` : "token required");
    $("token").focus();
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const given = $("token").value.trim();
    if (!given) return;
    token = given;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    $("token").value = "";
    restartAll();
  });

  // ---- the feed ----------------------------------------------------------------------------
  const series = new Map(); // epoch second → {total, errors, by_service}
  let latest = null; // the last frame's non-series part
  let socket = null;
  let backoff = 500;
  let reconnectTimer = null;

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (settings.tokenRequired && !token) {
      askToken();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    socket = ws;
    ws.addEventListener("open", () => {
      if (token) ws.send(JSON.stringify({ token }));
    });
    ws.addEventListener("message", (e) => {
      if (ws !== socket) return;
      backoff = 500;
      setConnection("live", "live");
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      apply(frame);
    });
    ws.addEventListener("close", (e) => {
      if (ws !== socket) return;
      socket = null;
      if (e.code === 1008) {
        askToken(e.reason || "refused");
        return;
      }
      scheduleReconnect();
    });
    // A failed connection is followed by `close`, where the retry is scheduled.
    ws.addEventListener("error", () => {});
  }

  function scheduleReconnect() {
    // Counted where scripts can read it: a reconnect can be over before anyone looks.
    const el = $("connection");
    el.dataset.reconnects = String(Number(el.dataset.reconnects || 0) + 1);
    setConnection("reconnecting", `reconnecting in ${Math.round(backoff / 100) / 10} s`);
    reconnectTimer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000) * (0.8 + Math.random() * 0.4);
  }

  function apply(frame) {
    if (frame.type === "snapshot") series.clear();
    for (const s of frame.seconds || []) series.set(s.t, s);
    for (const t of series.keys()) if (t < frame.at - HISTORY) series.delete(t);
    latest = frame;
    render();
  }

  // ---- rendering ---------------------------------------------------------------------------
  const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const pct = (r) => `${(r * 100).toFixed(r > 0 && r < 0.001 ? 3 : 1)} %`;

  function setMetric(el, value, text) {
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.textContent = text === undefined ? (value === null || value === undefined ? "–" : String(value)) : text;
  }

  function overviewMetric(name) {
    return document.querySelector(`.overview [data-metric="${name}"]`);
  }

  function render() {
    const f = latest;
    const minute = f.minute || {};
    const ok = !minute.error;
    setMetric(overviewMetric("events_per_second"), f.events_per_second, fmt.format(f.events_per_second || 0));
    setMetric(overviewMetric("total"), ok ? minute.total : null);
    setMetric(overviewMetric("errors"), ok ? minute.errors : null);
    setMetric(overviewMetric("error_rate"), ok ? minute.error_rate : null, ok ? pct(minute.error_rate) : "–");
    setMetric(overviewMetric("source"), ok ? minute.source : null, ok ? minute.source : `unavailable: ${minute.message}`);
    const fresh = f.freshness || {};
    setMetric(overviewMetric("watermark"), fresh.watermark, fresh.watermark || "none yet");
    const lagSeconds = fresh.watermark ? Math.max(0, (Date.now() - Date.parse(fresh.watermark)) / 1000) : null;
    setMetric(overviewMetric("freshness_lag_seconds"), lagSeconds === null ? null : lagSeconds.toFixed(1));
    setMetric(overviewMetric("lag_events"), fresh.lag_events);
    renderOverallSpark(f.at);
    renderServices(f.at, ok ? minute : { by_service: [], other: { total: 0, errors: 0 } });
    renderKeywords(f.top || {});
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  }

  // Bars of `values` (one per second, oldest first) scaled to the SVG's 300×40 box.
  function bars(svg, values) {
    const max = Math.max(1, ...values);
    const out = [];
    values.forEach((v, i) => {
      if (v > 0) out.push(`M${i} 40V${40 - (v / max) * 38}`);
    });
    svg.appendChild(svgEl("path", { d: out.join(""), class: "bar" }));
    return max;
  }

  function perSecond(at, pick) {
    const values = [];
    for (let t = at - HISTORY; t < at; t++) {
      const s = series.get(t);
      values.push(s ? pick(s) : 0);
    }
    return values;
  }

  function renderOverallSpark(at) {
    const svg = $("overall-spark");
    svg.replaceChildren();
    const errors = perSecond(at, (s) => s.errors);
    const totals = perSecond(at, (s) => s.total);
    const maxErrors = bars(svg, errors);
    const maxTotal = Math.max(1, ...totals);
    const points = totals.map((v, i) => `${i},${40 - (v / maxTotal) * 38}`).join(" ");
    svg.appendChild(svgEl("polyline", { points, class: "line" }));
    svg.setAttribute(
      "aria-label",
      `last 5 minutes: at most ${maxErrors} errors and ${maxTotal} events in one second; ` +
        `${errors.reduce((a, b) => a + b, 0)} errors in all`,
    );
  }

  const rows = new Map(); // service → its row's cells
  function serviceRow(service) {
    let row = rows.get(service);
    if (row) return row;
    const tr = document.createElement("tr");
    tr.dataset.service = service;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = service;
    tr.appendChild(th);
    const cell = (metric) => {
      const td = document.createElement("td");
      td.dataset.metric = metric;
      td.dataset.service = service;
      td.dataset.window = "60s";
      tr.appendChild(td);
      return td;
    };
    row = { tr, errors: cell("errors"), total: cell("total"), rate: cell("error_rate") };
    const sparkCell = document.createElement("td");
    row.spark = svgEl("svg", { class: "spark", viewBox: "0 0 300 40", preserveAspectRatio: "none", role: "img" });
    sparkCell.appendChild(row.spark);
    tr.appendChild(sparkCell);
    rows.set(service, row);
    return row;
  }

  function renderServices(at, minute) {
    const tbody = $("services");
    const listed = minute.by_service || [];
    const seen = new Set();
    listed.forEach((s, i) => {
      const row = serviceRow(s.service);
      seen.add(s.service);
      setMetric(row.errors, s.errors);
      setMetric(row.total, s.total);
      setMetric(row.rate, s.error_rate, pct(s.error_rate));
      row.spark.replaceChildren();
      const values = perSecond(at, (sec) => (sec.by_service && sec.by_service[s.service] ? sec.by_service[s.service][1] : 0));
      const max = bars(row.spark, values);
      row.spark.setAttribute("aria-label", `${s.service}: at most ${max} errors in one second over 5 minutes`);
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
    });
    for (const [service, row] of rows) {
      if (!seen.has(service)) {
        row.tr.remove();
        rows.delete(service);
      }
    }
    $("services-empty").hidden = listed.length > 0;
    const other = minute.other || { total: 0, errors: 0 };
    $("services-other").hidden = !other.total;
    const [oe, ot] = $("services-other").querySelectorAll("[data-metric]");
    setMetric(oe, other.errors);
    setMetric(ot, other.total);
  }

  function renderKeywords(top) {
    const ol = $("keywords");
    ol.replaceChildren();
    const keywords = top.error ? [] : top.keywords || [];
    for (const k of keywords) {
      const li = document.createElement("li");
      li.append(`${k.keyword} `);
      const count = document.createElement("span");
      count.dataset.metric = "keyword_count";
      count.dataset.keyword = k.keyword;
      count.dataset.window = "5m";
      setMetric(count, k.count);
      li.appendChild(count);
      ol.appendChild(li);
    }
    $("keywords-empty").hidden = keywords.length > 0;
    $("keywords-empty").textContent = top.error ? `unavailable: ${top.message}` : "No tracked keyword in the last 5 minutes.";
  }

  function lineItem(event) {
    const li = document.createElement("li");
    const level = String(event.level || "").toLowerCase();
    const parts = [
      ["ts", event.ts],
      [`level level-${level}`, level.toUpperCase()],
      ["service", event.service],
      ["message", event.message],
    ];
    parts.forEach(([cls, text], i) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text === undefined || text === null ? "" : String(text);
      li.appendChild(span);
      if (i < parts.length - 1) li.append(" ");
    });
    li.dataset.service = event.service || "";
    return li;
  }

  // ---- tail --------------------------------------------------------------------------------
  let tailAbort = null;
  let tailBackoff = 1000;
  let tailTimer = null;

  function tailStatus(text) {
    $("tail-status").textContent = text;
  }

  function retryTail(why) {
    tailStatus(`${why}; retrying in ${Math.round(tailBackoff / 1000)} s`);
    clearTimeout(tailTimer);
    tailTimer = setTimeout(startTail, tailBackoff);
    tailBackoff = Math.min(tailBackoff * 2, 30000);
  }

  async function startTail() {
    clearTimeout(tailTimer);
    if (!settings.tail) {
      tailStatus(settings.operator ? "tail unavailable on the admin listener: see the public page" : "tail unavailable on this server");
      return;
    }
    if (settings.tokenRequired && !token) return;
    if (tailAbort) tailAbort.abort();
    const abort = new AbortController();
    tailAbort = abort;
    let response;
    try {
      response = await fetch("/logs/tail?level=error%2B", { headers: { ...authHeaders(), Accept: "text/event-stream" }, signal: abort.signal });
    } catch (_) {
      if (!abort.signal.aborted) retryTail("tail unavailable");
      return;
    }
    if (response.status === 401) {
      askToken("the tail refused the token");
      return;
    }
    if (!response.ok || !response.body) {
      retryTail(response.status === 404 ? "tail unavailable" : `tail unavailable (HTTP ${response.status})`);
      return;
    }
    tailStatus("following error lines as they are stored");
    tailBackoff = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let cut = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          cut = onTailEvent(block) || cut;
        }
      }
    } catch (_) {
      if (abort.signal.aborted) return;
    }
    if (!abort.signal.aborted) retryTail(cut ? "the server cut the tail (this page was too slow)" : "tail ended");
  }

  // One SSE block; true when it is the server's `cut`.
  function onTailEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || line === "") continue; // heartbeat comments
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (name === "cut") return true;
    if (name !== "log" || data.length === 0) return false;
    let event;
    try {
      event = JSON.parse(data.join("\n"));
    } catch (_) {
      return false;
    }
    const ol = $("tail");
    ol.insertBefore(lineItem(event), ol.firstChild);
    while (ol.children.length > TAIL_LINES) ol.lastChild.remove();
    return false;
  }

  // ---- search ------------------------------------------------------------------------------
  let pages = []; // the cursor of each page shown so far (null: the newest)
  let nextCursor = null;

  async function search(cursor) {
    const form = $("search-form");
    const params = new URLSearchParams();
    for (const name of ["q", "service", "level"]) {
      const v = form.elements[name].value.trim();
      if (v) params.set(name, v);
    }
    params.set("limit", "50");
    if (cursor) params.set("cursor", cursor);
    $("search-status").textContent = "searching…";
    let response;
    try {
      response = await fetch(`/logs?${params}`, { headers: authHeaders() });
    } catch (_) {
      $("search-status").textContent = "search unavailable (the server did not answer)";
      return false;
    }
    if (response.status === 401) {
      askToken("search refused the token");
      return false;
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {}
    if (!response.ok) {
      $("search-status").textContent = answer && answer.message ? `not searched: ${answer.message}` : `search unavailable (HTTP ${response.status})`;
      return false;
    }
    const ol = $("search-results");
    ol.replaceChildren(...(answer.events || []).map(lineItem));
    nextCursor = answer.next_cursor || null;
    const count = (answer.events || []).length;
    $("search-status").textContent = `${count} line${count === 1 ? "" : "s"} (page ${pages.length + 1}${answer.truncated ? ", truncated" : ""}; from ${answer.source || "?"})`;
    $("search-older").disabled = !nextCursor;
    return true;
  }

  $("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    pages = [];
    await search(null);
    $("search-newer").disabled = true;
  });
  $("search-older").addEventListener("click", async () => {
    if (!nextCursor) return;
    const cursor = nextCursor;
    pages.push(cursor);
    if (!(await search(cursor))) pages.pop();
    $("search-newer").disabled = pages.length === 0;
  });
  $("search-newer").addEventListener("click", async () => {
    pages.pop();
    await search(pages.length ? pages[pages.length - 1] : null);
    $("search-newer").disabled = pages.length === 0;
  });

  function setUpSearch() {
    if (settings.search) return;
    for (const el of $("search-form").elements) el.disabled = true;
    $("search-status").textContent = settings.operator
      ? "search unavailable on the admin listener: see the public page"
      : "search unavailable on this server";
  }

  // ---- operator ----------------------------------------------------------------------------
  async function pollActors() {
    try {
      const response = await fetch("/debug/actors");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const answer = await response.json();
      const actors = $("actors");
      actors.replaceChildren(
        ...(answer.actors || []).map((a) => {
          const tr = document.createElement("tr");
          const cells = [
            [null, a.actor],
            [null, a.instance],
            ["mailbox_depth", a.mailbox_depth],
            ["send_blocked_seconds", a.send_blocked_seconds.toFixed(3)],
            ["handled", a.handled],
            ["restarts", a.restarts],
          ];
          for (const [metric, value] of cells) {
            const td = document.createElement("td");
            if (metric) {
              td.dataset.metric = metric;
              td.dataset.actor = a.actor;
              td.dataset.instance = a.instance;
            }
            setMetric(td, value);
            tr.appendChild(td);
          }
          return tr;
        }),
      );
      const partitions = $("partitions");
      partitions.replaceChildren(
        ...Object.entries(answer.lag || {}).map(([name, lag]) => {
          const tr = document.createElement("tr");
          const th = document.createElement("th");
          th.scope = "row";
          th.textContent = name;
          const td = document.createElement("td");
          td.dataset.metric = "partition_lag";
          td.dataset.partition = name;
          setMetric(td, lag);
          tr.append(th, td);
          return tr;
        }),
      );
      $("operator-status").textContent = `${answer.dashboards ?? 0} dashboard(s) open`;
    } catch (e) {
      $("operator-status").textContent = `actors unavailable (${e.message})`;
    }
    setTimeout(pollActors, 2000);
  }

  // ---- start -------------------------------------------------------------------------------
  function restartAll() {
    backoff = 500;
    if (socket) {
      const old = socket;
      socket = null;
      old.close();
    }
    connect();
    startTail();
  }

  function start() {
    if (started) return;
    started = true;
    if (settings.operator) {
      $("audience-label").textContent = "· operator";
      $("operator").hidden = false;
      pollActors();
    }
    setUpSearch();
    if (settings.tokenRequired && !token) {
      askToken();
      tailStatus("waiting for a token");
      return;
    }
    connect();
    startTail();
  }

  start();
})();
