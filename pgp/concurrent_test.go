package pgp_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/pgp"
)

// One Protector used from many goroutines, each entity written twice (a
// retried delivery): every copy decrypts, to the recipient and to the
// sender's own key, and each write uses a fresh session key.
func TestConcurrentAndRepeatable(t *testing.T) {
	k := testKeys(t)
	ann, lab := k["ann@example.org"], k["app@example.com"]
	p, err := pgp.New(publicRing(t, ann), &pgp.Options{Signer: lab, EncryptToSelf: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			out, err := p.Protect(context.Background(), &mailsec.Entity{Header: headerFor("ann@example.org"), Body: strBody(canary + "\r\n")},
				[]string{"ann@example.org"})
			if err != nil {
				t.Error(err)
				return
			}
			var first []byte
			for i := range 2 {
				var buf bytes.Buffer
				if _, err := out.Entity.WriteTo(&buf); err != nil {
					t.Error(err)
					return
				}
				ct := encryptedPart(t, buf.Bytes())
				if i == 0 {
					first = ct
				} else if bytes.Equal(first, ct) {
					t.Error("second write repeated the first ciphertext")
				}
				for _, key := range []*openpgp.Entity{ann, lab} {
					if pt := goDecrypt(t, key, ct); !bytes.Contains(pt, []byte(canary)) {
						t.Errorf("%s cannot read its copy", pgp.Fingerprint(key))
					}
				}
			}
		})
	}
	wg.Wait()
}

func goDecrypt(t *testing.T, key *openpgp.Entity, armored []byte) []byte {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Error(err)
		return nil
	}
	md, err := openpgp.ReadMessage(blk.Body, openpgp.EntityList{key}, nil, &packet.Config{})
	if err != nil {
		t.Error(err)
		return nil
	}
	b, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Error(err)
	}
	return b
}
