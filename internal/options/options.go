// Package options fills in the defaults of the module's Options structs,
// the node's packages' and the testnet's; it sits at the root so that
// testnet/ may import it too.
//
// Each package lists every default of its Options in one table, a
// package-level Options value, and its EnsureDefaults copies them into
// the zero fields with these helpers, so that a default is stated in one
// place and every EnsureDefaults has the same shape:
//
//	func (o *Options) EnsureDefaults() *Options {
//		o = options.New(o)
//		options.Default(&o.Timeout, defaults.Timeout)
//		return o
//	}
package options

import "slices"

// New returns o, or a new zero T when o is nil: a nil *Options stands
// for every default.
func New[T any](o *T) *T {
	if o == nil {
		return new(T)
	}
	return o
}

// Default sets *v to d when *v holds the zero value of T.
func Default[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// DefaultSlice sets *v to a copy of d when *v is empty (nil or of length
// 0). The copy keeps a caller that changes *v from changing the table.
func DefaultSlice[T any](v *[]T, d []T) {
	if len(*v) == 0 {
		*v = slices.Clone(d)
	}
}
