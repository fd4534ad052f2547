package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/protocol"
)

// Where the key that verified a ParcelView came from (ParcelView.KeySource).
const (
	// KeySourceRegistry is a key the signed registry binds to the carrier:
	// the record is the carrier's.
	KeySourceRegistry = "registry"
	// KeySourceNode is a key the node presented about itself (spec 8.6):
	// the chain is intact, but who signed it is only the node's word.
	KeySourceNode = "node"
)

// Errors of finding a carrier's node. ErrNoAnswer is a protocol.Error,
// so that a caller reads its code as it reads a node's own answer.
var (
	// ErrNoAnswer is the error of a number whose carrier had no node that
	// answered: none listed, none reachable, or every one refused the
	// request. Its code is unavailable.
	ErrNoAnswer = &protocol.Error{Code: protocol.CodeUnavailable, Msg: "client: no node of the carrier answered"}
	// ErrNoCarrier is returned by TrackPeer for a node that says it
	// serves no carrier (a platform node).
	ErrNoCarrier = errors.New("client: the node serves no carrier")
)

// maxParallelRequests bounds the track requests TrackNumbers has in
// flight at once. It matches the default stream pool per peer
// (Options.MaxIdleStreams), so that a one-carrier batch reuses streams
// rather than opening new ones.
const maxParallelRequests = 16

// Trust is the platform's trust state as this package uses it: the
// newest registry, which resolves numbers to carriers and binds keys to
// them. *discovery.Trust implements it. It is an interface so that the
// client, which gateways and tools embed, does not pull in node/discovery
// and its DHT, and so that tests can pass a fixed registry.
type Trust interface {
	protocol.KeyResolver
	// Resolve returns the carriers whose schemes a normalized number
	// satisfies; errors carry protocol codes (invalid_number,
	// bad_check_digit) unless no registry is held.
	Resolve(number string) ([]*protocol.CarrierEntry, error)
	// Registry is the registry held, nil for none.
	Registry() *protocol.Registry
}

// Connector makes sure the client's host has a connection to p, reusing
// one it already has. discovery.Router implements it (registry
// addresses, then peer routing); tests pass their own.
type Connector interface {
	Connect(ctx context.Context, p peer.ID) error
}

// TrackNumbers looks numbers up the way a platform does with no hub in
// between (spec 10.7): it normalizes each number and resolves it to its
// candidate carriers with trust, asks every candidate at once, one
// request per carrier of up to protocol.MaxNumbersPerRequest numbers,
// each to the carrier's registry nodes in order until one answers (a
// number answered rate_limited or unavailable goes on to the next node
// too), and verifies every record against the key the registry binds to
// that carrier at the head's time (KeySource "registry").
//
// It returns at least one view per number, in the order of numbers. A
// number more than one carrier holds is several parcels, so it gets one
// view per such carrier, in registry order, each labelled with its
// carrier: picking one would hide the others. A candidate that answers
// not_found or wrong_carrier is dropped. A record that fails
// verification is always shown, as a view with its error code, because
// dropping it would hide an attack. Candidates that could not answer
// (unreachable, rate_limited...) are shown only when no candidate holds
// the number; with none of that either, the number gets one not_found
// view. A number that normalizes or resolves to nothing gets one view with
// invalid_number or bad_check_digit, and no carrier is asked.
//
// err is only for what stops the whole lookup: a closed client, no
// registry, or ctx ending.
func (c *Client) TrackNumbers(ctx context.Context, trust Trust, conn Connector, numbers []string, grant []byte) ([]ParcelView, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	type planned struct {
		number     string
		candidates []*carrierWork
		view       *ParcelView // final already: the number is invalid
	}
	plan := make([]planned, len(numbers))
	work := map[string]*carrierWork{}
	var carriers []*carrierWork // in first-seen order, for a stable schedule
	for i, raw := range numbers {
		n, err := protocol.NormalizeNumber(raw)
		if err != nil {
			v := View(raw, "", nil, nil, err)
			plan[i].view = &v
			continue
		}
		plan[i].number = n
		entries, err := trust.Resolve(n)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				return nil, fmt.Errorf("client: resolve %s: %w", n, err)
			}
			v := View(n, "", nil, nil, err)
			plan[i].view = &v
			continue
		}
		for _, e := range entries {
			w := work[e.Code]
			if w == nil {
				w = newCarrierWork(e)
				work[e.Code] = w
				carriers = append(carriers, w)
			}
			w.add(n)
			plan[i].candidates = append(plan[i].candidates, w)
		}
	}

	c.askAll(ctx, trust, conn, carriers, grant)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client: track: %w", err)
	}

	out := make([]ParcelView, 0, len(numbers))
	for _, p := range plan {
		if p.view != nil {
			out = append(out, *p.view)
			continue
		}
		out = append(out, merge(p.number, p.candidates)...)
	}
	return out, nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// outcomeKind sorts what a candidate carrier said about a number.
type outcomeKind uint8

const (
	unanswered outcomeKind = iota // no node answered for it, or it answered an error (rate_limited...)
	absent                        // not_found or wrong_carrier: the carrier does not hold it
	found                         // a record that verified
	forged                        // a record that did not verify
)

type outcome struct {
	kind outcomeKind
	view ParcelView
}

// carrierWork is what TrackNumbers asks one carrier: its numbers, each
// once, and what came back for each.
type carrierWork struct {
	entry    *protocol.CarrierEntry
	nodes    []peer.ID
	numbers  []string
	index    map[string]int // number -> position in numbers and outcomes
	outcomes []outcome
	// preferred is the node to try first: a random one at the start, so
	// that a platform's requests spread over a carrier's nodes (replicas
	// on a shared database), then the last one that answered all it was
	// asked, so that after a failover the remaining requests skip the
	// node that failed.
	preferred atomic.Int32
}

func newCarrierWork(e *protocol.CarrierEntry) *carrierWork {
	w := &carrierWork{entry: e, nodes: CarrierPeers(e), index: map[string]int{}}
	if len(w.nodes) > 1 {
		w.preferred.Store(int32(rand.IntN(len(w.nodes))))
	}
	return w
}

// CarrierPeers returns the peer IDs of the nodes the registry lists for
// e, in registry order: the peers a watch of the carrier subscribes at.
func CarrierPeers(e *protocol.CarrierEntry) []peer.ID {
	var ids []peer.ID
	for _, n := range e.Nodes {
		// The registry was validated when installed, so a bad peer ID is
		// not expected; skipping it keeps one bad entry from stopping
		// the others.
		if id, err := peer.Decode(n.Peer); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// ordered returns the nodes from the preferred one on, in turn.
func (w *carrierWork) ordered() []peer.ID {
	k := int(w.preferred.Load())
	return append(slices.Clone(w.nodes[k:]), w.nodes[:k]...)
}

func (w *carrierWork) add(number string) {
	if _, dup := w.index[number]; dup {
		return
	}
	w.index[number] = len(w.numbers)
	w.numbers = append(w.numbers, number)
}

func (w *carrierWork) outcome(number string) *outcome { return &w.outcomes[w.index[number]] }

// askAll runs every carrier's requests, at most maxParallelRequests at a
// time. Each request writes only its own range of outcomes.
func (c *Client) askAll(ctx context.Context, trust Trust, conn Connector, carriers []*carrierWork, grant []byte) {
	sem := make(chan struct{}, maxParallelRequests)
	var wg sync.WaitGroup
	for _, w := range carriers {
		w.outcomes = make([]outcome, len(w.numbers))
		for start := 0; start < len(w.numbers); start += protocol.MaxNumbersPerRequest {
			end := min(start+protocol.MaxNumbersPerRequest, len(w.numbers))
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c.ask(ctx, trust, conn, w, start, end, grant)
			})
		}
	}
	wg.Wait()
}

// ask sends w.numbers[start:end] to w's nodes in turn, from the preferred
// one, and records an outcome for each number. A node that cannot be
// reached or refuses the whole request is skipped; numbers a node answers
// without an answer about the parcel (rate_limited, unavailable...) go on
// to the next node, since that is about the node, not the parcel.
func (c *Client) ask(ctx context.Context, trust Trust, conn Connector, w *carrierWork, start, end int, grant []byte) {
	code := w.entry.Code
	pending := w.numbers[start:end]
	noNode := fmt.Errorf("%w: %s lists no node", ErrNoAnswer, code)
	for _, n := range pending {
		*w.outcome(n) = outcome{kind: unanswered, view: View(n, code, nil, nil, noNode)}
	}
	first := int(w.preferred.Load())
	// answered is set once a node was reached: what it said (rate_limited
	// and when to retry) is worth more than a later node's "unreachable",
	// which must not overwrite it. Nodes are tried from a random one, so
	// the order must not decide which error the caller sees.
	answered := false
	for k := 0; k < len(w.nodes) && len(pending) > 0 && ctx.Err() == nil; k++ {
		at := (first + k) % len(w.nodes)
		p := w.nodes[at]
		queries := make([]protocol.TrackQuery, len(pending))
		for i, n := range pending {
			queries[i].Number = n
		}
		resp, refused, err := withoutRefusedGrant(grant, func(g []byte) (*protocol.TrackResponse, error) {
			return c.trackAt(ctx, conn, p, queries, g)
		})
		if err != nil || resp.Error != nil {
			reached := err == nil || protocol.CodeOf(err) != ""
			if answered && !reached {
				continue
			}
			answered = answered || reached
			var retryAfter uint64
			switch {
			case err == nil:
				err = refusal(fmt.Sprintf("node %s of %s", p, code), resp.Error)
				retryAfter = resp.Error.RetryAfter
			case protocol.CodeOf(err) == "":
				err = fmt.Errorf("%w: node %s of %s: %w", ErrNoAnswer, p, code, err)
			}
			for _, n := range pending {
				v := View(n, code, nil, nil, err)
				v.RetryAfter = retryAfter
				*w.outcome(n) = outcome{kind: unanswered, view: v}
			}
			continue
		}
		answered = true
		var still []string
		pageGrant := grant
		if refused != nil {
			pageGrant = nil // the node refused it: the later pages go without, as the first did
		}
		for i, h := range c.histories(ctx, p, code, trust, pending, resp.Results, pageGrant) {
			o := judge(h, code, c.bound())
			refused.mark(&o.view)
			*w.outcome(pending[i]) = o
			if o.kind == unanswered {
				still = append(still, pending[i])
			}
		}
		if len(still) == 0 {
			w.preferred.Store(int32(at))
		}
		pending = still
	}
}

// trackAt connects to p, within Options.ConnectTimeout, and sends it the
// queries.
func (c *Client) trackAt(ctx context.Context, conn Connector, p peer.ID, queries []protocol.TrackQuery, grant []byte) (*protocol.TrackResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	err := conn.Connect(cctx, p)
	cancel()
	if err != nil {
		return nil, err // the caller names the node
	}
	return c.Track(ctx, p, queries, grant)
}

// judge sorts a number's history from carrier, verified against the
// registry.
func judge(h *history, carrier, bound string) outcome {
	o := outcome{view: h.view(carrier, bound)}
	switch res := h.res; {
	case h.err == nil:
		o.kind = found
		if o.view.Verified {
			o.view.KeySource = KeySourceRegistry
		}
	case h.refused:
		o.kind = unanswered
	case res.Code == protocol.CodeOK:
		o.kind = forged
	case res.Code == protocol.CodeNotFound || res.Code == protocol.CodeWrongCarrier:
		o.kind = absent
	default:
		o.kind = unanswered
	}
	return o
}

// merge makes a number's views from what its candidate carriers said; see
// TrackNumbers for the rules.
func merge(number string, candidates []*carrierWork) []ParcelView {
	var held, unsure []ParcelView
	var asked []string
	for _, w := range candidates {
		o := w.outcome(number)
		switch o.kind {
		case found, forged:
			held = append(held, o.view)
		case unanswered:
			unsure = append(unsure, o.view)
		}
		asked = append(asked, w.entry.Code)
	}
	switch {
	case len(held) > 0:
		return held
	case len(unsure) > 0:
		return unsure
	case len(candidates) == 1:
		// The carrier's own answer, unless it disowned the number: the
		// registry says the number is its shape, so to the user it is
		// simply not there.
		if v := candidates[0].outcome(number).view; v.Error == protocol.CodeNotFound {
			return []ParcelView{v}
		}
		return []ParcelView{notFound(number, asked[0], asked)}
	default:
		return []ParcelView{notFound(number, "", asked)}
	}
}

func notFound(number, carrier string, asked []string) ParcelView {
	v := View(number, carrier, nil, nil, &protocol.Error{
		Code: protocol.CodeNotFound,
		Msg:  fmt.Sprintf("%s: no parcel at %s", number, strings.Join(asked, ", ")),
	})
	v.Answered = true // every carrier asked said so
	return v
}

// TrackPeer asks the one node p for numbers, as `opentrack track --peer`
// does, under the carrier the node says it serves. With trust, every
// record is verified against the keys the registry binds to that carrier
// (KeySource "registry"), so a node that is not the carrier's fails
// whatever keys it presents, and details are kept only from a node the
// registry lists for the carrier (spec 11.4). With trust nil there is no
// registry: the keys are those the node presents (KeySource "node"),
// which proves the chain and catches tampering in transit, but not who
// signed it.
//
// It returns one view per number, in order; a number that does not
// normalize gets an invalid_number view and is not sent.
func (c *Client) TrackPeer(ctx context.Context, p peer.ID, trust Trust, numbers []string, grant []byte) ([]ParcelView, error) {
	info, err := c.Info(ctx, p, 0)
	if err != nil {
		return nil, fmt.Errorf("client: info from %s: %w", p, err)
	}
	if info.Carrier == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoCarrier, p)
	}
	var keys protocol.KeyResolver = InfoKeys{Carrier: info.Carrier, Keys: info.Keys}
	source, listed := KeySourceNode, true
	if trust != nil {
		keys, source, listed = trust, KeySourceRegistry, listedFor(trust.Registry(), info.Carrier, p)
	}

	views := make([]ParcelView, len(numbers))
	var ask []string
	var at []int
	for i, raw := range numbers {
		n, err := protocol.NormalizeNumber(raw)
		if err != nil {
			views[i] = View(raw, info.Carrier, nil, nil, err)
			continue
		}
		ask, at = append(ask, n), append(at, i)
	}
	got, err := c.Lookup(ctx, p, info.Carrier, ask, keys, grant)
	if err != nil {
		return nil, err
	}
	for j, v := range got {
		if v.Verified {
			v.KeySource = source
		}
		if !listed {
			// Details are not signed: only a node the registry lists for
			// the carrier is believed about them.
			v.Details = nil
		}
		views[at[j]] = v
	}
	return views, nil
}

// listedFor reports whether the registry lists p as a node of carrier.
func listedFor(r *protocol.Registry, carrier string, p peer.ID) bool {
	if r == nil {
		return false
	}
	c := r.Carrier(carrier)
	if c == nil {
		return false
	}
	for _, n := range c.Nodes {
		if id, err := peer.Decode(n.Peer); err == nil && id == p {
			return true
		}
	}
	return false
}

// Resolve maps a tracking number as a person typed it to the carriers
// that may hold it, using only the registry: it normalizes the number and
// matches every carrier's schemes, S10 country and product, patterns and
// check digits. More than one carrier means the number is ambiguous, and
// TrackNumbers asks them all at once.
func Resolve(t Trust, number string) ([]*protocol.CarrierEntry, error) {
	n, err := protocol.NormalizeNumber(number)
	if err != nil {
		return nil, err
	}
	return t.Resolve(n)
}
