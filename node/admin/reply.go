package admin

import (
	"encoding/json"
	"net/http"
)

// Problem is the body of an error answer of the events and parcels routes
// (RFC 9457), and of a missing token.
type Problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// writeJSON answers v as JSON, one line.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeProblem answers an error as problem+json.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	b, _ := json.Marshal(Problem{Title: http.StatusText(status), Status: status, Detail: detail})
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
