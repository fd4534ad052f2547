package gateway

import (
	"net/url"
	"testing"

	"github.com/opentrack/opentrack/protocol"
)

// FuzzParseWatch: any query and Last-Event-ID either parse into a
// bounded, normalized subscription or fail with a protocol code; never a
// panic.
func FuzzParseWatch(f *testing.F) {
	f.Add("number=RB123456785GB", "")
	f.Add("number=rb 1234 5678 5gb&number=SF1234567890", "GBPOST=abc&SF=def")
	f.Add("audience&carrier=SF", "")
	f.Add("audience=true&cursor=SF%3Dx", "")
	f.Add("number=x&lastEventId=%zz", "SF=")
	f.Add("number=%00", "SF=a&SF=b")
	f.Fuzz(func(t *testing.T, query, lastEventID string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		w, err := parseWatch(q, lastEventID, DefaultMaxWatchNumbers)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		// A number that does not normalize is kept apart, for its own
		// invalid_number status: numbers and invalid together are what
		// was asked for.
		if asked := len(w.numbers) + len(w.invalid); w.audience == (asked > 0) {
			t.Fatalf("audience %v with %d numbers and %d invalid", w.audience, len(w.numbers), len(w.invalid))
		}
		if len(w.numbers)+len(w.invalid) > DefaultMaxWatchNumbers {
			t.Fatalf("%d numbers, %d invalid", len(w.numbers), len(w.invalid))
		}
		for _, r := range w.invalid {
			if _, err := protocol.NormalizeNumber(r); err == nil {
				t.Fatalf("invalid %q normalizes", r)
			}
		}
		for _, n := range w.numbers {
			if m, err := protocol.NormalizeNumber(n); err != nil || m != n {
				t.Fatalf("number %q not normalized", n)
			}
		}
		for code, c := range w.cursors {
			if protocol.ValidCarrierCode(code) != nil || c == "" || len(c) > protocol.MaxCursorLen {
				t.Fatalf("cursor %q=%q", code, c)
			}
		}
		// The id of what was parsed parses to the same cursors.
		again, err := decodeCursors(encodeCursors(w.cursors))
		if err != nil || len(again) != len(w.cursors) {
			t.Fatalf("cursors do not round-trip: %v", err)
		}
		for k, v := range w.cursors {
			if again[k] != v {
				t.Fatalf("cursor %s: %q became %q", k, v, again[k])
			}
		}
	})
}

// FuzzParseBatch: any body either parses into 1 to 100 numbers or fails
// with a protocol code.
func FuzzParseBatch(f *testing.F) {
	f.Add([]byte(`{"numbers":["RB123456785GB"]}`))
	f.Add([]byte(`{"numbers":[]}`))
	f.Add([]byte(`{"numbers":["a"],"x":1}`))
	f.Add([]byte(`{"numbers":["a"]}{}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		numbers, err := parseBatch(body)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if len(numbers) == 0 || len(numbers) > protocol.MaxNumbersPerRequest {
			t.Fatalf("%d numbers", len(numbers))
		}
	})
}

// FuzzPickLang: any Accept-Language picks one of the page's languages;
// never a panic.
func FuzzPickLang(f *testing.F) {
	for _, s := range []string{"", "zh-CN,zh;q=0.9,en;q=0.8", "en-GB", "*", "zh-Hant-TW;q=0.5", "x;q=1e9,,;;", "de-DE-u-co-phonebk"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		if _, ok := stringsByLang[pickLang(accept)]; !ok {
			t.Fatalf("Accept-Language %q picked %q, which has no strings", accept, pickLang(accept))
		}
	})
}
