package client

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

func TestWatchCursorFile(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 6)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	file := filepath.Join(t.TempDir(), "cursor")
	o := ws.options(a.Number)
	o.CursorFile, o.Cursor = file, "ignored-once-the-file-exists"
	o.CursorInterval = time.Hour // only the end of a stream writes it here

	w := ws.watch(t, o)
	sub := ws.fake.next()
	require.Equal(t, o.Cursor, sub.req.Cursor, "no file yet")
	sub.update(a, 0, 2, "c1")
	requireEvents(t, next(t, w), a, 0, 2, "c1")
	sub.heartbeat("c2")
	require.Eventually(t, func() bool { return w.Cursor() == "c2" }, 5*time.Second, 5*time.Millisecond)
	_, err := os.Stat(file)
	require.ErrorIs(t, err, os.ErrNotExist, "coalesced")
	sub.s.Reset()
	sub = ws.fake.next()
	require.Equal(t, "c2", sub.req.Cursor)
	require.Equal(t, "c2\n", readFile(t, file), "written when the stream ended")
	sub.update(a, 3, 3, "c3")
	requireEvents(t, next(t, w), a, 3, 3, "c3")
	require.Eventually(t, func() bool { return w.Cursor() == "c3" }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, w.Close())
	require.Equal(t, "c3\n", readFile(t, file), "written at Close")

	// A restart resumes from the file and, holding no head, back-fills.
	w = ws.watch(t, o)
	sub = ws.fake.next()
	require.Equal(t, "c3", sub.req.Cursor)
	sub.update(a, 4, 5, "c4")
	requireEvents(t, next(t, w), a, 0, 5, "c4")
	require.NoError(t, w.Close())
	require.Equal(t, "c4\n", readFile(t, file))

	// The file follows the stream within CursorInterval.
	o.CursorInterval = 20 * time.Millisecond
	w = ws.watch(t, o)
	sub = ws.fake.next()
	require.Equal(t, "c4", sub.req.Cursor)
	sub.heartbeat("c5")
	require.Eventually(t, func() bool { return readFile(t, file) == "c5\n" }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, w.Close())

	require.NoError(t, os.WriteFile(file, make([]byte, protocol.MaxCursorLen+1), 0o600))
	_, err = ws.c.Watch(context.Background(), o)
	require.ErrorIs(t, err, ErrCursorFile)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// TestWatchCursorFileDuringResync keeps the stale cursor in the file until
// the re-sync after unknown_cursor is done: a restart before then must
// re-sync again rather than resume past the gap.
func TestWatchCursorFileDuringResync(t *testing.T) {
	servicetest.CheckLeaks(t)
	a := servicetest.NewParcel(t, servicetest.Number(1), 3)
	ws := newWatchSetup(t, servicetest.ServerConfig{}, a)
	file := filepath.Join(t.TempDir(), "cursor")
	require.NoError(t, writeCursorFile(file, "stale"))
	o := ws.options(a.Number)
	o.CursorFile, o.CursorInterval = file, time.Millisecond

	w := ws.watch(t, o)
	sub := ws.fake.next()
	require.Equal(t, "stale", sub.req.Cursor)
	// Take the track service away, so that the re-sync cannot finish.
	ws.srv.Track.Unregister()
	sub.fail(protocol.CodeUnknownCursor)
	sub = ws.fake.next()
	require.Empty(t, sub.req.Cursor)
	sub.heartbeat("fresh")
	sub = ws.fake.next() // the re-sync failed, so did the stream
	require.Equal(t, "fresh", sub.req.Cursor)
	require.Equal(t, "stale\n", readFile(t, file))
	require.NoError(t, w.Close())
	require.Equal(t, "stale\n", readFile(t, file))
}
