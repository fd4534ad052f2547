package deadline

import (
	"testing"
	"time"
)

func TestRenew(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const period = 10 * time.Second
	var at time.Time
	if !Renew(&at, now, period) {
		t.Fatal("an unset deadline is not renewed")
	}
	if want := now.Add(period + period/Slack); !at.Equal(want) {
		t.Fatalf("at = %v, want %v", at, want)
	}
	// Within the slack, more than period is left: no change.
	if Renew(&at, now.Add(period/Slack/2), period) {
		t.Fatal("renewed with more than period left")
	}
	// Past the slack, less than period is left: renewed from then.
	later := now.Add(period/Slack + time.Millisecond)
	if !Renew(&at, later, period) {
		t.Fatal("not renewed with less than period left")
	}
	if want := later.Add(period + period/Slack); !at.Equal(want) {
		t.Fatalf("at = %v, want %v", at, want)
	}
}
