package vectors

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/opentrack/opentrack/protocol"
)

// Fixed inputs. Times are Unix ms on 2026-01-01 and after.
const (
	t0          int64 = 1767225600000
	hour        int64 = 3600_000
	carrierSeed       = 0x01 // carrier SF's signing key
	otherSeed         = 0x02 // a key no registry binds to SF
	authSeed          = 0x03 // the registry authority
	rogueSeed         = 0x04 // an authority nobody trusts
	holderPeer        = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	nodePeer          = "12D3KooWSoLzampfxc4t3sy9z7yq1Cgzbi7zGXpV7nk4LWPaNs6E"
)

type gen struct {
	carrier, other, auth, rogue *protocol.Signer
	out                         []Vector
}

func mustSigner(seed byte) *protocol.Signer {
	s, err := protocol.NewSigner(Key(seed))
	if err != nil {
		panic(err)
	}
	return s
}

// Generate builds every vector. It is deterministic.
func Generate() (*File, error) {
	g := &gen{carrier: mustSigner(carrierSeed), other: mustSigner(otherSeed), auth: mustSigner(authSeed), rogue: mustSigner(rogueSeed)}
	steps := []func() error{g.events, g.chains, g.registries, g.grants, g.messages, g.numbers, g.frames, g.invalidEncodings}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return &File{
		Version: Version,
		Note:    "OpenTrack test vectors. Regenerate with `make vectors`; see spec/opentrack.md, section Test vectors. Keys are Ed25519 seeds of 32 equal bytes (0x01 carrier SF, 0x02 another key, 0x03 registry authority, 0x04 untrusted authority).",
		Vectors: g.out,
	}, nil
}

func hx(b []byte) string { return hex.EncodeToString(b) }

func pub(s *protocol.Signer) string { return hx(s.Public()) }

func (g *gen) add(v Vector) { g.out = append(g.out, v) }

func (g *gen) valid(name, typ string, b []byte, note string) {
	g.add(Vector{Name: name, Type: typ, Valid: true, CBOR: hx(b), CID: protocol.CIDOf(b).String(), Note: note})
}

func (g *gen) invalid(name, typ string, b []byte, err *protocol.Error, note string) {
	g.add(Vector{Name: name, Type: typ, Valid: false, CBOR: hx(b), Error: err.Code, Note: note})
}

func enc(v any) []byte {
	b, err := protocol.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// parcel builds the eight events of one delivered parcel.
func parcel() ([]*protocol.Event, [][]byte) {
	steps := []struct {
		status   protocol.Status
		reason   string
		locode   string
		city     string
		facility string
	}{
		{protocol.StatusInfoReceived, "", "CNSZX", "Shenzhen", ""},
		{protocol.StatusPickedUp, "", "CNSZX", "Shenzhen", "SZX-NANSHAN-07"},
		{protocol.StatusArrivedAtFacility, "", "CNSZX", "Shenzhen", "SZX-HUB-01"},
		{protocol.StatusDepartedFacility, "", "CNSZX", "Shenzhen", "SZX-HUB-01"},
		{protocol.StatusArrivedAtFacility, "", "CNSHA", "Shanghai", "SHA-HUB-02"},
		{protocol.StatusOutForDelivery, "", "CNSHA", "Shanghai", "SHA-PUDONG-11"},
		{protocol.StatusDeliveryAttempted, "recipient_absent", "CNSHA", "Shanghai", "SHA-PUDONG-11"},
		{protocol.StatusDelivered, "to_locker", "CNSHA", "Shanghai", "SHA-PUDONG-11"},
	}
	var events []*protocol.Event
	var blocks [][]byte
	var prev protocol.Link
	for i, s := range steps {
		e := &protocol.Event{
			Carrier: "SF", Number: "SF1234567890", Seq: uint64(i), Time: t0 + int64(i)*hour,
			Status: s.status, Reason: s.reason, Prev: prev,
			Location: protocol.Location{Country: "CN", Locode: s.locode, City: s.city, Facility: s.facility},
		}
		b, c, err := protocol.EncodeEvent(e)
		if err != nil {
			panic(err)
		}
		events, blocks, prev = append(events, e), append(blocks, b), protocol.LinkTo(c)
	}
	return events, blocks
}

func headOf(blocks [][]byte) *protocol.Head {
	last := blocks[len(blocks)-1]
	return &protocol.Head{Carrier: "SF", Number: "SF1234567890", Seq: uint64(len(blocks) - 1), Head: protocol.LinkTo(protocol.CIDOf(last)), Time: t0 + 9*hour}
}

func (g *gen) events() error {
	_, blocks := parcel()
	g.valid("event_genesis", "event", blocks[0], "seq 0: no prev")
	g.valid("event_chained", "event", blocks[1], "seq 1: prev links the CID of event_genesis")
	g.valid("event_delivered", "event", blocks[7], "terminal status with a reason code")

	lat, lon := int64(51_507_400), int64(-127_800)
	full := &protocol.Event{
		Carrier: "ROYALMAIL", Number: "RB123456785GB", Seq: 0, Time: t0,
		Status: protocol.StatusInTransit, Reason: "",
		Location:    protocol.Location{Country: "GB", Locode: "GBLON", City: "London", Facility: "MOUNT-PLEASANT", LatE6: &lat, LonE6: &lon},
		Description: "Item is on its way to the destination country", Lang: "en-GB",
		ETA:     t0 + 72*hour,
		Handoff: &protocol.Handoff{Carrier: "CHINAPOST", Number: "RB123456785GB"},
		Ext:     map[string]any{"royalmail.service": "international_tracked", "royalmail.weight_g": 480},
	}
	b, _, err := protocol.EncodeEvent(full)
	if err != nil {
		return err
	}
	g.valid("event_all_fields", "event", b, "every optional field: negative coordinate, description with lang, eta, handoff and namespaced ext")

	// Invalid events, each built by editing valid bytes or a generic map.
	genesis := map[string]any{
		"carrier": "SF", "number": "SF1234567890", "seq": 0, "time": t0, "status": "info_received",
		"location": map[string]any{"country": "CN", "locode": "CNSZX", "city": "Shenzhen"},
	}
	withField := func(k string, v any) []byte {
		m := map[string]any{}
		for kk, vv := range genesis {
			m[kk] = vv
		}
		m[k] = v
		return enc(m)
	}
	g.invalid("event_unknown_field", "event", withField("recipient", "Zhang San"), protocol.ErrUnknownField, "a field the spec does not define: receivers reject it, so personal data cannot ride along")
	g.invalid("event_empty_optional_field", "event", withField("reason", ""), protocol.ErrNonCanonical, "an optional field present with its empty value: it must be omitted")
	g.invalid("event_unknown_status", "event", withField("status", "teleported"), protocol.ErrInvalid, "status not in the vocabulary")

	g.invalid("event_key_order", "event", swapFirstKeys(blocks[0]), protocol.ErrNonCanonical, "event_genesis with its first two keys (seq, time) swapped: keys must be in length-first order")
	g.invalid("event_non_shortest_int", "event", bytes.Replace(blocks[0], []byte{0x63, 's', 'e', 'q', 0x00}, []byte{0x63, 's', 'e', 'q', 0x18, 0x00}, 1), protocol.ErrNonCanonical, "seq 0 encoded in two bytes (0x18 0x00)")
	g.invalid("event_indefinite_map", "event", indefiniteMap(blocks[0]), protocol.ErrIndefinite, "event_genesis as an indefinite-length map")
	g.invalid("event_duplicate_key", "event", duplicateKey(blocks[0]), protocol.ErrDuplicateKey, "\"seq\" twice")
	g.invalid("event_float_time", "event", floatTime(blocks[0]), protocol.ErrFloat, "time as a float64")
	g.invalid("event_foreign_tag", "event", taggedTime(blocks[0]), protocol.ErrForeignTag, "time wrapped in tag 1 (epoch date): only tag 42 is allowed")
	g.invalid("event_ext_int_range", "event", withField("ext", map[string]any{"x.big": uint64(1) << 63}), protocol.ErrInvalid, "integers in ext must fit a signed 64-bit integer: 2^63 does not")
	g.invalid("event_ext_bad_link", "event", withField("ext", map[string]any{"x.link": rawTag42([]byte{0x00, 0xff, 0xff, 0xff})}), protocol.ErrBadCID, "a tag-42 link in ext that is not a CIDv1 dag-cbor sha2-256")
	g.invalid("event_too_deep", "event", withField("ext", deepExt(protocol.MaxDepth)), protocol.ErrTooDeep, "ext nested past 16 levels")

	// A tampered event: the bytes still decode, but they no longer hash to
	// the CID a chain or head claims.
	tampered := bytes.Replace(blocks[1], []byte("SZX-NANSHAN-07"), []byte("SZX-NANSHAN-08"), 1)
	g.add(Vector{Name: "event_tampered", Type: "event", Valid: false, CBOR: hx(tampered), CID: protocol.CIDOf(blocks[1]).String(),
		Error: protocol.ErrCIDMismatch.Code, Note: "event_chained with one byte of facility changed; cid is the CID the chain expects"})
	return nil
}

func (g *gen) chains() error {
	_, blocks := parcel()
	head := headOf(blocks)
	payload := enc(head)
	signed, err := protocol.SignHead(g.carrier, head)
	if err != nil {
		return err
	}
	g.valid("head", "head", payload, "the Head statement of the 8-event parcel")
	g.add(Vector{Name: "signed_head", Type: "signed_head", Valid: true, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.carrier),
		CID: protocol.CIDOf(payload).String(), Note: "COSE_Sign1 over the head payload; protected header {1: -8, 3: content type, 4: kid}"})
	hexes := func(bs [][]byte) []string {
		out := make([]string, len(bs))
		for i, b := range bs {
			out[i] = hx(b)
		}
		return out
	}
	g.add(Vector{Name: "chain_8_events", Type: "chain", Valid: true, COSE: hx(signed), PubKey: pub(g.carrier), Events: hexes(blocks),
		Note: "verify the signature, then each prev link and seq, then that the last CID is the head"})

	broken := append(append([][]byte{}, blocks[:3]...), blocks[4:]...)
	g.add(Vector{Name: "chain_missing_event", Type: "chain", Valid: false, COSE: hx(signed), PubKey: pub(g.carrier), Events: hexes(broken),
		Error: protocol.ErrBrokenChain.Code, Note: "seq 3 removed"})
	tampered := append([][]byte{}, blocks...)
	tampered[4] = bytes.Replace(blocks[4], []byte("Shanghai"), []byte("Shanghal"), 1)
	g.add(Vector{Name: "chain_tampered_event", Type: "chain", Valid: false, COSE: hx(signed), PubKey: pub(g.carrier), Events: hexes(tampered),
		Error: protocol.ErrBrokenChain.Code, Note: "one byte of seq 4 changed in transit: seq 5's prev no longer matches"})

	wrongKey, err := protocol.SignHead(g.other, head)
	if err != nil {
		return err
	}
	g.add(Vector{Name: "signed_head_wrong_key", Type: "signed_head", Valid: false, CBOR: hx(payload), COSE: hx(wrongKey), PubKey: pub(g.carrier),
		Error: protocol.ErrUnknownKey.Code, Note: "signed by key 0x02; the carrier's key is 0x01, so the kid does not match"})
	forged := forgeKid(wrongKey, protocol.KeyID(g.carrier.Public()))
	g.add(Vector{Name: "signed_head_forged_kid", Type: "signed_head", Valid: false, CBOR: hx(payload), COSE: hx(forged), PubKey: pub(g.carrier),
		Error: protocol.ErrBadSignature.Code, Note: "signed by key 0x02 but claiming the kid of key 0x01"})
	g.add(Vector{Name: "signed_head_key_expired", Type: "signed_head", Valid: false, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.carrier),
		KeyNotBefore: t0 - 365*24*hour, KeyNotAfter: t0, Error: protocol.ErrKeyExpired.Code,
		Note: "the head was signed at time t0+9h; the key's window ended at t0"})
	g.add(Vector{Name: "signed_head_key_not_yet_valid", Type: "signed_head", Valid: false, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.carrier),
		KeyNotBefore: t0 + 10*hour, KeyNotAfter: t0 + 365*24*hour, Error: protocol.ErrKeyNotYetValid.Code,
		Note: "the head was signed at time t0+9h; the key's window starts at t0+10h"})
	return nil
}

// forgeKid replaces the key id inside a COSE_Sign1 without re-signing.
func forgeKid(cose, kid []byte) []byte {
	s, err := protocol.ParseSigned(cose, protocol.ContentHead)
	if err != nil {
		panic(err)
	}
	return bytes.Replace(cose, s.KeyID, kid, 1)
}

func (g *gen) registry() *protocol.Registry {
	return &protocol.Registry{
		Seq: 7, Issued: t0, NotBefore: t0, NotAfter: t0 + 365*24*hour,
		Carriers: []protocol.CarrierEntry{
			{
				Code: "ROYALMAIL", Name: "Royal Mail", Country: "GB",
				Keys:    []protocol.CarrierKey{{Key: g.other.Public(), NotBefore: t0, NotAfter: t0 + 365*24*hour}},
				Nodes:   []protocol.NodeEntry{},
				Schemes: []protocol.Scheme{{Kind: protocol.SchemeS10, Countries: []string{"GB"}}},
			},
			{
				Code: "SF", Name: "SF Express", Country: "CN",
				Keys:    []protocol.CarrierKey{{Key: g.carrier.Public(), NotBefore: t0 - 24*hour, NotAfter: t0 + 365*24*hour}},
				Nodes:   []protocol.NodeEntry{{Peer: nodePeer, Addrs: []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"}}},
				Schemes: []protocol.Scheme{protocol.DefaultScheme("SF")},
			},
		},
	}
}

func (g *gen) registries() error {
	r := g.registry()
	payload := enc(r)
	signed, err := protocol.SignRegistry(g.auth, r)
	if err != nil {
		return err
	}
	g.add(Vector{Name: "registry", Type: "registry", Valid: true, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.auth), CID: protocol.CIDOf(payload).String(), Time: t0 + hour,
		Note: "two carriers, one S10 operator; verify with the authority key 0x03 as the trust anchor at any time in [not_before, not_after]"})
	rogue, err := protocol.SignRegistry(g.rogue, r)
	if err != nil {
		return err
	}
	g.add(Vector{Name: "registry_untrusted_issuer", Type: "registry", Valid: false, CBOR: hx(payload), COSE: hx(rogue), PubKey: pub(g.auth), Time: t0 + hour,
		Error: protocol.ErrUntrustedIssuer.Code, Note: "the same registry signed by key 0x04; the anchor is key 0x03"})
	g.add(Vector{Name: "registry_expired", Type: "registry", Valid: false, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.auth), Time: r.NotAfter + 1,
		Error: protocol.ErrExpired.Code, Note: "the valid registry, checked one millisecond after its not_after"})
	shared := g.registry()
	shared.Carriers[0].Keys = append(shared.Carriers[0].Keys, shared.Carriers[1].Keys[0])
	sharedPayload := enc(shared)
	sharedSigned, err := g.auth.Sign(protocol.ContentRegistry, sharedPayload)
	if err != nil {
		return err
	}
	g.add(Vector{Name: "registry_shared_key", Type: "registry", Valid: false, CBOR: hx(sharedPayload), COSE: hx(sharedSigned), PubKey: pub(g.auth), Time: t0 + hour,
		Error: protocol.ErrInvalid.Code, Note: "SF's key also listed under ROYALMAIL: a key bound to two carriers would verify records of both"})

	// Node addresses are checked by their text alone (spec 4.5).
	for _, tc := range []struct {
		name, addr string
		err        *protocol.Error
		note       string
	}{
		{"registry_addr_unknown_protocol", "/ip4/192.0.2.7/tcp/4001/x-opentrack-future/v1", nil,
			"a node address with a protocol no multiaddr table knows: the registry is valid, and a dialler skips the address"},
		{"registry_addr_p2p", "/ip4/192.0.2.7/tcp/4001/p2p/" + nodePeer, protocol.ErrInvalid,
			"a node address that carries /p2p/: the peer field names the peer"},
	} {
		r := g.registry()
		r.Carriers[1].Nodes[0].Addrs = append(r.Carriers[1].Nodes[0].Addrs, tc.addr)
		payload := enc(r)
		signed, err := g.auth.Sign(protocol.ContentRegistry, payload)
		if err != nil {
			return err
		}
		v := Vector{Name: tc.name, Type: "registry", Valid: tc.err == nil, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.auth), Time: t0 + hour, Note: tc.note}
		if tc.err != nil {
			v.Error = tc.err.Code
		} else {
			v.CID = protocol.CIDOf(payload).String()
		}
		g.add(v)
	}
	return nil
}

func (g *gen) grants() error {
	gr := &protocol.Grant{
		ID: "000102030405060708090a0b0c0d0e0f", Carrier: "SF", Holder: holderPeer,
		Numbers: []string{"SF1234567890"}, Fields: []string{protocol.FieldRecipientName, protocol.FieldPOD},
		Issued: t0, Expires: t0 + 30*24*hour,
	}
	payload := enc(gr)
	signed, err := protocol.SignGrant(g.carrier, gr)
	if err != nil {
		return err
	}
	g.add(Vector{Name: "grant", Type: "grant", Valid: true, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.carrier), CID: protocol.CIDOf(payload).String(),
		Time: t0 + hour, Holder: holderPeer, Note: "a grant of two detail fields of one parcel to one platform peer (carrier SF, key 0x01)"})
	g.add(Vector{Name: "grant_other_holder", Type: "grant", Valid: false, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.carrier),
		Time: t0 + hour, Holder: nodePeer, Error: protocol.ErrForbidden.Code, Note: "the grant presented by a peer it was not issued to"})
	g.add(Vector{Name: "grant_expired", Type: "grant", Valid: false, CBOR: hx(payload), COSE: hx(signed), PubKey: pub(g.carrier),
		Time: gr.Expires + 1, Holder: holderPeer, Error: protocol.ErrExpired.Code, Note: "the grant one millisecond after it expires"})
	return nil
}

func (g *gen) messages() error {
	_, blocks := parcel()
	head := headOf(blocks)
	signed, err := protocol.SignHead(g.carrier, head)
	if err != nil {
		return err
	}
	g.valid("track_request", "track_request", enc(&protocol.TrackRequest{Queries: []protocol.TrackQuery{{Number: "SF1234567890"}}}), "one number, no known head")
	known := protocol.LinkTo(protocol.CIDOf(blocks[5]))
	g.valid("track_request_known_head", "track_request", enc(&protocol.TrackRequest{Queries: []protocol.TrackQuery{
		{Number: "SF1234567890", Known: known}, {Number: "SF9999999999"},
	}}), "the client holds seq 5 of the first parcel and nothing of the second")
	g.valid("track_response", "track_response", enc(&protocol.TrackResponse{Results: []protocol.TrackResult{
		{Number: "SF1234567890", Code: protocol.CodeOK, Head: signed, Events: blocks[6:]},
		{Number: "SF9999999999", Code: protocol.CodeNotFound},
	}}), "answer to track_request_known_head: the signed head and seq 6 and 7; not_found for the second")
	g.valid("track_response_rate_limited", "track_response", enc(&protocol.TrackResponse{Results: []protocol.TrackResult{
		{Number: "SF1234567890", Code: protocol.CodeRateLimited, RetryAfter: 1500},
	}}), "throttled: retry after 1.5 s")
	numbers := make([]protocol.TrackQuery, protocol.MaxNumbersPerRequest+1)
	for i := range numbers {
		numbers[i] = protocol.TrackQuery{Number: fmt.Sprintf("SF%010d", i)}
	}
	g.invalid("track_request_too_many", "track_request", enc(&protocol.TrackRequest{Queries: numbers}), protocol.ErrTooLarge, "101 numbers; the limit is 100")

	g.valid("watch_request", "watch_request", enc(&protocol.WatchRequest{Numbers: []string{"SF1234567890", "SF1234567891"}, Cursor: "1a2b3c4d.42"}), "subscribe to two numbers from a cursor")
	g.valid("watch_request_audience", "watch_request", enc(&protocol.WatchRequest{Audience: true}), "subscribe to the caller's audience from now")
	g.valid("watch_update", "watch_update", enc(&protocol.WatchMessage{Type: protocol.WatchUpdate, Cursor: "1a2b3c4d.43", Number: "SF1234567890", Head: signed, Events: blocks[7:]}), "the delivered event, pushed")
	g.valid("watch_catchup", "watch_update", enc(&protocol.WatchMessage{Type: protocol.WatchCatchUp, Cursor: "1a2b3c4d.43", Message: "subscriber buffer full"}), "the subscriber fell behind: re-sync from the cursor")
	g.valid("watch_heartbeat", "watch_update", enc(&protocol.WatchMessage{Type: protocol.WatchHeartbeat, Cursor: "1a2b3c4d.43", Time: t0 + 10*hour}), "keep-alive with the current cursor")
	g.valid("watch_status", "watch_update", enc(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: "SF9999999999", Code: protocol.CodeNotFound, Message: "no such parcel at carrier SF"}),
		"a watched number the node has no parcel for, before the first heartbeat; the subscription goes on")
	g.valid("watch_status_rate_limited", "watch_update", enc(&protocol.WatchMessage{Type: protocol.WatchStatus, Number: "SF9999999999", Code: protocol.CodeRateLimited, RetryAfter: 30000}),
		"the not_found budget is spent: no number's status is told, retry after 30 s")
	g.valid("info", "info", enc(&protocol.Info{Carrier: "SF", Version: "opentrack/0.1.0", Protocols: []string{protocol.InfoID, protocol.TrackID, protocol.WatchID},
		Limits: protocol.DefaultLimits(), RegistrySeq: 7, Keys: [][]byte{g.carrier.Public()}}), "a carrier node's info")
	g.valid("track_response_details_expired", "track_response", enc(&protocol.TrackResponse{Results: []protocol.TrackResult{
		{Number: "SF1234567890", Code: protocol.CodeOK, Head: signed, Events: blocks[6:], DetailsError: protocol.DetailsExpired},
	}}), "a grant covers the parcel, but its details passed the carrier's retention: the events, and details_error instead of details")
	g.valid("watch_update_details_expired", "watch_update", enc(&protocol.WatchMessage{Type: protocol.WatchUpdate, Cursor: "1a2b3c4d.43", Number: "SF1234567890", Head: signed, Events: blocks[7:],
		DetailsError: protocol.DetailsExpired}), "an update of a covered parcel whose details were erased")
	g.invalid("track_response_details_error_with_details", "track_response", enc(&protocol.TrackResponse{Results: []protocol.TrackResult{
		{Number: "SF1234567890", Code: protocol.CodeOK, Head: signed, Events: blocks[6:], Details: protocol.Details{protocol.FieldPOD: "signed"}, DetailsError: protocol.DetailsExpired},
	}}), protocol.ErrInvalid, "details and a details error in one result")
	return nil
}

func (g *gen) numbers() error {
	cases := []struct {
		name, scheme, input, output, err, note string
	}{
		{"number_s10", "s10:GB", "RB123456785GB", "RB123456785GB", "", "UPU S10; check digit 5 over serial 12345678 with weights 8 6 4 2 3 5 9 7"},
		{"number_s10_normalized", "s10:GB", " rb 123 456 785-gb ", "RB123456785GB", "", "lower case and separators are normalized away first"},
		{"number_s10_bad_check_digit", "s10:GB", "RB123456786GB", "RB123456786GB", protocol.ErrCheckDigit.Code, "check digit should be 5"},
		{"number_default_scheme", `SF\d{10,20}`, "SF1234567890", "SF1234567890", "", "a carrier's default scheme: its code and 10 to 20 digits"},
		{"number_mod10", `\d{12}:mod10`, "036000291452", "036000291452", "", "GS1 mod 10 (UPC-A example)"},
		{"number_luhn", `\d{11}:luhn`, "79927398713", "79927398713", "", "Luhn, the classic example"},
		{"number_mod7", `\d{10}:mod7`, "1234567891", "1234567891", "", "mod 7: 123456789 mod 7 = 1"},
		{"number_mod11", `JD\d{9}:mod11`, "JD123456785", "JD123456785", "", "mod 11 with S10 weights over all data digits"},
		{"number_luhn_bad", `\d{11}:luhn`, "79927398710", "79927398710", protocol.ErrCheckDigit.Code, "Luhn check digit should be 3"},
		{"number_unicode_space", `SF\d{10,20}`, "SF1234567890\u00a0", "", protocol.ErrInvalidNumber.Code, "no-break space is not one of the separators, so it is an error, not trimmed"},
		{"number_bad_chars", `SF\d{10,20}`, "SF12345*7890", "", protocol.ErrInvalidNumber.Code, "'*' is not a separator"},
	}
	for _, c := range cases {
		g.add(Vector{Name: c.name, Type: "number", Valid: c.err == "", Scheme: c.scheme, Input: c.input, Output: c.output, Error: c.err, Note: c.note})
	}
	return nil
}

func (g *gen) frames() error {
	body := enc(&protocol.TrackRequest{Queries: []protocol.TrackQuery{{Number: "SF1234567890"}}})
	f, err := protocol.AppendFrame(nil, body, protocol.MaxTrackRequest)
	if err != nil {
		return err
	}
	g.add(Vector{Name: "frame_track_request", Type: "frame", Valid: true, Input: hx(f), CBOR: hx(body), Max: protocol.MaxTrackRequest, Note: "varint length, then the track_request message"})
	g.add(Vector{Name: "frame_oversized", Type: "frame", Valid: false, Input: "818004", Max: protocol.MaxTrackRequest, Error: protocol.ErrFrameTooLarge.Code,
		Note: "length prefix 65537 on a track request stream (cap 65536): reject before reading the body"})
	g.add(Vector{Name: "frame_non_minimal_varint", Type: "frame", Valid: false, Input: "810001", Max: protocol.MaxTrackRequest, Error: protocol.ErrBadFrame.Code,
		Note: "length 1 encoded in two bytes"})
	return nil
}

func (g *gen) invalidEncodings() error {
	grantArray := []byte{0xa2, 0x65, 'g', 'r', 'a', 'n', 't', 0x83, 0x01, 0x02, 0x03, 0x67, 'q', 'u', 'e', 'r', 'i', 'e', 's', 0x81, 0xa1, 0x66, 'n', 'u', 'm', 'b', 'e', 'r', 0x6c}
	grantArray = append(grantArray, []byte("SF1234567890")...)
	g.invalid("bytes_as_array", "track_request", grantArray, protocol.ErrNonCanonical, "grant given as an array of integers [1, 2, 3] where a byte string belongs")
	g.invalid("watch_status_with_cursor", "watch_update", enc(map[string]any{"type": "status", "number": "SF9999999999", "code": "not_found", "cursor": "1a2b3c4d.43"}), protocol.ErrInvalid,
		"cursor is a field of other watch message types, not of status")
	g.invalid("watch_status_unknown_field", "watch_update", enc(map[string]any{"type": "status", "number": "SF9999999999", "code": "not_found", "carrier": "SF"}), protocol.ErrUnknownField,
		"carrier is no field of any watch message type")
	g.invalid("watch_heartbeat_without_cursor", "watch_update", enc(map[string]any{"type": "heartbeat", "time": t0}), protocol.ErrInvalid, "a heartbeat must carry the current cursor")
	g.invalid("undefined_value", "track_request", []byte{0xa1, 0x67, 'q', 'u', 'e', 'r', 'i', 'e', 's', 0xf7}, protocol.ErrMalformed, "undefined (0xf7) is not in the data model")
	g.invalid("integer_map_key", "track_request", []byte{0xa1, 0x01, 0x80}, protocol.ErrMalformed, "map keys must be text")
	cidv0 := append([]byte{0xd8, 0x2a, 0x58, 0x23, 0x00}, append([]byte{0x12, 0x20}, bytes.Repeat([]byte{0xaa}, 32)...)...)
	m := append([]byte{0xa1, 0x67, 'q', 'u', 'e', 'r', 'i', 'e', 's', 0x81, 0xa2, 0x65, 'k', 'n', 'o', 'w', 'n'}, cidv0...)
	m = append(m, 0x66, 'n', 'u', 'm', 'b', 'e', 'r', 0x6c)
	m = append(m, []byte("SF1234567890")...)
	g.invalid("link_cidv0", "track_request", m, protocol.ErrBadCID, "a CIDv0 link: record links are CIDv1 dag-cbor sha2-256 only")

	// Major type 7 is judged by its initial byte alone (spec 2.2), and a
	// truncated link content by E3 before E14; null is never an element
	// or a Details value (spec 2.5).
	queries := []byte{0xa1, 0x67, 'q', 'u', 'e', 'r', 'i', 'e', 's'}
	with := func(tail ...byte) []byte { return append(append([]byte{}, queries...), tail...) }
	g.invalid("float_short_argument", "track_request", with(0xf9, 0x00, 0x01), protocol.ErrFloat, "a half float whose argument would be short of shortest form: float, not non_canonical")
	g.invalid("simple_value_one_byte", "track_request", with(0xf8, 0x05), protocol.ErrMalformed, "a simple value in the one-byte form (f8 05): malformed, not non_canonical")
	g.invalid("float_truncated", "track_request", with(0xfb, 0x00), protocol.ErrFloat, "a float64 cut short: float, judged by its initial byte")
	truncated := append([]byte{0xa1, 0x67, 'q', 'u', 'e', 'r', 'i', 'e', 's', 0x81, 0xa1, 0x65, 'k', 'n', 'o', 'w', 'n'}, 0xd8, 0x2a, 0x58, 0x25, 0x00, 0x01, 0x71)
	g.invalid("link_truncated", "track_request", truncated, protocol.ErrMalformed, "a tag-42 byte string that declares 37 bytes and ends after 3: malformed (E3) before bad_cid (E14)")
	g.invalid("null_element", "track_request", with(0x81, 0xf6), protocol.ErrNonCanonical, "queries: [null]: null is not an element of an array")
	// A not_found result with details breaks validation too, but the
	// null is met first: the re-encoding of section 2.4 differs.
	nullDetail := []byte{0xa1, 0x67, 'r', 'e', 's', 'u', 'l', 't', 's', 0x81, 0xa3,
		0x64, 'c', 'o', 'd', 'e', 0x69, 'n', 'o', 't', '_', 'f', 'o', 'u', 'n', 'd',
		0x66, 'n', 'u', 'm', 'b', 'e', 'r', 0x6c, 'S', 'F', '1', '2', '3', '4', '5', '6', '7', '8', '9', '0',
		0x67, 'd', 'e', 't', 'a', 'i', 'l', 's', 0xa1, 0x63, 'p', 'o', 'd', 0xf6}
	g.invalid("null_detail", "track_response", nullDetail, protocol.ErrNonCanonical, "details: {pod: null}: a Details value is never null")
	return nil
}

// The helpers below edit canonical event bytes into specific invalid
// encodings. Each panics if the edit did not apply, so a change to the
// event layout cannot silently produce a valid "invalid" vector.

func mapBody(b []byte) (n int, body []byte) {
	if b[0]&0xe0 != 0xa0 || b[0]&0x1f >= 24 {
		panic("vectors: expected a small map")
	}
	return int(b[0] & 0x1f), b[1:]
}

// entries splits a small canonical map into its key/value byte ranges.
func entries(b []byte) [][]byte {
	n, body := mapBody(b)
	var out [][]byte
	for i := 0; i < n; i++ {
		k := itemLen(body)
		v := itemLen(body[k:])
		out = append(out, body[:k+v])
		body = body[k+v:]
	}
	return out
}

// itemLen returns the encoded length of the first data item in b.
func itemLen(b []byte) int {
	major, info := b[0]>>5, b[0]&0x1f
	hl, arg := 1, uint64(info)
	switch {
	case info == 24:
		hl, arg = 2, uint64(b[1])
	case info == 25:
		hl, arg = 3, uint64(b[1])<<8|uint64(b[2])
	case info == 26:
		hl, arg = 5, uint64(b[1])<<24|uint64(b[2])<<16|uint64(b[3])<<8|uint64(b[4])
	case info == 27:
		hl = 9
		arg = 0
		for _, c := range b[1:9] {
			arg = arg<<8 | uint64(c)
		}
	}
	switch major {
	case 0, 1, 7:
		return hl
	case 2, 3:
		return hl + int(arg)
	case 4:
		n := hl
		for i := uint64(0); i < arg; i++ {
			n += itemLen(b[n:])
		}
		return n
	case 5:
		n := hl
		for i := uint64(0); i < 2*arg; i++ {
			n += itemLen(b[n:])
		}
		return n
	case 6:
		return hl + itemLen(b[hl:])
	}
	panic("unreachable")
}

func rebuild(head []byte, es [][]byte) []byte {
	out := append([]byte{}, head...)
	for _, e := range es {
		out = append(out, e...)
	}
	return out
}

func swapFirstKeys(b []byte) []byte {
	es := entries(b)
	es[0], es[1] = es[1], es[0]
	return rebuild(b[:1], es)
}

func indefiniteMap(b []byte) []byte {
	out := rebuild([]byte{0xbf}, entries(b))
	return append(out, 0xff)
}

func duplicateKey(b []byte) []byte {
	es := entries(b)
	for i, e := range es {
		if bytes.HasPrefix(e, []byte{0x63, 's', 'e', 'q'}) {
			es = append(es[:i+1], es[i:]...)
			return rebuild([]byte{b[0] + 1}, es)
		}
	}
	panic("vectors: no seq key")
}

func replaceValue(b []byte, key string, value []byte) []byte {
	es := entries(b)
	k := append([]byte{0x60 | byte(len(key))}, key...)
	for i, e := range es {
		if bytes.HasPrefix(e, k) {
			es[i] = append(append([]byte{}, k...), value...)
			return rebuild(b[:1], es)
		}
	}
	panic("vectors: no key " + key)
}

func floatTime(b []byte) []byte {
	v := enc(float64(t0)) // fxamacker keeps float64 without ShortestFloat
	if v[0] != 0xfb {
		panic("vectors: float did not encode as float64")
	}
	return replaceValue(b, "time", v)
}

func taggedTime(b []byte) []byte {
	return replaceValue(b, "time", append([]byte{0xc1}, enc(t0/1000)...))
}

// rawTag42 is a tag-42 item around arbitrary bytes, bypassing Link's checks.
type rawTag42 []byte

func (r rawTag42) MarshalCBOR() ([]byte, error) {
	return append([]byte{0xd8, 0x2a, 0x40 | byte(len(r))}, r...), nil
}

func deepExt(depth int) map[string]any {
	var v any = 1
	for i := 0; i < depth; i++ {
		v = []any{v}
	}
	return map[string]any{"x.deep": v}
}

// pubKey is used by Check to build a key resolver from a vector.
func pubKey(v *Vector) ed25519.PublicKey { return ed25519.PublicKey(Bytes(v.PubKey)) }
