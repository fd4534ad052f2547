package host

import "time"

// DeadlineSlack bounds how far past its period a deadline renewed by
// RenewDeadline may fall: by at most a tenth of the period.
const DeadlineSlack = 10

// RenewDeadline re-arms the deadline *at for period from now when less
// than period is left, a little further out, and reports whether *at
// changed; the caller then sets the stream's deadline to *at. A busy
// stream so sets a deadline every period/DeadlineSlack rather than on
// every request: yamux allocates a timer for each deadline set, and at
// tens of thousands of requests a second that showed in the profiles. The
// deadline falls between period and period*(1+1/DeadlineSlack) after the
// last renewal.
func RenewDeadline(at *time.Time, now time.Time, period time.Duration) bool {
	if at.Sub(now) >= period {
		return false
	}
	*at = now.Add(period + period/DeadlineSlack)
	return true
}
