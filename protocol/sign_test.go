package protocol

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/veraison/go-cose"
)

// goCOSESign is how Signer.Sign once built its messages, with go-cose.
func goCOSESign(t *testing.T, s *Signer, contentType string, payload []byte) []byte {
	t.Helper()
	cs, err := cose.NewSigner(cose.AlgorithmEdDSA, s.key)
	require.NoError(t, err)
	msg := cose.Sign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm:   cose.AlgorithmEdDSA,
				cose.HeaderLabelContentType: contentType,
				cose.HeaderLabelKeyID:       s.kid,
			},
			Unprotected: cose.UnprotectedHeader{},
		},
		Payload: payload,
	}
	require.NoError(t, msg.Sign(rand.Reader, nil, cs))
	b, err := msg.MarshalCBOR()
	require.NoError(t, err)
	return b
}

// TestSignMatchesGoCOSE: Sign lays out COSE_Sign1 by hand; the bytes must
// be go-cose's, for every statement kind and every length of CBOR head.
func TestSignMatchesGoCOSE(t *testing.T) {
	s := testSigner(t, 1)
	for _, ct := range []string{ContentHead, ContentRegistry, ContentGrant, "a/b"} {
		for _, n := range []int{0, 1, 23, 24, 255, 256, 1000, 65535, 65536, 70000} {
			t.Run(fmt.Sprintf("%q/%d", ct, n), func(t *testing.T) {
				payload := make([]byte, n)
				_, _ = rand.Read(payload)
				got, err := s.Sign(ct, payload)
				require.NoError(t, err)
				require.Equal(t, goCOSESign(t, s, ct, payload), got)
				if max, ok := maxSigned[ct]; ok && n <= max-100 {
					parsed, err := ParseSigned(got, ct)
					require.NoError(t, err)
					require.NoError(t, parsed.Verify(s.Public()))
				}
			})
		}
	}
	_, err := s.Sign(ContentHead, nil)
	require.ErrorIs(t, err, cose.ErrMissingPayload)
	for _, ct := range []string{"", "x", "a/b/c", " a/b", "a/b "} {
		_, err := s.Sign(ct, []byte{1})
		require.Error(t, err, "content type %q", ct)
	}
}
