package mailsec_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/miekg/dns"

	"github.com/mailsec/mailsec"
)

// A DNSResolver asking the validating resolver on this host. Answers it
// validated are Authentic, which DANE needs; a server failure, which is
// also how a validating resolver reports a tampered answer, is temporary.
func ExampleDNSResolver() {
	addr, stop := startLocalResolver()
	defer stop()

	r := &mailsec.DNSResolver{Servers: []string{addr}, Timeout: 2 * time.Second}
	ctx := context.Background()

	mx, err := r.LookupMX(ctx, "example.org")
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range mx.Records {
		fmt.Println("MX", m.Pref, m.Host)
	}
	fmt.Println("authentic:", mx.Authentic)

	_, err = r.LookupTLSA(ctx, "_25._tcp.mx.example.org")
	fmt.Println("no TLSA records:", mailsec.IsNotFound(err))

	_, err = r.LookupTLSA(ctx, "_25._tcp.bogus.example.org")
	fmt.Println("try again later:", mailsec.IsTemporary(err))
	// Output:
	// MX 10 mx.example.org
	// authentic: true
	// no TLSA records: true
	// try again later: true
}

// Using a validating resolver elsewhere on a network path you trust (a
// protected LAN, or a VPN): without TrustAD, answers from a non-loopback
// address are never Authentic, and DANE cannot be used.
func ExampleDNSResolver_trustAD() {
	r := &mailsec.DNSResolver{
		Servers: []string{"192.0.2.53:53", "192.0.2.54:53"},
		TrustAD: true,
		Timeout: 3 * time.Second,
	}
	fmt.Println(r.Servers, r.TrustAD)
	// Output: [192.0.2.53:53 192.0.2.54:53] true
}

// startLocalResolver stands in for a validating resolver on 127.0.0.1: it
// answers for a signed example.org, and SERVFAIL for bogus.example.org.
func startLocalResolver() (addr string, stop func()) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mx, _ := dns.NewRR("example.org. 300 IN MX 10 mx.example.org.")
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.AuthenticatedData = true
		switch name := q.Question[0].Name; {
		case name == "bogus.example.org." || dns.IsSubDomain("bogus.example.org.", name):
			m.Rcode = dns.RcodeServerFailure
			m.AuthenticatedData = false
		case name == "example.org." && q.Question[0].Qtype == dns.TypeMX:
			m.Answer = append(m.Answer, mx)
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	return pc.LocalAddr().String(), func() { srv.Shutdown() }
}
