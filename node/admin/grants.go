package admin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// GrantInfo is a grant record as the admin API shows it.
type GrantInfo struct {
	ID       string     `json:"id"`
	Carrier  string     `json:"carrier"`
	Holder   string     `json:"holder"`
	Numbers  []string   `json:"numbers,omitempty"`
	Audience bool       `json:"audience,omitempty"`
	Fields   []string   `json:"fields"`
	Issued   time.Time  `json:"issued"`
	Expires  time.Time  `json:"expires"`
	Revoked  *time.Time `json:"revoked,omitempty"`
}

// AuditInfo is an audit entry as the admin API shows it.
type AuditInfo struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Peer    string    `json:"peer"`
	GrantID string    `json:"grant_id,omitempty"`
	Number  string    `json:"number"`
	Fields  []string  `json:"fields,omitempty"`
	Allowed bool      `json:"allowed"`
	Reason  string    `json:"reason,omitempty"`
}

func grantInfo(r *store.GrantRecord) GrantInfo {
	g := &r.Grant
	gi := GrantInfo{ID: g.ID, Carrier: g.Carrier, Holder: g.Holder, Numbers: g.Numbers, Audience: g.Audience, Fields: g.Fields,
		Issued: time.UnixMilli(g.Issued).UTC(), Expires: time.UnixMilli(g.Expires).UTC()}
	if r.Revoked != 0 {
		t := time.UnixMilli(r.Revoked).UTC()
		gi.Revoked = &t
	}
	return gi
}

func auditInfo(e *store.AuditEntry) AuditInfo {
	return AuditInfo{Seq: e.Seq, Time: time.UnixMilli(e.Time).UTC(), Peer: e.Peer, GrantID: e.GrantID, Number: e.Number,
		Fields: e.Fields, Allowed: e.Allowed, Reason: e.Reason}
}

// putGrant records a grant, only if it validates and is signed by a key
// Keys resolves for Carrier, so that a typo cannot enable a grant the
// node would then refuse anyway.
func (a *api) putGrant(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxGrantSize))
	if err != nil {
		http.Error(w, "grant: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	g, ok := policy.ParseGrant(b)
	if !ok || g.ID == "" {
		http.Error(w, "not a valid signed grant", http.StatusBadRequest)
		return
	}
	// Verified as its holder at its issue time: the signature and carrier
	// are what matter here, not who presents it or when.
	if _, err := protocol.OpenGrant(b, a.Keys, g.Holder, g.Issued); err != nil {
		http.Error(w, "grant: "+err.Error(), http.StatusBadRequest)
		return
	}
	if g.Carrier != a.Carrier {
		http.Error(w, fmt.Sprintf("grant is for carrier %s, this node serves %s", g.Carrier, a.Carrier), http.StatusBadRequest)
		return
	}
	switch _, err := a.Grants.Grant(r.Context(), g.ID); {
	case err == nil:
		http.Error(w, "grant "+g.ID+" exists", http.StatusConflict)
		return
	case !errors.Is(err, store.ErrNotFound):
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rec := &store.GrantRecord{Grant: g, Signed: b}
	if err := a.Grants.PutGrant(r.Context(), rec); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusCreated, grantInfo(rec))
}

func (a *api) revokeGrant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := a.Grants.RevokeGrant(r.Context(), id, time.Now().UnixMilli())
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, "no grant "+id, http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rec, err := a.Grants.Grant(r.Context(), id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, grantInfo(rec))
}

func (a *api) listGrants(w http.ResponseWriter, r *http.Request) {
	recs, err := a.Grants.Grants(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := make([]GrantInfo, len(recs))
	for i, rec := range recs {
		out[i] = grantInfo(rec)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) audit(w http.ResponseWriter, r *http.Request) {
	q := store.AuditQuery{Peer: r.URL.Query().Get("peer")}
	var p []string
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			p = append(p, "since must be Unix milliseconds")
		}
		q.Since = n
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			p = append(p, "limit must be a count")
		}
		q.Limit = n
	}
	if len(p) > 0 {
		http.Error(w, strings.Join(p, "; "), http.StatusBadRequest)
		return
	}
	entries, err := a.Grants.Audit(r.Context(), q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := make([]AuditInfo, len(entries))
	for i := range entries {
		out[i] = auditInfo(&entries[i])
	}
	writeJSON(w, http.StatusOK, out)
}
