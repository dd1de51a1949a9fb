package transport_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// A nil Delivery is bad input like any other: both transports return a
// *mailsec.ValidationError, without a panic and without a connection.
func TestDeliverNilDelivery(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	for _, tr := range []struct {
		name string
		t    mailsec.Transport
	}{
		{"Submission", srv.Transport()},
		{"Direct", &transport.Direct{Resolver: mailsectest.NewResolver()}},
	} {
		var err error
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Fatalf("%s.Deliver(ctx, nil) panicked: %v", tr.name, v)
				}
			}()
			_, err = tr.t.Deliver(context.Background(), nil)
		}()
		var ve *mailsec.ValidationError
		if !errors.As(err, &ve) || ve.Field != "Delivery" {
			t.Fatalf("%s.Deliver(ctx, nil) = %v, want a *mailsec.ValidationError for the Delivery", tr.name, err)
		}
	}
	if n := srv.Connections(); n != 0 {
		t.Fatalf("%d connections for a nil Delivery", n)
	}
}
