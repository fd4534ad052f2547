package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/node/ingest"
	"github.com/opentrack/opentrack/protocol"
	"github.com/opentrack/opentrack/testnet"
)

// TestPageStrings: every language has every key of every table, the
// whole status vocabulary and every problem the page words, and the
// Chinese texts are Chinese.
func TestPageStrings(t *testing.T) {
	en := stringsByLang["en"]
	for _, st := range protocol.Statuses() {
		require.NotEmpty(t, en["status"][string(st)], "status %s has no English text", st)
	}
	for lang, s := range stringsByLang {
		require.ElementsMatch(t, slices.Collect(maps.Keys(en)), slices.Collect(maps.Keys(s)), lang)
		for table, texts := range en {
			require.ElementsMatch(t, slices.Collect(maps.Keys(texts)), slices.Collect(maps.Keys(s[table])), "%s: table %s", lang, table)
		}
	}
	zh := stringsByLang["zh-CN"]
	for table, texts := range zh {
		for key, text := range texts {
			require.True(t, strings.ContainsFunc(text, func(r rune) bool { return unicode.Is(unicode.Han, r) }),
				"zh-CN %s.%s is not Chinese: %q", table, key, text)
			for _, ph := range []string{"{when}", "{carrier}", "{code}", "{number}", "{why}", "{time}", "{key}", "{head}"} {
				require.Equal(t, strings.Contains(en[table][key], ph), strings.Contains(text, ph), "zh-CN %s.%s and English differ in %s", table, key, ph)
			}
		}
	}
}

func TestPickLang(t *testing.T) {
	for _, tc := range []struct{ accept, want string }{
		{"", "en"},
		{"en-GB,en;q=0.9", "en"},
		{"zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"},
		{"zh", "zh-CN"},
		{"zh-Hans-SG", "zh-CN"},
		{"fr-FR,de;q=0.5", "en"},
		{"de;q=0.9,zh-CN;q=0.8", "zh-CN"},
		{"en;q=0.9,zh-CN", "zh-CN"},
		{"!!garbage;;q=x", "en"},
	} {
		require.Equal(t, tc.want, pickLang(tc.accept), "Accept-Language %q", tc.accept)
	}
}

// handoff ingests number's i-th scan at c, handing the parcel over to
// next at carrier to.
func handoff(t *testing.T, c *testnet.Carrier, number string, i int, to, next string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Ingest(ctx, []ingest.InputEvent{{
		ID: fmt.Sprintf("%s-%d", number, i), Number: number, Status: string(protocol.StatusDepartedFacility),
		Time:     time.Now().Add(time.Duration(i-10) * time.Hour).UTC().Format(time.RFC3339),
		Location: protocol.Location{Country: "GB", City: "London", Facility: "EXCHANGE"},
		Handoff:  &protocol.Handoff{Carrier: to, Number: next},
	}})
	require.NoError(t, err)
	require.Equal(t, ingest.StatusAccepted, res[0].Status, res[0].Error)
}

// TestPage: the page follows Accept-Language; with ?n= it is a summary
// without JavaScript, one timeline over the handoff's legs, each leg
// under its carrier's registry name and verified against it; a parcel
// with no scans says so rather than "Not verified"; the JSON carries
// carrier_name.
//
// long: its cases share one testnet fixture and the parcels booked on it.
func TestPage(t *testing.T) {
	f := newFixture(t, 2, nil)
	first, second := f.net.Carriers[0], f.net.Carriers[1]
	number := book(t, first, "", protocol.StatusInfoReceived, protocol.StatusPickedUp)
	next, err := second.NewNumber()
	require.NoError(t, err)
	handoff(t, first, number, 2, second.Code, next)
	scan(t, second, next, "", 3, protocol.StatusArrivedAtFacility)
	scan(t, second, next, "", 4, protocol.StatusOutForDelivery)
	firstName, secondName := f.gw.carrierName(first.Code), f.gw.carrierName(second.Code)
	require.NotEmpty(t, firstName)
	require.NotEqual(t, first.Code, firstName, "the registry has a name, not the code")

	resp, body := f.do(t, "GET", "/v1/track/"+number, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var v trackView
	require.NoError(t, json.Unmarshal(body, &v))
	require.Equal(t, firstName, v.CarrierName)
	resp, body = f.do(t, "POST", "/v1/track", `{"numbers":["`+next+`"]}`, "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Contains(t, string(body), `"carrier_name":"`+secondName+`"`)

	t.Run("language", func(t *testing.T) {
		resp, body := f.do(t, "GET", "/", "", "Accept-Language", "zh-CN,zh;q=0.9")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "zh-CN", resp.Header.Get("Content-Language"))
		require.Contains(t, resp.Header.Values("Vary"), "Accept-Language")
		require.Contains(t, string(body), `<html lang="zh-CN">`)
		require.Contains(t, string(body), "查询包裹")
		require.Contains(t, string(body), `<script type="application/json" id="i18n">`)
		resp, body = f.do(t, "GET", "/", "", "Accept-Language", "en-GB")
		require.Equal(t, "en", resp.Header.Get("Content-Language"))
		require.Contains(t, string(body), "Track a parcel")
		require.NotContains(t, string(body), "查询包裹")
		require.Contains(t, string(body), "<noscript>")
	})

	t.Run("summary over legs", func(t *testing.T) {
		resp, body := f.do(t, "GET", "/?n="+strings.ToLower(number)+"&utm_source=mail", "")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		page := string(body)
		require.Contains(t, page, `data-summary="server"`)
		for _, want := range []string{firstName, secondName, "Out for delivery", "Arrived at facility", "Picked up", "Shipment information received"} {
			require.Contains(t, page, want)
		}
		require.Equal(t, 2, strings.Count(page, `class="badge ok"`), "each leg verified on its own:\n%s", page)
		require.NotContains(t, page, `class="badge bad"`)
		// Newest first across both legs.
		require.Less(t, strings.Index(page, `data-status="out_for_delivery"`), strings.Index(page, `data-status="departed_facility"`))
		require.Less(t, strings.Index(page, `data-status="departed_facility"`), strings.Index(page, `data-status="info_received"`))

		_, body = f.do(t, "GET", "/?n="+number, "", "Accept-Language", "zh-CN")
		require.Contains(t, string(body), "派送中")
		require.Contains(t, string(body), "✓ 已验证")
	})

	t.Run("no scans yet", func(t *testing.T) {
		fresh, err := first.NewNumber()
		require.NoError(t, err)
		resp, body := f.do(t, "GET", "/?n="+fresh, "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(body), `<span class="badge none">No scans yet</span>`)
		require.NotContains(t, string(body), `class="badge bad"`)
		require.Contains(t, string(body), "The carrier has no scans for this number yet")
	})

	t.Run("bad number", func(t *testing.T) {
		resp, body := f.do(t, "GET", "/?n="+number[:10]+"0GB", "")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
		require.Contains(t, string(body), "typos")
	})

	t.Run("rate limited", func(t *testing.T) {
		lf := &fixture{net: f.net, plat: f.plat, http: f.http}
		lf.url = f.start(t, Config{}, &Options{Rate: 0.001}).url
		var resp *http.Response
		var body []byte
		for range DefaultBurst + 1 {
			if resp, body = lf.do(t, "GET", "/?n="+number, ""); resp.StatusCode == http.StatusTooManyRequests {
				break
			}
		}
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", body)
		require.NotEmpty(t, resp.Header.Get("Retry-After"))
		require.Contains(t, string(body), "Too many lookups")
	})
	requireDocumentedCodes(t, f.gw.Gateway)
}
