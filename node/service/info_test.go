package service_test

import (
	"crypto/ed25519"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

type registry struct {
	seq    uint64
	signed []byte
}

func (r registry) Seq() uint64    { return r.seq }
func (r registry) Signed() []byte { return r.signed }

func TestInfo(t *testing.T) {
	servicetest.CheckLeaks(t)
	reg := registry{seq: 7, signed: []byte("signed registry")}
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Registry: reg})
	tests := []struct {
		name         string
		have         uint64
		wantRegistry []byte
	}{
		{"requester has none", 0, reg.signed},
		{"requester is behind", 6, reg.signed},
		{"requester is current", 7, nil},
		{"requester is ahead", 8, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.InfoID)
			raw.sendMsg(&protocol.InfoRequest{RegistrySeq: tc.have})
			require.NoError(t, raw.s.SetReadDeadline(time.Now().Add(5*time.Second)))
			body, err := raw.frames.Next()
			require.NoError(t, err)
			var info protocol.Info
			require.NoError(t, protocol.Unmarshal(body, &info))
			require.NoError(t, info.Validate())
			require.Equal(t, protocol.Info{
				Carrier:     servicetest.Carrier,
				Version:     version.Agent,
				Protocols:   []string{protocol.InfoID, protocol.TrackID},
				Limits:      protocol.DefaultLimits(),
				RegistrySeq: reg.seq,
				Keys:        [][]byte{servicetest.Signer().Public()},
				Registry:    tc.wantRegistry,
			}, info)
			// One exchange per stream: the server closes it.
			_, err = raw.frames.Next()
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

func TestInfoBadInput(t *testing.T) {
	servicetest.CheckLeaks(t)
	srv := servicetest.StartServer(t, servicetest.ServerConfig{Options: &service.Options{RequestTimeout: 200 * time.Millisecond}})
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"above the cap", []byte{0x81, 0x08}}, // 1025 bytes
		{"not CBOR", []byte{0x02, 0xff, 0xff}},
		{"never sends", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := openRaw(t, servicetest.NewHost(t, nil), srv, protocol.InfoID)
			if tc.send != nil {
				raw.send(tc.send)
			}
			raw.expectReset(2 * time.Second)
		})
	}
}

func TestNewInfoInvalid(t *testing.T) {
	_, err := service.NewInfo(service.InfoConfig{Carrier: "x", Version: strings.Repeat("v", 65), Keys: []ed25519.PublicKey{make([]byte, 31)}}, &service.Options{RequestTimeout: -1})
	require.ErrorIs(t, err, service.ErrInvalidConfig)
	for _, w := range []string{"version", "carrier", "key 0", "request_timeout"} {
		require.Contains(t, err.Error(), w)
	}
	info, err := service.NewInfo(service.InfoConfig{}, nil) // a platform node
	require.NoError(t, err)
	require.NotNil(t, info)
}
