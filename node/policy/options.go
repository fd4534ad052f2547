package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/protocol"
)

// ErrInvalidOptions is wrapped by Validate with the list of problems.
var ErrInvalidOptions = errors.New("policy: invalid options")

// Public lookup modes, for Options.Public.
const (
	// PublicOpen lets every peer that is not denied look up public events.
	PublicOpen = "open"
	// PublicMembers keeps public lookups to peers that are registry nodes.
	PublicMembers = "members"
	// PublicOff refuses public lookups to everyone; only grant holders and
	// a parcel's audience are served.
	PublicOff = "off"
)

// Defaults of Options by name, for the tests; the defaults table gives
// each to its field. They are sized so that a platform tracking real
// parcels, which are mostly found, never meets a limit, while a peer
// guessing numbers, which are mostly not_found, is held to about one
// guess a second once its burst is spent.
//
// The bursts are sized for a platform that watches its bookings: the
// watch client's Sync tracks every watched number at once, and numbers
// booked but not yet scanned are answered not_found. A peer guessing 600
// numbers a minute spends the not_found burst in under two minutes and is
// then held to 60 a minute, a tenth of what it asked.
const (
	// DefaultTrackRate is 50 numbers a second per peer: a platform
	// refreshing 100k live parcels every hour needs under 30.
	DefaultTrackRate = 50
	// DefaultTrackBurst lets a platform Sync a full watch subscription
	// (protocol.MaxWatchNumbers) at once; the client does not wait out a
	// rate_limited answer, and the load of one burst is bounded by the
	// resource manager. Enumeration is the not_found budget's job.
	DefaultTrackBurst = protocol.MaxWatchNumbers
	// DefaultNotFoundRate is one not_found answer a second (60 a minute)
	// per peer. Real parcels are found; a platform sees not_found only for
	// mistyped labels and parcels booked but not yet scanned.
	DefaultNotFoundRate = 1
	// DefaultNotFoundBurst covers a Sync of 1000 freshly booked parcels.
	DefaultNotFoundBurst = 1000
	// DefaultWatchRate is one new subscription a second per peer;
	// subscriptions are long-lived.
	DefaultWatchRate = 1
	// DefaultWatchBurst allows a platform to resubscribe its feeds at
	// once after a restart.
	DefaultWatchBurst = 20
	// DefaultPublic is PublicOpen: public events carry no personal data.
	DefaultPublic = PublicOpen
	// DefaultAddrNotFoundRate is two not_found answers a second per
	// source address (IPv4 /32, IPv6 /64): peer IDs cost nothing to make,
	// so one address gets about the budget of two peers, whatever number
	// of IDs it uses. A NAT hiding several honest platforms stays within
	// it, as their lookups are mostly found.
	DefaultAddrNotFoundRate = 2
	// DefaultAddrNotFoundBurst is two peers' bursts.
	DefaultAddrNotFoundBurst = 2 * DefaultNotFoundBurst
	// DefaultGlobalNotFoundRate is the node's ceiling on not_found
	// answers to anonymous peers, per second, over all peers and
	// addresses: 200, a hundred addresses at their steady rate.
	DefaultGlobalNotFoundRate = 200
	// DefaultGlobalNotFoundBurst is a minute at the ceiling.
	DefaultGlobalNotFoundBurst = 60 * DefaultGlobalNotFoundRate
	// DefaultPlatformNotFoundRate is ten times an anonymous peer's: a
	// platform's gateway answers many users, each held to its own budget
	// by the gateway.
	DefaultPlatformNotFoundRate = 10 * DefaultNotFoundRate
	// DefaultPlatformNotFoundBurst is ten times an anonymous peer's.
	DefaultPlatformNotFoundBurst = 10 * DefaultNotFoundBurst
	// DefaultMaxAddrs bounds the per-address bucket table; about 200
	// bytes an address.
	DefaultMaxAddrs = 100_000
	// DefaultMaxPeers bounds the per-peer bucket table; about 400 bytes a
	// peer, so some 40 MB at most.
	DefaultMaxPeers = 100_000
)

// Options configure a Policy. The zero value of a field means its
// default; call EnsureDefaults to fill them in and Validate to check them.
// The node config file embeds Options as [policy], hence the TOML tags.
type Options struct {
	// TrackRate is the steady rate of tracking numbers a peer may ask,
	// per second: a request costs one token per number, so a 100-number
	// batch costs 100. Default: 50.
	TrackRate float64 `toml:"track_rate"`
	// TrackBurst is the size of a peer's track bucket, in numbers. It must
	// hold protocol.MaxNumbersPerRequest. Default: 10000.
	TrackBurst int `toml:"track_burst"`

	// NotFoundRate is the steady rate of not_found answers a peer may
	// receive, per second. Each not_found answer spends a token; while
	// the bucket is empty, the peer's track requests are answered
	// rate_limited. Default: 1 (60 a minute).
	NotFoundRate float64 `toml:"not_found_rate"`
	// NotFoundBurst is the size of a peer's not_found bucket. Default: 1000.
	NotFoundBurst int `toml:"not_found_burst"`

	// AddrNotFoundRate is the steady rate of not_found answers all the
	// anonymous peers of one source address (IPv4 /32, IPv6 /64) may
	// receive together, per second, so that fresh peer IDs do not
	// multiply the budget. Default: 2.
	AddrNotFoundRate float64 `toml:"addr_not_found_rate"`
	// AddrNotFoundBurst is the size of an address's not_found bucket.
	// Default: 2000.
	AddrNotFoundBurst int `toml:"addr_not_found_burst"`
	// GlobalNotFoundRate is the node's ceiling on not_found answers to
	// anonymous peers, per second, over all of them; past it every
	// anonymous track request is answered rate_limited. Platforms keep
	// their own budgets. Default: 200.
	GlobalNotFoundRate float64 `toml:"global_not_found_rate"`
	// GlobalNotFoundBurst is the size of the node's not_found bucket.
	// Default: 12000.
	GlobalNotFoundBurst int `toml:"global_not_found_burst"`

	// Platforms lists peer IDs of platforms the carrier serves on
	// purpose. They, and the nodes the registry names, get the platform
	// not_found budget below and are outside the per-address and global
	// budgets. Default: empty.
	Platforms []string `toml:"platforms"`
	// PlatformNotFoundRate is a platform's steady not_found rate, per
	// second. Default: 10.
	PlatformNotFoundRate float64 `toml:"platform_not_found_rate"`
	// PlatformNotFoundBurst is the size of a platform's not_found bucket.
	// Default: 10000.
	PlatformNotFoundBurst int `toml:"platform_not_found_burst"`

	// WatchRate is the steady rate of watch subscriptions a peer may open,
	// per second. Default: 1.
	WatchRate float64 `toml:"watch_rate"`
	// WatchBurst is the size of a peer's watch bucket. Default: 20.
	WatchBurst int `toml:"watch_burst"`

	// Public says who may look up public events: "open" (every peer),
	// "members" (only peers that are nodes in the registry) or "off".
	// Grant holders and a parcel's audience are judged apart from this.
	// Default: "open".
	Public string `toml:"public"`

	// Allow, when not empty, lists the only peer IDs admitted at all.
	// Default: empty (every peer).
	Allow []string `toml:"allow"`
	// Deny lists peer IDs refused everything; it wins over Allow.
	// Default: empty.
	Deny []string `toml:"deny"`

	// MaxPeers bounds how many peers' buckets are kept; past it, the least
	// recently seen peer's are dropped, so memory stays bounded however
	// many peer IDs an attacker makes up. Default: 100000.
	MaxPeers int `toml:"max_peers"`
	// MaxAddrs bounds how many source addresses' buckets are kept, the
	// least recently seen dropped first. Default: 100000.
	MaxAddrs int `toml:"max_addrs"`
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else. The lists default to empty, not nil:
// what a config file's "allow = []" decodes to.
var defaults = Options{
	TrackRate:             DefaultTrackRate,
	TrackBurst:            DefaultTrackBurst,
	NotFoundRate:          DefaultNotFoundRate,
	NotFoundBurst:         DefaultNotFoundBurst,
	AddrNotFoundRate:      DefaultAddrNotFoundRate,
	AddrNotFoundBurst:     DefaultAddrNotFoundBurst,
	GlobalNotFoundRate:    DefaultGlobalNotFoundRate,
	GlobalNotFoundBurst:   DefaultGlobalNotFoundBurst,
	PlatformNotFoundRate:  DefaultPlatformNotFoundRate,
	PlatformNotFoundBurst: DefaultPlatformNotFoundBurst,
	WatchRate:             DefaultWatchRate,
	WatchBurst:            DefaultWatchBurst,
	Public:                DefaultPublic,
	MaxPeers:              DefaultMaxPeers,
	MaxAddrs:              DefaultMaxAddrs,
	Platforms:             []string{},
	Allow:                 []string{},
	Deny:                  []string{},
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.TrackRate, defaults.TrackRate)
	options.Default(&o.TrackBurst, defaults.TrackBurst)
	options.Default(&o.NotFoundRate, defaults.NotFoundRate)
	options.Default(&o.NotFoundBurst, defaults.NotFoundBurst)
	options.Default(&o.AddrNotFoundRate, defaults.AddrNotFoundRate)
	options.Default(&o.AddrNotFoundBurst, defaults.AddrNotFoundBurst)
	options.Default(&o.GlobalNotFoundRate, defaults.GlobalNotFoundRate)
	options.Default(&o.GlobalNotFoundBurst, defaults.GlobalNotFoundBurst)
	options.Default(&o.PlatformNotFoundRate, defaults.PlatformNotFoundRate)
	options.Default(&o.PlatformNotFoundBurst, defaults.PlatformNotFoundBurst)
	options.Default(&o.WatchRate, defaults.WatchRate)
	options.Default(&o.WatchBurst, defaults.WatchBurst)
	options.Default(&o.Public, defaults.Public)
	options.Default(&o.MaxPeers, defaults.MaxPeers)
	options.Default(&o.MaxAddrs, defaults.MaxAddrs)
	options.DefaultSlice(&o.Platforms, defaults.Platforms)
	options.DefaultSlice(&o.Allow, defaults.Allow)
	options.DefaultSlice(&o.Deny, defaults.Deny)
	return o
}

// Validate checks o after EnsureDefaults and reports every problem at
// once, wrapped in ErrInvalidOptions.
func (o *Options) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"track_rate", o.TrackRate}, {"not_found_rate", o.NotFoundRate}, {"watch_rate", o.WatchRate},
		{"addr_not_found_rate", o.AddrNotFoundRate}, {"global_not_found_rate", o.GlobalNotFoundRate},
		{"platform_not_found_rate", o.PlatformNotFoundRate},
	} {
		if !(r.v > 0) { // also catches NaN
			add("%s %v must be positive", r.name, r.v)
		}
	}
	if o.TrackBurst < protocol.MaxNumbersPerRequest {
		add("track_burst %d must hold a full request of %d numbers", o.TrackBurst, protocol.MaxNumbersPerRequest)
	}
	for _, b := range []struct {
		name string
		v    int
	}{
		{"not_found_burst", o.NotFoundBurst}, {"watch_burst", o.WatchBurst}, {"addr_not_found_burst", o.AddrNotFoundBurst},
		{"global_not_found_burst", o.GlobalNotFoundBurst}, {"platform_not_found_burst", o.PlatformNotFoundBurst},
		{"max_peers", o.MaxPeers}, {"max_addrs", o.MaxAddrs},
	} {
		if b.v < 1 {
			add("%s %d must be positive", b.name, b.v)
		}
	}
	switch o.Public {
	case PublicOpen, PublicMembers, PublicOff:
	default:
		add("public %q must be %q, %q or %q", o.Public, PublicOpen, PublicMembers, PublicOff)
	}
	for _, l := range []struct {
		name string
		ids  []string
	}{{"allow", o.Allow}, {"deny", o.Deny}, {"platforms", o.Platforms}} {
		for _, s := range l.ids {
			if _, err := peer.Decode(s); err != nil {
				add("%s: %q is not a peer ID: %v", l.name, s, err)
			}
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(p, "; "))
	}
	return nil
}
