// Package client is the platform side of the OpenTrack protocols: it asks
// a carrier node for parcels over /opentrack/track/1.0.0, reusing a small
// pool of streams per peer, asks a node what it is over
// /opentrack/info/1.0.0, and verifies what comes back.
//
// Track returns the response as the server sent it, checked for shape
// only, so that a caller that does not need trust (a benchmark, a relay)
// pays nothing for it. VerifyResult is the trust step: the carrier's
// signature over the head, the head's freshness and number, and the hash
// chain of the events up to that head.
//
// TrackNumbers is the platform's lookup with no hub in between: the
// registry (Trust) resolves each number to its candidate carriers, every
// candidate is asked at once through its registry nodes (a Connector,
// discovery.Router in a node, finds them), and every record must be
// signed by a key the registry binds to that carrier. TrackPeer asks one
// node, as `opentrack track --peer` does.
package client
