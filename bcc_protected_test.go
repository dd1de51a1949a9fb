package mailsec_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message"
	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
)

// The recipients of the Bcc test: one To, one Cc, two Bcc.
var (
	bccTestTo  = "ann@example.org"
	bccTestCc  = "carl@example.org"
	bccTestBcc = []string{"hidden.one@example.net", "hidden.two@example.net"}
	bccTestAll = append([]string{bccTestTo, bccTestCc}, bccTestBcc...)
)

func bccTestMessage() *mailsec.Message {
	return &mailsec.Message{From: "lab@example.com", To: []string{bccTestTo}, Cc: []string{bccTestCc}, Bcc: bccTestBcc,
		Subject: "Results", Text: "Dear patient, " + policyCanary}
}

// checkBccDeliveries checks a protected message's deliveries: To and Cc
// share one, each Bcc recipient has one of their own; open(d, rcpt)
// decrypts delivery d with rcpt's key (or fails), and every delivery is
// opened by each of its recipients and by nobody else; no decrypted copy,
// protected header included, names a Bcc recipient.
func checkBccDeliveries(t *testing.T, ds []mailsectest.Delivery, open func(d mailsectest.Delivery, rcpt string) ([]byte, error)) {
	t.Helper()
	var groups [][]string
	for _, d := range ds {
		groups = append(groups, d.To)
	}
	want := [][]string{{bccTestTo, bccTestCc}, {bccTestBcc[0]}, {bccTestBcc[1]}}
	if !slices.EqualFunc(groups, want, slices.Equal) {
		t.Fatalf("deliveries to %v, want %v", groups, want)
	}
	for _, d := range ds {
		if bytes.Contains(d.Data, []byte(policyCanary)) {
			t.Fatalf("delivery to %v is not protected", d.To)
		}
		for _, rcpt := range bccTestAll {
			plain, err := open(d, rcpt)
			if !slices.Contains(d.To, rcpt) {
				if err == nil {
					t.Fatalf("%s decrypts the delivery to %v", rcpt, d.To)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s cannot decrypt their delivery: %v", rcpt, err)
			}
			if !bytes.Contains(plain, []byte(policyCanary)) {
				t.Fatalf("%s's copy lacks the body:\n%s", rcpt, plain)
			}
			e, err := message.Read(bytes.NewReader(plain))
			if err != nil {
				t.Fatal(err)
			}
			if e.Header.Get("Subject") != "Results" || e.Header.Get("To") != bccTestTo {
				t.Fatalf("%s's copy has no protected header:\n%s", rcpt, plain)
			}
			for f := e.Header.Fields(); f.Next(); {
				if strings.EqualFold(f.Key(), "Bcc") || strings.EqualFold(f.Key(), "Resent-Bcc") {
					t.Fatalf("%s's decrypted copy has a %s field: %q", rcpt, f.Key(), f.Value())
				}
			}
			for _, b := range bccTestBcc {
				if bytes.Contains(bytes.ToLower(plain), []byte(b)) {
					t.Fatalf("%s's decrypted copy names Bcc recipient %s:\n%s", rcpt, b, plain)
				}
			}
		}
	}
}

// Every PGP delivery of a message with To, Cc and two Bcc recipients is
// encrypted to exactly its own recipients' keys, and none, decrypted,
// names a Bcc recipient.
func TestBccNotInsidePGP(t *testing.T) {
	keys := map[string]*openpgp.Entity{}
	var ring []*openpgp.Entity
	for _, a := range bccTestAll {
		k, err := mailsectest.NewPGPKey("", a, mailsectest.PGPKeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		keys[a] = k
		ring = append(ring, k)
	}
	p, err := pgp.New(pgp.NewKeyRing(ring...), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, rt := newRecordingSender(t, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if _, err := s.Send(context.Background(), bccTestMessage()); err != nil {
		t.Fatal(err)
	}
	keyID := func(a string) uint64 {
		sub, ok := keys[a].EncryptionKey(time.Now())
		if !ok {
			t.Fatalf("no encryption key for %s", a)
		}
		return sub.PublicKey.KeyId
	}
	checkBccDeliveries(t, rt.Deliveries(), func(d mailsectest.Delivery, rcpt string) ([]byte, error) {
		armored := pgpCiphertext(t, d.Data)
		// The ciphertext names exactly the delivery's recipients' keys.
		got := pgpRecipientKeyIDs(t, armored)
		var want []uint64
		for _, r := range d.To {
			want = append(want, keyID(r))
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("delivery to %v encrypted to keys %X, want %X", d.To, got, want)
		}
		blk, err := armor.Decode(bytes.NewReader(armored))
		if err != nil {
			t.Fatal(err)
		}
		md, err := openpgp.ReadMessage(blk.Body, openpgp.EntityList{keys[rcpt]}, nil, &packet.Config{})
		if err != nil {
			return nil, err
		}
		return io.ReadAll(md.UnverifiedBody)
	})
}

// pgpCiphertext returns the armored message of a PGP/MIME delivery.
func pgpCiphertext(t *testing.T, raw []byte) []byte {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatalf("not multipart:\n%s", raw)
	}
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no encrypted part: %v", err)
		}
		if ct, _, _ := p.Header.ContentType(); ct == "application/octet-stream" {
			b, err := io.ReadAll(p.Body)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// pgpRecipientKeyIDs lists the key IDs the message's session key is
// encrypted to.
func pgpRecipientKeyIDs(t *testing.T, armored []byte) []uint64 {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	pr := packet.NewReader(blk.Body)
	for {
		p, err := pr.Next()
		if err != nil {
			t.Fatalf("reading packets: %v", err)
		}
		ek, ok := p.(*packet.EncryptedKey)
		if !ok {
			return ids // the encrypted data follows the session keys
		}
		ids = append(ids, ek.KeyId)
	}
}

// Every S/MIME delivery of a message with To, Cc and two Bcc recipients
// opens with its own recipients' keys and with no other recipient's, and
// none, decrypted, names a Bcc recipient.
func TestBccNotInsideSMIME(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certs := map[string]tls.Certificate{}
	var pemCerts bytes.Buffer
	for _, a := range bccTestAll {
		c, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: a})
		if err != nil {
			t.Fatal(err)
		}
		certs[a] = c
		pemCerts.Write(mailsectest.LeafPEM(c))
	}
	store, err := smime.ReadCertificates(&pemCerts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := smime.New(store, &smime.Options{Roots: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	s, rt := newRecordingSender(t, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if _, err := s.Send(context.Background(), bccTestMessage()); err != nil {
		t.Fatal(err)
	}
	checkBccDeliveries(t, rt.Deliveries(), func(d mailsectest.Delivery, rcpt string) ([]byte, error) {
		_, body, ok := bytes.Cut(d.Data, []byte("\r\n\r\n"))
		if !ok {
			t.Fatal("no body")
		}
		der, err := base64.StdEncoding.DecodeString(string(bytes.ReplaceAll(body, []byte("\r\n"), nil)))
		if err != nil {
			t.Fatal(err)
		}
		p7, err := pkcs7.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		c := certs[rcpt]
		plain, err := p7.Decrypt(c.Leaf, c.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("decrypt: %w", err)
		}
		return plain, nil
	})
}
