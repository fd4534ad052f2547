package client

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/memstore"
	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

// newClient starts a client host connected to srv and a Client over it.
func newClient(t *testing.T, srv *servicetest.Server, opts *Options) *Client {
	t.Helper()
	h := servicetest.NewHost(t, nil)
	servicetest.Connect(t, h, srv.Host)
	c, err := New(h, opts)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func queries(numbers ...string) []protocol.TrackQuery {
	q := make([]protocol.TrackQuery, len(numbers))
	for i, n := range numbers {
		q[i].Number = n
	}
	return q
}

// trackStreams counts the open track streams the server holds from c.
func trackStreams(srv *servicetest.Server, c *Client) int {
	n := 0
	for _, conn := range srv.Host.Network().ConnsToPeer(c.h.ID()) {
		for _, s := range conn.GetStreams() {
			if s.Protocol() == protocol.TrackID {
				n++
			}
		}
	}
	return n
}

func TestTrackRoundTrip(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 100, Events: 8})
	c := newClient(t, srv, nil)
	for _, n := range []int{1, 100} {
		t.Run("", func(t *testing.T) {
			var numbers []string
			for _, p := range srv.Parcels[:n] {
				numbers = append(numbers, p.Number)
			}
			resp, err := c.Track(context.Background(), srv.Host.ID(), queries(numbers...), nil)
			require.NoError(t, err)
			require.Len(t, resp.Results, n)
			for i := range resp.Results {
				p := srv.Parcels[i]
				v, err := VerifyResult(&resp.Results[i], servicetest.Carrier, servicetest.Keys(), protocol.Link{}, 0)
				require.NoError(t, err)
				require.True(t, v.Full)
				require.False(t, v.More)
				require.Equal(t, p.CIDs, v.CIDs)
				require.Len(t, v.Events, 8)
				require.Equal(t, p.Number, v.Head.Number)
				require.Equal(t, servicetest.Signer().KeyID(), v.KeyID)
			}
		})
	}
}

func TestTrackKnownHead(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 2, Events: 8})
	c := newClient(t, srv, nil)
	p, other := srv.Parcels[0], srv.Parcels[1]
	tests := []struct {
		name     string
		known    protocol.Link
		knownSeq uint64
		wantCIDs []int // indices into p.CIDs
		full     bool
	}{
		{"suffix", protocol.LinkTo(p.CIDs[4]), 4, []int{5, 6, 7}, false},
		{"up to date", p.Head(), 7, nil, false},
		{"another parcel's head: full history", other.Head(), 7, []int{0, 1, 2, 3, 4, 5, 6, 7}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Track(context.Background(), srv.Host.ID(), []protocol.TrackQuery{{Number: p.Number, Known: tc.known}}, nil)
			require.NoError(t, err)
			v, err := VerifyResult(&resp.Results[0], servicetest.Carrier, servicetest.Keys(), tc.known, tc.knownSeq)
			require.NoError(t, err)
			require.Equal(t, tc.full, v.Full)
			require.Len(t, v.CIDs, len(tc.wantCIDs))
			for i, j := range tc.wantCIDs {
				require.Equal(t, p.CIDs[j], v.CIDs[i])
				require.Equal(t, uint64(j), v.Events[i].Seq)
			}
		})
	}
}

// TestTrackPages follows more until the history is complete, verifying
// every page, as spec section 6.3 describes.
func TestTrackPages(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 8, Options: &service.Options{MaxEventsPerResult: 3}})
	c := newClient(t, srv, nil)
	p := srv.Parcels[0]

	var got []protocol.Link
	known, knownSeq := protocol.Link{}, uint64(0)
	for pages := 1; ; pages++ {
		require.LessOrEqual(t, pages, 3)
		resp, err := c.Track(context.Background(), srv.Host.ID(), []protocol.TrackQuery{{Number: p.Number, Known: known}}, nil)
		require.NoError(t, err)
		v, err := VerifyResult(&resp.Results[0], servicetest.Carrier, servicetest.Keys(), known, knownSeq)
		require.NoError(t, err)
		for i, id := range v.CIDs {
			got = append(got, protocol.LinkTo(id))
			known, knownSeq = protocol.LinkTo(id), v.Events[i].Seq
		}
		if !v.More {
			break
		}
	}
	require.Len(t, got, 8)
	for i := range got {
		require.True(t, got[i].Equals(p.CIDs[i]))
	}
}

func TestTrackResultCodes(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1})
	c := newClient(t, srv, nil)
	resp, err := c.Track(context.Background(), srv.Host.ID(), queries(servicetest.Number(5), "77!", "RB123456785GB"), nil)
	require.NoError(t, err)
	for i, want := range []string{protocol.CodeNotFound, protocol.CodeInvalidNumber, protocol.CodeWrongCarrier} {
		require.Equal(t, want, resp.Results[i].Code)
		_, err := VerifyResult(&resp.Results[i], servicetest.Carrier, servicetest.Keys(), protocol.Link{}, 0)
		require.Equal(t, want, protocol.CodeOf(err))
	}

	many := make([]protocol.TrackQuery, protocol.MaxNumbersPerRequest+1)
	_, err = c.Track(context.Background(), srv.Host.ID(), many, nil)
	require.ErrorIs(t, err, protocol.ErrTooLarge, "refused before it is sent")
}

// TestStreamReuse shows that sequential and concurrent requests share a
// few streams instead of opening one each.
func TestStreamReuse(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 10, Events: 2})
	c := newClient(t, srv, &Options{MaxIdleStreams: 4})
	ctx := context.Background()

	for i := range 20 {
		_, err := c.Track(ctx, srv.Host.ID(), queries(servicetest.Number(i%10)), nil)
		require.NoError(t, err)
	}
	require.Equal(t, 1, trackStreams(srv, c))

	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				resp, err := c.Track(ctx, srv.Host.ID(), queries(servicetest.Number((g+i)%10)), nil)
				if err == nil && resp.Results[0].Code != protocol.CodeOK {
					err = protocol.ErrInvalid
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	c.mu.Lock()
	idle := len(c.idle[srv.Host.ID()])
	c.mu.Unlock()
	require.LessOrEqual(t, idle, 4)
	require.Eventually(t, func() bool { return trackStreams(srv, c) == idle }, 2*time.Second, 10*time.Millisecond,
		"streams beyond the pool are closed")

	require.NoError(t, c.Close())
	require.Eventually(t, func() bool { return trackStreams(srv, c) == 0 }, 2*time.Second, 10*time.Millisecond,
		"Close closes the idle streams")
	_, err := c.Track(ctx, srv.Host.ID(), queries(servicetest.Number(0)), nil)
	require.ErrorIs(t, err, ErrClosed)
	_, err = c.Info(ctx, srv.Host.ID(), 0)
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, c.Close())
}

// TestStaleStream lets the server reset a pooled stream for idling; the
// next request notices and retries on a fresh stream.
func TestStaleStream(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1, Options: &service.Options{IdleTimeout: 50 * time.Millisecond}})
	c := newClient(t, srv, nil)
	for i := range 3 {
		resp, err := c.Track(context.Background(), srv.Host.ID(), queries(servicetest.Number(0)), nil)
		require.NoError(t, err)
		require.Equal(t, protocol.CodeOK, resp.Results[0].Code)
		// Every request after an idle spell met a stream the server had
		// reset, and went through on a fresh one.
		require.EqualValues(t, i, c.staleRetries.Load(), "stale streams retried after request %d", i+1)
		// Wait for the server's idle timeout (50ms), well inside the
		// client's own (30s): the pooled stream goes stale on the
		// server's side while the client still holds it.
		require.Eventually(t, func() bool { return trackStreams(srv, c) == 0 }, 10*time.Second, 10*time.Millisecond,
			"the server resets the idle stream")
	}
}

// TestIdleTimeout: a stream idle past the client's IdleTimeout is not
// reused; one idle for less is. It runs in a bubble, on fake time.
func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, h := bubbleServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1})
		c, err := New(h, &Options{IdleTimeout: 30 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		p := srv.Host.ID()
		pooled := func() *trackStream {
			t.Helper()
			_, err := c.Track(context.Background(), p, queries(servicetest.Number(0)), nil)
			require.NoError(t, err)
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.idle[p][0]
		}
		first := pooled()
		time.Sleep(30*time.Second - time.Millisecond)
		require.Same(t, first, pooled(), "idle for less than IdleTimeout: reused")
		time.Sleep(30 * time.Second)
		require.NotSame(t, first, pooled(), "idle for IdleTimeout: replaced")
	})
}

// bubbleServer is servicetest.StartServer on an in-memory network, with
// track only and cfg's Parcels, Events, Options and Track, and a second
// host linked and connected to it. Called inside a synctest bubble, both
// hosts belong to it: unlike loopback TCP, mocknet's pipes block durably,
// so fake time advances while a stream waits. Mocknet ignores stream
// deadlines, so a test that needs them cannot use it. synctest.Test fails
// on goroutines left in the bubble, which stands in for
// servicetest.CheckLeaks.
func bubbleServer(t *testing.T, cfg servicetest.ServerConfig) (*servicetest.Server, host.Host) {
	t.Helper()
	// A bubble's clock starts in 2000; the parcels' heads are signed in
	// 2026 (from January 1st, some a month later), and a head from the
	// future does not verify.
	time.Sleep(time.Until(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)))
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	srvHost, err := mn.GenPeer()
	require.NoError(t, err)
	h, err := mn.GenPeer()
	require.NoError(t, err)
	require.NoError(t, mn.LinkAll())
	_, err = mn.ConnectPeers(h.ID(), srvHost.ID())
	require.NoError(t, err)
	srv := &servicetest.Server{Host: srvHost, Store: memstore.New()}
	t.Cleanup(func() { srv.Store.Close() })
	for i := range cfg.Parcels {
		srv.Parcels = append(srv.Parcels, servicetest.NewParcel(t, servicetest.Number(i), cfg.Events))
	}
	servicetest.Load(t, srv.Store, srv.Parcels)
	tc := service.TrackConfig{Carrier: servicetest.Carrier, Schemes: []protocol.Scheme{servicetest.Scheme}, Store: srv.Store}
	if cfg.Track != nil {
		cfg.Track(&tc)
	}
	srv.Track, err = service.NewTrack(tc, cfg.Options)
	require.NoError(t, err)
	srv.Track.Register(srvHost)
	t.Cleanup(srv.Track.Unregister)
	return srv, h
}

// blockingStore never answers a lookup until its context ends.
type blockingStore struct{ service.TrackStore }

func (blockingStore) Parcel(ctx context.Context, _ string) (*store.Parcel, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestTrackContext(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Track: func(c *service.TrackConfig) { c.Store = blockingStore{c.Store} }})
	c := newClient(t, srv, &Options{RequestTimeout: 300 * time.Millisecond})
	q := queries(servicetest.Number(0))

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Track(ctx, srv.Host.ID(), q, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), time.Second)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.Track(ctx, srv.Host.ID(), q, nil)
	require.Error(t, err)
	require.Less(t, time.Since(start), time.Second)

	start = time.Now()
	_, err = c.Track(context.Background(), srv.Host.ID(), q, nil)
	require.Error(t, err, "RequestTimeout bounds a request without a deadline")
	require.Less(t, time.Since(start), time.Second)

	c.mu.Lock()
	require.Empty(t, c.idle[srv.Host.ID()], "failed streams are not pooled")
	c.mu.Unlock()
}

type registry struct{}

func (registry) Seq() uint64    { return 3 }
func (registry) Signed() []byte { return []byte("signed registry") }

func TestInfo(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Registry: registry{}})
	c := newClient(t, srv, nil)
	info, err := c.Info(context.Background(), srv.Host.ID(), 0)
	require.NoError(t, err)
	require.Equal(t, servicetest.Carrier, info.Carrier)
	require.Equal(t, version.Agent, info.Version)
	require.Equal(t, []string{protocol.InfoID, protocol.TrackID}, info.Protocols)
	require.Equal(t, uint64(3), info.RegistrySeq)
	require.Equal(t, []byte("signed registry"), info.Registry)

	info, err = c.Info(context.Background(), srv.Host.ID(), 3)
	require.NoError(t, err)
	require.Nil(t, info.Registry)
}

func TestUnreachable(t *testing.T) {
	servicetest.CheckLeaks(t)
	h := servicetest.NewHost(t, nil)
	c, err := New(h, nil)
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	nobody := servicetest.NewHost(t, nil).ID()
	_, err = c.Track(ctx, nobody, queries(servicetest.Number(0)), nil)
	require.Error(t, err)
	_, err = c.Info(ctx, nobody, 0)
	require.Error(t, err)
}

// TestDisconnect drops pooled streams when their connection closes.
func TestDisconnect(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Parcels: 1, Events: 1})
	c := newClient(t, srv, nil)
	p := srv.Host.ID()
	_, err := c.Track(context.Background(), p, queries(servicetest.Number(0)), nil)
	require.NoError(t, err)
	require.NoError(t, c.h.Network().ClosePeer(p))
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.idle[p]) == 0
	}, 2*time.Second, 10*time.Millisecond)
	servicetest.Connect(t, c.h, srv.Host)
	_, err = c.Track(context.Background(), p, queries(servicetest.Number(0)), nil)
	require.NoError(t, err)
}

func TestNewInvalid(t *testing.T) {
	_, err := New(host.Host(nil), &Options{MaxIdleStreams: -1, IdleTimeout: -1, RequestTimeout: -1})
	require.ErrorIs(t, err, ErrInvalidOptions)
	for _, w := range []string{"MaxIdleStreams", "IdleTimeout", "RequestTimeout"} {
		require.Contains(t, err.Error(), w)
	}
}
