package gateway

import (
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// A carrier sees a gateway as one peer, so every web user behind it
// shares the carrier's not_found budget for that peer. The gateway keeps
// that budget from being spent by one user: each client has a not_found
// budget of its own, the gateway as a whole one below what carriers
// give it, and a short negative cache answers a number asked again
// without asking the carrier.

// notFoundBudget is the gateway's side of the anti-enumeration budget.
type notFoundBudget struct {
	clients *limiter // per client key, Options.NotFoundRate and NotFoundBurst
	global  *bucket  // over all clients, Options.GlobalNotFoundRate and GlobalNotFoundBurst
	neg     *negCache
}

func newNotFoundBudget(o *Options) *notFoundBudget {
	return &notFoundBudget{
		clients: newLimiter(o.NotFoundRate, o.NotFoundBurst, o.MaxClients),
		global:  newBucket(o.GlobalNotFoundRate, o.GlobalNotFoundBurst, time.Now()),
		neg:     newNegCache(o.NegativeTTL, o.MaxNegative),
	}
}

// admit says whether key may look up n numbers now, and if not, how
// long until it may. A client whose own budget is spent waits until it
// holds a token again. While the gateway's budget is spent, a client is
// let through only if its own budget covers the whole request, so that
// a client that never met not_found is served throughout while the ones
// spending the gateway's budget wait. An admitted request holds n of the
// gateway's tokens until settle, as if every number were not_found, so
// that requests running at once cannot together overspend it.
func (b *notFoundBudget) admit(key netip.Addr, n int, now time.Time) (bool, time.Duration) {
	own := b.clients.bucket(key)
	if wait := waitFor(own, 1, now); wait > 0 {
		return false, wait
	}
	if b.global.take(n, now, func() bool { return n <= own.Burst() && waitFor(own, n, now) == 0 }) {
		return true, 0
	}
	wait := b.global.wait(1, now)
	if n <= own.Burst() {
		wait = min(wait, waitFor(own, n, now))
	}
	return false, wait
}

// settle ends an admitted request of n numbers: n not_found answers go
// to key's budget and, of the asked numbers held from the gateway's, the
// ones not answered not_found are given back. Buckets may go into debt:
// a batch of not_found answers is paid whole before the next.
func (b *notFoundBudget) settle(key netip.Addr, n, held, asked int, now time.Time) {
	charge(b.clients.bucket(key), n, now)
	b.global.give(held - asked)
}

// waitFor is how long until l holds n tokens; 0 if it does now.
func waitFor(l *rate.Limiter, n int, now time.Time) time.Duration {
	tokens := l.TokensAt(now)
	if tokens >= float64(n) {
		return 0
	}
	return time.Duration((float64(n) - tokens) / float64(l.Limit()) * float64(time.Second))
}

// charge takes n tokens from l, into debt if need be; ReserveN refuses
// more than a burst at once, so it takes them a burst at a time.
func charge(l *rate.Limiter, n int, now time.Time) {
	for n > 0 {
		k := min(n, l.Burst())
		l.ReserveN(now, k)
		n -= k
	}
}

// bucket is a token bucket that can give tokens back, which rate.Limiter
// cannot once later reservations exist.
type bucket struct {
	rate, burst float64

	mu     sync.Mutex
	tokens float64
	at     time.Time
}

func newBucket(perSecond float64, burst int, now time.Time) *bucket {
	return &bucket{rate: perSecond, burst: float64(burst), tokens: float64(burst), at: now}
}

// refill brings tokens to now; b.mu is held.
func (b *bucket) refill(now time.Time) {
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
		b.at = now
	}
}

// take takes n tokens, into debt, if the bucket holds at least one or
// covered says the taker may go anyway, and reports whether it took them.
func (b *bucket) take(n int, now time.Time, covered func() bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens < 1 && !covered() {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// give returns n tokens taken, up to the burst.
func (b *bucket) give(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+float64(n))
}

// level is how many tokens the bucket holds at now, negative in debt.
func (b *bucket) level(now time.Time) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	return b.tokens
}

// wait is how long until the bucket holds n tokens.
func (b *bucket) wait(n int, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens >= float64(n) {
		return 0
	}
	return time.Duration((float64(n) - b.tokens) / b.rate * float64(time.Second))
}

// negCache remembers numbers every carrier answered not_found, for ttl.
// Like limiter it keeps two generations, so at most max numbers are
// held.
type negCache struct {
	ttl  time.Duration
	half int

	mu        sync.Mutex
	cur, prev map[string]negEntry
}

type negEntry struct {
	views []client.ParcelView
	until time.Time
}

func newNegCache(ttl time.Duration, maxNumbers int) *negCache {
	return &negCache{ttl: ttl, half: max(1, maxNumbers/2), cur: map[string]negEntry{}}
}

// get returns the views cached for number, if they are fresh.
func (c *negCache) get(number string, now time.Time) ([]client.ParcelView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cur[number]
	if !ok {
		e, ok = c.prev[number]
	}
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.views, true
}

// put caches views for number if every one of them is not_found.
func (c *negCache) put(number string, views []client.ParcelView, now time.Time) {
	if len(views) == 0 {
		return
	}
	for _, v := range views {
		if v.Error != protocol.CodeNotFound {
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) >= c.half {
		c.prev, c.cur = c.cur, make(map[string]negEntry, c.half)
	}
	c.cur[number] = negEntry{views: views, until: now.Add(c.ttl)}
}

// countNotFound is how many of views are not_found.
func countNotFound(views []client.ParcelView) int {
	n := 0
	for _, v := range views {
		if v.Error == protocol.CodeNotFound {
			n++
		}
	}
	return n
}

// shield rewrites a carrier's rate_limited answer, which is addressed to
// the gateway as a whole, as unavailable: the client asking did not
// cause it and must not be told it is rate limited.
func shield(views []client.ParcelView) {
	for i := range views {
		if views[i].Error == protocol.CodeRateLimited {
			views[i].Error = protocol.CodeUnavailable
			views[i].Message = "the carrier is refusing this gateway for now; retry later"
		}
	}
}

// budgeted is lookup for the client r comes from, within its not_found
// budget and the gateway's: numbers fresh in the negative cache are
// answered from it, the rest asked of the carriers, in one lookup; the
// answer keeps the order of numbers. A refused client gets a problem
// with its wait.
func (g *Gateway) budgeted(r *http.Request, numbers []string) ([]client.ParcelView, *problem) {
	key, now := clientKey(r), time.Now()
	if ok, wait := g.notFound.admit(key, len(numbers), now); !ok {
		g.m.RateLimited.Inc()
		return nil, newProblem(protocol.CodeRateLimited, "too many lookups of unknown numbers from this client; retry after the wait given").retryAfter(wait)
	}
	cached := make(map[string][]client.ParcelView)
	var ask []string
	for _, raw := range numbers {
		n := cacheKey(raw)
		if _, done := cached[n]; done {
			continue
		}
		if views, ok := g.notFound.neg.get(n, now); ok {
			cached[n] = views
			continue
		}
		cached[n] = nil // asked once, however often it is listed
		ask = append(ask, raw)
	}
	var asked []client.ParcelView
	if len(ask) > 0 {
		var p *problem
		if asked, p = g.lookup(r.Context(), ask); p != nil {
			// What the carriers answered is unknown: the held tokens stay
			// spent, as if all were not_found.
			return nil, p
		}
		shield(asked)
	}
	fresh := map[string][]client.ParcelView{}
	for _, v := range asked {
		fresh[v.Number] = append(fresh[v.Number], v)
	}
	now = time.Now()
	for n, views := range fresh {
		g.notFound.neg.put(n, views, now)
	}
	out := make([]client.ParcelView, 0, len(numbers))
	for _, raw := range numbers {
		n := cacheKey(raw)
		if views := cached[n]; views != nil {
			out = append(out, views...)
		} else {
			out = append(out, fresh[n]...)
		}
	}
	g.notFound.settle(key, countNotFound(out), len(numbers), countNotFound(asked), now)
	return out, nil
}

// cacheKey is the number as the client's views name it: normalized, or
// as sent when it does not normalize.
func cacheKey(raw string) string {
	if n, err := protocol.NormalizeNumber(raw); err == nil {
		return n
	}
	return raw
}
