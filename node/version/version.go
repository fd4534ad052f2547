// Package version holds the software version. It is a leaf package so that
// every part of the node can report it without import cycles.
package version

// Version is the software version, reported by `opentrack version`, the
// info protocol and the libp2p identify agent.
const Version = "0.1.0"

// Agent is the identify agent string.
const Agent = "opentrack/" + Version
