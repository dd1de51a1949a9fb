package smtpwire

import "testing"

// RFC 6533's QCHAR leaves out "+", "=" and "\": each is written as
// \x{HEX} in both encodings, so that "\x{...}" in an address cannot be
// read as an escape.
func TestUTF8AddrEscapes(t *testing.T) {
	for in, want := range map[string][2]string{
		`a+b=c@example.org`:  {`a\x{2B}b\x{3D}c@example.org`, `a\x{2B}b\x{3D}c@example.org`},
		`"a\b"@example.org`:  {`"a\x{5C}b"@example.org`, `"a\x{5C}b"@example.org`},
		`\x{41}@example.org`: {`\x{5C}x{41}@example.org`, `\x{5C}x{41}@example.org`},
		`jürgen@example.org`: {`j\x{FC}rgen@example.org`, `jürgen@example.org`},
		"a b@example.org":    {`a\x{20}b@example.org`, `a\x{20}b@example.org`},
	} {
		if got := UTF8AddrXText(in); got != want[0] {
			t.Errorf("UTF8AddrXText(%q) = %q, want %q", in, got, want[0])
		}
		if got := UTF8AddrUnitext(in); got != want[1] {
			t.Errorf("UTF8AddrUnitext(%q) = %q, want %q", in, got, want[1])
		}
	}
}
