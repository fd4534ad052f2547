package protocol

import "time"

// Protocol IDs. The major version is part of the ID; a breaking change
// gets a new ID and nodes may serve both.
const (
	TrackID = "/opentrack/track/1.0.0"
	WatchID = "/opentrack/watch/1.0.0"
	InfoID  = "/opentrack/info/1.0.0"
)

// Resource-manager service names, one per protocol ID. A stream handler
// or a client attaches its stream with s.Scope().SetService(name), and
// the node's host bounds each service (node/host Options.Limits).
const (
	TrackServiceName = "opentrack.track"
	WatchServiceName = "opentrack.watch"
	InfoServiceName  = "opentrack.info"
)

// Frame caps per direction. A reader rejects a larger length prefix before
// it reads the body; a writer refuses to send one.
const (
	MaxTrackRequest  = 64 << 10
	MaxTrackResponse = 4 << 20
	MaxWatchRequest  = 1 << 20 // a subscription of MaxWatchNumbers numbers
	MaxWatchFrame    = 4 << 20
	MaxInfoRequest   = 1 << 10
	MaxInfoResponse  = MaxRegistrySize + 64<<10
)

// Request limits.
const (
	MaxNumbersPerRequest = 100
	MaxWatchNumbers      = 10000
	MaxEventsPerResult   = 1000 // a longer history is paged by known head
	MaxCursorLen         = 128
	MaxMessageLen        = 256 // human-readable error text
)

// Timeouts a server applies. A client should use shorter ones.
const (
	StreamIdleTimeout = 60 * time.Second // track: idle between requests
	RequestTimeout    = 10 * time.Second // reading one request once it began
	HeartbeatInterval = 15 * time.Second // watch: server heartbeat
	WatchIdleTimeout  = 3 * HeartbeatInterval
)

// Result codes of a track result, a track response and a watch error.
const (
	CodeOK            = "ok"
	CodeNotFound      = "not_found"
	CodeInvalidNumber = "invalid_number"
	CodeForbidden     = "forbidden"
	CodeRateLimited   = "rate_limited"
	CodeBadRequest    = "bad_request"
	CodeTooMany       = "too_many"
	CodeUnknownCursor = "unknown_cursor"
	CodeInternal      = "internal"
	CodeUnavailable   = "unavailable"
	CodeWrongCarrier  = "wrong_carrier"
)

// Details error codes: why a result or update that a valid grant covers
// carries no details (spec section 12.2). A receiver treats one it does
// not know as details withheld.
const (
	// DetailsExpired says the parcel's details passed the carrier's
	// retention and were erased.
	DetailsExpired = "expired"
	// MaxDetailsErrorLen bounds a details error code.
	MaxDetailsErrorLen = 32
)

// resultCodes holds every result code, for ValidResultCode.
var resultCodes = map[string]bool{
	CodeOK: true, CodeNotFound: true, CodeInvalidNumber: true, CodeForbidden: true,
	CodeRateLimited: true, CodeBadRequest: true, CodeTooMany: true, CodeUnknownCursor: true,
	CodeInternal: true, CodeUnavailable: true, CodeWrongCarrier: true,
}

// ValidResultCode reports whether code is defined by this version. A
// receiver treats an unknown code as an error result, not as malformed.
func ValidResultCode(code string) bool { return resultCodes[code] }
