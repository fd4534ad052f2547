package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// EventsResponse is the body of a 200 answer to POST /v1/events. It is
// sent only after the accepted events are durable.
type EventsResponse struct {
	Accepted   int             `json:"accepted"`
	Duplicates int             `json:"duplicates"`
	Rejected   int             `json:"rejected"`
	Results    []ingest.Result `json:"results"` // one per event, in input order
}

// events serves POST /v1/events: it decodes the body and hands the events
// to Ingest, whose results it answers.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !ingest.IsMediaType(mt) {
		writeProblem(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not one of %s, %s, %s",
			r.Header.Get("Content-Type"), ingest.TypeNDJSON, ingest.TypeJSON, ingest.TypeCBOR))
		return
	}
	// Checked before the body is read, so that a full disk costs no
	// upload; Ingest checks again.
	if err := a.Ingester.Writable(); err != nil {
		diskFull(w, err)
		return
	}
	opts := a.Ingester.Options()
	body, err := readBody(w, r, opts.MaxBodyBytes)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes; split the batch", opts.MaxBodyBytes))
			return
		}
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("reading body: %v", err))
		return
	}
	events, err := ingest.DecodeBatch(mt, body, opts.MaxBatchEvents)
	switch {
	case errors.Is(err, ingest.ErrTooManyEvents):
		writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%v; split the batch", err))
		return
	case err != nil:
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	case len(events) == 0:
		writeProblem(w, http.StatusBadRequest, "body holds no events")
		return
	}
	results, err := a.Ingester.Ingest(r.Context(), events)
	switch {
	case errors.Is(err, store.ErrDiskFull):
		diskFull(w, err)
		return
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		writeProblem(w, http.StatusServiceUnavailable, "request ended before the commit: nothing acknowledged")
		return
	case err != nil:
		writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("%v; nothing of this batch is acknowledged, posting it again is safe", err))
		return
	}
	resp := EventsResponse{Results: results}
	resp.Accepted, resp.Duplicates, resp.Rejected = ingest.Tally(results)
	writeJSON(w, http.StatusOK, &resp)
}

// diskFull answers 507 Insufficient Storage: nothing was written, and the
// same batch posted once space is freed goes through.
func diskFull(w http.ResponseWriter, err error) {
	writeProblem(w, http.StatusInsufficientStorage, fmt.Sprintf("ingest refused, nothing acknowledged: %v; track, watch and info keep serving, and ingest resumes once space is freed", err))
}

// readBody reads the whole body, refusing one over limit bytes before
// reading it when its length is declared.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: ReadFrom needs room to see EOF
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	return buf.Bytes(), err
}

// parcel serves GET /v1/parcels/{number}: the carrier's own view.
func (a *api) parcel(w http.ResponseWriter, r *http.Request) {
	v, err := a.Ingester.Parcel(r.Context(), r.PathValue("number"))
	switch {
	case errors.Is(err, protocol.ErrInvalidNumber):
		writeProblem(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), protocol.ErrorPrefix))
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no parcel with number %q", r.PathValue("number")))
	case err != nil:
		a.Logger.Error("parcel view failed", "number", r.PathValue("number"), "err", err)
		writeProblem(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, v)
	}
}
