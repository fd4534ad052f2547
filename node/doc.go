// Package node is the OpenTrack daemon as a library: Start and Run
// assemble a running carrier or platform node from its repo.
//
// The subpackages, each one job, by who uses them:
//
//   - a carrier node: store (by role: the event log, the feed, access,
//     stats) with its backends pebble and postgres and the sealed details
//     of seal; ingest, the one commit path of scan events; service, the
//     libp2p protocol handlers (track, watch, info); policy, who may ask
//     what, grants and the audit trail; admin, the loopback HTTP admin API
//     and its typed client.
//   - a platform: platform, one value holding the host, trust, routing
//     and the client (client, the verifying side of the protocols), with
//     Track, Watch and Info; gateway, its public HTTP face.
//   - both: host (libp2p), discovery (trust anchors, the registry, peer
//     routing, registry exchange), repo (the node's directory), keyfile,
//     metrics, version.
//   - the registry's keeper: authority.
//
// cmd/opentrack only parses flags and calls node, platform, admin,
// gateway, authority and repo; scripts/archcheck (make arch) keeps the
// imports in these lanes.
package node
