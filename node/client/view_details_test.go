package client

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// TestViewDetailsError: a result's details error reaches the view with a
// message that says what it means; a result with details has none.
func TestViewDetailsError(t *testing.T) {
	for _, tc := range []struct {
		name, code, want string
	}{
		{"expired", protocol.DetailsExpired, "the details passed the carrier's retention and were erased"},
		{"unknown code", "on_hold", "the node withholds the details (on_hold)"},
		{"none", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &protocol.TrackResult{Number: "SF1", Code: protocol.CodeOK, DetailsError: tc.code}
			pv := View("SF1", "SF", res, &Verified{Head: &protocol.SignedHead{}}, nil)
			require.Equal(t, tc.code, pv.DetailsError)
			require.Equal(t, tc.want, pv.DetailsMessage)
			require.Empty(t, pv.Error)
		})
	}
}
