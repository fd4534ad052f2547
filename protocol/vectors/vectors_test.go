package vectors

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

const path = "../../spec/vectors/vectors.json"

// TestFileIsCurrent fails when vectors.json differs from what Generate
// produces now: run `make vectors` and review the diff.
func TestFileIsCurrent(t *testing.T) {
	f, err := Generate()
	require.NoError(t, err)
	want, err := Encode(f)
	require.NoError(t, err)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "spec/vectors/vectors.json is stale: run make vectors")
}

func TestGenerateDeterministic(t *testing.T) {
	a, err := Generate()
	require.NoError(t, err)
	b, err := Generate()
	require.NoError(t, err)
	require.Equal(t, a, b)
}

// TestEveryVector checks each vector in the committed file against this
// implementation, by the rules an independent implementation follows.
func TestEveryVector(t *testing.T) {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	f, err := Decode(b)
	require.NoError(t, err)
	var valid, invalid int
	for i := range f.Vectors {
		v := &f.Vectors[i]
		t.Run(v.Name, func(t *testing.T) { require.NoError(t, Check(v)) })
		if v.Valid {
			valid++
		} else {
			invalid++
			require.NotEmpty(t, v.Error, v.Name)
		}
	}
	require.GreaterOrEqual(t, valid+invalid, 30)
	require.GreaterOrEqual(t, invalid, 10)
}
