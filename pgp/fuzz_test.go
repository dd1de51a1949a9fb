package pgp_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// FuzzReadKeyRing: any input is a key ring or an error, never a panic,
// and every key read can be checked and used without one either.
func FuzzReadKeyRing(f *testing.F) {
	e, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		f.Fatal(err)
	}
	a, _ := mailsectest.ArmorPublic(e)
	var bin bytes.Buffer
	_ = e.Serialize(&bin)
	f.Add([]byte(a))
	f.Add(bin.Bytes())
	f.Add([]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		kr, err := pgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			return
		}
		p, err := pgp.New(kr, nil)
		if err != nil {
			t.Fatal(err)
		}
		ent := &mailsec.Entity{Header: headerFor("ann@example.org"), Body: strBody(canary)}
		_, _ = p.Protect(context.Background(), ent, []string{"ann@example.org"})
	})
}

// FuzzWKDResponse: whatever a WKD server answers, Lookup returns keys for
// the address asked or an error, without panicking.
func FuzzWKDResponse(f *testing.F) {
	e, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		f.Fatal(err)
	}
	var bin bytes.Buffer
	_ = e.Serialize(&bin)
	f.Add(bin.Bytes())
	f.Add([]byte("<html>not found</html>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		es, err := pgp.ParseWKDResponse(data, "ann@example.org")
		if err != nil {
			return
		}
		kr := pgp.NewKeyRing(es...)
		if got, err := kr.Lookup(context.Background(), "ann@example.org"); err != nil || len(got) != len(es) {
			t.Fatalf("WKD returned keys without a user ID for the address")
		}
	})
}
