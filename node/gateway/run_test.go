package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/node/service/servicetest"
)

// TestRunNotPlatform refuses to serve from what could verify nothing: no
// platform, one without trust, or trust still waiting for its registry.
func TestRunNotPlatform(t *testing.T) {
	servicetest.CheckLeaks(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	waiting, err := discovery.NewTrust([]ed25519.PublicKey{pub}, "", nil)
	require.NoError(t, err)
	open := func(cfg platform.Config, o *platform.Options) *platform.Platform {
		p, err := platform.Open(cfg, o)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, p.Close()) })
		return p
	}
	for _, tc := range []struct {
		name string
		p    *platform.Platform
	}{
		{"none", nil},
		{"no trust", open(platform.Config{}, nil)},
		{"no registry yet", open(platform.Config{Trust: waiting}, &platform.Options{Exchange: true})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			require.ErrorIs(t, Run(t.Context(), tc.p, ln, nil), ErrNotPlatform)
		})
	}
}
