package postgres_test

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/postgres"
	"github.com/opentrack/opentrack/node/store/postgres/pgtest"
	"github.com/opentrack/opentrack/node/store/storetest"
	"github.com/stretchr/testify/require"
)

// proxy forwards TCP connections to target until cut, which closes the
// listener and every connection: the database "dies" for its clients.
type proxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{l: l}
	p.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) cut() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestDatabaseDies: when the database goes away under a running store,
// every call fails with ErrUnavailable (never a panic, never a hang past
// its context), and nothing half-written shows once it is back.
func TestDatabaseDies(t *testing.T) {
	direct := pgtest.URL(t)
	u, err := url.Parse(direct)
	require.NoError(t, err)
	p := startProxy(t, u.Host)
	u.Host = p.l.Addr().String()
	ctx := t.Context()
	s, err := postgres.Open(ctx, &postgres.Options{URL: u.String(), ConnectTimeout: time.Second, PollInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	defer s.Close()
	up, c := storetest.NewChain(storetest.Number(1)).Update(t, 0, 1)
	res, err := s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{up}})
	require.NoError(t, err)

	p.cut()
	next, _ := c.Update(t, res.ParcelIDs[0], 1)
	_, err = s.Append(ctx, &store.Batch{Updates: []store.ParcelUpdate{next}})
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	_, err = s.Parcel(ctx, storetest.Number(1))
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	_, err = s.FeedTail(ctx)
	require.ErrorIs(t, err, postgres.ErrUnavailable)
	require.NoError(t, s.Close(), "a store closes while its database is away")

	back := open(t, direct)
	defer back.Close()
	got, err := back.Parcel(ctx, storetest.Number(1))
	require.NoError(t, err)
	require.Equal(t, uint64(0), got.Seq, "the failed append left nothing")
}
