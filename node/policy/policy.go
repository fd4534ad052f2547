package policy

import (
	"container/list"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// DenyRetryAfter is the retry-after a denied or not allowed peer is told.
// Lists change only when the node restarts, so there is no point in the
// peer asking again soon.
const DenyRetryAfter = time.Hour

// MemberFunc reports whether a peer is a registry member node.
type MemberFunc func(peer.ID) bool

// Policy is the per-peer admission policy of a carrier node. It
// implements service.Policy and is safe for concurrent use.
type Policy struct {
	opts    Options
	members MemberFunc
	now     func() time.Time
	allow   map[peer.ID]bool // nil admits every peer
	deny    map[peer.ID]bool

	mu    sync.Mutex
	peers map[peer.ID]*list.Element // of *buckets
	lru   list.List                 // front: most recently seen
}

// buckets are one peer's token buckets. Each rate.Limiter locks itself,
// so Policy.mu is held only to find them.
type buckets struct {
	id       peer.ID
	track    *rate.Limiter
	notFound *rate.Limiter
	watch    *rate.Limiter
}

// New checks opts and returns a Policy. A nil opts means all defaults.
// members says which peers are registry nodes, for Public "members"; nil
// means none are. now is the clock; nil means time.Now.
func New(opts *Options, members MemberFunc, now func() time.Time) (*Policy, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if members == nil {
		members = func(peer.ID) bool { return false }
	}
	if now == nil {
		now = time.Now
	}
	p := &Policy{opts: o, members: members, now: now, deny: peerSet(o.Deny), peers: map[peer.ID]*list.Element{}}
	if len(o.Allow) > 0 {
		p.allow = peerSet(o.Allow)
	}
	return p, nil
}

// peerSet decodes ids, which Validate has checked.
func peerSet(ids []string) map[peer.ID]bool {
	m := make(map[peer.ID]bool, len(ids))
	for _, s := range ids {
		id, err := peer.Decode(s)
		if err != nil {
			panic(fmt.Sprintf("policy: unchecked peer ID %q", s))
		}
		m[id] = true
	}
	return m
}

// admitted reports whether the lists let p in at all.
func (p *Policy) admitted(id peer.ID) bool {
	return !p.deny[id] && (p.allow == nil || p.allow[id])
}

// AdmitTrack admits a request for n numbers unless id is listed out, its
// not_found budget is spent, or its track bucket lacks n tokens. A
// refused request spends nothing; retryAfter is how long until it would
// be admitted.
func (p *Policy) AdmitTrack(id peer.ID, n int) (ok bool, retryAfter time.Duration) {
	if !p.admitted(id) {
		return false, DenyRetryAfter
	}
	b, now := p.buckets(id), p.now()
	// The not_found bucket may be in debt (see ObserveNotFound): the peer
	// waits until it holds a token again.
	if tokens := b.notFound.TokensAt(now); tokens < 1 {
		return false, ceilMillis(time.Duration((1 - tokens) / float64(b.notFound.Limit()) * float64(time.Second)))
	}
	return reserve(b.track, now, n)
}

// ObserveNotFound spends n tokens of id's not_found budget. It may run
// the bucket into debt, up to one burst: a peer that got a full batch of
// not_found answers pays for all of them before it is admitted again.
func (p *Policy) ObserveNotFound(id peer.ID, n int) {
	if n <= 0 {
		return
	}
	b := p.buckets(id)
	// ReserveN refuses more than a burst, so charge at most one; the
	// reservation is kept, never cancelled, which is what puts the bucket
	// in debt.
	b.notFound.ReserveN(p.now(), min(n, p.opts.NotFoundBurst))
}

// AdmitWatch admits one subscription from id.
func (p *Policy) AdmitWatch(id peer.ID) (ok bool, retryAfter time.Duration) {
	if !p.admitted(id) {
		return false, DenyRetryAfter
	}
	return reserve(p.buckets(id).watch, p.now(), 1)
}

// AllowPublic reports whether id may see public events, by Options.Public.
func (p *Policy) AllowPublic(id peer.ID) bool {
	if !p.admitted(id) {
		return false
	}
	switch p.opts.Public {
	case PublicOpen:
		return true
	case PublicMembers:
		return p.members(id)
	default:
		return false
	}
}

// reserve takes n tokens from l if it has them now, and otherwise takes
// none and says how long until it will.
func reserve(l *rate.Limiter, now time.Time, n int) (bool, time.Duration) {
	n = min(n, l.Burst()) // a request above a burst needs a full bucket
	r := l.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, ceilMillis(d)
	}
	return true, 0
}

// ceilMillis rounds d up to whole milliseconds, the unit of retry_after on
// the wire, so that a peer that waits as told is admitted.
func ceilMillis(d time.Duration) time.Duration {
	return max(time.Millisecond, (d + time.Millisecond - 1).Truncate(time.Millisecond))
}

// buckets returns id's buckets, making them full if id is new, and drops
// the least recently seen peer's when there are more than MaxPeers.
func (p *Policy) buckets(id peer.ID) *buckets {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.peers[id]; ok {
		p.lru.MoveToFront(e)
		return e.Value.(*buckets)
	}
	o := &p.opts
	b := &buckets{
		id:       id,
		track:    rate.NewLimiter(rate.Limit(o.TrackRate), o.TrackBurst),
		notFound: rate.NewLimiter(rate.Limit(o.NotFoundRate), o.NotFoundBurst),
		watch:    rate.NewLimiter(rate.Limit(o.WatchRate), o.WatchBurst),
	}
	p.peers[id] = p.lru.PushFront(b)
	if p.lru.Len() > o.MaxPeers {
		old := p.lru.Remove(p.lru.Back()).(*buckets)
		delete(p.peers, old.id)
	}
	return b
}

// Peers is how many peers' buckets are held.
func (p *Policy) Peers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}
