package node_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestNodeWaitsForPostgres starts a carrier node whose database is not
// up: it keeps retrying, /healthz answers 503 with the reason, and once
// the database answers the node starts and /healthz says ok. Before, the
// node exited at once.
func TestNodeWaitsForPostgres(t *testing.T) {
	real := pgtest.URL(t)
	// pgxpool's Close leaves a health-check timer goroutine that ends
	// 500 ms later on its own.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).triggerHealthCheck.func1"))
	})
	u, err := url.Parse(real)
	require.NoError(t, err)
	target := u.Host
	dbAddr, adminAddr := freeAddr(t), freeAddr(t)
	u.Host = dbAddr
	r, err := repo.Init(filepath.Join(t.TempDir(), "sf"), repo.InitOptions{Carrier: "SF", Store: u.String(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx, r, node.Options{AdminAddr: adminAddr, Logger: quiet()}) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	healthz := func() (int, string) {
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Each wait is for the node to do one thing: answer at all, then
	// answer ok once the database is there.
	var code int
	var body string
	for range 600 {
		if code, body = healthz(); code != 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the node exited while its database was down: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "store unavailable, retrying")
	require.Contains(t, body, strings.Split(dbAddr, ":")[1], "the reason names the database it cannot reach")

	pgtest.StartProxy(t, dbAddr, target)
	for range 600 {
		if code, body = healthz(); code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, http.StatusOK, code, "the node starts once the database answers: %s", body)
	require.Equal(t, "ok\n", body)
}
