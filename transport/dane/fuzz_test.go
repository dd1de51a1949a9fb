package dane_test

import (
	"crypto/x509"
	"errors"
	"slices"
	"testing"

	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/dane"
)

// FuzzVerify feeds arbitrary TLSA records and certificate bytes to Usable
// and Verify. Nothing may panic, and a match must be one of the usable
// records.
func FuzzVerify(f *testing.F) {
	p := newPKI(f)
	for _, c := range []struct {
		r   dns.TLSA
		der []byte
	}{
		{rec(3, 1, 1, p.leaf.cert), p.leaf.cert.Raw},
		{rec(2, 0, 0, p.root.cert), p.inter.cert.Raw},
		{rec(2, 1, 2, p.inter.cert), p.inter.cert.Raw},
		{rec(3, 0, 0, p.selfSigned.cert), p.selfSigned.cert.Raw},
		{dns.TLSA{Usage: 2, Selector: 1, MatchingType: 0, Data: p.inter.cert.RawSubjectPublicKeyInfo}, p.inter.cert.Raw},
		{dns.TLSA{Usage: 4, Selector: 7, MatchingType: 9, Data: []byte{1}}, []byte{0x30, 0x00}},
	} {
		f.Add(c.r.Usage, c.r.Selector, c.r.MatchingType, c.r.Data, c.der, "mx.example.org")
	}
	const maxLen = 8 << 10
	f.Fuzz(func(t *testing.T, usage, selector, mtype uint8, data, der []byte, name string) {
		if len(data) > maxLen || len(der) > maxLen || len(name) > 300 {
			return
		}
		recs := []dns.TLSA{
			{Usage: usage, Selector: selector, MatchingType: mtype, Data: data},
			// The same data under the other usages, so that every record
			// is tried against both the leaf and its issuers.
			{Usage: usage ^ 1, Selector: selector, MatchingType: mtype, Data: data},
		}
		usable := dane.Usable(recs)
		for _, r := range usable {
			if r.Usage != 2 && r.Usage != 3 || r.Selector > 1 || r.MatchingType > 2 {
				t.Fatalf("Usable kept %v", r)
			}
		}
		var chains [][]*x509.Certificate
		if c, err := x509.ParseCertificate(der); err == nil {
			chains = append(chains, []*x509.Certificate{c}, []*x509.Certificate{p.leaf.cert, c}, []*x509.Certificate{c, p.inter.cert, c})
		}
		chains = append(chains, nil, []*x509.Certificate{p.leaf.cert, p.inter.cert})
		for _, chain := range chains {
			m, err := dane.Verify(chain, recs, []string{name, "mx.example.org"}, testNow)
			if err != nil {
				var de *dane.Error
				if !errors.As(err, &de) || de.ResultType() == "" || de.Error() == "" {
					t.Fatalf("error %T %v", err, err)
				}
				continue
			}
			if !slices.ContainsFunc(usable, func(r dns.TLSA) bool { return tlsaEqual(r, m.Record) }) {
				t.Fatalf("matched %v, not a usable record", m.Record)
			}
			if m.Depth < 0 || m.Depth > len(chain) {
				t.Fatalf("match depth %d for a chain of %d", m.Depth, len(chain))
			}
		}
	})
}
