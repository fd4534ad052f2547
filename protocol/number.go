package protocol

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"
)

// Tracking-number limits. Every number on the wire is normalized first, so
// these bound the normalized form: long enough for any carrier format in
// use, short enough that a number fits one machine word of match state.
const (
	MinNumberLen = 4
	MaxNumberLen = 40
)

// Scheme kinds, the values of Scheme.Kind.
const (
	SchemeS10     = "s10"
	SchemePattern = "pattern"
)

// Pattern limits. They keep a registry entry small and make every pattern
// one that RE2, ECMAScript and PCRE compile and interpret the same way.
const (
	MaxPatternLen   = 128 // bytes
	MaxPatternCount = 40  // largest n or m in a {n} or {n,m} quantifier
)

// ErrNoMatch reports that a number is well formed but is not one the
// scheme's carrier issues, so a client should try the next carrier.
var ErrNoMatch = &Error{Code: "no_match", Msg: "number does not match scheme"}

// NormalizeNumber returns the canonical form of a tracking number as people
// type it, so that labels, emails and the wire agree byte for byte.
//
// It trims ASCII space, tab, CR and LF at both ends, upper-cases ASCII
// letters and removes the separators space, tab, '-', '.', '/' and '_'
// wherever they stand. Any other character, Unicode
// white space included, is an error: the set is exact so that every
// implementation normalizes alike. What is left must be MinNumberLen to
// MaxNumberLen characters of [A-Z0-9].
func NormalizeNumber(s string) (string, error) {
	if isNormalizedNumber(s) {
		return s, nil
	}
	s = strings.Trim(s, " \t\r\n")
	out := make([]byte, 0, min(len(s), MaxNumberLen+1))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c == ' ' || c == '\t' || c == '-' || c == '.' || c == '/' || c == '_':
			continue
		default:
			r, _ := utf8.DecodeRuneInString(s[i:])
			return "", fmt.Errorf("%w: character %q at byte %d is not a letter, digit or separator", ErrInvalidNumber, r, i)
		}
		if len(out) == MaxNumberLen {
			return "", fmt.Errorf("%w: more than %d letters and digits", ErrInvalidNumber, MaxNumberLen)
		}
		out = append(out, c)
	}
	if len(out) < MinNumberLen {
		return "", fmt.Errorf("%w: %d letters and digits, need at least %d", ErrInvalidNumber, len(out), MinNumberLen)
	}
	return string(out), nil
}

// isNormalizedNumber is the allocation-free fast path for input that is
// already canonical, which is all input coming off the wire.
func isNormalizedNumber(s string) bool {
	if len(s) < MinNumberLen || len(s) > MaxNumberLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && !isUpper(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }

// CheckAlgo names a check-digit algorithm. The names are part of the
// registry format, so they never change meaning.
type CheckAlgo string

// Check-digit algorithms. Each computes one decimal digit over a string of
// data digits; the doc comment of each is the normative definition.
const (
	// CheckNone means the number carries no check digit.
	CheckNone CheckAlgo = ""
	// CheckMod10 is the GS1 algorithm of EAN, UPC and SSCC: weights 3, 1,
	// 3, 1, … starting from the rightmost data digit, which gets 3; the
	// check digit is (10 − sum mod 10) mod 10. EAN-13 4006381333931 has
	// data 400638133393 and check digit 1.
	CheckMod10 CheckAlgo = "mod10"
	// CheckMod11 is the UPU S10 algorithm generalised to any length:
	// weights 8, 6, 4, 2, 3, 5, 9, 7 from the leftmost data digit, cycling
	// after the eighth; c = 11 − (sum mod 11), then 10 becomes 0 and 11
	// becomes 5. S10 serial 12345678 has check digit 5.
	CheckMod11 CheckAlgo = "mod11"
	// CheckMod7 reads the data digits as one decimal integer and takes it
	// modulo 7, as DHL Express waybills do. Any length is allowed.
	CheckMod7 CheckAlgo = "mod7"
	// CheckLuhn is the Luhn algorithm (ISO/IEC 7812-1): from the rightmost
	// data digit, every other digit starting with that one is doubled and
	// 9 subtracted when the result exceeds 9; the check digit is (10 − sum
	// mod 10) mod 10. 79927398713 has data 7992739871 and check digit 3.
	CheckLuhn CheckAlgo = "luhn"
)

// Valid reports whether a is an algorithm this version knows, so that a
// registry entry naming a future algorithm is rejected, not ignored.
func (a CheckAlgo) Valid() bool {
	switch a {
	case CheckNone, CheckMod10, CheckMod11, CheckMod7, CheckLuhn:
		return true
	}
	return false
}

// CheckDigit returns the check digit ('0' to '9') that algorithm a appends
// to data, a non-empty string of decimal digits.
func CheckDigit(a CheckAlgo, data string) (byte, error) {
	if a == CheckNone || !a.Valid() {
		return 0, fmt.Errorf("%w: no check-digit algorithm %q", ErrInvalid, a)
	}
	if data == "" {
		return 0, fmt.Errorf("%w: no data digits to compute a check digit over", ErrInvalidNumber)
	}
	for i := 0; i < len(data); i++ {
		if !isDigit(data[i]) {
			return 0, fmt.Errorf("%w: check-digit data %q is not all digits", ErrInvalidNumber, data)
		}
	}
	return checkDigit(a, data), nil
}

var mod11Weights = [8]int{8, 6, 4, 2, 3, 5, 9, 7}

// checkDigit computes the check digit of a (not CheckNone) over the digits
// of s, skipping every other byte, so that a pattern number's letters need
// no copy to strip them.
func checkDigit(a CheckAlgo, s string) byte {
	sum := 0
	switch a {
	case CheckMod10, CheckLuhn:
		k := 0 // position of the digit counted from the right, from 0
		for i := len(s) - 1; i >= 0; i-- {
			if !isDigit(s[i]) {
				continue
			}
			d := int(s[i] - '0')
			switch {
			case a == CheckMod10 && k%2 == 0:
				d *= 3
			case a == CheckLuhn && k%2 == 0:
				if d *= 2; d > 9 {
					d -= 9
				}
			}
			sum = (sum + d) % 10
			k++
		}
		return byte('0' + (10-sum)%10)
	case CheckMod11:
		k := 0
		for i := 0; i < len(s); i++ {
			if isDigit(s[i]) {
				sum = (sum + int(s[i]-'0')*mod11Weights[k%len(mod11Weights)]) % 11
				k++
			}
		}
		switch c := 11 - sum; c {
		case 10:
			return '0'
		case 11:
			return '5'
		default:
			return byte('0' + c)
		}
	case CheckMod7:
		for i := 0; i < len(s); i++ {
			if isDigit(s[i]) {
				sum = (sum*10 + int(s[i]-'0')) % 7
			}
		}
		return byte('0' + sum)
	}
	panic("protocol: checkDigit called with " + string(a))
}

// ValidS10 checks a normalized UPU S10 item identifier: 2-letter service
// indicator, 8-digit serial, mod11 check digit, ISO 3166-1 country of
// origin. It returns ErrInvalidNumber for a wrong shape and ErrCheckDigit
// for a wrong check digit, so callers can tell typos from foreign numbers.
func ValidS10(n string) error {
	if !isS10Shape(n) {
		return fmt.Errorf("%w: %q is not an S10 identifier (2 letters, 9 digits, 2 letters)", ErrInvalidNumber, n)
	}
	if want := checkDigit(CheckMod11, n[2:10]); n[10] != want {
		return fmt.Errorf("%w: S10 %q has check digit %c, want %c", ErrCheckDigit, n, n[10], want)
	}
	return nil
}

// S10Country returns the origin country of an S10 identifier, or "" when n
// does not have the S10 shape.
func S10Country(n string) string {
	if !isS10Shape(n) {
		return ""
	}
	return n[11:]
}

// S10Service returns the 2-letter service indicator of an S10 identifier
// (its first letter names the postal product, e.g. R for registered), or
// "" when n does not have the S10 shape.
func S10Service(n string) string {
	if !isS10Shape(n) {
		return ""
	}
	return n[:2]
}

func isS10Shape(n string) bool {
	if len(n) != 13 || !isUpperAlpha(n[:2], 2) || !isUpperAlpha(n[11:], 2) {
		return false
	}
	for i := 2; i < 11; i++ {
		if !isDigit(n[i]) {
			return false
		}
	}
	return true
}

// Scheme describes the tracking numbers one carrier issues. It is a record
// in the signed registry, so clients route a number to a carrier without
// asking anyone.
type Scheme struct {
	Kind      string    `cbor:"kind" json:"kind"`                               // SchemeS10 or SchemePattern
	Pattern   string    `cbor:"pattern,omitempty" json:"pattern,omitempty"`     // kind pattern only; see CompileScheme for the language
	Check     CheckAlgo `cbor:"check,omitempty" json:"check,omitempty"`         // kind pattern only; the last character is the check digit
	Countries []string  `cbor:"countries,omitempty" json:"countries,omitempty"` // kind s10: origin country codes this operator issues (the 2 trailing letters)
	Products  []string  `cbor:"products,omitempty" json:"products,omitempty"`   // kind s10, optional: allowed service indicators, 1 letter (prefix) or 2 letters
}

// DefaultScheme is the scheme of a carrier that registers none: its code
// followed by 10 to 20 digits. Two defaults can overlap when one code is a
// prefix of the other followed by digits (SF and SF1); resolution then
// asks both carriers. code must be a valid carrier code.
func DefaultScheme(carrierCode string) Scheme {
	return Scheme{Kind: SchemePattern, Pattern: carrierCode + `\d{10,20}`}
}

// Validate checks s and reports all problems at once.
func (s Scheme) Validate() error {
	_, err := s.compile()
	return err
}

// compile validates s and returns the parsed pattern, so that Validate and
// CompileScheme cannot disagree.
func (s Scheme) compile() ([]atom, error) {
	var p problems
	var atoms []atom
	switch s.Kind {
	case SchemeS10:
		if s.Pattern != "" {
			p.add("kind s10 takes no pattern")
		}
		if s.Check != CheckNone {
			p.add("kind s10 takes no check (it is always mod11)")
		}
		if len(s.Countries) == 0 {
			p.add("kind s10 needs at least one country")
		}
		for i, c := range s.Countries {
			if !isUpperAlpha(c, 2) {
				p.add("country %q is not 2 upper-case letters", c)
			} else if slices.Contains(s.Countries[:i], c) {
				p.add("country %q listed twice", c)
			}
		}
		for i, pr := range s.Products {
			if !isUpperAlpha(pr, len(pr)) || len(pr) < 1 || len(pr) > 2 {
				p.add("product %q is not 1 or 2 upper-case letters", pr)
			} else if slices.Contains(s.Products[:i], pr) {
				p.add("product %q listed twice", pr)
			}
		}
	case SchemePattern:
		var err error
		if atoms, err = parsePattern(s.Pattern); err != nil {
			p.add("%v", err)
		}
		if !s.Check.Valid() {
			p.add("unknown check algorithm %q", s.Check)
		} else if s.Check != CheckNone && atoms != nil {
			if last := atoms[len(atoms)-1]; !last.digitsOnly() || last.min == 0 {
				p.add("with check %q the pattern must end in a digit atom that is not optional", s.Check)
			}
		}
		if len(s.Countries) > 0 || len(s.Products) > 0 {
			p.add("kind pattern takes no countries or products")
		}
	default:
		p.add("unknown scheme kind %q", s.Kind)
	}
	if err := p.err(ErrInvalid); err != nil {
		return nil, err
	}
	return atoms, nil
}

// ParseScheme parses the command-line form of a scheme, the inverse of
// Scheme.String: "s10:GB,FR" or "s10:GB,FR:RR,C" (countries, then optional
// products), else "PATTERN" or "PATTERN:ALGO". A pattern never contains
// ':', so the split is unambiguous.
func ParseScheme(str string) (Scheme, error) {
	var s Scheme
	if rest, ok := strings.CutPrefix(str, SchemeS10+":"); ok {
		countries, products, hasProducts := strings.Cut(rest, ":")
		s = Scheme{Kind: SchemeS10, Countries: strings.Split(countries, ",")}
		if hasProducts {
			s.Products = strings.Split(products, ",")
		}
	} else {
		s = Scheme{Kind: SchemePattern, Pattern: str}
		if i := strings.LastIndexByte(str, ':'); i >= 0 {
			algo := CheckAlgo(str[i+1:])
			if algo == CheckNone || !algo.Valid() {
				return Scheme{}, fmt.Errorf("%w: scheme %q: unknown check algorithm %q", ErrInvalid, str, algo)
			}
			s.Pattern, s.Check = str[:i], algo
		}
	}
	if err := s.Validate(); err != nil {
		return Scheme{}, err
	}
	return s, nil
}

// String returns the form ParseScheme reads, for flags and logs.
func (s Scheme) String() string {
	if s.Kind == SchemeS10 {
		str := SchemeS10 + ":" + strings.Join(s.Countries, ",")
		if len(s.Products) > 0 {
			str += ":" + strings.Join(s.Products, ",")
		}
		return str
	}
	if s.Check != CheckNone {
		return s.Pattern + ":" + string(s.Check)
	}
	return s.Pattern
}

// CompiledScheme is a validated Scheme ready to test numbers against; build
// one per registry entry and reuse it, it is safe for concurrent use.
type CompiledScheme struct {
	scheme         Scheme
	atoms          []atom
	minLen, maxLen int // bounds on the length of a matching number
}

// CompileScheme validates s and prepares it for Check.
//
// A pattern is a sequence of atoms, each optionally followed by a
// quantifier {n} or {n,m} with 0 ≤ n ≤ m ≤ 40 and m ≥ 1. The atoms are a
// literal in [A-Z0-9], \d, [0-9], [A-Z] and [A-Z0-9]. A pattern is at most
// 128 bytes and is anchored at both ends. This subset means the same in
// RE2, ECMAScript and PCRE, so any implementation may use its regexp
// engine on "^(?:" + pattern + ")$".
func CompileScheme(s Scheme) (*CompiledScheme, error) {
	atoms, err := s.compile()
	if err != nil {
		return nil, err
	}
	c := &CompiledScheme{scheme: s, atoms: atoms}
	for _, a := range atoms {
		c.minLen += int(a.min)
		c.maxLen += int(a.max)
	}
	return c, nil
}

// Check tests a normalized number against the scheme. It returns nil on a
// match, ErrNoMatch when the number has another shape, and ErrCheckDigit
// when only the check digit is wrong, which is most likely a typo.
func (c *CompiledScheme) Check(n string) error {
	if c.scheme.Kind == SchemeS10 {
		if !isS10Shape(n) || !slices.Contains(c.scheme.Countries, n[11:]) || !c.s10Product(n) {
			return ErrNoMatch
		}
		return ValidS10(n)
	}
	if !c.matchPattern(n) {
		return ErrNoMatch
	}
	if c.scheme.Check == CheckNone {
		return nil
	}
	last := len(n) - 1
	if want := checkDigit(c.scheme.Check, n[:last]); n[last] != want {
		return fmt.Errorf("%w: %q has check digit %c, %s wants %c", ErrCheckDigit, n, n[last], c.scheme.Check, want)
	}
	return nil
}

func (c *CompiledScheme) s10Product(n string) bool {
	if len(c.scheme.Products) == 0 {
		return true
	}
	for _, p := range c.scheme.Products {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// MatchSchemes returns the indices of the schemes that n fully satisfies,
// check digit included; more than one means the number is ambiguous
// between carriers, and a client queries every one of them.
func MatchSchemes(n string, schemes []*CompiledScheme) []int {
	var idx []int
	for i, c := range schemes {
		if c.Check(n) == nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// Character classes of pattern atoms.
const (
	classLiteral = iota
	classDigit   // \d and [0-9]
	classLetter  // [A-Z]
	classAlnum   // [A-Z0-9]
)

// atom is one pattern atom with its quantifier; {1} when it had none.
type atom struct {
	class    uint8
	lit      byte // for classLiteral
	min, max uint8
}

// digitsOnly reports whether a can only match digits, which the check
// digit at the end of a pattern number must be.
func (a atom) digitsOnly() bool {
	return a.class == classDigit || a.class == classLiteral && isDigit(a.lit)
}

// parsePattern parses the restricted pattern language. It rejects anything
// outside the grammar rather than guessing, since every engine must agree.
func parsePattern(p string) ([]atom, error) {
	if p == "" {
		return nil, fmt.Errorf("empty pattern")
	}
	if len(p) > MaxPatternLen {
		return nil, fmt.Errorf("pattern is %d bytes, limit %d", len(p), MaxPatternLen)
	}
	var atoms []atom
	minLen, maxLen := 0, 0
	for i := 0; i < len(p); {
		a := atom{min: 1, max: 1}
		switch c := p[i]; {
		case isDigit(c) || isUpper(c):
			a.class, a.lit = classLiteral, c
			i++
		case strings.HasPrefix(p[i:], `\d`):
			a.class = classDigit
			i += 2
		case strings.HasPrefix(p[i:], "[0-9]"):
			a.class = classDigit
			i += 5
		case strings.HasPrefix(p[i:], "[A-Z]"):
			a.class = classLetter
			i += 5
		case strings.HasPrefix(p[i:], "[A-Z0-9]"):
			a.class = classAlnum
			i += 8
		default:
			return nil, fmt.Errorf("pattern %q: %q at byte %d is not an atom (a literal in [A-Z0-9], \\d, [0-9], [A-Z] or [A-Z0-9])", p, c, i)
		}
		if i < len(p) && p[i] == '{' {
			end := strings.IndexByte(p[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("pattern %q: unterminated quantifier at byte %d", p, i)
			}
			lo, hi, err := parseQuantifier(p[i+1 : i+end])
			if err != nil {
				return nil, fmt.Errorf("pattern %q: quantifier at byte %d: %v", p, i, err)
			}
			a.min, a.max = lo, hi
			i += end + 1
		}
		minLen += int(a.min)
		maxLen += int(a.max)
		atoms = append(atoms, a)
	}
	if minLen > MaxNumberLen || maxLen < MinNumberLen {
		return nil, fmt.Errorf("pattern %q matches %d to %d characters, never a number of %d to %d", p, minLen, maxLen, MinNumberLen, MaxNumberLen)
	}
	return atoms, nil
}

// parseQuantifier parses the inside of {n} or {n,m}. Leading zeros and
// spaces are rejected: ECMAScript reads "{1, 2}" as literal text.
func parseQuantifier(q string) (lo, hi uint8, err error) {
	los, his, isRange := strings.Cut(q, ",")
	if lo, err = parseCount(los); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = parseCount(his); err != nil {
			return 0, 0, err
		}
	}
	if lo > hi || hi == 0 {
		return 0, 0, fmt.Errorf("{%s} needs n ≤ m and m ≥ 1", q)
	}
	return lo, hi, nil
}

func parseCount(s string) (uint8, error) {
	if s == "" || len(s) > 2 || len(s) == 2 && s[0] == '0' {
		return 0, fmt.Errorf("count %q is not a number from 0 to %d without leading zeros", s, MaxPatternCount)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, fmt.Errorf("count %q is not a number", s)
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > MaxPatternCount {
		return 0, fmt.Errorf("count %d exceeds %d", n, MaxPatternCount)
	}
	return uint8(n), nil
}

// matchPattern runs the atoms as a bit-parallel NFA: bit p of a state word
// is set when some way of matching the atoms so far consumes exactly p
// bytes. Numbers are at most 40 bytes, so one uint64 holds every
// position, and no input makes it backtrack.
func (c *CompiledScheme) matchPattern(n string) bool {
	if len(n) < c.minLen || len(n) > c.maxLen || len(n) > MaxNumberLen {
		return false
	}
	// Bit p+1 of a mask is set when byte p is in the class, so that
	// (state << 1) & mask advances every live position by one byte.
	var digits, letters uint64
	for i := 0; i < len(n); i++ {
		switch {
		case isDigit(n[i]):
			digits |= 1 << (i + 1)
		case isUpper(n[i]):
			letters |= 1 << (i + 1)
		}
	}
	state := uint64(1)
	for _, a := range c.atoms {
		var mask uint64
		switch a.class {
		case classDigit:
			mask = digits
		case classLetter:
			mask = letters
		case classAlnum:
			mask = digits | letters
		case classLiteral:
			// Only bytes this atom can reach matter; the prefix of
			// literals that most patterns start with stays one compare each.
			lo := bits.TrailingZeros64(state)
			hi := min(len(n), bits.Len64(state)-1+int(a.max))
			for p := lo; p < hi; p++ {
				if n[p] == a.lit {
					mask |= 1 << (p + 1)
				}
			}
		}
		var next uint64
		if a.min == 0 {
			next = state
		}
		for k := uint8(1); k <= a.max && state != 0; k++ {
			if state = (state << 1) & mask; k >= a.min {
				next |= state
			}
		}
		if state = next; state == 0 {
			return false
		}
	}
	return state&(1<<len(n)) != 0
}
