package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestMarshalFrameMatchesAppendFrame(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range []struct {
		name string
		v    any
		max  int
		err  error
	}{
		{"small", &TrackRequest{Queries: []TrackQuery{{Number: "RB123456785GB"}}}, MaxTrackRequest, nil},
		{"length takes two bytes", &TrackRequest{Queries: []TrackQuery{{Number: strings.Repeat("A", 200)}}}, MaxTrackRequest, nil},
		{"at the cap", &TrackRequest{Queries: []TrackQuery{{Number: "X"}}}, -1, nil},
		{"over the cap", &TrackRequest{Queries: []TrackQuery{{Number: "XY"}}}, -2, ErrFrameTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			max := tc.max
			if max < 0 { // relative to this message's size
				max = len(msg) + max + 1
			}
			got, err := MarshalFrame(&buf, tc.v, max)
			if !errors.Is(err, tc.err) {
				t.Fatalf("MarshalFrame error %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			want, err := AppendFrame(nil, msg, max)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("MarshalFrame\n%x\nwant\n%x", got, want)
			}
		})
	}
}
