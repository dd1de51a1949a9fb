package smime

import (
	"context"
	"crypto/x509"
	"slices"
	"testing"
)

// The content is AES-256-GCM only when every recipient allows it,
// whatever their order; RSA-OAEP goes to a certificate only when every
// address it is chosen for allows it; Readers overrides Algorithms;
// without either, nothing but the defaults.
func TestSealingFor(t *testing.T) {
	ks := testKeys(t)
	a, b := ks[0].cert, ks[1].cert
	allow := map[string]Algorithms{
		"gcm-oaep@example.org": {GCM: true, OAEP: true},
		"gcm@example.org":      {GCM: true},
		"oaep@example.org":     {OAEP: true},
	}
	readers := func(_ context.Context, addr string, _ *x509.Certificate) Algorithms { return allow[addr] }
	for _, c := range []struct {
		p      *Protector
		rcpts  []string
		picked []*x509.Certificate
		gcm    bool
		certs  []*x509.Certificate
		oaep   []bool
	}{
		{&Protector{readers: readers}, []string{"gcm-oaep@example.org"}, []*x509.Certificate{a}, true, []*x509.Certificate{a}, []bool{true}},
		{&Protector{readers: readers}, []string{"gcm-oaep@example.org", "oaep@example.org"}, []*x509.Certificate{a, b}, false, []*x509.Certificate{a, b}, []bool{true, true}},
		{&Protector{readers: readers}, []string{"oaep@example.org", "gcm-oaep@example.org"}, []*x509.Certificate{b, a}, false, []*x509.Certificate{b, a}, []bool{true, true}},
		{&Protector{readers: readers}, []string{"gcm@example.org", "gcm-oaep@example.org"}, []*x509.Certificate{a, b}, true, []*x509.Certificate{a, b}, []bool{false, true}},
		{&Protector{readers: readers}, []string{"nobody@example.org", "gcm-oaep@example.org"}, []*x509.Certificate{a, b}, false, []*x509.Certificate{a, b}, []bool{false, true}},
		// One certificate for two addresses: OAEP only if both allow it.
		{&Protector{readers: readers}, []string{"gcm-oaep@example.org", "gcm@example.org"}, []*x509.Certificate{a, a}, true, []*x509.Certificate{a}, []bool{false}},
		{&Protector{readers: readers}, []string{"gcm-oaep@example.org", "oaep@example.org"}, []*x509.Certificate{a, a}, false, []*x509.Certificate{a}, []bool{true}},
		{&Protector{readers: readers}, []string{"gcm@example.org", "gcm-oaep@example.org"}, []*x509.Certificate{a, a}, true, []*x509.Certificate{a}, []bool{false}},
		// Readers decides in place of Algorithms.
		{&Protector{readers: readers, algorithms: Algorithms{GCM: true, OAEP: true}}, []string{"nobody@example.org"}, []*x509.Certificate{a}, false, []*x509.Certificate{a}, []bool{false}},
		{&Protector{algorithms: Algorithms{GCM: true, OAEP: true}}, []string{"x@example.org", "y@example.org"}, []*x509.Certificate{a, b}, true, []*x509.Certificate{a, b}, []bool{true, true}},
		{&Protector{algorithms: Algorithms{OAEP: true}}, []string{"x@example.org"}, []*x509.Certificate{a}, false, []*x509.Certificate{a}, []bool{true}},
		{&Protector{}, []string{"gcm-oaep@example.org"}, []*x509.Certificate{a}, false, []*x509.Certificate{a}, []bool{false}},
	} {
		s := c.p.sealingFor(context.Background(), c.rcpts, c.picked)
		if s.gcm != c.gcm || !slices.EqualFunc(s.certs, c.certs, (*x509.Certificate).Equal) || !slices.Equal(s.oaep, c.oaep) {
			t.Errorf("%v: gcm %v, %d certificates, OAEP %v; want %v, %d, %v", c.rcpts, s.gcm, len(s.certs), s.oaep, c.gcm, len(c.certs), c.oaep)
		}
	}
}
