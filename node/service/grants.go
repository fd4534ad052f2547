package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Audit results, the label values of metrics.Disclosures.
const (
	auditAllowed = "allowed"
	auditRefused = "refused"
)

// verifyGrant checks a presented grant as spec section 5.10 orders:
// signature, expiry and holder (protocol.OpenGrant), then that this node
// serves its carrier and that the carrier issued it and has not revoked
// it. The carrier records every grant it issues, so one the store does not
// hold is refused too. Every failure wraps protocol.ErrForbidden or the
// protocol error that OpenGrant found.
func verifyGrant(ctx context.Context, st store.Access, keys protocol.KeyResolver, carrier string, b []byte, remote peer.ID, now time.Time) (*protocol.Grant, error) {
	if keys == nil {
		return nil, fmt.Errorf("%w: this node verifies no grants", protocol.ErrForbidden)
	}
	g, err := protocol.OpenGrant(b, keys, remote.String(), now.UnixMilli())
	if err != nil {
		return nil, err
	}
	if g.Carrier != carrier {
		return nil, fmt.Errorf("%w: grant %s is for carrier %s, this node serves %s", protocol.ErrForbidden, g.ID, g.Carrier, carrier)
	}
	rec, err := st.Grant(ctx, g.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: grant %s was not issued by this carrier", protocol.ErrForbidden, g.ID)
	case err != nil:
		return nil, err
	case rec.Revoked != 0:
		return nil, fmt.Errorf("%w: grant %s is revoked", protocol.ErrForbidden, g.ID)
	}
	return g, nil
}

// IssueGrant completes g and signs it with the carrier key: a fresh
// random id, the holder in base58btc form, normalized numbers, and a
// validity from now for ttl. The carrier must then record it (GrantsClient
// Put) before its node honours it.
func IssueGrant(s *protocol.Signer, g protocol.Grant, now time.Time, ttl time.Duration) ([]byte, *protocol.Grant, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, err
	}
	g.ID = hex.EncodeToString(id[:])
	if h, err := peer.Decode(g.Holder); err == nil {
		g.Holder = h.String()
	}
	g.Numbers = slices.Clone(g.Numbers)
	for i, n := range g.Numbers {
		if norm, err := protocol.NormalizeNumber(n); err == nil {
			g.Numbers[i] = norm
		}
	}
	g.Issued = now.UnixMilli()
	g.Expires = now.Add(ttl).UnixMilli()
	b, err := protocol.SignGrant(s, &g)
	if err != nil {
		return nil, nil, err
	}
	return b, &g, nil
}

// grantID reads the id of a grant that may not verify, for the audit log;
// empty when b does not decode.
func grantID(b []byte) string {
	s, err := protocol.ParseSigned(b, protocol.ContentGrant)
	if err != nil {
		return ""
	}
	var g protocol.Grant
	if err := protocol.UnmarshalCanonical(s.Payload, &g); err != nil || g.Validate() != nil {
		return ""
	}
	return g.ID
}

// grantScope says how a grant reached a parcel, for the audit log.
func grantScope(g *protocol.Grant) string {
	if g.Audience {
		return "grant scope audience"
	}
	return "grant scope numbers"
}

// expiredEntry audits a covered parcel whose details the store erased
// under its retention (store.ErrExpired): nothing was disclosed, and the
// reason says why. via prefixes the reason, as a watch's do.
func expiredEntry(remote, via string, g *protocol.Grant, number string) store.AuditEntry {
	return store.AuditEntry{Time: time.Now().UnixMilli(), Peer: remote, GrantID: g.ID, Number: number,
		Reason: via + "details passed retention and were erased (" + grantScope(g) + ")"}
}

// detailFields lists the fields of d in protocol.DetailFields order.
func detailFields(d protocol.Details) []string {
	var out []string
	for _, f := range protocol.DetailFields {
		if _, ok := d[f]; ok {
			out = append(out, f)
		}
	}
	return out
}

// appendAudit stores entries durably and then counts them.
func appendAudit(ctx context.Context, st store.Access, m *metrics.Metrics, entries []store.AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := st.AppendAudit(ctx, entries); err != nil {
		return err
	}
	if m != nil {
		for _, e := range entries {
			res := auditRefused
			if e.Allowed {
				res = auditAllowed
			}
			m.Disclosures.WithLabelValues(res).Inc()
		}
	}
	return nil
}

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
func GrantsHandler(st store.Access, keys protocol.KeyResolver, carrier string) http.Handler {
	h := &grantsHTTP{st: st, keys: keys, carrier: carrier}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/grants", h.put)
	mux.HandleFunc("POST /v1/grants/{id}/revoke", h.revoke)
	mux.HandleFunc("GET /v1/grants", h.list)
	mux.HandleFunc("GET /v1/audit", h.audit)
	return mux
}

type grantsHTTP struct {
	st      store.Access
	keys    protocol.KeyResolver
	carrier string
}

func (h *grantsHTTP) put(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxGrantSize))
	if err != nil {
		http.Error(w, "grant: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	id := grantID(b)
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
