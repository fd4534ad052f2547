package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/ingest"
)

func TestClientEvents(t *testing.T) {
	e := newEnv(t, nil, nil)
	srv, err := admin.New(nil, "tok", e.api, nil, nil)
	require.NoError(t, err)
	url := start(t, srv)

	var file bytes.Buffer
	line := func(v any) {
		if s, ok := v.(string); ok {
			file.WriteString(s + "\n")
			return
		}
		b, err := json.Marshal(v)
		require.NoError(t, err)
		file.Write(append(b, '\n'))
	}
	line(event("a", s10(1)))                                                                                                                // 1
	line("")                                                                                                                                // 2: blank
	line(`{"id": "broken", `)                                                                                                               // 3: not JSON
	line(event("b", s10(1)))                                                                                                                // 4
	line("   ")                                                                                                                             // 5: blank
	line(with(base("c"), "status", "teleported"))                                                                                           // 6: rejected by the server
	line(event("d", s10(2)))                                                                                                                // 7
	line(strings.Repeat("x", 2<<20))                                                                                                        // 8: far too long
	file.WriteString(`{"id":"e","number":"` + s10(3) + `","time":"2025-06-01T11:00:00Z","status":"picked_up","location":{"country":"GB"}}`) // 9, no newline

	var progress []int
	c := &admin.Client{URL: url, Token: "tok"}
	sum, err := c.Events(context.Background(), bytes.NewReader(file.Bytes()), 2, func(done int) { progress = append(progress, done) })
	require.NoError(t, err)
	require.Equal(t, 4, sum.Accepted)
	require.Equal(t, 0, sum.Duplicates)
	require.Equal(t, 3, sum.Rejected)
	require.Len(t, sum.Rejections, 3)
	require.Equal(t, admin.Rejection{Line: 3, Reason: "not a JSON value"}, sum.Rejections[0])
	require.Equal(t, 6, sum.Rejections[1].Line)
	require.Equal(t, "c", sum.Rejections[1].ID)
	require.Contains(t, sum.Rejections[1].Reason, `unknown status "teleported"`)
	require.Equal(t, admin.Rejection{Line: 8, Reason: "line longer than 1048576 bytes"}, sum.Rejections[2])
	require.NotEmpty(t, progress)
	require.Equal(t, 7, progress[len(progress)-1], "every non-blank line counted")
	require.IsIncreasing(t, progress)

	// Posting the same file again stores nothing new.
	c.URL += "/"
	again, err := c.Events(context.Background(), bytes.NewReader(file.Bytes()), 0, nil)
	require.NoError(t, err)
	require.Equal(t, 0, again.Accepted)
	require.Equal(t, 4, again.Duplicates)
	require.Equal(t, uint64(4), e.EventCount())
}

func TestClientEventsRefused(t *testing.T) {
	e := newEnv(t, nil, nil)
	srv, err := admin.New(nil, "tok", e.api, nil, nil)
	require.NoError(t, err)
	url := start(t, srv)

	body := ndjson(t, event("a", s10(1)))
	c := &admin.Client{URL: url, Token: "wrong"}
	sum, err := c.Events(context.Background(), bytes.NewReader(body), 0, nil)
	require.ErrorIs(t, err, admin.ErrPost)
	require.ErrorContains(t, err, "lines 1-1: "+"401 Unauthorized: missing or wrong admin token")
	require.Equal(t, &admin.Summary{}, sum)
	require.Zero(t, e.EventCount())
}

// TestClientCalls goes through the client's other calls on a running
// admin server: a JSON batch, the parcel view and health, with the right
// token and with a wrong one.
func TestClientCalls(t *testing.T) {
	e := newEnv(t, nil, nil)
	srv, err := admin.New(nil, "tok", e.api, nil, nil)
	require.NoError(t, err)
	c := &admin.Client{URL: start(t, srv), Token: "tok"}
	ctx := context.Background()

	n := s10(7)
	res, err := c.Ingest(ctx, []ingest.InputEvent{event("a", n), event("b", n, func(in *ingest.InputEvent) { in.Status = "teleported" })})
	require.NoError(t, err)
	require.Equal(t, ingest.StatusAccepted, res[0].Status)
	require.Equal(t, ingest.StatusRejected, res[1].Status)
	require.Contains(t, res[1].Error, `unknown status "teleported"`)

	v, err := c.Parcel(ctx, n)
	require.NoError(t, err)
	require.Equal(t, res[0].CID, v.Head)
	require.Len(t, v.Events, 1)
	_, err = c.Parcel(ctx, s10(8))
	require.ErrorContains(t, err, "404 Not Found")
	require.NoError(t, c.Health(ctx))

	wrong := &admin.Client{URL: c.URL, Token: "wrong"}
	_, err = wrong.Ingest(ctx, []ingest.InputEvent{event("c", n)})
	require.ErrorIs(t, err, admin.ErrPost)
	require.ErrorContains(t, err, "401 Unauthorized: missing or wrong admin token")
	_, err = wrong.Parcel(ctx, n)
	require.ErrorContains(t, err, "401")
	require.NoError(t, wrong.Health(ctx), "health needs no token")
	require.Equal(t, uint64(1), e.EventCount())

	require.NoError(t, srv.Shutdown(ctx))
	require.ErrorContains(t, c.Health(ctx), "is the node running?")
}
