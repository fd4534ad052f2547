package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/protocol"
)

// Reasons a handler resets a stream, the "reason" label of
// metrics.StreamResets.
const (
	reasonLimit   = "limit"     // the resource manager refused the stream
	reasonFrame   = "bad_frame" // bad length prefix, or a frame above the cap
	reasonDecode  = "decode"    // the frame is not a strict-CBOR message
	reasonTimeout = "timeout"   // idle or request deadline passed
)

// server is what every protocol handler shares: registration on one host,
// the set of open streams so that Unregister can end them, and metrics.
type server struct {
	id      libp2pprotocol.ID
	label   string // the "protocol" label of metrics.StreamResets
	metrics *metrics.Metrics
	log     *slog.Logger

	mu      sync.Mutex
	h       host.Host
	ctx     context.Context // ends at Unregister; store calls derive from it
	cancel  context.CancelFunc
	streams map[network.Stream]struct{}
	wg      sync.WaitGroup
}

func newServer(id libp2pprotocol.ID, label string, m *metrics.Metrics, log *slog.Logger) server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return server{id: id, label: label, metrics: m, log: log.With("protocol", string(id))}
}

// register starts serving on h. A server serves one host: register once,
// and unregister before registering again.
func (s *server) register(h host.Host, handler network.StreamHandler) {
	s.mu.Lock()
	s.h = h
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.streams = make(map[network.Stream]struct{})
	s.mu.Unlock()
	h.SetStreamHandler(s.id, handler)
}

// unregister stops accepting streams, resets the open ones and waits for
// their handlers to return, so that the store can be closed afterwards.
func (s *server) unregister() {
	s.mu.Lock()
	h := s.h
	if h == nil {
		s.mu.Unlock()
		return
	}
	h.RemoveStreamHandler(s.id)
	s.h = nil
	s.cancel()
	for st := range s.streams {
		st.Reset()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// open does what every handler does first, in the order the spec gives:
// it records the stream, charges it to its resource-manager service and
// reserves memory for it. It returns the server's context and done, which
// undoes all three; on failure it has reset the stream.
func (s *server) open(st network.Stream, service string, memory int) (ctx context.Context, done func(), ok bool) {
	ctx, ok = s.begin(st)
	if !ok {
		st.Reset()
		return nil, nil, false
	}
	if err := st.Scope().SetService(service); err != nil {
		s.reset(st, reasonLimit, err)
		s.end(st)
		return nil, nil, false
	}
	if err := st.Scope().ReserveMemory(memory, network.ReservationPriorityAlways); err != nil {
		s.reset(st, reasonLimit, err)
		s.end(st)
		return nil, nil, false
	}
	return ctx, func() {
		st.Scope().ReleaseMemory(memory)
		s.end(st)
	}, true
}

// begin records an open stream. It returns the server's context, and false
// when the server is no longer registered (a stream that raced unregister).
func (s *server) begin(st network.Stream) (context.Context, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return nil, false
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	return s.ctx, true
}

func (s *server) end(st network.Stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
	s.wg.Done()
}

// host returns the host served, nil after unregister.
func (s *server) host() host.Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h
}

// reset ends a stream because of the peer or a limit, and counts it.
func (s *server) reset(st network.Stream, reason string, err error) {
	st.Reset()
	if s.metrics != nil {
		s.metrics.StreamResets.WithLabelValues(s.label, reason).Inc()
	}
	s.log.Debug("stream reset", "peer", st.Conn().RemotePeer(), "reason", reason, "err", err)
}

// readFailed ends a stream whose next frame could not be read: a clean end
// between frames closes it, bad framing or a deadline resets and counts
// it, and anything else (the peer reset it) just resets it.
func (s *server) readFailed(st network.Stream, err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		st.Close()
	case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrBadFrame):
		s.reset(st, reasonFrame, err)
	case errors.As(err, &ne) && ne.Timeout():
		s.reset(st, reasonTimeout, err)
	default:
		st.Reset()
	}
}

// counters resolves one counter per label value up front, so that a hot
// path counts with a map lookup instead of a label hash.
func counters(vec *prometheus.CounterVec, labels ...string) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(labels))
	for _, l := range labels {
		m[l] = vec.WithLabelValues(l)
	}
	return m
}
