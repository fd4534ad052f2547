package policy

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/opentrack/opentrack/node/internal/sourcekey"
)

// DenyRetryAfter is the retry-after a denied or not allowed peer is told.
// Lists change only when the node restarts, so there is no point in the
// peer asking again soon.
const DenyRetryAfter = time.Hour

// MemberFunc reports whether a peer is a registry member node.
type MemberFunc func(peer.ID) bool

// Policy is the admission policy of a carrier node: budgets per peer,
// per source address and for the whole node. It implements
// service.Policy and is safe for concurrent use.
type Policy struct {
	opts      Options
	members   MemberFunc
	now       func() time.Time
	allow     map[peer.ID]bool // nil admits every peer
	deny      map[peer.ID]bool
	platforms map[peer.ID]bool

	peers  *table[peer.ID, *buckets]
	addrs  *table[netip.Prefix, *rate.Limiter]
	global *rate.Limiter // not_found answers to anonymous peers
}

// buckets are one peer's token buckets. Each rate.Limiter locks itself,
// so the table is locked only to find them.
type buckets struct {
	platform bool // which not_found budget notFound has
	track    *rate.Limiter
	notFound *rate.Limiter
	watch    *rate.Limiter
}

// New checks opts and returns a Policy. A nil opts means all defaults.
// members says which peers are registry nodes, for Public "members" and
// the platform budget; nil means none are. now is the clock; nil means
// time.Now.
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
	p := &Policy{
		opts: o, members: members, now: now, deny: peerSet(o.Deny), platforms: peerSet(o.Platforms),
		global: rate.NewLimiter(rate.Limit(o.GlobalNotFoundRate), o.GlobalNotFoundBurst),
	}
	if len(o.Allow) > 0 {
		p.allow = peerSet(o.Allow)
	}
	p.peers = newTable[peer.ID](o.MaxPeers, p.newBuckets)
	p.addrs = newTable[netip.Prefix](o.MaxAddrs, func(netip.Prefix) *rate.Limiter {
		return rate.NewLimiter(rate.Limit(o.AddrNotFoundRate), o.AddrNotFoundBurst)
	})
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

// platform reports whether id gets the platform budget: listed in
// Options.Platforms or a node the registry names.
func (p *Policy) platform(id peer.ID) bool {
	return p.platforms[id] || p.members(id)
}

// AdmitTrack admits a request for n numbers from id at addr unless id is
// listed out, a not_found budget it answers to is spent (its own; for an
// anonymous peer also its address's and the node's), or its track bucket
// lacks n tokens. A refused request spends nothing; retryAfter is how
// long until it would be admitted.
func (p *Policy) AdmitTrack(id peer.ID, addr ma.Multiaddr, n int) (ok bool, retryAfter time.Duration) {
	if ok, retry := p.AdmitNotFound(id, addr); !ok {
		return false, retry
	}
	return reserve(p.buckets(id).track, p.now(), n)
}

// AdmitNotFound reports whether id at addr may be told now which numbers
// do not exist: it is not listed out and every not_found budget it
// answers to holds a token. It spends nothing.
func (p *Policy) AdmitNotFound(id peer.ID, addr ma.Multiaddr) (ok bool, retryAfter time.Duration) {
	if !p.admitted(id) {
		return false, DenyRetryAfter
	}
	b, now := p.buckets(id), p.now()
	// A not_found bucket may be in debt (see ObserveNotFound): the peer
	// waits until each holds a token again.
	var wait time.Duration
	for _, l := range p.notFoundBuckets(b, addr) {
		if tokens := l.TokensAt(now); tokens < 1 {
			wait = max(wait, time.Duration((1-tokens)/float64(l.Limit())*float64(time.Second)))
		}
	}
	if wait > 0 {
		return false, ceilMillis(wait)
	}
	return true, 0
}

// ObserveNotFound spends n tokens of every not_found budget id at addr
// answers to. It may run a bucket into debt, up to one burst: a peer that
// got a full batch of not_found answers pays for all of them before it
// is admitted again.
func (p *Policy) ObserveNotFound(id peer.ID, addr ma.Multiaddr, n int) {
	if n <= 0 {
		return
	}
	now := p.now()
	for _, l := range p.notFoundBuckets(p.buckets(id), addr) {
		// ReserveN refuses more than a burst, so charge at most one; the
		// reservation is kept, never cancelled, which is what puts the
		// bucket in debt.
		l.ReserveN(now, min(n, l.Burst()))
	}
}

// notFoundBuckets are the not_found budgets a peer with buckets b at
// addr answers to: a platform only its own, an anonymous peer also its
// address's and the node's.
func (p *Policy) notFoundBuckets(b *buckets, addr ma.Multiaddr) []*rate.Limiter {
	if b.platform {
		return []*rate.Limiter{b.notFound}
	}
	return []*rate.Limiter{b.notFound, p.addrs.get(AddrKey(addr)), p.global}
}

// AddrKey is the source address a budget is kept for, the one node/host
// bounds handshakes by (sourcekey.Of):
// an IPv4 address whole and an IPv6 address by its /64.
func AddrKey(a ma.Multiaddr) netip.Prefix { return sourcekey.Of(a) }

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

// buckets returns id's buckets, full if id is new. A peer that became or
// stopped being a platform (the registry changed) starts afresh with the
// budget of its new class.
func (p *Policy) buckets(id peer.ID) *buckets {
	b := p.peers.get(id)
	if plat := p.platform(id); plat != b.platform {
		b = p.newBuckets(id)
		p.peers.put(id, b)
	}
	return b
}

func (p *Policy) newBuckets(id peer.ID) *buckets {
	o := &p.opts
	b := &buckets{
		platform: p.platform(id),
		track:    rate.NewLimiter(rate.Limit(o.TrackRate), o.TrackBurst),
		notFound: rate.NewLimiter(rate.Limit(o.NotFoundRate), o.NotFoundBurst),
		watch:    rate.NewLimiter(rate.Limit(o.WatchRate), o.WatchBurst),
	}
	if b.platform {
		b.notFound = rate.NewLimiter(rate.Limit(o.PlatformNotFoundRate), o.PlatformNotFoundBurst)
	}
	return b
}

// Peers is how many peers' buckets are held.
func (p *Policy) Peers() int { return p.peers.len() }

// Addrs is how many source addresses' buckets are held.
func (p *Policy) Addrs() int { return p.addrs.len() }

// table maps keys to values made on first use, and drops the least
// recently used past max entries, so that memory stays bounded however
// many keys an attacker makes up.
type table[K comparable, V any] struct {
	max  int
	make func(K) V

	mu  sync.Mutex
	m   map[K]*list.Element // of *entry[K, V]
	lru list.List           // front: most recently used
}

type entry[K comparable, V any] struct {
	k K
	v V
}

func newTable[K comparable, V any](max int, make func(K) V) *table[K, V] {
	return &table[K, V]{max: max, make: make, m: map[K]*list.Element{}}
}

// get returns k's value, making it if k is new.
func (t *table[K, V]) get(k K) V {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[k]; ok {
		t.lru.MoveToFront(e)
		return e.Value.(*entry[K, V]).v
	}
	v := t.make(k)
	t.add(k, v)
	return v
}

// put sets k's value.
func (t *table[K, V]) put(k K, v V) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[k]; ok {
		e.Value.(*entry[K, V]).v = v
		t.lru.MoveToFront(e)
		return
	}
	t.add(k, v)
}

// add inserts a new key; t.mu is held.
func (t *table[K, V]) add(k K, v V) {
	t.m[k] = t.lru.PushFront(&entry[K, V]{k, v})
	if t.lru.Len() > t.max {
		old := t.lru.Remove(t.lru.Back()).(*entry[K, V])
		delete(t.m, old.k)
	}
}

func (t *table[K, V]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}
