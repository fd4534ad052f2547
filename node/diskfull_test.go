package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
)

// smallDisk mounts a tmpfs of size bytes for the test and unmounts it at
// cleanup; the test is skipped where mounting is not allowed.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	require.NoError(t, os.Mkdir(dir, 0o700))
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): the full-disk test needs root", err)
	}
	t.Cleanup(func() { require.NoError(t, syscall.Unmount(dir, 0)) })
	return dir
}

// fillTo writes a ballast file until the filesystem of dir has about
// left bytes free, and returns its path.
func fillTo(t *testing.T, dir string, left uint64) string {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		free, err := store.FreeBytes(dir)
		require.NoError(t, err)
		if free <= left {
			return path
		}
		n := min(uint64(len(chunk)), free-left)
		_, err = f.Write(chunk[:n])
		require.NoError(t, err, "filling to %d bytes free", left)
	}
}

type adminClient struct {
	url, token string
}

func (a adminClient) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", ingest.TypeNDJSON)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// scans is an NDJSON batch of n scans of number, ids from first on.
func scans(number string, first, n int) string {
	var b strings.Builder
	start := time.Now().Add(-time.Hour)
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, `{"id":"%s-%d","number":"%s","time":"%s","status":"in_transit","location":{"country":"GB"}}`+"\n",
			number, i, number, start.Add(time.Duration(i)*time.Second).UTC().Format(time.RFC3339))
	}
	return b.String()
}

// TestFullDisk runs a carrier node on a 64 MiB tmpfs with a 16 MiB
// reserve. Filled to below the reserve, ingest answers 507 and
// acknowledges nothing, track keeps serving every acknowledged event,
// /healthz says degraded and why, /metrics shows opentrack_store_writable
// 0; freed, ingest resumes by itself; restarted on a full disk, the node
// comes up read-only and says so. Before, pebble met ENOSPC and exited
// the process, and a restart on the full disk hung.
//
// long: one node's life on a full disk, in order: fill, refuse, free, restart.
func TestFullDisk(t *testing.T) {
	servicetest.CheckLeaks(t)
	disk := smallDisk(t, 64<<20)
	r, err := repo.Init(filepath.Join(disk, "repo"), repo.InitOptions{Carrier: "DF", Schemes: []string{`DF\d{8}`}, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	r.Config.Store.ReserveMB, r.Config.Store.MemTableMB, r.Config.Store.CacheMB = 16, 4, 8
	start := func() (*node.Node, adminClient) {
		n, err := node.Start(r, node.Options{AdminAddr: "127.0.0.1:0", Logger: quiet()})
		require.NoError(t, err)
		return n, adminClient{url: n.AdminURL(), token: r.AdminToken}
	}
	n, admin := start()
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const number = "DF12345678"
	acked := 0
	post := func(first, count int) (int, string) {
		code, body := admin.do(t, "POST", "/v1/events", scans(number, first, count))
		if code == http.StatusOK {
			require.Contains(t, body, fmt.Sprintf(`"accepted":%d`, count))
			acked = max(acked, first+count)
		}
		return code, body
	}
	code, body := post(0, 100)
	require.Equal(t, http.StatusOK, code, body)

	// lookup tracks number on n and checks every acknowledged event.
	lookup := func(n *node.Node) {
		t.Helper()
		cl, p := dialNode(t, ctx, n.NodeInfo())
		views, err := cl.TrackPeer(ctx, p, nil, []string{number}, nil)
		require.NoError(t, err)
		require.True(t, views[0].Verified, "%s: %s", views[0].Error, views[0].Message)
		require.Len(t, views[0].Events, acked, "every acknowledged event is served")
	}
	requireRefused := func(want string) {
		t.Helper()
		// The node reuses a free-space reading for up to 100 ms
		// (store.Space), so a batch posted just after the disk filled may
		// still be taken: the reserve is there for it. Post until the
		// refusal, a bounded number of times.
		code, body := post(acked, 10)
		for i := 0; code == http.StatusOK && i < 1000; i++ {
			time.Sleep(10 * time.Millisecond)
			code, body = post(acked, 10)
		}
		require.Equal(t, http.StatusInsufficientStorage, code, body)
		require.Contains(t, body, "nothing acknowledged")
		require.Contains(t, body, want)
		code, body = admin.do(t, "GET", "/healthz", "")
		require.Equal(t, http.StatusOK, code, "lookups stay in rotation: %s", body)
		require.Contains(t, body, "degraded: ")
		require.Contains(t, body, want)
		_, body = admin.do(t, "GET", "/metrics", "")
		require.Contains(t, body, "opentrack_store_writable 0")
		require.Contains(t, body, "opentrack_store_reserve_bytes 1.6777216e+07")
		require.Regexp(t, `opentrack_ingest_refused_disk_full_total [1-9]`, body)
		lookup(n)
	}

	ballast := fillTo(t, disk, 8<<20)
	requireRefused("reserve 16777216")

	require.NoError(t, os.Remove(ballast))
	code, body = post(acked, 10)
	for i := 0; code == http.StatusInsufficientStorage && i < 1000; i++ { // the reading of a full disk may still be reused
		time.Sleep(10 * time.Millisecond)
		code, body = post(acked, 10)
	}
	require.Equal(t, http.StatusOK, code, "ingest resumes once space is freed: %s", body)
	code, body = admin.do(t, "GET", "/healthz", "")
	require.Equal(t, "ok\n", body, "%d", code)
	lookup(n)

	require.NoError(t, n.Close())
	fillTo(t, disk, 4<<20)
	n, admin = start()
	requireRefused("opened read-only")
}
