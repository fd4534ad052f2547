// Package host builds the node's libp2p host: TCP and QUIC, Noise and TLS,
// yamux, an explicit resource-manager budget per service and per peer, and
// a connection manager whose watermarks sit below that budget.
//
// OpenTrack nodes are infrastructure on known addresses (the registry lists
// them), so the host runs no relay, hole punching or NAT port mapping. The
// protocol services in node/service and the client in node/client attach
// their streams to the service scopes named here (ServiceTrack and so on),
// which is what makes the per-service limits of Options bite.
package host
