// llama-swap UI: live updates for the server-rendered pages (no build step, no dependencies).
// Every page is complete without this script; it keeps the page current (events stream,
// fragment re-fetches), counts elapsed times and countdowns between fetches, streams logs,
// runs the playground and opens captures in a dialog.  Same-origin fetch/EventSource carry
// whatever credentials the browser already holds.
(() => {
  "use strict";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const SAME = { credentials: "same-origin" };

  function flash(text, bad) {
    const el = $("#flash");
    if (!el) return;
    el.textContent = text;
    el.className = bad ? "flash bad" : "flash";
    el.hidden = !text;
  }

  async function errorText(resp) {
    let text = await resp.text();
    try {
      const body = JSON.parse(text);
      text = body.error && body.error.message ? body.error.message : (body.error || body.msg || text);
    } catch (err) { /* plain text */ }
    return `${resp.status} ${String(text).trim()}`;
  }

  // ---- colour theme: automatic (the system's), light or dark; the choice is kept
  const THEMES = ["auto", "light", "dark"];
  const themeButton = $("#theme");
  function applyTheme(name) {
    if (name === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = name;
    try { if (name === "auto") localStorage.removeItem("llama-swap-theme"); else localStorage.setItem("llama-swap-theme", name); } catch (err) { /* private mode */ }
    if (themeButton) themeButton.textContent = name === "auto" ? "theme: auto" : `theme: ${name}`;
  }
  if (themeButton) {
    themeButton.hidden = false;
    applyTheme(document.documentElement.dataset.theme || "auto");
    themeButton.addEventListener("click", () => {
      const now = document.documentElement.dataset.theme || "auto";
      applyTheme(THEMES[(THEMES.indexOf(now) + 1) % THEMES.length]);
    });
  }

  // ---- counters: [data-since] counts up, [data-left] down, from when the element appeared
  const born = new WeakMap();
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60), r = s % 60;
    if (m < 60) return `${m} min ${String(r).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }
  function tick() {
    const now = Date.now();
    for (const el of $$("[data-since], [data-left]")) {
      if (!born.has(el)) born.set(el, now);
      const passed = (now - born.get(el)) / 1000;
      if (el.dataset.since !== undefined) el.textContent = duration(Number(el.dataset.since) + passed);
      else el.textContent = duration(Number(el.dataset.left) - passed);
    }
    for (const bar of $$("progress[data-grow]")) {
      if (!born.has(bar)) born.set(bar, now);
      const start = Number(bar.getAttribute("value") || 0);
      bar.value = Math.min(bar.max, start + (now - born.get(bar)) / 1000);
    }
  }
  setInterval(tick, 1000);
  tick();

  // ---- live sections: re-fetch the fragment when a listed event type arrives (or on a timer)
  const timers = new Map();
  function busy(section) {
    const active = document.activeElement;
    return active && section.contains(active) && /^(SELECT|INPUT|TEXTAREA)$/.test(active.tagName);
  }
  async function refresh(id) {
    timers.delete(id);
    const section = document.getElementById(id);
    if (!section) return;
    if (busy(section)) { schedule(section, 1000); return; }
    try {
      const resp = await fetch(section.dataset.partial, SAME);
      if (!resp.ok) return;
      const tpl = document.createElement("template");
      tpl.innerHTML = await resp.text();
      const fresh = tpl.content.getElementById(id);
      const current = document.getElementById(id);
      if (fresh && current) { current.replaceWith(fresh); tick(); }
    } catch (err) { /* offline: the next event retries */ }
  }
  function schedule(section, delay) {
    if (!timers.has(section.id)) timers.set(section.id, setTimeout(() => refresh(section.id), delay || 150));
  }
  function liveSections() { return $$("[data-partial]"); }

  function badge(on) {
    const el = $("#live");
    if (el) { el.hidden = false; el.textContent = on ? "live" : "offline"; el.className = on ? "live on" : "live"; }
  }

  // ---- in-flight requests (shown when the events stream sends the per-request form)
  const inflight = new Map();
  function renderInflight() {
    const box = $("#inflight-box");
    if (!box) return;
    const body = $("tbody", box);
    body.textContent = "";
    const rows = Array.from(inflight.values()).sort((a, b) => String(a.timestamp).localeCompare(String(b.timestamp)));
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.inflight = r.id;
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.textContent = "Cancel";
      cancel.dataset.cancel = r.id;
      const elapsed = document.createElement("span");
      elapsed.dataset.since = String(Math.floor((r.elapsed_ms || 0) / 1000));  // counts on
      elapsed.textContent = duration((r.elapsed_ms || 0) / 1000);
      const cells = [cancel, elapsed, r.model || "", `${r.method || ""} ${r.req_path || ""}`, r.remote_ip || "", String(r.resp_bytes || 0)];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        if (i === 1 || i === 5) td.className = "num";
        if (c instanceof Node) td.append(c); else td.textContent = c;
        tr.append(td);
      });
      body.append(tr);
    }
    box.hidden = rows.length === 0;
  }
  function onInflight(data) {
    if (!data || !data.operation) return; // the count-only form: nothing to list
    if (data.operation === "snapshot") {
      inflight.clear();
      for (const r of data.requests || []) inflight.set(r.id, r);
    } else if (data.operation === "upsert" && data.request) {
      inflight.set(data.request.id, data.request);
    } else if (data.operation === "remove") {
      inflight.delete(data.id);
    }
    renderInflight();
  }

  // ---- profiles (hidden unless the server has the profiles API and profiles)
  const profileBox = $("#profile-box");
  async function loadProfiles() {
    if (!profileBox) return;
    try {
      const resp = await fetch("/api/profiles", SAME);
      if (!resp.ok) { profileBox.hidden = true; return; }
      const doc = await resp.json();
      const list = Array.isArray(doc.profiles) ? doc.profiles : [];
      if (!list.length) { profileBox.hidden = true; return; }
      const select = $("#profile");
      select.textContent = "";
      const none = new Option("none", "");
      select.append(none);
      for (const p of list) {
        const opt = new Option(p.id, p.id);
        if (p.description) opt.title = p.description;
        select.append(opt);
      }
      select.value = doc.active || "";
      profileBox.hidden = false;
    } catch (err) { profileBox.hidden = true; }
  }
  if (profileBox) {
    $("#profile").addEventListener("change", async (ev) => {
      const name = ev.target.value || null;
      try {
        const resp = await fetch("/api/profiles/active", { ...SAME, method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) });
        if (!resp.ok) flash(`profile: ${await errorText(resp)}`, true);
      } catch (err) { flash(`profile: ${err}`, true); }
      loadProfiles();
    });
    loadProfiles();
  }

  function connectEvents() {
    const source = new EventSource("/api/events");
    source.onopen = () => badge(true);
    source.onerror = () => badge(false);
    source.onmessage = (msg) => {
      let kind, data;
      try {
        const frame = JSON.parse(msg.data);
        kind = frame.type;
        data = typeof frame.data === "string" ? JSON.parse(frame.data) : frame.data;
      } catch (err) { return; }
      if (kind === "inflight") onInflight(data);
      if (kind === "profileChanged" && profileBox && !profileBox.hidden) $("#profile").value = (data && data.active) || "";
      for (const section of liveSections()) {
        if ((section.dataset.events || "").split(" ").includes(kind)) schedule(section);
      }
    };
  }

  // ---- buttons that POST (load, unload, unload all, reload, cancel)
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-post], button[data-cancel]");
    if (!btn) return;
    const url = btn.dataset.post || `/api/inflight/${encodeURIComponent(btn.dataset.cancel)}/cancel`;
    const label = btn.textContent;
    btn.disabled = true;
    btn.textContent = btn.dataset.busy || "…";
    flash("");
    try {
      const resp = await fetch(url, { ...SAME, method: "POST" });
      if (!resp.ok) flash(`${url}: ${await errorText(resp)}`, true);
    } catch (err) {
      flash(`${url}: ${err}`, true);
    } finally {
      btn.textContent = label;
      btn.disabled = false;
      for (const section of liveSections()) schedule(section);
    }
  });

  // ---- activity: filters apply on change; captures open in a dialog
  document.addEventListener("change", (ev) => {  // delegated: live refreshes replace the form
    const select = ev.target.closest("select[data-autosubmit]");
    if (select && select.form) select.form.submit();
  });
  document.addEventListener("click", async (ev) => {
    const link = ev.target.closest("a[data-capture]");
    const dialog = $("#capture-dialog");
    if (!link || !dialog || typeof dialog.showModal !== "function") return;
    ev.preventDefault();
    const content = $(".content", dialog);
    content.textContent = "Loading…";
    if (!dialog.open) dialog.showModal();
    try {
      const resp = await fetch(`/ui/capture?id=${encodeURIComponent(link.dataset.capture)}&partial=1`, SAME);
      const tpl = document.createElement("template");
      tpl.innerHTML = await resp.text();
      content.textContent = "";
      content.append(tpl.content);
    } catch (err) { content.textContent = String(err); }
  });

  // ---- log view: stream /logs/stream/<source>; lines kept apart, ANSI colours, a filter
  const ANSI = /\x1b\[([0-9;]*)m/g;
  const OTHER_ESCAPES = /\x1b\[[0-9;?]*[A-Za-ln-z]|\x1b[()][A-Z0-9]/g;
  function ansiLine(text) {
    const line = document.createElement("span");
    line.className = "line";
    text = text.replace(OTHER_ESCAPES, "");
    let style = { b: false, d: false, i: false, u: false, fg: "" };
    let last = 0, m;
    const emit = (piece) => {
      if (!piece) return;
      const cls = [style.b && "a-b", style.d && "a-d", style.i && "a-i", style.u && "a-u", style.fg && `a-${style.fg}`].filter(Boolean);
      if (!cls.length) { line.append(piece); return; }
      const span = document.createElement("span");
      span.className = cls.join(" ");
      span.textContent = piece;
      line.append(span);
    };
    ANSI.lastIndex = 0;
    while ((m = ANSI.exec(text)) !== null) {
      emit(text.slice(last, m.index));
      last = ANSI.lastIndex;
      const codes = m[1] === "" ? [0] : m[1].split(";").map(Number);
      for (let k = 0; k < codes.length; k++) {
        const c = codes[k];
        if (c === 0) style = { b: false, d: false, i: false, u: false, fg: "" };
        else if (c === 1) style.b = true;
        else if (c === 2) style.d = true;
        else if (c === 3) style.i = true;
        else if (c === 4) style.u = true;
        else if (c === 22) { style.b = false; style.d = false; }
        else if (c === 23) style.i = false;
        else if (c === 24) style.u = false;
        else if (c === 39) style.fg = "";
        else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) style.fg = String(c);
        else if (c === 38 || c === 48) k += codes[k + 1] === 5 ? 2 : 4; // 256/true colour: skipped
      }
    }
    emit(text.slice(last));
    return line;
  }

  const log = $("#log[data-stream]");
  const MAX_LINES = 5000;
  const logView = { lines: [], partial: "", filter: "", partialEl: null };
  function matches(text) {
    return !logView.filter || text.replace(OTHER_ESCAPES, "").replace(ANSI, "").toLowerCase().includes(logView.filter);
  }
  function showCount() {
    const el = $("#log-count");
    if (!el) return;
    if (!logView.filter) { el.textContent = ""; return; }
    const shown = logView.lines.filter(matches).length;
    el.textContent = `${shown} of ${logView.lines.length} lines`;
  }
  function renderPartial() {
    if (logView.partialEl) logView.partialEl.remove();
    logView.partialEl = null;
    if (logView.partial && matches(logView.partial)) {
      logView.partialEl = ansiLine(logView.partial);
      log.append(logView.partialEl);
    }
  }
  function rebuildLog() {
    log.textContent = "";
    logView.partialEl = null;
    const frag = document.createDocumentFragment();
    for (const line of logView.lines) if (matches(line)) frag.append(ansiLine(line));
    log.append(frag);
    renderPartial();
    showCount();
  }
  function addLogText(text) {
    const parts = (logView.partial + text.replace(/\r\n/g, "\n")).split("\n");
    logView.partial = parts.pop();
    if (logView.partialEl) { logView.partialEl.remove(); logView.partialEl = null; }
    const frag = document.createDocumentFragment();
    for (const line of parts) {
      logView.lines.push(line);
      if (matches(line)) frag.append(ansiLine(line));
    }
    log.append(frag);
    const extra = logView.lines.length - MAX_LINES;
    if (extra > 0) {
      logView.lines.splice(0, extra);
      if (logView.filter) rebuildLog();
      else for (let k = 0; k < extra && log.firstChild; k++) log.firstChild.remove();
    }
    renderPartial();
    if (logView.filter) showCount();
    if ($("#log-follow").checked) log.scrollTop = log.scrollHeight;
  }

  let controller = null;
  async function streamLog(name) {
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    logView.lines = [];
    logView.partial = "";
    rebuildLog();
    const path = name.split("/").map(encodeURIComponent).join("/");
    try {
      const resp = await fetch(log.dataset.stream + path, { ...SAME, signal: mine.signal });
      if (!resp.ok) { addLogText(`${await errorText(resp)}\n`); return; }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      badge(true);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        addLogText(value);
      }
      if (mine === controller) { addLogText(`${logView.partial ? "\n" : ""}[stream ended]\n`); badge(false); }
    } catch (err) {
      if (err.name !== "AbortError") addLogText(`\n[${err}]\n`);
    }
  }
  if (log) {
    const select = $("#log-source");
    select.addEventListener("change", () => {
      const url = new URL(location.href);
      url.searchParams.set("source", select.value);
      history.replaceState(null, "", url);
      streamLog(select.value);
    });
    let typing = null;
    $("#log-filter").addEventListener("input", (ev) => {
      clearTimeout(typing);
      typing = setTimeout(() => { logView.filter = ev.target.value.trim().toLowerCase(); rebuildLog(); }, 120);
    });
    $("#log-clear").addEventListener("click", () => { logView.lines = []; logView.partial = ""; rebuildLog(); });
    streamLog(log.dataset.source);
  }

  // ---- playground: chat (streamed) and embeddings through the proxy's own API
  const pg = $("#pg-form");
  if (pg) {
    const KEY = "llama-swap-api-key";
    const keyInput = $("#pg-key");
    const session = "lspg-" + Math.random().toString(36).slice(2, 7).padEnd(5, "0");
    const chatLog = $("#pg-log");
    const input = $("#pg-input");
    const progress = $("#pg-progress");
    const stats = $("#pg-stats");
    const messages = [];
    let running = null;
    if (keyInput) {
      try { keyInput.value = sessionStorage.getItem(KEY) || ""; } catch (err) { /* storage off */ }
      keyInput.addEventListener("change", () => { try { sessionStorage.setItem(KEY, keyInput.value); } catch (err) { /* storage off */ } });
    }
    function headers() {
      const h = { "Content-Type": "application/json", "X-Session-ID": session };
      const key = keyInput ? keyInput.value.trim() : "";
      if (key) h.Authorization = `Bearer ${key}`;
      return h;
    }
    function bubble(role, text) {
      const el = document.createElement("div");
      el.className = `msg ${role}`;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = role === "user" ? "you" : role === "error" ? "error" : $("#pg-model").value;
      const body = document.createElement("span");
      body.className = "text";
      body.textContent = text || "";
      el.append(who, body);
      chatLog.append(el);
      chatLog.scrollTop = chatLog.scrollHeight;
      return body;
    }
    function setProgress(text) {
      progress.hidden = !text;
      $(".text", progress).textContent = text || "";
    }
    function busyUi(on) {
      $("#pg-send").disabled = on;
      $("#pg-stop").disabled = !on;
    }

    // The proxy's loading-state prelude arrives as reasoning_content: a separator,
    // "llama-swap loading model: <id>", dots, queue positions and remarks, then
    // "Done! (<s>s)" and a separator.  It is shown as progress, not as the answer.
    const SEPARATOR = "━━━━━";
    function loaderStatus(text, started) {
      const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
      const model = (lines.find((l) => l.startsWith("llama-swap loading model:")) || "").replace("llama-swap loading model:", "").trim();
      const queue = lines.filter((l) => l.startsWith("Queue position:")).pop();
      const remark = lines.filter((l) => l !== SEPARATOR && !/^\.+$/.test(l) && !l.startsWith("llama-swap loading") && !l.startsWith("Queue position")).pop();
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      return [`Loading ${model || "model"}… ${secs} s`, queue, remark].filter(Boolean).join(" · ");
    }

    async function chat(model, text) {
      messages.push({ role: "user", content: text });
      bubble("user", text);
      const out = bubble("assistant", "");
      const started = Date.now();
      let reasoning = "", answer = "", loader = "unknown", firstToken = 0, usage = null, timings = null;
      setProgress(`Waiting for ${model}…`);
      const resp = await fetch("/v1/chat/completions", {
        ...SAME, method: "POST", headers: headers(), signal: running.signal,
        body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true } }),
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      const handle = (doc) => {
        if (doc.error) throw new Error(doc.error.message || JSON.stringify(doc.error));
        if (doc.usage) usage = doc.usage;
        if (doc.timings) timings = doc.timings;
        const delta = (doc.choices && doc.choices[0] && doc.choices[0].delta) || {};
        if (delta.reasoning_content) {
          reasoning += delta.reasoning_content;
          if (loader === "unknown") {
            if (reasoning.startsWith(SEPARATOR)) loader = "loading";
            else if (!SEPARATOR.startsWith(reasoning)) loader = "none";
          }
          if (loader === "loading") {
            const end = reasoning.indexOf(SEPARATOR, SEPARATOR.length);
            setProgress(loaderStatus(end < 0 ? reasoning : reasoning.slice(0, end), started));
            if (end < 0) return;
            reasoning = reasoning.slice(end + SEPARATOR.length).replace(/^\n+/, "");
            loader = "done";
          }
        }
        if (delta.content) {
          if (!firstToken) firstToken = Date.now();
          answer += delta.content;
          setProgress("");
        }
        const thinking = loader === "none" || loader === "done" ? reasoning.trim() : "";
        out.textContent = (thinking ? `(thinking) ${thinking}\n\n` : "") + answer;
        chatLog.scrollTop = chatLog.scrollHeight;
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        let cut;
        while ((cut = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, cut).trim();
          buffered = buffered.slice(cut + 1);
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (!payload || payload === "[DONE]") continue;
          try { handle(JSON.parse(payload)); } catch (err) { if (err instanceof SyntaxError) continue; throw err; }
        }
      }
      setProgress("");
      messages.push({ role: "assistant", content: answer });
      const parts = [];
      const tokens = (timings && timings.predicted_n) || (usage && usage.completion_tokens);
      if (tokens) parts.push(`${tokens} tokens`);
      if (timings && timings.predicted_per_second > 0) parts.push(`${timings.predicted_per_second.toFixed(1)} tokens/s (reported)`);
      else if (tokens && firstToken) parts.push(`${(tokens / Math.max(0.001, (Date.now() - firstToken) / 1000)).toFixed(1)} tokens/s (measured)`);
      parts.push(`${((Date.now() - started) / 1000).toFixed(1)} s total`);
      stats.textContent = parts.join(" · ");
    }

    async function embed(model, text) {
      bubble("user", text);
      setProgress(`Waiting for ${model}… (it loads if it must)`);
      const resp = await fetch("/v1/embeddings", {
        ...SAME, method: "POST", headers: headers(), signal: running.signal,
        body: JSON.stringify({ model, input: text }),
      });
      setProgress("");
      if (!resp.ok) throw new Error(await errorText(resp));
      const doc = await resp.json();
      const vectors = (doc.data || []).map((d) => d.embedding || []);
      const first = vectors[0] || [];
      const preview = first.slice(0, 8).map((x) => Number(x).toFixed(4)).join(", ");
      const out = bubble("assistant", `${vectors.length} vector${vectors.length === 1 ? "" : "s"} of ${first.length} dimensions\n[${preview}${first.length > 8 ? ", …" : ""}]`);
      out.parentElement.classList.add("embedding");
      stats.textContent = doc.usage ? `${doc.usage.prompt_tokens} input tokens` : "";
    }

    pg.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text || running) return;
      input.value = "";
      stats.textContent = "";
      running = new AbortController();
      busyUi(true);
      const model = $("#pg-model").value;
      try {
        if ($("#pg-mode").value === "embeddings") await embed(model, text);
        else await chat(model, text);
      } catch (err) {
        setProgress("");
        if (err.name !== "AbortError") bubble("error", String(err.message || err));
        else stats.textContent = "stopped";
      } finally {
        running = null;
        busyUi(false);
      }
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); pg.requestSubmit(); }
    });
    $("#pg-stop").addEventListener("click", () => { if (running) running.abort(); });
    $("#pg-clear").addEventListener("click", () => { messages.length = 0; chatLog.textContent = ""; stats.textContent = ""; });
  }

  if (liveSections().length || $("#inflight-box")) connectEvents();
  // sections whose changes publish no event (queue arrivals, a reload refused by the watcher)
  // also poll while the page is visible, as often as the current fragment asks (data-poll, s)
  for (const first of liveSections()) {
    const id = first.id;
    const again = () => {
      const current = document.getElementById(id);
      const every = current ? Number(current.dataset.poll || 0) : 0;
      if (every <= 0) return;
      setTimeout(() => {
        const now = document.getElementById(id);
        if (now && document.visibilityState === "visible") schedule(now);
        again();
      }, every * 1000);
    };
    again();
  }
})();
