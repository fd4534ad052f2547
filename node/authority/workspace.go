package authority

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opentrack/opentrack/node/internal/atomicfile"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// DraftFile is the name of the draft inside a workspace. Its presence is
// what marks a complete workspace.
const DraftFile = "draft.json"

// Defaults.
const (
	// DefaultName is the base name of the key files: authority.key and
	// authority.pub.
	DefaultName = "authority"
	// DefaultValidity is how long a signed edition is accepted when
	// neither Sign nor the draft says otherwise. The authority must sign
	// the next edition before it runs out (spec section 11.2).
	DefaultValidity = 30 * 24 * time.Hour
	// DefaultKeyValidity is the window of a carrier key added without an
	// explicit end.
	DefaultKeyValidity = 2 * 365 * 24 * time.Hour
	// ClockSkew is how far before its signing time an edition starts, so
	// that a node whose clock is a little behind accepts it at once.
	ClockSkew = time.Minute
	// DefaultCountry is the country of a carrier added without one: the
	// ISO 3166 user-assigned code for "not stated", as in node repos.
	DefaultCountry = repo.DefaultCountry
)

// Errors of a registry workspace: opening or initializing it, and editing
// its draft with carrier input.
var (
	ErrExists         = errors.New("authority: workspace already initialized")
	ErrNotWorkspace   = errors.New("authority: not an authority workspace")
	ErrBadDraft       = errors.New("authority: invalid draft")
	ErrBadInput       = errors.New("authority: invalid carrier input")
	ErrUnknownCarrier = errors.New("authority: carrier not in the draft")
	ErrUnknownKey     = errors.New("authority: key not in the draft")
	ErrKeyInUse       = errors.New("authority: key already bound to another carrier")
	ErrLastKey        = errors.New("authority: a carrier needs at least one key")
	ErrNotCarrier     = errors.New("authority: not a carrier repo")
)

// draftComment is written into every draft, for the operator who opens it.
const draftComment = "OpenTrack registry draft. Edit with `opentrack registry add`, sign with " +
	"`opentrack registry sign`. seq is the last signed edition; validity is the " +
	"window of an edition when sign is given none; times are RFC 3339; key_id is derived from key."

// Draft is draft.json: the next edition in the making. It is plain JSON so
// that it can be reviewed and diffed before it is signed; the Workspace
// methods keep it valid.
type Draft struct {
	Comment  string         `json:"comment"`  // what this file is; informational
	Name     string         `json:"name"`     // base name of the key files, <name>.key and <name>.pub
	Seq      uint64         `json:"seq"`      // seq of the last signed edition; 0 before the first
	Validity string         `json:"validity"` // Go duration; the window Sign uses when given none. Default "720h"
	Carriers []DraftCarrier `json:"carriers"` // sorted by code
}

// DraftCarrier is one carrier of the draft; it becomes a
// protocol.CarrierEntry.
type DraftCarrier struct {
	Code    string      `json:"code"`
	Name    string      `json:"name"`
	Country string      `json:"country"` // ISO 3166-1 alpha-2
	Keys    []DraftKey  `json:"keys"`
	Nodes   []DraftNode `json:"nodes"`
	Schemes []string    `json:"schemes"` // text form, as protocol.ParseScheme reads
}

// DraftKey is a carrier signing key and its window.
type DraftKey struct {
	Key       string    `json:"key"`    // raw Ed25519 public key, hex
	KeyID     string    `json:"key_id"` // hex; derived from Key, rewritten on every save
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// DraftNode is a node that serves the carrier.
type DraftNode struct {
	Peer  string   `json:"peer"`  // base58btc peer ID
	Addrs []string `json:"addrs"` // multiaddrs without /p2p/
}

// Workspace is an opened authority directory. It is not safe for
// concurrent use.
type Workspace struct {
	// Dir is the workspace directory.
	Dir string
	// Draft is the draft as last saved. Read it freely; change it only
	// through the methods, which validate and save it.
	Draft *Draft
	// Now is the clock for key windows and editions. Default: time.Now.
	Now func() time.Time

	signer *protocol.Signer
}

// Init creates a workspace in dir with a new authority key and an empty
// draft. name is the base name of the key files; "" means DefaultName.
// It refuses to touch a directory that holds any of the files already.
func Init(dir, name string) (*Workspace, error) {
	if name == "" {
		name = DefaultName
	}
	if name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("%w: key name %q must be a plain file name", ErrBadInput, name)
	}
	w := &Workspace{Dir: dir, Draft: &Draft{Comment: draftComment, Name: name, Validity: DefaultValidity.String(), Carriers: []DraftCarrier{}}}
	for _, f := range []string{DraftFile, w.keyPath(), w.PubPath()} {
		switch _, err := os.Lstat(w.path(f)); {
		case err == nil:
			return nil, fmt.Errorf("%w: %s exists; refusing to overwrite", ErrExists, w.path(f))
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("authority: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if w.signer, err = protocol.NewSigner(key); err != nil {
		return nil, err
	}
	keyPEM, err := keyfile.MarshalPrivate(key)
	if err != nil {
		return nil, err
	}
	pubPEM, err := keyfile.MarshalPublic(pub)
	if err != nil {
		return nil, err
	}
	draft, err := w.Draft.encode()
	if err != nil {
		return nil, err
	}
	// The draft goes last: a workspace without one is incomplete, and
	// Open says so instead of using a key whose public half may be lost.
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{w.keyPath(), keyPEM, 0o600},
		{w.PubPath(), pubPEM, 0o644},
		{DraftFile, draft, 0o644},
	}
	for _, f := range files {
		if err := atomicfile.Create(w.path(f.name), f.data, f.perm); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Open loads the workspace in dir and checks its draft.
func Open(dir string) (*Workspace, error) {
	b, err := os.ReadFile(filepath.Join(dir, DraftFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (run opentrack registry init)", ErrNotWorkspace, dir, DraftFile)
	}
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	d, err := decodeDraft(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, DraftFile), err)
	}
	w := &Workspace{Dir: dir, Draft: d}
	key, err := keyfile.ReadPrivate(w.path(w.keyPath()))
	if err != nil {
		return nil, fmt.Errorf("authority key: %w", err)
	}
	if w.signer, err = protocol.NewSigner(key); err != nil {
		return nil, err
	}
	// The .pub is what operators hand to nodes as their anchor; one that
	// no longer matches the key would make every edition untrusted.
	pub, err := keyfile.ReadPublic(w.path(w.PubPath()))
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	if !pub.Equal(w.Public()) {
		return nil, fmt.Errorf("%w: %s is not the public half of %s", ErrNotWorkspace, w.path(w.PubPath()), w.path(w.keyPath()))
	}
	return w, nil
}

// PubPath is the file name of the authority's public key, relative to
// Dir: the trust anchor to hand to nodes.
func (w *Workspace) PubPath() string { return w.Draft.Name + ".pub" }

// Public is the authority's public key.
func (w *Workspace) Public() ed25519.PublicKey { return w.signer.Public() }

func (w *Workspace) keyPath() string { return w.Draft.Name + ".key" }

func (w *Workspace) path(name string) string { return filepath.Join(w.Dir, name) }

func (w *Workspace) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Sign turns the draft into the next edition, signs it and writes it to
// out atomically. validity is how long nodes accept the edition; 0 means
// the draft's validity. The edition starts ClockSkew before now.
func (w *Workspace) Sign(out string, validity time.Duration) (*protocol.Registry, error) {
	if validity == 0 {
		var err error
		if validity, err = w.Draft.validity(); err != nil {
			return nil, err
		}
	}
	if validity < 0 {
		return nil, fmt.Errorf("%w: validity %v is negative", ErrBadInput, validity)
	}
	now := w.now()
	r, err := w.Draft.registry()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDraft, err)
	}
	r.Seq = w.Draft.Seq + 1
	r.Issued = now.UnixMilli()
	r.NotBefore = now.Add(-ClockSkew).UnixMilli()
	r.NotAfter = now.Add(validity).UnixMilli()
	signed, err := protocol.SignRegistry(w.signer, r)
	if err != nil {
		return nil, fmt.Errorf("authority: edition %d: %w", r.Seq, err)
	}
	// Check the edition exactly as a receiving node will, at the moment it
	// was issued, so that a short validity cannot fail the check itself:
	// the authority must never publish what a node rejects (spec 11.5).
	if _, err := protocol.OpenRegistry(signed, []ed25519.PublicKey{w.Public()}, r.Issued); err != nil {
		return nil, fmt.Errorf("authority: edition %d would be rejected: %w", r.Seq, err)
	}
	// The seq is saved before the edition is written. If writing fails
	// the seq is skipped, which is harmless; the other order could sign
	// two different editions with one seq, which the spec forbids.
	d := w.Draft.clone()
	d.Seq = r.Seq
	if err := w.save(d); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(out, signed, 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

// registry builds the edition's content from the draft, without seq and
// window.
func (d *Draft) registry() (*protocol.Registry, error) {
	r := &protocol.Registry{Carriers: make([]protocol.CarrierEntry, len(d.Carriers))}
	var problems []string
	for i, c := range d.Carriers {
		e := &r.Carriers[i]
		e.Code, e.Name, e.Country = c.Code, c.Name, c.Country
		e.Keys, e.Nodes, e.Schemes = []protocol.CarrierKey{}, []protocol.NodeEntry{}, []protocol.Scheme{}
		for _, k := range c.Keys {
			pub, err := hex.DecodeString(k.Key)
			if err != nil {
				problems = append(problems, fmt.Sprintf("carrier %s: key %q is not hex", c.Code, k.Key))
				continue
			}
			e.Keys = append(e.Keys, protocol.CarrierKey{Key: pub, NotBefore: k.NotBefore.UnixMilli(), NotAfter: k.NotAfter.UnixMilli()})
		}
		for _, n := range c.Nodes {
			e.Nodes = append(e.Nodes, protocol.NodeEntry{Peer: n.Peer, Addrs: append([]string{}, n.Addrs...)})
		}
		for _, s := range c.Schemes {
			sc, err := protocol.ParseScheme(s)
			if err != nil {
				problems = append(problems, fmt.Sprintf("carrier %s: %v", c.Code, err))
				continue
			}
			e.Schemes = append(e.Schemes, sc)
		}
	}
	// Seq and window are placeholders so that Validate judges the
	// carriers only; Sign sets the real ones.
	r.Seq, r.NotBefore, r.NotAfter = 1, 0, 1
	if err := r.Validate(); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		// No sentinel here: whether the draft or the input is at fault
		// depends on the caller.
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return r, nil
}

func (d *Draft) validity() (time.Duration, error) {
	v, err := time.ParseDuration(d.Validity)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%w: validity %q is not a positive Go duration such as \"720h\"", ErrBadDraft, d.Validity)
	}
	return v, nil
}

// decodeDraft parses a draft strictly: a misspelt key in a hand-edited
// draft must not silently drop a field from the next edition.
func decodeDraft(b []byte) (*Draft, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Draft
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDraft, err)
	}
	if d.Name == "" || d.Name != filepath.Base(d.Name) {
		return nil, fmt.Errorf("%w: name %q must be a plain file name", ErrBadDraft, d.Name)
	}
	if _, err := d.validity(); err != nil {
		return nil, err
	}
	if _, err := d.registry(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDraft, err)
	}
	return &d, nil
}

func (d *Draft) encode() ([]byte, error) {
	for i := range d.Carriers {
		for j := range d.Carriers[i].Keys {
			k := &d.Carriers[i].Keys[j]
			if pub, err := hex.DecodeString(k.Key); err == nil {
				k.KeyID = protocol.KeyIDString(pub)
			}
		}
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// clone deep-copies d, so that a failed edit leaves the workspace's draft
// as it was.
func (d *Draft) clone() *Draft {
	c := *d
	c.Carriers = make([]DraftCarrier, len(d.Carriers))
	for i, dc := range d.Carriers {
		c.Carriers[i] = dc.clone()
	}
	return &c
}

func (c DraftCarrier) clone() DraftCarrier {
	c.Keys = append([]DraftKey{}, c.Keys...)
	c.Schemes = append([]string{}, c.Schemes...)
	nodes := make([]DraftNode, len(c.Nodes))
	for i, n := range c.Nodes {
		nodes[i] = DraftNode{Peer: n.Peer, Addrs: append([]string{}, n.Addrs...)}
	}
	c.Nodes = nodes
	return c
}

// save writes d atomically and makes it the workspace's draft; the
// directory is synced too, since the draft's seq must never go back.
// Callers have checked that d is valid.
func (w *Workspace) save(d *Draft) error {
	b, err := d.encode()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(w.path(DraftFile), b, 0o644); err != nil {
		return err
	}
	w.Draft = d
	return nil
}
