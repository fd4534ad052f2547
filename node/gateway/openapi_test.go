package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// openAPIDoc is the part of the document the tests read.
type openAPIDoc struct {
	OpenAPI string                                 `json:"openapi"`
	Paths   map[string]map[string]openAPIOperation `json:"paths"`
}

type openAPIOperation struct {
	Responses map[string]json.RawMessage `json:"responses"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	return doc
}

// TestOpenAPIMatchesRoutes fails when a route has no operation in the
// document or the document an operation no route serves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	require.Equal(t, "3.1.0", doc.OpenAPI)
	var served, documented []string
	for _, rt := range (&Gateway{reg: prometheus.NewRegistry()}).routeTable() {
		served = append(served, rt.method+" "+rt.path)
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			documented = append(documented, map[string]string{"get": "GET", "post": "POST"}[method]+" "+path)
			require.NotEmpty(t, op.Responses, "%s %s documents no response", method, path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	require.Equal(t, served, documented)
}

// requireDocumentedCodes checks that every status g answered on a route
// is documented for that operation. The statuses come from g's request
// counter, so every handler test adds to what is checked.
func requireDocumentedCodes(t *testing.T, g *Gateway) {
	t.Helper()
	doc := loadOpenAPI(t)
	byName := map[string]route{}
	for _, rt := range g.routes {
		byName[rt.name] = rt
	}
	ch := make(chan prometheus.Metric, 1000)
	go func() { g.m.Requests.Collect(ch); close(ch) }()
	checked := 0
	for m := range ch {
		var pb dto.Metric
		require.NoError(t, m.Write(&pb))
		labels := map[string]string{}
		for _, l := range pb.Label {
			labels[l.GetName()] = l.GetValue()
		}
		rt, ok := byName[labels["route"]]
		code, _ := strconv.Atoi(labels["code"])
		if !ok || code == http.StatusMethodNotAllowed {
			continue // unknown paths, preflights, wrong methods: no operation
		}
		op := doc.Paths[rt.path][map[string]string{"GET": "get", "POST": "post"}[rt.method]]
		_, documented := op.Responses[labels["code"]]
		require.True(t, documented, "%s %s answered %d, which the document does not list", rt.method, rt.path, code)
		checked++
	}
	require.Positive(t, checked)
}
