package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/protocol"
)

// status hands over the node's status for a watched number once, and
// again only when it changes. A number it settles (the node has no parcel
// for it as the subscription starts, which then delivers one created
// later) is not tracked by a re-sync on this subscription.
func (w *Watcher) status(ctx context.Context, m *protocol.WatchMessage) error {
	if _, ok := w.watched[m.Number]; !ok {
		return w.emit(ctx, w.failed(m.Number, w.cursor, fmt.Errorf("%w: status for %q, which is not watched", protocol.ErrInvalid, m.Number)))
	}
	if settles[m.Code] {
		w.answered[m.Number] = true
	}
	w.tell(m.Number, m.Code, m.Message)
	return nil
}

// settles are the status codes after which tracking the number tells
// nothing new: the node has no parcel for it, or never will.
var settles = map[string]bool{protocol.CodeNotFound: true, protocol.CodeWrongCarrier: true, protocol.CodeInvalidNumber: true}

// tell queues code for number unless it was the last one handed over.
func (w *Watcher) tell(number, code, msg string) {
	if w.told[number] == code {
		return
	}
	w.told[number] = code
	w.pending = append(w.pending, WatchUpdate{Number: number, Carrier: w.opts.Carrier, Cursor: w.cursor, Events: []EventView{}, Code: code, Message: msg})
}

// taken drops the first pending status, which the consumer took.
func (w *Watcher) taken() {
	if w.pending = w.pending[1:]; len(w.pending) == 0 {
		w.pending = nil
		if w.liveDue {
			w.markLive()
		}
	}
}

// update verifies an update and hands over its new events. Spec 8.5: an
// update is ignored when its head is not above the one held; it is
// verified as a suffix of the held head, or as a full history when it
// starts at seq 0; and what does not link to the held head (none held,
// missed updates, a capped update) is fetched with track first.
// Verification failures are handed over as such; only a failure to
// fetch, which a retry may cure, is returned.
// pre is m's head parsed and checked already, or nil.
func (w *Watcher) update(ctx context.Context, p peer.ID, m *protocol.WatchMessage, pre *checkedHead) error {
	fail := func(err error) error { return w.emit(ctx, w.failed(m.Number, m.Cursor, err)) }
	if w.watched != nil {
		if _, ok := w.watched[m.Number]; !ok {
			return fail(fmt.Errorf("%w: update for %q, which is not watched", protocol.ErrInvalid, m.Number))
		}
	}
	if pre == nil {
		pre = &checkedHead{}
		pre.sh, pre.parseErr = protocol.ParseSignedHead(m.Head)
	}
	sh, err := pre.sh, pre.parseErr
	if err != nil {
		return fail(err)
	}
	first, err := protocol.DecodeEvent(m.Events[0])
	if err != nil {
		return fail(fmt.Errorf("event 0: %w", err))
	}
	st := w.parcels[m.Number]
	if st != nil && (sh.Head.Head.Equals(st.head) || (sh.Seq <= st.seq && first.Seq > 0)) {
		return nil // a replay after a resume
	}
	events := m.Events
	if st != nil && first.Seq > 0 && first.Seq <= st.seq {
		// The update starts inside what is held: keep what follows, which
		// must then link to the held head.
		events = events[min(st.seq+1-first.Seq, uint64(len(events))):]
	}
	last := first.Seq + uint64(len(m.Events)) - 1
	linked := first.Seq == 0 || (st != nil && first.Seq <= st.seq+1)
	res := &protocol.TrackResult{Number: m.Number, Code: protocol.CodeOK, Head: m.Head, Events: events}
	if !linked || last < sh.Seq {
		// Check the update's own signature, so that a forged one is
		// reported rather than replaced by what track says.
		head := &protocol.TrackResult{Number: m.Number, Code: protocol.CodeOK, Head: m.Head}
		if _, err := verifyResult(head, w.opts.Carrier, w.opts.Keys, sh.Head.Head, sh.Seq, time.Now(), pre); err != nil {
			return fail(err)
		}
		return w.backfill(ctx, p, []string{m.Number}, m.Cursor, true)
	}
	var known protocol.Link
	var knownSeq uint64
	if st != nil && first.Seq > 0 {
		known, knownSeq = protocol.LinkTo(st.head), st.seq
	}
	v, err := verifyResult(res, w.opts.Carrier, w.opts.Keys, known, knownSeq, time.Now(), pre)
	if err != nil {
		return fail(err)
	}
	return w.apply(ctx, m.Number, m.Cursor, v, m.Details, m.DetailsError)
}

// apply adopts a verified result for number as spec 6.4 says and hands
// over the events that are new, labelled with cursor, with the details
// that came with them.
func (w *Watcher) apply(ctx context.Context, number, cursor string, v *Verified, details protocol.Details, detailsErr string) error {
	st := w.parcels[number]
	events, cids := v.Events, v.CIDs
	if st != nil && v.Full {
		switch i := slices.IndexFunc(cids, st.head.Equals); {
		case i >= 0:
			// The same parcel resent in full.
			events, cids = events[i+1:], cids[i+1:]
		case len(cids) > 0 && cids[0].Equals(st.genesis) && v.Head.Seq < st.seq:
			return nil // an older head of the parcel held
		case len(cids) > 0 && cids[0].Equals(st.genesis):
			return w.emit(ctx, w.failed(number, cursor, fmt.Errorf("%w: the carrier signed two histories of %s: head %s at seq %d and head %s at seq %d",
				protocol.ErrBrokenChain, number, st.head, st.seq, v.Head.Head.Head, v.Head.Seq)))
		case v.Head.Time <= st.time:
			return nil // a stale answer about an older parcel with this number
		default:
			st = nil // a new parcel with a recycled number
		}
	}
	if st != nil && v.Head.Seq <= st.seq {
		return nil
	}
	next := &parcelState{head: v.Head.Head.Head.Cid, seq: v.Head.Seq, time: v.Head.Time}
	if st != nil {
		next.genesis = st.genesis
	} else if len(v.CIDs) > 0 {
		next.genesis = v.CIDs[0]
	}
	w.parcels[number] = next
	delete(w.told, number)
	if len(events) == 0 {
		return nil
	}
	fresh := *v
	fresh.Events, fresh.CIDs = events, cids
	pv := View(number, w.opts.Carrier, &protocol.TrackResult{}, &fresh, nil)
	return w.emit(ctx, WatchUpdate{
		Number: number, Carrier: w.opts.Carrier, Verified: true, Head: pv.Head, Cursor: cursor, Events: pv.Events, Details: details,
		DetailsError: detailsErr,
	})
}

// failed is the update that reports a verification failure for number.
func (w *Watcher) failed(number, cursor string, err error) WatchUpdate {
	code := protocol.CodeOf(err)
	if code == "" {
		code = protocol.CodeInternal
	}
	return WatchUpdate{Number: number, Carrier: w.opts.Carrier, Cursor: cursor, Events: []EventView{}, Error: code, Message: err.Error()}
}

// emit hands u to the consumer, after the statuses pending.
func (w *Watcher) emit(ctx context.Context, u WatchUpdate) error {
	for len(w.pending) > 0 {
		select {
		case w.out <- w.pending[0]:
			w.taken()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case w.out <- u:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resyncAll tracks every watched number (with Audience, every parcel
// held) from the head held, as spec 8.5 says after unknown_cursor.
func (w *Watcher) resyncAll(ctx context.Context, p peer.ID) error {
	numbers := slices.DeleteFunc(slices.Clone(w.numbers), func(n string) bool { return w.answered[n] })
	if w.opts.Audience {
		numbers = slices.Sorted(func(yield func(string) bool) {
			for n := range w.parcels {
				if !yield(n) {
					return
				}
			}
		})
	}
	if err := w.backfill(ctx, p, numbers, w.cursor, false); err != nil {
		return err
	}
	w.resync = false
	return nil
}

// transientCodes are the answers about the node rather than the parcel:
// the fetch is retried on the next stream.
var transientCodes = map[string]bool{
	protocol.CodeRateLimited: true, protocol.CodeUnavailable: true, protocol.CodeInternal: true,
}

// backfill asks p for numbers' events after the heads held, a hundred
// numbers a request, following paged histories, and applies each result,
// labelled with cursor. A parcel the node does not hold is reported only
// when asked about because of an update (reportMissing). It returns an
// error only when the node could not answer, so that the stream is
// retried.
func (w *Watcher) backfill(ctx context.Context, p peer.ID, numbers []string, cursor string, reportMissing bool) error {
	for start := 0; start < len(numbers); start += protocol.MaxNumbersPerRequest {
		chunk := numbers[start:min(start+protocol.MaxNumbersPerRequest, len(numbers))]
		queries := make([]protocol.TrackQuery, len(chunk))
		for i, n := range chunk {
			queries[i] = w.query(n)
		}
		resp, err := w.c.Track(ctx, p, queries, w.opts.Grant)
		if err != nil {
			return fmt.Errorf("%w: %w", errFetch, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("%w: %s", errFetch, codeText(resp.Error.Code, resp.Error.Message))
		}
		for i := range resp.Results {
			res := &resp.Results[i]
			if settles[res.Code] && !reportMissing {
				// No parcel to show yet: the number's result, once.
				w.tell(chunk[i], res.Code, res.Message)
				continue
			}
			v, err := w.fetchPages(ctx, p, chunk[i], queries[i], res)
			if errors.Is(err, errFetch) {
				return err
			}
			if err != nil {
				if err := w.emit(ctx, w.failed(chunk[i], cursor, err)); err != nil {
					return err
				}
				continue
			}
			if err := w.apply(ctx, chunk[i], cursor, v, res.Details, res.DetailsError); err != nil {
				return err
			}
		}
	}
	return nil
}

// errFetch marks a page of a back-fill that the node could not serve.
var errFetch = errors.New("client: back-fill")

// query asks for number from the head held.
func (w *Watcher) query(number string) protocol.TrackQuery {
	q := protocol.TrackQuery{Number: number}
	if st := w.parcels[number]; st != nil {
		q.Known = protocol.LinkTo(st.head)
	}
	return q
}

// fetchPages verifies res, the answer to q, and asks for the pages after
// it until one reaches the signed head (spec 6.3), within the client's
// history bound (Options.MaxHistoryPages and MaxHistoryEvents): a node
// that keeps answering "more" cannot grow the watcher without end. The
// result holds every page's events; none of them counts as verified
// before the last page does. Errors wrapping errFetch mean the node could
// not answer.
func (w *Watcher) fetchPages(ctx context.Context, p peer.ID, number string, q protocol.TrackQuery, res *protocol.TrackResult) (*Verified, error) {
	var knownSeq uint64
	if st := w.parcels[number]; st != nil {
		knownSeq = st.seq
	}
	var all *Verified
	for pages := 1; ; pages++ {
		if transientCodes[res.Code] || !protocol.ValidResultCode(res.Code) {
			return nil, fmt.Errorf("%w: %s: %s", errFetch, number, codeText(res.Code, res.Message))
		}
		v, err := VerifyResult(res, w.opts.Carrier, w.opts.Keys, q.Known, knownSeq)
		if err != nil {
			return nil, err
		}
		if all == nil || v.Full {
			all = v
		} else {
			all.Events, all.CIDs = append(all.Events, v.Events...), append(all.CIDs, v.CIDs...)
			all.Head, all.KeyID, all.More = v.Head, v.KeyID, v.More
		}
		if !v.More {
			return all, nil
		}
		if pages >= w.c.opts.MaxHistoryPages || len(all.Events) >= w.c.opts.MaxHistoryEvents {
			return nil, fmt.Errorf("%w: %s: history incomplete after %d pages (%d events, head seq %d), not verified; %s",
				protocol.ErrTooLarge, number, pages, len(all.Events), all.Head.Seq, w.c.bound())
		}
		last := len(v.Events) - 1
		q.Known, knownSeq = protocol.LinkTo(v.CIDs[last]), v.Events[last].Seq
		resp, err := w.c.Track(ctx, p, []protocol.TrackQuery{q}, nil)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: %w", errFetch, err)
		case resp.Error != nil:
			return nil, fmt.Errorf("%w: %s", errFetch, codeText(resp.Error.Code, resp.Error.Message))
		}
		res = &resp.Results[0]
	}
}
