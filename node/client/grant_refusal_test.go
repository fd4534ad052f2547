package client

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// TestWithoutRefusedGrant: a grant the node refuses for the whole request
// costs the details, not the public view: the request is made again
// without it and the refusal is kept for the views. Other answers are
// taken as they are.
func TestWithoutRefusedGrant(t *testing.T) {
	ok := &protocol.TrackResponse{Results: []protocol.TrackResult{{Number: "SF1", Code: protocol.CodeOK}}}
	refuse := &protocol.TrackResponse{Error: &protocol.ErrorInfo{Code: protocol.CodeForbidden, Message: "grant g1 is revoked"}}
	limited := &protocol.TrackResponse{Error: &protocol.ErrorInfo{Code: protocol.CodeRateLimited}}
	for _, tc := range []struct {
		name    string
		grant   []byte
		answer  *protocol.TrackResponse // to a request with the grant
		calls   int
		refused *grantRefusal
		want    *protocol.TrackResponse
	}{
		{"no grant", nil, ok, 1, nil, ok},
		{"grant accepted", []byte{1}, ok, 1, nil, ok},
		{"grant refused", []byte{1}, refuse, 2, &grantRefusal{code: protocol.CodeForbidden, msg: "grant g1 is revoked"}, ok},
		{"rate limited", []byte{1}, limited, 1, nil, limited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent [][]byte
			resp, refused, err := withoutRefusedGrant(tc.grant, func(g []byte) (*protocol.TrackResponse, error) {
				sent = append(sent, g)
				if len(g) > 0 {
					return tc.answer, nil
				}
				return ok, nil
			})
			require.NoError(t, err)
			require.Len(t, sent, tc.calls, "requests sent: %v", sent)
			if tc.calls == 2 {
				require.Empty(t, sent[1], "the second request still carried the grant")
			}
			require.Equal(t, tc.refused, refused)
			require.Equal(t, tc.want, resp)

			pv := ParcelView{Found: true}
			refused.mark(&pv)
			if tc.refused != nil {
				require.Equal(t, protocol.CodeForbidden, pv.DetailsError)
				require.Equal(t, "grant g1 is revoked", pv.DetailsMessage)
			} else {
				require.Empty(t, pv.DetailsError)
			}
		})
	}
}
