package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/service/servicetest"
	"github.com/opentrack/opentrack/protocol"
)

// TestHandlerMounted serves the gateway's routes from another server,
// under a prefix beside that server's own routes, as an embedding
// application would.
func TestHandlerMounted(t *testing.T) {
	servicetest.CheckLeaks(t)
	f := newFixture(t, 1, nil)
	number := book(t, f.net.Carriers[0], "", protocol.StatusInfoReceived, protocol.StatusPickedUp)

	g, err := New(Config{Client: f.plat.Platform.Client(), Trust: f.plat.Node.Trust, Connector: f.plat.Node.Router()}, nil)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/tracking/", http.StripPrefix("/tracking", g.Handler()))
	mux.HandleFunc("GET /own", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "own route") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := f.http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, body
	}
	resp, body := get("/tracking/v1/track/" + number)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var view client.ParcelView
	require.NoError(t, json.Unmarshal(body, &view))
	require.True(t, view.Verified)
	require.Len(t, view.Events, 2)

	resp, body = get("/tracking/v1/nothing-here")
	requireProblem(t, resp, body, http.StatusNotFound, "not_found")

	resp, body = get("/own")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "own route", string(body))
}
