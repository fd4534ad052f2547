package repo

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/opentrack/opentrack/internal/options"
	"github.com/opentrack/opentrack/node/host"
	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/store/seal"
	"github.com/opentrack/opentrack/protocol"
)

// Node roles.
const (
	RoleCarrier  = "carrier"
	RolePlatform = "platform"
)

// Defaults of the config file. Every one is written into a new config
// with a comment, so an operator sees what is in force.
//
// A new repo listens on loopback at ports the OS picks, and node.json
// says which: so a carrier, a platform and a gateway run side by side on
// one machine with no flags, and nothing is exposed until the operator
// names a public, fixed address (--listen), the one the registry lists.
var (
	DefaultAdminAddr   = "127.0.0.1:0"
	DefaultListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
)

const (
	DefaultCountry      = "ZZ" // ISO 3166 user-assigned: "not stated"
	DefaultStorePath    = "store"
	DefaultCacheMB      = 64
	DefaultMemTableMB   = 64
	DefaultReserveMB    = 256
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
	DefaultRegistryFile = "registry.cose"
	// DefaultDetailsRetention is [retention] details: 90 days.
	DefaultDetailsRetention = "2160h"
)

// Config is config.toml.
type Config struct {
	Role     string         `toml:"role"`
	Carrier  CarrierConfig  `toml:"carrier"`
	Platform PlatformConfig `toml:"platform"`
	Network  host.Options   `toml:"network"`
	Admin    AdminConfig    `toml:"admin"`
	Store    StoreConfig    `toml:"store"`
	// Retention says how long a carrier keeps personal data.
	Retention RetentionConfig `toml:"retention"`
	Log       LogConfig       `toml:"log"`
	Trust     TrustConfig     `toml:"trust"`
	// Policy is the carrier's abuse and access policy; a platform node
	// serves no lookups and ignores it.
	Policy policy.Options `toml:"policy"`
}

// TrustConfig names the trust anchors and where the accepted registry is
// kept.
type TrustConfig struct {
	Anchors  []string `toml:"anchors"`  // PEM public keys of registry authorities
	Registry string   `toml:"registry"` // the newest accepted signed registry
}

// CarrierConfig identifies the carrier a node serves.
type CarrierConfig struct {
	Code    string   `toml:"code"`
	Name    string   `toml:"name"`
	Country string   `toml:"country"`
	Schemes []string `toml:"schemes"`
	KeyFile string   `toml:"key_file"`
	// KeyCreated is when the signing key was made (set by init, copied
	// by a replica). The registry's window for the key starts there by
	// default, so that heads signed before the carrier was registered
	// verify. Zero in repos made before it was recorded.
	KeyCreated time.Time `toml:"key_created,omitempty"`
}

// PlatformConfig names a platform node.
type PlatformConfig struct {
	Name string `toml:"name"`
}

// AdminConfig is the loopback admin HTTP API.
type AdminConfig struct {
	Addr string `toml:"addr"`
}

// Store backends.
const (
	BackendPebble   = "pebble"
	BackendPostgres = "postgres"
)

// StoreConfig is the store: pebble embedded in the repo, or a PostgreSQL
// database that several replicas of the carrier's node may share.
type StoreConfig struct {
	Backend    string `toml:"backend"`
	Path       string `toml:"path"`
	CacheMB    int    `toml:"cache_mb"`
	MemTableMB int    `toml:"memtable_mb"`
	// ReserveMB is the free space, in MiB, that ingest leaves on the
	// pebble store's filesystem (0: DefaultReserveMB); see store.Space.
	ReserveMB int `toml:"reserve_mb"`
	// URL, MaxConns and DisableNotify are the postgres backend's; see
	// postgres.Options. A zero MaxConns means its default.
	URL           string `toml:"url"`
	MaxConns      int    `toml:"max_conns"`
	DisableNotify bool   `toml:"disable_notify"`
}

// RetentionConfig is [retention].
type RetentionConfig struct {
	// Details is how long a parcel's details are kept after the ingest of
	// its last event, a Go duration; they are erased at the end of that
	// UTC day (node/store/seal). "0s" keeps them. Empty, as in configs
	// written before [retention] existed: DefaultDetailsRetention.
	Details string `toml:"details"`
}

// DetailsRetention is [retention] details parsed, 0 for keep.
func (c *Config) DetailsRetention() (time.Duration, error) {
	s := c.Retention.Details
	options.Default(&s, defaults.Retention.Details)
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > seal.MaxRetention {
		return 0, fmt.Errorf("retention.details %q must be a duration from \"0s\" (keep) to %v", c.Retention.Details, seal.MaxRetention)
	}
	return d, nil
}

// DefaultMaxConns is the postgres pool size a new config gets.
const DefaultMaxConns = 8

// defaults holds every default of a config: configFor starts a new config
// from it, Render shows it beside each option, and DetailsRetention falls
// back on it.
var defaults = Config{
	Network:   *(&host.Options{ListenAddrs: DefaultListenAddrs}).EnsureDefaults(),
	Admin:     AdminConfig{Addr: DefaultAdminAddr},
	Store:     StoreConfig{Backend: BackendPebble, Path: DefaultStorePath, CacheMB: DefaultCacheMB, MemTableMB: DefaultMemTableMB, ReserveMB: DefaultReserveMB, MaxConns: DefaultMaxConns},
	Log:       LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
	Retention: RetentionConfig{Details: DefaultDetailsRetention},
	Trust:     TrustConfig{Anchors: []string{}, Registry: DefaultRegistryFile},
	Policy:    *(&policy.Options{}).EnsureDefaults(),
}

// LogConfig sets slog output.
type LogConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

func listenOrDefault(addrs []string) []string {
	if len(addrs) == 0 {
		return slices.Clone(DefaultListenAddrs)
	}
	return addrs
}

func configFor(o InitOptions) (*Config, error) {
	var problems []string
	cfg := new(Config)
	*cfg = defaults
	cfg.Network.ListenAddrs = listenOrDefault(o.Listen)
	switch {
	case (o.Carrier == "") == (o.Platform == ""):
		// Without a role, the rest cannot be judged.
		return nil, fmt.Errorf("%w: give exactly one of a carrier code and a platform name", ErrBadOptions)
	case o.Carrier != "":
		cfg.Role = RoleCarrier
		cfg.Carrier = CarrierConfig{Code: o.Carrier, Name: o.Name, Country: o.Country, Schemes: o.Schemes, KeyFile: CarrierKeyFile}
		if cfg.Carrier.Name == "" {
			cfg.Carrier.Name = o.Carrier
		}
		if cfg.Carrier.Country == "" {
			cfg.Carrier.Country = DefaultCountry
		}
		if len(cfg.Carrier.Schemes) == 0 && protocol.ValidCarrierCode(o.Carrier) == nil {
			cfg.Carrier.Schemes = []string{protocol.DefaultScheme(o.Carrier).String()}
		}
	default:
		cfg.Role = RolePlatform
		cfg.Platform.Name = o.Platform
	}
	if o.Store != "" {
		if !isPostgresURL(o.Store) {
			problems = append(problems, "--store takes a postgres:// URL (without it the store is pebble, in the repo)")
		}
		cfg.Store.Backend, cfg.Store.URL = BackendPostgres, o.Store
	}
	if err := cfg.Validate(); err != nil {
		problems = append(problems, strings.TrimPrefix(err.Error(), ErrBadOptions.Error()+": "))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrBadOptions, strings.Join(problems, "; "))
	}
	return cfg, nil
}

// Validate reports every problem in the config at once.
func (c *Config) Validate() error {
	var p []string
	switch c.Role {
	case RoleCarrier:
		if err := protocol.ValidCarrierCode(c.Carrier.Code); err != nil {
			p = append(p, strings.TrimPrefix(err.Error(), protocol.ErrInvalid.Error()+": "))
		} else if len(c.Carrier.Schemes) == 0 {
			p = append(p, "carrier.schemes is empty")
		}
		if len(c.Carrier.Country) != 2 || strings.ToUpper(c.Carrier.Country) != c.Carrier.Country {
			p = append(p, fmt.Sprintf("carrier.country %q is not an ISO 3166-1 alpha-2 code", c.Carrier.Country))
		}
		if _, err := c.Schemes(); err != nil {
			p = append(p, err.Error())
		}
	case RolePlatform:
		if c.Platform.Name == "" {
			p = append(p, "platform.name is empty")
		}
	default:
		p = append(p, fmt.Sprintf("role %q must be %q or %q", c.Role, RoleCarrier, RolePlatform))
	}
	if err := c.HostOptions().Validate(); err != nil {
		p = append(p, "network: "+err.Error())
	}
	if err := c.PolicyOptions().Validate(); err != nil {
		p = append(p, "policy: "+strings.TrimPrefix(err.Error(), policy.ErrInvalidOptions.Error()+": "))
	}
	switch c.Store.Backend {
	case BackendPebble:
	case BackendPostgres:
		if c.Role != RoleCarrier {
			p = append(p, "store.backend \"postgres\" is for carrier nodes")
		}
		if !isPostgresURL(c.Store.URL) {
			p = append(p, "store.url must be a postgres:// or postgresql:// URL with backend \"postgres\"")
		}
		if c.Store.MaxConns < 0 || c.Store.MaxConns == 1 {
			p = append(p, fmt.Sprintf("store.max_conns %d must be at least 2", c.Store.MaxConns))
		}
	default:
		p = append(p, fmt.Sprintf("store.backend %q is not supported (pebble, postgres)", c.Store.Backend))
	}
	if c.Store.CacheMB <= 0 || c.Store.MemTableMB <= 0 {
		p = append(p, "store.cache_mb and store.memtable_mb must be positive")
	}
	if c.Store.ReserveMB < 0 {
		p = append(p, fmt.Sprintf("store.reserve_mb %d must not be negative", c.Store.ReserveMB))
	}
	if _, err := c.DetailsRetention(); err != nil {
		p = append(p, err.Error())
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrBadOptions, strings.Join(p, "; "))
	}
	return nil
}

// isPostgresURL reports whether u is a PostgreSQL connection URL.
func isPostgresURL(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// HostOptions returns the libp2p host options with defaults filled in.
func (c *Config) HostOptions() *host.Options {
	o := c.Network
	o.ListenAddrs = append([]string(nil), c.Network.ListenAddrs...)
	return o.EnsureDefaults()
}

// PolicyOptions returns the policy options with defaults filled in, so
// that a config written before [policy] existed gets the defaults.
func (c *Config) PolicyOptions() *policy.Options {
	o := c.Policy
	o.Allow = append([]string(nil), c.Policy.Allow...)
	o.Deny = append([]string(nil), c.Policy.Deny...)
	return o.EnsureDefaults()
}

// Schemes parses the carrier's number schemes.
func (c *Config) Schemes() ([]protocol.Scheme, error) {
	out := make([]protocol.Scheme, 0, len(c.Carrier.Schemes))
	for _, s := range c.Carrier.Schemes {
		sc, err := protocol.ParseScheme(s)
		if err != nil {
			return nil, fmt.Errorf("carrier.schemes %q: %w", s, err)
		}
		out = append(out, sc)
	}
	return out, nil
}

// LoadConfig reads and validates a config file. Unknown keys are errors:
// a misspelt option must not silently fall back to its default.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, fmt.Errorf("repo: %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: %s: unknown keys %s", ErrBadOptions, path, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Render writes the config as TOML with a comment and the default on
// every option.
func (c *Config) Render() ([]byte, error) {
	var buf bytes.Buffer
	err := configTemplate.Execute(&buf, struct {
		*Config
		Def *Config
	}{c, &defaults})
	if err != nil {
		return nil, err
	}
	// The rendered file must load back to the same config.
	var back Config
	if _, err := toml.Decode(buf.String(), &back); err != nil {
		return nil, fmt.Errorf("repo: rendered config does not parse: %w", err)
	}
	return buf.Bytes(), nil
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

var configTemplate = template.Must(template.New("config").Funcs(template.FuncMap{
	"q": strconv.Quote, "list": quoteList,
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
}).Parse(`# OpenTrack node configuration. Every option is shown with its default.
# Paths are relative to this directory. Restart the node to apply changes.

# "carrier" serves and signs a carrier's events; "platform" queries carriers.
role = {{q .Role}}
{{if eq .Role "carrier"}}
[carrier]
# Carrier code as listed in the registry: 2-16 of A-Z 0-9.
code = {{q .Carrier.Code}}
# Display name. Default: the code.
name = {{q .Carrier.Name}}
# ISO 3166-1 alpha-2 country of the carrier. Default: "ZZ".
country = {{q .Carrier.Country}}
# Tracking-number schemes: "s10:GB" (UPU S10 issued in GB), or a pattern
# with an optional check-digit algorithm (mod10, mod11, mod7, luhn),
# e.g. "SF\\d{10,20}" or "\\d{12}:mod10". Default: the code and 10-20 digits.
schemes = {{list .Carrier.Schemes}}
# Ed25519 signing key (PKCS#8 PEM, mode 0600). Not the libp2p node key.
key_file = {{q .Carrier.KeyFile}}
# When the signing key was made (RFC 3339); the registry's window for it
# starts here unless the authority says otherwise. Set by init.
{{if not .Carrier.KeyCreated.IsZero}}key_created = {{.Carrier.KeyCreated.UTC.Format "2006-01-02T15:04:05Z07:00"}}{{end}}
{{else}}
[platform]
name = {{q .Platform.Name}}
{{end}}
[network]
# libp2p listen multiaddrs (TCP and QUIC).
# Default: {{list .Def.Network.ListenAddrs}} (loopback, ports the OS picks;
# the running node writes them to node.json). A carrier in the registry
# needs a fixed, reachable address here.
listen_addrs = {{list .Network.ListenAddrs}}
# Leave out QUIC (for networks that drop UDP). Default: false.
disable_quic = {{.Network.DisableQUIC}}
# Connection manager: trim to conn_mgr_low once above conn_mgr_high; new
# connections are spared for conn_mgr_grace. Keep conn_mgr_high below
# limits.system_conns. Defaults: {{.Def.Network.ConnMgrLow}}, {{.Def.Network.ConnMgrHigh}}, {{q .Def.Network.ConnMgrGrace.String}}.
conn_mgr_low = {{.Network.ConnMgrLow}}
conn_mgr_high = {{.Network.ConnMgrHigh}}
conn_mgr_grace = {{q .Network.ConnMgrGrace.String}}
# An inbound stream that has not picked its protocol by negotiation_timeout
# is reset; an inbound TCP connection still in its handshake after
# handshake_timeout is closed. Defaults: {{q .Def.Network.NegotiationTimeout.String}}, {{q .Def.Network.HandshakeTimeout.String}}.
negotiation_timeout = {{q .Network.NegotiationTimeout.String}}
handshake_timeout = {{q .Network.HandshakeTimeout.String}}
# libp2p Prometheus metrics, incl. the resource manager's per-stream
# accounting, which costs 10-14% CPU. Default: false.
metrics = {{.Network.Metrics}}

# Resource-manager limits, set explicitly. Memory is in bytes.
[network.limits]
# Whole host. Defaults: {{.Def.Network.Limits.SystemConns}} connections, {{.Def.Network.Limits.SystemStreams}} streams, {{.Def.Network.Limits.SystemMemory}} bytes.
system_conns = {{.Network.Limits.SystemConns}}
system_streams = {{.Network.Limits.SystemStreams}}
system_memory = {{.Network.Limits.SystemMemory}}
# Per peer. Defaults: {{.Def.Network.Limits.PeerConns}} connections, {{.Def.Network.Limits.PeerStreams}} streams, {{.Def.Network.Limits.PeerMemory}} bytes.
peer_conns = {{.Network.Limits.PeerConns}}
peer_streams = {{.Network.Limits.PeerStreams}}
peer_memory = {{.Network.Limits.PeerMemory}}
# Inbound streams still negotiating, per peer and over all peers (the
# transient scope); inbound TCP handshakes in flight, over all sources and
# per source address (IPv4 /32, IPv6 /64). Defaults: {{.Def.Network.Limits.PeerNegotiating}}, {{.Def.Network.Limits.TransientStreams}}, {{.Def.Network.Limits.Handshakes}}, {{.Def.Network.Limits.AddrHandshakes}}.
peer_negotiating = {{.Network.Limits.PeerNegotiating}}
transient_streams = {{.Network.Limits.TransientStreams}}
handshakes = {{.Network.Limits.Handshakes}}
addr_handshakes = {{.Network.Limits.AddrHandshakes}}
{{range $name, $l := dict "track" .Network.Limits.Track "watch" .Network.Limits.Watch "info" .Network.Limits.Info}}
# /opentrack/{{$name}}: streams over all peers, memory, streams per peer.
[network.limits.{{$name}}]
streams = {{$l.Streams}}
memory = {{$l.Memory}}
peer_streams = {{$l.PeerStreams}}
{{end}}
[admin]
# Admin HTTP API (ingest, /metrics, /debug/pprof). Loopback only; port 0
# picks a free port (see node.json). Default: {{q .Def.Admin.Addr}}
addr = {{q .Admin.Addr}}

[store]
# Storage backend: "pebble" (embedded, in path) or "postgres" (url).
# Default: "pebble".
backend = {{q .Store.Backend}}
# Store directory. Default: "store".
path = {{q .Store.Path}}
# Block cache in MiB, outside the Go heap. Default: {{.Def.Store.CacheMB}}.
cache_mb = {{.Store.CacheMB}}
# Memtable size in MiB. Default: {{.Def.Store.MemTableMB}}.
memtable_mb = {{.Store.MemTableMB}}
# backend "pebble": free space in MiB that ingest leaves on the store's
# filesystem. Below it, POST /v1/events answers 507 (nothing acknowledged)
# while track, watch and info keep serving, and /healthz and /metrics
# (opentrack_store_writable) say why; ingest resumes by itself once space
# is freed. A node started below it opens the store read-only and says so
# until it is restarted with space. Default: {{.Def.Store.ReserveMB}}.
reserve_mb = {{.Store.ReserveMB}}
# backend "postgres": the database's connection URL, e.g.
# "postgres://opentrack@db.internal:5432/opentrack?sslmode=verify-full".
# Keep the password out of this file: libpq's PGPASSWORD or ~/.pgpass work.
# Replicas of one carrier share the database. Default: "".
url = {{q .Store.URL}}
# backend "postgres": connection pool size. Default: {{.Def.Store.MaxConns}}.
max_conns = {{.Store.MaxConns}}
# backend "postgres": no LISTEN/NOTIFY (CockroachDB, YugabyteDB); watchers
# then learn of other replicas' appends by polling every second.
# Default: false.
disable_notify = {{.Store.DisableNotify}}

{{if eq .Role "carrier"}}[retention]
# How long a parcel's details (recipient, courier, proof of delivery) are
# kept after the ingest of its last event, a duration such as "2160h";
# "0s" keeps them. At the end of that UTC day the node destroys their key
# in details.keyring, which erases them from every copy of the store,
# backups included. Keep details.keyring out of store backups: a copy of
# it still opens what it had not erased. Replicas on one database share
# the file. Default: {{q .Def.Retention.Details}} (90 days).
details = {{q .Retention.Details}}

{{end}}[trust]
# Registry authority public keys (PEM) whose signed registry this node
# accepts. Without anchors, the node verifies nothing against a registry.
# Default: none.
anchors = {{list .Trust.Anchors}}
# Where the newest accepted signed registry is kept; nodes exchange newer
# ones and replace it. Default: "registry.cose".
registry = {{q .Trust.Registry}}
{{if eq .Role "carrier"}}
# Abuse and access limits, per peer. A track request costs one token per
# number; each not_found answer also spends from a stricter budget, and
# while that is empty the peer's lookups are answered rate_limited, which
# stops number enumeration without troubling platforms that track real
# (found) parcels.
[policy]
# Numbers a second, and bucket size. Defaults: {{.Def.Policy.TrackRate}}, {{.Def.Policy.TrackBurst}}.
track_rate = {{.Policy.TrackRate}}
track_burst = {{.Policy.TrackBurst}}
# not_found answers a second, and bucket size. Defaults: {{.Def.Policy.NotFoundRate}} (60 a minute), {{.Def.Policy.NotFoundBurst}}.
not_found_rate = {{.Policy.NotFoundRate}}
not_found_burst = {{.Policy.NotFoundBurst}}
# not_found answers a second, and bucket size, for all the anonymous peers
# of one source address (IPv4 /32, IPv6 /64) together, as peer IDs cost
# nothing. Defaults: {{.Def.Policy.AddrNotFoundRate}}, {{.Def.Policy.AddrNotFoundBurst}}.
addr_not_found_rate = {{.Policy.AddrNotFoundRate}}
addr_not_found_burst = {{.Policy.AddrNotFoundBurst}}
# The node's ceiling on not_found answers to anonymous peers, a second,
# and bucket size. Defaults: {{.Def.Policy.GlobalNotFoundRate}}, {{.Def.Policy.GlobalNotFoundBurst}}.
global_not_found_rate = {{.Policy.GlobalNotFoundRate}}
global_not_found_burst = {{.Policy.GlobalNotFoundBurst}}
# Peer IDs of platforms (gateways) served on purpose. They and the nodes
# the registry names get this not_found budget instead, outside the
# address and node budgets. Defaults: none; {{.Def.Policy.PlatformNotFoundRate}}, {{.Def.Policy.PlatformNotFoundBurst}}.
platforms = {{list .Policy.Platforms}}
platform_not_found_rate = {{.Policy.PlatformNotFoundRate}}
platform_not_found_burst = {{.Policy.PlatformNotFoundBurst}}
# Watch subscriptions a second, and bucket size. Defaults: {{.Def.Policy.WatchRate}}, {{.Def.Policy.WatchBurst}}.
watch_rate = {{.Policy.WatchRate}}
watch_burst = {{.Policy.WatchBurst}}
# Who may look up public events: "open", "members" (registry nodes only)
# or "off" (grant holders and audiences only). Default: {{q .Def.Policy.Public}}.
public = {{q .Policy.Public}}
# Peer IDs. A non-empty allow list admits only those; deny always wins.
# Defaults: none.
allow = {{list .Policy.Allow}}
deny = {{list .Policy.Deny}}
# Peers whose buckets are kept; the least recently seen are dropped.
# Default: {{.Def.Policy.MaxPeers}}.
max_peers = {{.Policy.MaxPeers}}
# Source addresses whose buckets are kept. Default: {{.Def.Policy.MaxAddrs}}.
max_addrs = {{.Policy.MaxAddrs}}
{{end}}
[log]
# debug, info, warn or error. Default: "info".
level = {{q .Log.Level}}
# text or json. Default: "text".
format = {{q .Log.Format}}
`))
