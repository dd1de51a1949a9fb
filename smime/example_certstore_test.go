package smime_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// A user uploads a certificate: the Protector that sends checks it, and
// an accepted one replaces what the store held for the address, while
// Sends run. A refused one comes back with a reason to show the user.
func ExampleProtector_CheckCertificate() {
	ca, err := mailsectest.NewCA()
	if err != nil {
		log.Fatal(err)
	}
	store := smime.NewCertStore()
	p, err := smime.New(store, &smime.Options{Roots: ca.Pool()})
	if err != nil {
		log.Fatal(err)
	}
	ann, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	if err != nil {
		log.Fatal(err)
	}
	upload := mailsectest.LeafPEM(ann)

	chk, err := p.CheckCertificate(context.Background(), upload, "ann@example.org")
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Replace(chk.Address, chk.Chain...); err != nil {
		log.Fatal(err)
	}
	found, _ := store.Lookup(context.Background(), "ann@example.org")
	fmt.Println("accepted for", chk.Address+"; stored:", len(found))

	// The same certificate uploaded for another address.
	_, err = p.CheckCertificate(context.Background(), upload, "bob@example.org")
	var ce *smime.CertificateError
	fmt.Println("for bob:", errors.Is(err, smime.WrongAddress), errors.As(err, &ce) && ce.Reason != "")
	// Output:
	// accepted for ann@example.org; stored: 1
	// for bob: true true
}

// A CertStore changes while Sends run: Add puts certificates in, Replace
// swaps an address's certificates in one step, Remove takes them out.
func ExampleCertStore() {
	ca, err := mailsectest.NewCA()
	if err != nil {
		log.Fatal(err)
	}
	old, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	renewed, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	bob, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "bob@example.org"})
	ctx := context.Background()

	store := smime.NewCertStore()
	store.Add(old.Leaf, bob.Leaf)
	if err := store.Replace("ann@example.org", renewed.Leaf); err != nil {
		log.Fatal(err)
	}
	ann, _ := store.Lookup(ctx, "ann@example.org")
	fmt.Println("ann:", len(ann), ann[0].Equal(renewed.Leaf))

	// Replace refuses a certificate that does not name the address.
	err = store.Replace("ann@example.org", bob.Leaf)
	fmt.Println("bob's for ann:", errors.Is(err, smime.WrongAddress))

	fmt.Println("removed:", store.Remove("BOB@example.org"))
	gone, _ := store.Lookup(ctx, "bob@example.org")
	fmt.Println("bob:", len(gone))
	// Output:
	// ann: 1 true
	// bob's for ann: true
	// removed: 1
	// bob: 0
}
