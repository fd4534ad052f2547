package testnet

import (
	"sync"

	"github.com/opentrack/opentrack/node/client"
)

// Followed is one verified event of the parcel the testnet follows, as
// the platform that booked it received it over its watch.
type Followed struct {
	Platform string // the platform's name, also its repo's directory under DIR/platforms
	Carrier  string
	Number   string
	Event    client.EventView
}

// follower picks one parcel, the first whose history the first platform
// sees from seq 0, and hands each of its events to Options.Follow once.
type follower struct {
	fn     func(Followed)
	mu     sync.Mutex
	number string
}

// event is called by a platform's watch consumer for each event it sees
// the first time; a carrier's events reach one consumer per platform, in
// seq order, so the followed parcel's events arrive in order.
func (f *follower) event(pi int, platform, carrier, number string, e client.EventView) {
	if f.fn == nil || pi != 0 {
		return
	}
	f.mu.Lock()
	if f.number == "" && e.Seq == 0 {
		f.number = number
	}
	mine := f.number == number
	f.mu.Unlock()
	if mine {
		f.fn(Followed{Platform: platform, Carrier: carrier, Number: number, Event: e})
	}
}
