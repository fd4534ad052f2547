package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/opentrack/opentrack/protocol"
)

func demoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Sign a sample parcel with a fresh carrier key, verify it, then show a forgery being caught",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.OutOrStdout()) },
	}
}

func runDemo(w io.Writer) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signer, err := protocol.NewSigner(key)
	if err != nil {
		return err
	}
	steps := []struct {
		status protocol.Status
		reason string
		loc    protocol.Location
	}{
		{protocol.StatusInfoReceived, "", protocol.Location{Country: "CN", Locode: "CNSZX", City: "Shenzhen"}},
		{protocol.StatusPickedUp, "", protocol.Location{Country: "CN", Locode: "CNSZX", City: "Shenzhen", Facility: "SZX-NANSHAN-07"}},
		{protocol.StatusDepartedFacility, "", protocol.Location{Country: "CN", Locode: "CNSZX", City: "Shenzhen", Facility: "SZX-HUB-01"}},
		{protocol.StatusArrivedAtFacility, "", protocol.Location{Country: "CN", Locode: "CNSHA", City: "Shanghai", Facility: "SHA-HUB-02"}},
		{protocol.StatusOutForDelivery, "", protocol.Location{Country: "CN", Locode: "CNSHA", City: "Shanghai"}},
		{protocol.StatusDelivered, "to_locker", protocol.Location{Country: "CN", Locode: "CNSHA", City: "Shanghai"}},
	}
	const number = "SF1234567890"
	start := time.Now().Add(-48 * time.Hour).UnixMilli()
	var blocks [][]byte
	var prev protocol.Link
	for i, s := range steps {
		b, c, err := protocol.EncodeEvent(&protocol.Event{
			Carrier: "SF", Number: number, Seq: uint64(i), Time: start + int64(i)*8*3600_000,
			Status: s.status, Reason: s.reason, Location: s.loc, Prev: prev,
		})
		if err != nil {
			return err
		}
		blocks, prev = append(blocks, b), protocol.LinkTo(c)
	}
	signed, err := protocol.SignHead(signer, &protocol.Head{Carrier: "SF", Number: number, Seq: uint64(len(blocks) - 1), Head: prev, Time: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	keys := protocol.PublicKeyResolver{Carrier: "SF", Key: signer.Public()}

	fmt.Fprintf(w, "carrier SF signs parcel %s with key %s\n\n", number, protocol.KeyIDString(signer.Public()))
	events, err := verify(signed, blocks, keys)
	if err != nil {
		return fmt.Errorf("honest parcel failed to verify: %w", err)
	}
	for _, e := range events {
		when := time.UnixMilli(e.Time).UTC().Format("2006-01-02 15:04")
		fmt.Fprintf(w, "  %d  %s  %-20s %-10s %s %s\n", e.Seq, when, e.Status, e.Reason, e.Location.City, e.Location.Facility)
	}
	fmt.Fprintf(w, "\nverified: signature and %d-event chain, head %s\n", len(events), prev)

	forged := append([][]byte{}, blocks...)
	forged[3] = bytes.Replace(blocks[3], []byte("Shanghai"), []byte("Shenzhen"), 1)
	if _, err := verify(signed, forged, keys); err == nil {
		return fmt.Errorf("a forged event verified")
	} else {
		fmt.Fprintf(w, "forgery (seq 3 moved to Shenzhen in transit) rejected: %s\n", protocol.CodeOf(err))
	}
	return nil
}

func verify(signed []byte, blocks [][]byte, keys protocol.KeyResolver) ([]*protocol.Event, error) {
	sh, err := protocol.ParseSignedHead(signed)
	if err != nil {
		return nil, err
	}
	if err := sh.VerifyWith(keys); err != nil {
		return nil, err
	}
	return protocol.VerifyChain(&sh.Head, blocks)
}
