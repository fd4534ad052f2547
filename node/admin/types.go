package admin

import (
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store"
)

// The admin API's requests and answers are ingest's and the store's
// values; they are named here too, so that a program that drives a
// carrier through a Client needs no other package of the node.
type (
	// Event is one scan event to ingest (ingest.InputEvent).
	Event = ingest.InputEvent
	// Result is what ingest did with one Event (ingest.Result).
	Result = ingest.Result
	// AuditQuery selects audit entries (store.AuditQuery): by peer, since
	// a time, up to a limit.
	AuditQuery = store.AuditQuery
)

// What became of an ingested event: Result.Status.
const (
	StatusAccepted  = ingest.StatusAccepted
	StatusDuplicate = ingest.StatusDuplicate
	StatusRejected  = ingest.StatusRejected
)
