// Package deadline renews stream deadlines lazily, for the services and
// the client alike.
package deadline

import "time"

// Slack bounds how far past its period a deadline renewed by Renew may
// fall: by at most a tenth of the period.
const Slack = 10

// Renew re-arms the deadline *at for period from now when less than
// period is left, a little further out, and reports whether *at changed;
// the caller then sets the stream's deadline to *at. A busy stream so
// sets a deadline every period/Slack rather than on every request: yamux
// allocates a timer for each deadline set, and at tens of thousands of
// requests a second that showed in the profiles. The deadline falls
// between period and period*(1+1/Slack) after the last renewal.
func Renew(at *time.Time, now time.Time, period time.Duration) bool {
	if at.Sub(now) >= period {
		return false
	}
	*at = now.Add(period + period/Slack)
	return true
}
