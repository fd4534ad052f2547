package client

import (
	"fmt"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/protocol"
)

// MaxClockSkew is how far in the future a signed head's time may lie
// before the head is rejected: a head from the future is either a carrier
// with a broken clock or a replay meant to look fresh.
const MaxClockSkew = 5 * time.Minute

// Verified is a track result whose signature and chain checked out.
type Verified struct {
	// Head is the carrier's signed statement of the parcel's newest event.
	Head *protocol.SignedHead
	// Events are the decoded events returned, oldest first: those after
	// the known head, or the whole history when Full.
	Events []*protocol.Event
	// CIDs are the CIDs of Events, index for index.
	CIDs []cid.Cid
	// KeyID is the id of the carrier key that signed Head.
	KeyID []byte
	// Full reports that Events start at seq 0: no known head was sent, or
	// the known head is not in this parcel (the number was recycled), and
	// the caller replaces what it holds for the number.
	Full bool
	// More reports that the history continues past Events: ask again with
	// the last CID and seq as known. Such a page is chained to known but
	// reaches the signed head only through the pages after it.
	More bool
}

// VerifyResult checks one track result from carrier against the carrier
// keys, as spec sections 5.8 and 6 describe: the head parses, is the
// queried carrier's and is for the result's number, is signed by a key
// keys binds to that carrier, and is not from the future; the events chain
// from known (at knownSeq; an undefined known means none) up to the head,
// or, for a page marked more, stop short of it. Events that start at seq 0
// although known was sent are checked as a full history, and Full tells
// the caller to apply spec section 6.4 (same parcel resent, fork, or
// recycled number).
//
// res.Number is trusted to be the number asked for; Client.Track checks
// that. A result with a code other than ok fails with that code. Every
// failure carries a protocol error code, which protocol.CodeOf returns.
func VerifyResult(res *protocol.TrackResult, carrier string, keys protocol.KeyResolver, known protocol.Link, knownSeq uint64) (*Verified, error) {
	return verifyResult(res, carrier, keys, known, knownSeq, time.Now(), nil)
}

// checkedHead is a signed head parsed, and its signature checked, ahead
// of verifyResult (the watcher does this on several cores): what
// ParseSignedHead and VerifyWith returned for res.Head.
type checkedHead struct {
	sh       *protocol.SignedHead
	parseErr error
	sigErr   error
	checked  bool // sigErr is the signature's verdict
}

// checkHead parses b and checks its signature against keys.
func checkHead(b []byte, keys protocol.KeyResolver) *checkedHead {
	sh, err := protocol.ParseSignedHead(b)
	if err != nil {
		return &checkedHead{parseErr: err}
	}
	return &checkedHead{sh: sh, sigErr: sh.VerifyWith(keys), checked: true}
}

// verifyResult is VerifyResult at a given time; pre, when not nil, is
// res.Head already parsed and checked against keys.
func verifyResult(res *protocol.TrackResult, carrier string, keys protocol.KeyResolver, known protocol.Link, knownSeq uint64, now time.Time, pre *checkedHead) (*Verified, error) {
	switch res.Code {
	case protocol.CodeOK:
	case "":
		return nil, fmt.Errorf("%w: track result for %q without a code", protocol.ErrInvalid, res.Number)
	default:
		// The carrier's own words when it gave some; the code is beside
		// the message wherever it is shown.
		msg := strings.TrimSpace(res.Message)
		switch {
		case msg != "":
		case res.Code == protocol.CodeNotFound:
			msg = fmt.Sprintf("the carrier holds no parcel %s", res.Number)
		default:
			msg = fmt.Sprintf("the carrier gave no reason for %s", res.Number)
		}
		return nil, &protocol.Error{Code: res.Code, Msg: msg}
	}
	if pre == nil {
		pre = &checkedHead{}
		pre.sh, pre.parseErr = protocol.ParseSignedHead(res.Head)
	}
	sh, err := pre.sh, pre.parseErr
	if err != nil {
		return nil, err
	}
	if sh.Carrier != carrier {
		return nil, fmt.Errorf("%w: signed head is %s's, asked %s", protocol.ErrWrongCarrier, sh.Carrier, carrier)
	}
	if sh.Number != res.Number {
		return nil, fmt.Errorf("%w: signed head is for %q, result for %q", protocol.ErrHeadMismatch, sh.Number, res.Number)
	}
	// The signature is judged after carrier and number, so that a head
	// of another carrier is reported as that, not as an unknown key.
	sigErr := pre.sigErr
	if !pre.checked {
		sigErr = sh.VerifyWith(keys)
	}
	if sigErr != nil {
		return nil, sigErr
	}
	if limit := now.Add(MaxClockSkew).UnixMilli(); sh.Time > limit {
		return nil, fmt.Errorf("%w: head signed at %s, more than %s ahead of %s", protocol.ErrExpired, protocol.FormatTime(sh.Time), MaxClockSkew, protocol.FormatTime(now.UnixMilli()))
	}

	if known.Defined() && len(res.Events) > 0 {
		first, err := protocol.DecodeEvent(res.Events[0])
		if err != nil {
			return nil, fmt.Errorf("event 0: %w", err)
		}
		if first.Seq == 0 {
			known, knownSeq = protocol.Link{}, 0
		}
	}
	v := &Verified{Head: sh, KeyID: sh.KeyID(), Full: !known.Defined(), More: res.More}
	verify, last := protocol.VerifySuffix, sh.Head.Head.Cid
	if res.More {
		verify = protocol.VerifyPage
		if len(res.Events) > 0 {
			last = protocol.CIDOf(res.Events[len(res.Events)-1])
		}
	}
	if v.Events, err = verify(&sh.Head, known, knownSeq, res.Events); err != nil {
		return nil, err
	}
	// The chain is verified, so each event's CID is the next one's prev
	// link, and the last one's is the head's (or, on a page, was hashed
	// above): no hashing every event again.
	v.CIDs = make([]cid.Cid, len(v.Events))
	for i := range v.Events {
		if i+1 < len(v.Events) {
			v.CIDs[i] = v.Events[i+1].Prev.Cid
		} else {
			v.CIDs[i] = last
		}
	}
	return v, nil
}
