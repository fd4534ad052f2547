package ingest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// Media types POST /v1/events accepts.
const (
	TypeNDJSON = "application/x-ndjson" // one JSON event per line
	TypeJSON   = "application/json"     // a JSON array of events
	TypeCBOR   = "application/cbor"     // a CBOR array of events, strict DAG-CBOR
)

// Response is the body of a 200 answer to POST /v1/events. It is sent only
// after the accepted events are durable.
type Response struct {
	Accepted   int      `json:"accepted"`
	Duplicates int      `json:"duplicates"`
	Rejected   int      `json:"rejected"`
	Results    []Result `json:"results"` // one per event, in input order
}

// Problem is the body of every error answer (RFC 9457).
type Problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// Handler serves the carrier ingest API: POST /v1/events and GET
// /v1/parcels/{number}. It does no authentication; node/admin mounts it
// behind the admin token on loopback.
func (g *Ingester) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", g.serveEvents)
	mux.HandleFunc("GET /v1/parcels/{number}", g.serveParcel)
	return mux
}

// errSplit marks a body that cannot be split into events at all; the
// whole request is refused with 400.
var errSplit = errors.New("ingest: body is not a list of events")

func (g *Ingester) serveEvents(w http.ResponseWriter, r *http.Request) {
	start := g.now()
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != TypeNDJSON && mt != TypeJSON && mt != TypeCBOR) {
		writeProblem(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not one of %s, %s, %s",
			r.Header.Get("Content-Type"), TypeNDJSON, TypeJSON, TypeCBOR))
		return
	}
	if err := g.writable(); err != nil {
		// 507 Insufficient Storage: nothing was read or written, and the
		// same batch posted once space is freed goes through.
		writeProblem(w, http.StatusInsufficientStorage, fmt.Sprintf("ingest refused, nothing acknowledged: %v; track, watch and info keep serving, and ingest resumes once space is freed", err))
		return
	}
	body, err := g.readBody(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes; split the batch", g.opts.MaxBodyBytes))
			return
		}
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("reading body: %v", err))
		return
	}
	raws, err := g.split(mt, body)
	switch {
	case errors.Is(err, ErrTooManyEvents):
		writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%v; split the batch", err))
		return
	case err != nil:
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	case len(raws) == 0:
		writeProblem(w, http.StatusBadRequest, "body holds no events")
		return
	}

	results := make([]Result, len(raws))
	items := make([]*item, 0, len(raws))
	for i, raw := range raws {
		var in InputEvent
		if err := decodeEvent(mt, raw, &in); err != nil {
			results[i] = Result{ID: in.ID, Number: in.Number, Status: StatusRejected, Error: err.Error()}
			continue
		}
		if it := g.check(&in, &results[i], start); it != nil {
			items = append(items, it)
		}
	}
	if err := g.commit(r.Context(), items); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			writeProblem(w, http.StatusServiceUnavailable, "request ended before the commit: nothing acknowledged")
			return
		}
		writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("%v; nothing of this batch is acknowledged, posting it again is safe", err))
		return
	}
	g.count(results, start)

	resp := Response{Results: results}
	resp.Accepted, resp.Duplicates, resp.Rejected = tally(results)
	writeJSON(w, http.StatusOK, &resp)
}

// readBody reads the whole body, refusing one over MaxBodyBytes before
// reading it when its length is declared.
func (g *Ingester) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > g.opts.MaxBodyBytes {
		return nil, &http.MaxBytesError{Limit: g.opts.MaxBodyBytes}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: ReadFrom needs room to see EOF
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	return buf.Bytes(), err
}

// split cuts a body into one raw encoded value per event. An NDJSON line
// that is not JSON still becomes an event, rejected on its own later.
func (g *Ingester) split(mt string, body []byte) ([][]byte, error) {
	var raws [][]byte
	switch mt {
	case TypeNDJSON:
		for line := range bytes.Lines(body) {
			if line = bytes.TrimSpace(line); len(line) == 0 {
				continue // blank lines separate nothing
			}
			if len(raws) == g.opts.MaxBatchEvents {
				return nil, fmt.Errorf("%w: more than %d events", ErrTooManyEvents, g.opts.MaxBatchEvents)
			}
			raws = append(raws, line)
		}
	case TypeJSON:
		var err error
		if raws, err = g.splitJSON(body); err != nil {
			return nil, err
		}
	case TypeCBOR:
		var list []cbor.RawMessage
		if err := protocol.Unmarshal(body, &list); err != nil {
			if errors.Is(err, protocol.ErrTooLarge) {
				return nil, fmt.Errorf("%w: %s", ErrTooManyEvents, trimProto(err))
			}
			return nil, fmt.Errorf("%w: want a CBOR array of event maps: %s", errSplit, trimProto(err))
		}
		raws = make([][]byte, len(list))
		for i, m := range list {
			raws[i] = m
		}
	}
	if len(raws) > g.opts.MaxBatchEvents {
		return nil, fmt.Errorf("%w: %d events, limit %d", ErrTooManyEvents, len(raws), g.opts.MaxBatchEvents)
	}
	return raws, nil
}

// splitJSON cuts a JSON array into its elements, counting as it goes, so
// that a huge array of tiny values is refused at MaxBatchEvents+1 rather
// than decoded whole first (2M "{}" once took 1.3 s and 242 MB).
func (g *Ingester) splitJSON(body []byte) ([][]byte, error) {
	bad := func(err error) error {
		return fmt.Errorf("%w: want a JSON array of event objects: %s", errSplit, strings.TrimPrefix(err.Error(), "json: "))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil {
		return nil, bad(err)
	} else if tok != json.Delim('[') {
		return nil, bad(fmt.Errorf("the body starts with %v, not [", tok))
	}
	var raws [][]byte
	for dec.More() {
		if len(raws) == g.opts.MaxBatchEvents {
			return nil, fmt.Errorf("%w: more than %d events", ErrTooManyEvents, g.opts.MaxBatchEvents)
		}
		var m json.RawMessage
		if err := dec.Decode(&m); err != nil {
			return nil, bad(err)
		}
		raws = append(raws, m)
	}
	if _, err := dec.Token(); err != nil { // the closing ]
		return nil, bad(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad(errors.New("data after the array"))
	}
	return raws, nil
}

// decodeEvent decodes one event, refusing unknown fields. Even on error
// in keeps what was decoded, so a rejection can name the event's id.
func decodeEvent(mt string, raw []byte, in *InputEvent) error {
	if mt == TypeCBOR {
		err := protocol.Unmarshal(raw, in)
		if errors.Is(err, protocol.ErrUnknownField) {
			// The CBOR decoder names only the position; a carrier needs the key.
			return fmt.Errorf("invalid event: unknown field %s", strings.Join(unknownKeys(raw), ", "))
		}
		if err != nil {
			return fmt.Errorf("invalid event: %s", trimProto(err))
		}
		return nil
	}
	if raw[0] != '{' {
		return errors.New("invalid event: not a JSON object")
	}
	if decodeFlat(raw, in) {
		return nil
	}
	return decodeJSON(raw, in)
}

// decodeJSON decodes one JSON event with encoding/json, refusing unknown
// fields, and numbers as json.Number.
func decodeJSON(raw []byte, in *InputEvent) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber() // ext numbers must stay exact integers
	if err := dec.Decode(in); err != nil {
		return fmt.Errorf("invalid event: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errors.New("invalid event: data after the event object")
	}
	return nil
}

// inputKeys are the keys of InputEvent and of its nested objects, by the
// nested object's key ("" for the event itself).
var inputKeys = map[string]map[string]bool{
	"":         tagNames(reflect.TypeFor[InputEvent]()),
	"location": tagNames(reflect.TypeFor[protocol.Location]()),
	"handoff":  tagNames(reflect.TypeFor[protocol.Handoff]()),
}

func tagNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("cbor"), ",")
		names[name] = true
	}
	return names
}

// unknownKeys lists the keys of a CBOR event that InputEvent does not
// have, nested ones as "location.key", quoted and sorted.
func unknownKeys(raw []byte) []string {
	var m map[string]any
	if protocol.Unmarshal(raw, &m) != nil {
		return nil
	}
	var out []string
	for k, v := range m {
		if !inputKeys[""][k] {
			out = append(out, strconv.Quote(k))
			continue
		}
		if sub, ok := v.(map[string]any); ok && inputKeys[k] != nil {
			for sk := range sub {
				if !inputKeys[k][sk] {
					out = append(out, strconv.Quote(k+"."+sk))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// ParcelView is the carrier's own view of a parcel, as GET
// /v1/parcels/{number} returns it.
type ParcelView struct {
	Number     string            `json:"number"`
	Carrier    string            `json:"carrier"`
	ParcelID   uint64            `json:"parcel_id"`
	Genesis    string            `json:"genesis"`
	Head       string            `json:"head"`
	Seq        uint64            `json:"seq"`
	Created    string            `json:"created"` // RFC 3339
	Audience   []string          `json:"audience"`
	SignedHead string            `json:"signed_head"` // hex of the COSE_Sign1
	Events     []EventView       `json:"events"`
	Details    map[string]string `json:"details,omitempty"`
}

// EventView is one stored event in a ParcelView.
type EventView struct {
	Seq         uint64            `json:"seq"`
	CID         string            `json:"cid"`
	Time        string            `json:"time"` // RFC 3339
	Status      string            `json:"status"`
	Reason      string            `json:"reason,omitempty"`
	Location    protocol.Location `json:"location"`
	Description string            `json:"description,omitempty"`
	Lang        string            `json:"lang,omitempty"`
	ETA         string            `json:"eta,omitempty"` // RFC 3339
	Handoff     *protocol.Handoff `json:"handoff,omitempty"`
	Ext         map[string]any    `json:"ext,omitempty"`
}

// eventPage is how many events one store read returns while a view is
// assembled; a parcel rarely has more.
const eventPage = 1000

// Parcel returns the newest parcel with this number, with its events and
// details. It wraps store.ErrNotFound when there is none.
func (g *Ingester) Parcel(ctx context.Context, number string) (*ParcelView, error) {
	n, err := protocol.NormalizeNumber(number)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", protocol.ErrInvalidNumber, trimProto(err))
	}
	p, err := g.st.Parcel(ctx, n)
	if err != nil {
		return nil, err
	}
	v := &ParcelView{
		Number: p.Number, Carrier: g.carrier, ParcelID: p.ID, Genesis: p.Genesis.String(),
		Head: p.Head.String(), Seq: p.Seq, Created: rfc3339(p.Created), Audience: p.Audience,
		SignedHead: hex.EncodeToString(p.SignedHead), Events: make([]EventView, 0, p.Seq+1),
	}
	if v.Audience == nil {
		v.Audience = []string{}
	}
	// Stop at the head read above: events appended meanwhile belong to a
	// newer head than the one this view shows.
	for from := uint64(0); from <= p.Seq; {
		evs, err := g.st.Events(ctx, p.ID, from, eventPage)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return nil, fmt.Errorf("ingest: parcel %s: store has no event at seq %d below head seq %d", n, from, p.Seq)
		}
		for _, se := range evs {
			if se.Seq > p.Seq {
				break
			}
			e, err := protocol.DecodeEvent(se.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ingest: parcel %s: stored event %d: %w", n, se.Seq, err)
			}
			v.Events = append(v.Events, viewEvent(e, protocol.CIDOf(se.Bytes).String()))
		}
		from = evs[len(evs)-1].Seq + 1
	}
	d, err := g.st.Details(ctx, p.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		v.Details = d
	}
	return v, nil
}

func viewEvent(e *protocol.Event, c string) EventView {
	v := EventView{
		Seq: e.Seq, CID: c, Time: rfc3339(e.Time), Status: string(e.Status), Reason: e.Reason,
		Location: e.Location, Description: e.Description, Lang: e.Lang, Handoff: e.Handoff, Ext: e.Ext,
	}
	if e.ETA != 0 {
		v.ETA = rfc3339(e.ETA)
	}
	return v
}

func rfc3339(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

func (g *Ingester) serveParcel(w http.ResponseWriter, r *http.Request) {
	v, err := g.Parcel(r.Context(), r.PathValue("number"))
	switch {
	case errors.Is(err, protocol.ErrInvalidNumber):
		writeProblem(w, http.StatusBadRequest, trimProto(err))
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no parcel with number %q", r.PathValue("number")))
	case err != nil:
		g.log.Error("parcel view failed", "number", r.PathValue("number"), "err", err)
		writeProblem(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

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

func writeProblem(w http.ResponseWriter, status int, detail string) {
	b, _ := json.Marshal(Problem{Title: http.StatusText(status), Status: status, Detail: detail})
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
