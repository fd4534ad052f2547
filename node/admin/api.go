package admin

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// GrantStore is the part of the store the grant and audit routes use.
type GrantStore interface {
	PutGrant(ctx context.Context, g *store.GrantRecord) error
	Grant(ctx context.Context, id string) (*store.GrantRecord, error)
	RevokeGrant(ctx context.Context, id string, at int64) error
	Grants(ctx context.Context) ([]*store.GrantRecord, error)
	Audit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error)
}

// APIConfig is what the /v1/ routes serve.
type APIConfig struct {
	// Ingester serves /v1/events and /v1/parcels/{number}; nil leaves
	// them out.
	Ingester *ingest.Ingester
	// Grants serves /v1/grants and /v1/audit; nil leaves them out.
	Grants GrantStore
	// Keys resolves the carrier keys a grant must be signed with to be
	// recorded, and Carrier is the carrier code it must name.
	Keys    protocol.KeyResolver
	Carrier string
	// Logger receives failures answered with 500; nil discards them.
	Logger *slog.Logger
}

// API returns the admin API's route table, the handler New mounts at
// /v1/ behind the token:
//
//	POST /v1/events                body: NDJSON, JSON or CBOR events; EventsResponse
//	GET  /v1/parcels/{number}      ingest.ParcelView
//	POST /v1/grants                body: a signed grant (COSE_Sign1); records it
//	POST /v1/grants/{id}/revoke    revokes it from now on
//	GET  /v1/grants                []GrantInfo, oldest first
//	GET  /v1/audit?since=MS&peer=ID&limit=N  []AuditInfo, oldest first
//
// Errors of the events and parcels routes are problem+json (Problem); the
// grant and audit routes answer theirs in plain text.
func API(c APIConfig) http.Handler {
	a := &api{APIConfig: c}
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	if c.Ingester != nil {
		mux.HandleFunc("POST /v1/events", a.events)
		mux.HandleFunc("GET /v1/parcels/{number}", a.parcel)
	}
	if c.Grants != nil {
		mux.HandleFunc("POST /v1/grants", a.putGrant)
		mux.HandleFunc("POST /v1/grants/{id}/revoke", a.revokeGrant)
		mux.HandleFunc("GET /v1/grants", a.listGrants)
		mux.HandleFunc("GET /v1/audit", a.audit)
	}
	return mux
}

// api holds what the handlers serve.
type api struct {
	APIConfig
}
