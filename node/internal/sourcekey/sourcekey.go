// Package sourcekey names the source address that per-source budgets are
// kept for. node/host bounds handshakes by it and node/policy budgets
// not_found answers by it; it sits here so that policy need not import
// the host, and the services that call policy with it.
package sourcekey

import (
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Of is the source a connection's budget is kept for: an IPv4 address
// whole, an IPv6 address by its /64, which one subscriber holds. An
// address without IP is the zero Prefix, one source for all.
func Of(a ma.Multiaddr) netip.Prefix {
	if a == nil {
		return netip.Prefix{}
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return netip.Prefix{}
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}
	}
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	pfx, _ := addr.Prefix(bits)
	return pfx
}
