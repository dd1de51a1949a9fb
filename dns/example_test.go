package dns_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailsec/mailsec/dns"
)

// A Client asking the validating resolver on this host. Answers it
// validated are Authentic, which DANE needs; a server failure, which is
// also how a validating resolver reports a tampered answer, is temporary.
func ExampleClient() {
	addr, stop := startLocalResolver()
	defer stop()

	r := &dns.Client{Servers: []string{addr}, Timeout: 2 * time.Second}
	ctx := context.Background()

	mx, err := r.LookupMX(ctx, "example.org")
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range mx.Records {
		fmt.Println("MX", m.Pref, m.Host)
	}
	fmt.Println("authentic:", mx.Authentic)

	_, err = r.LookupTLSA(ctx, "_25._tcp.mx2.example.org")
	fmt.Println("no TLSA records:", dns.IsNotFound(err))

	_, err = r.LookupTLSA(ctx, "_25._tcp.bogus.example.org")
	var de *dns.Error
	fmt.Println("try again later:", errors.As(err, &de) && de.Temporary())
	// Output:
	// MX 10 mx.example.org
	// authentic: true
	// no TLSA records: true
	// try again later: true
}

// Using a validating resolver elsewhere on a network path you trust (a
// protected LAN, or a VPN): without TrustAD, answers from a non-loopback
// address are never Authentic, and DANE cannot be used.
func ExampleClient_trustAD() {
	r := &dns.Client{
		Servers: []string{"192.0.2.53:53", "192.0.2.54:53"},
		TrustAD: true,
		Timeout: 3 * time.Second,
	}
	fmt.Println(r.Servers, r.TrustAD)
	// Output: [192.0.2.53:53 192.0.2.54:53] true
}

// An MX host's addresses: its A and AAAA records, asked together.
func ExampleClient_LookupIP() {
	addr, stop := startLocalResolver()
	defer stop()
	r := &dns.Client{Servers: []string{addr}}

	ans, err := r.LookupIP(context.Background(), "mx.example.org")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ans.Records, ans.Authentic)
	// Output: [192.0.2.25 2001:db8::25] true
}

// A TXT record comes back as one string, its character-strings joined.
func ExampleClient_LookupTXT() {
	addr, stop := startLocalResolver()
	defer stop()
	r := &dns.Client{Servers: []string{addr}}

	ans, err := r.LookupTXT(context.Background(), "_mta-sts.example.org")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", ans.Records)
	// Output: ["v=STSv1; id=20250101;"]
}

// The TLSA records of an MX host, as DANE (package transport/dane) uses
// them: only when the answer is Authentic.
func ExampleClient_LookupTLSA() {
	addr, stop := startLocalResolver()
	defer stop()
	r := &dns.Client{Servers: []string{addr}}

	ans, err := r.LookupTLSA(context.Background(), "_25._tcp.mx.example.org")
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range ans.Records {
		fmt.Println(t.Usage, t.Selector, t.MatchingType, len(t.Data), ans.Authentic)
	}
	// Output: 3 1 1 32 true
}

// A denial, NXDOMAIN or NODATA, is not a failure to retry: the name or
// its records do not exist.
func ExampleIsNotFound() {
	err := &dns.Error{Name: "_mta-sts.example.net", Type: "TXT", Kind: dns.NXDomain}
	fmt.Println(dns.IsNotFound(err), errors.Is(err, dns.ErrNXDomain), errors.Is(err, dns.ErrNoRecords))

	err = &dns.Error{Name: "example.net", Type: "MX", Kind: dns.ServerFailure}
	fmt.Println(dns.IsNotFound(err))
	// Output:
	// true true false
	// false
}

// Every failed lookup is an *Error that names the name, the record type
// and the kind of failure, and says whether asking again may help.
func ExampleError() {
	r := &dns.Client{Servers: []string{"127.0.0.1:53"}}
	_, err := r.LookupMX(context.Background(), "exa mple.org")

	var de *dns.Error
	if errors.As(err, &de) {
		fmt.Println(de.Kind == dns.InvalidName, de.Temporary())
		fmt.Println(err)
	}
	// Output:
	// true false
	// dns: MX "exa mple.org": not a domain name in A-label form: character ' ' is not allowed (letters, digits, '-', '_' and dots)
}

// A TLSA record prints as in a zone file.
func ExampleTLSA_String() {
	t := dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0xde, 0xad, 0xbe, 0xef}}
	fmt.Println(t)
	// Output: 3 1 1 deadbeef
}

// loggingResolver is a Resolver that logs each MX lookup before asking
// another one: whatever takes a Resolver (transport.Direct, mtasts,
// tlsrpt, pgp.WKD) takes it.
type loggingResolver struct {
	dns.Resolver
	log *strings.Builder
}

func (r loggingResolver) LookupMX(ctx context.Context, name string) (dns.Answer[dns.MX], error) {
	fmt.Fprintf(r.log, "MX %s\n", name)
	return r.Resolver.LookupMX(ctx, name)
}

func ExampleResolver() {
	addr, stop := startLocalResolver()
	defer stop()

	var lookups strings.Builder
	var r dns.Resolver = loggingResolver{Resolver: &dns.Client{Servers: []string{addr}}, log: &lookups}
	ans, err := r.LookupMX(context.Background(), "example.org")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(lookups.String())
	fmt.Println(ans.Records[0].Host)
	// Output:
	// MX example.org
	// mx.example.org
}

// startLocalResolver stands in for a validating resolver on 127.0.0.1: it
// answers for a signed example.org, and SERVFAIL for bogus.example.org.
func startLocalResolver() (addr string, stop func()) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	zone := map[[2]string]string{
		{"example.org.", "MX"}:               "example.org. 300 IN MX 10 mx.example.org.",
		{"mx.example.org.", "A"}:             "mx.example.org. 300 IN A 192.0.2.25",
		{"mx.example.org.", "AAAA"}:          "mx.example.org. 300 IN AAAA 2001:db8::25",
		{"_mta-sts.example.org.", "TXT"}:     `_mta-sts.example.org. 300 IN TXT "v=STSv1; " "id=20250101;"`,
		{"_25._tcp.mx.example.org.", "TLSA"}: "_25._tcp.mx.example.org. 300 IN TLSA 3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d",
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		m.AuthenticatedData = true
		name, typ := q.Question[0].Name, mdns.TypeToString[q.Question[0].Qtype]
		if name == "bogus.example.org." || mdns.IsSubDomain("bogus.example.org.", name) {
			m.Rcode = mdns.RcodeServerFailure
			m.AuthenticatedData = false
		} else if rr, ok := zone[[2]string{name, typ}]; ok {
			r, _ := mdns.NewRR(rr)
			m.Answer = append(m.Answer, r)
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	return pc.LocalAddr().String(), func() { srv.Shutdown() }
}
