package authority_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/authority"
	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testPeer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"

// newWorkspace initializes a workspace whose clock stands at t0.
func newWorkspace(t *testing.T) *authority.Workspace {
	t.Helper()
	w, err := authority.Init(filepath.Join(t.TempDir(), "auth"), "")
	require.NoError(t, err)
	w.Now = func() time.Time { return t0 }
	return w
}

func newKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return pub
}

// reopen opens w's directory again, as the next command would.
func reopen(t *testing.T, w *authority.Workspace) *authority.Workspace {
	t.Helper()
	again, err := authority.Open(w.Dir)
	require.NoError(t, err)
	again.Now = w.Now
	return again
}

func TestInitOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	w, err := authority.Init(dir, "")
	require.NoError(t, err)
	require.Equal(t, "authority.pub", w.PubPath())

	st, err := os.Stat(filepath.Join(dir, "authority.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the authority key is secret")
	pub, err := keyfile.ReadPublic(filepath.Join(dir, w.PubPath()))
	require.NoError(t, err)
	require.Equal(t, w.Public(), pub)

	again, err := authority.Open(dir)
	require.NoError(t, err)
	require.Equal(t, w.Public(), again.Public())
	require.Zero(t, again.Draft.Seq)
	require.Empty(t, again.Draft.Carriers)
	require.Equal(t, "720h0m0s", again.Draft.Validity)

	_, err = authority.Init(dir, "")
	require.ErrorIs(t, err, authority.ErrExists)
	_, err = authority.Init(dir, "other")
	require.ErrorIs(t, err, authority.ErrExists, "one draft per directory, whatever the key name")
	require.Equal(t, pub, reopen(t, w).Public(), "the key survived")

	named, err := authority.Init(filepath.Join(t.TempDir(), "auth"), "root-2026")
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(named.Dir, "root-2026.pub"))
	require.FileExists(t, filepath.Join(named.Dir, "root-2026.key"))
	_, err = authority.Open(named.Dir)
	require.NoError(t, err)

	// A .pub that is not the key's would make nodes reject every edition.
	require.NoError(t, os.WriteFile(filepath.Join(named.Dir, "root-2026.pub"), mustPEM(t, newKey(t)), 0o644))
	_, err = authority.Open(named.Dir)
	require.ErrorIs(t, err, authority.ErrNotWorkspace)

	_, err = authority.Init(t.TempDir(), "../escape")
	require.ErrorIs(t, err, authority.ErrBadInput)
	_, err = authority.Open(t.TempDir())
	require.ErrorIs(t, err, authority.ErrNotWorkspace)
}

func TestOpenRejectsBadDraft(t *testing.T) {
	w := newWorkspace(t)
	path := filepath.Join(w.Dir, authority.DraftFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for name, edit := range map[string]func(string) string{
		"unknown key":  func(s string) string { return strings.Replace(s, `"seq"`, `"sequence"`, 1) },
		"bad validity": func(s string) string { return strings.Replace(s, `"720h0m0s"`, `"a month"`, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, []byte(edit(string(b))), 0o644))
			_, err := authority.Open(w.Dir)
			require.ErrorIs(t, err, authority.ErrBadDraft)
		})
	}
}

func TestAddCarrier(t *testing.T) {
	w := newWorkspace(t)
	k1, k2 := newKey(t), newKey(t)

	_, err := w.AddCarrier(authority.CarrierInput{Code: "SF"})
	require.ErrorIs(t, err, authority.ErrBadInput, "a new carrier needs a key")
	_, err = w.AddCarrier(authority.CarrierInput{Code: "sf", Key: k1})
	require.ErrorIs(t, err, authority.ErrBadInput, "bad code")

	c, err := w.AddCarrier(authority.CarrierInput{Code: "SF", Key: k1})
	require.NoError(t, err)
	require.Equal(t, "SF", c.Name, "default name")
	require.Equal(t, "ZZ", c.Country, "default country")
	require.Equal(t, []string{`SF\d{10,20}`}, c.Schemes, "the default scheme, written out")
	require.Empty(t, c.Nodes)
	require.Len(t, c.Keys, 1)
	require.Equal(t, protocol.KeyIDString(k1), c.Keys[0].KeyID)
	require.Equal(t, t0, c.Keys[0].NotBefore)
	require.Equal(t, t0.Add(authority.DefaultKeyValidity), c.Keys[0].NotAfter)

	// Fields given replace the draft's; fields not given stay.
	c, err = w.AddCarrier(authority.CarrierInput{Code: "SF", Name: "SF Express", Country: "CN",
		Nodes:   []protocol.NodeEntry{{Peer: testPeer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}},
		Schemes: []protocol.Scheme{{Kind: protocol.SchemePattern, Pattern: `SF\d{12}`}}})
	require.NoError(t, err)
	require.Equal(t, "SF Express", c.Name)
	require.Equal(t, "CN", c.Country)
	require.Equal(t, []string{`SF\d{12}`}, c.Schemes)
	require.Equal(t, []authority.DraftNode{{Peer: testPeer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}, c.Nodes)
	require.Len(t, c.Keys, 1)

	// Rotation: a new key joins the old one, and the old one's window is
	// ended a week later.
	c, err = w.AddCarrier(authority.CarrierInput{Code: "SF", Key: k2, NotBefore: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.Len(t, c.Keys, 2)
	require.Equal(t, t0.Add(time.Hour), c.Keys[1].NotBefore)
	require.Equal(t, t0.Add(time.Hour+authority.DefaultKeyValidity), c.Keys[1].NotAfter, "the default window follows its start")
	end := t0.Add(7 * 24 * time.Hour)
	c, err = w.AddCarrier(authority.CarrierInput{Code: "SF", Key: k1, NotAfter: end})
	require.NoError(t, err)
	require.Len(t, c.Keys, 2)
	require.Equal(t, end, c.Keys[0].NotAfter)
	require.Equal(t, t0, c.Keys[0].NotBefore, "the bound not given stays")

	// Refusals leave the draft, in memory and on disk, as it was.
	before := *reopen(t, w).Draft
	for name, in := range map[string]authority.CarrierInput{
		"window ends before it starts": {Code: "SF", Key: k1, NotAfter: t0.Add(-time.Hour)},
		"window without a key":         {Code: "SF", NotAfter: end},
		"key of another carrier":       {Code: "RM", Key: k2},
		"address with p2p":             {Code: "SF", Nodes: []protocol.NodeEntry{{Peer: testPeer, Addrs: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + testPeer}}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := w.AddCarrier(in)
			if in.Code == "RM" {
				require.ErrorIs(t, err, authority.ErrKeyInUse)
			} else {
				require.ErrorIs(t, err, authority.ErrBadInput)
			}
			require.Equal(t, before, *w.Draft)
			require.Equal(t, before, *reopen(t, w).Draft)
		})
	}

	// Carriers stay sorted by code whatever the order they are added in.
	for _, code := range []string{"ZT", "AA", "RM"} {
		_, err := w.AddCarrier(authority.CarrierInput{Code: code, Key: newKey(t)})
		require.NoError(t, err)
	}
	var codes []string
	for _, c := range reopen(t, w).Draft.Carriers {
		codes = append(codes, c.Code)
	}
	require.Equal(t, []string{"AA", "RM", "SF", "ZT"}, codes)
}

func TestRemove(t *testing.T) {
	w := newWorkspace(t)
	k1, k2 := newKey(t), newKey(t)
	_, err := w.AddCarrier(authority.CarrierInput{Code: "SF", Key: k1})
	require.NoError(t, err)
	_, err = w.AddCarrier(authority.CarrierInput{Code: "SF", Key: k2})
	require.NoError(t, err)

	require.ErrorIs(t, w.RemoveKey("SF", protocol.KeyIDString(newKey(t))), authority.ErrUnknownKey)
	require.ErrorIs(t, w.RemoveKey("RM", protocol.KeyIDString(k1)), authority.ErrUnknownCarrier)
	require.NoError(t, w.RemoveKey("SF", strings.ToUpper(protocol.KeyIDString(k1))))
	keys := reopen(t, w).Draft.Carriers[0].Keys
	require.Len(t, keys, 1)
	require.Equal(t, protocol.KeyIDString(k2), keys[0].KeyID)
	require.ErrorIs(t, w.RemoveKey("SF", protocol.KeyIDString(k2)), authority.ErrLastKey)

	require.ErrorIs(t, w.RemoveCarrier("RM"), authority.ErrUnknownCarrier)
	require.NoError(t, w.RemoveCarrier("SF"))
	require.Empty(t, reopen(t, w).Draft.Carriers)
}

func TestSign(t *testing.T) {
	w := newWorkspace(t)
	sf, rm := newKey(t), newKey(t)
	for _, in := range []authority.CarrierInput{
		{Code: "SF", Key: sf, Nodes: []protocol.NodeEntry{{Peer: testPeer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}},
		{Code: "RM", Name: "Royal Mail", Country: "GB", Key: rm, Schemes: []protocol.Scheme{{Kind: protocol.SchemeS10, Countries: []string{"GB"}}}},
	} {
		_, err := w.AddCarrier(in)
		require.NoError(t, err)
	}
	out := filepath.Join(t.TempDir(), "registry.cose")
	r, err := w.Sign(out, 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, r.Seq)
	require.Equal(t, t0.UnixMilli(), r.Issued)
	require.Equal(t, t0.Add(-authority.ClockSkew).UnixMilli(), r.NotBefore)
	require.Equal(t, t0.Add(authority.DefaultValidity).UnixMilli(), r.NotAfter)
	require.Len(t, r.Carriers, 2)
	require.Equal(t, "RM", r.Carriers[0].Code, "sorted by code")

	// A node trusting the authority takes it, and resolves with it.
	tr, err := discovery.NewTrust([]ed25519.PublicKey{w.Public()}, "", func() time.Time { return t0 })
	require.NoError(t, err)
	install := func(path string) error {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		_, err = tr.Install(b)
		return err
	}
	require.NoError(t, install(out))
	got, err := tr.Resolve("RB123456785GB")
	require.NoError(t, err)
	require.Equal(t, "RM", got[0].Code)
	pub, err := tr.CarrierKey("SF", protocol.KeyID(sf), t0.Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	require.Equal(t, sf, pub)

	// The seq survives the workspace being reopened, and rises.
	w = reopen(t, w)
	require.EqualValues(t, 1, w.Draft.Seq)
	second := filepath.Join(t.TempDir(), "registry.cose")
	r, err = w.Sign(second, time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 2, r.Seq)
	require.Equal(t, t0.Add(time.Hour).UnixMilli(), r.NotAfter)
	require.NoError(t, install(second))
	require.EqualValues(t, 2, tr.Seq())
	require.ErrorIs(t, install(out), protocol.ErrStaleRegistry)

	_, err = w.Sign(second, -time.Hour)
	require.ErrorIs(t, err, authority.ErrBadInput)
	require.EqualValues(t, 2, reopen(t, w).Draft.Seq, "a refused edition uses no seq")
}

func TestSignEmptyDraft(t *testing.T) {
	w := newWorkspace(t)
	r, err := w.Sign(filepath.Join(t.TempDir(), "registry.cose"), 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, r.Seq)
	require.Empty(t, r.Carriers)
}

func TestFromRepo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sf")
	r, err := repo.Init(dir, repo.InitOptions{Carrier: "SF", Name: "SF Express", Country: "CN",
		Schemes: []string{`SF\d{10,20}`, "s10:CN:E"},
		Listen:  []string{"/ip4/127.0.0.1/tcp/4101", "/ip4/0.0.0.0/udp/4101/quic-v1", "/ip4/127.0.0.1/tcp/0"}})
	require.NoError(t, err)
	id := r.PeerID().String()
	signer, err := r.Signer()
	require.NoError(t, err)

	// No running node: the config's listen addresses, less the ones no
	// one can dial.
	in, warnings, err := authority.CarrierFromRepo(dir)
	require.NoError(t, err)
	require.Equal(t, "SF", in.Code)
	require.Equal(t, "SF Express", in.Name)
	require.Equal(t, "CN", in.Country)
	require.Equal(t, signer.Public(), in.Key)
	require.Equal(t, []protocol.NodeEntry{{Peer: id, Addrs: []string{"/ip4/127.0.0.1/tcp/4101"}}}, in.Nodes)
	require.Len(t, in.Schemes, 2)
	require.Equal(t, "s10:CN:E", in.Schemes[1].String())
	require.Len(t, warnings, 3, "no node.json, 0.0.0.0, port 0: %q", warnings)

	// A running node's concrete addresses win, without their /p2p/ part.
	require.NoError(t, r.WriteNodeInfo(&repo.NodeInfo{PeerID: id, Carrier: "SF", Addrs: []string{
		"/ip4/127.0.0.1/tcp/5555/p2p/" + id, "/ip4/127.0.0.1/udp/5555/quic-v1/p2p/" + id}}))
	w := newWorkspace(t)
	c, warnings, err := w.AddFromRepo(dir)
	require.NoError(t, err)
	require.Empty(t, warnings)
	require.Equal(t, []authority.DraftNode{{Peer: id, Addrs: []string{"/ip4/127.0.0.1/tcp/5555", "/ip4/127.0.0.1/udp/5555/quic-v1"}}}, c.Nodes)
	require.Equal(t, protocol.KeyIDString(signer.Public()), c.Keys[0].KeyID)

	// Adding it again changes nothing but what changed.
	c2, _, err := w.AddFromRepo(dir)
	require.NoError(t, err)
	require.Equal(t, c, c2)

	_, _, err = authority.CarrierFromRepo(filepath.Join(filepath.Dir(dir), "missing"))
	require.ErrorIs(t, err, repo.ErrNotRepo)
}

func TestFromPlatformRepo(t *testing.T) {
	dir := t.TempDir()
	_, err := repo.Init(dir, repo.InitOptions{Platform: "shop"})
	require.NoError(t, err)
	_, _, err = authority.CarrierFromRepo(dir)
	require.ErrorIs(t, err, authority.ErrNotCarrier)
}

func TestNewNodeEntry(t *testing.T) {
	const other = "12D3KooWSoLzampfxc4t3sy9z7yq1Cgzbi7zGXpV7nvt5hfeKUhR"
	cases := []struct {
		name     string
		peer     string
		addrs    []string
		want     protocol.NodeEntry
		warnings int
		err      bool
	}{
		{"plain", testPeer, []string{"/ip4/10.0.0.1/tcp/4001"}, protocol.NodeEntry{Peer: testPeer, Addrs: []string{"/ip4/10.0.0.1/tcp/4001"}}, 0, false},
		{"p2p stripped", testPeer, []string{"/ip4/10.0.0.1/tcp/4001/p2p/" + testPeer}, protocol.NodeEntry{Peer: testPeer, Addrs: []string{"/ip4/10.0.0.1/tcp/4001"}}, 0, false},
		{"peer from the address", "", []string{"/dns4/sf.example/tcp/4001/p2p/" + testPeer}, protocol.NodeEntry{Peer: testPeer, Addrs: []string{"/dns4/sf.example/tcp/4001"}}, 0, false},
		{"duplicates folded", testPeer, []string{"/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.1/tcp/4001/p2p/" + testPeer}, protocol.NodeEntry{Peer: testPeer, Addrs: []string{"/ip4/10.0.0.1/tcp/4001"}}, 0, false},
		{"undialable left out", testPeer, []string{"/ip6/::/tcp/4001", "/ip4/10.0.0.1/udp/0/quic-v1", "/ip4/10.0.0.1/tcp/4001"}, protocol.NodeEntry{Peer: testPeer, Addrs: []string{"/ip4/10.0.0.1/tcp/4001"}}, 2, false},
		{"nothing dialable", testPeer, []string{"/ip4/0.0.0.0/tcp/4001"}, protocol.NodeEntry{Peer: testPeer, Addrs: []string{}}, 2, false},
		{"another peer's address", testPeer, []string{"/ip4/10.0.0.1/tcp/4001/p2p/" + other}, protocol.NodeEntry{}, 0, true},
		{"no peer", "", []string{"/ip4/10.0.0.1/tcp/4001"}, protocol.NodeEntry{}, 0, true},
		{"bad peer", "SF", nil, protocol.NodeEntry{}, 0, true},
		{"bad address", testPeer, []string{"10.0.0.1:4001"}, protocol.NodeEntry{}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, warnings, err := authority.NewNodeEntry(tc.peer, tc.addrs)
			if tc.err {
				require.ErrorIs(t, err, authority.ErrBadInput)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Len(t, warnings, tc.warnings, "%q", warnings)
		})
	}
}

func mustPEM(t *testing.T, pub ed25519.PublicKey) []byte {
	t.Helper()
	b, err := keyfile.MarshalPublic(pub)
	require.NoError(t, err)
	return b
}

func TestParsePublicKey(t *testing.T) {
	pub := newKey(t)
	path := filepath.Join(t.TempDir(), "sf.pub")
	require.NoError(t, os.WriteFile(path, mustPEM(t, pub), 0o644))
	for _, s := range []string{path, strings.ToUpper(hex.EncodeToString(pub))} {
		got, err := authority.ParsePublicKey(s)
		require.NoError(t, err)
		require.Equal(t, pub, got)
	}
	_, err := authority.ParsePublicKey("abcd")
	require.ErrorIs(t, err, authority.ErrBadInput)
}

func TestShow(t *testing.T) {
	w := newWorkspace(t)
	sf := newKey(t)
	_, err := w.AddCarrier(authority.CarrierInput{Code: "SF", Name: "SF Express", Country: "CN", Key: sf})
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "registry.cose")
	_, err = w.Sign(out, 0)
	require.NoError(t, err)
	b, err := os.ReadFile(out)
	require.NoError(t, err)

	v, err := authority.Show(b, nil, t0)
	require.NoError(t, err)
	require.Equal(t, authority.SignatureNotChecked, v.Signature)
	require.Equal(t, protocol.KeyIDString(w.Public()), v.SignedBy)
	require.EqualValues(t, 1, v.Seq)
	require.Len(t, v.Carriers, 1)
	require.Equal(t, protocol.KeyIDString(sf), v.Carriers[0].Keys[0].KeyID)
	require.Equal(t, "valid", v.Carriers[0].Keys[0].State)
	var text bytes.Buffer
	require.NoError(t, v.WriteText(&text))
	require.Contains(t, text.String(), "signature not checked")
	require.Contains(t, text.String(), protocol.KeyIDString(sf))
	require.Contains(t, text.String(), "(none: clients cannot reach this carrier)")

	v, err = authority.Show(b, []ed25519.PublicKey{w.Public()}, t0)
	require.NoError(t, err)
	require.Equal(t, authority.SignatureValid, v.Signature)

	v, err = authority.Show(b, []ed25519.PublicKey{newKey(t)}, t0)
	require.NoError(t, err)
	require.Equal(t, authority.SignatureRejected, v.Signature)
	require.Equal(t, "untrusted_issuer", v.ErrorCode)

	v, err = authority.Show(b, []ed25519.PublicKey{w.Public()}, t0.Add(authority.DefaultValidity+time.Second))
	require.NoError(t, err)
	require.Equal(t, "expired", v.ErrorCode)

	_, err = authority.Show([]byte("not a registry"), nil, t0)
	require.ErrorIs(t, err, protocol.ErrMalformed)
}

// TestFromRepoKeyWindow: a key added from its repo is valid from when init
// made it, not from when it was added, so heads the carrier signed before
// its registration verify; --not-before overrides, a key already in the
// draft keeps its window, and a repo that predates key_created falls back
// to the key file's time.
func TestFromRepoKeyWindow(t *testing.T) {
	before := time.Now().UTC().Truncate(time.Second)
	dir := filepath.Join(t.TempDir(), "sf")
	r, err := repo.Init(dir, repo.InitOptions{Carrier: "SF"})
	require.NoError(t, err)
	made := r.Config.Carrier.KeyCreated
	require.False(t, made.Before(before), "key_created %s is before init began at %s", made, before)
	again, err := repo.Open(dir)
	require.NoError(t, err)
	require.True(t, made.Equal(again.Config.Carrier.KeyCreated), "key_created read back as %s, written %s", again.Config.Carrier.KeyCreated, made)

	later := made.Add(72 * time.Hour)
	w := newWorkspace(t)
	w.Now = func() time.Time { return later }
	c, _, err := w.AddFromRepo(dir)
	require.NoError(t, err)
	require.Len(t, c.Keys, 1)
	require.True(t, c.Keys[0].NotBefore.Equal(made), "window starts %s, the key was made %s", c.Keys[0].NotBefore, made)

	// The authority moves the window; adding the repo again keeps it.
	moved := made.Add(time.Hour)
	in, _, err := authority.CarrierFromRepo(dir)
	require.NoError(t, err)
	in.Update(authority.CarrierInput{NotBefore: moved})
	_, err = w.AddCarrier(in)
	require.NoError(t, err)
	c, _, err = w.AddFromRepo(dir)
	require.NoError(t, err)
	require.True(t, c.Keys[0].NotBefore.Equal(moved), "re-adding the repo moved the window to %s from %s", c.Keys[0].NotBefore, moved)

	// A repo made before key_created was recorded: the key file's time.
	cfg := filepath.Join(dir, repo.ConfigFile)
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	var kept []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "key_created") {
			kept = append(kept, line)
		}
	}
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Join(kept, "\n")), 0o600))
	old := t0.Add(-24 * time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(dir, repo.CarrierKeyFile), old, old))
	in, _, err = authority.CarrierFromRepo(dir)
	require.NoError(t, err)
	require.True(t, in.KeyMade.Equal(old), "without key_created the key was made %s, want the file's %s", in.KeyMade, old)
}
