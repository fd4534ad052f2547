package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// runCLI runs the command line as main does and returns its exit status
// and what it printed.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustRun runs a setup step that has to succeed.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := runCLI(t, args...)
	require.Zero(t, code, "opentrack %v: %s%s", args, out, errOut)
	return out
}

// startNode runs the node of repo dir as `opentrack node` does until the
// test ends, and returns its node.json once it listens.
func startNode(t *testing.T, dir string) *repo.NodeInfo {
	t.Helper()
	r, err := repo.Open(dir)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx, r, node.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "node %s", dir)
	})
	var info *repo.NodeInfo
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		info, err = repo.ReadNodeInfo(dir)
		return err == nil
	}, time.Minute, 20*time.Millisecond, "node %s never wrote node.json", dir)
	require.NotNil(t, info, "node %s stopped before it listened", dir)
	return info
}

// messageCodes are the protocol's codes: a failure's sentence names
// each at most once.
var messageCodes = []string{
	protocol.CodeNotFound, protocol.CodeInvalidNumber, protocol.ErrCheckDigit.Code, protocol.CodeForbidden, protocol.CodeRateLimited,
	protocol.CodeUnavailable, protocol.CodeInternal, protocol.CodeWrongCarrier, protocol.CodeBadRequest, protocol.ErrBadSignature.Code,
	protocol.ErrUnknownKey.Code, protocol.ErrMalformed.Code, protocol.ErrInvalid.Code, protocol.ErrStaleRegistry.Code,
	protocol.ErrUntrustedIssuer.Code, protocol.ErrExpired.Code, protocol.ErrWrongContent.Code, protocol.ErrBrokenChain.Code,
}

var epochMillis = regexp.MustCompile(`(^|[^0-9A-Za-z])[0-9]{13}([^0-9A-Za-z]|$)`)

// checkSentence fails unless a failure printed one line on stderr, with
// the program's name once and no other "opentrack:" in it, each code at
// most once, no trailing space, no epoch milliseconds and no dump; and
// stdout's lines keep the same rules.
func checkSentence(t *testing.T, stdout, stderr string) {
	t.Helper()
	require.True(t, strings.HasPrefix(stderr, "opentrack: "), "stderr starts with the program's name: %q", stderr)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line on stderr: %q", stderr)
	require.True(t, strings.HasSuffix(stderr, "\n"), "stderr ends its line: %q", stderr)
	require.Equal(t, 1, strings.Count(stderr, "opentrack:"), "\"opentrack:\" once: %q", stderr)
	require.NotRegexp(t, `^opentrack: opentrack\b`, stderr, "the name twice")
	for _, dump := range []string{"&{", "goroutine ", "panic:", "0xc0"} {
		require.NotContains(t, stderr, dump, "a Go value or stack in %q", stderr)
	}
	for _, text := range []string{stderr, stdout} {
		for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
			require.Equal(t, strings.TrimRight(line, " \t"), line, "trailing space in %q", line)
			require.NotRegexp(t, epochMillis, line, "epoch milliseconds in %q", line)
			for _, c := range messageCodes {
				require.LessOrEqual(t, strings.Count(line, c), 1, "code %s more than once in %q", c, line)
			}
		}
	}
	require.NotContains(t, stdout, "opentrack:", "a prefix in stdout")
}

// TestMessages runs every failure a new user meets, in the README's
// setup, and checks the one sentence each prints: what went wrong, the
// code once, and what to do where there is a hint to give.
func TestMessages(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(repo.EnvRepo, filepath.Join(dir, "default"))
	auth, auth2 := filepath.Join(dir, "authority"), filepath.Join(dir, "other-authority")
	sf, sf2 := filepath.Join(dir, "sf"), filepath.Join(dir, "sf-stopped")
	shop, shop2, shop3 := filepath.Join(dir, "shop"), filepath.Join(dir, "shop2"), filepath.Join(dir, "shop3")
	reg, reg2 := filepath.Join(dir, "registry.cose"), filepath.Join(dir, "other.cose")
	revoked, live := filepath.Join(dir, "revoked.grant"), filepath.Join(dir, "live.grant")
	nope, fresh := filepath.Join(dir, "nope"), filepath.Join(dir, "fresh")
	events := filepath.Join("..", "..", "docs", "examples", "events.ndjson")
	badEvents, garbage := filepath.Join(dir, "bad.ndjson"), filepath.Join(dir, "garbage")
	require.NoError(t, os.WriteFile(badEvents, []byte("not json\n{\"id\": \"a\"}\n"), 0o600))
	require.NoError(t, os.WriteFile(garbage, []byte("not a signed statement\n"), 0o600))

	// The README's walk: a carrier with the example parcel, an authority,
	// a platform with its registry, and a grant revoked.
	mustRun(t, "init", "--repo", sf, "--carrier", "SF", "--name", "SF Express", "--scheme", `SF\d{10,20}`, "--scheme", "s10:CN")
	mustRun(t, "init", "--repo", sf2, "--carrier", "SF")
	info := startNode(t, sf)
	sfPeer := info.Addrs[0]
	mustRun(t, "ingest", "--repo", sf, events)
	mustRun(t, "registry", "init", "--dir", auth)
	mustRun(t, "registry", "add", "--dir", auth, "--carrier-repo", sf)
	mustRun(t, "registry", "sign", "--dir", auth, "--out", reg)
	mustRun(t, "registry", "init", "--dir", auth2)
	mustRun(t, "registry", "add", "--dir", auth2, "--carrier-repo", sf)
	mustRun(t, "registry", "sign", "--dir", auth2, "--out", reg2)
	for _, p := range []string{shop, shop3} {
		mustRun(t, "init", "--repo", p, "--platform", filepath.Base(p), "--trust", filepath.Join(auth, "authority.pub"), "--registry", reg)
	}
	mustRun(t, "init", "--repo", shop2, "--platform", "shop2")
	var id struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "id", "--repo", shop, "--json")), &id))
	var grants [2]struct{ ID string }
	for i, f := range []string{revoked, live} {
		out := mustRun(t, "grant", "issue", "--repo", sf, "--to", id.ID, "--number", "SF1234567890", "--fields", "recipient_name", "--ttl", "24h", "--out", f, "--json")
		require.NoError(t, json.Unmarshal([]byte(out), &grants[i]))
	}
	mustRun(t, "grant", "revoke", "--repo", sf, revoked)

	// A node that is gone: a peer ID and a port nothing listens on.
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	deadID, err := peer.IDFromPrivateKey(key)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadPort := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	dead := "/ip4/127.0.0.1/tcp/" + strconv.Itoa(deadPort) + "/p2p/" + deadID.String()

	// A carrier whose node was killed: its node.json names a port that
	// nothing listens on.
	sfGone := filepath.Join(dir, "sf-killed")
	mustRun(t, "init", "--repo", sfGone, "--carrier", "SF")
	goneAdmin := "http://127.0.0.1:" + strconv.Itoa(deadPort)
	gone, err := repo.Open(sfGone)
	require.NoError(t, err)
	require.NoError(t, gone.WriteNodeInfo(&repo.NodeInfo{PeerID: gone.PeerID().String(), Carrier: "SF", AdminURL: goneAdmin}))

	q := regexp.QuoteMeta
	for _, tc := range []struct {
		name string
		args []string
		code int
		// stderr is the whole line, "opentrack: " and the sentence, as a
		// regexp; stdout a line that must be among stdout's, if set.
		stderr, stdout string
	}{
		// The cases.
		{"track without numbers", []string{"track", "--repo", shop}, 1,
			q("opentrack: track needs one or more tracking numbers (usage: opentrack track [--repo PLATFORMDIR | --peer MULTIADDR] [--grant FILE] [--json] NUMBER...)"), ""},
		{"revoked grant", []string{"track", "--repo", shop, "--grant", revoked, "SF1234567890"}, 2,
			q("opentrack: of 1 number, 1 had its details refused"), q("  details  forbidden: grant " + grants[0].ID + " is revoked")},
		{"unknown number", []string{"track", "--repo", shop, "SF9999999999"}, 2,
			q("opentrack: of 1 number, 1 was not answered"), q("SF9999999999  carrier SF  not_found: the carrier holds no parcel SF9999999999")},
		{"number the node does not issue", []string{"track", "--peer", sfPeer, "SF12345"}, 2,
			q("opentrack: of 1 number, 1 was not answered"), q("SF12345  carrier SF  wrong_carrier: not a number SF issues")},
		{"init without a role", []string{"init", "--repo", fresh}, 1,
			q("opentrack: init makes a carrier repo (--carrier CODE) or a platform repo (--platform NAME): give one of them"), ""},

		// track and its inputs.
		{"another holder's grant", []string{"track", "--repo", shop3, "--grant", live, "SF1234567890"}, 2,
			q("opentrack: of 1 number, 1 had its details refused"), q("  details  forbidden: ") + `\S.*`},
		{"bad check digit", []string{"track", "--repo", shop, "RB123456784CN"}, 2,
			q("opentrack: of 1 number, 1 was not answered"), q("RB123456784CN  ") + `(carrier SF  )?bad_check_digit: \S.*`},
		{"unknown carrier", []string{"track", "--repo", shop, "XX1234567890"}, 2,
			q("opentrack: of 1 number, 1 was not answered"), q("XX1234567890  invalid_number: XX1234567890 matches no carrier in registry seq 1")},
		{"unreachable node", []string{"track", "--peer", dead, "SF1234567890"}, 1,
			q("opentrack: cannot reach node "+deadID.String()+": all dials failed (/ip4/127.0.0.1/tcp/"+strconv.Itoa(deadPort)+": ") + `[^;()]*connection refused` +
				q("); is it running, and is --peer its current address?"), ""},
		{"unreachable node to watch", []string{"watch", "--repo", shop, "--peer", dead, "SF1234567890"}, 1,
			q("opentrack: cannot reach node "+deadID.String()+": all dials failed (/ip4/127.0.0.1/tcp/"+strconv.Itoa(deadPort)+": ") + `[^;()]*connection refused` +
				q("); is it running, and is --peer its current address?"), ""},
		{"not a multiaddr", []string{"track", "--peer", "sf.example:4001", "SF1"}, 1,
			q(`opentrack: --peer "sf.example:4001": failed to parse multiaddr "sf.example:4001": must begin with / (want a multiaddr ending in /p2p/<peer id>)`), ""},
		{"carrier repo to track", []string{"track", "--repo", sf, "SF1"}, 1,
			q("opentrack: --repo " + sf + " is a carrier repo, and this command needs a platform repo (create one with opentrack init --repo DIR --platform NAME --trust PUBFILE --registry FILE)"), ""},
		{"missing repo", []string{"track", "--repo", nope, "SF1"}, 1,
			q("opentrack: repo: not an OpenTrack repo: " + nope + " has no config.toml (create one with opentrack init --repo " + nope + " --carrier CODE or --platform NAME)"), ""},
		{"repo without an authority", []string{"track", "--repo", shop2, "SF1"}, 1,
			q("opentrack: --repo " + shop2 + " trusts no registry authority yet (add one with opentrack trust add --repo " + shop2 + " PUBFILE, then opentrack registry install --repo " + shop2 + " FILE)"), ""},
		{"unknown flag", []string{"track", "--bogus"}, 1, q("opentrack: unknown flag: --bogus (see opentrack track --help)"), ""},
		{"bad flag value", []string{"track", "--timeout", "soon", "SF1"}, 1,
			q(`opentrack: invalid argument "soon" for "--timeout" flag: time: invalid duration "soon" (see opentrack track --help)`), ""},
		{"a registry as a grant", []string{"track", "--repo", shop, "--grant", reg, "SF1234567890"}, 1,
			q("opentrack: --grant " + reg + `: protocol: COSE content type is not the one expected: got application/opentrack-registry+cbor, want "application/opentrack-grant+cbor"`), ""},

		// The other commands.
		{"unknown command", []string{"trak", "SF1"}, 1, q(`opentrack: unknown command "trak" for opentrack (did you mean opentrack track?)`), ""},
		{"unknown subcommand", []string{"registry", "sing"}, 1, q(`opentrack: unknown command "sing" for opentrack registry (did you mean opentrack registry sign?)`), ""},
		{"init with an argument", []string{"init", "extra"}, 1,
			q(`opentrack: init takes no arguments; "extra" is one too many (usage: opentrack init [--repo DIR] (--carrier CODE | --platform NAME))`), ""},
		{"init twice", []string{"init", "--repo", sf, "--carrier", "SF"}, 1,
			q("opentrack: repo: already initialized: " + filepath.Join(sf, "config.toml") + " exists; refusing to overwrite"), ""},
		{"bad carrier code", []string{"init", "--repo", fresh, "--carrier", "s"}, 1, q(`opentrack: repo: invalid options: carrier code "s" must be 2 to 16 characters`), ""},
		{"id with an argument", []string{"id", "--repo", sf, "extra"}, 1,
			q(`opentrack: id takes no arguments; "extra" is one too many (usage: opentrack id [--repo DIR] [--json])`), ""},
		{"node without a repo", []string{"node", "--repo", nope}, 1,
			q("opentrack: repo: not an OpenTrack repo: " + nope + " has no config.toml (create one with opentrack init --repo " + nope + " --carrier CODE or --platform NAME)"), ""},
		{"ingest into a platform", []string{"ingest", "--repo", shop, events}, 1,
			q("opentrack: --repo " + shop + " is a platform repo, and this command needs a carrier repo (create one with opentrack init --repo DIR --carrier CODE)"), ""},
		{"ingest without a node", []string{"ingest", "--repo", sf2, events}, 1,
			q("opentrack: repo: no node running from " + sf2 + ": it has no node.json (start one with opentrack node --repo " + sf2 + ")"), ""},
		{"ingest into a node that is gone", []string{"ingest", "--repo", sfGone, events}, 1,
			q("opentrack: ingest: post failed: lines 1-8: Post \"" + goneAdmin + "/v1/events\": dial tcp " + strings.TrimPrefix(goneAdmin, "http://") +
				": connect: connection refused (is the node running? " + filepath.Join(sfGone, "node.json") + " names a node that no longer listens)"), ""},
		{"malformed events", []string{"ingest", "--repo", sf, badEvents}, 1, q("opentrack: 2 events rejected"), q(`rejected line 1 id "": not a JSON value`)},
		{"ingest two files", []string{"ingest", "--repo", sf, events, badEvents}, 1,
			q(`opentrack: ingest takes at most one FILE of events (- or none for standard input); "` + badEvents + `" is one too many (usage: opentrack ingest [--repo DIR] [FILE|-])`), ""},
		{"grant without its flags", []string{"grant", "issue", "--repo", sf, "--to", id.ID, "--number", "SF1234567890", "--fields", "recipient_name"}, 1,
			q("opentrack: grant issue needs --out and --ttl (usage: opentrack grant issue [--repo CARRIERDIR] --to PEERID (--number N... | --audience) --fields F[,F...] --ttl DURATION --out FILE)"), ""},
		{"grant to a name", []string{"grant", "issue", "--repo", sf, "--to", "shop", "--number", "SF1234567890", "--fields", "recipient_name", "--ttl", "1h", "--out", filepath.Join(dir, "x.grant")}, 1,
			q(`opentrack: grant not issued: protocol: invalid record: holder "shop" is not a peer ID in base58btc form`), ""},
		{"revoke nothing", []string{"grant", "revoke", "--repo", sf}, 1,
			q("opentrack: grant revoke needs GRANTFILE or ID, the grant to revoke (usage: opentrack grant revoke [--repo CARRIERDIR] GRANTFILE|ID)"), ""},
		{"grants of a platform", []string{"grant", "list", "--repo", shop}, 1,
			q("opentrack: --repo " + shop + " is a platform repo, and this command needs a carrier repo (create one with opentrack init --repo DIR --carrier CODE)"), ""},
		{"audit since when", []string{"audit", "--repo", sf, "--since", "yesterday"}, 1,
			q(`opentrack: --since "yesterday": want an RFC 3339 time or a duration such as 24h`), ""},
		{"registry add of nothing", []string{"registry", "add", "--dir", auth}, 1,
			q("opentrack: registry add needs --carrier-repo DIR or --code C (usage: opentrack registry add --dir AUTHDIR (--carrier-repo DIR | --code C --key PUBHEX|PEMFILE ...))"), ""},
		{"registry add bad time", []string{"registry", "add", "--dir", auth, "--code", "RM", "--not-before", "yesterday"}, 1,
			q(`opentrack: --not-before "yesterday" is not an RFC 3339 time such as 2026-01-02T15:04:05Z`), ""},
		{"registry sign nowhere", []string{"registry", "sign", "--dir", auth}, 1,
			q("opentrack: registry sign needs --out (usage: opentrack registry sign --dir AUTHDIR --out FILE [--valid 720h])"), ""},
		{"registry show nothing", []string{"registry", "show"}, 1,
			q("opentrack: registry show needs FILE, the signed registry (usage: opentrack registry show FILE [--json] [--trust PUBFILE])"), ""},
		{"bad registry file", []string{"registry", "show", garbage}, 1, q("opentrack: "+garbage+": protocol: malformed CBOR: ") + `[^:]+: .+`, ""},
		{"registry of an unknown authority", []string{"registry", "install", "--repo", shop, reg2}, 1,
			q("opentrack: "+reg2+" not installed: protocol: statement not signed by a trust anchor: the registry's key is ") + `[0-9a-f]{32}` +
				q(" (hint: get an edition signed by an authority you trust, or trust this one with opentrack trust add)"), ""},
		{"registry of another authority shown", []string{"registry", "show", reg2, "--trust", filepath.Join(auth, "authority.pub")}, 1,
			q("opentrack: " + reg2 + " would be rejected by a node trusting " + filepath.Join(auth, "authority.pub")), ""},
		{"registry not newer", []string{"registry", "install", "--repo", shop, reg}, 1,
			q("opentrack: " + reg + " not installed: protocol: registry sequence is not newer: have seq 1, offered 1"), ""},
		{"trust a missing key", []string{"trust", "add", "--repo", shop2, nope}, 1, q("opentrack: keyfile: open " + nope + ": no such file or directory"), ""},
		{"gateway of a carrier", []string{"gateway", "--repo", sf}, 1,
			q("opentrack: --repo " + sf + " is a carrier repo, and this command needs a platform repo (create one with opentrack init --repo DIR --platform NAME --trust PUBFILE --registry FILE)"), ""},
		{"migrate both", []string{"migrate", "--repo", sf, "--store", "postgres://x@127.0.0.1:1/db"}, 1,
			q("opentrack: migrate takes --repo or --store, not both (usage: opentrack migrate (--repo DIR | --store URL))"), ""},
		{"migrate pebble", []string{"migrate", "--repo", sf}, 1, q("opentrack: " + sf + " keeps its store in pebble, which has no migrations"), ""},
		{"testnet scenario", []string{"testnet", "--scenario", "flood"}, 1,
			q(`opentrack: testnet: invalid options: scenario "flood": want one of crash, partition, rogue, cutoff`), ""},
		{"demo with an argument", []string{"demo", "now"}, 1, q(`opentrack: demo takes no arguments; "now" is one too many (usage: opentrack demo)`), ""},
		{"version with an argument", []string{"version", "2"}, 1, q(`opentrack: version takes no arguments; "2" is one too many (usage: opentrack version [--json])`), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			require.Equal(t, tc.code, code, "exit status of opentrack %v; stderr %q", tc.args, stderr)
			require.Regexp(t, "^"+tc.stderr+"\n$", stderr, "opentrack %v", tc.args)
			if tc.stdout != "" {
				require.Regexp(t, "(?m)^"+tc.stdout+"$", stdout, "opentrack %v", tc.args)
			}
			checkSentence(t, stdout, stderr)
		})
	}
}
