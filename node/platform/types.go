package platform

import (
	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
)

// The values a Platform's queries take and give are the client's; they
// are named here too, so that a program built on a Platform needs no
// other package of the node.
type (
	// ParcelView is one tracked parcel as verified (client.ParcelView).
	ParcelView = client.ParcelView
	// EventView is one event of a ParcelView (client.EventView).
	EventView = client.EventView
	// WatchOptions say what Watch subscribes to (client.WatchOptions).
	WatchOptions = client.WatchOptions
	// WatchUpdate is one verified update of a watch (client.WatchUpdate).
	WatchUpdate = client.WatchUpdate
	// Watcher is a running watch (client.Watcher).
	Watcher = client.Watcher
	// ClientOptions tune the platform's client (client.Options).
	ClientOptions = client.Options
	// RouterOptions tune its peer routing (discovery.RouterOptions).
	RouterOptions = discovery.RouterOptions
)

// ErrSeveralCarriers means the numbers of one Watch belong to more than
// one carrier, which takes one watch each.
var ErrSeveralCarriers = client.ErrSeveralCarriers

// Watchable splits numbers into those some carrier of the registry
// held can have, and an update for each of the others saying why not.
func (p *Platform) Watchable(numbers []string) ([]string, []WatchUpdate) {
	return client.Watchable(p.keys(), numbers)
}
