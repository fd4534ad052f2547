package policy_test

import (
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/policy"
)

// clock is a manual clock for the buckets.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newPeer(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	id, err := peer.IDFromPublicKey(pub)
	require.NoError(t, err)
	return id
}

func newPolicy(t *testing.T, o *policy.Options, members policy.MemberFunc) (*policy.Policy, *clock) {
	t.Helper()
	c := newClock()
	p, err := policy.New(o, members, c.now)
	require.NoError(t, err)
	return p, c
}

func TestOptions(t *testing.T) {
	o := (&policy.Options{}).EnsureDefaults()
	require.Equal(t, policy.Options{
		TrackRate: 50, TrackBurst: 10000, NotFoundRate: 1, NotFoundBurst: 1000,
		AddrNotFoundRate: 2, AddrNotFoundBurst: 2000, GlobalNotFoundRate: 200, GlobalNotFoundBurst: 12000,
		Platforms: []string{}, PlatformNotFoundRate: 10, PlatformNotFoundBurst: 10000,
		WatchRate: 1, WatchBurst: 20, Public: "open", Allow: []string{}, Deny: []string{}, MaxPeers: 100000, MaxAddrs: 100000,
	}, *o)
	require.NoError(t, o.Validate())

	bad := (&policy.Options{TrackRate: -1, TrackBurst: 99, NotFoundBurst: -1, Public: "some", Deny: []string{"x"}, MaxPeers: -5,
		AddrNotFoundRate: -2, GlobalNotFoundBurst: -3, Platforms: []string{"y"}, PlatformNotFoundRate: -4, MaxAddrs: -6}).EnsureDefaults()
	err := bad.Validate()
	require.ErrorIs(t, err, policy.ErrInvalidOptions)
	for _, want := range []string{"track_rate -1", "track_burst 99", "not_found_burst -1", `public "some"`, `deny: "x"`, "max_peers -5",
		"addr_not_found_rate -2", "global_not_found_burst -3", `platforms: "y"`, "platform_not_found_rate -4", "max_addrs -6"} {
		require.Contains(t, err.Error(), want)
	}
	_, err = policy.New(bad, nil, nil)
	require.ErrorIs(t, err, policy.ErrInvalidOptions)
}

// TestTrackBucket: a request costs one token per number, and a refused
// one is told how long until the bucket holds enough, and spends nothing.
func TestTrackBucket(t *testing.T) {
	type step struct {
		advance time.Duration
		numbers int
		ok      bool
		retry   time.Duration
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"batch of 100 costs 100", []step{
			{0, 100, true, 0}, {0, 100, true, 0}, {0, 1, false, 20 * time.Millisecond},
		}},
		{"refusal spends nothing", []step{
			{0, 200, true, 0}, {0, 100, false, 2 * time.Second}, {0, 100, false, 2 * time.Second},
			{time.Second, 100, false, time.Second}, {time.Second, 100, true, 0}, {0, 1, false, 20 * time.Millisecond},
		}},
		{"refills to burst only", []step{
			{0, 200, true, 0}, {time.Hour, 200, true, 0}, {0, 1, false, 20 * time.Millisecond},
		}},
		{"retry rounds up to a millisecond", []step{
			{0, 200, true, 0}, {time.Millisecond / 2, 1, false, 20 * time.Millisecond},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, c := newPolicy(t, &policy.Options{TrackRate: 50, TrackBurst: 200}, nil)
			id := newPeer(t)
			for i, s := range tc.steps {
				c.advance(s.advance)
				ok, retry := p.AdmitTrack(id, nil, s.numbers)
				require.Equal(t, s.ok, ok, "step %d", i)
				require.Equal(t, s.retry, retry, "step %d", i)
			}
		})
	}
}

// TestNotFoundBudget: not_found answers spend a stricter budget, which
// may run into debt; while it is empty, track requests are refused.
func TestNotFoundBudget(t *testing.T) {
	cases := []struct {
		name     string
		notFound []int
		advance  time.Duration
		ok       bool
		retry    time.Duration
	}{
		{"within budget", []int{119}, 0, true, 0},
		{"spent", []int{120}, 0, false, time.Second},
		{"spent, refilled", []int{120}, time.Second, true, 0},
		{"debt of a batch", []int{100, 100}, 0, false, 81 * time.Second},
		{"debt capped at a burst a call", []int{120, 1000}, 0, false, 121 * time.Second},
		{"debt paid", []int{100, 100}, 81 * time.Second, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, c := newPolicy(t, &policy.Options{NotFoundRate: 1, NotFoundBurst: 120}, nil)
			id, other := newPeer(t), newPeer(t)
			for _, n := range tc.notFound {
				p.ObserveNotFound(id, nil, n)
			}
			c.advance(tc.advance)
			ok, retry := p.AdmitTrack(id, nil, 1)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.retry, retry)
			ok, _ = p.AdmitTrack(other, nil, 1)
			require.True(t, ok, "another peer's budget is its own")
		})
	}
}

// TestEnumeration, with the defaults: over ten minutes, a peer asking 600
// random numbers a minute (all not_found) is throttled to the not_found
// rate once its burst is spent, while a platform beside it asking 1200
// real numbers a minute (one in twenty not_found) is never refused.
func TestEnumeration(t *testing.T) {
	p, c := newPolicy(t, nil, nil)
	enum, legit := newPeer(t), newPeer(t)
	var enumServed, enumRefused int
	firstRefusal := time.Duration(-1)
	const minutes = 10
	for tick := range minutes * 60 * 2 { // every half second
		c.advance(500 * time.Millisecond)
		if ok, retry := p.AdmitTrack(enum, nil, 5); ok {
			enumServed += 5
			p.ObserveNotFound(enum, nil, 5)
		} else {
			require.Positive(t, retry)
			enumRefused++
			if firstRefusal < 0 {
				firstRefusal = time.Duration(tick+1) * 500 * time.Millisecond
			}
		}
		ok, _ := p.AdmitTrack(legit, nil, 10)
		require.True(t, ok, "legitimate peer refused at tick %d", tick)
		if tick%4 == 0 {
			p.ObserveNotFound(legit, nil, 1)
		}
	}
	// It spends the burst at 10 a second less the refill of 1.
	require.LessOrEqual(t, firstRefusal, time.Duration(policy.DefaultNotFoundBurst/9+1)*time.Second, "enumerator throttled once its burst is spent")
	require.Positive(t, enumRefused)
	// Burst plus the refill rate, plus one request of debt.
	require.LessOrEqual(t, enumServed, policy.DefaultNotFoundBurst+minutes*60*policy.DefaultNotFoundRate+5)
	t.Logf("enumerator: %d of %d numbers answered, first refusal after %v", enumServed, minutes*600, firstRefusal)
}

func TestWatchBucket(t *testing.T) {
	p, c := newPolicy(t, nil, nil)
	id := newPeer(t)
	for range policy.DefaultWatchBurst {
		ok, _ := p.AdmitWatch(id)
		require.True(t, ok)
	}
	ok, retry := p.AdmitWatch(id)
	require.False(t, ok)
	require.Equal(t, time.Second, retry)
	c.advance(time.Second)
	ok, _ = p.AdmitWatch(id)
	require.True(t, ok)
	// Watch and track budgets are apart.
	ok, _ = p.AdmitTrack(id, nil, 100)
	require.True(t, ok)
}

func TestLists(t *testing.T) {
	a, b, x := newPeer(t), newPeer(t), newPeer(t)
	cases := []struct {
		name        string
		allow, deny []peer.ID
		admitted    map[peer.ID]bool
	}{
		{"no lists", nil, nil, map[peer.ID]bool{a: true, b: true, x: true}},
		{"deny", nil, []peer.ID{a}, map[peer.ID]bool{a: false, b: true, x: true}},
		{"allow", []peer.ID{a, b}, nil, map[peer.ID]bool{a: true, b: true, x: false}},
		{"deny wins", []peer.ID{a, b}, []peer.ID{b}, map[peer.ID]bool{a: true, b: false, x: false}},
	}
	str := func(ids []peer.ID) []string {
		var out []string
		for _, id := range ids {
			out = append(out, id.String())
		}
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPolicy(t, &policy.Options{Allow: str(tc.allow), Deny: str(tc.deny)}, nil)
			for id, want := range tc.admitted {
				ok, retry := p.AdmitTrack(id, nil, 1)
				require.Equal(t, want, ok, id)
				wok, wretry := p.AdmitWatch(id)
				require.Equal(t, want, wok, id)
				require.Equal(t, want, p.AllowPublic(id), id)
				if !want {
					require.Equal(t, policy.DenyRetryAfter, retry)
					require.Equal(t, policy.DenyRetryAfter, wretry)
				}
			}
		})
	}
}

func TestPublicModes(t *testing.T) {
	member, outsider := newPeer(t), newPeer(t)
	members := func(id peer.ID) bool { return id == member }
	cases := []struct {
		mode             string
		members          policy.MemberFunc
		member, outsider bool
	}{
		{policy.PublicOpen, members, true, true},
		{policy.PublicMembers, members, true, false},
		{policy.PublicMembers, nil, false, false}, // no registry: nobody is a member
		{policy.PublicOff, members, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			p, _ := newPolicy(t, &policy.Options{Public: tc.mode}, tc.members)
			require.Equal(t, tc.member, p.AllowPublic(member))
			require.Equal(t, tc.outsider, p.AllowPublic(outsider))
			ok, _ := p.AdmitTrack(outsider, nil, 1) // grant holders are still served
			require.True(t, ok)
		})
	}
}

// TestMaxPeers: the bucket table never holds more than MaxPeers, and the
// least recently seen peer is the one dropped.
func TestMaxPeers(t *testing.T) {
	p, _ := newPolicy(t, &policy.Options{TrackBurst: 200, MaxPeers: 3}, nil)
	a, b, c, d := newPeer(t), newPeer(t), newPeer(t), newPeer(t)
	for _, id := range []peer.ID{a, b, c} {
		ok, _ := p.AdmitTrack(id, nil, 200) // drain
		require.True(t, ok)
	}
	p.AdmitTrack(a, nil, 1) // a is seen again; b is now the least recent
	p.AdmitTrack(d, nil, 1)
	require.Equal(t, 3, p.Peers())
	ok, _ := p.AdmitTrack(b, nil, 200)
	require.True(t, ok, "b was dropped and starts afresh")
	ok, _ = p.AdmitTrack(a, nil, 1)
	require.False(t, ok, "a was kept, still drained")
	for i := range 100 {
		p.ObserveNotFound(newPeer(t), nil, i)
	}
	require.Equal(t, 3, p.Peers())
}

// TestConcurrent is for the race detector.
func TestConcurrent(t *testing.T) {
	p, c := newPolicy(t, &policy.Options{MaxPeers: 8}, nil)
	ids := make([]peer.ID, 16)
	for i := range ids {
		ids[i] = newPeer(t)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				id := ids[(g*7+i)%len(ids)]
				if ok, _ := p.AdmitTrack(id, nil, 1+i%100); ok {
					p.ObserveNotFound(id, nil, i%3)
				}
				p.AdmitWatch(id)
				p.AllowPublic(id)
				if i%100 == 0 {
					c.advance(time.Second)
				}
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, p.Peers(), 8)
}

func BenchmarkAdmitTrack(b *testing.B) {
	c := newClock()
	p, err := policy.New(nil, nil, c.now)
	require.NoError(b, err)
	ids := make([]peer.ID, 1024)
	for i := range ids {
		ids[i] = peer.ID(fmt.Sprintf("peer-%d", i))
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			p.AdmitTrack(ids[i%len(ids)], nil, 1)
			i++
		}
	})
}

// TestAdmitNotFound: the check a watch makes before its statuses refuses
// once not_found answers spent the budget, spends nothing itself (the
// track bucket included), and admits again once the debt is repaid.
func TestAdmitNotFound(t *testing.T) {
	p, c := newPolicy(t, &policy.Options{NotFoundBurst: 10, NotFoundRate: 1, TrackBurst: 100, TrackRate: 1}, nil)
	id := newPeer(t)
	for range 100 {
		ok, _ := p.AdmitNotFound(id, nil)
		require.True(t, ok, "a fresh peer")
	}
	ok, _ := p.AdmitTrack(id, nil, 100)
	require.True(t, ok, "AdmitNotFound took no track tokens")
	for range 3 { // 30 not_found statuses: 20 in debt
		p.ObserveNotFound(id, nil, 10)
	}
	ok, retry := p.AdmitNotFound(id, nil)
	require.False(t, ok, "budget in debt")
	require.Equal(t, 21*time.Second, retry, "until one token is back")
	c.advance(21 * time.Second)
	ok, _ = p.AdmitNotFound(id, nil)
	require.True(t, ok, "debt repaid")
}
