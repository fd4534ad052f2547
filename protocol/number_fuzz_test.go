package protocol

import (
	"errors"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	normalizedRE = regexp.MustCompile(`^[A-Z0-9]{4,40}$`)
	s10RE        = regexp.MustCompile(`^[A-Z]{2}[0-9]{8}[0-9][A-Z]{2}$`)
)

// FuzzNormalizeAndMatch feeds arbitrary numbers and patterns through the
// whole number pipeline. Besides "never panics" it checks that
// normalization is idempotent and that the matcher reads every accepted
// pattern exactly as RE2 does, which is what the spec promises other
// implementations.
func FuzzNormalizeAndMatch(f *testing.F) {
	for _, seed := range []struct{ number, pattern string }{
		{"RB123456785GB", `[A-Z]{2}\d{9}[A-Z]{2}`},
		{"rb 123 456 786 gb", `[A-Z0-9]{0,5}\d{4}`},
		{"1z-999.aa1/01_23 4567 84", `1Z[A-Z0-9]{16}`},
		{"036000291452", `\d{12}`},
		{"4006381333931", `\d{1,12}\d`},
		{"DHL1234567890", `DHL\d{10,20}`},
		{"1234É5", `A{0,3}[A-Z]{1,3}\d{2,4}`},
		{"12*34", `\d{1, 2}`},
		{"", ""},
		{"0000000000000000000000000000000000000000", `0{0,40}\d{4}`},
	} {
		f.Add(seed.number, seed.pattern)
	}
	fixed := []*CompiledScheme{
		mustCompile(f, Scheme{Kind: SchemeS10, Countries: []string{"GB", "FR"}}),
		mustCompile(f, Scheme{Kind: SchemeS10, Countries: []string{"GB"}, Products: []string{"R", "CP"}}),
		mustCompile(f, Scheme{Kind: SchemePattern, Pattern: `\d{12}`, Check: CheckMod10}),
		mustCompile(f, Scheme{Kind: SchemePattern, Pattern: `[A-Z0-9]{0,30}\d{4}`, Check: CheckLuhn}),
		mustCompile(f, Scheme{Kind: SchemePattern, Pattern: `[A-Z]{0,4}\d{2,30}`, Check: CheckMod11}),
		mustCompile(f, Scheme{Kind: SchemePattern, Pattern: `\d{4,40}`, Check: CheckMod7}),
		mustCompile(f, DefaultScheme("DHL")),
	}

	f.Fuzz(func(t *testing.T, raw, pattern string) {
		n, err := NormalizeNumber(raw)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidNumber)
			n = raw // still feed it to the matchers: Check must not trust its input
		} else {
			require.Regexp(t, normalizedRE, n)
			again, err := NormalizeNumber(n)
			require.NoError(t, err)
			require.Equal(t, n, again, "normalization is idempotent")
		}

		if err := ValidS10(n); err == nil || errors.Is(err, ErrCheckDigit) {
			require.Regexp(t, s10RE, n)
		} else {
			require.ErrorIs(t, err, ErrInvalidNumber)
			require.NotRegexp(t, s10RE, n)
		}

		matched := MatchSchemes(n, fixed)
		for i, c := range fixed {
			err := c.Check(n)
			if err != nil {
				require.True(t, errors.Is(err, ErrNoMatch) || errors.Is(err, ErrCheckDigit), "%v", err)
			}
			require.Equal(t, err == nil, slices.Contains(matched, i))
		}

		c, err := CompileScheme(Scheme{Kind: SchemePattern, Pattern: pattern})
		if err != nil {
			require.ErrorIs(t, err, ErrInvalid)
			return
		}
		re := patternRegexp(t, pattern)
		for _, in := range []string{raw, n} {
			want := re.MatchString(in) && len(in) <= MaxNumberLen
			require.Equal(t, want, c.matchPattern(in), "pattern %q on %q", pattern, in)
		}
	})
}
