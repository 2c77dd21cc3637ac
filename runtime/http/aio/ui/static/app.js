// llama-swap UI: live updates for the server-rendered pages (no build step, no dependencies).
// Same-origin fetch/EventSource carry whatever credentials the browser already holds.
(() => {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const MAX_LOG = 400000; // characters kept in the log view

  function flash(text, bad) {
    const el = $("#flash");
    if (!el) return;
    el.textContent = text;
    el.className = bad ? "flash bad" : "flash";
    el.hidden = !text;
  }

  // ---- live sections: re-fetch the fragment when a listed event type arrives
  const timers = new Map();
  async function refresh(section) {
    timers.delete(section.id);
    try {
      const resp = await fetch(section.dataset.partial, { credentials: "same-origin" });
      if (!resp.ok) return;
      const html = await resp.text();
      const current = document.getElementById(section.id);
      if (current) current.outerHTML = html;
    } catch (err) { /* offline: the next event retries */ }
  }
  function schedule(section) {
    if (!timers.has(section.id)) timers.set(section.id, setTimeout(() => refresh(section), 150));
  }
  function liveSections() { return Array.from(document.querySelectorAll("[data-partial]")); }

  function badge(on) {
    const el = $("#live");
    if (el) { el.textContent = on ? "live" : "offline"; el.className = on ? "live on" : "live"; }
  }

  function connectEvents() {
    const source = new EventSource("/api/events");
    source.onopen = () => badge(true);
    source.onerror = () => badge(false);
    source.onmessage = (msg) => {
      let kind;
      try { kind = JSON.parse(msg.data).type; } catch (err) { return; }
      for (const section of liveSections()) {
        if ((section.dataset.events || "").split(" ").includes(kind)) schedule(section);
      }
    };
  }

  // ---- buttons that POST (load, unload, unload all, reload)
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-post]");
    if (!btn) return;
    const label = btn.textContent;
    btn.disabled = true;
    btn.textContent = btn.dataset.busy || "…";
    flash("");
    try {
      const resp = await fetch(btn.dataset.post, { method: "POST", credentials: "same-origin" });
      if (!resp.ok) {
        let text = await resp.text();
        try { const body = JSON.parse(text); text = body.error && body.error.message ? body.error.message : (body.error || text); } catch (err) { /* plain text */ }
        flash(`${btn.dataset.post}: ${resp.status} ${text}`, true);
      }
    } catch (err) {
      flash(`${btn.dataset.post}: ${err}`, true);
    } finally {
      btn.textContent = label;
      btn.disabled = false;
      for (const section of liveSections()) schedule(section);
    }
  });

  // ---- log view: stream /logs/stream/<source>
  const log = $("#log[data-stream]");
  let controller = null;
  async function streamLog(name) {
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    log.textContent = "";
    const path = name.split("/").map(encodeURIComponent).join("/");
    try {
      const resp = await fetch(log.dataset.stream + path, { credentials: "same-origin", signal: mine.signal });
      if (!resp.ok) { log.textContent = `${resp.status}: ${await resp.text()}`; return; }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      badge(true);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let text = log.textContent + value;
        if (text.length > MAX_LOG) text = text.slice(text.length - MAX_LOG);
        log.textContent = text;
        if ($("#log-follow").checked) log.scrollTop = log.scrollHeight;
      }
      if (mine === controller) { log.textContent += "\n[stream ended]\n"; badge(false); }
    } catch (err) {
      if (err.name !== "AbortError") log.textContent += `\n[${err}]\n`;
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
    $("#log-clear").addEventListener("click", () => { log.textContent = ""; });
    streamLog(log.dataset.source);
  }

  if (liveSections().length) connectEvents();
  // sections whose source publishes no event (a reload refused by the watcher) also poll
  for (const section of liveSections()) {
    const every = Number(section.dataset.poll || 0);
    if (every > 0) setInterval(() => schedule(section), every * 1000);
  }
})();
