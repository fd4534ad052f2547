package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
)

// Errors of opening a Platform and of its queries.
var (
	// ErrInvalidOptions is wrapped by Open with every problem found in
	// its Config and Options.
	ErrInvalidOptions = errors.New("platform: invalid options")
	// ErrNoAnchors is returned by Open for a repo that trusts no registry
	// authority, so that nothing it would be told could be verified.
	ErrNoAnchors = errors.New("platform: the repo trusts no registry authority")
	// ErrNoRegistry is returned by Open for trust that holds no registry
	// when registry exchange is off, so that none would ever come.
	ErrNoRegistry = errors.New("platform: no registry held")
	// ErrNoTrust is returned by the queries that resolve numbers through
	// the registry on a platform opened without trust.
	ErrNoTrust = errors.New("platform: no trust state: resolving numbers needs a registry")
	// ErrUnreachable is matched by an UnreachableError.
	ErrUnreachable = errors.New("platform: cannot reach node")
)

// Where a host Open starts listens by default: loopback ports of its own,
// since a client needs no public address, and its own ports keep it clear
// of a node running from the same repo.
const (
	// DefaultListenTCP is always listened on.
	DefaultListenTCP = "/ip4/127.0.0.1/tcp/0"
	// DefaultListenQUIC is listened on unless Options.DisableQUIC.
	DefaultListenQUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
)

// TrustSource opens a trust state; *repo.Repo does, from its anchors and
// registry file, and returns discovery.ErrNoAnchors when it has none. It
// is an interface so that the platform does not pull in the repo and,
// through it, the stores.
type TrustSource interface {
	Trust() (*discovery.Trust, error)
}

// Config is what a Platform runs on. Every field is optional: the zero
// Config is a platform on a host of its own with a fresh identity and no
// registry, which can only ask single nodes (TrackPeer, WatchPeer).
type Config struct {
	// Host is the libp2p host the platform uses; it stays the caller's
	// to close. Default: nil, Open starts one with Key on ListenAddrs
	// and Close closes it.
	Host host.Host
	// Key is the identity of the host Open starts: a platform repo's
	// node key, so that carriers see the platform's registered peer ID,
	// the one grants and audiences name. Default: a fresh Ed25519 key.
	// Not with Host.
	Key crypto.PrivKey
	// Trust is the platform's trust state. Default: nil, opened from
	// Repo when it is set.
	Trust *discovery.Trust
	// Repo opens Trust when Trust is nil; a repo without anchors is
	// ErrNoAnchors. Default: nil, no trust: no routing, and every record
	// is checked only against the keys its node presents.
	Repo TrustSource
	// Logger receives the router's and the exchange's logs. Default:
	// nil, discarded.
	Logger *slog.Logger
}

// validate checks what Config must not combine.
func (c *Config) validate(o *Options) []string {
	var p []string
	if c.Host != nil && (c.Key != nil || o.ListenAddrs != nil || o.DisableQUIC) {
		p = append(p, "Config.Host is set: Key, ListenAddrs and DisableQUIC are for a host Open starts")
	}
	if c.Trust != nil && c.Repo != nil {
		p = append(p, "give Config.Trust or Config.Repo, not both")
	}
	return p
}

// Options tune a Platform. The zero value of a field means its default.
type Options struct {
	// ListenAddrs are the multiaddrs of the host Open starts. Default:
	// DefaultListenTCP, and DefaultListenQUIC unless DisableQUIC.
	ListenAddrs []string
	// DisableQUIC starts the host without the QUIC transport, for
	// networks that drop UDP (a repo's network.disable_quic). Default:
	// false.
	DisableQUIC bool
	// Client tunes the platform's client; nil for client's defaults.
	Client *client.Options
	// Router tunes peer routing; nil for discovery's defaults. Only a
	// platform with trust routes.
	Router *discovery.RouterOptions
	// Exchange turns on registry exchange: the newest registry is
	// fetched from peers and offered to them, as a node does. Trust
	// without a registry is then allowed, since one will come. Default:
	// false, the registry held stays as it is.
	Exchange bool
	// ExchangeOptions tune registry exchange; nil for discovery's
	// defaults. Only with Exchange.
	ExchangeOptions *discovery.ExchangeOptions
}

// EnsureDefaults fills every zero field that has a default and returns o.
// A nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.ListenAddrs == nil {
		o.ListenAddrs = []string{DefaultListenTCP}
		if !o.DisableQUIC {
			o.ListenAddrs = append(o.ListenAddrs, DefaultListenQUIC)
		}
	}
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at
// once, those of the client's, router's and exchange's options included.
func (o *Options) Validate() error { return invalid(o.problems()) }

// problems lists what Validate reports.
func (o *Options) problems() []string {
	var p []string
	if len(o.ListenAddrs) == 0 {
		p = append(p, "ListenAddrs is empty")
	}
	for _, a := range o.ListenAddrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			p = append(p, fmt.Sprintf("listen address %q: %v", a, err))
		}
	}
	if o.ExchangeOptions != nil && !o.Exchange {
		p = append(p, "ExchangeOptions without Exchange")
	}
	if o.Client != nil {
		c := *o.Client
		p = appendErr(p, c.EnsureDefaults().Validate())
	}
	if o.Router != nil {
		r := *o.Router
		p = appendErr(p, r.EnsureDefaults().Validate())
	}
	if o.ExchangeOptions != nil {
		e := *o.ExchangeOptions
		p = appendErr(p, e.EnsureDefaults().Validate())
	}
	return p
}

func appendErr(p []string, err error) []string {
	if err != nil {
		p = append(p, err.Error())
	}
	return p
}

// invalid is ErrInvalidOptions with the problems, or nil for none.
func invalid(p []string) error {
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}
