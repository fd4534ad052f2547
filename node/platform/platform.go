package platform

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
	lphost "github.com/opentrack/opentrack/node/host"
)

// Platform is a host, its trust state, peer routing, registry exchange
// when asked, and the one client over them. Build it with Open; it is
// safe for concurrent use.
type Platform struct {
	host     host.Host
	ownHost  bool // Open started it, so Close closes it
	trust    *discovery.Trust
	router   *discovery.Router
	exchange *discovery.Exchange
	client   *client.Client
	log      *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Open checks cfg and opts (nil for defaults; not modified), opens the
// trust state from cfg.Repo when cfg.Trust is nil, starts a host unless
// cfg.Host is given, the client, and with trust the router and, with
// Options.Exchange, registry exchange. The router dials registry nodes in
// the background, so Open does not wait on the network. On error
// everything started so far is closed again.
func Open(cfg Config, opts *Options) (_ *Platform, err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	p := cfg.validate(&o) // before the defaults, which it tells from what was set
	if err := invalid(append(p, o.EnsureDefaults().problems()...)); err != nil {
		return nil, err
	}
	pl := &Platform{host: cfg.Host, trust: cfg.Trust, log: cfg.Logger}
	if pl.log == nil {
		pl.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			_ = pl.Close()
		}
	}()
	if pl.trust == nil && cfg.Repo != nil {
		if pl.trust, err = cfg.Repo.Trust(); errors.Is(err, discovery.ErrNoAnchors) {
			return nil, fmt.Errorf("%w: %w", ErrNoAnchors, err)
		} else if err != nil {
			return nil, err
		}
	}
	if pl.trust != nil && pl.trust.Registry() == nil && !o.Exchange {
		return nil, ErrNoRegistry
	}
	if pl.host == nil {
		if pl.host, err = startHost(cfg.Key, &o); err != nil {
			return nil, err
		}
		pl.ownHost = true
	}
	if pl.client, err = client.New(pl.host, o.Client); err != nil {
		return nil, err
	}
	if pl.trust == nil {
		return pl, nil
	}
	if pl.router, err = discovery.NewRouter(pl.host, pl.trust, o.Router, pl.log); err != nil {
		return nil, err
	}
	if o.Exchange {
		if pl.exchange, err = discovery.NewExchange(pl.host, pl.trust, pl.client, o.ExchangeOptions, pl.log); err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// startHost starts the platform's own host with key, a fresh one if nil.
func startHost(key crypto.PrivKey, o *Options) (host.Host, error) {
	if key == nil {
		var err error
		if key, _, err = crypto.GenerateEd25519Key(rand.Reader); err != nil {
			return nil, fmt.Errorf("platform: key: %w", err)
		}
	}
	h, err := lphost.New(key, &lphost.Options{ListenAddrs: o.ListenAddrs, DisableQUIC: o.DisableQUIC})
	if err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	return h, nil
}

// Host is the platform's libp2p host; its peer ID is the platform's
// identity.
func (p *Platform) Host() host.Host { return p.host }

// ID is the platform's peer ID, the one carriers name in grants and
// audiences.
func (p *Platform) ID() peer.ID { return p.host.ID() }

// Client is the platform's client, for calls that take trust and a
// connector of their own.
func (p *Platform) Client() *client.Client { return p.client }

// Trust is the platform's trust state; nil on a platform without one.
func (p *Platform) Trust() *discovery.Trust { return p.trust }

// Router is the platform's peer routing; nil on a platform without trust.
func (p *Platform) Router() *discovery.Router { return p.router }

// Logger is the logger the platform was given, for what is built on it;
// one that discards when it was given none.
func (p *Platform) Logger() *slog.Logger { return p.log }

// Close stops the platform in order: registry exchange, which asks
// through the client; the client's streams; peer routing; then the host
// if Open started it. Close is idempotent.
func (p *Platform) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.exchange != nil {
			errs = append(errs, p.exchange.Close())
		}
		if p.client != nil {
			errs = append(errs, p.client.Close())
		}
		if p.router != nil {
			errs = append(errs, p.router.Close())
		}
		if p.ownHost && p.host != nil {
			errs = append(errs, p.host.Close())
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
