package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/metrics"
)

// TestSecurityHeaders: every response, whichever route or problem it
// comes from, forbids framing and referrers and carries a CSP; the HTML
// page carries its own, which keeps it to its origin.
func TestSecurityHeaders(t *testing.T) {
	g := &Gateway{reg: metrics.NewGatewayRegistry()}
	g.routes = g.routeTable()
	h := secure(g.cors(g.mux()))
	cases := []struct {
		method, path string
		status       int
		html         bool
	}{
		{"GET", "/", http.StatusOK, true},
		{"GET", "/static/app.js", http.StatusOK, false},
		{"GET", "/static/style.css", http.StatusOK, false},
		{"GET", "/static/missing.html", http.StatusNotFound, false},
		{"GET", "/openapi.json", http.StatusOK, false},
		{"GET", "/no/such/page", http.StatusNotFound, false},
		{"DELETE", "/", http.StatusMethodNotAllowed, false},
		{"GET", "/v1/track", http.StatusMethodNotAllowed, false},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			res := rec.Result()
			require.Equal(t, tc.status, res.StatusCode)
			require.Equal(t, "DENY", res.Header.Get("X-Frame-Options"))
			require.Equal(t, "no-referrer", res.Header.Get("Referrer-Policy"))
			csp := res.Header.Values("Content-Security-Policy")
			require.Len(t, csp, 1, "one policy, not two that intersect")
			require.Contains(t, csp[0], "frame-ancestors 'none'")
			isHTML := strings.HasPrefix(res.Header.Get("Content-Type"), "text/html")
			require.Equal(t, tc.html, isHTML, "Content-Type %q", res.Header.Get("Content-Type"))
			if isHTML {
				require.Equal(t, pageCSP, csp[0])
			} else {
				require.Equal(t, apiCSP, csp[0])
			}
		})
	}
}
