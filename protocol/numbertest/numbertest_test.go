package numbertest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/protocol/numbertest"
)

func compile(t *testing.T, s string) *protocol.CompiledScheme {
	t.Helper()
	sc, err := protocol.ParseScheme(s)
	require.NoError(t, err)
	c, err := protocol.CompileScheme(sc)
	require.NoError(t, err)
	return c
}

func TestNumber(t *testing.T) {
	c, err := protocol.CompileScheme(numbertest.Scheme)
	require.NoError(t, err)
	for _, i := range []int{0, 1, 42, 9_999_999_999} {
		require.NoError(t, c.Check(numbertest.Number(i)), "%d", i)
	}
	require.Equal(t, "770000000042", numbertest.Number(42))
	require.NotEqual(t, numbertest.Number(1), numbertest.Number(2))
}

func TestS10(t *testing.T) {
	// The UPU's example: serial 12345678 has check digit 5.
	require.Equal(t, "RR123456785GB", numbertest.S10("RR", 12345678, "GB"))
	gb := compile(t, "s10:GB")
	for _, serial := range []int{0, 1, 10158380, 10047514, 99_999_999} {
		n := numbertest.S10("RB", serial, "GB")
		require.NoError(t, gb.Check(n), n)
	}
	require.Error(t, gb.Check(numbertest.S10("RB", 100_000_000, "GB")), "a ninth serial digit")
	require.Panics(t, func() { numbertest.S10("RB", -1, "GB") })
}

func TestComplete(t *testing.T) {
	cases := []struct {
		algo       protocol.CheckAlgo
		data, want string
		scheme     string
	}{
		{protocol.CheckMod10, "400638133393", "4006381333931", `\d{13}:mod10`},
		{protocol.CheckLuhn, "7992739871", "79927398713", `\d{11}:luhn`},
		{protocol.CheckLuhn, "XP00000001", "XP000000018", `XP\d{9}:luhn`},
		{protocol.CheckMod7, "123456789", "1234567891", `\d{10}:mod7`},
		{protocol.CheckNone, "SF0000000001", "SF0000000001", `SF\d{10}`},
	}
	for _, tc := range cases {
		got, err := numbertest.Complete(tc.algo, tc.data)
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
		require.NoError(t, compile(t, tc.scheme).Check(got), "%s in %s", got, tc.scheme)
	}
	_, err := numbertest.Complete(protocol.CheckLuhn, "XP")
	require.ErrorIs(t, err, protocol.ErrInvalidNumber, "no digits to check")
	_, err = numbertest.Complete("crc32", "123")
	require.ErrorIs(t, err, protocol.ErrInvalid)
}
