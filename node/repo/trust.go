package repo

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/internal/atomicfile"
	"github.com/opentrack/opentrack/node/keyfile"
)

// ErrNoAnchors is returned by InstallRegistry for a repo that trusts no
// authority yet, so has nothing to check an edition against.
var ErrNoAnchors = errors.New("repo: no trust anchors")

// AddAnchor makes pub a trust anchor of the repo: it writes the key into
// trust/ and lists it in config.toml, which is rewritten with every
// option and its comment (comments of the operator's own are not kept).
// A key the repo already trusts is not added again; added says which.
func (r *Repo) AddAnchor(pub ed25519.PublicKey) (path string, added bool, err error) {
	for _, a := range r.Config.Trust.Anchors {
		held, err := keyfile.ReadPublic(r.Path(a))
		if err != nil {
			return "", false, fmt.Errorf("repo: trust anchor %s: %w", a, err)
		}
		if held.Equal(pub) {
			return a, false, nil
		}
	}
	pemBytes, err := keyfile.MarshalPublic(pub)
	if err != nil {
		return "", false, err
	}
	for i := len(r.Config.Trust.Anchors) + 1; ; i++ {
		path = filepath.Join(TrustDir, fmt.Sprintf("anchor-%d.pub", i))
		if _, err := os.Stat(r.Path(path)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err := os.MkdirAll(r.Path(TrustDir), 0o700); err != nil {
		return "", false, fmt.Errorf("repo: %w", err)
	}
	if err := atomicfile.Create(r.Path(path), pemBytes, 0o600); err != nil {
		return "", false, err
	}
	cfg := *r.Config
	cfg.Trust.Anchors = append(append([]string(nil), r.Config.Trust.Anchors...), path)
	if err := r.saveConfig(&cfg); err != nil {
		_ = os.Remove(r.Path(path))
		return "", false, err
	}
	r.Config = &cfg
	return path, true, nil
}

// saveConfig replaces config.toml by cfg, atomically.
func (r *Repo) saveConfig(cfg *Config) error {
	text, err := cfg.Render()
	if err != nil {
		return err
	}
	return atomicfile.Write(r.Path(ConfigFile), text, 0o600)
}

// InstallRegistry checks a signed registry as the node does (signed by
// an anchor, in its window, newer than the one held) and keeps it. It
// returns the sequence held before and after; an edition that is not
// newer fails with protocol.ErrStaleRegistry.
func (r *Repo) InstallRegistry(signed []byte) (from, to uint64, err error) {
	t, err := r.Trust()
	if errors.Is(err, discovery.ErrNoAnchors) {
		return 0, 0, fmt.Errorf("%w: %s trusts no authority yet (opentrack trust add --repo %s PUBFILE)", ErrNoAnchors, r.Dir, r.Dir)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("repo %s trust: %w", r.Dir, err)
	}
	from = t.Seq()
	if _, err := t.Install(signed); err != nil {
		return from, from, err
	}
	return from, t.Seq(), nil
}
