package gateway

import "net/http"

// apiCSP is the policy of every response but the page, which sets
// pageCSP: nothing an API answer or an asset could run or embed.
const apiCSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

// secure labels every response, the page, assets, API answers and
// problems alike, so that no route can forget: no framing (clickjacking),
// no referrer (the tracking number is in the URL), and a CSP that a
// handler may narrow or, for the page, replace.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", apiCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}
