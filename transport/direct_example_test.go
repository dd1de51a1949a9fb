package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// A recipient domain whose MX host resolves to the cloud metadata address
// gets no connection: the delivery fails permanently, naming the host and
// the address. AllowPrivate would let it through.
func ExampleDirect_nonGlobalAddress() {
	res := mailsectest.NewResolver()
	res.MX("evil.example", dns.MX{Host: "mx.evil.example", Pref: 10})
	res.IP("mx.evil.example", netip.MustParseAddr("169.254.169.254"))
	t := &transport.Direct{Resolver: res, LocalName: "mail.example.com"}
	_, err := t.Deliver(context.Background(), &mailsec.Delivery{
		From:     "app@example.com",
		To:       []string{"ann@evil.example"},
		Security: mailsec.Security{Level: mailsec.Unverified},
		Content:  strings.NewReader("Subject: hi\r\n\r\nnever sent\r\n"),
	})
	var ae *mailsec.AddressError
	if errors.As(err, &ae) {
		fmt.Println(ae.Host, ae.Addr, mailsec.IsTemporary(err))
	}
	// Output: mx.evil.example 169.254.169.254 false
}
