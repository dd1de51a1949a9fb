package bench_test

import (
	"context"
	"crypto"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

var (
	pgpOnce sync.Once
	pgpKey  *openpgp.Entity
	pgpErr  error
	// pgpText is 10 KB of ordinary text in 72-character lines.
	pgpText = strings.Repeat(strings.Repeat("x", 71)+"\n", 10240/72)
)

func pgpRecipient(b *testing.B) *openpgp.Entity {
	pgpOnce.Do(func() {
		pgpKey, pgpErr = mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	})
	if pgpErr != nil {
		b.Fatal(pgpErr)
	}
	return pgpKey
}

// discardTransport writes each delivery's content to io.Discard.
type discardTransport struct{}

func (discardTransport) Deliver(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if _, err := d.Content.WriteTo(io.Discard); err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{}
	for _, r := range d.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: r, Accepted: true})
	}
	return res, nil
}

// BenchmarkPGPSend: Send of a 10 KB text message, protection required,
// PGP/MIME to one Curve25519 key, to a transport that discards the bytes.
func BenchmarkPGPSend(b *testing.B) {
	p, err := pgp.New(pgp.NewKeyRing(pgpRecipient(b)), nil)
	if err != nil {
		b.Fatal(err)
	}
	s, err := mailsec.NewSender(discardTransport{}, &mailsec.Options{
		Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protector: p})
	if err != nil {
		b.Fatal(err)
	}
	m := &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Results", Text: pgpText}
	ctx := context.Background()
	b.SetBytes(int64(len(pgpText)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Send(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPGPPlainSend: the same message through the same Sender setup
// without protection (DefaultPolicy, no Protector), so that the cost of
// building the MIME message can be told apart from the cost of PGP/MIME.
func BenchmarkPGPPlainSend(b *testing.B) {
	s, err := mailsec.NewSender(discardTransport{}, &mailsec.Options{Policy: mailsec.DefaultPolicy()})
	if err != nil {
		b.Fatal(err)
	}
	m := &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Results", Text: pgpText}
	ctx := context.Background()
	b.SetBytes(int64(len(pgpText)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Send(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPGPBare: go-crypto's openpgp.Encrypt of the same 10 KB to the
// same key, AES-256, armored with go-crypto's armor writer, to
// io.Discard: the floor. The armor includes the CRC-24 line, as mailsec's
// does (gpg 2.2 cannot find the end of armored data a multiple of three
// octets long without it), so both produce the same format.
func BenchmarkPGPBare(b *testing.B) {
	key := pgpRecipient(b)
	cfg := &packet.Config{DefaultCipher: packet.CipherAES256, DefaultHash: crypto.SHA256}
	b.SetBytes(int64(len(pgpText)))
	b.ReportAllocs()
	for b.Loop() {
		aw, err := armor.Encode(io.Discard, "PGP MESSAGE", nil)
		if err != nil {
			b.Fatal(err)
		}
		pt, err := openpgp.Encrypt(aw, []*openpgp.Entity{key}, nil, &openpgp.FileHints{IsBinary: true}, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.WriteString(pt, pgpText); err != nil {
			b.Fatal(err)
		}
		if err := pt.Close(); err != nil {
			b.Fatal(err)
		}
		if err := aw.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
