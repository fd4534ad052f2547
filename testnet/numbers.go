package testnet

import (
	"fmt"
	"strings"
	"sync"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/numbertest"
)

// numberGen makes unique tracking numbers in a carrier's first scheme:
// serial numbers, completed with the scheme's check digit, and checked
// against the scheme before they are handed out.
type numberGen struct {
	scheme protocol.Scheme
	check  *protocol.CompiledScheme
	prefix string // literal prefix of a pattern scheme
	digits int    // data digits after the prefix, check digit excluded

	mu     sync.Mutex
	serial uint64
}

func newNumberGen(r *repo.Repo) (*numberGen, error) {
	schemes, err := r.Config.Schemes()
	if err != nil {
		return nil, err
	}
	s := schemes[0]
	cs, err := protocol.CompileScheme(s)
	if err != nil {
		return nil, err
	}
	g := &numberGen{scheme: s, check: cs}
	if s.Kind == protocol.SchemePattern {
		// The testnet's patterns are a literal prefix and \d{n} or
		// \d{n,m}; the data takes n digits, less one for a check digit.
		i := strings.Index(s.Pattern, `\d{`)
		if i < 0 {
			return nil, fmt.Errorf("testnet: scheme %s is not prefix + \\d{n}", s)
		}
		g.prefix = s.Pattern[:i]
		if _, err := fmt.Sscanf(s.Pattern[i:], `\d{%d`, &g.digits); err != nil {
			return nil, fmt.Errorf("testnet: scheme %s: %w", s, err)
		}
		if s.Check != protocol.CheckNone {
			g.digits--
		}
	}
	return g, nil
}

// next returns the next number, or an error if it would not be valid in
// the scheme.
func (g *numberGen) next() (string, error) {
	g.mu.Lock()
	g.serial++
	serial := g.serial
	g.mu.Unlock()
	var n string
	if g.scheme.Kind == protocol.SchemeS10 {
		n = numbertest.S10("RR", int(serial), g.scheme.Countries[0])
	} else {
		var err error
		if n, err = numbertest.Complete(g.scheme.Check, g.prefix+fmt.Sprintf("%0*d", g.digits, serial)); err != nil {
			return "", fmt.Errorf("testnet: scheme %s: %w", g.scheme, err)
		}
	}
	if err := g.check.Check(n); err != nil {
		return "", fmt.Errorf("testnet: generated number %q for scheme %s: %w", n, g.scheme, err)
	}
	return n, nil
}
