package ingest

import (
	"unicode/utf8"

	"github.com/opentrack/opentrack/protocol"
)

// decodeFlat decodes the shape nearly every carrier event has, an object
// of plain strings with a location object of plain strings, into in,
// which must be zero. It reports false, and leaves in zero, for anything
// else: a field that is not a string or that it does not know, a repeated
// key, an escape, a control character, invalid UTF-8, null, data after
// the object. encoding/json then decodes the event, with its rules and
// its error messages, so decodeFlat decides nothing encoding/json would
// decide differently (FuzzDecodeFlat checks that).
//
// encoding/json took a tenth of ingest's time: a decoder and its buffer
// per event, reflection per field, a string per value. This reads the
// line once and takes every value as a piece of one string.
func decodeFlat(raw []byte, in *InputEvent) bool {
	d := flatDecoder{s: string(raw)}
	if !d.object(in) {
		*in = InputEvent{}
		return false
	}
	return true
}

type flatDecoder struct {
	s string
	i int
}

// The keys decodeFlat knows, each a bit in a set of those seen.
const (
	keyID = 1 << iota
	keyNumber
	keyTime
	keyStatus
	keyReason
	keyLocation
	keyDescription
	keyLang
	keyETA
	keyCountry
	keyLocode
	keyCity
	keyFacility
)

// object decodes the top-level object and requires nothing after it.
func (d *flatDecoder) object(in *InputEvent) bool {
	var seen int
	ok := d.fields(func(key string) bool {
		var bit int
		var dst *string
		switch key {
		case "id":
			bit, dst = keyID, &in.ID
		case "number":
			bit, dst = keyNumber, &in.Number
		case "time":
			bit, dst = keyTime, &in.Time
		case "status":
			bit, dst = keyStatus, &in.Status
		case "reason":
			bit, dst = keyReason, &in.Reason
		case "description":
			bit, dst = keyDescription, &in.Description
		case "lang":
			bit, dst = keyLang, &in.Lang
		case "eta":
			bit, dst = keyETA, &in.ETA
		case "location":
			if seen&keyLocation != 0 {
				return false
			}
			seen |= keyLocation
			return d.location(&in.Location)
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return d.str(dst)
	})
	d.space()
	return ok && d.i == len(d.s)
}

func (d *flatDecoder) location(l *protocol.Location) bool {
	var seen int
	return d.fields(func(key string) bool {
		var bit int
		var dst *string
		switch key {
		case "country":
			bit, dst = keyCountry, &l.Country
		case "locode":
			bit, dst = keyLocode, &l.Locode
		case "city":
			bit, dst = keyCity, &l.City
		case "facility":
			bit, dst = keyFacility, &l.Facility
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return d.str(dst)
	})
}

// fields reads an object, calling value for each key with the decoder
// just after the colon.
func (d *flatDecoder) fields(value func(key string) bool) bool {
	if !d.byte('{') {
		return false
	}
	if d.space(); d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return true
	}
	for {
		var key string
		if !d.str(&key) || !d.byte(':') || !value(key) {
			return false
		}
		d.space()
		if d.i == len(d.s) {
			return false
		}
		c := d.s[d.i]
		d.i++
		switch c {
		case ',':
		case '}':
			return true
		default:
			return false
		}
	}
}

// byte skips white space and then requires c.
func (d *flatDecoder) byte(c byte) bool {
	d.space()
	if d.i < len(d.s) && d.s[d.i] == c {
		d.i++
		return true
	}
	return false
}

// space skips JSON white space.
func (d *flatDecoder) space() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// str reads a string without escapes or control characters, in valid
// UTF-8, into dst.
func (d *flatDecoder) str(dst *string) bool {
	if !d.byte('"') {
		return false
	}
	start, ascii := d.i, true
	for ; d.i < len(d.s); d.i++ {
		switch c := d.s[d.i]; {
		case c == '"':
			v := d.s[start:d.i]
			d.i++
			if !ascii && !utf8.ValidString(v) {
				return false
			}
			*dst = v
			return true
		case c == '\\' || c < 0x20:
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return false
}
