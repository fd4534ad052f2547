package testnet

import (
	"math/rand/v2"

	"github.com/opentrack/opentrack/protocol"
)

// step is one scan of a parcel's life.
type step struct {
	status protocol.Status
	reason string
	loc    protocol.Location
}

// places are where the simulated parcels travel.
var places = []protocol.Location{
	{Country: "CN", Locode: "CNSZX", City: "Shenzhen"},
	{Country: "CN", Locode: "CNSHA", City: "Shanghai"},
	{Country: "CN", Locode: "CNPEK", City: "Beijing"},
	{Country: "GB", Locode: "GBLON", City: "London"},
	{Country: "DE", Locode: "DEFRA", City: "Frankfurt"},
	{Country: "US", Locode: "USNYC", City: "New York"},
	{Country: "NL", Locode: "NLAMS", City: "Amsterdam"},
	{Country: "JP", Locode: "JPTYO", City: "Tokyo"},
}

// lifecycle draws a parcel's life: info_received, picked_up, one or two
// legs through facilities, customs for an international parcel, out for
// delivery, delivered. Some parcels meet an exception on the way, a
// customs hold, failed attempts, a pickup point, or go back to the sender.
func lifecycle(r *rand.Rand) []step {
	from := places[r.IntN(len(places))]
	to := from
	international := r.IntN(100) < 25
	if international {
		for to.Country == from.Country {
			to = places[r.IntN(len(places))]
		}
	}
	hub := func(l protocol.Location, name string) protocol.Location {
		l.Facility = l.Locode + "-" + name
		return l
	}
	s := []step{
		{protocol.StatusInfoReceived, "label_created", from},
		{protocol.StatusPickedUp, pick(r, "collected", "dropped_off", "dropped_off_locker"), from},
		{protocol.StatusArrivedAtFacility, "sorting_centre", hub(from, "HUB")},
		{protocol.StatusDepartedFacility, "sorting_centre", hub(from, "HUB")},
	}
	if international {
		s = append(s,
			step{protocol.StatusInTransit, "by_air", from},
			step{protocol.StatusArrivedAtFacility, "office_of_exchange", hub(to, "OE")})
		if r.IntN(100) < 30 {
			s = append(s, step{protocol.StatusCustomsHold, pick(r, "duties_unpaid", "documents_missing", "inspection"), hub(to, "OE")})
		}
		s = append(s, step{protocol.StatusCustomsCleared, pick(r, "no_duties_due", "duties_paid"), hub(to, "OE")})
	} else if r.IntN(2) == 0 {
		s = append(s, step{protocol.StatusInTransit, "by_road", from})
	}
	if r.IntN(100) < 5 {
		s = append(s, step{protocol.StatusException, pick(r, "delayed", "weather", "missorted"), hub(to, "HUB")})
	}
	s = append(s,
		step{protocol.StatusArrivedAtFacility, "delivery_depot", hub(to, "DEPOT")},
		step{protocol.StatusOutForDelivery, "first_attempt", to})
	switch roll := r.IntN(100); {
	case roll < 4: // returned after failed attempts
		s = append(s,
			step{protocol.StatusDeliveryAttempted, "recipient_absent", to},
			step{protocol.StatusOutForDelivery, "redelivery", to},
			step{protocol.StatusDeliveryAttempted, pick(r, "refused", "address_incorrect"), to},
			step{protocol.StatusReturnedToSender, pick(r, "refused", "undeliverable"), to})
	case roll < 12: // one failed attempt, then a redelivery or a pickup point
		s = append(s, step{protocol.StatusDeliveryAttempted, pick(r, "recipient_absent", "business_closed", "access_denied"), to})
		if r.IntN(2) == 0 {
			s = append(s, step{protocol.StatusOutForDelivery, "redelivery", to}, step{protocol.StatusDelivered, "signed", to})
		} else {
			s = append(s, step{protocol.StatusAvailableForPickup, pick(r, "locker", "post_office", "service_point"), to},
				step{protocol.StatusDelivered, "collected", to})
		}
	default:
		s = append(s, step{protocol.StatusDelivered, pick(r, "to_recipient", "to_neighbour", "to_safe_place", "to_locker", "signed"), to})
	}
	return s
}

func pick(r *rand.Rand, xs ...string) string { return xs[r.IntN(len(xs))] }
