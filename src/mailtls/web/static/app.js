// Progressive enhancement for the mailtls pages: copy buttons, print, TTL display and live
// progress pushed by the server (Server-Sent Events). Everything works without this file.
"use strict";

function text(el, value) { el.textContent = value; }

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button.copy[data-copy]").forEach((btn) => {
    btn.addEventListener("click", async () => {
      const src = document.getElementById(btn.dataset.copy);
      if (!src) return;
      try {
        await navigator.clipboard.writeText(src.textContent.trim());
        btn.classList.add("done");
        text(btn, "Copied");
      } catch (e) {
        const range = document.createRange();
        range.selectNodeContents(src);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        text(btn, "Press Ctrl+C");
      }
    });
  });

  document.querySelectorAll("[data-print]").forEach((btn) => {
    btn.addEventListener("click", () => window.print());
  });

  const expires = document.getElementById("expires");
  if (expires && expires.dataset.epoch) {
    const when = new Date(Number(expires.dataset.epoch) * 1000);
    const tick = () => {
      const left = Math.max(0, Math.round((when - Date.now()) / 1000));
      text(expires, when.toLocaleTimeString() + " (" + Math.floor(left / 60) + " min " + (left % 60) + " s left)");
    };
    tick();
    setInterval(tick, 1000);
  }

  const live = document.getElementById("live");
  if (live && window.EventSource) {
    const step = Number(live.dataset.step);
    const seen = new Set(Array.from(live.querySelectorAll("li[data-id]")).map((li) => li.dataset.id));
    const last = Math.max(0, ...Array.from(seen).map(Number));
    const source = new EventSource(live.dataset.stream + "?after=" + last);
    let reloadTimer = null;
    source.onmessage = null;
    const onEvent = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (seen.has(String(ev.id))) return;
      seen.add(String(ev.id));
      if (ev.step !== step && ev.type !== "auth") return;
      if (ev.summary) {
        const empty = live.querySelector("li.empty");
        if (empty) empty.remove();
        const li = document.createElement("li");
        li.className = "ev ev-" + String(ev.type).replace(/[^a-z_]/g, "") + (ev.secret_in_clear ? " bad" : "");
        li.dataset.id = String(ev.id);
        text(li, ev.summary);  // textContent: never interpreted as HTML
        live.appendChild(li);
        live.scrollTop = live.scrollHeight;
      }
      // milestones and the finish button are computed by the server: refresh that part calmly
      if (!reloadTimer && (ev.type === "connection_opened" || ev.type === "step_activated" || ev.type === "auth")) {
        reloadTimer = setTimeout(() => refreshFinish(), 800);
      }
    };
    const refreshFinish = async () => {
      reloadTimer = null;
      try {
        const resp = await fetch(window.location.href, { headers: { "accept": "text/html" } });
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        for (const sel of [".finish", ".armed"]) {
          const fresh = doc.querySelector(sel);
          const old = document.querySelector(sel);
          if (fresh && old) old.replaceWith(fresh);
        }
      } catch (e) { /* keep the current view */ }
    };
    ["connection_opened", "capabilities_sent", "starttls_requested", "starttls_refused",
     "starttls_disrupted", "tls_established", "tls_failed", "auth", "username_sent",
     "implicit_tls_blocked", "connection_closed", "message_received", "session_kicked",
     "step_activated", "pipelined_after_starttls", "data_after_disruption", "event"].forEach((t) => {
      source.addEventListener(t, onEvent);
    });
  }
});
