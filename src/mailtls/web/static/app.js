// Progressive enhancement for the mailtls pages: copy buttons, print, the time left, and live
// progress pushed by the server (Server-Sent Events). Every page works without this file.
// Text from the server is only ever set with textContent, never parsed as HTML.
"use strict";

const LIVE_TYPES = [
  "connection_opened", "capabilities_sent", "starttls_requested", "starttls_refused",
  "starttls_accepted", "starttls_disrupted", "tls_established", "tls_failed", "auth",
  "username_sent", "implicit_tls_blocked", "connection_closed", "message_received",
  "session_kicked", "step_started", "step_activated", "step_finished", "step_reported",
  "pipelined_after_starttls", "data_after_disruption", "binding_collision", "event",
];
// events after which the milestones (computed by the server) may have changed
const MILESTONE_TYPES = new Set([
  "connection_opened", "step_activated", "auth", "step_reported", "binding_collision",
]);

function setText(el, value) { el.textContent = value; }

function initCopy() {
  document.querySelectorAll("button.copy[data-copy]").forEach((btn) => {
    btn.addEventListener("click", async () => {
      const src = document.getElementById(btn.dataset.copy);
      if (!src) return;
      try {
        await navigator.clipboard.writeText(src.textContent.trim());
        btn.classList.add("done");
        setText(btn, "Copied");
        setTimeout(() => { btn.classList.remove("done"); setText(btn, "Copy"); }, 2000);
      } catch (e) {
        const range = document.createRange();
        range.selectNodeContents(src);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        setText(btn, "Press Ctrl+C");
      }
    });
  });
}

function initPrint() {
  document.querySelectorAll("[data-print]").forEach((btn) => {
    btn.hidden = false;
    btn.addEventListener("click", () => window.print());
  });
}

function initCountdown() {
  const expires = document.getElementById("expires");
  if (!expires || !expires.dataset.epoch) return;
  const when = new Date(Number(expires.dataset.epoch) * 1000);
  const tick = () => {
    const left = Math.max(0, Math.round((when - Date.now()) / 1000));
    setText(expires, when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) +
      " (" + Math.floor(left / 60) + " min " + (left % 60) + " s left)");
  };
  tick();
  setInterval(tick, 1000);
}

async function refreshParts(selectors) {
  try {
    const resp = await fetch(window.location.href, { headers: { accept: "text/html" } });
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    for (const sel of selectors) {
      const fresh = doc.querySelector(sel);
      const old = document.querySelector(sel);
      if (fresh && old) old.replaceWith(document.importNode(fresh, true));
    }
  } catch (e) { /* keep the current view */ }
}

function initLive() {
  const live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  const step = Number(live.dataset.step);
  const seen = new Set(Array.from(live.querySelectorAll("li[data-id]")).map((li) => li.dataset.id));
  const last = Math.max(0, ...Array.from(seen).map(Number));
  const source = new EventSource(live.dataset.stream + "?after=" + last);
  let timer = null;
  let lastText = null;
  const onEvent = (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    const id = String(ev.id);
    if (seen.has(id)) return;
    seen.add(id);
    if (ev.step !== step) return;
    if (ev.summary && ev.summary !== lastText) {
      lastText = ev.summary;
      const empty = live.querySelector("li.empty");
      if (empty) empty.remove();
      const li = document.createElement("li");
      li.className = "ev ev-" + String(ev.type).replace(/[^a-z_]/g, "") + (ev.secret_in_clear ? " bad" : "");
      li.dataset.id = id;
      setText(li, ev.summary);
      live.appendChild(li);
      live.scrollTop = live.scrollHeight;
    }
    if (!timer && MILESTONE_TYPES.has(ev.type)) {
      timer = setTimeout(() => { timer = null; refreshParts(["#finish-box", ".armed"]); }, 600);
    }
  };
  LIVE_TYPES.forEach((t) => source.addEventListener(t, onEvent));
  source.onmessage = onEvent;
  document.body.classList.add("is-live");
}

document.addEventListener("DOMContentLoaded", () => {
  initCopy();
  initPrint();
  initCountdown();
  initLive();
});
