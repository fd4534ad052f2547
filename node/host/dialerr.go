package host

import (
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// DialError returns err, a failed Connect, with text on one line: libp2p's
// takes a line per address and names the peer twice ("failed to dial:
// failed to dial P: all dials failed\n  * [addr] cause"), which a caller
// that names the peer itself cannot print as one sentence. The text is
// the cause, then each address tried with what it gave; errors.Is and
// errors.As still see err. Other errors come back as they are.
func DialError(err error) error {
	var de *swarm.DialError
	if !errors.As(err, &de) {
		return err
	}
	var tried []string
	for _, te := range de.DialErrors {
		tried = append(tried, fmt.Sprintf("%s: %s", te.Address, oneLine(te.Cause)))
	}
	if de.Skipped > 0 {
		tried = append(tried, fmt.Sprintf("%d more addresses", de.Skipped))
	}
	text := "dial failed"
	if de.Cause != nil {
		text = oneLine(de.Cause)
	}
	if len(tried) > 0 {
		text += " (" + strings.Join(tried, "; ") + ")"
	}
	return &dialError{err: err, text: text}
}

type dialError struct {
	err  error
	text string
}

func (e *dialError) Error() string { return e.text }
func (e *dialError) Unwrap() error { return e.err }

// oneLine is err's text with its line breaks folded.
func oneLine(err error) string {
	if err == nil {
		return "no cause given"
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}
