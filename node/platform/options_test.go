package platform

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/node/discovery"
)

// TestOptionsValidate: the defaults are valid, and each bad option is
// named in the one error, the client's own included.
func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want []string // in the error; none for a valid Options
	}{
		{"defaults", Options{}, nil},
		{"bad listen address", Options{ListenAddrs: []string{"not a multiaddr"}}, []string{`listen address "not a multiaddr"`}},
		{"exchange options without exchange", Options{ExchangeOptions: &discovery.ExchangeOptions{}}, []string{"ExchangeOptions without Exchange"}},
		{"the client's bad option", Options{Client: &client.Options{RequestTimeout: -time.Second}}, []string{"RequestTimeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.EnsureDefaults().Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Validate = %v, want ErrInvalidOptions", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, lacks %q", err, w)
				}
			}
		})
	}
}
