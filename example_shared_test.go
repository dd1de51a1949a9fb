package mailsec_test

import (
	"context"
	"fmt"

	"github.com/mailsec/mailsec"
)

// relay hands every Delivery to one smarthost, in one transaction, and
// says so.
type relay struct{}

func (relay) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	return &mailsec.DeliveryResult{}, nil
}

func (relay) SharedTransaction() bool { return true }

// logged wraps another Transport and forwards what it declares.
type logged struct{ next mailsec.Transport }

func (l logged) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	return l.next.Deliver(ctx, d)
}

func (l logged) SharedTransaction() bool { return mailsec.SharedTransaction(l.next) }

// plain declares nothing: the Sender gives each recipient domain a
// Delivery, and an ENVID, of its own.
type plain struct{}

func (plain) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	return &mailsec.DeliveryResult{}, nil
}

// A Transport that gives every Delivery to one hop declares it; one that
// wraps another forwards the declaration with SharedTransaction.
func ExampleSharedTransaction() {
	fmt.Println("relay:", mailsec.SharedTransaction(relay{}))
	fmt.Println("wrapped relay:", mailsec.SharedTransaction(logged{relay{}}))
	fmt.Println("plain:", mailsec.SharedTransaction(plain{}))
	fmt.Println("wrapped plain:", mailsec.SharedTransaction(logged{plain{}}))
	// Output:
	// relay: true
	// wrapped relay: true
	// plain: false
	// wrapped plain: false
}
