package protocol

import (
	"crypto/ed25519"
	"fmt"
	"strings"
)

// TrackRequest asks a carrier node for up to MaxNumbersPerRequest parcels.
type TrackRequest struct {
	Queries []TrackQuery `cbor:"queries"`
	Grant   []byte       `cbor:"grant,omitempty"` // a signed Grant, to receive details
}

// TrackQuery is one number, and optionally the head the client already
// holds so that only newer events come back.
type TrackQuery struct {
	Number string `cbor:"number"`
	Known  Link   `cbor:"known,omitzero"`
}

// TrackResponse answers a TrackRequest: one result per query, in order,
// or a request-level error with no results.
type TrackResponse struct {
	Results []TrackResult `cbor:"results"`
	Error   *ErrorInfo    `cbor:"error,omitempty"`
}

// TrackResult is the answer for one number. With code ok it carries the
// signed head and the events after the known head (all events if none).
type TrackResult struct {
	Number  string   `cbor:"number"`
	Code    string   `cbor:"code"`
	Head    []byte   `cbor:"head,omitempty"`   // COSE_Sign1 of a Head
	Events  [][]byte `cbor:"events,omitempty"` // canonical Event blocks, oldest first
	More    bool     `cbor:"more,omitempty"`   // history continues: ask again with the last event as known
	Details Details  `cbor:"details,omitempty"`
	// DetailsError is why a result the grant covers has no details
	// (DetailsExpired), with ok only and never with Details.
	DetailsError string `cbor:"details_error,omitempty"`
	RetryAfter   uint64 `cbor:"retry_after,omitempty"` // ms, with rate_limited
	Message      string `cbor:"message,omitempty"`
}

// ErrorInfo is a request-level error.
type ErrorInfo struct {
	Code       string `cbor:"code"`
	Message    string `cbor:"message,omitempty"`
	RetryAfter uint64 `cbor:"retry_after,omitempty"` // ms
}

// Validate checks a request from a peer.
func (r *TrackRequest) Validate() error {
	if len(r.Queries) == 0 {
		return fmt.Errorf("%w: no queries", ErrInvalid)
	}
	if len(r.Queries) > MaxNumbersPerRequest {
		return fmt.Errorf("%w: %d numbers, limit %d", ErrTooLarge, len(r.Queries), MaxNumbersPerRequest)
	}
	if len(r.Grant) > MaxGrantSize {
		return fmt.Errorf("%w: grant of %d bytes", ErrTooLarge, len(r.Grant))
	}
	for _, q := range r.Queries {
		if len(q.Number) == 0 || len(q.Number) > 2*MaxNumberLen {
			return fmt.Errorf("%w: number of %d bytes", ErrInvalid, len(q.Number))
		}
		if q.Known.Defined() {
			if err := CheckCID(q.Known.Cid); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate checks a response's shape; the client verifies its content.
func (r *TrackResponse) Validate(queries int) error {
	if r.Error != nil {
		if len(r.Results) > 0 {
			return fmt.Errorf("%w: a request-level error comes without results", ErrInvalid)
		}
		return r.Error.validate()
	}
	if len(r.Results) != queries {
		return fmt.Errorf("%w: %d results for %d queries", ErrInvalid, len(r.Results), queries)
	}
	for i := range r.Results {
		res := &r.Results[i]
		if len(res.Message) > MaxMessageLen {
			return fmt.Errorf("%w: message of %d bytes", ErrTooLarge, len(res.Message))
		}
		if res.Code == "" {
			return fmt.Errorf("%w: result %d has no code", ErrInvalid, i)
		}
		if err := res.Details.Validate(); len(res.Details) > 0 && err != nil {
			return fmt.Errorf("result %d details: %w", i, err)
		}
		if res.Code == CodeOK && len(res.Head) == 0 {
			return fmt.Errorf("%w: result %d is ok without a head", ErrInvalid, i)
		}
		if res.Code != CodeOK && (len(res.Head) > 0 || len(res.Events) > 0 || len(res.Details) > 0 || res.DetailsError != "") {
			return fmt.Errorf("%w: result %d carries data with code %q", ErrInvalid, i, res.Code)
		}
		if err := checkDetailsError(res.DetailsError, res.Details); err != nil {
			return fmt.Errorf("result %d: %w", i, err)
		}
		if len(res.Events) > MaxEventsPerResult {
			return fmt.Errorf("%w: %d events in one result", ErrTooLarge, len(res.Events))
		}
	}
	return nil
}

// checkDetailsError checks a details error code: at most
// MaxDetailsErrorLen bytes, and never beside details.
func checkDetailsError(code string, d Details) error {
	if len(code) > MaxDetailsErrorLen {
		return fmt.Errorf("%w: details_error of %d bytes", ErrTooLarge, len(code))
	}
	if code != "" && len(d) > 0 {
		return fmt.Errorf("%w: details_error %q beside details", ErrInvalid, code)
	}
	return nil
}

func (e *ErrorInfo) validate() error {
	if e.Code == "" || e.Code == CodeOK {
		return fmt.Errorf("%w: error without a code", ErrInvalid)
	}
	if len(e.Message) > MaxMessageLen {
		return fmt.Errorf("%w: message of %d bytes", ErrTooLarge, len(e.Message))
	}
	return nil
}

// WatchRequest opens a subscription: a list of numbers, or the caller's
// audience, from a cursor (empty: from now).
type WatchRequest struct {
	Numbers  []string `cbor:"numbers,omitempty"`
	Audience bool     `cbor:"audience,omitempty"`
	Cursor   string   `cbor:"cursor,omitempty"`
	Grant    []byte   `cbor:"grant,omitempty"`
}

// Validate checks a subscription from a peer.
func (r *WatchRequest) Validate() error {
	if r.Audience == (len(r.Numbers) > 0) {
		return fmt.Errorf("%w: subscribe to numbers or to the audience, not both or neither", ErrInvalid)
	}
	if len(r.Numbers) > MaxWatchNumbers {
		return fmt.Errorf("%w: %d numbers, limit %d", ErrTooLarge, len(r.Numbers), MaxWatchNumbers)
	}
	if len(r.Cursor) > MaxCursorLen {
		return fmt.Errorf("%w: cursor of %d bytes", ErrTooLarge, len(r.Cursor))
	}
	if len(r.Grant) > MaxGrantSize {
		return fmt.Errorf("%w: grant of %d bytes", ErrTooLarge, len(r.Grant))
	}
	seen := make(map[string]struct{}, len(r.Numbers))
	for _, n := range r.Numbers {
		if !isNormalizedNumber(n) {
			return fmt.Errorf("%w: watch number %q is not a normalized tracking number", ErrInvalid, n)
		}
		if _, dup := seen[n]; dup {
			return fmt.Errorf("%w: watch number %q listed twice", ErrInvalid, n)
		}
		seen[n] = struct{}{}
	}
	return nil
}

// Watch message types, server to client.
const (
	WatchUpdate    = "update"
	WatchCatchUp   = "catchup"
	WatchHeartbeat = "heartbeat"
	WatchError     = "error"
	WatchStatus    = "status"
)

// WatchMessage is one server frame on a watch stream. Type says which
// fields are present:
//   - update: cursor, number, head, events (new since the last update);
//   - catchup: cursor and message; the client re-syncs by track from cursor;
//   - heartbeat: cursor and time;
//   - error: code and message, then the stream ends;
//   - status: number, code, message and retry_after: the node's answer
//     for a watched number it has no parcel for, at the start of a
//     subscription; the subscription goes on, for that number too.
//
// The struct holds the union of the types' fields: a key outside it is
// unknown_field, a known key of another type invalid_record (spec 8.5).
type WatchMessage struct {
	Type    string   `cbor:"type"`
	Cursor  string   `cbor:"cursor,omitempty"`
	Number  string   `cbor:"number,omitempty"`
	Head    []byte   `cbor:"head,omitempty"`
	Events  [][]byte `cbor:"events,omitempty"`
	Details Details  `cbor:"details,omitempty"`
	// DetailsError is why an update the grant covers has no details, as
	// in TrackResult.
	DetailsError string `cbor:"details_error,omitempty"`
	Time         int64  `cbor:"time,omitempty"`
	Code         string `cbor:"code,omitempty"`
	Message      string `cbor:"message,omitempty"`
	// RetryAfter is in ms, with a status of rate_limited.
	RetryAfter uint64 `cbor:"retry_after,omitempty"`
}

// Validate checks that a watch message has the fields its type needs.
func (m *WatchMessage) Validate() error {
	if len(m.Cursor) > MaxCursorLen || len(m.Message) > MaxMessageLen {
		return fmt.Errorf("%w: cursor or message too long", ErrTooLarge)
	}
	data := m.Number != "" || len(m.Head) > 0 || len(m.Events) > 0 || len(m.Details) > 0 || m.DetailsError != ""
	if m.RetryAfter != 0 && m.Type != WatchStatus {
		return fmt.Errorf("%w: retry_after outside a status", ErrInvalid)
	}
	switch m.Type {
	case WatchUpdate:
		if m.Cursor == "" || m.Number == "" || len(m.Head) == 0 || len(m.Events) == 0 {
			return fmt.Errorf("%w: update needs cursor, number, head and events", ErrInvalid)
		}
		if m.Time != 0 || m.Code != "" || m.Message != "" {
			return fmt.Errorf("%w: update with fields of another message type", ErrInvalid)
		}
		if len(m.Events) > MaxEventsPerResult {
			return fmt.Errorf("%w: %d events in one update", ErrTooLarge, len(m.Events))
		}
		if len(m.Details) > 0 {
			if err := m.Details.Validate(); err != nil {
				return err
			}
		}
		if err := checkDetailsError(m.DetailsError, m.Details); err != nil {
			return err
		}
	case WatchCatchUp:
		if m.Cursor == "" || data || m.Time != 0 || m.Code != "" {
			return fmt.Errorf("%w: catchup carries a cursor and a message only", ErrInvalid)
		}
	case WatchHeartbeat:
		if m.Cursor == "" || m.Time < MinEventTime || data || m.Code != "" || m.Message != "" {
			return fmt.Errorf("%w: heartbeat carries a cursor and a time only", ErrInvalid)
		}
	case WatchError:
		if m.Code == "" || data || m.Cursor != "" || m.Time != 0 {
			return fmt.Errorf("%w: error carries a code and a message only", ErrInvalid)
		}
	case WatchStatus:
		if !isNormalizedNumber(m.Number) || m.Code == "" || m.Code == CodeOK {
			return fmt.Errorf("%w: status needs a normalized number and a code other than ok", ErrInvalid)
		}
		if m.Cursor != "" || len(m.Head) > 0 || len(m.Events) > 0 || len(m.Details) > 0 || m.DetailsError != "" || m.Time != 0 {
			return fmt.Errorf("%w: status carries a number, a code, a message and retry_after only", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: unknown watch message type %q", ErrInvalid, m.Type)
	}
	return nil
}

// InfoRequest opens the info protocol. A requester that names the registry
// sequence it holds receives a newer signed registry, if the node has one.
type InfoRequest struct {
	RegistrySeq uint64 `cbor:"registry_seq,omitempty"`
}

// Info describes a node: who it serves, what it speaks and its limits.
type Info struct {
	Carrier     string   `cbor:"carrier,omitempty"` // empty on a platform node
	Version     string   `cbor:"version"`
	Protocols   []string `cbor:"protocols"`
	Limits      Limits   `cbor:"limits"`
	RegistrySeq uint64   `cbor:"registry_seq"`
	Keys        [][]byte `cbor:"keys,omitempty"`     // the carrier's current public keys, a hint only
	Registry    []byte   `cbor:"registry,omitempty"` // signed registry, when newer than the requester's
}

// Limits advertises the caps a node enforces.
type Limits struct {
	MaxNumbers      uint64 `cbor:"max_numbers"`
	MaxWatchNumbers uint64 `cbor:"max_watch_numbers"`
	MaxRequest      uint64 `cbor:"max_request"`
	MaxResponse     uint64 `cbor:"max_response"`
}

// DefaultLimits are the limits of this implementation.
func DefaultLimits() Limits {
	return Limits{
		MaxNumbers:      MaxNumbersPerRequest,
		MaxWatchNumbers: MaxWatchNumbers,
		MaxRequest:      MaxTrackRequest,
		MaxResponse:     MaxTrackResponse,
	}
}

// Validate checks an Info from a peer.
func (i *Info) Validate() error {
	if i.Carrier != "" {
		if err := ValidCarrierCode(i.Carrier); err != nil {
			return err
		}
	}
	if len(i.Version) > 64 || len(i.Protocols) > 32 || len(i.Keys) > 16 {
		return fmt.Errorf("%w: info fields too long", ErrTooLarge)
	}
	for _, p := range i.Protocols {
		if len(p) > 128 || !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%w: protocol ID %q", ErrInvalid, p)
		}
	}
	for _, k := range i.Keys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: key of %d bytes", ErrInvalid, len(k))
		}
	}
	if i.Limits.MaxNumbers == 0 || i.Limits.MaxRequest == 0 || i.Limits.MaxResponse == 0 {
		return fmt.Errorf("%w: limits must be positive", ErrInvalid)
	}
	return nil
}
