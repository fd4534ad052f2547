package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// fixture is a small testnet with a gateway for its first platform.
type fixture struct {
	net  *testnet.Net
	plat *testnet.Platform
	gw   *running
	url  string
	http *http.Client
}

// newFixture starts a testnet of carriers carriers and one platform, and
// a gateway for the platform with opts.
func newFixture(t testing.TB, carriers int, opts *Options) *fixture {
	t.Helper()
	n := testnet.New(t, testnet.Options{Carriers: carriers, Platforms: 1})
	f := &fixture{net: n, plat: n.Platforms[0], http: &http.Client{Timeout: 30 * time.Second}}
	f.gw = f.start(t, Config{Client: f.plat.Platform.Client()}, opts)
	f.url = f.gw.url
	return f
}

// start runs another gateway over the fixture's platform; cfg's empty
// dependencies are the platform's.
func (f *fixture) start(t testing.TB, cfg Config, opts *Options) *running {
	t.Helper()
	if cfg.Client == nil {
		cl, err := client.New(f.plat.Node.Host, nil)
		require.NoError(t, err)
		t.Cleanup(func() { cl.Close() })
		cfg.Client = cl
	}
	if cfg.Trust == nil {
		cfg.Trust = f.plat.Node.Trust
	}
	if cfg.Connector == nil {
		cfg.Connector = f.plat.Node.Router()
	}
	g, err := New(cfg, opts)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	r := &running{Gateway: g, url: "http://" + ln.Addr().String(), stop: stop, done: make(chan struct{})}
	go func() {
		r.err = g.Serve(ctx, ln)
		close(r.done)
	}()
	t.Cleanup(func() {
		stop()
		<-r.done
		require.NoError(t, r.err)
	})
	return r
}

// running is a gateway serving for a test: stop shuts it down, and err
// is what Serve returned once done is closed.
type running struct {
	*Gateway
	url  string
	stop context.CancelFunc
	done chan struct{}
	err  error
}

// book ingests scans for a new parcel of c, one event per status, and
// returns its number.
func book(t testing.TB, c *testnet.Carrier, audience string, statuses ...protocol.Status) string {
	t.Helper()
	number, err := c.NewNumber()
	require.NoError(t, err)
	for i, s := range statuses {
		scan(t, c, number, audience, i, s)
	}
	return number
}

var cities = []string{"London", "Leeds", "Manchester", "Bristol", "Glasgow", "Cardiff", "York"}

// scan ingests the i-th scan of number with status and returns its CID.
func scan(t testing.TB, c *testnet.Carrier, number, audience string, i int, s protocol.Status) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev := ingest.InputEvent{
		ID: fmt.Sprintf("%s-%d", number, i), Number: number, Status: string(s),
		Time:     time.Now().Add(time.Duration(i-10) * time.Hour).UTC().Format(time.RFC3339),
		Location: protocol.Location{Country: "GB", City: cities[i%len(cities)], Facility: fmt.Sprintf("HUB-%02d", i)},
	}
	if audience != "" {
		ev.Audience = []string{audience}
	}
	res, err := c.Ingest(ctx, []ingest.InputEvent{ev})
	require.NoError(t, err)
	require.Equal(t, ingest.StatusAccepted, res[0].Status, res[0].Error)
	return res[0].CID
}

// do sends a request and returns the response with its body read.
func (f *fixture) do(t *testing.T, method, path string, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

// requireProblem checks that resp is a problem with status and code.
func requireProblem(t *testing.T, resp *http.Response, body []byte, status int, code string) problem {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "%s", body)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p problem
	require.NoError(t, json.Unmarshal(body, &p), "%s", body)
	require.Equal(t, code, p.Code, "%s", body)
	require.Equal(t, status, p.Status)
	require.Equal(t, "/problems/"+code, p.Type)
	require.NotEmpty(t, p.Title)
	return p
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// sseReader reads events from a stream, skipping comments.
type sseReader struct {
	br *bufio.Reader
}

func (r *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.event != "" || ev.data != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"), strings.HasPrefix(line, "retry:"):
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data += strings.TrimPrefix(line, "data: ")
		default:
			return ev, fmt.Errorf("unexpected SSE line %q", line)
		}
	}
}

// openStream opens GET path as an event stream until ctx ends.
func (f *fixture) openStream(t *testing.T, ctx context.Context, path string, header ...string) (*http.Response, *sseReader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{}).Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp, &sseReader{br: bufio.NewReader(resp.Body)}
}

// nextUpdate reads events until an update, and decodes it.
func nextUpdate(t *testing.T, r *sseReader) (sseEvent, client.WatchUpdate) {
	t.Helper()
	for {
		ev, err := r.next()
		require.NoError(t, err)
		if ev.event != "update" {
			continue
		}
		var u client.WatchUpdate
		require.NoError(t, json.Unmarshal([]byte(ev.data), &u), ev.data)
		return ev, u
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	require.NoError(t, err)
	return a
}
