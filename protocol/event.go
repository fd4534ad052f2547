package protocol

import (
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
)

// Field limits of an Event. They keep one event well under MaxEventSize and
// make a receiver's memory use predictable.
const (
	MaxEventSize            = 4096 // bytes of one encoded event
	MaxCarrierLen           = 16
	MaxReasonLen            = 32
	MaxDescriptionLen       = 512 // bytes of UTF-8
	MaxLangLen              = 35  // BCP 47
	MaxCityLen              = 128 // bytes of UTF-8
	MaxFacilityLen          = 64
	MaxExtSize              = 2048 // bytes of the encoded ext map
	MaxExtKeyLen            = 64
	MaxLatE6                = 90_000_000
	MaxLonE6                = 180_000_000
	MinEventTime      int64 = 946684800000 // 2000-01-01T00:00:00Z in Unix ms
)

// Event is one scan event of one parcel. Its CID is the CID of its
// canonical encoding, and Prev links it to the parcel's previous event, so
// the newest CID (the head) stands for the whole history.
type Event struct {
	Carrier     string         `cbor:"carrier"`
	Number      string         `cbor:"number"`
	Seq         uint64         `cbor:"seq"`
	Time        int64          `cbor:"time"` // Unix ms of the scan
	Status      Status         `cbor:"status"`
	Reason      string         `cbor:"reason,omitempty"`
	Location    Location       `cbor:"location"`
	Description string         `cbor:"description,omitempty"`
	Lang        string         `cbor:"lang,omitempty"`
	Prev        Link           `cbor:"prev,omitzero"`
	ETA         int64          `cbor:"eta,omitempty"` // Unix ms, the carrier's current estimate
	Handoff     *Handoff       `cbor:"handoff,omitempty"`
	Ext         map[string]any `cbor:"ext,omitempty"`
}

// Location is where a scan happened. Coordinates are coarse and integer
// (micro-degrees) because floats are not allowed in records.
type Location struct {
	Country  string `cbor:"country" json:"country"` // ISO 3166-1 alpha-2
	Locode   string `cbor:"locode,omitempty" json:"locode,omitempty"`
	City     string `cbor:"city,omitempty" json:"city,omitempty"`
	Facility string `cbor:"facility,omitempty" json:"facility,omitempty"`
	LatE6    *int64 `cbor:"lat_e6,omitempty" json:"lat_e6,omitempty"`
	LonE6    *int64 `cbor:"lon_e6,omitempty" json:"lon_e6,omitempty"`
}

// Handoff names the parcel's next leg at another carrier.
type Handoff struct {
	Carrier string `cbor:"carrier" json:"carrier"`
	Number  string `cbor:"number" json:"number"`
}

// EncodeEvent validates e and returns its canonical bytes and CID.
func EncodeEvent(e *Event) ([]byte, cid.Cid, error) {
	if err := e.Validate(); err != nil {
		return nil, cid.Undef, err
	}
	b, err := Marshal(e)
	if err != nil {
		return nil, cid.Undef, err
	}
	if len(b) > MaxEventSize {
		return nil, cid.Undef, fmt.Errorf("%w: event is %d bytes, limit %d", ErrTooLarge, len(b), MaxEventSize)
	}
	return b, CIDOf(b), nil
}

// DecodeEvent decodes and validates an event block from peer input. The
// bytes must be exactly the canonical encoding, since the CID hashes them.
func DecodeEvent(b []byte) (*Event, error) {
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("%w: event is %d bytes, limit %d", ErrTooLarge, len(b), MaxEventSize)
	}
	var e Event
	if err := UnmarshalCanonical(b, &e); err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Validate checks every field of e and reports all problems at once.
func (e *Event) Validate() error {
	var p problems
	p.check(ValidCarrierCode(e.Carrier), "carrier")
	if n, err := NormalizeNumber(e.Number); err != nil {
		p.add("number: %v", err)
	} else if n != e.Number {
		p.add("number %q is not normalized (want %q)", e.Number, n)
	}
	if e.Time < MinEventTime {
		p.add("time %d is before 2000-01-01 or not in Unix milliseconds", e.Time)
	}
	if !e.Status.Valid() {
		p.add("unknown status %q", e.Status)
	} else if !ValidReason(e.Status, e.Reason) {
		p.add("reason %q is not defined for status %q", e.Reason, e.Status)
	}
	p.check(e.Location.Validate(), "location")
	if len(e.Description) > MaxDescriptionLen {
		p.add("description is %d bytes, limit %d", len(e.Description), MaxDescriptionLen)
	}
	if e.Lang != "" && !validLang(e.Lang) {
		p.add("lang %q is not a BCP 47 tag", e.Lang)
	}
	if e.Lang != "" && e.Description == "" {
		p.add("lang without description")
	}
	switch {
	case e.Seq == 0 && e.Prev.Defined():
		p.add("seq 0 must not have prev")
	case e.Seq > 0 && !e.Prev.Defined():
		p.add("seq %d must have prev", e.Seq)
	case e.Prev.Defined():
		p.check(CheckCID(e.Prev.Cid), "prev")
	}
	if e.ETA != 0 && e.ETA < MinEventTime {
		p.add("eta %d is not in Unix milliseconds", e.ETA)
	}
	if e.Handoff != nil {
		p.check(ValidCarrierCode(e.Handoff.Carrier), "handoff.carrier")
		if n, err := NormalizeNumber(e.Handoff.Number); err != nil || n != e.Handoff.Number {
			p.add("handoff.number %q is not a normalized tracking number", e.Handoff.Number)
		}
	}
	p.check(validExt(e.Ext), "ext")
	return p.err(ErrInvalid)
}

// Validate checks a location's fields.
func (l *Location) Validate() error {
	var p problems
	if !isUpperAlpha(l.Country, 2) {
		p.add("country %q is not an ISO 3166-1 alpha-2 code", l.Country)
	}
	if l.Locode != "" && !validLocode(l.Locode) {
		p.add("locode %q is not a UN/LOCODE (2 letters and 3 letters or digits 2-9)", l.Locode)
	}
	if l.Locode != "" && isUpperAlpha(l.Country, 2) && !strings.HasPrefix(l.Locode, l.Country) {
		p.add("locode %q is not in country %q", l.Locode, l.Country)
	}
	if len(l.City) > MaxCityLen {
		p.add("city is %d bytes, limit %d", len(l.City), MaxCityLen)
	}
	if len(l.Facility) > MaxFacilityLen {
		p.add("facility is %d bytes, limit %d", len(l.Facility), MaxFacilityLen)
	}
	if (l.LatE6 == nil) != (l.LonE6 == nil) {
		p.add("lat_e6 and lon_e6 go together")
	}
	if l.LatE6 != nil && (*l.LatE6 < -MaxLatE6 || *l.LatE6 > MaxLatE6) {
		p.add("lat_e6 %d out of range", *l.LatE6)
	}
	if l.LonE6 != nil && (*l.LonE6 < -MaxLonE6 || *l.LonE6 > MaxLonE6) {
		p.add("lon_e6 %d out of range", *l.LonE6)
	}
	return p.err(nil)
}

// ValidCarrierCode checks a carrier code: 2 to 16 of [A-Z0-9], starting
// with a letter.
func ValidCarrierCode(code string) error {
	if len(code) < 2 || len(code) > MaxCarrierLen {
		return fmt.Errorf("%w: carrier code %q must be 2 to %d characters", ErrInvalid, code, MaxCarrierLen)
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("%w: carrier code %q must be upper-case letters and digits, starting with a letter", ErrInvalid, code)
		}
	}
	return nil
}

func validExt(ext map[string]any) error {
	if ext == nil {
		return nil
	}
	if len(ext) == 0 {
		return fmt.Errorf("%w: empty ext must be omitted", ErrInvalid)
	}
	for k := range ext {
		ns, name, ok := strings.Cut(k, ".")
		if !ok || ns == "" || name == "" || len(k) > MaxExtKeyLen || !isLowerIdent(ns) {
			return fmt.Errorf("%w: ext key %q must be namespaced as \"<namespace>.<name>\"", ErrInvalid, k)
		}
	}
	b, err := Marshal(ext)
	if err != nil {
		return err
	}
	if len(b) > MaxExtSize {
		return fmt.Errorf("%w: ext is %d bytes, limit %d", ErrTooLarge, len(b), MaxExtSize)
	}
	return nil
}

func validLocode(s string) bool {
	if len(s) != 5 || !isUpperAlpha(s[:2], 2) {
		return false
	}
	for i := 2; i < 5; i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '9') {
			return false
		}
	}
	return true
}

// validLang accepts the shape of a BCP 47 tag: subtags of 1 to 8 letters
// or digits joined by '-', the first all letters.
func validLang(s string) bool {
	if len(s) > MaxLangLen {
		return false
	}
	for i, sub := range strings.Split(s, "-") {
		if len(sub) < 1 || len(sub) > 8 {
			return false
		}
		for _, c := range sub {
			letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
			if !letter && (i == 0 || c < '0' || c > '9') {
				return false
			}
		}
	}
	return true
}

func isUpperAlpha(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < n; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func isLowerIdent(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// problems collects validation failures so that a caller sees all of them.
type problems struct{ list []string }

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) check(err error, field string) {
	if err != nil {
		p.add("%s: %v", field, strings.TrimPrefix(err.Error(), ErrorPrefix))
	}
}

// err returns nil, or one error listing every problem. With a nil
// sentinel the bare list is returned for embedding in a parent's list.
func (p *problems) err(sentinel *Error) error {
	if len(p.list) == 0 {
		return nil
	}
	msg := strings.Join(p.list, "; ")
	if sentinel == nil {
		return fmt.Errorf("%s", msg)
	}
	return fmt.Errorf("%w: %s", sentinel, msg)
}
