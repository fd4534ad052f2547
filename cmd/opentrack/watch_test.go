package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// syncBuffer is a bytes.Buffer a running command writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watchRun is a running `opentrack watch`.
type watchRun struct {
	stdout, stderr *syncBuffer
	stop           context.CancelFunc // interrupts it
	done           chan struct{}      // closed when it has returned err
	err            error
}

// runWatch starts `opentrack watch args...`; it is stopped at the end of
// the test.
func runWatch(t *testing.T, args ...string) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &watchRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}, stop: cancel, done: make(chan struct{})}
	cmd := watchCmd()
	cmd.SetArgs(args)
	cmd.SetOut(r.stdout)
	cmd.SetErr(r.stderr)
	cmd.SetContext(ctx)
	go func() {
		defer close(r.done)
		r.err = cmd.Execute()
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// wait waits for the command to return, a minute at most.
func (r *watchRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(time.Minute):
		t.Fatalf("watch did not return within a minute; printed: %s", r.stdout.String())
		return nil
	}
}

// waitFor waits until s holds want, or the watch ended.
func (r *watchRun) waitFor(t *testing.T, s *syncBuffer, want string) {
	t.Helper()
	deadline := time.After(time.Minute)
	for !strings.Contains(s.String(), want) {
		select {
		case <-r.done:
			t.Fatalf("watch ended (%v) before printing %q: %s", r.err, want, s.String())
		case <-deadline:
			t.Fatalf("no %q within a minute; so far: %s", want, s.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func ingestOne(t *testing.T, c *testnet.Carrier, number, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.Ingest(ctx, []ingest.InputEvent{{ID: number + "/" + status, Number: number, Status: status,
		Time: time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), Location: protocol.Location{Country: "GB"}}})
	require.NoError(t, err)
}

// TestWatchEveryNumberResult: `watch` gives every number its line first,
// the current state of a stored parcel, not_found for one the carrier has
// not scanned yet and invalid_number for one no carrier claims, then
// "watching N parcels", and goes on: the unscanned parcel, once
// ingested, is printed. Before, a number the node lacked got no line.
func TestWatchEveryNumberResult(t *testing.T) {
	n := testnet.New(t, testnet.Options{Carriers: 2, Platforms: 1})
	c := n.Carriers[0]
	known, err := c.NewNumber()
	require.NoError(t, err)
	unknown, err := c.NewNumber()
	require.NoError(t, err)
	ingestOne(t, c, known, string(protocol.StatusPickedUp))
	dir := platformRepo(t, n)
	unclaimed := "ZZ1"

	t.Run("json", func(t *testing.T) {
		r := runWatch(t, "--repo", dir, "--json", known, unknown, unclaimed)
		stdout, stderr := r.stdout, r.stderr
		r.waitFor(t, stderr, "watching")
		require.Contains(t, stderr.String(), "watching 2 parcels\n")
		results := map[string]client.WatchUpdate{}
		for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			var u client.WatchUpdate
			require.NoError(t, json.Unmarshal([]byte(line), &u), line)
			require.NotContains(t, results, u.Number, "one line per number before watching: %s", stdout.String())
			results[u.Number] = u
		}
		require.Len(t, results, 3, stdout.String())
		require.True(t, results[known].Verified, "%+v", results[known])
		require.Len(t, results[known].Events, 1)
		require.Equal(t, protocol.CodeNotFound, results[unknown].Code, "%+v", results[unknown])
		require.Equal(t, c.Code, results[unknown].Carrier)
		require.Equal(t, protocol.CodeInvalidNumber, results[unclaimed].Code, "%+v", results[unclaimed])

		ingestOne(t, c, unknown, string(protocol.StatusPickedUp))
		r.waitFor(t, stdout, fmt.Sprintf(`{"number":%q,"carrier":%q,"verified":true`, unknown, c.Code))
		r.stop()
		require.NoError(t, r.wait(t))
	})

	t.Run("text", func(t *testing.T) {
		fresh, err := c.NewNumber()
		require.NoError(t, err)
		r := runWatch(t, "--repo", dir, fresh, unclaimed)
		stdout, stderr := r.stdout, r.stderr
		r.waitFor(t, stderr, "watching")
		require.Contains(t, stderr.String(), "watching 1 parcel\n")
		require.Contains(t, stdout.String(), fmt.Sprintf("%s  carrier %s  not_found: no such parcel at carrier %s\n", fresh, c.Code, c.Code))
		require.Contains(t, stdout.String(), unclaimed+"  invalid_number: ")
		r.stop()
		require.NoError(t, r.wait(t))
	})

	t.Run("none watchable", func(t *testing.T) {
		// At one carrier's node, another carrier's number: wrong_carrier,
		// and nothing is left to watch.
		foreign, err := n.Carriers[1].NewNumber()
		require.NoError(t, err)
		ai := c.AddrInfo()
		r := runWatch(t, "--repo", dir, "--peer", fmt.Sprintf("%s/p2p/%s", ai.Addrs[0], ai.ID), foreign)
		err = r.wait(t)
		require.Error(t, err)
		require.Equal(t, 2, exitCode(err), "%v", err)
		require.Contains(t, r.stdout.String(), foreign+"  carrier "+c.Code+"  wrong_carrier")
	})
}
