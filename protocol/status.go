package protocol

import "slices"

// Status is a parcel's normalized state, a closed set so platforms can show one timeline for every carrier.
//
// Carriers map their own scan codes onto it; spec/status.md (Appendix A) is normative.
type Status string

// The statuses in lifecycle order. The values cross the wire, so they never
// change within a major protocol version.
const (
	// StatusInfoReceived means the carrier has the shipment data but not the parcel.
	StatusInfoReceived Status = "info_received"
	// StatusPickedUp means the carrier has taken possession of the parcel.
	StatusPickedUp Status = "picked_up"
	// StatusInTransit means the parcel is moving between facilities.
	StatusInTransit Status = "in_transit"
	// StatusArrivedAtFacility means the parcel was scanned in at a facility.
	StatusArrivedAtFacility Status = "arrived_at_facility"
	// StatusDepartedFacility means the parcel was scanned out of a facility.
	StatusDepartedFacility Status = "departed_facility"
	// StatusCustomsHold means customs hold the parcel pending clearance.
	StatusCustomsHold Status = "customs_hold"
	// StatusCustomsCleared means customs released the parcel.
	StatusCustomsCleared Status = "customs_cleared"
	// StatusOutForDelivery means the parcel is on the vehicle for final delivery.
	StatusOutForDelivery Status = "out_for_delivery"
	// StatusDeliveryAttempted means a delivery attempt failed and the parcel stays with the carrier.
	StatusDeliveryAttempted Status = "delivery_attempted"
	// StatusAvailableForPickup means the recipient can collect the parcel at a pickup point.
	StatusAvailableForPickup Status = "available_for_pickup"
	// StatusDelivered means the parcel reached the recipient or a place they allowed; terminal.
	StatusDelivered Status = "delivered"
	// StatusReturnedToSender means delivery was abandoned and the parcel goes back; terminal.
	StatusReturnedToSender Status = "returned_to_sender"
	// StatusException means something outside the normal flow delays or endangers delivery.
	StatusException Status = "exception"
	// StatusCancelled means the shipment was called off before delivery; terminal.
	StatusCancelled Status = "cancelled"
)

// facilityReasons is shared by arrival and departure, which happen at the
// same kinds of place.
var facilityReasons = []string{"sorting_centre", "delivery_depot", "office_of_exchange", "airport"}

// vocabulary is the one table of statuses and their reason codes; Statuses,
// Valid, Reasons and ValidReason all read it, and a test holds it equal to
// spec/status.md.
var vocabulary = []struct {
	status  Status
	reasons []string
}{
	{StatusInfoReceived, []string{"label_created", "pickup_scheduled"}},
	{StatusPickedUp, []string{"collected", "dropped_off", "dropped_off_locker"}},
	{StatusInTransit, []string{"by_road", "by_air", "by_rail", "by_sea"}},
	{StatusArrivedAtFacility, facilityReasons},
	{StatusDepartedFacility, facilityReasons},
	{StatusCustomsHold, []string{"duties_unpaid", "documents_missing", "inspection", "prohibited_item"}},
	{StatusCustomsCleared, []string{"no_duties_due", "duties_paid", "duties_due_on_delivery"}},
	{StatusOutForDelivery, []string{"first_attempt", "redelivery"}},
	{StatusDeliveryAttempted, []string{"recipient_absent", "address_incorrect", "refused", "business_closed", "access_denied", "rescheduled"}},
	{StatusAvailableForPickup, []string{"locker", "post_office", "service_point", "depot"}},
	{StatusDelivered, []string{"to_recipient", "to_neighbour", "to_safe_place", "to_locker", "to_reception", "signed", "collected"}},
	{StatusReturnedToSender, []string{"refused", "unclaimed", "undeliverable", "address_incorrect", "customs_refused"}},
	{StatusException, []string{"damaged", "lost", "delayed", "weather", "address_incorrect", "held_by_carrier", "security", "missorted"}},
	{StatusCancelled, []string{"by_sender", "by_carrier", "never_received"}},
}

// statusIndex finds a status's row in vocabulary without a scan; every
// decoded event is checked against it.
var statusIndex = func() map[Status]int {
	m := make(map[Status]int, len(vocabulary))
	for i, v := range vocabulary {
		m[v.status] = i
	}
	return m
}()

// Valid reports whether s is in the vocabulary, since version 1 receivers reject any other status.
func (s Status) Valid() bool {
	_, ok := statusIndex[s]
	return ok
}

// Terminal reports whether s ends the journey, so clients can close timelines; later events stay legal.
func (s Status) Terminal() bool {
	switch s {
	case StatusDelivered, StatusReturnedToSender, StatusCancelled:
		return true
	}
	return false
}

// Statuses returns every status in lifecycle order, for listings and exhaustive checks.
func Statuses() []Status {
	out := make([]Status, len(vocabulary))
	for i, v := range vocabulary {
		out[i] = v.status
	}
	return out
}

// Reasons returns a copy of the reason codes defined for s (nil if s is unknown), for pickers and docs.
func Reasons(s Status) []string {
	i, ok := statusIndex[s]
	if !ok {
		return nil
	}
	return slices.Clone(vocabulary[i].reasons)
}

// ValidReason reports whether reason may accompany s: "" with any valid status, else only s's own codes.
func ValidReason(s Status, reason string) bool {
	i, ok := statusIndex[s]
	if !ok {
		return false
	}
	// At most eight short codes: a scan beats hashing and allocates nothing.
	return reason == "" || slices.Contains(vocabulary[i].reasons, reason)
}

// StatusMapping relates a status to the nearest codes of vocabularies carriers and aggregators already use.
//
// It is informative: it helps carriers map their feeds in and platforms map
// events out, and nothing on the wire is checked against it.
type StatusMapping struct {
	Status    Status   // the OpenTrack status the row describes
	UPU       []string // UPU EMSEVT v3 event codes; empty where none fits
	AfterShip string   // AfterShip tag
	EasyPost  string   // EasyPost tracker status
}

// mappings holds one row per status, in lifecycle order.
//
// Not mapped on purpose: AfterShip Expired and Pending, and EasyPost unknown
// and error, describe the aggregator's own tracker, not a carrier event.
var mappings = []StatusMapping{
	// Pre-advice travels as ITMATT/PREDES messages, not as an EMSEVT event.
	{StatusInfoReceived, nil, "InfoReceived", "pre_transit"},
	{StatusPickedUp, []string{"EMA"}, "InTransit", "in_transit"},
	// EMSEVT records only arrivals at and departures from offices.
	{StatusInTransit, nil, "InTransit", "in_transit"},
	{StatusArrivedAtFacility, []string{"EMB", "EMD", "EMJ", "EDD", "EMG"}, "InTransit", "in_transit"},
	{StatusDepartedFacility, []string{"EMC", "EMF", "EMK", "EDE"}, "InTransit", "in_transit"},
	// AfterShip files customs holds under Exception. EXA and EDB mean
	// "presented to customs"; counting them as a hold is a judgement call.
	{StatusCustomsHold, []string{"EXA", "EXB", "EDB", "EME"}, "Exception", "in_transit"},
	{StatusCustomsCleared, []string{"EXC", "EDC"}, "InTransit", "in_transit"},
	{StatusOutForDelivery, []string{"EDG"}, "OutForDelivery", "out_for_delivery"},
	// EasyPost keeps a retried delivery in_transit and uses failure only
	// once the carrier gives up.
	{StatusDeliveryAttempted, []string{"EMH"}, "AttemptFail", "in_transit"},
	{StatusAvailableForPickup, []string{"EDH"}, "AvailableForPickup", "available_for_pickup"},
	{StatusDelivered, []string{"EMI"}, "Delivered", "delivered"},
	// EMSEVT has no event of its own for a return: the item travels back
	// under the ordinary events.
	{StatusReturnedToSender, nil, "Exception", "return_to_sender"},
	// Uncertain: EDA (held at inward OE), EXD (held at outward OE) and EDF
	// (held at delivery depot) are holds for operational reasons, which is
	// closest to exception with reason held_by_carrier.
	{StatusException, []string{"EDA", "EXD", "EDF"}, "Exception", "failure"},
	// EXX is an export cancellation; a cancelled parcel never posted has no
	// UPU event at all.
	{StatusCancelled, []string{"EXX"}, "Exception", "cancelled"},
}

// Mappings returns a copy of the informative mapping table, one row per status in lifecycle order.
func Mappings() []StatusMapping {
	out := make([]StatusMapping, len(mappings))
	for i, m := range mappings {
		m.UPU = slices.Clone(m.UPU)
		out[i] = m
	}
	return out
}
