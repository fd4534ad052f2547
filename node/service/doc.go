// Package service holds the server side of the OpenTrack libp2p protocols
// that a node answers: track (a carrier node serving parcel histories from
// its store.Store, with details behind grants), watch (pushing new events
// from the store's change feed to subscribers, each behind a bounded
// queue) and info (what a node is and what it speaks), plus the admin
// handlers for grants and the audit log.
//
// Every handler follows the same order: attach the stream to its
// resource-manager service (the names in node/host), reserve memory, set a
// deadline, read with a frame reader capped at the protocol's limit. Bad
// peer input resets the stream; it never panics or stalls the node. A
// request that is well-formed but not acceptable (too many numbers, an
// unknown number) gets an answer with a protocol error code instead.
package service
