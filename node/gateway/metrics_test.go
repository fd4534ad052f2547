package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// runGateway serves Run for the platform of n with opts, as `opentrack
// gateway` does, and returns its URL.
func runGateway(t *testing.T, n *testnet.Net, opts *Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, n.Platforms[0].Platform, ln, opts) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestRunMetricsOwnSeries: the gateway's /metrics holds its own series,
// opentrack_build_info and the process's Go and process collectors;
// none of the node's libp2p or carrier series. pprof is off unless
// asked for.
func TestRunMetricsOwnSeries(t *testing.T) {
	n := testnet.New(t, testnet.Options{Carriers: 1, Platforms: 1})
	number := book(t, n.Carriers[0], "", protocol.StatusInfoReceived)
	url := runGateway(t, n, nil)
	code, _ := get(t, url+"/v1/track/"+number)
	require.Equal(t, http.StatusOK, code)

	code, body := get(t, url+"/metrics")
	require.Equal(t, http.StatusOK, code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	var foreign []string
	for name := range families {
		if !strings.HasPrefix(name, "opentrack_gateway_") && name != "opentrack_build_info" &&
			!strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			foreign = append(foreign, name)
		}
	}
	require.Empty(t, foreign, "series that are not the gateway's")
	require.Contains(t, families, "opentrack_gateway_requests_total")
	bi := families["opentrack_build_info"]
	require.NotNil(t, bi, "opentrack_build_info is exported")
	require.Equal(t, 1.0, bi.Metric[0].GetGauge().GetValue())
	labels := map[string]string{}
	for _, l := range bi.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	require.NotEmpty(t, labels["version"], "build info labels: %v", labels)
	require.NotEmpty(t, labels["commit"], "build info labels: %v", labels)

	for _, path := range []string{"/metrics?debug=1", "/openapi.json?v=2"} {
		code, body := get(t, url+path)
		require.Equal(t, http.StatusBadRequest, code, "%s: a query parameter is refused: %s", path, body)
	}

	code, _ = get(t, url+"/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code, "pprof is off by default")

	pp := runGateway(t, n, &Options{Pprof: true})
	code, body = get(t, pp+"/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "goroutine profile:")
	code, body = get(t, pp+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `opentrack_gateway_requests_total{code="200",route="pprof"}`)
}
