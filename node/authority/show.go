package authority

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opentrack/opentrack/protocol"
)

// Signature states of a View.
const (
	SignatureNotChecked = "not checked"
	SignatureValid      = "valid"
	SignatureRejected   = "rejected"
)

// View is a signed registry as `opentrack registry show` presents it. Its
// JSON keys are part of the command's output contract.
type View struct {
	Seq       uint64        `json:"seq"`
	Issued    time.Time     `json:"issued"`
	NotBefore time.Time     `json:"not_before"`
	NotAfter  time.Time     `json:"not_after"`
	SignedBy  string        `json:"signed_by"`            // key id of the signing key, hex
	Signature string        `json:"signature"`            // SignatureNotChecked, SignatureValid or SignatureRejected
	Error     string        `json:"error,omitempty"`      // why the edition was rejected
	ErrorCode string        `json:"error_code,omitempty"` // protocol error code of Error, such as "untrusted_issuer"
	Carriers  []CarrierView `json:"carriers"`
}

// CarrierView is one carrier of a View.
type CarrierView struct {
	Code    string     `json:"code"`
	Name    string     `json:"name"`
	Country string     `json:"country"`
	Keys    []KeyView  `json:"keys"`
	Nodes   []NodeView `json:"nodes"`
	Schemes []string   `json:"schemes"` // text form; empty means the default scheme
}

// KeyView is a carrier key of a View.
type KeyView struct {
	KeyID     string    `json:"key_id"`
	Key       string    `json:"key"` // raw Ed25519 public key, hex
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	State     string    `json:"state"` // at the time of showing: "valid", "expired" or "not yet valid"
}

// NodeView is a node of a View.
type NodeView struct {
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"`
}

// Show decodes a signed registry for display. With anchors, it also
// verifies the edition as a node would at now, and records the outcome in
// View.Signature rather than failing, so that a rejected edition can still
// be inspected. A file that is not a well-formed registry is an error.
func Show(signed []byte, anchors []ed25519.PublicKey, now time.Time) (*View, error) {
	s, err := protocol.ParseSigned(signed, protocol.ContentRegistry)
	if err != nil {
		return nil, err
	}
	var r protocol.Registry
	if err := protocol.UnmarshalCanonical(s.Payload, &r); err != nil {
		return nil, fmt.Errorf("registry payload: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	v := &View{Seq: r.Seq, Issued: ms(r.Issued), NotBefore: ms(r.NotBefore), NotAfter: ms(r.NotAfter),
		SignedBy: hex.EncodeToString(s.KeyID), Signature: SignatureNotChecked, Carriers: []CarrierView{}}
	if len(anchors) > 0 {
		v.Signature = SignatureValid
		if _, err := protocol.OpenRegistry(signed, anchors, now.UnixMilli()); err != nil {
			v.Signature, v.Error, v.ErrorCode = SignatureRejected, err.Error(), protocol.CodeOf(err)
		}
	}
	for _, c := range r.Carriers {
		cv := CarrierView{Code: c.Code, Name: c.Name, Country: c.Country, Keys: []KeyView{}, Nodes: []NodeView{}, Schemes: []string{}}
		for _, k := range c.Keys {
			kv := KeyView{KeyID: protocol.KeyIDString(k.Key), Key: hex.EncodeToString(k.Key), NotBefore: ms(k.NotBefore), NotAfter: ms(k.NotAfter), State: "valid"}
			switch at := now.UnixMilli(); {
			case at < k.NotBefore:
				kv.State = "not yet valid"
			case at > k.NotAfter:
				kv.State = "expired"
			}
			cv.Keys = append(cv.Keys, kv)
		}
		for _, n := range c.Nodes {
			cv.Nodes = append(cv.Nodes, NodeView{Peer: n.Peer, Addrs: append([]string{}, n.Addrs...)})
		}
		for _, sc := range c.Schemes {
			cv.Schemes = append(cv.Schemes, sc.String())
		}
		v.Carriers = append(v.Carriers, cv)
	}
	return v, nil
}

func ms(t int64) time.Time { return time.UnixMilli(t).UTC() }

// WriteText prints v for a person to read.
func (v *View) WriteText(w io.Writer) error {
	const layout = time.RFC3339
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "registry seq %d, issued %s, valid %s to %s\n", v.Seq, v.Issued.Format(layout), v.NotBefore.Format(layout), v.NotAfter.Format(layout))
	switch v.Signature {
	case SignatureNotChecked:
		fmt.Fprintf(tw, "signed by key %s: signature not checked (give --trust to check it)\n", v.SignedBy)
	case SignatureValid:
		fmt.Fprintf(tw, "signed by key %s: signature valid, edition in force\n", v.SignedBy)
	default:
		fmt.Fprintf(tw, "signed by key %s: REJECTED: %s\n", v.SignedBy, v.Error)
	}
	fmt.Fprintf(tw, "%d carriers\n", len(v.Carriers))
	for _, c := range v.Carriers {
		fmt.Fprintf(tw, "\n%s\t%s (%s)\n", c.Code, c.Name, c.Country)
		for _, k := range c.Keys {
			fmt.Fprintf(tw, "  key\t%s\t%s to %s\t%s\n", k.KeyID, k.NotBefore.Format(layout), k.NotAfter.Format(layout), k.State)
		}
		if len(c.Nodes) == 0 {
			fmt.Fprintf(tw, "  node\t(none: clients cannot reach this carrier)\n")
		}
		for _, n := range c.Nodes {
			fmt.Fprintf(tw, "  node\t%s\t%s\n", n.Peer, strings.Join(n.Addrs, " "))
		}
		schemes := strings.Join(c.Schemes, " ")
		if schemes == "" {
			schemes = protocol.DefaultScheme(c.Code).String() + " (default)"
		}
		fmt.Fprintf(tw, "  schemes\t%s\n", schemes)
	}
	return tw.Flush()
}
