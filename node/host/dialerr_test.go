package host

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

// TestDialError: a dial to a peer whose nodes are gone reads as one line
// that names each address once and the peer not at all, and is still the
// swarm's error underneath.
func TestDialError(t *testing.T) {
	checkLeaks(t)
	a := newLoopback(t, nil)
	gone := newLoopback(t, nil)
	id := gone.ID()
	require.NoError(t, gone.Close())
	// A port nothing listens on: closed once it was taken.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ma.StringCast("/ip4/127.0.0.1/tcp/" + strings.Split(l.Addr().String(), ":")[1])
	require.NoError(t, l.Close())

	other := ma.StringCast("/ip4/127.0.0.2/tcp/" + strings.Split(l.Addr().String(), ":")[1])
	raw := a.Connect(context.Background(), peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{closed, other}})
	require.Error(t, raw)
	err = DialError(raw)
	text := err.Error()
	require.NotContains(t, text, "\n", "one line: %s", text)
	require.NotContains(t, text, id.String(), "the caller names the peer")
	require.Equal(t, 1, strings.Count(text, closed.String()), "each address once: %s", text)
	require.Equal(t, 1, strings.Count(text, other.String()), "each address once: %s", text)
	require.Contains(t, text, "connection refused")
	var de *swarm.DialError
	require.True(t, errors.As(err, &de), "the swarm's error is still underneath")
	require.ErrorIs(t, err, raw)

	plain := errors.New("not a dial error")
	require.Same(t, plain, DialError(plain))
}
