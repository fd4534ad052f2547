package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/opentrack/opentrack/protocol"
)

// Codes of the gateway's own, for what the protocol has no code for.
const (
	// codeTimeout: the lookup ran out of TrackTimeout before the
	// carriers answered.
	codeTimeout = "timeout"
	// codeMethod: the route exists, the method does not.
	codeMethod = "method_not_allowed"
	// codeAmbiguous: several carriers hold a parcel with the number, and
	// the request did not pick one with ?carrier=.
	codeAmbiguous = "ambiguous"
	// codeOrigin: a CORS request from an origin not allowed.
	codeOrigin = "origin_not_allowed"
)

// statusOf maps a code, the protocol's or the gateway's own, to its HTTP
// status. It is the only place that does: every problem, and every
// problem's status in the OpenAPI document, comes from here.
func statusOf(code string) int {
	switch code {
	case protocol.CodeInvalidNumber, protocol.ErrCheckDigit.Code, protocol.CodeBadRequest, protocol.CodeTooMany:
		return http.StatusBadRequest
	case protocol.CodeForbidden, codeOrigin:
		return http.StatusForbidden
	case protocol.CodeNotFound, protocol.CodeWrongCarrier:
		return http.StatusNotFound
	case codeMethod:
		return http.StatusMethodNotAllowed
	case codeAmbiguous:
		return http.StatusMultipleChoices
	case protocol.ErrTooLarge.Code:
		return http.StatusRequestEntityTooLarge
	case protocol.CodeRateLimited:
		return http.StatusTooManyRequests
	case protocol.CodeInternal:
		return http.StatusInternalServerError
	case codeTimeout:
		return http.StatusGatewayTimeout
	default:
		// unavailable (no node of the carrier answered) and every
		// verification failure (bad_signature, broken_chain,
		// unknown_key...): what came from upstream cannot be served.
		return http.StatusBadGateway
	}
}

// problem is an RFC 9457 problem document with the protocol's code.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Code is the protocol's error code (or the gateway's own, above).
	Code     string   `json:"code"`
	Number   string   `json:"number,omitempty"`
	Carrier  string   `json:"carrier,omitempty"`
	Carriers []string `json:"carriers,omitempty"` // the choices of an ambiguous number
	// RetryAfterMS mirrors the Retry-After header in milliseconds, as
	// the JSON view's retry_after_ms does.
	RetryAfterMS uint64 `json:"retry_after_ms,omitempty"`
}

// newProblem is the problem for code, with the status statusOf gives.
func newProblem(code, detail string) *problem {
	st := statusOf(code)
	return &problem{Type: "/problems/" + code, Title: http.StatusText(st), Status: st, Detail: detail, Code: code}
}

// retryAfter sets the wait before a retry, rounded up to whole
// milliseconds (and the Retry-After header to whole seconds), so that a
// wait below a millisecond still carries one.
func (p *problem) retryAfter(d time.Duration) *problem {
	p.RetryAfterMS = uint64((d + time.Millisecond - 1) / time.Millisecond)
	return p
}

// write sends p, with Retry-After when it has a wait.
func (p *problem) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	if p.RetryAfterMS > 0 {
		h.Set("Retry-After", strconv.FormatUint((p.RetryAfterMS+999)/1000, 10))
	}
	b, _ := json.Marshal(p) // strings and numbers only: cannot fail
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}
