package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/protocol"
)

// MaxAudience bounds the platforms one event may name, so that a parcel's
// audience list, which every watch subscription filter reads, stays small.
const MaxAudience = 32

// InputEvent is one scan event as the carrier posts it. The JSON (and
// CBOR) field names are a contract with carrier systems and never change
// within /v1.
type InputEvent struct {
	// ID is the carrier's own event id, the idempotency key. Required.
	ID string `json:"id" cbor:"id"`
	// Number is the tracking number as printed; it is normalized.
	Number string `json:"number" cbor:"number"`
	// Time is when the scan happened, RFC 3339.
	Time string `json:"time" cbor:"time"`
	// Status and Reason come from the protocol vocabulary.
	Status string `json:"status" cbor:"status"`
	Reason string `json:"reason,omitempty" cbor:"reason,omitempty"`
	// Location is where the scan happened.
	Location protocol.Location `json:"location" cbor:"location"`
	// Description is free text for people, in language Lang (BCP 47).
	Description string `json:"description,omitempty" cbor:"description,omitempty"`
	Lang        string `json:"lang,omitempty" cbor:"lang,omitempty"`
	// Audience lists the peer IDs of the platforms that booked the parcel.
	Audience []string `json:"audience,omitempty" cbor:"audience,omitempty"`
	// Details is the parcel's personal data (protocol.DetailFields). It
	// is stored beside the parcel, never in the event.
	Details map[string]string `json:"details,omitempty" cbor:"details,omitempty"`
	// ETA is the carrier's current delivery estimate, RFC 3339.
	ETA string `json:"eta,omitempty" cbor:"eta,omitempty"`
	// Handoff names the parcel's next leg at another carrier.
	Handoff *protocol.Handoff `json:"handoff,omitempty" cbor:"handoff,omitempty"`
	// Ext holds namespaced carrier extensions ("ns.name"); numbers in it
	// must be integers, since records carry no floats.
	Ext map[string]any `json:"ext,omitempty" cbor:"ext,omitempty"`

	// invalid is why DecodeBatch could not decode the event; Ingest
	// rejects it with this reason.
	invalid error
}

// placeholderPrev stands in for the prev link while an event is checked
// before it is chained, so that the size check counts the link it will get.
var placeholderPrev = protocol.LinkTo(protocol.CIDOf(nil))

// problems are the rejection reasons found in one input event.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// prepare validates in on its own and returns the protocol event it
// becomes (seq and prev still unset). The error text is the rejection
// reason shown to the carrier, so every problem found is listed.
func (g *Ingester) prepare(in *InputEvent, now time.Time) (*protocol.Event, error) {
	var p problems
	g.checkID(&p, in.ID)
	ev := &protocol.Event{
		Carrier:     g.carrier,
		Status:      protocol.Status(in.Status),
		Reason:      in.Reason,
		Description: in.Description,
		Lang:        in.Lang,
		Location:    in.Location,
	}
	if err := ev.Location.Validate(); err != nil {
		p.add("location: %v", err)
	}
	if n, err := g.checkNumber(in.Number); err != nil {
		p.add("number: %v", trimProto(err))
	} else {
		ev.Number = n
	}
	checkStatus(&p, ev, in)
	g.setTimes(&p, ev, in, now)
	setExtras(&p, ev, in)
	checkAudience(&p, in)
	if err := protocol.Details(in.Details).Validate(); err != nil {
		p.add("details: %v", trimProto(err))
	}
	if len(p) > 0 {
		return nil, errors.New(strings.Join(p, "; "))
	}
	if err := checkStored(ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// checkID checks the carrier's event id, which makes re-posting safe.
func (g *Ingester) checkID(p *problems, id string) {
	switch {
	case id == "":
		p.add("id: missing (the carrier's event id is required; it makes re-posting safe)")
	case len(id) > g.opts.MaxIDLen:
		p.add("id: %d bytes, limit %d", len(id), g.opts.MaxIDLen)
	case strings.ContainsFunc(id, unicode.IsControl):
		p.add("id: contains control characters")
	}
}

// checkStatus checks status and reason here, not in Event.Validate, so
// that the reason can list what is allowed.
func checkStatus(p *problems, ev *protocol.Event, in *InputEvent) {
	switch {
	case in.Status == "":
		p.add("status: missing")
	case !ev.Status.Valid():
		p.add("status: unknown status %q (one of %s)", in.Status, statusList)
	case !protocol.ValidReason(ev.Status, in.Reason):
		p.add("reason: %q is not defined for status %q (one of %s)", in.Reason, in.Status, strings.Join(protocol.Reasons(ev.Status), ", "))
	}
}

// setTimes sets the event's time, which must not be further in the
// future than FutureSkew, and its ETA.
func (g *Ingester) setTimes(p *problems, ev *protocol.Event, in *InputEvent, now time.Time) {
	switch t, err := parseTime(in.Time); {
	case in.Time == "":
		p.add("time: missing")
	case err != nil:
		p.add("time: %v", err)
	case t.After(now.Add(g.opts.FutureSkew)):
		p.add("time: %s is %v in the future (limit %v)", in.Time, t.Sub(now).Round(time.Second), g.opts.FutureSkew)
	default:
		ev.Time = t.UnixMilli()
	}
	if in.ETA != "" {
		if t, err := parseTime(in.ETA); err != nil {
			p.add("eta: %v", err)
		} else {
			ev.ETA = t.UnixMilli()
		}
	}
}

// setExtras sets the event's handoff and extension fields.
func setExtras(p *problems, ev *protocol.Event, in *InputEvent) {
	if in.Handoff != nil {
		n, err := protocol.NormalizeNumber(in.Handoff.Number)
		if err != nil {
			p.add("handoff.number: %v", trimProto(err))
		}
		ev.Handoff = &protocol.Handoff{Carrier: in.Handoff.Carrier, Number: n}
	}
	if in.Ext != nil {
		ext, err := integerExt(in.Ext)
		if err != nil {
			p.add("ext: %v", err)
		}
		ev.Ext = ext
	}
}

// checkAudience checks the audience's peer IDs and rewrites each in
// canonical text: watch matches the subscriber's ID as text.
func checkAudience(p *problems, in *InputEvent) {
	if len(in.Audience) > MaxAudience {
		p.add("audience: %d peer IDs, limit %d", len(in.Audience), MaxAudience)
	}
	for i, a := range in.Audience {
		id, err := peer.Decode(a)
		if err != nil {
			p.add("audience: %q is not a peer ID", a)
			continue
		}
		in.Audience[i] = id.String()
	}
}

// checkStored checks ev as it will be stored: with a prev link and the
// widest seq, so that chaining can never push an accepted event over the
// size cap. It leaves seq and prev unset again.
func checkStored(ev *protocol.Event) error {
	ev.Seq, ev.Prev = math.MaxUint64, placeholderPrev
	defer func() { ev.Seq, ev.Prev = 0, protocol.Link{} }()
	if err := ev.Validate(); err != nil {
		return errors.New(trimProto(err))
	}
	if mayExceedSize(ev) {
		b, err := protocol.Marshal(ev)
		if err != nil {
			return errors.New(trimProto(err))
		}
		if len(b) > protocol.MaxEventSize {
			return fmt.Errorf("event encodes to %d bytes, limit %d", len(b), protocol.MaxEventSize)
		}
	}
	return nil
}

// maxFixedEncoding bounds what an event's encoding adds to its strings:
// the map keys, the heads of items, the integers and the prev link come
// to under 300 bytes (TestMayExceedSize).
const maxFixedEncoding = 512

// mayExceedSize reports whether ev, valid, might encode to more than
// protocol.MaxEventSize. Only an event with ext, or with strings longer
// than the field limits allow, can; the others need not be encoded twice.
func mayExceedSize(ev *protocol.Event) bool {
	if ev.Ext != nil {
		return true
	}
	n := maxFixedEncoding + len(ev.Carrier) + len(ev.Number) + len(ev.Status) + len(ev.Reason) +
		len(ev.Description) + len(ev.Lang) + len(ev.Location.Country) + len(ev.Location.Locode) +
		len(ev.Location.City) + len(ev.Location.Facility)
	if h := ev.Handoff; h != nil {
		n += len(h.Carrier) + len(h.Number)
	}
	return n > protocol.MaxEventSize
}

// checkNumber normalizes n and requires it to match one of the carrier's
// schemes. A check-digit failure is reported as such, since it is most
// likely a typo in a number that otherwise fits.
func (g *Ingester) checkNumber(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("missing")
	}
	n, err := protocol.NormalizeNumber(raw)
	if err != nil {
		return "", err
	}
	for _, s := range g.schemes {
		switch err := s.Check(n); {
		case err == nil:
			return n, nil
		case errors.Is(err, protocol.ErrCheckDigit):
			return "", err
		}
	}
	return "", fmt.Errorf("%q matches none of carrier %s's number schemes (%s)", n, g.carrier, g.schemeList)
}

// parseTime reads an RFC 3339 time with optional fractional seconds.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (like 2025-03-01T14:05:00Z)", s)
	}
	return t, nil
}

// integerExt converts the JSON numbers of an ext tree to integers, since
// records carry no floats; a CBOR-decoded tree passes through unchanged.
func integerExt(m map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(m))
	for k, v := range m {
		c, err := integerValue(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

func integerValue(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return u, nil
		}
		return nil, fmt.Errorf("%s is not a 64-bit integer (records carry no floats)", v)
	case float64:
		// Only a caller that built the map by hand gets here: the HTTP
		// decoders produce json.Number or CBOR integers.
		return nil, fmt.Errorf("%v is a float (records carry no floats)", v)
	case map[string]any:
		return integerExt(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			c, err := integerValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}

// trimProto drops the "protocol: " prefix and the "invalid record: "
// sentinel text of protocol errors: in a rejection they say nothing the
// field name does not, and nested records repeat them.
func trimProto(err error) string {
	return strings.ReplaceAll(strings.TrimPrefix(err.Error(), protocol.ErrorPrefix), "invalid record: ", "")
}

// statusList names the vocabulary in an unknown-status rejection.
var statusList = func() string {
	var names []string
	for _, s := range protocol.Statuses() {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}()
