// Package gateway is a platform node's HTTP face (DESIGN §7): most
// platform stacks speak HTTP, and end users look at a tracking page, so
// the gateway serves both without giving up verification.
//
// It serves verified JSON lookups (GET /v1/track/{number}, POST
// /v1/track), live verified updates as Server-Sent Events (GET
// /v1/watch), its OpenAPI 3.1 document (/openapi.json), its own
// Prometheus metrics (/metrics: its series and opentrack_build_info, not
// the node's libp2p ones), pprof only with Options.Pprof, and a tracking
// web page (/) whose HTML, CSS and JavaScript are embedded in the binary.
//
// Every record it serves went through node/client: numbers resolve to
// carriers through the platform's signed registry, and every head is
// verified against a key the registry binds to the carrier ("key_source":
// "registry"). The JSON is node/client's ParcelView and WatchUpdate, the
// same objects `opentrack track --json` and `opentrack watch --json`
// print. A record that fails verification is never served as verified:
// GET answers a problem with the protocol's code, and the batch and the
// stream carry the view with "verified": false and its error code.
//
// Errors are RFC 9457 problem documents with a "code" member holding the
// protocol's error code; problem.go maps codes to HTTP statuses in one
// place. Each client IP has a token bucket and a bound on its open
// streams; CORS is off (same origin only) unless origins are configured.
//
// A carrier sees the gateway as one peer with one not_found budget, so
// budget.go keeps any one web user from spending it for the others: a
// not_found budget per client, one for the gateway below the carrier's,
// and a short negative cache; a carrier's rate_limited is shown to a
// client as unavailable, never as its own limit.
//
// The page (page.go, web/) speaks the reader's language by
// Accept-Language, English or Simplified Chinese from the web/i18n
// tables that the script gets too. It names carriers as the registry
// does and follows handoffs, so that a parcel's legs at several carriers
// are one timeline, each leg verified against its own carrier. With ?n=
// the server renders that summary itself, for readers without
// JavaScript.
//
// `opentrack gateway` opens a platform repo, starts its node and a
// Gateway over the node's host, trust and router.
package gateway
