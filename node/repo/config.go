package repo

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"
	"github.com/opentrack/opentrack/protocol"
)

// Node roles.
const (
	RoleCarrier  = "carrier"
	RolePlatform = "platform"
)

// Defaults of the config file. Every one is written into a new config
// with a comment, so an operator sees what is in force.
var (
	DefaultListen    = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}
	DefaultAdminAddr = "127.0.0.1:7401"
)

const (
	DefaultCountry     = "ZZ" // ISO 3166 user-assigned: "not stated"
	DefaultStorePath   = "store"
	DefaultCacheMB     = 64
	DefaultMemTableMB  = 64
	DefaultLogLevel    = "info"
	DefaultLogFormat   = "text"
	DefaultConnLow     = 512
	DefaultConnHigh    = 768
	DefaultMaxConns    = 1024
	DefaultMaxStreams  = 8192
	DefaultPeerStreams = 256
	DefaultMemoryMB    = 1024
	DefaultPeerMemMB   = 64
)

// Config is config.toml.
type Config struct {
	Role     string         `toml:"role"`
	Carrier  CarrierConfig  `toml:"carrier"`
	Platform PlatformConfig `toml:"platform"`
	Network  NetworkConfig  `toml:"network"`
	Admin    AdminConfig    `toml:"admin"`
	Store    StoreConfig    `toml:"store"`
	Log      LogConfig      `toml:"log"`
}

// CarrierConfig identifies the carrier a node serves.
type CarrierConfig struct {
	Code    string   `toml:"code"`
	Name    string   `toml:"name"`
	Country string   `toml:"country"`
	Schemes []string `toml:"schemes"`
	KeyFile string   `toml:"key_file"`
}

// PlatformConfig names a platform node.
type PlatformConfig struct {
	Name string `toml:"name"`
}

// NetworkConfig is the libp2p side.
type NetworkConfig struct {
	Listen      []string `toml:"listen"`
	ConnLow     int      `toml:"conn_low"`       // connection manager low watermark
	ConnHigh    int      `toml:"conn_high"`      // connection manager high watermark (< max_conns)
	MaxConns    int      `toml:"max_conns"`      // resource manager: connections, system-wide
	MaxStreams  int      `toml:"max_streams"`    // resource manager: streams, system-wide
	PeerStreams int      `toml:"peer_streams"`   // resource manager: streams per peer
	MemoryMB    int      `toml:"memory_mb"`      // resource manager: memory, system-wide
	PeerMemMB   int      `toml:"peer_memory_mb"` // resource manager: memory per peer
	Metrics     bool     `toml:"metrics"`        // libp2p resource-manager metrics (cost 10-14% CPU)
}

// AdminConfig is the loopback admin HTTP API.
type AdminConfig struct {
	Addr string `toml:"addr"`
}

// StoreConfig is the embedded store.
type StoreConfig struct {
	Backend    string `toml:"backend"`
	Path       string `toml:"path"`
	CacheMB    int    `toml:"cache_mb"`
	MemTableMB int    `toml:"memtable_mb"`
}

// LogConfig sets slog output.
type LogConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

func configFor(o InitOptions) (*Config, error) {
	var problems []string
	cfg := &Config{
		Network: NetworkConfig{Listen: o.Listen, ConnLow: DefaultConnLow, ConnHigh: DefaultConnHigh, MaxConns: DefaultMaxConns,
			MaxStreams: DefaultMaxStreams, PeerStreams: DefaultPeerStreams, MemoryMB: DefaultMemoryMB, PeerMemMB: DefaultPeerMemMB},
		Admin: AdminConfig{Addr: DefaultAdminAddr},
		Store: StoreConfig{Backend: "pebble", Path: DefaultStorePath, CacheMB: DefaultCacheMB, MemTableMB: DefaultMemTableMB},
		Log:   LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
	if len(cfg.Network.Listen) == 0 {
		cfg.Network.Listen = DefaultListen
	}
	switch {
	case (o.Carrier == "") == (o.Platform == ""):
		problems = append(problems, "give exactly one of a carrier code and a platform name")
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
			p = append(p, err.Error())
		}
		if len(c.Carrier.Country) != 2 || strings.ToUpper(c.Carrier.Country) != c.Carrier.Country {
			p = append(p, fmt.Sprintf("carrier.country %q is not an ISO 3166-1 alpha-2 code", c.Carrier.Country))
		}
		if len(c.Carrier.Schemes) == 0 {
			p = append(p, "carrier.schemes is empty")
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
	if len(c.Network.Listen) == 0 {
		p = append(p, "network.listen is empty")
	}
	n := c.Network
	if n.ConnLow <= 0 || n.ConnHigh <= n.ConnLow || n.ConnHigh >= n.MaxConns {
		p = append(p, "network: need 0 < conn_low < conn_high < max_conns, so the connection manager trims before the resource manager refuses")
	}
	if n.MaxStreams <= 0 || n.PeerStreams <= 0 || n.PeerStreams > n.MaxStreams || n.MemoryMB <= 0 || n.PeerMemMB <= 0 || n.PeerMemMB > n.MemoryMB {
		p = append(p, "network: resource limits must be positive, and per-peer limits at most the system limits")
	}
	if c.Store.Backend != "pebble" {
		p = append(p, fmt.Sprintf("store.backend %q is not supported (pebble)", c.Store.Backend))
	}
	if c.Store.CacheMB <= 0 || c.Store.MemTableMB <= 0 {
		p = append(p, "store.cache_mb and store.memtable_mb must be positive")
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrBadOptions, strings.Join(p, "; "))
	}
	return nil
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
		DefListen, DefAdmin string
		Def                 map[string]any
	}{c, quoteList(DefaultListen), DefaultAdminAddr, map[string]any{
		"cache": DefaultCacheMB, "memtable": DefaultMemTableMB, "low": DefaultConnLow, "high": DefaultConnHigh,
		"conns": DefaultMaxConns, "streams": DefaultMaxStreams, "pstreams": DefaultPeerStreams, "mem": DefaultMemoryMB, "pmem": DefaultPeerMemMB,
	}})
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
{{else}}
[platform]
name = {{q .Platform.Name}}
{{end}}
[network]
# libp2p listen multiaddrs (TCP and QUIC). Default: {{.DefListen}}
listen = {{list .Network.Listen}}
# Connection manager watermarks: trim to conn_low when above conn_high.
# Defaults: {{index .Def "low"}} and {{index .Def "high"}}. Keep conn_high below max_conns.
conn_low = {{.Network.ConnLow}}
conn_high = {{.Network.ConnHigh}}
# Resource manager limits, system-wide and per peer. Defaults: max_conns
# {{index .Def "conns"}}, max_streams {{index .Def "streams"}}, peer_streams {{index .Def "pstreams"}}, memory_mb {{index .Def "mem"}}, peer_memory_mb {{index .Def "pmem"}}.
max_conns = {{.Network.MaxConns}}
max_streams = {{.Network.MaxStreams}}
peer_streams = {{.Network.PeerStreams}}
memory_mb = {{.Network.MemoryMB}}
peer_memory_mb = {{.Network.PeerMemMB}}
# Resource-manager metrics in /metrics. They cost 10-14% CPU. Default: false.
metrics = {{.Network.Metrics}}

[admin]
# Admin HTTP API (ingest, /metrics, /debug/pprof). Loopback only; port 0
# picks a free port (see node.json). Default: {{q .DefAdmin}}
addr = {{q .Admin.Addr}}

[store]
# Storage backend. Default: "pebble" (embedded).
backend = {{q .Store.Backend}}
# Store directory. Default: "store".
path = {{q .Store.Path}}
# Block cache in MiB, outside the Go heap. Default: {{index .Def "cache"}}.
cache_mb = {{.Store.CacheMB}}
# Memtable size in MiB. Default: {{index .Def "memtable"}}.
memtable_mb = {{.Store.MemTableMB}}

[log]
# debug, info, warn or error. Default: "info".
level = {{q .Log.Level}}
# text or json. Default: "text".
format = {{q .Log.Format}}
`))
