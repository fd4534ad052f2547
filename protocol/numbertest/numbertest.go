// Package numbertest makes tracking numbers that pass their scheme's
// checks, for tests and for the testnet's simulated carriers. Check
// digits come from protocol.CheckDigit, so no test carries its own copy
// of an algorithm or a digit worked out by hand.
package numbertest

import (
	"fmt"
	"strings"

	"github.com/opentrack/opentrack/protocol"
)

// Scheme is the scheme of Number: "77" and ten digits, the length most
// domestic carriers issue, with no check digit.
var Scheme = protocol.Scheme{Kind: protocol.SchemePattern, Pattern: `77\d{10}`}

// Number returns the i-th number of Scheme; i is below 10^10.
func Number(i int) string { return fmt.Sprintf("77%010d", i) }

// S10 returns the UPU S10 identifier of a 2-letter service indicator, a
// serial from 0 to 10^8-1 and a 2-letter country, with its mod11 check
// digit. A larger serial gives a number of the wrong length, which the
// scheme's Check rejects; a negative one panics.
func S10(service string, serial int, country string) string {
	data := fmt.Sprintf("%08d", serial)
	d, err := protocol.CheckDigit(protocol.CheckMod11, data)
	if err != nil {
		panic("numbertest: S10 serial " + data + ": " + err.Error())
	}
	return service + data + string(d) + country
}

// Complete returns n followed by the check digit algo computes over n's
// digits; letters are skipped, as protocol.CompiledScheme.Check skips
// them. With protocol.CheckNone it returns n unchanged.
func Complete(algo protocol.CheckAlgo, n string) (string, error) {
	if algo == protocol.CheckNone {
		return n, nil
	}
	var digits strings.Builder
	for _, c := range []byte(n) {
		if c >= '0' && c <= '9' {
			digits.WriteByte(c)
		}
	}
	d, err := protocol.CheckDigit(algo, digits.String())
	if err != nil {
		return "", fmt.Errorf("numbertest: %q: %w", n, err)
	}
	return n + string(d), nil
}
