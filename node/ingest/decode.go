package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/fxamacker/cbor/v2"

	"github.com/opentrack/opentrack/protocol"
)

// Media types of a batch body, the ones DecodeBatch reads.
const (
	TypeNDJSON = "application/x-ndjson" // one JSON event per line
	TypeJSON   = "application/json"     // a JSON array of events
	TypeCBOR   = "application/cbor"     // a CBOR array of events, strict DAG-CBOR
)

// IsMediaType reports whether DecodeBatch reads bodies of media type mt.
func IsMediaType(mt string) bool {
	return mt == TypeNDJSON || mt == TypeJSON || mt == TypeCBOR
}

// errSplit marks a body that cannot be split into events at all.
var errSplit = errors.New("ingest: body is not a list of events")

// DecodeBatch decodes a batch body of media type mt into its events, at
// most limit of them (ErrTooManyEvents beyond). An error means the body as
// a whole is not a list of events. An event that does not decode on its
// own is still returned, with what of it did decode, and Ingest rejects
// it with the reason, so that every event of a body gets its result.
func DecodeBatch(mt string, body []byte, limit int) ([]InputEvent, error) {
	raws, err := split(mt, body, limit)
	if err != nil {
		return nil, err
	}
	events := make([]InputEvent, len(raws))
	for i, raw := range raws {
		if err := decodeEvent(mt, raw, &events[i]); err != nil {
			events[i].invalid = err
		}
	}
	return events, nil
}

// split cuts a body into one raw encoded value per event. An NDJSON line
// that is not JSON still becomes an event, rejected on its own later.
func split(mt string, body []byte, limit int) ([][]byte, error) {
	var raws [][]byte
	switch mt {
	case TypeNDJSON:
		for line := range bytes.Lines(body) {
			if line = bytes.TrimSpace(line); len(line) == 0 {
				continue // blank lines separate nothing
			}
			if len(raws) == limit {
				return nil, fmt.Errorf("%w: more than %d events", ErrTooManyEvents, limit)
			}
			raws = append(raws, line)
		}
	case TypeJSON:
		var err error
		if raws, err = splitJSON(body, limit); err != nil {
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
	default:
		return nil, fmt.Errorf("%w: %q", ErrMediaType, mt)
	}
	if len(raws) > limit {
		return nil, fmt.Errorf("%w: %d events, limit %d", ErrTooManyEvents, len(raws), limit)
	}
	return raws, nil
}

// splitJSON cuts a JSON array into its elements, counting as it goes, so
// that a huge array of tiny values is refused at limit+1 rather
// than decoded whole first (2M "{}" once took 1.3 s and 242 MB).
func splitJSON(body []byte, limit int) ([][]byte, error) {
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
		if len(raws) == limit {
			return nil, fmt.Errorf("%w: more than %d events", ErrTooManyEvents, limit)
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
		if !f.IsExported() {
			continue
		}
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
