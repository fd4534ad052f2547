package service_test

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/metrics"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/service"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// TestGolden runs the request->reply scripts in testdata/ against a
// carrier's track and watch services on loopback. Regenerate the
// expected replies with go test ./node/service -run TestGolden -rewrite.
//
// Commands:
//
//	server [closed]                   start the carrier; closed turns public lookups off
//	ingest [details=(n,...)]          store events, one a line: number status time [audience,...]
//	grant name=g holder=p fields=(f,...) [numbers=(n,...)|audience] [expired]
//	track peer=p numbers=(n,...) [grant=g]
//	watch name=w peer=p numbers=(n,...)|audience [cursor=c] [grant=g]
//	next name=w [n=1]                 read a watch's next n messages
//
// Peers are named (platform-a), cursors print as feed.<position>, and
// heads are signed by the fixed servicetest key at the last event's time:
// every reply is the same on every run.
func TestGolden(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		servicetest.CheckLeaks(t)
		g := &golden{peers: map[string]host.Host{}, parcels: map[string]*goldenParcel{},
			grants: map[string][]byte{}, grantID: map[string]string{}, watches: map[string]*watcher{}}
		datadriven.RunTest(t, path, g.run)
	})
}

// golden is one script's carrier, its peers and what it has stored.
type golden struct {
	ws      *watchServer
	peers   map[string]host.Host
	parcels map[string]*goldenParcel
	grants  map[string][]byte
	grantID map[string]string // by name
	watches map[string]*watcher
}

// goldenParcel is a parcel's chain as ingested so far.
type goldenParcel struct {
	id   uint64
	cids []cid.Cid
}

func (g *golden) run(t *testing.T, d *datadriven.TestData) string {
	if d.Cmd != "server" && g.ws == nil {
		d.Fatalf(t, "%s before server", d.Cmd)
	}
	switch d.Cmd {
	case "server":
		return g.server(t, d)
	case "ingest":
		return g.ingest(t, d)
	case "grant":
		return g.grant(t, d)
	case "track":
		return g.trackCmd(t, d)
	case "watch":
		return g.watch(t, d)
	case "next":
		return g.next(t, d)
	}
	d.Fatalf(t, "unknown command %q", d.Cmd)
	return ""
}

func (g *golden) server(t *testing.T, d *datadriven.TestData) string {
	policy := watchPolicy{closed: d.HasArg("closed")}
	g.ws = startWatch(t, watchConfig{policy: policy})
	track, err := service.NewTrack(service.TrackConfig{Carrier: servicetest.Carrier, Schemes: []protocol.Scheme{servicetest.Scheme},
		Store: g.ws.store, Keys: servicetest.Keys(), Policy: policy, Metrics: metrics.New()}, nil)
	require.NoError(t, err)
	track.Register(g.ws.host)
	t.Cleanup(track.Unregister)
	if policy.closed {
		return "carrier OT, public lookups closed"
	}
	return "carrier OT, public lookups open"
}

// peer is the named platform's host, started on first use.
func (g *golden) peer(t *testing.T, name string) host.Host {
	h, ok := g.peers[name]
	if !ok {
		h = servicetest.NewHost(t, nil)
		g.peers[name] = h
	}
	return h
}

func (g *golden) ingest(t *testing.T, d *datadriven.TestData) string {
	var withDetails []string
	if d.HasArg("details") {
		d.ScanArgs(t, "details", &withDetails)
	}
	var b store.Batch
	index := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || len(f) > 4 {
			d.Fatalf(t, "event %q: want number status time [audience,...]", line)
		}
		at, err := time.Parse(time.RFC3339, f[2])
		require.NoError(t, err)
		p := g.parcels[f[0]]
		if p == nil {
			p = &goldenParcel{}
			g.parcels[f[0]] = p
		}
		i, ok := index[f[0]]
		if !ok {
			i, index[f[0]] = len(b.Updates), len(b.Updates)
			u := store.ParcelUpdate{Number: f[0], New: len(p.cids) == 0, ParcelID: p.id}
			if len(p.cids) > 0 {
				u.PrevSeq = uint64(len(p.cids) - 1)
			}
			if slices.Contains(withDetails, f[0]) {
				u.Details = fullDetails
			}
			b.Updates = append(b.Updates, u)
		}
		u := &b.Updates[i]
		if len(f) == 4 {
			for _, name := range strings.Split(f[3], ",") {
				u.Audience = append(u.Audience, g.peer(t, name).ID().String())
			}
		}
		e := &protocol.Event{Carrier: servicetest.Carrier, Number: f[0], Seq: uint64(len(p.cids)), Time: at.UnixMilli(), Status: protocol.Status(f[1]),
			Location: protocol.Location{Country: "DE", Locode: "DEFRA", City: "Frankfurt am Main", Facility: "FRA-IMC"}}
		if len(p.cids) > 0 {
			e.Prev = protocol.LinkTo(p.cids[len(p.cids)-1])
		}
		block, c, err := protocol.EncodeEvent(e)
		require.NoError(t, err, line)
		p.cids = append(p.cids, c)
		u.Events = append(u.Events, store.NewEvent{Seq: e.Seq, CID: c, Bytes: block})
		u.SignedHead, err = protocol.SignHead(servicetest.Signer(), &protocol.Head{
			Carrier: servicetest.Carrier, Number: f[0], Seq: e.Seq, Head: protocol.LinkTo(c), Time: e.Time,
		})
		require.NoError(t, err)
	}
	res, err := g.ws.store.Append(context.Background(), &b)
	require.NoError(t, err)
	var out strings.Builder
	for i, u := range b.Updates {
		g.parcels[u.Number].id = res.ParcelIDs[i]
		fmt.Fprintf(&out, "%s: seq %d..%d\n", u.Number, u.Events[0].Seq, u.Events[len(u.Events)-1].Seq)
	}
	fmt.Fprintf(&out, "feed tail %d", res.FeedTail)
	return out.String()
}

func (g *golden) grant(t *testing.T, d *datadriven.TestData) string {
	var name, holder string
	var fields, numbers []string
	d.ScanArgs(t, "name", &name)
	d.ScanArgs(t, "holder", &holder)
	d.ScanArgs(t, "fields", &fields)
	if d.HasArg("numbers") {
		d.ScanArgs(t, "numbers", &numbers)
	}
	issued := time.Now()
	if d.HasArg("expired") {
		issued = issued.Add(-2 * time.Hour)
	}
	b, gr, err := policy.IssueGrant(servicetest.Signer(), protocol.Grant{Carrier: servicetest.Carrier, Holder: g.peer(t, holder).ID().String(),
		Numbers: numbers, Audience: d.HasArg("audience"), Fields: fields}, issued, time.Hour)
	require.NoError(t, err)
	require.NoError(t, g.ws.store.PutGrant(context.Background(), &store.GrantRecord{Grant: *gr, Signed: b}))
	g.grants[name], g.grantID[name] = b, gr.ID
	scope := "numbers " + strings.Join(numbers, ",")
	if gr.Audience {
		scope = "its audience"
	}
	return fmt.Sprintf("%s: %s may see %s of %s", name, holder, strings.Join(fields, ","), scope)
}

// grantArg is the grant the command names, if any.
func (g *golden) grantArg(t *testing.T, d *datadriven.TestData) []byte {
	if !d.HasArg("grant") {
		return nil
	}
	var name string
	d.ScanArgs(t, "grant", &name)
	b, ok := g.grants[name]
	if !ok {
		d.Fatalf(t, "no grant %q", name)
	}
	return b
}

func (g *golden) trackCmd(t *testing.T, d *datadriven.TestData) string {
	var peerName string
	var ns []string
	d.ScanArgs(t, "peer", &peerName)
	d.ScanArgs(t, "numbers", &ns)
	from := g.peer(t, peerName)
	servicetest.Connect(t, from, g.ws.host)
	s, err := from.NewStream(context.Background(), g.ws.host.ID(), protocol.TrackID)
	require.NoError(t, err)
	defer s.Close()
	raw := &rawStream{t: t, s: s, frames: protocol.NewFrameReader(s, protocol.MaxTrackResponse)}
	raw.sendMsg(&protocol.TrackRequest{Queries: numbers(ns...), Grant: g.grantArg(t, d)})
	resp := raw.read()
	var out strings.Builder
	if resp.Error != nil {
		fmt.Fprintf(&out, "error %s (%s)\n", resp.Error.Code, g.scrub(resp.Error.Message))
	}
	for _, r := range resp.Results {
		fmt.Fprintf(&out, "%s: %s", r.Number, r.Code)
		if r.Message != "" {
			fmt.Fprintf(&out, " (%s)", g.scrub(r.Message))
		}
		out.WriteString("\n")
		g.printData(t, &out, r.Head, r.Events, r.Details, r.DetailsError)
	}
	return out.String()
}

// printData prints a signed head, its events and details, indented.
func (g *golden) printData(t *testing.T, out *strings.Builder, head []byte, events [][]byte, details protocol.Details, detailsErr string) {
	if len(head) > 0 {
		sh, err := protocol.ParseSignedHead(head)
		require.NoError(t, err)
		require.NoError(t, sh.VerifyWith(servicetest.Keys()))
		fmt.Fprintf(out, "  head seq %d at %s\n", sh.Seq, time.UnixMilli(sh.Time).UTC().Format(time.RFC3339))
	}
	for _, b := range events {
		e, err := protocol.DecodeEvent(b)
		require.NoError(t, err)
		fmt.Fprintf(out, "  %d %s %s %s\n", e.Seq, e.Status, time.UnixMilli(e.Time).UTC().Format(time.RFC3339), protocol.CIDOf(b))
	}
	for _, k := range slices.Sorted(maps.Keys(details)) {
		fmt.Fprintf(out, "  %s: %s\n", k, details[k])
	}
	if detailsErr != "" {
		fmt.Fprintf(out, "  details: %s\n", detailsErr)
	}
}

func (g *golden) watch(t *testing.T, d *datadriven.TestData) string {
	var name, peerName string
	d.ScanArgs(t, "name", &name)
	d.ScanArgs(t, "peer", &peerName)
	req := &protocol.WatchRequest{Audience: d.HasArg("audience"), Grant: g.grantArg(t, d)}
	if d.HasArg("numbers") {
		d.ScanArgs(t, "numbers", &req.Numbers)
	}
	if d.HasArg("cursor") {
		d.ScanArgs(t, "cursor", &req.Cursor)
		if pos, ok := strings.CutPrefix(req.Cursor, "feed."); ok {
			req.Cursor = g.ws.store.ID() + "." + pos
		}
	}
	w := openWatch(t, g.peer(t, peerName), g.ws, req)
	g.watches[name] = w
	// The opening runs to the first heartbeat, after which the
	// subscription is live: an ingest that follows reaches it.
	var out strings.Builder
	for {
		m, ok := g.print(t, &out, w)
		if !ok || m.Type != protocol.WatchStatus {
			return out.String()
		}
	}
}

func (g *golden) next(t *testing.T, d *datadriven.TestData) string {
	var name string
	n := 1
	d.ScanArgs(t, "name", &name)
	d.MaybeScanArgs(t, "n", &n)
	w, ok := g.watches[name]
	if !ok {
		d.Fatalf(t, "no watch %q", name)
	}
	var out strings.Builder
	for range n {
		if _, ok := g.print(t, &out, w); !ok {
			break
		}
	}
	return out.String()
}

// print reads w's next message and prints it; false at the stream's end.
func (g *golden) print(t *testing.T, out *strings.Builder, w *watcher) (*protocol.WatchMessage, bool) {
	m, err := w.read(10 * time.Second)
	if err != nil {
		fmt.Fprintf(out, "end: %v\n", err)
		return nil, false
	}
	out.WriteString(m.Type)
	if m.Number != "" {
		fmt.Fprintf(out, " %s", m.Number)
	}
	if m.Code != "" {
		fmt.Fprintf(out, " %s", m.Code)
	}
	if m.Message != "" {
		fmt.Fprintf(out, " (%s)", g.scrub(m.Message))
	}
	if m.Cursor != "" {
		fmt.Fprintf(out, " cursor %s", g.cursorName(m.Cursor))
	}
	out.WriteString("\n")
	g.printData(t, out, m.Head, m.Events, m.Details, m.DetailsError)
	return m, true
}

// clockTime is a time as the service prints it in a message.
var clockTime = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// scrub names in a message what differs from run to run: peer IDs,
// grant IDs, the store's id and wall-clock times.
func (g *golden) scrub(msg string) string {
	for name, h := range g.peers {
		msg = strings.ReplaceAll(msg, h.ID().String(), name)
	}
	for name, id := range g.grantID {
		msg = strings.ReplaceAll(msg, id, name)
	}
	msg = strings.ReplaceAll(msg, g.ws.store.ID()+".", "feed.")
	return clockTime.ReplaceAllString(msg, "<time>")
}

// cursorName prints a cursor of this store's feed as feed.<position>,
// as its store id is random.
func (g *golden) cursorName(c string) string {
	pos, ok := strings.CutPrefix(c, g.ws.store.ID()+".")
	if _, err := strconv.ParseUint(pos, 10, 64); !ok || err != nil {
		return c
	}
	return "feed." + pos
}
