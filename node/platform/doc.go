// Package platform is the platform side of OpenTrack assembled once: a
// libp2p host, the trust state (anchors and the signed registry), peer
// routing to the carriers' registry nodes (discovery.Router), optionally
// registry exchange with peers, and one node/client.Client over them.
//
// Before it, each program that looked parcels up (the node, the gateway,
// `opentrack track` and `watch`, the testnet) built that set itself and
// passed trust and router to every client call. A Platform carries them:
// Track, TrackPeer, Watch, WatchPeer and Info are the platform's queries,
// and Close stops what Open started, in order.
//
// Open takes a host or starts one, and takes a trust state or opens it
// from a repo (TrustSource, which *repo.Repo implements). The package
// imports neither the repo nor the root node package, so that what
// builds on it, the HTTP gateway first, stays apart from the stores.
package platform
