// Package node is the OpenTrack daemon as a library. Its subpackages are
// the libp2p host, the store, the protocol service handlers, carrier
// ingest, access policy, discovery, the platform-side client, the HTTP
// gateway and metrics. cmd/opentrack only parses flags and calls them.
package node

// Version is the software version, reported by `opentrack version`, the
// info protocol and the libp2p identify agent ("opentrack/<Version>").
const Version = "0.1.0"

// AgentVersion is the identify agent string.
const AgentVersion = "opentrack/" + Version
