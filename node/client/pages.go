package client

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/protocol"
)

// history is one number's answer being completed page by page (spec 6.3):
// the pages verified so far, and where the next one starts.
type history struct {
	number     string
	known      protocol.Link // the next page's known: the last event held
	knownSeq   uint64
	res        *protocol.TrackResult // the newest result received
	v          *Verified             // every page so far; More while incomplete
	err        error
	retryAfter uint64 // from a refused continuation
	refused    bool   // a continuation got no answer: about the node, not the parcel
	pages      int
}

// add verifies res, the next page of h, and appends its events.
func (h *history) add(res *protocol.TrackResult, carrier string, keys protocol.KeyResolver) {
	h.res, h.pages = res, h.pages+1
	v, err := VerifyResult(res, carrier, keys, h.known, h.knownSeq)
	if err != nil {
		if h.pages > 1 {
			err = fmt.Errorf("page %d of %s: %w", h.pages, h.number, err)
		}
		h.v, h.err = nil, err
		return
	}
	if h.v == nil || v.Full {
		// A continuation from seq 0 is a recycled number: start again.
		h.v = v
	} else {
		h.v.Events, h.v.CIDs = append(h.v.Events, v.Events...), append(h.v.CIDs, v.CIDs...)
		h.v.Head, h.v.KeyID, h.v.More = v.Head, v.KeyID, v.More
	}
	if v.More {
		last := len(v.Events) - 1
		h.known, h.knownSeq = protocol.LinkTo(v.CIDs[last]), v.Events[last].Seq
	}
}

// fail ends h: a continuation could not be had, so its pages stay
// unverified and the view carries err instead.
func (h *history) fail(err error, retryAfter uint64) {
	if protocol.CodeOf(err) == "" {
		err = fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	h.refused = true
	h.v, h.err, h.retryAfter = nil, fmt.Errorf("%s: history incomplete after %d pages: %w", h.number, h.pages, err), retryAfter
}

// view is h as a ParcelView: verified only when the last page reached the
// signed head, partial when the bound stopped it first.
func (h *history) view(carrier string, bound string) ParcelView {
	pv := View(h.number, carrier, h.res, h.v, h.err)
	if h.retryAfter != 0 {
		pv.RetryAfter = h.retryAfter
	}
	if pv.Partial {
		pv.Message += "; " + bound
	}
	return pv
}

// wantsPage reports whether h has more and the bound allows another page.
func (c *Client) wantsPage(h *history) bool {
	return h.err == nil && h.v != nil && h.v.More &&
		h.pages < c.opts.MaxHistoryPages && len(h.v.Events) < c.opts.MaxHistoryEvents
}

// bound describes Options' history bound for a partial view's message.
func (c *Client) bound() string {
	return fmt.Sprintf("the client reads at most %d events in %d pages per parcel", c.opts.MaxHistoryEvents, c.opts.MaxHistoryPages)
}

// complete asks p for the next page of every history in hs that has more,
// up to protocol.MaxNumbersPerRequest of them per request, round after
// round, until each reaches its signed head, fails, or meets the bound.
// Paging several numbers in one request keeps a batch of long histories
// to a few round trips, where one number at a time would take one per
// page per number.
func (c *Client) complete(ctx context.Context, p peer.ID, carrier string, keys protocol.KeyResolver, hs []*history, grant []byte) {
	for {
		var open []*history
		for _, h := range hs {
			if c.wantsPage(h) {
				open = append(open, h)
			}
		}
		if len(open) == 0 {
			return
		}
		for start := 0; start < len(open); start += protocol.MaxNumbersPerRequest {
			chunk := open[start:min(start+protocol.MaxNumbersPerRequest, len(open))]
			queries := make([]protocol.TrackQuery, len(chunk))
			for i, h := range chunk {
				queries[i] = protocol.TrackQuery{Number: h.number, Known: h.known}
			}
			resp, err := c.Track(ctx, p, queries, grant)
			var retryAfter uint64
			if err == nil && resp.Error != nil {
				err = refusal(fmt.Sprintf("node %s", p), resp.Error)
				retryAfter = resp.Error.RetryAfter
			}
			if err != nil {
				for _, h := range chunk {
					h.fail(err, retryAfter)
				}
				continue
			}
			for i := range resp.Results {
				chunk[i].add(&resp.Results[i], carrier, keys)
			}
		}
	}
}

// histories verifies the results of one response, numbers[i] being the
// number asked for results[i], and completes those with more from p.
func (c *Client) histories(ctx context.Context, p peer.ID, carrier string, keys protocol.KeyResolver, numbers []string, results []protocol.TrackResult, grant []byte) []*history {
	hs := make([]*history, len(results))
	for i := range results {
		hs[i] = &history{number: numbers[i]}
		hs[i].add(&results[i], carrier, keys)
	}
	c.complete(ctx, p, carrier, keys, hs, grant)
	return hs
}
