package service

import (
	"errors"
	"fmt"

	"github.com/opentrack/opentrack/protocol"
)

// schemeSet is the carrier's tracking-number schemes, which track and
// watch test a number against before they look it up (spec 8.4 step 3).
type schemeSet struct {
	carrier string
	list    []*protocol.CompiledScheme
}

// compileSchemes compiles schemes, protocol.DefaultScheme(carrier) when
// there are none and a carrier is named, and appends a problem to p for
// each that does not compile. Without a carrier the set is empty and
// checks nothing.
func compileSchemes(carrier string, schemes []protocol.Scheme, p []string) (schemeSet, []string) {
	if len(schemes) == 0 && carrier != "" {
		schemes = []protocol.Scheme{protocol.DefaultScheme(carrier)}
	}
	set := schemeSet{carrier: carrier}
	for i, s := range schemes {
		c, err := protocol.CompileScheme(s)
		if err != nil {
			p = append(p, fmt.Sprintf("scheme %d (%s): %v", i, s, err))
			continue
		}
		set.list = append(set.list, c)
	}
	return set, p
}

// match tests n against the carrier's schemes. It returns no code when one
// matches or the set is empty; invalid_number when only a check digit is
// wrong, most likely a typo; and wrong_carrier for a number this carrier
// does not issue, which tells the client to resolve the number again.
func (set schemeSet) match(n string) (code, msg string) {
	if len(set.list) == 0 {
		return "", ""
	}
	code = protocol.CodeWrongCarrier
	for _, s := range set.list {
		switch err := s.Check(n); {
		case err == nil:
			return "", ""
		case errors.Is(err, protocol.ErrCheckDigit):
			code, msg = protocol.CodeInvalidNumber, truncate(protocol.Detail(err))
		}
	}
	if code == protocol.CodeWrongCarrier {
		msg = "not a number " + set.carrier + " issues"
	}
	return code, msg
}
