package gateway

import (
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
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

// TestOpenAPISchemasMatchJSON fails when a JSON key the gateway serves is
// missing from its schema in the document, or the schema lists a key no
// served type has.
func TestOpenAPISchemasMatchJSON(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	for _, tc := range []struct {
		schema string
		typ    reflect.Type
	}{
		{"ParcelView", reflect.TypeFor[trackView]()},
		{"Event", reflect.TypeFor[client.EventView]()},
		{"Location", reflect.TypeFor[protocol.Location]()},
		{"WatchUpdate", reflect.TypeFor[client.WatchUpdate]()},
	} {
		t.Run(tc.schema, func(t *testing.T) {
			s, ok := doc.Components.Schemas[tc.schema]
			require.True(t, ok, "no schema %s in the document", tc.schema)
			documented := slices.Sorted(maps.Keys(s.Properties))
			require.Equal(t, jsonKeys(tc.typ), documented, "the JSON keys of %s against the properties of schema %s", tc.typ, tc.schema)
		})
	}
}

// jsonKeys lists the JSON keys encoding/json gives t's fields, sorted,
// with embedded structs flattened as encoding/json does.
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			keys = append(keys, jsonKeys(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		keys = append(keys, name)
	}
	slices.Sort(keys)
	return keys
}
