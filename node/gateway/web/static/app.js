// OpenTrack tracking page: looks a number up through the gateway's
// verified JSON API, follows the parcel's handoffs to the carriers of its
// later legs, and keeps the joined timeline current over Server-Sent
// Events. Plain JavaScript, no dependencies; text is set with
// textContent only, never parsed as HTML. The texts come from the page
// (the gateway picks the language from Accept-Language).
"use strict";
(() => {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const LANG = document.documentElement.lang || undefined;
  const MAX_LEGS = 4; // as the gateway's summary: a loop of handoffs must end

  const form = document.getElementById("track");
  const input = document.getElementById("n");
  const button = form.querySelector("button");
  const statusEl = document.getElementById("status");
  const results = document.getElementById("results");

  let source = null; // the EventSource of the numbers shown
  let watched = ""; // its query
  // cards: one per carrier the entered number is at. A card's legs are
  // the parcel at that carrier, then each carrier it was handed over to.
  let cards = [];

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined || c === "") continue;
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }

  const fill = (text, vars) => String(text).replace(/\{(\w+)\}/g, (m, k) => (vars && k in vars ? String(vars[k]) : m));
  const ui = (key, vars) => fill(T.ui[key] || key, vars);
  const words = (s) => T.status[s] || String(s).replace(/_/g, " ");
  const place = (loc) => [loc && loc.facility, loc && loc.city, loc && loc.country].filter(Boolean).join(", ");
  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toLocaleString(LANG, { dateStyle: "medium", timeStyle: "short" });
  }
  function setStatus(text) { statusEl.textContent = text; }
  function problemText(code, message) {
    if (T.problem[code]) return T.problem[code];
    return ui("failed", { code }) + (message ? " " + message : "");
  }

  function newLeg(v) {
    return { view: v, cids: new Set(v.events.map((e) => e.cid)), fresh: new Set(), ready: v.events.length > 0 };
  }
  const legName = (leg) => leg.view.carrier_name || leg.view.carrier;
  function nameOf(code) {
    for (const c of cards) for (const l of c.legs) if (l.view.carrier === code && l.view.carrier_name) return l.view.carrier_name;
    return code;
  }

  // nextHandoff is the handoff of the leg's newest event that has one.
  function nextHandoff(leg) {
    if (!leg.view.verified) return null;
    let h = null, seq = -1;
    for (const e of leg.view.events) if (e.handoff && e.seq > seq) { h = e.handoff; seq = e.seq; }
    return h;
  }

  // follow looks up the legs the card's last leg hands over to, each
  // verified by the gateway against its own carrier.
  async function follow(card) {
    while (card.legs.length < MAX_LEGS) {
      const h = nextHandoff(card.legs[card.legs.length - 1]);
      if (!h || card.legs.some((l) => l.view.carrier === h.carrier && l.view.number === h.number)) return;
      let next = { number: h.number, carrier: h.carrier, events: [], error: "not_found", missing: true };
      try {
        const resp = await fetch("/v1/track", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ numbers: [h.number] }),
        });
        const body = await resp.json().catch(() => null);
        if (resp.ok && Array.isArray(body)) {
          next = body.find((v) => v.carrier === h.carrier) || next;
        } else {
          next.error = (body && body.code) || "unavailable";
          next.message = body && body.detail;
        }
      } catch (e) {
        next.error = "unavailable";
        next.message = e.message;
      }
      card.legs.push(newLeg(next));
      render(card);
    }
  }

  // render draws one card: a badge per leg, then every verified leg's
  // events in one timeline, newest first, each marked with its carrier.
  function render(card) {
    const root = card.legs[0].view;
    const id = "parcel-" + (root.carrier || "none");
    const meta = el("dl", { class: "meta" });
    card.legs.forEach((leg, i) => {
      const v = leg.view;
      if (!v.carrier) return;
      let badge;
      if (v.verified) badge = el("span", { class: "badge ok", "data-testid": "verified" }, ui("verified"));
      else if (v.error === "not_found") badge = el("span", { class: "badge none", "data-testid": "no-scans" }, ui("no_scans"));
      else badge = el("span", { class: "badge bad", "data-testid": "not-verified" }, ui("not_verified"));
      meta.append(el("dt", {}, ui("carrier")),
        el("dd", { class: "carrier", "data-carrier": v.carrier }, (i > 0 ? "→ " : "") + legName(leg)),
        el("dt", {}, ui("verification")), el("dd", {}, badge));
    });
    const art = el("article", { class: "parcel", id, "aria-labelledby": id + "-h" }, el("h2", { id: id + "-h" }, root.number), meta);
    const events = [];
    card.legs.forEach((leg, i) => {
      const v = leg.view;
      if (i === 0 && v.error) {
        art.append(el("p", { class: v.error === "not_found" ? "notice" : "problem" }, problemText(v.error, v.error === "not_found" ? "" : v.message)));
      } else if (v.missing) {
        art.append(el("p", { class: "notice" }, ui("leg_missing", { carrier: legName(leg), number: v.number, why: problemText("not_found") })));
      } else if (v.error && v.error !== "not_found") {
        art.append(el("p", { class: "problem" }, ui("leg_failed", { carrier: legName(leg), code: v.error })));
      }
      if (leg.warning) art.append(el("p", { class: "problem" }, leg.warning));
      if (v.verified) for (const e of v.events) events.push({ e, leg, i });
    });
    events.sort((a, b) => (Date.parse(b.e.time) - Date.parse(a.e.time)) || (b.i - a.i) || (b.e.seq - a.e.seq));
    if (events.length > 0) {
      art.append(el("p", { class: "current" }, words(events[0].e.status)));
      const eta = events.find((x) => x.e.eta);
      if (eta && events[0].e.status !== "delivered") art.append(el("p", { class: "eta" }, ui("eta", { when: when(eta.e.eta) })));
      const list = el("ol", { class: "timeline", "aria-label": ui("history") });
      for (const { e, leg } of events) {
        const fresh = leg.fresh.has(e.cid);
        const status = words(e.status) + (e.reason ? " (" + e.reason.replace(/_/g, " ") + ")" : "");
        list.append(el("li", { "data-status": e.status, "data-carrier": leg.view.carrier, class: fresh ? "new" : null },
          el("span", { class: "st" }, status, fresh ? el("span", { class: "fresh" }, ui("new")) : null),
          el("span", { class: "leg" }, legName(leg)),
          el("time", { class: "when", datetime: e.time }, when(e.time)),
          place(e.location) ? el("span", { class: "where" }, place(e.location)) : null,
          e.description ? el("span", { class: "desc", lang: e.lang || null }, e.description) : null,
          e.handoff ? el("span", { class: "handoff" }, ui("handoff", { carrier: nameOf(e.handoff.carrier), number: e.handoff.number })) : null));
      }
      art.append(list);
    }
    for (const leg of card.legs) {
      const v = leg.view;
      if (v.verified && v.key_id) {
        art.append(el("p", { class: "keyinfo" }, ui("keyinfo", { key: v.key_id.slice(0, 16), carrier: legName(leg), head: v.head })));
      }
    }
    const old = document.getElementById(id);
    if (old) old.replaceWith(art); else results.append(art);
  }

  function stopLive() {
    if (source) { source.close(); source = null; }
    watched = "";
  }

  // live (re)subscribes to every leg's number, once the set changed. A
  // fresh stream starts with each parcel's history, and events already
  // shown are skipped by CID.
  function live() {
    const numbers = new Set();
    for (const c of cards) for (const l of c.legs) {
      if (l.view.carrier && (l.view.verified || l.view.error === "not_found")) numbers.add(l.view.number);
    }
    const q = [...numbers].sort().map((n) => "number=" + encodeURIComponent(n)).join("&");
    if (q === watched) return;
    stopLive();
    if (!q) return;
    watched = q;
    const es = new EventSource("/v1/watch?" + q);
    source = es;
    es.addEventListener("open", () => setStatus(ui("live")));
    es.addEventListener("update", (ev) => {
      let u;
      try { u = JSON.parse(ev.data); } catch { return; }
      apply(u);
    });
    es.addEventListener("problem", (ev) => {
      let p = {};
      try { p = JSON.parse(ev.data); } catch { /* keep the default text */ }
      setStatus(ui("stopped_why", { why: p.detail || p.code || "" }));
      stopLive();
    });
    es.addEventListener("error", () => {
      if (source !== es) return;
      setStatus(es.readyState === EventSource.CLOSED ? ui("stopped") : ui("paused"));
    });
  }

  // apply merges a verified update into its leg; an update that failed
  // verification is reported, and its events are not shown. A new
  // handoff leads to the next leg.
  function apply(u) {
    for (const card of cards) {
      const leg = card.legs.find((l) => l.view.carrier === u.carrier && l.view.number === u.number);
      if (!leg) continue;
      if (!u.verified) {
        leg.warning = ui("update_failed", { carrier: legName(leg), code: u.error });
        render(card);
        continue;
      }
      const v = leg.view;
      if (u.events.length > 0 && u.events[0].seq === 0 && v.events.length > 0 && v.events.find((e) => e.seq === 0)?.cid !== u.events[0].cid) {
        // A new parcel with a recycled number: its history replaces the old.
        v.events = [];
        leg.cids.clear();
      }
      let added = false;
      for (const e of u.events) {
        if (leg.cids.has(e.cid)) continue;
        leg.cids.add(e.cid);
        v.events.push(e);
        if (leg.ready) leg.fresh.add(e.cid);
        added = true;
      }
      leg.ready = true;
      Object.assign(v, { verified: true, found: true, error: undefined, message: undefined, missing: undefined, head: u.head || v.head });
      if (added) {
        render(card);
        setStatus(ui("live_last", { time: new Date().toLocaleTimeString(LANG) }));
        follow(card).then(live);
      }
    }
  }

  async function track(raw) {
    stopLive();
    cards = [];
    results.replaceChildren();
    setStatus(ui("looking", { number: raw }));
    button.disabled = true;
    try {
      const resp = await fetch("/v1/track", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ numbers: [raw] }),
      });
      const body = await resp.json().catch(() => null);
      if (!resp.ok || !Array.isArray(body)) {
        const code = body && body.code;
        setStatus(T.problem[code] || (body && body.detail) || ui("lookup_failed", { why: resp.status }));
        return;
      }
      cards = body.map((v) => ({ legs: [newLeg(v)] }));
      cards.forEach(render);
      await Promise.all(cards.map(follow));
      const found = body.filter((v) => v.verified).length;
      setStatus(found > 0 ? ui("found") : "");
      live();
    } catch (e) {
      setStatus(ui("lookup_failed", { why: e.message }));
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const raw = input.value.trim();
    if (!raw) {
      setStatus(ui("enter_number"));
      input.focus();
      return;
    }
    history.replaceState(null, "", "?n=" + encodeURIComponent(raw));
    track(raw);
  });

  const shared = new URLSearchParams(location.search).get("n");
  if (shared) {
    input.value = shared;
    track(shared.trim());
  }
})();
