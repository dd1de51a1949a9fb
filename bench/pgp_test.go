package bench_test

import (
	"crypto"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

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

// BenchmarkPGPSend: Send of a 10 KB text message, protection required,
// PGP/MIME to one Curve25519 key, to a transport that discards the bytes.
func BenchmarkPGPSend(b *testing.B) {
	p, err := pgp.New(pgp.NewKeyRing(pgpRecipient(b)), nil)
	if err != nil {
		b.Fatal(err)
	}
	benchSend(b, p, pgpText)
}

// BenchmarkPGPPlainSend: the same message through the same Sender setup
// without protection, so that the cost of building the MIME message can
// be told apart from the cost of PGP/MIME.
func BenchmarkPGPPlainSend(b *testing.B) { benchSend(b, nil, pgpText) }

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
