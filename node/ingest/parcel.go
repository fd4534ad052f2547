package ingest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// ParcelView is the carrier's own view of a parcel, as the admin
// API's GET /v1/parcels/{number} returns it.
type ParcelView struct {
	Number     string            `json:"number"`
	Carrier    string            `json:"carrier"`
	ParcelID   uint64            `json:"parcel_id"`
	Genesis    string            `json:"genesis"`
	Head       string            `json:"head"`
	Seq        uint64            `json:"seq"`
	Created    string            `json:"created"` // RFC 3339
	Audience   []string          `json:"audience"`
	SignedHead string            `json:"signed_head"` // hex of the COSE_Sign1
	Events     []EventView       `json:"events"`
	Details    map[string]string `json:"details,omitempty"`
}

// EventView is one stored event in a ParcelView.
type EventView struct {
	Seq         uint64            `json:"seq"`
	CID         string            `json:"cid"`
	Time        string            `json:"time"` // RFC 3339
	Status      string            `json:"status"`
	Reason      string            `json:"reason,omitempty"`
	Location    protocol.Location `json:"location"`
	Description string            `json:"description,omitempty"`
	Lang        string            `json:"lang,omitempty"`
	ETA         string            `json:"eta,omitempty"` // RFC 3339
	Handoff     *protocol.Handoff `json:"handoff,omitempty"`
	Ext         map[string]any    `json:"ext,omitempty"`
}

// eventPage is how many events one store read returns while a view is
// assembled; a parcel rarely has more.
const eventPage = 1000

// Parcel returns the newest parcel with this number, with its events and
// details. It wraps store.ErrNotFound when there is none.
func (g *Ingester) Parcel(ctx context.Context, number string) (*ParcelView, error) {
	n, err := protocol.NormalizeNumber(number)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", protocol.ErrInvalidNumber, trimProto(err))
	}
	p, err := g.st.Parcel(ctx, n)
	if err != nil {
		return nil, err
	}
	v := &ParcelView{
		Number: p.Number, Carrier: g.carrier, ParcelID: p.ID, Genesis: p.Genesis.String(),
		Head: p.Head.String(), Seq: p.Seq, Created: rfc3339(p.Created), Audience: p.Audience,
		SignedHead: hex.EncodeToString(p.SignedHead), Events: make([]EventView, 0, p.Seq+1),
	}
	if v.Audience == nil {
		v.Audience = []string{}
	}
	// Stop at the head read above: events appended meanwhile belong to a
	// newer head than the one this view shows.
	for from := uint64(0); from <= p.Seq; {
		evs, err := g.st.Events(ctx, p.ID, from, eventPage)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return nil, fmt.Errorf("ingest: parcel %s: store has no event at seq %d below head seq %d", n, from, p.Seq)
		}
		for _, se := range evs {
			if se.Seq > p.Seq {
				break
			}
			e, err := protocol.DecodeEvent(se.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ingest: parcel %s: stored event %d: %w", n, se.Seq, err)
			}
			v.Events = append(v.Events, viewEvent(e, protocol.CIDOf(se.Bytes).String()))
		}
		from = evs[len(evs)-1].Seq + 1
	}
	d, err := g.st.Details(ctx, p.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		v.Details = d
	}
	return v, nil
}

func viewEvent(e *protocol.Event, c string) EventView {
	v := EventView{
		Seq: e.Seq, CID: c, Time: rfc3339(e.Time), Status: string(e.Status), Reason: e.Reason,
		Location: e.Location, Description: e.Description, Lang: e.Lang, Handoff: e.Handoff, Ext: e.Ext,
	}
	if e.ETA != 0 {
		v.ETA = rfc3339(e.ETA)
	}
	return v
}

func rfc3339(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
