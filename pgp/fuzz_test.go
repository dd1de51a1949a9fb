package pgp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
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
		pr, err := p.Protect(context.Background(), ent, []string{"ann@example.org"})
		if err != nil {
			return
		}
		// A key that passed the checks encrypts, and the output hides
		// the content.
		var out bytes.Buffer
		if _, err := pr.Entity.WriteTo(&out); err != nil {
			t.Fatalf("a key that passed the checks does not encrypt: %v", err)
		}
		if bytes.Contains(out.Bytes(), []byte(canary)) || !bytes.Contains(out.Bytes(), []byte("-----BEGIN PGP MESSAGE-----")) {
			t.Fatalf("output is not ciphertext:\n%s", out.Bytes())
		}
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
		// Checked on the keys themselves, not through the index that
		// ParseWKDResponse uses.
		for _, e := range es {
			ok := false
			for _, id := range e.Identities {
				if id.UserId != nil && strings.EqualFold(id.UserId.Email, "ann@example.org") {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("WKD returned key %s without a user ID for the address", pgp.Fingerprint(e))
			}
		}
	})
}

// FuzzCheckKey: any upload gets a verdict, never a panic: either a
// *KeyError, or a key that Protect then accepts and encrypts to, as
// CheckKey promised.
func FuzzCheckKey(f *testing.F) {
	e, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		f.Fatal(err)
	}
	a, _ := mailsectest.ArmorPublic(e)
	s, _ := mailsectest.ArmorPrivate(e, nil)
	var bin bytes.Buffer
	_ = e.Serialize(&bin)
	f.Add([]byte(a))
	f.Add([]byte(s))
	f.Add(bin.Bytes())
	f.Add([]byte(a + a))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		ck, err := pgp.CheckKey(context.Background(), bytes.NewReader(data), "ann@example.org", nil)
		if err != nil {
			if _, ok := errors.AsType[*pgp.KeyError](err); !ok {
				t.Fatalf("not a *KeyError: %T %v", err, err)
			}
			return
		}
		p, err := pgp.New(pgp.NewKeyRing(ck.Entity), nil)
		if err != nil {
			t.Fatal(err)
		}
		ent := &mailsec.Entity{Header: headerFor("ann@example.org"), Body: strBody(canary)}
		pr, err := p.Protect(context.Background(), ent, []string{"ann@example.org"})
		if err != nil {
			t.Fatalf("CheckKey accepted a key Protect refuses: %v", err)
		}
		if _, err := pr.Entity.WriteTo(io.Discard); err != nil {
			t.Fatalf("a key that passed the checks does not encrypt: %v", err)
		}
	})
}
