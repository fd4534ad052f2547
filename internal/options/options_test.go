package options

import (
	"slices"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	type opts struct{ N int }
	if o := New[opts](nil); o == nil || *o != (opts{}) {
		t.Fatalf("New(nil) = %v, want a new zero value", o)
	}
	given := &opts{N: 3}
	if o := New(given); o != given {
		t.Fatal("New(o) did not return o itself")
	}
}

func TestDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		v, d time.Duration
		want time.Duration
	}{
		{"zero takes the default", 0, time.Second, time.Second},
		{"set stays", 2 * time.Second, time.Second, 2 * time.Second},
		{"negative stays, for Validate to judge", -1, time.Second, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.v
			Default(&v, tc.d)
			if v != tc.want {
				t.Fatalf("got %v, want %v", v, tc.want)
			}
		})
	}
	for _, tc := range []struct{ v, d, want string }{{"", "open", "open"}, {"off", "open", "off"}} {
		v := tc.v
		Default(&v, tc.d)
		if v != tc.want {
			t.Fatalf("Default(%q, %q) = %q, want %q", tc.v, tc.d, v, tc.want)
		}
	}
}

func TestDefaultSlice(t *testing.T) {
	table := []string{"a", "b"}
	for _, tc := range []struct {
		name string
		v, d []string
		want []string
	}{
		{"nil takes the default", nil, table, table},
		{"empty takes the default", []string{}, table, table},
		{"set stays", []string{"c"}, table, []string{"c"}},
		{"an empty default gives empty, not nil", nil, []string{}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.v
			DefaultSlice(&v, tc.d)
			if v == nil || !slices.Equal(v, tc.want) {
				t.Fatalf("got %#v, want %#v", v, tc.want)
			}
		})
	}
	var v []string
	DefaultSlice(&v, table)
	v[0] = "changed"
	if table[0] != "a" {
		t.Fatal("changing the defaulted slice changed the table")
	}
}
