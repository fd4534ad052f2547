package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// GrantsHandler serves the admin API's grant and audit routes:
//
//	POST /v1/grants              body: a signed grant (COSE_Sign1); records it
//	POST /v1/grants/{id}/revoke  revokes it from now on
//	GET  /v1/grants              []GrantInfo, oldest first
//	GET  /v1/audit?since=MS&peer=ID&limit=N  []AuditInfo, oldest first
//
// A grant is recorded only if it validates and is signed by a key keys
// resolves for carrier, so that a typo cannot enable a grant the node
// would then refuse anyway.
func GrantsHandler(st store.Store, keys protocol.KeyResolver, carrier string) http.Handler {
	h := &grantsHTTP{st: st, keys: keys, carrier: carrier}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/grants", h.put)
	mux.HandleFunc("POST /v1/grants/{id}/revoke", h.revoke)
	mux.HandleFunc("GET /v1/grants", h.list)
	mux.HandleFunc("GET /v1/audit", h.audit)
	return mux
}

type grantsHTTP struct {
	st      store.Store
	keys    protocol.KeyResolver
	carrier string
}

func (h *grantsHTTP) put(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxGrantSize))
	if err != nil {
		http.Error(w, "grant: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	id := policy.GrantID(b)
	if id == "" {
		http.Error(w, "not a valid signed grant", http.StatusBadRequest)
		return
	}
	s, _ := protocol.ParseSigned(b, protocol.ContentGrant)
	var g protocol.Grant
	_ = protocol.UnmarshalCanonical(s.Payload, &g)
	// Verified as its holder at its issue time: the signature and carrier
	// are what matter here, not who presents it or when.
	if _, err := protocol.OpenGrant(b, h.keys, g.Holder, g.Issued); err != nil {
		http.Error(w, "grant: "+err.Error(), http.StatusBadRequest)
		return
	}
	if g.Carrier != h.carrier {
		http.Error(w, fmt.Sprintf("grant is for carrier %s, this node serves %s", g.Carrier, h.carrier), http.StatusBadRequest)
		return
	}
	switch _, err := h.st.Grant(r.Context(), id); {
	case err == nil:
		http.Error(w, "grant "+id+" exists", http.StatusConflict)
		return
	case !errors.Is(err, store.ErrNotFound):
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rec := &store.GrantRecord{Grant: g, Signed: b}
	if err := h.st.PutGrant(r.Context(), rec); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusCreated, grantInfo(rec))
}

func (h *grantsHTTP) revoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := h.st.RevokeGrant(r.Context(), id, time.Now().UnixMilli())
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, "no grant "+id, http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rec, err := h.st.Grant(r.Context(), id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, grantInfo(rec))
}

func (h *grantsHTTP) list(w http.ResponseWriter, r *http.Request) {
	recs, err := h.st.Grants(r.Context())
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

func (h *grantsHTTP) audit(w http.ResponseWriter, r *http.Request) {
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
	entries, err := h.st.Audit(r.Context(), q)
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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// GrantsClient calls the grant and audit routes of a running carrier
// node's admin API (GrantsHandler).
type GrantsClient struct {
	// URL is the admin API's base URL, Token its bearer token.
	URL, Token string
	// HTTP sends the requests; nil for http.DefaultClient.
	HTTP *http.Client
}

// Put records a signed grant.
func (c *GrantsClient) Put(ctx context.Context, signed []byte) (*GrantInfo, error) {
	var out GrantInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/grants", bytes.NewReader(signed), &out)
}

// Revoke revokes the grant with id.
func (c *GrantsClient) Revoke(ctx context.Context, id string) (*GrantInfo, error) {
	var out GrantInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/grants/"+url.PathEscape(id)+"/revoke", nil, &out)
}

// List returns every grant, oldest first.
func (c *GrantsClient) List(ctx context.Context) ([]GrantInfo, error) {
	var out []GrantInfo
	return out, c.do(ctx, http.MethodGet, "/v1/grants", nil, &out)
}

// Audit returns the audit entries matching q, oldest first.
func (c *GrantsClient) Audit(ctx context.Context, q store.AuditQuery) ([]AuditInfo, error) {
	v := url.Values{}
	if q.Since != 0 {
		v.Set("since", strconv.FormatInt(q.Since, 10))
	}
	if q.Peer != "" {
		v.Set("peer", q.Peer)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	path := "/v1/audit"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out []AuditInfo
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

func (c *GrantsClient) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/cose")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w (is the node running?)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin API: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}
