// Package ingest is carrier ingest as a library: it turns the carrier's
// scan events into signed, chained OpenTrack events and commits them to
// the store before anything is acknowledged (DESIGN §7).
//
// Each event of a batch is validated on its own and is accepted, reported
// as a duplicate of an event stored earlier under the same carrier event
// id, or rejected with a reason. Accepted events are chained to their
// parcel's head, each touched head is signed once, and the whole set goes
// to the store in one durable Append.
//
// Commits go through one committer. It merges small concurrent requests
// into one store batch (group commit), so they share an fsync and a
// signature per parcel, and it plans the next group (id lookups, head
// reads, chaining, signing) while the previous group's Append runs. A
// group that touches a parcel or an event id of the appending one waits
// for that append, so the pipeline never reorders a parcel's chain.
//
// ingest does no HTTP: node/admin serves POST /v1/events by decoding the
// body with DecodeBatch and handing the events to Ingest, the one commit
// path, and serves GET /v1/parcels/{number} from Parcel.
package ingest
