// Package typednil tells a typed nil from a value: an interface that
// holds a nil pointer, func, map, slice or channel is not == nil, and its
// methods panic when they use the receiver. Configuration fields of
// interface type (a Resolver, a Cache, a Dialer) are checked with it, so
// that such a value gets an error that names the field instead of a
// panic deep inside a delivery.
package typednil

import "reflect"

// Is reports whether v is nil or holds a nil pointer, func, map, slice or
// channel.
func Is(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}
