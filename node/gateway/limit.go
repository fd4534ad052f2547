package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientKey is who a request counts against: the peer address of the
// connection, an IPv6 address by its /64, which one subscriber holds
// whole. Forwarded headers are not believed: behind a reverse proxy
// every client is the proxy.
func clientKey(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// limiter holds a token bucket per client. It keeps two generations of
// buckets: when the current one fills half of max, it becomes the old one
// and the older is dropped, so that at most max are held and a client
// seen in either generation keeps its bucket.
type limiter struct {
	rate  rate.Limit
	burst int
	half  int

	mu        sync.Mutex
	cur, prev map[netip.Addr]*rate.Limiter
}

func newLimiter(perSecond float64, burst, maxClients int) *limiter {
	return &limiter{rate: rate.Limit(perSecond), burst: burst, half: max(1, maxClients/2), cur: map[netip.Addr]*rate.Limiter{}}
}

// allow takes n tokens from key's bucket if it has them, and otherwise
// takes none and says how long until it will.
func (l *limiter) allow(key netip.Addr, n int, now time.Time) (bool, time.Duration) {
	b := l.bucket(key)
	n = min(n, l.burst)
	r := b.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (l *limiter) bucket(key netip.Addr) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.cur[key]; ok {
		return b
	}
	b, ok := l.prev[key]
	if !ok {
		b = rate.NewLimiter(l.rate, l.burst)
	}
	if len(l.cur) >= l.half {
		l.prev, l.cur = l.cur, make(map[netip.Addr]*rate.Limiter, l.half)
	}
	l.cur[key] = b
	return b
}

// streams counts open SSE streams, in total and per client.
type streams struct {
	max, perClient int

	mu     sync.Mutex
	total  int
	byAddr map[netip.Addr]int
}

func newStreams(total, perClient int) *streams {
	return &streams{max: total, perClient: perClient, byAddr: map[netip.Addr]int{}}
}

// open counts a stream for key, unless a bound is reached.
func (s *streams) open(key netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.max || s.byAddr[key] >= s.perClient {
		return false
	}
	s.total++
	s.byAddr[key]++
	return true
}

func (s *streams) close(key netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.byAddr[key]--; s.byAddr[key] <= 0 {
		delete(s.byAddr, key)
	}
}

// count is how many streams are open.
func (s *streams) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}
