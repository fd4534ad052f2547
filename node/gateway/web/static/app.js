// OpenTrack tracking page: looks a number up through the gateway's
// verified JSON API and keeps the timeline current over Server-Sent
// Events. Plain JavaScript, no dependencies; text is set with
// textContent only, never parsed as HTML.
"use strict";
(() => {
  const STATUS = {
    info_received: "Shipment information received",
    picked_up: "Picked up",
    in_transit: "In transit",
    arrived_at_facility: "Arrived at facility",
    departed_facility: "Departed facility",
    customs_hold: "Held by customs",
    customs_cleared: "Cleared customs",
    out_for_delivery: "Out for delivery",
    delivery_attempted: "Delivery attempted",
    available_for_pickup: "Ready for pickup",
    delivered: "Delivered",
    returned_to_sender: "Returned to sender",
    exception: "Exception",
    cancelled: "Cancelled",
  };
  const PROBLEMS = {
    invalid_number: "That is not a valid tracking number. Check it for typos.",
    bad_check_digit: "The check digit of this number is wrong. Check it for typos.",
    not_found: "The carrier has no scans for this number yet. This page updates by itself when it does.",
    forbidden: "The carrier does not share this parcel's tracking.",
    rate_limited: "Too many lookups. Please wait a moment and try again.",
    unavailable: "The carrier could not be reached. Please try again later.",
    timeout: "The carrier took too long to answer. Please try again.",
  };

  const form = document.getElementById("track");
  const input = document.getElementById("n");
  const button = form.querySelector("button");
  const statusEl = document.getElementById("status");
  const results = document.getElementById("results");

  let source = null; // the EventSource of the number shown
  const parcels = new Map(); // carrier -> {view, cids, fresh}

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

  const words = (s) => STATUS[s] || String(s).replace(/_/g, " ");
  const place = (loc) => [loc && loc.facility, loc && loc.city, loc && loc.country].filter(Boolean).join(", ");
  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }
  function setStatus(text) { statusEl.textContent = text; }

  function problemText(code, message) {
    if (PROBLEMS[code]) return PROBLEMS[code];
    return "This record failed verification (" + code + ") and is not shown as the carrier's." + (message ? " " + message : "");
  }

  // render draws one parcel's card from its state, newest event first.
  function render(carrier) {
    const st = parcels.get(carrier);
    const v = st.view;
    const id = "parcel-" + (carrier || "none");
    const heading = el("h2", { id: id + "-h" }, v.number);
    const meta = el("dl", { class: "meta" });
    if (v.carrier) meta.append(el("dt", {}, "Carrier"), el("dd", { class: "carrier" }, "Carrier " + v.carrier));
    meta.append(el("dt", {}, "Verification"), el("dd", {},
      v.verified
        ? el("span", { class: "badge ok", "data-testid": "verified" }, "✓ Verified")
        : el("span", { class: "badge bad" }, "✗ Not verified")));
    const card = el("article", { class: "parcel", id: id, "aria-labelledby": id + "-h" }, heading, meta);
    if (v.error) {
      card.append(el("p", { class: v.error === "not_found" ? "notice" : "problem" }, problemText(v.error, v.error === "not_found" ? "" : v.message)));
    }
    if (st.warning) card.append(el("p", { class: "problem" }, st.warning));
    const events = [...v.events].sort((a, b) => b.seq - a.seq);
    if (events.length > 0) {
      card.append(el("p", { class: "current" }, words(events[0].status)));
      const eta = events.find((e) => e.eta);
      if (eta && events[0].status !== "delivered") card.append(el("p", { class: "eta" }, "Expected delivery: " + when(eta.eta)));
      const list = el("ol", { class: "timeline", "aria-label": "Tracking history, newest first" });
      for (const e of events) {
        const status = words(e.status) + (e.reason ? " (" + e.reason.replace(/_/g, " ") + ")" : "");
        const li = el("li", { "data-status": e.status, class: st.fresh.has(e.cid) ? "new" : null },
          el("span", { class: "st" }, status, st.fresh.has(e.cid) ? el("span", { class: "fresh" }, "New") : null),
          el("time", { class: "when", datetime: e.time }, when(e.time)),
          place(e.location) ? el("span", { class: "where" }, place(e.location)) : null,
          e.description ? el("span", { class: "desc", lang: e.lang || null }, e.description) : null);
        list.append(li);
      }
      card.append(list);
    }
    if (v.verified && v.key_id) {
      card.append(el("p", { class: "keyinfo" }, "Signed by key " + v.key_id.slice(0, 16) + "… bound to " + v.carrier + " by the " + (v.key_source || "registry") + "; head " + v.head));
    }
    const old = document.getElementById(id);
    if (old) old.replaceWith(card); else results.append(card);
  }

  function stopLive() {
    if (source) { source.close(); source = null; }
  }

  function startLive(number) {
    stopLive();
    source = new EventSource("/v1/watch?number=" + encodeURIComponent(number));
    source.addEventListener("open", () => setStatus("Live updates are on."));
    source.addEventListener("update", (ev) => {
      let u;
      try { u = JSON.parse(ev.data); } catch { return; }
      apply(u);
    });
    source.addEventListener("problem", (ev) => {
      let p = {};
      try { p = JSON.parse(ev.data); } catch { /* keep the default text */ }
      setStatus("Live updates stopped: " + (p.detail || p.code || "the carrier refused"));
      stopLive();
    });
    source.addEventListener("error", () => {
      if (!source) return;
      setStatus(source.readyState === EventSource.CLOSED ? "Live updates stopped." : "Live updates paused, reconnecting…");
    });
  }

  // apply merges a verified update into its parcel's timeline; an update
  // that failed verification is reported, and its events are not shown.
  function apply(u) {
    let st = parcels.get(u.carrier);
    if (!u.verified) {
      if (!st) return;
      st.warning = "An update from " + u.carrier + " failed verification (" + u.error + ") and is not shown.";
      render(u.carrier);
      return;
    }
    if (!st) {
      st = { view: { number: u.number, carrier: u.carrier, events: [] }, cids: new Set(), fresh: new Set() };
      parcels.set(u.carrier, st);
      parcels.delete("");
      results.querySelector("#parcel-none")?.remove();
    }
    const v = st.view;
    if (u.events.length > 0 && u.events[0].seq === 0 && v.events.length > 0 && v.events.find((e) => e.seq === 0)?.cid !== u.events[0].cid) {
      // A new parcel with a recycled number: its history replaces the old.
      v.events = [];
      st.cids.clear();
    }
    let added = false;
    for (const e of u.events) {
      if (st.cids.has(e.cid)) continue;
      st.cids.add(e.cid);
      v.events.push(e);
      if (st.ready) st.fresh.add(e.cid);
      added = true;
    }
    st.ready = true;
    v.verified = true;
    v.found = true;
    v.error = undefined;
    v.message = undefined;
    v.head = u.head || v.head;
    if (added) {
      render(u.carrier);
      setStatus("Live updates are on. Last update " + new Date().toLocaleTimeString() + ".");
    }
  }

  async function track(raw) {
    stopLive();
    parcels.clear();
    results.replaceChildren();
    setStatus("Looking up " + raw + "…");
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
        setStatus(PROBLEMS[code] || (body && body.detail) || "The lookup failed (" + resp.status + ").");
        return;
      }
      for (const v of body) {
        const st = { view: v, cids: new Set(v.events.map((e) => e.cid)), fresh: new Set(), ready: v.events.length > 0 };
        parcels.set(v.carrier || "", st);
        render(v.carrier || "");
      }
      const found = body.filter((v) => v.verified).length;
      setStatus(found > 0 ? "Found and verified." : "");
      const watchable = body.some((v) => v.carrier && (v.verified || v.error === "not_found"));
      if (watchable) startLive(body[0].number);
    } catch (e) {
      setStatus("The lookup failed: " + e.message);
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const raw = input.value.trim();
    if (!raw) {
      setStatus("Enter a tracking number.");
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
