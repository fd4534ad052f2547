// Package repo manages a node's directory: its libp2p key, the carrier
// signing key, the admin token, the config file, the store and the
// node.json that a running node writes. `opentrack init` creates one;
// `opentrack node` opens it.
package repo

import (
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

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/discovery"
	"github.com/opentrack/opentrack/node/internal/atomicfile"
	"github.com/opentrack/opentrack/node/keyfile"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/protocol"
)

// File names inside a repo. They are part of the operator contract.
const (
	ConfigFile     = "config.toml"
	NodeKeyFile    = "node.key"
	CarrierKeyFile = "carrier.key"
	TokenFile      = "admin.token"
	NodeInfoFile   = "node.json"
)

// Errors of creating and opening a node repo, of its config, and of
// finding the node that runs from it.
var (
	ErrExists     = errors.New("repo: already initialized")
	ErrNotRepo    = errors.New("repo: not an OpenTrack repo")
	ErrBadOptions = errors.New("repo: invalid options")
	// ErrNotRunning means the repo has no node.json: no node runs from it.
	ErrNotRunning = errors.New("repo: no node running")
)

// Repo is an opened node directory.
type Repo struct {
	Dir        string
	Config     *Config
	NodeKey    crypto.PrivKey
	CarrierKey ed25519.PrivateKey // nil on a platform node
	AdminToken string
}

// InitOptions say what kind of node to create.
type InitOptions struct {
	Carrier  string   // carrier code; exactly one of Carrier and Platform
	Name     string   // display name; default: the code or platform name
	Country  string   // ISO 3166-1 alpha-2 of the carrier; default "ZZ"
	Schemes  []string // number schemes in CLI form; default: protocol.DefaultScheme(code)
	Listen   []string // multiaddrs; default: host.Options defaults
	Platform string   // platform name
	Trust    []string // PEM public key files of registry authorities, copied into the repo
	Registry string   // a signed registry file; it must verify against Trust
	// Store is a postgres:// URL for a carrier store in PostgreSQL;
	// empty means pebble, in the repo.
	Store string
	// ReplicaOf is the repo of a carrier node on a PostgreSQL store that
	// the new repo replicates: the same carrier, database and signing
	// key (see README, "Several nodes per carrier"), its own node key.
	ReplicaOf string
}

// ErrNotReplicable means a --replica-of repo cannot have replicas.
var ErrNotReplicable = errors.New("repo: cannot replicate")

// replicaOf fills o from the carrier repo dir and returns its signing
// key, which the replica shares.
func replicaOf(dir string, o *InitOptions) (ed25519.PrivateKey, time.Time, error) {
	src, err := Open(dir)
	if err != nil {
		return nil, time.Time{}, err
	}
	c := src.Config
	switch {
	case c.Role != RoleCarrier:
		return nil, time.Time{}, fmt.Errorf("%w: %s is a %s repo", ErrNotReplicable, dir, c.Role)
	case c.Store.Backend != BackendPostgres:
		return nil, time.Time{}, fmt.Errorf("%w: %s keeps its store in %s; only a carrier on a shared PostgreSQL store can have replicas", ErrNotReplicable, dir, c.Store.Backend)
	case o.Carrier != "" && o.Carrier != c.Carrier.Code:
		return nil, time.Time{}, fmt.Errorf("%w: %s serves carrier %s, not %s", ErrNotReplicable, dir, c.Carrier.Code, o.Carrier)
	case o.Platform != "":
		return nil, time.Time{}, fmt.Errorf("%w: a replica is a carrier node", ErrBadOptions)
	}
	o.Carrier = c.Carrier.Code
	if o.Store == "" {
		o.Store = c.Store.URL
	}
	if o.Name == "" {
		o.Name = c.Carrier.Name
	}
	if o.Country == "" {
		o.Country = c.Carrier.Country
	}
	if len(o.Schemes) == 0 {
		o.Schemes = c.Carrier.Schemes
	}
	return src.CarrierKey, c.Carrier.KeyCreated, nil
}

// Init creates a repo in dir, which must not hold one already.
func Init(dir string, o InitOptions) (*Repo, error) {
	var shared ed25519.PrivateKey
	// Truncated so that the window the registry derives from it starts
	// no later than the first head the key signs.
	created := time.Now().UTC().Truncate(time.Second)
	if o.ReplicaOf != "" {
		var err error
		if shared, created, err = replicaOf(o.ReplicaOf, &o); err != nil {
			return nil, err
		}
	}
	cfg, err := configFor(o)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		return nil, fmt.Errorf("%w: %s exists; refusing to overwrite", ErrExists, filepath.Join(dir, ConfigFile))
	}
	anchors, registry, err := readTrust(o, cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, TrustDir), 0o700); err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	r := &Repo{Dir: dir, Config: cfg}
	files, err := r.newSecrets(cfg, shared, created)
	if err != nil {
		return nil, err
	}
	for i, a := range anchors {
		files = append(files, repoFile{cfg.Trust.Anchors[i], a})
	}
	if registry != nil {
		files = append(files, repoFile{cfg.Trust.Registry, registry})
	}
	text, err := cfg.Render()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := atomicfile.Create(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return nil, err
		}
	}
	if cfg.Role == RoleCarrier {
		if err := initKeyring(dir, o.ReplicaOf); err != nil {
			return nil, err
		}
	}
	// The config goes last: its presence is what marks a complete repo.
	if err := atomicfile.Create(filepath.Join(dir, ConfigFile), text, 0o600); err != nil {
		return nil, err
	}
	// What a later Open sees is the file, so hand back exactly that.
	if r.Config, err = LoadConfig(filepath.Join(dir, ConfigFile)); err != nil {
		return nil, err
	}
	return r, nil
}

// repoFile is a file Init writes, by its name in the repo.
type repoFile struct {
	name string
	data []byte
}

// newSecrets makes r's node key, its carrier key on a carrier (shared,
// a replica's, when set; created is when it was made) and its admin
// token, and returns the files that hold them.
func (r *Repo) newSecrets(cfg *Config, shared ed25519.PrivateKey, created time.Time) ([]repoFile, error) {
	var err error
	if r.NodeKey, _, err = crypto.GenerateEd25519Key(rand.Reader); err != nil {
		return nil, err
	}
	raw, err := crypto.MarshalPrivateKey(r.NodeKey)
	if err != nil {
		return nil, err
	}
	files := []repoFile{{NodeKeyFile, raw}}
	if cfg.Role == RoleCarrier {
		cfg.Carrier.KeyCreated = created
		r.CarrierKey = shared
		if r.CarrierKey == nil {
			if _, r.CarrierKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
				return nil, err
			}
		}
		keyPEM, err := keyfile.MarshalPrivate(r.CarrierKey)
		if err != nil {
			return nil, err
		}
		files = append(files, repoFile{CarrierKeyFile, keyPEM})
	}
	token := make([]byte, 32)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	r.AdminToken = hex.EncodeToString(token)
	return append(files, repoFile{TokenFile, []byte(r.AdminToken + "\n")}), nil
}

// initKeyring gives a carrier repo its details keyring: a new one, or a
// replica the copy of its source's, since replicas on one database must
// open each other's sealed details. A source made before keyrings gets
// none here, and node start makes one only for a store without sealed
// details.
func initKeyring(dir, replicaOf string) error {
	path := filepath.Join(dir, seal.KeyringFile)
	if replicaOf == "" {
		_, err := seal.CreateKeyring(path, time.Now())
		return err
	}
	b, err := os.ReadFile(filepath.Join(replicaOf, seal.KeyringFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	return atomicfile.Create(path, b, 0o600)
}

// Open loads the repo in dir.
func Open(dir string) (*Repo, error) {
	cfg, err := LoadConfig(filepath.Join(dir, ConfigFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no %s (create one with opentrack init --repo %s --carrier CODE or --platform NAME)", ErrNotRepo, dir, ConfigFile, dir)
		}
		return nil, err
	}
	r := &Repo{Dir: dir, Config: cfg}
	raw, err := os.ReadFile(filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	if r.NodeKey, err = crypto.UnmarshalPrivateKey(raw); err != nil {
		return nil, fmt.Errorf("repo: %s: %w", NodeKeyFile, err)
	}
	if cfg.Role == RoleCarrier {
		if r.CarrierKey, err = keyfile.ReadPrivate(r.Path(cfg.Carrier.KeyFile)); err != nil {
			return nil, err
		}
	}
	tok, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	r.AdminToken = strings.TrimSpace(string(tok))
	return r, nil
}

// TrustDir holds copies of the trust anchors.
const TrustDir = "trust"

// readTrust reads the anchors and the registry named in o, checks that the
// registry verifies against them now, and records their repo paths in cfg.
func readTrust(o InitOptions, cfg *Config) (anchors [][]byte, registry []byte, err error) {
	if o.Registry != "" && len(o.Trust) == 0 {
		return nil, nil, fmt.Errorf("%w: --registry needs --trust: a registry is only as good as the key that signed it", ErrBadOptions)
	}
	var keys []ed25519.PublicKey
	for i, path := range o.Trust {
		pub, err := keyfile.ReadPublic(path)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: trust anchor: %w", ErrBadOptions, err)
		}
		pem, err := keyfile.MarshalPublic(pub)
		if err != nil {
			return nil, nil, err
		}
		keys, anchors = append(keys, pub), append(anchors, pem)
		cfg.Trust.Anchors = append(cfg.Trust.Anchors, filepath.Join(TrustDir, fmt.Sprintf("anchor-%d.pub", i+1)))
	}
	if o.Registry == "" {
		return anchors, nil, nil
	}
	if registry, err = os.ReadFile(o.Registry); err != nil {
		return nil, nil, fmt.Errorf("repo: %w", err)
	}
	t, err := discovery.NewTrust(keys, "", nil)
	if err != nil {
		return nil, nil, err
	}
	if _, err := t.Install(registry); err != nil {
		return nil, nil, fmt.Errorf("%w: registry %s not accepted: %w", ErrBadOptions, o.Registry, err)
	}
	return anchors, registry, nil
}

// Trust opens the node's trust state: its anchors and the registry it
// holds. It returns discovery.ErrNoAnchors when the repo has none.
func (r *Repo) Trust() (*discovery.Trust, error) {
	var anchors []ed25519.PublicKey
	for _, a := range r.Config.Trust.Anchors {
		pub, err := keyfile.ReadPublic(r.Path(a))
		if err != nil {
			return nil, err
		}
		anchors = append(anchors, pub)
	}
	return discovery.NewTrust(anchors, r.Path(r.Config.Trust.Registry), nil)
}

// Path resolves a path from the config relative to the repo.
func (r *Repo) Path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(r.Dir, p)
}

// PeerID is the node's libp2p identity.
func (r *Repo) PeerID() peer.ID {
	id, err := peer.IDFromPrivateKey(r.NodeKey)
	if err != nil {
		panic("repo: node key without a peer ID: " + err.Error())
	}
	return id
}

// Signer returns the carrier's signer, or an error on a platform repo.
func (r *Repo) Signer() (*protocol.Signer, error) {
	if r.CarrierKey == nil {
		return nil, fmt.Errorf("repo: %s is a platform repo with no carrier key", r.Dir)
	}
	return protocol.NewSigner(r.CarrierKey)
}

// NodeInfo is node.json, written by a running node once it listens. Its
// keys are part of the operator contract.
type NodeInfo struct {
	PeerID   string   `json:"peer_id"`
	Carrier  string   `json:"carrier"`
	Addrs    []string `json:"addrs"` // full multiaddrs ending in /p2p/<peer_id>
	AdminURL string   `json:"admin_url"`
	// HTTPURL is the gateway's base URL when the node runs as one.
	HTTPURL string `json:"http_url,omitempty"`
}

// WriteNodeInfo atomically replaces node.json.
func (r *Repo) WriteNodeInfo(info *NodeInfo) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(r.Dir, NodeInfoFile), append(b, '\n'), 0o644)
}

// RemoveNodeInfo deletes node.json on a clean exit.
func (r *Repo) RemoveNodeInfo() error {
	err := os.Remove(filepath.Join(r.Dir, NodeInfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ReadNodeInfo reads node.json of a running node.
func ReadNodeInfo(dir string) (*NodeInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, NodeInfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w from %s: it has no %s (start one with opentrack node --repo %s)", ErrNotRunning, dir, NodeInfoFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	var info NodeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("repo: %s: %w", NodeInfoFile, err)
	}
	return &info, nil
}

// EnvRepo is the environment variable naming the default repo.
const EnvRepo = "OPENTRACK_REPO"

// DefaultDir is the repo a command uses without --repo, as Kubo does with
// IPFS_PATH: $OPENTRACK_REPO, then ~/.opentrack (.opentrack in the working
// directory when there is no home).
func DefaultDir() string {
	if d := os.Getenv(EnvRepo); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".opentrack"
	}
	return filepath.Join(home, ".opentrack")
}
