package dane

import "testing"

func TestMatchName(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"mx.example.org", "mx.example.org", true},
		{"MX.Example.Org", "mx.EXAMPLE.org", true},
		{"mx.example.org.", "mx.example.org", true},
		{"mx.example.org", "mx.example.org.", true},
		{"mx.example.org", "mx2.example.org", false},
		{"mx.example.org", "example.org", false},
		{"mx.example.org", "", false},
		{"", "mx.example.org", false},
		{"*.example.org", "mx.example.org", true},
		{"*.EXAMPLE.org", "MX.example.ORG", true},
		{"*.example.org", "example.org", false},
		{"*.example.org", "a.mx.example.org", false},
		{"*.example.org", ".example.org", false},
		{"*.example.org", "*.example.org", false},
		{"*.org", "example.org", false},
		{"*", "org", false},
		{"f*.example.org", "foo.example.org", false},
		{"*x.example.org", "mx.example.org", false},
		{"mx.*.org", "mx.example.org", false},
		{"*.*.org", "mx.example.org", false},
		{"**.example.org", "mx.example.org", false},
		{"mx.example.org", "mx.example.org\x00", false},
		{"mx.ex\u212aample.org", "mx.exkample.org", false},
		{"mx.example.org", "mx.example.org ", false},
	}
	for _, tt := range tests {
		if got := matchName(tt.pattern, tt.name); got != tt.want {
			t.Errorf("matchName(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}
