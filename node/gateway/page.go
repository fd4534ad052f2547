package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/language"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// maxLegs bounds how many handoffs the page follows from a parcel: a
// parcel crosses two or three carriers, and a loop of handoffs must end.
const maxLegs = 4

// trackView is what the lookups answer: node/client's ParcelView and the
// carrier's name from the registry, which people know ("SF Express")
// where the code means nothing to them.
type trackView struct {
	client.ParcelView
	CarrierName string `json:"carrier_name,omitempty"`
}

// carrierName is code's name in the platform's registry, "" for none.
func (g *Gateway) carrierName(code string) string {
	if reg := g.trust.Registry(); reg != nil {
		if e := reg.Carrier(code); e != nil {
			return e.Name
		}
	}
	return ""
}

func (g *Gateway) named(v client.ParcelView) trackView {
	return trackView{ParcelView: v, CarrierName: g.carrierName(v.Carrier)}
}

func (g *Gateway) namedAll(views []client.ParcelView) []trackView {
	out := make([]trackView, len(views))
	for i, v := range views {
		out[i] = g.named(v)
	}
	return out
}

// Languages of the page; the first is the fallback. Each has a string
// table web/i18n/TAG.json with the same keys (TestPageStrings).
var pageLangs = []language.Tag{language.English, language.MustParse("zh-CN")}

var langMatcher = language.NewMatcher(pageLangs)

// pageStrings is one language's texts: "ui", "problem" and "status"
// tables, each from key to text. The script gets the same tables.
type pageStrings map[string]map[string]string

// strings holds every language's tables, by tag; loaded once.
var stringsByLang = func() map[string]pageStrings {
	out := map[string]pageStrings{}
	for _, tag := range pageLangs {
		b, err := web.ReadFile("web/i18n/" + tag.String() + ".json")
		if err != nil {
			panic("gateway: page strings missing from the build: " + err.Error())
		}
		var s pageStrings
		if err := json.Unmarshal(b, &s); err != nil {
			panic("gateway: web/i18n/" + tag.String() + ".json: " + err.Error())
		}
		out[tag.String()] = s
	}
	return out
}()

// pickLang is the page language for an Accept-Language header: the best
// match among pageLangs, English when nothing matches.
func pickLang(accept string) string {
	tags, _, _ := language.ParseAcceptLanguage(accept)
	_, i, conf := langMatcher.Match(tags...)
	if conf == language.No {
		i = 0
	}
	return pageLangs[i].String()
}

var pageTemplate = template.Must(template.ParseFS(web, "web/index.html"))

// pageData fills web/index.html.
type pageData struct {
	Lang    string
	UI      map[string]string
	Strings pageStrings // for the script, as JSON
	Number  string
	Status  string
	Cards   []summaryCard
}

// summaryCard is a parcel as the page shows it without its script: the
// legs of its journey, each with its own verification, and their events
// in one timeline, newest first.
type summaryCard struct {
	Number string
	Legs   []summaryLeg
	Notes  []summaryNote
	Events []summaryEvent
}

type summaryLeg struct {
	Name              string
	Verified, NoScans bool
}

type summaryNote struct{ Class, Text string }

type summaryEvent struct {
	Code, Status, Carrier, Time, When, Where, Description, Lang string
	at                                                          time.Time
	leg                                                         int
	seq                                                         uint64
}

// page serves the tracking page in the language Accept-Language asks
// for. With ?n= it carries a summary of the parcel rendered here, so
// that the page answers without JavaScript; the script replaces it with
// the live timeline. Other query parameters are ignored: shared links
// pick up tracking parameters.
func (g *Gateway) page(w http.ResponseWriter, r *http.Request) {
	lang := pickLang(r.Header.Get("Accept-Language"))
	s := stringsByLang[lang]
	d := pageData{Lang: lang, UI: s["ui"], Strings: s}
	status := http.StatusOK
	q, _ := query(r) // a malformed query is a page without a number
	if raw := strings.TrimSpace(q.Get("n")); raw != "" && len(raw) <= protocol.MaxNumberLen*2 {
		d.Number = raw
		status = g.summarize(w, r, s, raw, &d)
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		g.log.Error("gateway: page", "err", err)
		newProblem(protocol.CodeInternal, "rendering the page failed").write(w)
		return
	}
	w.Header().Set("Content-Language", lang)
	w.Header().Add("Vary", "Accept-Language")
	writePage(w, status, buf.Bytes())
}

// summarize looks raw up, follows its handoffs and fills d's cards, or
// its status line with why there are none. It returns the HTTP status.
func (g *Gateway) summarize(w http.ResponseWriter, r *http.Request, s pageStrings, raw string, d *pageData) int {
	number, err := protocol.NormalizeNumber(raw)
	if err != nil {
		d.Status = problemText(s, protocol.CodeOf(err), "")
		return http.StatusBadRequest
	}
	if ok, wait := g.limits.allow(clientKey(r), 1, time.Now()); !ok {
		g.m.RateLimited.Inc()
		d.Status = s["problem"][protocol.CodeRateLimited]
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
		return http.StatusTooManyRequests
	}
	views, p := g.lookup(r.Context(), []string{number})
	if p != nil {
		d.Status = problemText(s, p.Code, "")
		return http.StatusOK
	}
	// A number no carrier's scheme takes (a wrong check digit) is the
	// reader's mistake: say so, as the lookups answer 400.
	if len(views) == 1 && views[0].Error != "" && statusOf(views[0].Error) == http.StatusBadRequest {
		d.Status = problemText(s, views[0].Error, "")
		return http.StatusBadRequest
	}
	for _, v := range views {
		d.Cards = append(d.Cards, g.card(r, s, v))
	}
	return http.StatusOK
}

// card is v and the legs its handoffs lead to, summarized.
func (g *Gateway) card(r *http.Request, s pageStrings, v client.ParcelView) summaryCard {
	c := summaryCard{Number: v.Number}
	for i, leg := range g.legs(r.Context(), clientKey(r), v) {
		name := g.displayName(leg.Carrier)
		c.Legs = append(c.Legs, summaryLeg{Name: name, Verified: leg.Verified, NoScans: leg.Error == protocol.CodeNotFound})
		switch {
		case leg.Error == protocol.CodeNotFound && i == 0:
			c.Notes = append(c.Notes, summaryNote{"notice", problemText(s, leg.Error, "")})
		case leg.Error == protocol.CodeNotFound:
		case leg.Error != "" && i == 0:
			c.Notes = append(c.Notes, summaryNote{"problem", problemText(s, leg.Error, leg.Message)})
		case leg.Error != "":
			c.Notes = append(c.Notes, summaryNote{"problem", format(s["ui"]["leg_failed"], "carrier", name, "code", leg.Error)})
		}
		if !leg.Verified {
			continue
		}
		for _, e := range leg.Events {
			at, _ := time.Parse(time.RFC3339Nano, e.Time)
			c.Events = append(c.Events, summaryEvent{
				Code: string(e.Status), Status: statusText(s, e.Status, e.Reason), Carrier: name,
				Time: e.Time, When: when(s, at), Where: place(e.Location), Description: e.Description, Lang: e.Lang,
				at: at, leg: i, seq: e.Seq,
			})
		}
	}
	// One timeline, newest first; on a tie the later leg is the newer.
	slices.SortStableFunc(c.Events, func(a, b summaryEvent) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		if a.leg != b.leg {
			return b.leg - a.leg
		}
		return int(b.seq) - int(a.seq)
	})
	return c
}

// legs is v and, while the newest leg's newest handoff names another
// carrier's parcel, that parcel, each verified against its own carrier,
// up to maxLegs. Each further leg costs the client (who) a token, as the script's
// own lookup of it would; out of tokens, the legs end there. A next leg
// that cannot be looked up is a view with its code, so that the page
// says so.
func (g *Gateway) legs(ctx context.Context, who netip.Addr, v client.ParcelView) []client.ParcelView {
	legs := []client.ParcelView{v}
	seen := map[protocol.Handoff]bool{{Carrier: v.Carrier, Number: v.Number}: true}
	for len(legs) < maxLegs {
		h := nextLeg(legs[len(legs)-1])
		if h == nil || seen[*h] {
			break
		}
		seen[*h] = true
		if ok, _ := g.limits.allow(who, 1, time.Now()); !ok {
			break
		}
		next := client.ParcelView{Number: h.Number, Carrier: h.Carrier, Events: []client.EventView{}, Error: protocol.CodeNotFound}
		views, p := g.lookup(ctx, []string{h.Number})
		if p != nil {
			next.Error, next.Message = p.Code, p.Detail
		}
		for _, w := range views {
			if w.Carrier == h.Carrier {
				next = w
			}
		}
		legs = append(legs, next)
	}
	return legs
}

// nextLeg is the handoff of v's newest event that has one, nil for none
// or when v did not verify.
func nextLeg(v client.ParcelView) *protocol.Handoff {
	if !v.Verified {
		return nil
	}
	var h *protocol.Handoff
	var seq uint64
	for _, e := range v.Events {
		if e.Handoff != nil && (h == nil || e.Seq > seq) {
			h, seq = e.Handoff, e.Seq
		}
	}
	return h
}

// displayName is a carrier's registry name, or its code without one.
func (g *Gateway) displayName(code string) string {
	if n := g.carrierName(code); n != "" {
		return n
	}
	return code
}

func problemText(s pageStrings, code, message string) string {
	if t := s["problem"][code]; t != "" {
		return t
	}
	t := format(s["ui"]["failed"], "code", code)
	if message != "" {
		t += " " + message
	}
	return t
}

func statusText(s pageStrings, st protocol.Status, reason string) string {
	t := s["status"][string(st)]
	if t == "" {
		t = strings.ReplaceAll(string(st), "_", " ")
	}
	if reason != "" {
		t += " (" + strings.ReplaceAll(reason, "_", " ") + ")"
	}
	return t
}

func place(l protocol.Location) string {
	var parts []string
	for _, p := range []string{l.Facility, l.City, l.Country} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

// when is t for people, in UTC since the server does not know the
// reader's zone; the script shows local time.
func when(s pageStrings, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04") + " " + s["ui"]["utc"]
}

// format replaces each {key} in t with its value; kv is key, value...
func format(t string, kv ...string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		t = strings.ReplaceAll(t, "{"+kv[i]+"}", kv[i+1])
	}
	return t
}
