package dns_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
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

	_, err = r.LookupTLSA(ctx, "_25._tcp.mx.example.org")
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

// startLocalResolver stands in for a validating resolver on 127.0.0.1: it
// answers for a signed example.org, and SERVFAIL for bogus.example.org.
func startLocalResolver() (addr string, stop func()) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mx, _ := mdns.NewRR("example.org. 300 IN MX 10 mx.example.org.")
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		m.AuthenticatedData = true
		switch name := q.Question[0].Name; {
		case name == "bogus.example.org." || mdns.IsSubDomain("bogus.example.org.", name):
			m.Rcode = mdns.RcodeServerFailure
			m.AuthenticatedData = false
		case name == "example.org." && q.Question[0].Qtype == mdns.TypeMX:
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
