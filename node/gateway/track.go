package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// batchRequest is the body of POST /v1/track.
type batchRequest struct {
	Numbers []string `json:"numbers"`
}

// Errors of parseBatch; each carries the protocol code it is answered
// with.
var (
	errBatchJSON  = &protocol.Error{Code: protocol.CodeBadRequest, Msg: `gateway: the body must be one JSON object {"numbers": ["...", ...]}`}
	errBatchEmpty = &protocol.Error{Code: protocol.CodeBadRequest, Msg: "gateway: numbers is empty"}
	errBatchMany  = &protocol.Error{Code: protocol.CodeTooMany, Msg: fmt.Sprintf("gateway: more than %d numbers", protocol.MaxNumbersPerRequest)}
)

// parseBatch reads a batch body: exactly one object, with only
// "numbers", 1 to protocol.MaxNumbersPerRequest strings. The numbers
// are returned as sent; TrackNumbers normalizes them and answers an
// invalid one in its own element, as `track --json` does.
func parseBatch(body []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req batchRequest
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: %v", errBatchJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the object", errBatchJSON)
	}
	switch {
	case len(req.Numbers) == 0:
		return nil, errBatchEmpty
	case len(req.Numbers) > protocol.MaxNumbersPerRequest:
		return nil, fmt.Errorf("%w: %d", errBatchMany, len(req.Numbers))
	}
	return req.Numbers, nil
}

// lookup runs TrackNumbers within TrackTimeout. Its error is a problem:
// the lookup timed out, or the client or registry failed.
func (g *Gateway) lookup(ctx context.Context, numbers []string) ([]client.ParcelView, *problem) {
	ctx, cancel := context.WithTimeout(ctx, g.opts.TrackTimeout)
	defer cancel()
	views, err := g.client.TrackNumbers(ctx, g.trust, g.conn, numbers, nil)
	switch {
	case err == nil:
		return views, nil
	case errors.Is(err, context.DeadlineExceeded):
		return nil, newProblem(codeTimeout, fmt.Sprintf("the carriers did not answer within %s", g.opts.TrackTimeout))
	default:
		g.log.Warn("gateway: lookup failed", "err", err)
		return nil, newProblem(protocol.CodeInternal, "the lookup failed")
	}
}

// getTrack serves one number: the verified view, or a problem with the
// view's code. ?carrier= picks one carrier of a number several hold.
func (g *Gateway) getTrack(w http.ResponseWriter, r *http.Request) {
	if !g.admit(w, r, 1) {
		return
	}
	raw := r.PathValue("number")
	number, err := protocol.NormalizeNumber(raw)
	if err != nil {
		p := newProblem(protocol.CodeOf(err), err.Error())
		p.Number = raw
		p.write(w)
		return
	}
	q, err := query(r)
	if err == nil {
		err = checkQuery(q, "carrier")
	}
	if err != nil {
		newProblem(protocol.CodeBadRequest, err.Error()).write(w)
		return
	}
	carrier := q.Get("carrier")
	if carrier != "" {
		if err := protocol.ValidCarrierCode(carrier); err != nil {
			newProblem(protocol.CodeBadRequest, fmt.Sprintf("carrier %q: %v", carrier, err)).write(w)
			return
		}
	}
	views, p := g.budgeted(r, []string{number})
	if p != nil {
		p.Number = number
		p.write(w)
		return
	}
	if carrier != "" {
		var picked []client.ParcelView
		for _, v := range views {
			if v.Carrier == carrier {
				picked = append(picked, v)
			}
		}
		if len(picked) == 0 {
			p := newProblem(protocol.CodeNotFound, fmt.Sprintf("%s: no parcel at carrier %s", number, carrier))
			p.Number, p.Carrier = number, carrier
			p.write(w)
			return
		}
		views = picked
	}
	if len(views) > 1 {
		ambiguous(w, number, views)
		return
	}
	g.writeView(w, r, views[0])
}

// ambiguous answers a number several carriers hold, with a link to each.
func ambiguous(w http.ResponseWriter, number string, views []client.ParcelView) {
	p := newProblem(codeAmbiguous, number+" is a parcel at several carriers: pick one with ?carrier=")
	p.Number = number
	for _, v := range views {
		p.Carriers = append(p.Carriers, v.Carrier)
		u := "/v1/track/" + url.PathEscape(number) + "?carrier=" + url.QueryEscape(v.Carrier)
		w.Header().Add("Link", "<"+u+`>; rel="alternate"`)
	}
	p.write(w)
}

// writeView sends a view that verified, with its ETag, a partial one
// uncached, or the problem of one that did not verify.
func (g *Gateway) writeView(w http.ResponseWriter, r *http.Request, v client.ParcelView) {
	h := w.Header()
	maxAge := "public, max-age=" + strconv.Itoa(int(g.opts.CacheMaxAge/time.Second))
	if v.Partial && v.Error == "" {
		// Its events are provisional (spec 6.3): served as they are,
		// marked, and never cached as the parcel's answer.
		h.Set("Cache-Control", "no-store")
		writeJSON(w, v)
		return
	}
	if v.Error != "" || !v.Verified {
		code := v.Error
		if code == "" {
			code = protocol.CodeInternal
		}
		p := newProblem(code, v.Message)
		p.Number, p.Carrier = v.Number, v.Carrier
		wait := time.Duration(v.RetryAfter) * time.Millisecond
		if code == protocol.CodeRateLimited {
			wait = max(wait, time.Second) // a 429 always says when to retry
		}
		p.retryAfter(wait)
		if code == protocol.CodeNotFound {
			h.Set("Cache-Control", maxAge)
		}
		p.write(w)
		return
	}
	etag := `"` + v.Head + `"`
	h.Set("ETag", etag)
	h.Set("Cache-Control", maxAge)
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, g.named(v))
}

// etagMatch is If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// postTrack serves a batch: one element per number, in order, as `track
// --json` prints them, so that a number several carriers hold has one
// element per carrier. Elements that failed carry their code.
func (g *Gateway) postTrack(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/json") {
		newProblem(protocol.CodeBadRequest, "Content-Type must be application/json").write(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		newProblem(protocol.ErrTooLarge.Code, fmt.Sprintf("the body is over %d bytes", g.opts.MaxBodyBytes)).write(w)
		return
	case err != nil:
		newProblem(protocol.CodeBadRequest, "reading the body: "+err.Error()).write(w)
		return
	}
	numbers, err := parseBatch(body)
	if err != nil {
		newProblem(protocol.CodeOf(err), err.Error()).write(w)
		return
	}
	if !g.admit(w, r, len(numbers)) {
		return
	}
	views, p := g.budgeted(r, numbers)
	if p != nil {
		p.write(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, g.namedAll(views))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		newProblem(protocol.CodeInternal, "encoding the answer failed").write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// query parses r's query string, failing where URL.Query would drop
// what it cannot parse.
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &protocol.Error{Code: protocol.CodeBadRequest, Msg: "gateway: query string: " + err.Error()}
	}
	return q, nil
}

// checkQuery fails on a query parameter not in known, so that a typo
// gets an error rather than being ignored.
func checkQuery(q url.Values, known ...string) error {
	for k := range q {
		if !slices.Contains(known, k) {
			return fmt.Errorf("unknown query parameter %q (known: %s)", k, strings.Join(known, ", "))
		}
	}
	return nil
}
