package admin_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/metrics"
)

const token = "test-token"

// start serves srv on a free loopback port until the test ends.
func start(t testing.TB, srv *admin.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, srv.Start(ln))
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv.URL()
}

// get sends a GET with the given Authorization header ("" for none).
func get(t *testing.T, url, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7401": true, "[::1]:0": true, "localhost:7401": true, "127.0.0.2:1": true,
		"0.0.0.0:7401": false, ":7401": false, "10.1.2.3:7401": false, "[::]:7401": false,
		"example.com:7401": false, "127.0.0.1": false,
	} {
		_, err := admin.New(&admin.Options{Addr: addr}, token, nil, nil, nil)
		if ok {
			require.NoError(t, err, addr)
		} else {
			require.ErrorIs(t, err, admin.ErrNotLoopback, addr)
			require.ErrorContains(t, err, "use 127.0.0.1, [::1] or localhost", addr)
		}
	}

	// A listener handed to Start is checked too.
	srv, err := admin.New(nil, token, nil, nil, nil)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	defer ln.Close()
	require.ErrorIs(t, srv.Start(ln), admin.ErrNotLoopback)
}

func TestNewValidates(t *testing.T) {
	_, err := admin.New(nil, "", nil, nil, nil)
	require.ErrorIs(t, err, admin.ErrNoToken)
	_, err = admin.New(&admin.Options{Addr: "0.0.0.0:1", ReadTimeout: -time.Second, MaxHeaderBytes: -1}, token, nil, nil, nil)
	require.ErrorIs(t, err, admin.ErrInvalidOptions)
	for _, want := range []string{"not loopback", "ReadTimeout -1s is negative", "MaxHeaderBytes -1 is negative"} {
		require.ErrorContains(t, err, want)
	}
	o := (*admin.Options)(nil).EnsureDefaults()
	require.Equal(t, "127.0.0.1:7401", o.Addr)
	require.Equal(t, 5*time.Second, o.ReadHeaderTimeout)
}

func TestRoutesAndAuth(t *testing.T) {
	var ingestCalls atomic.Int32
	ingest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ingestCalls.Add(1)
		_, _ = io.WriteString(w, "ingest "+r.URL.Path)
	})
	m := metrics.New()
	m.IngestBatches.Inc()
	var healthErr atomic.Pointer[error]
	health := func() error {
		if p := healthErr.Load(); p != nil {
			return *p
		}
		return nil
	}
	srv, err := admin.New(nil, token, ingest, m, health)
	require.NoError(t, err)
	url := start(t, srv)
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"))

	bearer := "Bearer " + token
	for _, tc := range []struct {
		path, auth string
		code       int
		contains   string
	}{
		{"/healthz", "", 200, "ok"},
		{"/v1/events", "", 401, "missing or wrong admin token"},
		{"/v1/events", "Bearer nope", 401, "missing or wrong admin token"},
		{"/v1/events", token, 401, ""},
		{"/v1/parcels/X", bearer, 200, "ingest /v1/parcels/X"},
		{"/metrics", "", 401, ""},
		{"/metrics", bearer, 200, "opentrack_ingest_batches_total 1"},
		{"/debug/pprof/", "", 401, ""},
		{"/debug/pprof/", bearer, 200, "goroutine"},
		{"/debug/pprof/cmdline", bearer, 200, ""},
		{"/debug/pprof/heap?debug=1", bearer, 200, "heap profile"},
		{"/nothing", bearer, 404, ""},
	} {
		code, body := get(t, url+tc.path, tc.auth)
		require.Equal(t, tc.code, code, "%s %q: %s", tc.path, tc.auth, body)
		require.Contains(t, body, tc.contains, tc.path)
	}
	require.Equal(t, int32(1), ingestCalls.Load(), "unauthenticated requests never reach ingest")

	down := errors.New("store closed")
	healthErr.Store(&down)
	code, body := get(t, url+"/healthz", "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "store closed")
}

// TestShutdownFinishesInFlight starts a slow request, shuts down while it
// runs, and requires the request to be answered before Shutdown returns.
func TestShutdownFinishesInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "committed")
	})
	srv, err := admin.New(nil, token, slow, nil, nil)
	require.NoError(t, err)
	url := start(t, srv)

	type answer struct {
		code int
		body string
	}
	answered := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, string(b)}
	}()
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	require.Equal(t, answer{200, "committed"}, <-answered)
	require.NoError(t, <-shut)

	_, err = http.Get(url + "/healthz")
	require.Error(t, err, "closed after Shutdown")
}

func TestListenAndServe(t *testing.T) {
	// Find a free port, then let the server listen on it by address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	srv, err := admin.New(&admin.Options{Addr: addr}, token, nil, nil, nil)
	require.NoError(t, err)
	require.Empty(t, srv.URL())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	require.Eventually(t, func() bool { return srv.URL() != "" }, 5*time.Second, 5*time.Millisecond)
	code, _ := get(t, srv.URL()+"/healthz", "")
	require.Equal(t, 200, code)
	require.ErrorIs(t, srv.ListenAndServe(), admin.ErrStarted)
	require.NoError(t, srv.Shutdown(context.Background()))
	require.NoError(t, <-done)
}
