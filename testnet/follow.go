package testnet

import (
	"sync"

	"github.com/opentrack/opentrack/node/platform"
)

// Followed is one verified event of the parcel the testnet follows, as
// the platform that booked it received it over its watch.
type Followed struct {
	Platform string // the platform's name, also its repo's directory under DIR/platforms
	Carrier  string
	Number   string
	Event    platform.EventView
}

// FollowedParcel is the report's summary of the followed parcel, with the
// repos to look it up from once the run is over (kept with Options.Dir).
type FollowedParcel struct {
	Number       string `json:"number"`
	Carrier      string `json:"carrier"`
	Platform     string `json:"platform"`
	Events       int    `json:"events"`
	LastStatus   string `json:"last_status"`
	CarrierRepo  string `json:"carrier_repo"`
	PlatformRepo string `json:"platform_repo"`
}

// follower picks one parcel, the first whose history the first platform
// sees from seq 0, hands each of its events to Options.Follow once, and
// keeps the summary for the report.
type follower struct {
	fn      func(Followed)
	mu      sync.Mutex
	summary FollowedParcel
}

// event is called by a platform's watch consumer for each event it sees
// the first time; a carrier's events reach one consumer per platform, in
// seq order, so the followed parcel's events arrive in order.
func (f *follower) event(pi int, platform, carrier, number string, e platform.EventView) {
	if pi != 0 {
		return
	}
	f.mu.Lock()
	if f.summary.Number == "" && e.Seq == 0 {
		f.summary = FollowedParcel{Number: number, Carrier: carrier, Platform: platform}
	}
	mine := f.summary.Number == number
	if mine {
		f.summary.Events++
		f.summary.LastStatus = string(e.Status)
	}
	f.mu.Unlock()
	if mine && f.fn != nil {
		f.fn(Followed{Platform: platform, Carrier: carrier, Number: number, Event: e})
	}
}

// report returns the summary, nil when no parcel was followed, with the
// repos of its carrier and platform in n.
func (f *follower) report(n *Net) *FollowedParcel {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.summary.Number == "" {
		return nil
	}
	s := f.summary
	for _, c := range n.Carriers {
		if c.Code == s.Carrier {
			s.CarrierRepo = c.Repo.Dir
		}
	}
	for _, p := range n.Platforms {
		if p.Name == s.Platform {
			s.PlatformRepo = p.Repo.Dir
		}
	}
	return &s
}
