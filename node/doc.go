// Package node is the OpenTrack daemon as a library. Its subpackages are
// the libp2p host, the store, the protocol service handlers, carrier
// ingest, access policy, discovery, the platform-side client, the HTTP
// gateway and metrics; Start and Run assemble them into a running node.
// cmd/opentrack only parses flags and calls them.
package node
