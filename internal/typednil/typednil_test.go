package typednil

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func TestIs(t *testing.T) {
	var r *bytes.Reader
	var d *net.Dialer
	var f func()
	var m map[string]int
	for _, v := range []any{nil, r, io.Reader(r), d, f, m, []int(nil), (chan int)(nil)} {
		if !Is(v) {
			t.Errorf("Is(%T) = false", v)
		}
	}
	for _, v := range []any{0, "", struct{}{}, new(net.Dialer), bytes.NewReader(nil), map[string]int{}, []int{}, func() {}} {
		if Is(v) {
			t.Errorf("Is(%T %v) = true", v, v)
		}
	}
}
