package testnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// nodeEnv makes the test binary act as `opentrack node`, so that --procs
// runs real node processes without building the command first.
const nodeEnv = "OPENTRACK_TESTNET_NODE"

func TestMain(m *testing.M) {
	if os.Getenv(nodeEnv) == "1" {
		os.Exit(runNode(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runNode does what `opentrack node --repo DIR --listen A --admin B`
// does.
func runNode(args []string) int {
	var dir, admin string
	var listen []string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--repo":
			dir = args[i+1]
		case "--listen":
			listen = append(listen, args[i+1])
		case "--admin":
			admin = args[i+1]
		}
	}
	r, err := repo.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := node.Run(ctx, r, node.Options{Listen: listen, AdminAddr: admin}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testCommand runs this test binary as a node process.
func testCommand(args ...string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), nodeEnv+"=1")
	return cmd
}

// short is a run small enough for `make test`, long enough for each
// scenario to act and recover inside it.
func short(scenario string, procs bool) testnet.Options {
	return testnet.Options{
		Carriers: 3, Platforms: 3, Parcels: 90, Rate: 60, QueryRate: 40,
		Duration: 6 * time.Second, Drain: 30 * time.Second, Seed: 7,
		Scenario: scenario, Procs: procs, Command: testCommand,
	}
}

// TestScenarios runs a short version of every scenario, in process and,
// for the two that act on processes, with carriers as node processes.
func TestScenarios(t *testing.T) {
	cases := []struct {
		name  string
		opts  testnet.Options
		check func(t *testing.T, r *testnet.Report)
	}{
		{"traffic", short("", false), nil}, // also follows a parcel: see followed below
		{"crash", short(testnet.ScenarioCrash, false), func(t *testing.T, r *testnet.Report) {
			requireTimeline(t, r, "killed", "restarted")
			d := requireDisrupted(t, r)
			require.Positive(t, d.FailuresSeen, "the carrier's scans were posted again while it was down")
		}},
		{"crash/procs", short(testnet.ScenarioCrash, true), func(t *testing.T, r *testnet.Report) {
			requireTimeline(t, r, "killed (kill -9", "restarted")
			d := requireDisrupted(t, r)
			require.Positive(t, d.PIDBefore)
			require.NotEqual(t, d.PIDBefore, d.PIDAfter, "a new process runs the carrier")
			require.Positive(t, r.IngestRetries, "the killed carrier's scans were posted again")
		}},
		{"partition", short(testnet.ScenarioPartition, false), func(t *testing.T, r *testnet.Report) {
			requireTimeline(t, r, "cut off", "healed")
			d := requireDisrupted(t, r)
			require.Equal(t, "platform1", d.Platform)
			require.Positive(t, d.Backlog, "events acknowledged during the cut waited for the heal")
		}},
		{"partition/procs", short(testnet.ScenarioPartition, true), func(t *testing.T, r *testnet.Report) {
			requireTimeline(t, r, "SIGSTOP", "healed")
			requireDisrupted(t, r)
		}},
		{"rogue", short(testnet.ScenarioRogue, false), func(t *testing.T, r *testnet.Report) {
			require.Positive(t, r.ForgedRecordsRejected, "forged records, not only the registry, were rejected")
			require.EqualValues(t, 3, r.ForgedRegistriesRejected, "one forged registry per platform")
			require.Equal(t, r.ForgedRecordsRejected+r.ForgedRegistriesRejected, r.RejectedForgeries)
			require.Zero(t, r.ForgeriesAccepted)
			requireTimeline(t, r, "rogue node", "forged registry", "rogue recorded")
		}},
		{"cutoff", short(testnet.ScenarioCutoff, false), func(t *testing.T, r *testnet.Report) {
			requireTimeline(t, r, "platform3 disappeared")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			servicetest.CheckLeaks(t)
			o := tc.opts
			o.Dir = t.TempDir()
			var mu sync.Mutex
			var followed []testnet.Followed
			if tc.name == "traffic" {
				o.Follow = func(f testnet.Followed) { mu.Lock(); followed = append(followed, f); mu.Unlock() }
			}
			r, err := testnet.Run(context.Background(), o)
			require.NoError(t, err)
			if o.Follow != nil {
				mu.Lock()
				defer mu.Unlock()
				require.NotEmpty(t, followed, "the first platform's first parcel was followed")
				for i, f := range followed {
					require.Equal(t, followed[0].Number, f.Number, "one parcel is followed")
					require.Equal(t, "platform1", f.Platform)
					require.EqualValues(t, i, f.Event.Seq, "its events arrive once each, in order, from seq 0: %v", followed)
				}
			}
			b, _ := json.MarshalIndent(r, "", "  ")
			t.Logf("report: %s", b)
			require.True(t, r.Passed, "failures: %v; errors: %v", r.Failures, r.ErrorSamples)
			require.Zero(t, r.Errors, "errors: %v", r.ErrorSamples)
			require.Zero(t, r.LostUpdates)
			require.Zero(t, r.VerificationFailures)
			require.Zero(t, r.DetailsLeaked)
			require.Positive(t, r.EventsIngested)
			require.Positive(t, r.UpdatesDelivered)
			require.Positive(t, r.Queries)
			require.Positive(t, r.DetailsGranted, "the grant holder saw details")
			require.Positive(t, r.WatchDetailsGranted, "the grant holder's watch brought details")
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// requireDisrupted checks that a crash or partition had its effect (a
// platform's lookup during it could not reach the carrier) and that the
// platforms caught up: a verified answer again, and (the drain's
// lost_updates = 0, checked by the caller) every event delivered.
func requireDisrupted(t *testing.T, r *testnet.Report) *testnet.Disruption {
	t.Helper()
	d := r.Disruption
	require.NotNil(t, d, "the report records the disruption")
	require.Equal(t, "unavailable", d.Probe, "a lookup during the disruption could not reach the carrier")
	require.GreaterOrEqual(t, d.RecoveryS, 0.0, "the platforms reached the carrier again")
	require.Zero(t, r.LostUpdates, "the platforms caught up with every event, the backlog of %d included", d.Backlog)
	return d
}

func requireTimeline(t *testing.T, r *testnet.Report, want ...string) {
	t.Helper()
	for _, w := range want {
		require.True(t, slices.ContainsFunc(r.Timeline, func(s string) bool { return strings.Contains(s, w) }), "timeline lacks %q: %v", w, r.Timeline)
	}
}

// TestControls drives a testnet by hand, as other packages' tests do:
// ingest, watch, partition and heal, kill and restart.
func TestControls(t *testing.T) {
	servicetest.CheckLeaks(t)
	n := testnet.New(t, testnet.Options{Carriers: 2, Platforms: 2})
	c, p, other := n.Carriers[1], n.Platforms[0], n.Platforms[1]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	w, err := p.WatchAudience(ctx, c)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, n.WaitFor(10*time.Second, func() bool { return w.Cursor() != "" }))

	number, err := c.NewNumber()
	require.NoError(t, err)
	scan := func(i int) string {
		res, err := c.Ingest(ctx, []ingest.InputEvent{{
			ID: fmt.Sprintf("%s-%d", number, i), Number: number, Time: time.Now().UTC().Format(time.RFC3339Nano),
			Status: string(protocol.StatusInTransit), Location: protocol.Location{Country: "GB"}, Audience: []string{p.ID.String()},
		}})
		require.NoError(t, err)
		require.Equal(t, ingest.StatusAccepted, res[0].Status, res[0].Error)
		return res[0].CID
	}
	got := map[string]bool{}
	receive := func(cid string) {
		t.Helper()
		for !got[cid] {
			select {
			case u := <-w.Updates():
				require.True(t, u.Verified, u.Message)
				for _, e := range u.Events {
					got[e.CID] = true
				}
			case <-ctx.Done():
				t.Fatalf("event %s never arrived", cid)
			}
		}
	}
	receive(scan(0))

	// Cut p off: its lookups fail, the other platform's do not, and the
	// scans made meanwhile reach p once the cut heals.
	require.NoError(t, n.Partition(p, c))
	views, err := p.Track(ctx, nil, number)
	require.NoError(t, err)
	require.Equal(t, protocol.CodeUnavailable, views[0].Error)
	views, err = other.Track(ctx, nil, number)
	require.NoError(t, err)
	require.True(t, views[0].Verified, views[0].Message)
	cut := scan(1)
	require.NoError(t, n.Heal(p, c))
	receive(cut)

	// Kill and restart: same peer, same addresses, same store.
	require.NoError(t, n.Kill(c))
	require.False(t, c.Up())
	views, err = other.Track(ctx, nil, number)
	require.NoError(t, err)
	require.Equal(t, protocol.CodeUnavailable, views[0].Error)
	require.NoError(t, n.Restart(ctx, c))
	require.NoError(t, n.WaitFor(15*time.Second, func() bool {
		views, err = other.Track(ctx, nil, number)
		return err == nil && views[0].Verified
	}))
	require.Len(t, views[0].Events, 2)
	receive(scan(2))
}

// TestCarrierSchemes checks that every carrier of a large testnet issues
// numbers that its scheme accepts and that the registry resolves to it
// alone: distinct schemes, one of them S10.
func TestCarrierSchemes(t *testing.T) {
	n := testnet.New(t, testnet.Options{Carriers: 12, Platforms: 1})
	p := n.Platforms[0]
	kinds := map[string]bool{}
	for _, c := range n.Carriers {
		kinds[c.Scheme] = true
		for range 3 {
			number, err := c.NewNumber()
			require.NoError(t, err)
			got, err := p.Platform.Trust().Resolve(number)
			require.NoError(t, err, number)
			require.Len(t, got, 1, "%s resolves to one carrier", number)
			require.Equal(t, c.Code, got[0].Code, number)
		}
	}
	require.NoError(t, protocol.ValidS10(mustNumber(t, n.Carriers[0])))
	require.Greater(t, len(kinds), 4, "carriers use several schemes: %v", kinds)
}

func mustNumber(t *testing.T, c *testnet.Carrier) string {
	t.Helper()
	n, err := c.NewNumber()
	require.NoError(t, err)
	return n
}

func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		name string
		o    testnet.Options
		want string
	}{
		{"defaults", testnet.Options{}, ""},
		{"too few parcels", testnet.Options{Carriers: 5, Parcels: 3}, "parcels 3"},
		{"unknown scenario", testnet.Options{Scenario: "flood"}, `scenario "flood"`},
		{"cutoff alone", testnet.Options{Platforms: 1, Scenario: testnet.ScenarioCutoff}, "cutoff needs"},
		{"rogue alone", testnet.Options{Carriers: 1, Parcels: 10, Scenario: testnet.ScenarioRogue}, "rogue needs"},
		{"negative rate", testnet.Options{Rate: -1}, "rate -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.EnsureDefaults().Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, testnet.ErrInvalidOptions)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
