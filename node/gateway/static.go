package gateway

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"

	"github.com/opentrack/opentrack/protocol"
)

// web holds the tracking page: plain HTML, CSS and JavaScript, no build
// step and nothing fetched from elsewhere.
//
//go:embed web
var web embed.FS

// openAPI is the gateway's OpenAPI 3.1 document; a test keeps it in step
// with the routes.
//
//go:embed openapi.json
var openAPI []byte

// pageCSP keeps the page to its own origin: its script, its styles, and
// the API it calls.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// writePage sends the rendered page (page.go) with status.
func writePage(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serveStatic serves the page's assets: only files directly in
// web/static.
func serveStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	var b []byte
	err := fs.ErrNotExist
	if fs.ValidPath(name) && path.Base(name) == name {
		b, err = web.ReadFile("web/static/" + name)
	}
	if err != nil {
		newProblem(protocol.CodeNotFound, "no such file").write(w)
		return
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(b)
}

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPI)
}
