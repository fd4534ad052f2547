// Package host builds the node's libp2p host: TCP and QUIC, Noise and TLS,
// yamux, an explicit resource-manager budget per service and per peer, and
// a connection manager whose watermarks sit below that budget.
//
// OpenTrack nodes are infrastructure on known addresses (the registry lists
// them), so the host runs no relay, hole punching or NAT port mapping. The
// protocol services in node/service and the client in node/client attach
// their streams to the service scopes that protocol names
// (protocol.TrackServiceName and so on), which is what makes the
// per-service limits of Options bite.
//
// guard.go holds what libp2p leaves to a hostile peer: inbound streams
// still negotiating their protocol are bounded per peer and reset after
// NegotiationTimeout, and inbound TCP handshakes are bounded per source
// address and in total and closed after HandshakeTimeout. TCP listens
// without SO_REUSEPORT, so a port another node holds is an error.
package host
