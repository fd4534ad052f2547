package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/protocol"
)

// ParcelView is one tracked parcel as `opentrack track --json` prints it
// and the gateway serves it. Its JSON keys are a contract for scripts.
type ParcelView struct {
	Number   string `json:"number"`
	Carrier  string `json:"carrier"`
	Found    bool   `json:"found"`
	Verified bool   `json:"verified"`
	Partial  bool   `json:"partial,omitempty"` // the history goes on past Events and the lookup's bound: not verified (spec 6.3)
	Head     string `json:"head,omitempty"`    // CID of the newest event
	KeyID    string `json:"key_id,omitempty"`  // hex id of the key that signed the head
	// KeySource says where the verifying key came from: "registry", or
	// "node" when it is only what the node itself presented (spec §8.6).
	KeySource  string           `json:"key_source,omitempty"`
	Events     []EventView      `json:"events"`
	Details    protocol.Details `json:"details,omitempty"`
	Error      string           `json:"error,omitempty"`   // protocol code: not_found, rate_limited, bad_signature...
	Message    string           `json:"message,omitempty"` // human-readable detail of Error
	RetryAfter uint64           `json:"retry_after_ms,omitempty"`
	// DetailsError is why details asked for with a grant are missing
	// ("forbidden": the grant was refused, revoked or not this holder's;
	// "expired": the carrier erased them under its retention), with
	// DetailsMessage the reason. The events are the public view all the
	// same.
	DetailsError   string `json:"details_error,omitempty"`
	DetailsMessage string `json:"details_message,omitempty"`
	// Answered is set when Error is the node's own answer for the number
	// (not_found, wrong_carrier: "not a number I issue"...), not a verdict
	// on a record that came back: wrong_carrier means either.
	Answered bool `json:"-"`
}

// EventView is one verified event.
type EventView struct {
	Seq         uint64            `json:"seq"`
	Time        string            `json:"time"` // RFC 3339, UTC
	Status      protocol.Status   `json:"status"`
	Reason      string            `json:"reason,omitempty"`
	Location    protocol.Location `json:"location"`
	Description string            `json:"description,omitempty"`
	Lang        string            `json:"lang,omitempty"`
	ETA         string            `json:"eta,omitempty"`
	Handoff     *protocol.Handoff `json:"handoff,omitempty"`
	CID         string            `json:"cid"`
}

// View turns a track result and its verification into a ParcelView.
// verr is the verification error, nil when v is set.
func View(number, carrier string, res *protocol.TrackResult, v *Verified, verr error) ParcelView {
	pv := ParcelView{Number: number, Carrier: carrier, Events: []EventView{}}
	if res != nil {
		pv.RetryAfter = res.RetryAfter
	}
	if verr != nil {
		pv.Error, pv.Message = protocol.CodeOf(verr), protocol.Detail(verr)
		pv.Answered = res != nil && res.Code != protocol.CodeOK && res.Code == pv.Error
		if pv.Error == "" {
			pv.Error = protocol.CodeInternal
		}
		return pv
	}
	pv.Found, pv.Verified = true, !v.More
	if v.More {
		pv.Partial = true
		last := uint64(0)
		if n := len(v.Events); n > 0 {
			last = v.Events[n-1].Seq
		}
		pv.Message = fmt.Sprintf("partial history, not verified: events to seq %d of %d", last, v.Head.Seq)
	}
	pv.Head, pv.KeyID = v.Head.Head.Head.String(), hex.EncodeToString(v.KeyID)
	pv.Details = res.Details
	if res.DetailsError != "" {
		pv.DetailsError, pv.DetailsMessage = res.DetailsError, DetailsErrorText(res.DetailsError)
	}
	for i, e := range v.Events {
		ev := EventView{
			Seq: e.Seq, Time: formatMillis(e.Time), Status: e.Status, Reason: e.Reason, Location: e.Location,
			Description: e.Description, Lang: e.Lang, Handoff: e.Handoff, CID: v.CIDs[i].String(),
		}
		if e.ETA != 0 {
			ev.ETA = formatMillis(e.ETA)
		}
		pv.Events = append(pv.Events, ev)
	}
	return pv
}

func formatMillis(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

// Lookup asks p for numbers (any count; sent in requests of at most
// protocol.MaxNumbersPerRequest), follows every paged history to its
// signed head within Options.MaxHistoryEvents, verifies every result
// against keys, and returns one view per number in order. A number that
// fails to verify has Verified false and Error set; one past the bound
// has Partial set; err is only for a failed exchange.
func (c *Client) Lookup(ctx context.Context, p peer.ID, carrier string, numbers []string, keys protocol.KeyResolver, grant []byte) ([]ParcelView, error) {
	out := make([]ParcelView, 0, len(numbers))
	for start := 0; start < len(numbers); start += protocol.MaxNumbersPerRequest {
		chunk := numbers[start:min(start+protocol.MaxNumbersPerRequest, len(numbers))]
		queries := make([]protocol.TrackQuery, len(chunk))
		for i, n := range chunk {
			queries[i] = protocol.TrackQuery{Number: n}
		}
		resp, refused, err := withoutRefusedGrant(grant, func(g []byte) (*protocol.TrackResponse, error) {
			return c.Track(ctx, p, queries, g)
		})
		if err != nil {
			return out, err
		}
		if resp.Error != nil {
			e := refusal(fmt.Sprintf("node %s", p), resp.Error)
			for _, n := range chunk {
				pv := View(n, carrier, nil, nil, e)
				pv.RetryAfter = resp.Error.RetryAfter
				out = append(out, pv)
			}
			continue
		}
		pageGrant := grant
		if refused != nil {
			pageGrant = nil
		}
		for _, h := range c.histories(ctx, p, carrier, keys, chunk, resp.Results, pageGrant) {
			pv := h.view(carrier, c.bound())
			refused.mark(&pv)
			out = append(out, pv)
		}
	}
	return out, nil
}

// InfoKeys resolves keys from a node's own info answer. It pins whatever
// the node presents, so it only protects against tampering in transit and
// within the chain; the registry is what binds keys to carriers.
type InfoKeys struct {
	Carrier string
	Keys    [][]byte
}

// CarrierKey implements protocol.KeyResolver.
func (k InfoKeys) CarrierKey(carrier string, kid []byte, _ int64) (ed25519.PublicKey, error) {
	if carrier != k.Carrier {
		return nil, fmt.Errorf("%w: the node serves %s, the record is for %s", protocol.ErrWrongCarrier, k.Carrier, carrier)
	}
	for _, key := range k.Keys {
		if bytes.Equal(protocol.KeyID(key), kid) {
			return ed25519.PublicKey(key), nil
		}
	}
	return nil, fmt.Errorf("%w: key %x is not one the node presents", protocol.ErrUnknownKey, kid)
}

// DetailsErrorText says what a details error code (spec 8.3) means.
func DetailsErrorText(code string) string {
	if code == protocol.DetailsExpired {
		return "the details passed the carrier's retention and were erased"
	}
	return "the node withholds the details (" + code + ")"
}

// refusal is a node's error answer to a whole request as an error whose
// text leaves the code out: views print the code beside it.
func refusal(node string, e *protocol.ErrorInfo) *protocol.Error {
	msg := strings.TrimSpace(e.Message)
	if msg == "" {
		msg = "gave no reason"
	}
	return &protocol.Error{Code: e.Code, Msg: node + ": " + msg}
}

// grantRefusal is a grant the node refused for a whole request.
type grantRefusal struct{ code, msg string }

// withoutRefusedGrant runs do with grant and, if the node refuses the
// grant (forbidden for the whole request, spec §12.2), again without it,
// so that a bad grant costs the details and not the public timeline. The
// refusal says why the details are missing; nil when there was none.
func withoutRefusedGrant(grant []byte, do func(grant []byte) (*protocol.TrackResponse, error)) (*protocol.TrackResponse, *grantRefusal, error) {
	resp, err := do(grant)
	if err != nil || len(grant) == 0 || resp.Error == nil || resp.Error.Code != protocol.CodeForbidden {
		return resp, nil, err
	}
	refused := &grantRefusal{code: resp.Error.Code, msg: strings.TrimSpace(resp.Error.Message)}
	if refused.msg == "" {
		refused.msg = "the node gave no reason"
	}
	resp, err = do(nil)
	return resp, refused, err
}

// mark records the refusal on a view that was answered.
func (r *grantRefusal) mark(pv *ParcelView) {
	if r != nil && pv.Error == "" {
		pv.DetailsError, pv.DetailsMessage = r.code, r.msg
	}
}
