package protocol

import (
	"math/big"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// patternRegexp is the reference reading of a pattern that the spec gives
// other implementations; the hand-rolled matcher must agree with it.
func patternRegexp(t testing.TB, p string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile("^(?:" + p + ")$")
	require.NoError(t, err, "a valid pattern must be valid RE2")
	return re
}

func mustCompile(t testing.TB, s Scheme) *CompiledScheme {
	t.Helper()
	c, err := CompileScheme(s)
	require.NoError(t, err)
	return c
}

func TestNormalizeNumber(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      string // substring of the error; "" means success
	}{
		{in: "RB123456785GB", want: "RB123456785GB"},
		{in: "rb123456785gb", want: "RB123456785GB"},
		{in: "  rb 123 456 785 gb\t", want: "RB123456785GB"},
		{in: "1z-999.aa1/01_23\t4567 84", want: "1Z999AA10123456784"},
		{in: "1234\n", want: "1234"},
		{in: "a-b-c-d", want: "ABCD"},
		{in: strings.Repeat("9", MaxNumberLen), want: strings.Repeat("9", MaxNumberLen)},
		{in: strings.Repeat("9-", MaxNumberLen), want: strings.Repeat("9", MaxNumberLen)},
		{in: "", err: "0 letters and digits"},
		{in: " - . ", err: "0 letters and digits"},
		{in: "abc", err: "3 letters and digits, need at least 4"},
		{in: "a b c", err: "need at least 4"},
		{in: strings.Repeat("9", MaxNumberLen+1), err: "more than 40"},
		{in: strings.Repeat("9 ", MaxNumberLen+1), err: "more than 40"},
		{in: "1234É5", err: `'É' at byte 4`},
		{in: "12*34", err: `'*' at byte 2`},
		{in: "12\n34", err: `'\n' at byte 2`},
		{in: "ＲＢ123456785GB", err: `'Ｒ'`}, // full-width letters are not ASCII
		{in: "1234\x00", err: `'\x00'`},
	} {
		got, err := NormalizeNumber(tc.in)
		if tc.err != "" {
			require.ErrorIs(t, err, ErrInvalidNumber, "%q", tc.in)
			require.ErrorContains(t, err, tc.err, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		require.Equal(t, tc.want, got)
		again, err := NormalizeNumber(got)
		require.NoError(t, err)
		require.Equal(t, got, again, "idempotent")
	}
}

func TestCheckDigit(t *testing.T) {
	for _, tc := range []struct {
		algo CheckAlgo
		data string
		want byte
	}{
		// GS1: published examples.
		{CheckMod10, "400638133393", '1'},   // EAN-13 4006381333931
		{CheckMod10, "03600029145", '2'},    // UPC-A 036000291452
		{CheckMod10, "978030640615", '7'},   // ISBN-13 978-0-306-40615-7
		{CheckMod10, "9638507", '4'},        // EAN-8 96385074
		{CheckMod10, "0", '0'},              // weights start at 3 on the right
		{CheckMod10, "1", '7'},              // 1×3 = 3, 10−3 = 7
		{CheckMod10, "10", '9'},             // 1×1 + 0×3 = 1
		{CheckLuhn, "7992739871", '3'},      // 79927398713
		{CheckLuhn, "411111111111111", '1'}, // test card 4111111111111111
		{CheckLuhn, "424242424242424", '2'}, // test card 4242424242424242
		{CheckLuhn, "5", '9'},               // 5×2 = 10 → 1, 10−1 = 9
		{CheckMod11, "12345678", '5'},       // UPU S10 example
		{CheckMod11, "47312482", '9'},       // UPU S10 example AA473124829GB
		{CheckMod11, "10158380", '0'},       // sum 133 ≡ 1: c = 10 → 0
		{CheckMod11, "10047514", '5'},       // sum 99 ≡ 0: c = 11 → 5
		{CheckMod11, "00000000", '5'},       // sum 0: c = 11 → 5
		{CheckMod11, "123456781", '8'},      // 9th digit cycles to weight 8: 212 ≡ 3, c = 8
		{CheckMod7, "331881002", '5'},       // 331881002 = 7×47411571 + 5
		{CheckMod7, "6", '6'},
		{CheckMod7, "7", '0'},
		{CheckMod7, "123456", '4'},               // 123456 = 7×17636 + 4
		{CheckMod7, "18446744073709551616", '2'}, // 2^64, beyond uint64
	} {
		got, err := CheckDigit(tc.algo, tc.data)
		require.NoError(t, err)
		require.Equal(t, string(tc.want), string(got), "%s(%s)", tc.algo, tc.data)
	}
}

func TestCheckDigitErrors(t *testing.T) {
	_, err := CheckDigit(CheckNone, "123")
	require.ErrorIs(t, err, ErrInvalid)
	_, err = CheckDigit("crc32", "123")
	require.ErrorIs(t, err, ErrInvalid)
	_, err = CheckDigit(CheckMod10, "")
	require.ErrorIs(t, err, ErrInvalidNumber)
	_, err = CheckDigit(CheckMod10, "12A4")
	require.ErrorIs(t, err, ErrInvalidNumber)
	require.True(t, CheckNone.Valid())
	require.True(t, CheckLuhn.Valid())
	require.False(t, CheckAlgo("MOD10").Valid())
}

// TestCheckMod7AgainstBigInt checks the digit-by-digit remainder against
// arbitrary-precision arithmetic on long inputs.
func TestCheckMod7AgainstBigInt(t *testing.T) {
	data := "0"
	for i := 0; i < 60; i++ {
		data += string(rune('0' + (i*7+3)%10))
		got, err := CheckDigit(CheckMod7, data)
		require.NoError(t, err)
		n, _ := new(big.Int).SetString(data, 10)
		want := new(big.Int).Mod(n, big.NewInt(7)).Int64()
		require.Equal(t, byte('0'+want), got, data)
	}
}

// TestCheckLuhnValidates checks CheckDigit against the validating form of
// Luhn: the full number, doubling from the second digit from the right,
// sums to a multiple of 10.
func TestCheckLuhnValidates(t *testing.T) {
	data := ""
	for i := 0; i < 40; i++ {
		data += string(rune('0' + (i*3+1)%10))
		c, err := CheckDigit(CheckLuhn, data)
		require.NoError(t, err)
		full, sum := data+string(c), 0
		for k := 0; k < len(full); k++ {
			d := int(full[len(full)-1-k] - '0')
			if k%2 == 1 {
				if d *= 2; d > 9 {
					d -= 9
				}
			}
			sum += d
		}
		require.Zero(t, sum%10, full)
	}
}

func TestValidS10(t *testing.T) {
	for _, tc := range []struct {
		n   string
		err error
	}{
		{"RB123456785GB", nil},
		{"AA473124829GB", nil}, // UPU S10 example
		{"RR101583800FR", nil}, // c = 10 → 0
		{"EE100475145US", nil}, // c = 11 → 5
		{"CP000000005DE", nil}, // sum 0: c = 11 → 5
		{"RB123456786GB", ErrCheckDigit},
		{"RR101583801FR", ErrCheckDigit}, // 10 is not written as a digit 1…
		{"EE100475140US", ErrCheckDigit}, // …and 11 is not 0
		{"RB12345678GB", ErrInvalidNumber},
		{"RB1234567855GB", ErrInvalidNumber},
		{"R1123456785GB", ErrInvalidNumber},
		{"RB123456785G1", ErrInvalidNumber},
		{"RB12345678AGB", ErrInvalidNumber},
		{"rb123456785gb", ErrInvalidNumber}, // must be normalized first
		{"", ErrInvalidNumber},
	} {
		err := ValidS10(tc.n)
		if tc.err == nil {
			require.NoError(t, err, tc.n)
		} else {
			require.ErrorIs(t, err, tc.err, tc.n)
		}
	}
	require.Equal(t, "GB", S10Country("RB123456786GB"), "country does not need a good check digit")
	require.Equal(t, "RB", S10Service("RB123456785GB"))
	require.Equal(t, "", S10Country("RB12345678GB"))
	require.Equal(t, "", S10Service("1Z999AA10123456784"))
}

func TestPatternGrammar(t *testing.T) {
	accept := []string{
		`\d{12}`,
		`\d{10,20}`,
		`1Z[A-Z0-9]{16}`,
		`[A-Z]{2}[0-9]{9}[A-Z]{2}`,
		`JJD\d{16,18}`,
		`0{0,3}\d{10}`,
		`ABCD`,
		`A{0,1}BCD`,
		`\d{40}`,
		`\d{40}\d{0,5}`,                     // longer than a number can be, but not only
		`[A-Z]{2}\d{1}\d{3,3}`,              // redundant but valid
		strings.Repeat(`[0-9]`, 25) + `ABC`, // exactly MaxPatternLen bytes
	}
	for _, p := range accept {
		_, err := CompileScheme(Scheme{Kind: SchemePattern, Pattern: p})
		require.NoError(t, err, p)
		patternRegexp(t, p)
	}
	reject := map[string]string{
		``:                                   "empty",
		`.`:                                  "not an atom",
		`\d+`:                                "not an atom",
		`\d*`:                                "not an atom",
		`\d?\d{4}`:                           "not an atom",
		`(AB)\d{10}`:                         "not an atom",
		`AB|CD\d{10}`:                        "not an atom",
		`^\d{10}$`:                           "not an atom",
		`\w{10}`:                             "not an atom",
		`\D{10}`:                             "not an atom",
		`[a-z]{10}`:                          "not an atom",
		`[0-9A-Z]{10}`:                       "not an atom",
		`[A-Z0-9]]{10}`:                      "not an atom",
		`abcd`:                               "not an atom",
		`\d{2}{3}`:                           "not an atom",
		`{3}\d{4}`:                           "not an atom",
		`AÉ\d{10}`:                           "not an atom",
		`\d{1, 2}\d{10}`:                     "not a number",
		`\d{,5}\d{10}`:                       "count \"\"",
		`\d{3,}\d{10}`:                       "count \"\"",
		`\d{0}\d{10}`:                        "m ≥ 1",
		`\d{0,0}\d{10}`:                      "m ≥ 1",
		`\d{5,3}\d{10}`:                      "n ≤ m",
		`\d{41}`:                             "exceeds 40",
		`\d{01}\d{10}`:                       "leading zeros",
		`\d{100}`:                            "count \"100\"",
		`\d{10`:                              "unterminated",
		`\d{30}\d{20}`:                       "never a number",
		`\d{3}`:                              "never a number",
		strings.Repeat(`A`, MaxPatternLen+1): "limit 128",
	}
	for p, msg := range reject {
		err := Scheme{Kind: SchemePattern, Pattern: p}.Validate()
		require.ErrorIs(t, err, ErrInvalid, p)
		require.ErrorContains(t, err, msg, p)
	}
}

func TestSchemeValidate(t *testing.T) {
	for _, s := range []Scheme{
		{Kind: SchemeS10, Countries: []string{"GB"}},
		{Kind: SchemeS10, Countries: []string{"GB", "FR"}, Products: []string{"R", "CP"}},
		{Kind: SchemePattern, Pattern: `\d{12}`, Check: CheckMod10},
		{Kind: SchemePattern, Pattern: `JJD\d{18}7`, Check: CheckLuhn}, // a literal digit may carry the check
		DefaultScheme("DHL"),
		DefaultScheme("ABCDEFGHIJKLMNOP"),
	} {
		require.NoError(t, s.Validate(), s.String())
	}

	err := Scheme{
		Kind: SchemeS10, Pattern: `\d{12}`, Check: CheckMod11,
		Countries: []string{"gb", "GB", "GB", "GBR"},
		Products:  []string{"", "ABC", "R", "R", "r"},
	}.Validate()
	require.ErrorIs(t, err, ErrInvalid)
	for _, msg := range []string{
		"takes no pattern", "takes no check",
		`country "gb"`, `country "GB" listed twice`, `country "GBR"`,
		`product ""`, `product "ABC"`, `product "R" listed twice`, `product "r"`,
	} {
		require.ErrorContains(t, err, msg)
	}
	require.ErrorContains(t, Scheme{Kind: SchemeS10}.Validate(), "at least one country")

	err = Scheme{Kind: SchemePattern, Pattern: `\d{12}`, Check: "crc", Countries: []string{"GB"}}.Validate()
	require.ErrorContains(t, err, `unknown check algorithm "crc"`)
	require.ErrorContains(t, err, "takes no countries")
	for _, p := range []string{`\d{10}[A-Z]`, `\d{10}\d{0,1}`, `\d{10}A`, `\d{10}[A-Z0-9]`} {
		err = Scheme{Kind: SchemePattern, Pattern: p, Check: CheckMod10}.Validate()
		require.ErrorContains(t, err, "must end in a digit atom", p)
	}
	require.ErrorContains(t, Scheme{Kind: "S10"}.Validate(), `unknown scheme kind "S10"`)
}

func TestParseScheme(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Scheme
	}{
		{"s10:GB", Scheme{Kind: SchemeS10, Countries: []string{"GB"}}},
		{"s10:GB,FR", Scheme{Kind: SchemeS10, Countries: []string{"GB", "FR"}}},
		{"s10:GB,FR:RR,C", Scheme{Kind: SchemeS10, Countries: []string{"GB", "FR"}, Products: []string{"RR", "C"}}},
		{`\d{12}`, Scheme{Kind: SchemePattern, Pattern: `\d{12}`}},
		{`\d{12}:mod10`, Scheme{Kind: SchemePattern, Pattern: `\d{12}`, Check: CheckMod10}},
		{`1Z[A-Z0-9]{16}`, Scheme{Kind: SchemePattern, Pattern: `1Z[A-Z0-9]{16}`}},
		{`JJD\d{18}:luhn`, Scheme{Kind: SchemePattern, Pattern: `JJD\d{18}`, Check: CheckLuhn}},
		{`\d{10}:mod7`, Scheme{Kind: SchemePattern, Pattern: `\d{10}`, Check: CheckMod7}},
		{`[A-Z]{2}\d{9}:mod11`, Scheme{Kind: SchemePattern, Pattern: `[A-Z]{2}\d{9}`, Check: CheckMod11}},
	} {
		got, err := ParseScheme(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
		require.Equal(t, tc.in, got.String(), "round trip")
	}
	for _, in := range []string{
		"", "s10:", "s10:gb", "s10:GB:", "s10:GB,", "s10:GB:RRR", "S10:GB",
		`\d{12}:crc`, `\d{12}:`, `\d{12}:MOD10`, `\d{12}:mod10:mod10`, "pattern:mod10",
		`[A-Z]{12}:mod10`,
	} {
		_, err := ParseScheme(in)
		require.ErrorIs(t, err, ErrInvalid, in)
	}
	def := DefaultScheme("DHL")
	require.Equal(t, `DHL\d{10,20}`, def.String())
	back, err := ParseScheme(def.String())
	require.NoError(t, err)
	require.Equal(t, def, back)
}

func TestSchemeCheck(t *testing.T) {
	upc := mustCompile(t, Scheme{Kind: SchemePattern, Pattern: `\d{12}`, Check: CheckMod10})
	require.NoError(t, upc.Check("036000291452"))
	require.ErrorIs(t, upc.Check("036000291453"), ErrCheckDigit)
	require.ErrorIs(t, upc.Check("03600029145"), ErrNoMatch)
	require.ErrorIs(t, upc.Check("03600029145A"), ErrNoMatch)

	// Letters are skipped when collecting the data digits.
	mixed := mustCompile(t, Scheme{Kind: SchemePattern, Pattern: `[A-Z]{2}\d{8}\d`, Check: CheckMod11})
	require.NoError(t, mixed.Check("RB123456785"))
	require.ErrorIs(t, mixed.Check("RB123456784"), ErrCheckDigit)
	ean := mustCompile(t, Scheme{Kind: SchemePattern, Pattern: `40[A-Z]{2}06381333\d{3}`, Check: CheckMod10})
	require.NoError(t, ean.Check("40XY06381333931"))
	require.ErrorIs(t, ean.Check("40XY06381333932"), ErrCheckDigit)

	s10 := mustCompile(t, Scheme{Kind: SchemeS10, Countries: []string{"GB", "FR"}, Products: []string{"R", "CP"}})
	require.NoError(t, s10.Check("RB123456785GB"))
	require.NoError(t, s10.Check("CP123456785FR"))
	require.ErrorIs(t, s10.Check("RB123456786GB"), ErrCheckDigit)
	require.ErrorIs(t, s10.Check("RB123456785US"), ErrNoMatch, "country")
	require.ErrorIs(t, s10.Check("CX123456785GB"), ErrNoMatch, "product")
	require.ErrorIs(t, s10.Check("RB12345678GB"), ErrNoMatch, "shape")
	require.Equal(t, "no_match", CodeOf(s10.Check("RB123456785US")))
}

func TestMatchSchemes(t *testing.T) {
	schemes := []Scheme{
		{Kind: SchemePattern, Pattern: `\d{12}`},                                    // 0
		{Kind: SchemePattern, Pattern: `\d{12}`, Check: CheckMod10},                 // 1
		{Kind: SchemeS10, Countries: []string{"GB"}},                                // 2
		{Kind: SchemeS10, Countries: []string{"GB", "FR"}, Products: []string{"R"}}, // 3
		{Kind: SchemePattern, Pattern: `[A-Z]{2}\d{9}[A-Z]{2}`},                     // 4
		DefaultScheme("DHL"),                             // 5
		{Kind: SchemePattern, Pattern: `[A-Z0-9]{4,40}`}, // 6: catch-all
	}
	var compiled []*CompiledScheme
	for _, s := range schemes {
		compiled = append(compiled, mustCompile(t, s))
	}
	for _, tc := range []struct {
		n    string
		want []int
	}{
		{"036000291452", []int{0, 1, 6}},
		{"036000291453", []int{0, 6}},
		{"RB123456785GB", []int{2, 3, 4, 6}},
		{"EE123456785GB", []int{2, 4, 6}},
		{"RB123456786GB", []int{4, 6}},
		{"RB123456785FR", []int{3, 4, 6}},
		{"DHL1234567890", []int{5, 6}},
		{"DHL123456789", []int{6}},
		{"XYZ", nil},
	} {
		require.Equal(t, tc.want, MatchSchemes(tc.n, compiled), tc.n)
	}
}

// TestMatcherAgreesWithRegexp checks the bit-parallel matcher against RE2
// on patterns whose atoms overlap, where a greedy matcher would go wrong.
func TestMatcherAgreesWithRegexp(t *testing.T) {
	patterns := []string{
		`[A-Z0-9]{0,5}\d{4}`,
		`A{0,3}[A-Z]{1,3}\d{2,4}`,
		`0{0,40}\d{4}`,
		`[A-Z]{0,2}\d{0,4}[A-Z0-9]{2}A`,
		`1Z[A-Z0-9]{16}`,
		`\d{1}\d{2,3}[0-9]{0,2}`,
		`A{1,2}A{1,2}A{1,2}A{1,2}`,
	}
	inputs := []string{
		"1234", "A1234", "AAAA1234", "ZZZZZ1234", "ZZZZZZ1234", "AAAA", "AAAAAAAA", "AAAAAAAAA",
		"AB12", "AB1234", "AB12345", "0000000001234", strings.Repeat("0", 44), "1Z999AA10123456784",
		"12ZZA", "1ZA", "ZZA", "12", "123456", "1234567", "A", "", "12\x003",
	}
	for _, p := range patterns {
		c := mustCompile(t, Scheme{Kind: SchemePattern, Pattern: p})
		re := patternRegexp(t, p)
		for _, in := range inputs {
			want := re.MatchString(in) && len(in) <= MaxNumberLen
			require.Equal(t, want, c.matchPattern(in), "%s on %q", p, in)
			require.Equal(t, want, c.Check(in) == nil, "%s on %q", p, in)
		}
	}
}

func BenchmarkS10(b *testing.B) {
	for b.Loop() {
		if ValidS10("RB123456785GB") != nil {
			b.Fatal("rejected")
		}
	}
}

// BenchmarkSchemeCheck compares Check with the hand-rolled matcher against
// the same test done with Go's regexp, the alternative implementation.
func BenchmarkSchemeCheck(b *testing.B) {
	for _, tc := range []struct {
		name string
		s    Scheme
		n    string
	}{
		{"upc", Scheme{Kind: SchemePattern, Pattern: `\d{12}`, Check: CheckMod10}, "036000291452"},
		{"ups", Scheme{Kind: SchemePattern, Pattern: `1Z[A-Z0-9]{16}`}, "1Z999AA10123456784"},
		{"default", DefaultScheme("DHL"), "DHL12345678901234"},
		{"overlap", Scheme{Kind: SchemePattern, Pattern: `[A-Z0-9]{0,20}\d{4,20}`}, "AB12345678901234567890"},
		{"s10", Scheme{Kind: SchemeS10, Countries: []string{"GB", "FR"}}, "RB123456785GB"},
	} {
		c := mustCompile(b, tc.s)
		require.NoError(b, c.Check(tc.n))
		b.Run(tc.name+"/Check", func(b *testing.B) {
			for b.Loop() {
				if c.Check(tc.n) != nil {
					b.Fatal("rejected")
				}
			}
		})
		if tc.s.Kind != SchemePattern {
			continue
		}
		b.Run(tc.name+"/nfa", func(b *testing.B) {
			for b.Loop() {
				if !c.matchPattern(tc.n) {
					b.Fatal("rejected")
				}
			}
		})
		re := patternRegexp(b, tc.s.Pattern)
		b.Run(tc.name+"/regexp", func(b *testing.B) {
			for b.Loop() {
				if !re.MatchString(tc.n) {
					b.Fatal("rejected")
				}
			}
		})
	}
}
