package policy

import (
	"context"
	"time"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Audit results, the label values of metrics.Disclosures.
const (
	auditAllowed = "allowed"
	auditRefused = "refused"
)

// ExpiredEntry audits a covered parcel whose details the store erased
// under its retention (store.ErrExpired): nothing was disclosed, and the
// reason says why. via prefixes the reason, as a watch's do.
func ExpiredEntry(remote, via string, g *protocol.Grant, number string) store.AuditEntry {
	return store.AuditEntry{Time: time.Now().UnixMilli(), Peer: remote, GrantID: g.ID, Number: number,
		Reason: via + "details passed retention and were erased (" + GrantScope(g) + ")"}
}

// DetailFields lists the fields of d in protocol.DetailFields order.
func DetailFields(d protocol.Details) []string {
	var out []string
	for _, f := range protocol.DetailFields {
		if _, ok := d[f]; ok {
			out = append(out, f)
		}
	}
	return out
}

// AppendAudit stores entries durably and then counts them in m, which
// may be nil.
func AppendAudit(ctx context.Context, st store.Access, m *metrics.Metrics, entries []store.AuditEntry) error {
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
