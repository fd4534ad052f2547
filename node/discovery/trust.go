// Package discovery is how a node knows who is who and where they are:
// Trust holds the trust anchors and the newest signed registry they
// accept, resolves tracking numbers to carriers and binds carrier keys;
// peer routing finds the registry's nodes again when their addresses
// change. There are no per-parcel announcements: the registry and the
// node addresses are all that is ever published.
package discovery

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/opentrack/opentrack/node/internal/atomicfile"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/protocol"
)

// Errors of a Trust: NewTrust without anchors, and lookups before any
// registry is installed.
var (
	ErrNoAnchors  = errors.New("discovery: no trust anchors")
	ErrNoRegistry = errors.New("discovery: no registry installed")
)

// Trust is a node's trust state. It is safe for concurrent use.
type Trust struct {
	anchors []ed25519.PublicKey
	path    string // where the accepted registry is kept; "" for memory only
	now     func() time.Time

	mu       sync.RWMutex
	reg      *protocol.Registry
	signed   []byte
	carriers []resolver
	changed  chan struct{} // closed and replaced on every install
}

type resolver struct {
	entry   *protocol.CarrierEntry
	schemes []*protocol.CompiledScheme
}

// NewTrust returns the trust state for anchors. With a path, it loads the
// registry kept there, if any, and keeps every newer one it accepts there.
// now may be nil for time.Now.
func NewTrust(anchors []ed25519.PublicKey, path string, now func() time.Time) (*Trust, error) {
	if len(anchors) == 0 {
		return nil, ErrNoAnchors
	}
	if now == nil {
		now = time.Now
	}
	t := &Trust{anchors: anchors, path: path, now: now, changed: make(chan struct{})}
	if path == "" {
		return t, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("discovery: %w", err)
	}
	// The stored edition was accepted once; it stays usable after it
	// expires, until a newer one arrives.
	r, err := protocol.VerifyRegistry(b, anchors)
	if err == nil {
		_, err = t.install(r, b, false)
	}
	if err != nil {
		return nil, fmt.Errorf("discovery: registry in %s: %w", path, err)
	}
	return t, nil
}

// Install accepts a signed registry if one of the anchors signed it, it is
// within its validity window, and its sequence is higher than the one
// held. It reports whether the registry was installed; an older or equal
// sequence is not an error for a caller that exchanges registries, so it
// returns false with protocol.ErrStaleRegistry.
func (t *Trust) Install(signed []byte) (bool, error) {
	r, err := protocol.OpenRegistry(signed, t.anchors, t.now().UnixMilli())
	if err != nil {
		return false, err
	}
	return t.install(r, signed, true)
}

func (t *Trust) install(r *protocol.Registry, signed []byte, persist bool) (bool, error) {
	carriers := make([]resolver, len(r.Carriers))
	for i := range r.Carriers {
		c := &r.Carriers[i]
		carriers[i].entry = c
		schemes := c.Schemes
		if len(schemes) == 0 { // spec §10.5: no schemes means the default one
			schemes = []protocol.Scheme{protocol.DefaultScheme(c.Code)}
		}
		for _, s := range schemes {
			cs, err := protocol.CompileScheme(s)
			if err != nil {
				return false, fmt.Errorf("carrier %s: %w", c.Code, err)
			}
			carriers[i].schemes = append(carriers[i].schemes, cs)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reg != nil && r.Seq <= t.reg.Seq {
		return false, fmt.Errorf("%w: have seq %d, offered %d", protocol.ErrStaleRegistry, t.reg.Seq, r.Seq)
	}
	if persist && t.path != "" {
		if err := atomicfile.Write(t.path, signed, 0o600); err != nil {
			return false, err
		}
	}
	t.reg, t.signed, t.carriers = r, append([]byte(nil), signed...), carriers
	close(t.changed)
	t.changed = make(chan struct{})
	return true, nil
}

// Seq is the sequence of the registry held, 0 for none.
func (t *Trust) Seq() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.reg == nil {
		return 0
	}
	return t.reg.Seq
}

// Signed is the signed registry held, nil for none.
func (t *Trust) Signed() []byte {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.signed
}

// Registry is the registry held, nil for none. Callers must not modify it.
func (t *Trust) Registry() *protocol.Registry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.reg
}

// Changed is closed when a newer registry is installed.
func (t *Trust) Changed() <-chan struct{} {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.changed
}

// CarrierKey implements protocol.KeyResolver with the registry held.
func (t *Trust) CarrierKey(carrier string, kid []byte, at int64) (ed25519.PublicKey, error) {
	r := t.Registry()
	if r == nil {
		return nil, fmt.Errorf("%w: %w", protocol.ErrUnknownKey, ErrNoRegistry)
	}
	return r.CarrierKey(carrier, kid, at)
}

// Resolve returns the carriers whose schemes the number satisfies, check
// digit included. More than one means the number is ambiguous, and a
// client asks all of them. The number must be normalized.
func (t *Trust) Resolve(number string) ([]*protocol.CarrierEntry, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.reg == nil {
		return nil, ErrNoRegistry
	}
	var out []*protocol.CarrierEntry
	var firstErr error
	for _, c := range t.carriers {
		for _, s := range c.schemes {
			err := s.Check(number)
			if err == nil {
				out = append(out, c.entry)
				break
			}
			// A shape match with a wrong check digit is worth telling the
			// user about when nothing else matches.
			if firstErr == nil && errors.Is(err, protocol.ErrCheckDigit) {
				firstErr = err
			}
		}
	}
	if len(out) == 0 {
		if firstErr != nil {
			return nil, firstErr
		}
		return nil, fmt.Errorf("%w: %s matches no carrier in registry seq %d", protocol.ErrInvalidNumber, number, t.reg.Seq)
	}
	return out, nil
}

// EncodePublicKey is keyfile.MarshalPublic, kept for testnet until it
// calls keyfile itself.
func EncodePublicKey(pub ed25519.PublicKey) ([]byte, error) { return keyfile.MarshalPublic(pub) }
