package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// httpFrom is an HTTP client whose connections come from the loopback
// address ip, so that the gateway sees it as a client of its own.
func httpFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// post sends a batch and returns the status and, on 200, the views.
func post(t *testing.T, c *http.Client, url string, numbers []string) (int, []client.ParcelView, http.Header) {
	t.Helper()
	body, err := json.Marshal(batchRequest{Numbers: numbers})
	require.NoError(t, err)
	resp, err := c.Post(url+"/v1/track", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var views []client.ParcelView
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(b, &views), "%s", b)
	}
	return resp.StatusCode, views, resp.Header
}

// TestEnumeratorBesideHonest is defect 1 of issue 16: 11 addresses each
// send batches of 100 unknown numbers through one gateway, more than the
// carrier's default not_found budget for the gateway's peer (1000).
// Between their batches an honest client asks its real parcel; it is
// served every time, and the enumerators are refused by the gateway
// itself, with a wait.
func TestEnumeratorBesideHonest(t *testing.T) {
	f := newFixture(t, 1, nil)
	carrier := f.net.Carriers[0]
	parcel := book(t, carrier, "", protocol.StatusPickedUp, protocol.StatusInTransit)
	honest := httpFrom(t, "127.0.0.1")

	const addrs, rounds, batch = 11, 3, protocol.MaxNumbersPerRequest
	enumerators := make([]*http.Client, addrs)
	for i := range enumerators {
		enumerators[i] = httpFrom(t, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}).String())
	}
	var notFound, refused int
	for round := range rounds {
		for i, e := range enumerators {
			numbers := make([]string, batch)
			for j := range numbers {
				n, err := carrier.NewNumber()
				require.NoError(t, err)
				numbers[j] = n
			}
			status, views, h := post(t, e, f.url, numbers)
			switch status {
			case http.StatusOK:
				notFound += countNotFound(views)
			case http.StatusTooManyRequests:
				refused++
				require.NotEmpty(t, h.Get("Retry-After"), "round %d, enumerator %d: a 429 says when", round, i)
			default:
				t.Fatalf("round %d, enumerator %d: status %d", round, i, status)
			}

			status, views, _ = post(t, honest, f.url, []string{parcel})
			require.Equal(t, http.StatusOK, status, "round %d, after enumerator %d: the honest client is served", round, i)
			require.Len(t, views, 1)
			require.True(t, views[0].Verified, "round %d, after enumerator %d: %s %s", round, i, views[0].Error, views[0].Message)
		}
	}
	// The gateway's budget (500) and one batch of debt reached the
	// carrier, never the carrier's 1000.
	require.LessOrEqual(t, notFound, DefaultGlobalNotFoundBurst+batch, "not_found answers the enumerators got")
	require.Positive(t, refused, "the gateway refused the enumerators itself")
}

// TestNegativeCache: a number asked again within NegativeTTL is answered
// from the gateway, costing the carrier nothing, and still counts
// against the client's budget, so repeating one number gains nothing.
func TestNegativeCache(t *testing.T) {
	f := newFixture(t, 1, &Options{NotFoundBurst: 3, NotFoundRate: 0.001, NegativeTTL: time.Hour})
	carrier := f.net.Carriers[0]
	unknown, err := carrier.NewNumber()
	require.NoError(t, err)
	asked := func() float64 {
		return f.gw.Gateway.notFound.global.level(time.Now())
	}
	before := asked()
	c := httpFrom(t, "127.0.0.1")
	for i := range 3 {
		status, views, _ := post(t, c, f.url, []string{unknown})
		require.Equal(t, http.StatusOK, status, "lookup %d", i)
		require.Equal(t, protocol.CodeNotFound, views[0].Error, "lookup %d", i)
	}
	// The global budget refills at 0.5 a second, so it shows how often
	// the carriers were asked: once.
	require.InDelta(t, before-1, asked(), 0.5*float64(time.Minute/time.Second), "the carrier was asked once")
	status, _, h := post(t, c, f.url, []string{unknown})
	require.Equal(t, http.StatusTooManyRequests, status, "cached answers spend the client's budget")
	require.NotEmpty(t, h.Get("Retry-After"))
	status, _, _ = post(t, httpFrom(t, "127.0.0.5"), f.url, []string{unknown})
	require.Equal(t, http.StatusOK, status, "another client's budget is its own")
}

// TestShield: a carrier's rate_limited answer is to the gateway's peer,
// so a client is told the carrier is unavailable, with the wait, never
// that it is rate limited itself.
func TestShield(t *testing.T) {
	views := []client.ParcelView{
		{Number: "A", Error: protocol.CodeRateLimited, RetryAfter: 93000},
		{Number: "B", Error: protocol.CodeNotFound},
		{Number: "C", Verified: true},
	}
	shield(views)
	require.Equal(t, protocol.CodeUnavailable, views[0].Error)
	require.Equal(t, uint64(93000), views[0].RetryAfter)
	require.Equal(t, protocol.CodeNotFound, views[1].Error)
	require.Empty(t, views[2].Error)
}

// TestNotFoundBudgetAdmit: a client's spent budget refuses it; a spent
// gateway budget refuses only requests a client's own budget does not
// cover.
func TestNotFoundBudgetAdmit(t *testing.T) {
	now := time.Now()
	b := newNotFoundBudget((&Options{NotFoundBurst: 10, NotFoundRate: 1, GlobalNotFoundBurst: 30, GlobalNotFoundRate: 1}).EnsureDefaults())
	spender, clean := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	cases := []struct {
		name             string
		spendOwn, global int // charged to key, and to the gateway only
		key              netip.Addr
		n                int
		ok               bool
		wait             time.Duration
	}{
		{"fresh", 0, 0, spender, 100, true, 0},
		{"own spent", 10, 0, spender, 1, false, time.Second},
		{"clean, gateway has budget", 0, 0, clean, 100, true, 0},
		{"gateway spent, covered", 0, 30, clean, 5, true, 0},
		{"gateway spent, batch not covered", 0, 0, clean, 11, false, time.Second},
		{"gateway spent, batch above a burst", 0, 0, clean, 100, false, time.Second},
	}
	for _, tc := range cases {
		charge(b.clients.bucket(tc.key), tc.spendOwn, now)
		b.global.take(tc.global, now, func() bool { return true })
		ok, wait := b.admit(tc.key, tc.n, now)
		require.Equal(t, tc.ok, ok, tc.name)
		require.Equal(t, tc.wait, wait, tc.name)
		if ok {
			b.settle(tc.key, 0, tc.n, 0, now) // all found: the held tokens come back
		}
	}
	// Requests at once hold the gateway's budget between them: of 11
	// fresh clients asking 100 numbers each, only those the budget covers
	// before any answer are let through.
	b = newNotFoundBudget((&Options{NotFoundBurst: 20, GlobalNotFoundBurst: 500}).EnsureDefaults())
	admitted := 0
	for i := range 11 {
		if ok, _ := b.admit(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), 100, now); ok {
			admitted++
		}
	}
	require.Equal(t, 5, admitted)
}

// TestBudgetOptions: the not_found options have their defaults and
// each bad one is reported, all at once.
func TestBudgetOptions(t *testing.T) {
	o := (&Options{}).EnsureDefaults()
	require.Equal(t, DefaultNotFoundRate, o.NotFoundRate)
	require.Equal(t, DefaultGlobalNotFoundBurst, o.GlobalNotFoundBurst)
	require.Equal(t, 10*time.Second, o.NegativeTTL)
	bad := (&Options{NotFoundRate: -1, NotFoundBurst: -2, GlobalNotFoundRate: -3, GlobalNotFoundBurst: -4, NegativeTTL: -time.Second, MaxNegative: -5}).EnsureDefaults()
	err := bad.Validate()
	require.ErrorIs(t, err, ErrInvalidOptions)
	for _, want := range []string{"NotFoundRate (-1)", "NotFoundBurst (-2)", "GlobalNotFoundRate (-3)", "GlobalNotFoundBurst (-4)", "NegativeTTL (-1s)", "MaxNegative (-5)"} {
		require.ErrorContains(t, err, want)
	}
}
