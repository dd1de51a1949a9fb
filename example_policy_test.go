package mailsec_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// "Encrypt for those we can, send a link to the rest, never plain."
func ExampleNoticeWhenNoKey() {
	annKey, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	protector, err := pgp.New(pgp.NewKeyRing(annKey), nil)
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy())),
		Protectors: []mailsec.Protector{protector},
		Notice: func(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (*mailsec.Notice, error) {
			return &mailsec.Notice{Text: "You have a new message: https://app.example.com/inbox"}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	receipt, err := sender.Send(context.Background(), &mailsec.Message{
		From:    "lab@example.com",
		To:      []string{"ann@example.org", "bob@example.org"},
		Subject: "Your results",
		Text:    "All values are in range.",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range receipt.Recipients {
		fmt.Println(r.Address, r.Protection.Method)
	}
	for _, d := range rt.Deliveries() {
		fmt.Println(d.To, d.Kind())
	}
	// Output:
	// ann@example.org pgp
	// bob@example.org notice
	// [ann@example.org] pgp
	// [bob@example.org] plain
}

// PreferProtection encrypts where a key exists and sends the rest as it
// is, over verified TLS; the Receipt says which and why. Here no recipient
// has a key yet: an empty key ring is normal.
func ExamplePreferProtection() {
	protector, err := pgp.New(pgp.NewKeyRing(), nil)
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	sender, err := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.PreferProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{protector},
	})
	if err != nil {
		log.Fatal(err)
	}
	receipt, err := sender.Send(context.Background(), &mailsec.Message{
		From: "shop@example.com", To: []string{"ann@example.org"}, Subject: "Receipt", Text: "Thank you.",
	})
	if err != nil {
		log.Fatal(err)
	}
	p := receipt.Recipients[0].Protection
	fmt.Println(p.Method, "-", p.Reason)
	// Output: none - ann@example.org: pgp: no key found: pgp: no key found for address
}

// Per-domain rules, as in Postfix's policy tables: a partner's whole
// domain tree requires encryption, one domain's server key is pinned.
func ExampleForDomains() {
	pin, _ := mailsec.ParsePin("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
	policy := mailsec.ForDomains(mailsec.DefaultPolicy(),
		mailsec.DomainRule{Domain: ".bank.example", Protection: mailsec.ProtectionRequired},
		mailsec.DomainRule{Domain: "partner.example", Security: &mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin}}},
	)
	for _, d := range []string{"eu.bank.example", "partner.example", "example.org"} {
		p, _ := policy.Plan(context.Background(), nil, mailsec.Recipient{Address: "x@" + d, Domain: d})
		fmt.Println(d, p.Protection, p.Security.Level)
	}
	// Output:
	// eu.bank.example required verified
	// partner.example none pinned
	// example.org none verified
}

// A Sender limited to the application's own domain refuses a From that a
// user typed into a form, before any connection.
func ExampleOptions_allowedSenders() {
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, &mailsec.Options{AllowedSenders: []string{"example.com"}})
	_, err := sender.Send(context.Background(), &mailsec.Message{
		From: "ceo@bank.example", To: []string{"victim@example.org"}, Subject: "Urgent", Text: "Wire the money.",
	})
	fmt.Println(errors.Is(err, mailsec.ErrSenderNotAllowed), len(rt.Deliveries()))
	// Output: true 0
}

// OnReceipt receives every Receipt: the place to store the audit record.
func ExampleOptions_onReceipt() {
	rt := &mailsectest.RecordingTransport{}
	sender, _ := mailsec.NewSender(rt, &mailsec.Options{
		OnReceipt: func(ctx context.Context, r *mailsec.Receipt) {
			b, _ := json.Marshal(r.Recipients[0].Plan)
			fmt.Println(r.Recipients[0].Address, r.Recipients[0].Accepted, string(b))
		},
	})
	_, _ = sender.Send(context.Background(), &mailsec.Message{
		From: "shop@example.com", To: []string{"ann@example.org"}, Subject: "Receipt", Text: "Thank you.",
	})
	// Output: ann@example.org true {"security":{"level":"verified"},"protection":"none","no_key":"fail"}
}

// Security levels read from configuration by their own names or
// Postfix's.
func ExampleParseSecurityLevel() {
	for _, name := range []string{"verified", "dane-only", "encrypt", "may", "none"} {
		l, err := mailsec.ParseSecurityLevel(name)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(name, "=", l)
	}
	// Output:
	// verified = verified
	// dane-only = dane-only
	// encrypt = unverified
	// may = may
	// none = none
}

// clinicPolicy is an application's own Policy: S/MIME or nothing for the
// clinic's domain, the default elsewhere. Its Needs method declares that,
// so that NewSender can check the Sender fits it.
type clinicPolicy struct{}

func (clinicPolicy) Plan(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
	if r.Domain == "clinic.example" {
		return mailsec.Plan{Protection: mailsec.ProtectionRequired, Methods: []string{"smime"}}, nil
	}
	return mailsec.DefaultPolicy().Plan(ctx, m, r)
}

func (clinicPolicy) Needs() (mailsec.PolicyNeeds, error) {
	return mailsec.PolicyNeeds{Protection: mailsec.ProtectionRequired, Methods: []string{"smime"}}, nil
}

// A Policy of the application's own declares what its plans may ask for;
// a Sender with only a PGP Protector cannot serve this one, and is refused
// at start-up rather than failing the clinic's recipients at every Send.
func ExamplePolicyNeeds() {
	protector, err := pgp.New(pgp.NewKeyRing(), nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{
		Policy:     clinicPolicy{},
		Protectors: []mailsec.Protector{protector},
	})
	fmt.Println(errors.Is(err, mailsec.ErrConfig))
	fmt.Println(err)
	// Output:
	// true
	// mailsec: configuration: Options.Policy: a plan may name the protection method "smime", which no Protector in Options.Protectors has (they have pgp): add a Protector for it, or drop it from the policy
}
