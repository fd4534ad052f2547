package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testKey is a fixed key so that tests are reproducible.
func testKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func testSigner(t testing.TB, seed byte) *Signer {
	t.Helper()
	s, err := NewSigner(testKey(seed))
	require.NoError(t, err)
	return s
}

// testChain builds n chained events of one parcel and returns their blocks
// and the head.
func testChain(t testing.TB, n int) ([][]byte, *Head) {
	t.Helper()
	statuses := []Status{StatusInfoReceived, StatusPickedUp, StatusInTransit, StatusArrivedAtFacility, StatusDepartedFacility, StatusOutForDelivery, StatusDeliveryAttempted, StatusDelivered}
	var blocks [][]byte
	var prev Link
	for i := 0; i < n; i++ {
		e := &Event{
			Carrier:  "SF",
			Number:   "SF1234567890",
			Seq:      uint64(i),
			Time:     1767225600000 + int64(i)*3600_000,
			Status:   statuses[i%len(statuses)],
			Location: Location{Country: "CN", Locode: "CNSZX", City: "Shenzhen", Facility: "SZX-HUB-01"},
			Prev:     prev,
		}
		b, c, err := EncodeEvent(e)
		require.NoError(t, err)
		blocks = append(blocks, b)
		prev = LinkTo(c)
	}
	return blocks, &Head{Carrier: "SF", Number: "SF1234567890", Seq: uint64(n - 1), Head: prev, Time: 1767225600000 + int64(n)*3600_000}
}

func TestEventRoundTrip(t *testing.T) {
	blocks, _ := testChain(t, 3)
	for _, b := range blocks {
		e, err := DecodeEvent(b)
		require.NoError(t, err)
		again, _, err := EncodeEvent(e)
		require.NoError(t, err)
		require.Equal(t, b, again)
	}
}

func TestEventValidate(t *testing.T) {
	lat := int64(22_543_100)
	base := func() *Event {
		return &Event{Carrier: "SF", Number: "SF1234567890", Time: 1767225600000, Status: StatusPickedUp, Location: Location{Country: "CN"}}
	}
	cases := []struct {
		name string
		mod  func(e *Event)
		ok   bool
	}{
		{"minimal", func(*Event) {}, true},
		{"lower-case carrier", func(e *Event) { e.Carrier = "sf" }, false},
		{"unnormalized number", func(e *Event) { e.Number = "sf 1234567890" }, false},
		{"unknown status", func(e *Event) { e.Status = "teleported" }, false},
		{"reason of another status", func(e *Event) { e.Reason = "duties_unpaid" }, false},
		{"time in seconds", func(e *Event) { e.Time = 1767225600 }, false},
		{"seq 1 without prev", func(e *Event) { e.Seq = 1 }, false},
		{"bad country", func(e *Event) { e.Location.Country = "China" }, false},
		{"locode in other country", func(e *Event) { e.Location.Locode = "GBLON" }, false},
		{"lat without lon", func(e *Event) { e.Location.LatE6 = &lat }, false},
		{"ext without namespace", func(e *Event) { e.Ext = map[string]any{"weight": 3} }, false},
		{"ext namespaced", func(e *Event) { e.Ext = map[string]any{"sf.weight_g": 300} }, true},
		{"lang without description", func(e *Event) { e.Lang = "zh" }, false},
		{"description and lang", func(e *Event) { e.Description = "已揽收"; e.Lang = "zh-Hans" }, true},
		{"handoff", func(e *Event) { e.Handoff = &Handoff{Carrier: "ROYALMAIL", Number: "RB123456785GB"} }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := base()
			tc.mod(e)
			err := e.Validate()
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrInvalid)
			}
		})
	}
}

func TestChainVerify(t *testing.T) {
	blocks, head := testChain(t, 8)
	events, err := VerifyChain(head, blocks)
	require.NoError(t, err)
	require.Len(t, events, 8)

	// A suffix against a known head.
	known := LinkTo(CIDOf(blocks[4]))
	suffix, err := VerifySuffix(head, known, 4, blocks[5:])
	require.NoError(t, err)
	require.Len(t, suffix, 3)

	// Up to date: no events.
	_, err = VerifySuffix(head, head.Head, head.Seq, nil)
	require.NoError(t, err)

	cases := []struct {
		name   string
		blocks [][]byte
		err    error
	}{
		{"missing first", blocks[1:], ErrBrokenChain},
		{"missing middle", append(append([][]byte{}, blocks[:3]...), blocks[4:]...), ErrBrokenChain},
		{"missing last", blocks[:7], ErrHeadMismatch},
		{"reordered", [][]byte{blocks[1], blocks[0]}, ErrBrokenChain},
		{"empty", nil, ErrHeadMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyChain(head, tc.blocks)
			require.ErrorIs(t, err, tc.err)
		})
	}
}

func TestChainTamperedByte(t *testing.T) {
	blocks, head := testChain(t, 4)
	// Flip one byte of a text value in the middle event: the encoding stays
	// valid, so only the chain can tell.
	tampered := append([][]byte{}, blocks...)
	tampered[2] = bytes.Replace(blocks[2], []byte("Shenzhen"), []byte("Shenzhem"), 1)
	require.NotEqual(t, blocks[2], tampered[2])
	_, err := VerifyChain(head, tampered)
	require.Error(t, err)
	require.ErrorIs(t, err, ErrBrokenChain)
}

func TestSignedHead(t *testing.T) {
	s := testSigner(t, 1)
	_, head := testChain(t, 2)
	b, err := SignHead(s, head)
	require.NoError(t, err)
	sh, err := ParseSignedHead(b)
	require.NoError(t, err)
	require.NoError(t, sh.Verify(s.Public()))
	require.Equal(t, *head, sh.Head)

	other := testSigner(t, 2)
	require.ErrorIs(t, sh.Verify(other.Public()), ErrUnknownKey)

	// A grant-typed signature over the same payload is not a head.
	payload, err := Marshal(head)
	require.NoError(t, err)
	grantTyped, err := s.Sign(ContentGrant, payload)
	require.NoError(t, err)
	_, err = ParseSignedHead(grantTyped)
	require.ErrorIs(t, err, ErrWrongContent)

	// A flipped signature byte.
	bad := append([]byte{}, b...)
	bad[len(bad)-1] ^= 1
	sh, err = ParseSignedHead(bad)
	require.NoError(t, err)
	require.ErrorIs(t, sh.Verify(s.Public()), ErrBadSignature)
}

func TestStrictDecoder(t *testing.T) {
	cases := []struct {
		name string
		hex  []byte
		err  error
	}{
		{"unsorted keys", []byte{0xa2, 0x62, 'b', 'b', 0x01, 0x61, 'a', 0x02}, ErrNonCanonical},
		{"duplicate key", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, ErrDuplicateKey},
		{"non-shortest int", []byte{0x18, 0x01}, ErrNonCanonical},
		{"non-shortest length", []byte{0x78, 0x01, 'a'}, ErrNonCanonical},
		{"indefinite array", []byte{0x9f, 0x01, 0xff}, ErrIndefinite},
		{"float", []byte{0xf9, 0x3c, 0x00}, ErrFloat},
		{"undefined", []byte{0xf7}, ErrMalformed},
		{"tag 1", []byte{0xc1, 0x01}, ErrForeignTag},
		{"int map key", []byte{0xa1, 0x01, 0x01}, ErrMalformed},
		{"trailing", []byte{0x01, 0x01}, ErrMalformed},
		{"truncated", []byte{0x62, 'a'}, ErrMalformed},
		{"huge array", []byte{0x9a, 0xff, 0xff, 0xff, 0xff}, ErrTooLarge},
		{"bad utf8", []byte{0x61, 0xff}, ErrMalformed},
		{"tag 42 without prefix", []byte{0xd8, 0x2a, 0x42, 0x01, 0x71}, ErrBadCID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			require.ErrorIs(t, Unmarshal(tc.hex, &v), tc.err)
		})
	}
	deep := make([]byte, 0, 40)
	for i := 0; i < MaxDepth+1; i++ {
		deep = append(deep, 0x81)
	}
	deep = append(deep, 0x01)
	var v any
	require.ErrorIs(t, Unmarshal(deep, &v), ErrTooDeep)
	require.NoError(t, Unmarshal(deep[1:], &v))
}

func TestUnknownField(t *testing.T) {
	b, err := Marshal(map[string]any{"queries": []any{map[string]any{"number": "SF1234567890"}}, "zzz": 1})
	require.NoError(t, err)
	var req TrackRequest
	require.ErrorIs(t, Unmarshal(b, &req), ErrUnknownField)
}

func TestFrames(t *testing.T) {
	f, err := AppendFrame(nil, []byte{0xa0}, 10)
	require.NoError(t, err)
	body, rest, err := ReadFrame(f, 10)
	require.NoError(t, err)
	require.Equal(t, []byte{0xa0}, body)
	require.Empty(t, rest)

	_, err = AppendFrame(nil, make([]byte, 11), 10)
	require.ErrorIs(t, err, ErrFrameTooLarge)
	_, _, err = ReadFrame([]byte{0x81, 0x80, 0x04}, MaxTrackRequest) // 65537 > cap
	require.ErrorIs(t, err, ErrFrameTooLarge)
	_, _, err = ReadFrame([]byte{0x81, 0x00}, 10) // non-minimal varint
	require.ErrorIs(t, err, ErrBadFrame)
	_, _, err = ReadFrame([]byte{0x05, 0x01}, 10)
	require.ErrorIs(t, err, ErrBadFrame)
}

func TestVerifyPage(t *testing.T) {
	blocks, head := testChain(t, 8)
	events, err := VerifyPage(head, Link{}, 0, blocks[:3])
	require.NoError(t, err)
	require.Len(t, events, 3)
	next, err := VerifyPage(head, LinkTo(CIDOf(blocks[2])), 2, blocks[3:6])
	require.NoError(t, err)
	require.Len(t, next, 3)
	_, err = VerifySuffix(head, LinkTo(CIDOf(blocks[5])), 5, blocks[6:])
	require.NoError(t, err)

	_, err = VerifyPage(head, Link{}, 0, blocks) // reaches the head: not a page
	require.ErrorIs(t, err, ErrHeadMismatch)
	_, err = VerifyPage(head, LinkTo(CIDOf(blocks[2])), 2, blocks[4:6]) // gap
	require.ErrorIs(t, err, ErrBrokenChain)
	_, err = VerifyPage(head, Link{}, 0, nil)
	require.ErrorIs(t, err, ErrHeadMismatch)
}

func TestMessageValidate(t *testing.T) {
	const t0 = 1767225600000
	cases := []struct {
		name string
		msg  interface{ Validate() error }
		ok   bool
	}{
		{"update", &WatchMessage{Type: WatchUpdate, Cursor: "c", Number: "SF1234567890", Head: []byte{1}, Events: [][]byte{{1}}}, true},
		{"update with code", &WatchMessage{Type: WatchUpdate, Cursor: "c", Number: "SF1234567890", Head: []byte{1}, Events: [][]byte{{1}}, Code: "x"}, false},
		{"heartbeat", &WatchMessage{Type: WatchHeartbeat, Cursor: "c", Time: t0}, true},
		{"heartbeat without cursor", &WatchMessage{Type: WatchHeartbeat, Time: t0}, false},
		{"heartbeat with events", &WatchMessage{Type: WatchHeartbeat, Cursor: "c", Time: t0, Events: [][]byte{{1}}}, false},
		{"catchup", &WatchMessage{Type: WatchCatchUp, Cursor: "c", Message: "full"}, true},
		{"error with cursor", &WatchMessage{Type: WatchError, Code: "x", Cursor: "c"}, false},
		{"unknown type", &WatchMessage{Type: "gossip"}, false},
		{"watch numbers", &WatchRequest{Numbers: []string{"SF1234567890", "SF1234567891"}}, true},
		{"watch duplicate number", &WatchRequest{Numbers: []string{"SF1234567890", "SF1234567890"}}, false},
		{"watch unnormalized number", &WatchRequest{Numbers: []string{"sf 1234567890"}}, false},
		{"watch both scopes", &WatchRequest{Numbers: []string{"SF1234567890"}, Audience: true}, false},
		{"info", &Info{Version: "x", Protocols: []string{TrackID}, Limits: DefaultLimits()}, true},
		{"info short key", &Info{Version: "x", Limits: DefaultLimits(), Keys: [][]byte{{1, 2}}}, false},
		{"info zero limits", &Info{Version: "x"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.msg.Validate()
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
	resp := &TrackResponse{Results: []TrackResult{{Number: "SF1234567890"}}}
	require.ErrorIs(t, resp.Validate(1), ErrInvalid, "empty code")
	resp = &TrackResponse{Results: []TrackResult{{Number: "SF1234567890", Code: CodeNotFound}}, Error: &ErrorInfo{Code: CodeTooMany}}
	require.ErrorIs(t, resp.Validate(1), ErrInvalid, "error with results")
	resp = &TrackResponse{Results: []TrackResult{{Number: "SF1234567890", Code: CodeOK, Head: []byte{1}, Details: Details{"ssn": "x"}}}}
	require.ErrorIs(t, resp.Validate(1), ErrInvalid, "unknown detail field")
}

func TestRegistryValidate(t *testing.T) {
	const t0 = 1767225600000
	good := func() *Registry {
		return &Registry{Seq: 1, NotBefore: t0, NotAfter: t0 + 1, Carriers: []CarrierEntry{
			{Code: "AA", Name: "A", Country: "GB", Keys: []CarrierKey{{Key: testSigner(t, 1).Public(), NotBefore: t0, NotAfter: t0 + 1}},
				Nodes:   []NodeEntry{{Peer: "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", Addrs: []string{"/ip4/127.0.0.1/tcp/1"}}},
				Schemes: []Scheme{DefaultScheme("AA")}},
			{Code: "BB", Name: "B", Country: "GB", Keys: []CarrierKey{{Key: testSigner(t, 2).Public(), NotBefore: t0, NotAfter: t0 + 1}},
				Nodes: []NodeEntry{}, Schemes: []Scheme{}},
		}}
	}
	require.NoError(t, good().Validate())
	cases := []struct {
		name string
		mod  func(r *Registry)
	}{
		{"seq 0", func(r *Registry) { r.Seq = 0 }},
		{"unsorted", func(r *Registry) { r.Carriers[0], r.Carriers[1] = r.Carriers[1], r.Carriers[0] }},
		{"shared key", func(r *Registry) { r.Carriers[1].Keys = append(r.Carriers[1].Keys, r.Carriers[0].Keys[0]) }},
		{"addr with p2p", func(r *Registry) {
			r.Carriers[0].Nodes[0].Addrs = []string{"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"}
		}},
		{"repeated node", func(r *Registry) { r.Carriers[0].Nodes = append(r.Carriers[0].Nodes, r.Carriers[0].Nodes[0]) }},
		{"bad window", func(r *Registry) { r.Carriers[0].Keys[0].NotAfter = t0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.mod(r)
			require.ErrorIs(t, r.Validate(), ErrInvalid)
		})
	}
}

func TestGrantValidate(t *testing.T) {
	g := &Grant{ID: "000102030405060708090a0b0c0d0e0f", Carrier: "SF", Holder: "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
		Numbers: []string{"SF1234567890"}, Fields: []string{FieldPOD}, Issued: 1, Expires: 2}
	require.NoError(t, g.Validate())
	dupField := *g
	dupField.Fields = []string{FieldPOD, FieldPOD}
	require.ErrorIs(t, dupField.Validate(), ErrInvalid)
	dupNumber := *g
	dupNumber.Numbers = []string{"SF1234567890", "SF1234567890"}
	require.ErrorIs(t, dupNumber.Validate(), ErrInvalid)
	both := *g
	both.Audience = true
	require.ErrorIs(t, both.Validate(), ErrInvalid)
}

func TestDetail(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: RB123456785GB matches no carrier", ErrInvalidNumber), "RB123456785GB matches no carrier"},
		{ErrForbidden, "forbidden"},
		{&Error{Code: CodeNotFound, Msg: "no parcel SF1"}, "no parcel SF1"},
		{fmt.Errorf("dial: %w", ErrBadSignature), "dial: protocol: signature does not verify"},
		{errors.New("plain"), "plain"},
	} {
		if got := Detail(tc.err); got != tc.want {
			t.Errorf("Detail(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPublicKeyResolverChecksKid: a carrier verifying its own grants with
// its pinned key refuses one whose kid names another key, even when the
// pinned key made the signature (spec 5.10, the carrier's own key).
func TestPublicKeyResolverChecksKid(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	good, err := NewSigner(priv)
	require.NoError(t, err)
	wrongKid := &Signer{key: priv, kid: bytes.Repeat([]byte{7}, KeyIDLen)}
	g := &Grant{ID: "000102030405060708090a0b0c0d0e0f", Carrier: "SF", Holder: "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
		Numbers: []string{"SF1234567890"}, Fields: []string{FieldPOD}, Issued: 1000, Expires: 2000}
	keys := PublicKeyResolver{Carrier: "SF", Key: good.Public()}
	for _, tc := range []struct {
		name string
		s    *Signer
		want error
	}{
		{"kid of the pinned key", good, nil},
		{"kid of another key", wrongKid, ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := SignGrant(tc.s, g)
			require.NoError(t, err)
			_, err = OpenGrant(b, keys, g.Holder, 1500)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// TestCheckNodeAddr checks NodeEntry addresses by their text alone (spec
// 4.5): every implementation agrees whatever its multiaddr table.
func TestCheckNodeAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"/ip4/127.0.0.1/tcp/4001", true},
		{"/ip4/127.0.0.1/udp/4001/quic-v1", true},
		{"/dns4/track.example/tcp/443/wss", true},
		{"/ip4/192.0.2.7/tcp/4001/x-opentrack-future/v1", true},
		{"", false},
		{"ip4/127.0.0.1/tcp/4001", false},
		{"/ip4//tcp/4001", false},
		{"/ip4/127.0.0.1/tcp/4001/", false},
		{"/dns4/a b/tcp/1", false},
		{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", false},
		{"/ipfs/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", false},
		{"/" + strings.Repeat("a", MaxNodeAddrLen), false},
	} {
		err := checkNodeAddr(tc.addr)
		if tc.ok != (err == nil) {
			t.Errorf("checkNodeAddr(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}
