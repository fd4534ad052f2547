package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// TestPolicyEnumeration: a carrier node with a small not_found budget and
// two client hosts. The one asking random numbers is answered
// rate_limited, with a retry-after, once its not_found budget is spent;
// the one asking real parcels beside it keeps getting ok (and the odd
// not_found).
func TestPolicyEnumeration(t *testing.T) {
	servicetest.CheckLeaks(t)
	r, err := repo.Init(t.TempDir(), repo.InitOptions{Carrier: "SF", Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	// A track bucket too large to matter here, so that only the not_found
	// budget can refuse; it barely refills during the test.
	r.Config.Policy = policy.Options{TrackRate: 1000, TrackBurst: 1000, NotFoundRate: 0.01, NotFoundBurst: 30}
	n, err := node.Start(r, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Close() })
	c := &testCarrier{code: "SF", repo: r, node: n}
	parcels := []string{"SF0000001001", "SF0000001002", "SF0000001003"}
	for _, num := range parcels {
		c.ingest(t, num, 2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enum, pid := dialNode(t, ctx, n.NodeInfo())
	legit, _ := dialNode(t, ctx, n.NodeInfo())
	queries := func(numbers ...string) []protocol.TrackQuery {
		q := make([]protocol.TrackQuery, len(numbers))
		for i, num := range numbers {
			q[i] = protocol.TrackQuery{Number: num}
		}
		return q
	}
	rng := rand.New(rand.NewPCG(6, 6))
	const budgetRequests = 3 // of ten numbers: NotFoundBurst 30
	for req := range 10 {
		random := make([]string, 10)
		for i := range random {
			random[i] = fmt.Sprintf("SF9%011d", rng.Int64N(1e11))
		}
		resp, err := enum.Track(ctx, pid, queries(random...), nil)
		require.NoError(t, err)
		require.Nil(t, resp.Error)
		require.Len(t, resp.Results, len(random))
		for _, res := range resp.Results {
			if req < budgetRequests {
				require.Equal(t, protocol.CodeNotFound, res.Code, "request %d", req)
				continue
			}
			require.Equal(t, protocol.CodeRateLimited, res.Code, "request %d", req)
			require.Positive(t, res.RetryAfter)
		}

		// The platform beside it asks real parcels and one mistyped.
		resp, err = legit.Track(ctx, pid, queries(append(parcels, "SF0000009999")...), nil)
		require.NoError(t, err)
		require.Nil(t, resp.Error)
		for i, res := range resp.Results[:len(parcels)] {
			require.Equal(t, protocol.CodeOK, res.Code, "legit request %d, %s", req, parcels[i])
		}
		require.Equal(t, protocol.CodeNotFound, resp.Results[len(parcels)].Code)
	}
}

// TestPolicyFreshIDs: 50 fresh peer IDs dialing from one address share
// its not_found budget, where each used to bring a budget of its own; a
// platform the policy names, dialing from the same address, is still
// served from its own budget.
func TestPolicyFreshIDs(t *testing.T) {
	servicetest.CheckLeaks(t)
	r, err := repo.Init(t.TempDir(), repo.InitOptions{Carrier: "SF", Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	platKey, platID := newIdentity(t)
	const peerBurst, addrBurst, batch = 20, 100, 10
	// Refills too slow to matter during the test.
	r.Config.Policy = policy.Options{TrackRate: 1000, TrackBurst: 1000, NotFoundRate: 0.001, NotFoundBurst: peerBurst,
		AddrNotFoundRate: 0.001, AddrNotFoundBurst: addrBurst, Platforms: []string{platID.String()}}
	n, err := node.Start(r, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Close() })
	c := &testCarrier{code: "SF", repo: r, node: n}
	c.ingest(t, "SF0000001001", 2)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(16, 4))
	random := func() []protocol.TrackQuery {
		q := make([]protocol.TrackQuery, batch)
		for i := range q {
			q[i] = protocol.TrackQuery{Number: fmt.Sprintf("SF9%011d", rng.Int64N(1e11))}
		}
		return q
	}
	notFound := 0
	for i := range 50 {
		cl, pid := dialNode(t, ctx, n.NodeInfo())
		// Each ID asks until it is refused, at most its own burst.
		for range peerBurst/batch + 1 {
			resp, err := cl.Track(ctx, pid, random(), nil)
			require.NoError(t, err)
			require.Nil(t, resp.Error)
			if resp.Results[0].Code == protocol.CodeRateLimited {
				break
			}
			for _, res := range resp.Results {
				require.Equal(t, protocol.CodeNotFound, res.Code, "peer %d", i)
				notFound++
			}
		}
	}
	// The last admitted batch may run the address's bucket into debt.
	require.LessOrEqual(t, notFound, addrBurst+batch, "not_found answers to 50 fresh IDs from one address")
	require.GreaterOrEqual(t, notFound, addrBurst)

	plat, pid := dialNodeAs(t, ctx, platKey, n.NodeInfo())
	resp, err := plat.Track(ctx, pid, append(random(), protocol.TrackQuery{Number: "SF0000001001"}), nil)
	require.NoError(t, err)
	require.Nil(t, resp.Error)
	require.Equal(t, protocol.CodeNotFound, resp.Results[0].Code, "the platform is outside the spent address budget")
	require.Equal(t, protocol.CodeOK, resp.Results[batch].Code)
}
