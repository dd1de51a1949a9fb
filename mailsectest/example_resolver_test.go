package mailsectest_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
)

// A mock resolver for a domain whose zone is signed and whose MX host
// publishes a DANE-EE TLSA record, and a failure to exercise retries.
func ExampleResolver() {
	r := mailsectest.NewResolver()
	r.Secure("example.org")
	r.MX("example.org", dns.MX{Host: "mx.example.org", Pref: 10})
	r.IP("mx.example.org", netip.MustParseAddr("192.0.2.25"))
	r.TLSA("_25._tcp.mx.example.org", dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0xde, 0xad}})
	r.Fail("MX", "broken.example", &dns.Error{Kind: dns.ServerFailure})

	ctx := context.Background()
	mx, _ := r.LookupMX(ctx, "Example.org.")
	fmt.Println(mx.Records[0].Host, mx.Authentic)

	tlsa, _ := r.LookupTLSA(ctx, "_25._tcp.mx.example.org")
	fmt.Println(tlsa.Records[0], tlsa.Authentic)

	_, err := r.LookupTXT(ctx, "_mta-sts.example.org")
	fmt.Println(errors.Is(err, dns.ErrNXDomain))

	_, err = r.LookupMX(ctx, "broken.example")
	fmt.Println(err, mailsec.IsTemporary(err))

	fmt.Println(r.Queries("MX", "example.org"))
	// Output:
	// mx.example.org true
	// 3 1 1 dead true
	// true
	// dns: MX broken.example: server failure (SERVFAIL; DNSSEC-bogus answers look like this) true
	// 1
}
