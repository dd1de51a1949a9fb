package mtasts

import (
	"strconv"
	"strings"
)

// What the external tests need of the package's internals.

// ClientCache is the Cache a Client uses: its Cache, or its own in-memory
// one.
var ClientCache = (*Client).cache

// ValidEntry reports whether b is a cache entry a Client would use for
// domain.
func ValidEntry(domain string, b []byte) error {
	_, err := decodeEntry(domain, b)
	return err
}

// PolicyText is a policy file in mode with max_age maxAge listing mx.
func PolicyText(mode Mode, maxAge int, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + string(mode) + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(maxAge) + "\r\n")
	return b.String()
}
