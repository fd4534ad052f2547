package protocol

import "time"

// FormatTime writes a record time (Unix ms) as RFC 3339 in UTC, with the
// milliseconds when there are any, for messages people read.
func FormatTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
