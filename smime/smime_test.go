package smime_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/leaktest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// Every unusable certificate is refused with a typed error naming the
// subject and the reason, before any byte reaches the server.
func TestBadCertificates(t *testing.T) {
	f := getFixture(t)
	now := time.Now()
	cases := []struct {
		name   string
		opts   mailsectest.SMIMEOptions
		ca     *mailsectest.CA
		reason string
	}{
		{"expired", mailsectest.SMIMEOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}, nil, "expired"},
		{"not yet valid", mailsectest.SMIMEOptions{NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)}, nil, "not yet valid"},
		{"wrong address", mailsectest.SMIMEOptions{Email: "someone.else@example.org"}, nil, "no rfc822Name SAN for this address"},
		{"no EKU", mailsectest.SMIMEOptions{NoEKU: true}, nil, "no emailProtection extKeyUsage"},
		{"server EKU", mailsectest.SMIMEOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, nil, "no emailProtection extKeyUsage"},
		{"no keyEncipherment", mailsectest.SMIMEOptions{KeyUsage: x509.KeyUsageDigitalSignature}, nil, "keyUsage lacks keyEncipherment"},
		{"no keyUsage", mailsectest.SMIMEOptions{NoKeyUsage: true}, nil, "keyUsage lacks keyEncipherment"},
		{"untrusted root", mailsectest.SMIMEOptions{}, f.otherCA, "untrusted root"},
		{"EC key", mailsectest.SMIMEOptions{EC: true}, nil, "EC keys are not supported (no ECDH)"},
		{"RSA-1024", mailsectest.SMIMEOptions{Key: f.key1024}, nil, "weak algorithm: RSA-1024"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const addr = "ann@example.org"
			o := c.opts
			if o.Email == "" {
				o.Email = addr
			}
			if o.Key == nil && !o.EC {
				o.Key = f.key1
			}
			o.CommonName = "Ann " + c.name
			ca := c.ca
			if ca == nil {
				ca = f.ca
			}
			cert := issue(t, ca, o)
			var store smime.CertSource = storeOf(t, cert)
			if c.name == "wrong address" {
				store = fixedSource{cert.Leaf}
			}
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			s := newSender(t, srv.Transport(), newProtector(t, store, smime.Options{}))
			rec, err := s.Send(context.Background(), message(addr))
			if err == nil {
				t.Fatal("sent")
			}
			if !errors.Is(err, mailsec.ErrNoKey) {
				t.Fatalf("not ErrNoKey: %v", err)
			}
			var pe *mailsec.ProtectionError
			if !errors.As(err, &pe) || pe.Recipient != addr || pe.Method != "smime" || pe.Reason != c.reason ||
				!strings.Contains(pe.KeyID, "CN=Ann "+c.name) {
				t.Fatalf("error %#v (%v)", pe, err)
			}
			var ce *smime.CertificateError
			if !errors.As(err, &ce) || ce.Reason != c.reason || ce.Address != addr {
				t.Fatalf("no CertificateError: %v", err)
			}
			if !strings.Contains(err.Error(), c.reason) || !strings.Contains(err.Error(), "CN=Ann "+c.name) {
				t.Fatalf("message does not name subject and reason: %v", err)
			}
			if rec.Recipients[0].Accepted {
				t.Fatal("recipient marked accepted")
			}
			if n := srv.Transactions(); n != 0 {
				t.Fatalf("server saw %d transactions", n)
			}
			if err := srv.WaitIdle(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(srv.Received(), []byte(canary)) {
				t.Fatal("the canary reached the server")
			}
		})
	}
}

// fixedSource returns the same certificates for every address.
type fixedSource []*x509.Certificate

func (f fixedSource) Lookup(context.Context, string) ([]*x509.Certificate, error) { return f, nil }

// A recipient without certificate and one with a bad certificate are both
// reported in one error, and the recipient with a good certificate still
// gets the message, encrypted for that recipient only.
func TestPartialRecipients(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key2, NotAfter: time.Now().Add(-time.Minute), NotBefore: time.Now().Add(-time.Hour)})
	p := newProtector(t, storeOf(t, ann, bob), smime.Options{})
	e := testEntity()
	_, err := p.Protect(context.Background(), e, []string{"ann@example.org", "bob@example.org", "nobody@example.org"})
	var multi interface{ Unwrap() []error }
	if !errors.As(err, &multi) || len(multi.Unwrap()) != 2 {
		t.Fatalf("want two recipient errors: %v", err)
	}
	for i, want := range []string{"bob@example.org: smime: key CN=bob@example.org,O=mailsectest: expired", "nobody@example.org: smime: no certificate for this address"} {
		var pe *mailsec.ProtectionError
		if !errors.As(multi.Unwrap()[i], &pe) || !strings.Contains(pe.Error(), want) {
			t.Fatalf("error %d: %v", i, multi.Unwrap()[i])
		}
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	m := message("ann@example.org", "bob@example.org")
	if _, err := s.Send(context.Background(), m); !errors.Is(err, mailsec.ErrNoKey) {
		t.Fatalf("Send: %v", err)
	}
	ds := rt.Deliveries()
	if len(ds) != 1 || strings.Join(ds[0].To, ",") != "ann@example.org" {
		t.Fatalf("deliveries: %+v", ds)
	}
	if n := len(recipientInfos(t, ds[0].Data)); n != 1 {
		t.Fatalf("%d RecipientInfos, want 1", n)
	}
}

// Of several certificates for one address, the newest valid one is used.
func TestNewestCertificate(t *testing.T) {
	f := getFixture(t)
	now := time.Now()
	older := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1, NotBefore: now.Add(-48 * time.Hour)})
	newer := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key2, NotBefore: now.Add(-2 * time.Hour)})
	newestBad := issue(t, f.ca, mailsec2(f, now))
	p := newProtector(t, storeOf(t, older, newestBad, newer), smime.Options{})
	pr, err := p.Protect(context.Background(), testEntity(), []string{"Ann@Example.ORG"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pr.Fingerprints["Ann@Example.ORG"], fingerprint(newer); got != want {
		t.Fatalf("fingerprint %s, want the newer certificate's %s", got, want)
	}
}

func mailsec2(f *fixture, now time.Time) mailsectest.SMIMEOptions {
	return mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key3, NotBefore: now.Add(-time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
}

func fingerprint(c tls.Certificate) string {
	s := sha256Sum(c.Leaf.Raw)
	return hexString(s[:])
}

// Guard: the output never carries DES, 3DES, RC2, SHA-1 or any OID other
// than the ones we mean to emit, signed or not, with the default
// algorithms (AES-256-CBC, RSA PKCS #1 v1.5: no GCM, no OAEP) and with
// AES-256-GCM and RSA-OAEP (no CBC, no PKCS #1 v1.5).
func TestNoWeakAlgorithms(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	const (
		data, envelopedData, authEnvelopedData = "1.2.840.113549.1.7.1", "1.2.840.113549.1.7.3", "1.2.840.113549.1.9.16.1.23"
		aes256CBC, aes256GCM                   = "2.16.840.1.101.3.4.1.42", "2.16.840.1.101.3.4.1.46"
		rsaEncryption, rsaesOAEP, mgf1, sha256 = "1.2.840.113549.1.1.1", "1.2.840.113549.1.1.7", "1.2.840.113549.1.1.8", "2.16.840.1.101.3.4.2.1"
	)
	forbidden := map[string]string{
		"1.3.14.3.2.7": "DES-CBC", "1.2.840.113549.3.7": "DES-EDE3-CBC", "1.2.840.113549.3.2": "RC2-CBC",
		"1.3.14.3.2.26": "SHA-1", "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
		"2.16.840.1.101.3.4.1.2": "AES-128-CBC", "2.16.840.1.101.3.4.1.6": "AES-128-GCM",
		"2.16.840.1.101.3.4.1.26": "AES-192-GCM", "2.16.840.1.101.3.4.1.22": "AES-192-CBC",
	}
	// The envelope's OIDs are exactly these, and the attribute types of
	// the issuer names (2.5.4.x).
	defaults := []string{data, envelopedData, aes256CBC, rsaEncryption}
	modern := []string{data, authEnvelopedData, aes256GCM, rsaesOAEP, mgf1, sha256}
	for _, c := range []struct {
		o    smime.Options
		want []string
	}{
		{smime.Options{}, defaults},
		{smime.Options{Signer: signer}, defaults},
		{smime.Options{Algorithms: smime.Algorithms{GCM: true, OAEP: true}}, modern},
		{smime.Options{Algorithms: smime.Algorithms{GCM: true, OAEP: true}, Signer: signer}, modern},
	} {
		p := newProtector(t, storeOf(t, ann), c.o)
		pr, err := p.Protect(context.Background(), testEntity(), []string{"ann@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := pr.Entity.Body.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		der := decodeBody(t, b.Bytes())
		oids := map[string]bool{}
		collectOIDs(t, der, oids, 0)
		for _, w := range c.want {
			if !oids[w] {
				t.Fatalf("%+v: %s missing from %v", c.o.Algorithms, w, oids)
			}
		}
		for oid := range oids {
			if name, bad := forbidden[oid]; bad {
				t.Fatalf("%s (%s) in the output", name, oid)
			}
			if !slices.Contains(c.want, oid) && !strings.HasPrefix(oid, "2.5.4.") {
				t.Fatalf("%+v: unexpected %s in the output (want only %v)", c.o.Algorithms, oid, c.want)
			}
		}
		// The signature sits inside the encryption; check it through a
		// recipient's eyes with the same guard.
		if c.o.Signer != nil {
			sig := signatureOf(t, pr, ann.Leaf, f.key1)
			soids := map[string]bool{}
			collectOIDs(t, sig, soids, 0)
			if !soids["2.16.840.1.101.3.4.2.1"] || !soids["1.2.840.113549.1.9.5"] {
				t.Fatalf("signature lacks SHA-256 or signingTime: %v", soids)
			}
			for oid := range soids {
				if name, bad := forbidden[oid]; bad {
					t.Fatalf("%s (%s) in the signature", name, oid)
				}
			}
		}
	}
}

// collectOIDs walks BER (the output uses indefinite lengths) and DER and
// records every OBJECT IDENTIFIER, descending into constructed values and
// into OCTET STRINGs that hold DER.
func collectOIDs(t testing.TB, der []byte, oids map[string]bool, depth int) {
	if depth > 32 {
		return
	}
	for len(der) > 0 {
		v, rest, err := smime.ParseBER(der, 0)
		if err != nil {
			return
		}
		der = rest
		switch {
		case v.Tag == asn1.TagOID:
			var oid asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(v.Full, &oid); err == nil {
				oids[oid.String()] = true
			}
		case v.Constructed:
			collectOIDs(t, v.Content, oids, depth+1)
		case v.Tag == asn1.TagOctetString:
			collectOIDs(t, v.Content, oids, depth+1)
		}
	}
}

func decodeBody(t testing.TB, body []byte) []byte {
	t.Helper()
	for _, l := range bytes.Split(body, []byte("\r\n")) {
		if len(l) > 76 {
			t.Fatalf("base64 line of %d characters", len(l))
		}
	}
	if bytes.Contains(bytes.ReplaceAll(body, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("bare LF in the body")
	}
	der, err := base64.StdEncoding.DecodeString(string(bytes.ReplaceAll(body, []byte("\r\n"), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// recipientInfos counts the RecipientInfos of the EnvelopedData in a
// whole message.
func recipientInfos(t testing.TB, raw []byte) []asn1.RawValue {
	t.Helper()
	_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	der := decodeBody(t, body)
	// ContentInfo → [0] → EnvelopedData → recipientInfos.
	ci := berChildren(t, der, 0x30)
	ed := berChildren(t, ci[1].Content, 0x30)
	if len(ed) != 3 || ed[1].Tag != 0x31 {
		t.Fatalf("EnvelopedData has %d elements", len(ed))
	}
	var ris []asn1.RawValue
	rest := ed[1].Content
	for len(rest) > 0 {
		var ri asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &ri); err != nil {
			t.Fatal(err)
		}
		ris = append(ris, ri)
	}
	return ris
}

// With Protect called concurrently from many goroutines, through one
// Protector and through several with different options, every message
// goes out encrypted for the right recipient and the race detector stays
// quiet.
func TestParallelSends(t *testing.T) {
	noLeaks := leaktest.Check(t)
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key2})
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key3})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf, f.ca.Certificate}, f.key3)
	if err != nil {
		t.Fatal(err)
	}
	store := storeOf(t, ann, bob)
	ps := []*smime.Protector{
		newProtector(t, store, smime.Options{}),
		newProtector(t, store, smime.Options{Signer: signer, OuterSubject: "(encrypted)"}),
		newProtector(t, store, smime.Options{Intermediates: x509.NewCertPool()}),
	}
	rt := &mailsectest.RecordingTransport{}
	senders := make([]*mailsec.Sender, len(ps))
	for i, p := range ps {
		senders[i] = newSender(t, rt, p)
	}
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := message([]string{"ann@example.org", "bob@example.org"}[i%2])
			if i%3 == 0 {
				m.Bcc = []string{"bob@example.org"}
			}
			_, err := senders[i%len(senders)].Send(context.Background(), m)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ds := rt.Deliveries()
	if len(ds) < n {
		t.Fatalf("%d deliveries", len(ds))
	}
	for _, d := range ds {
		if bytes.Contains(d.Data, []byte(canary)) || bytes.Contains(d.Data, []byte(realSubject)) {
			t.Fatal("plaintext delivered")
		}
		if got := len(recipientInfos(t, d.Data)); got != len(d.To) {
			t.Fatalf("%d RecipientInfos for %d recipients", got, len(d.To))
		}
	}
	noLeaks()
}

// The same Protected entity can be written twice (a retried delivery),
// each time with a fresh content key.
func TestWriteTwice(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	p := newProtector(t, storeOf(t, ann), smime.Options{OuterSubject: "Encrypted message"})
	pr, err := p.Protect(context.Background(), testEntity(), []string{"ann@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if _, err := pr.Entity.WriteTo(&a); err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Entity.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if a.Len() < 500 || bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("second write empty or identical")
	}
	if !bytes.Contains(a.Bytes(), []byte("Subject: Encrypted message\r\n")) {
		t.Fatalf("OuterSubject not used:\n%s", a.Bytes())
	}
	unfolded := bytes.ReplaceAll(a.Bytes(), []byte("\r\n "), []byte(" "))
	for _, want := range []string{`Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"`,
		`Content-Disposition: attachment; filename="smime.p7m"`, "Content-Transfer-Encoding: base64", "Mime-Version: 1.0"} {
		if !bytes.Contains(unfolded, []byte(want+"\r\n")) {
			t.Fatalf("missing %q:\n%s", want, a.Bytes())
		}
	}
}

// Signed content above MaxSize fails while writing with ErrTooLarge, and
// the Sender delivers nothing; without signing the same message streams
// through and is delivered.
func TestTooLarge(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2})
	signer, err := smime.NewSigner([]*x509.Certificate{app.Leaf}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	big := func() *mailsec.Message {
		m := message("ann@example.org")
		m.Attachments = []mailsec.Attachment{{Filename: "big.bin", Content: io.LimitReader(zeroReader{}, 1<<20)}}
		return m
	}
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s := newSender(t, srv.Transport(), newProtector(t, storeOf(t, ann), smime.Options{MaxSize: 64 << 10, Signer: signer}))
	if _, err := s.Send(context.Background(), big()); !errors.Is(err, smime.ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
	srv.WaitIdle(5 * time.Second)
	for _, msg := range srv.Messages() {
		t.Fatalf("a message was delivered: %d bytes", len(msg.Data))
	}
	s = newSender(t, srv.Transport(), newProtector(t, storeOf(t, ann), smime.Options{MaxSize: 64 << 10}))
	if _, err := s.Send(context.Background(), big()); err != nil {
		t.Fatalf("unsigned message refused: %v", err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || len(msgs[0].Data) < 1<<20 {
		t.Fatalf("%d messages delivered", len(msgs))
	}
	checkOpaque(t, msgs[0].Data)
}

// A 50 MB attachment, not signed, is encrypted while it is written, with
// AES-256-CBC as with AES-256-GCM (whose tag is written after the
// content): the heap never holds more than a small fraction of it.
func TestStreamLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB message")
	}
	for _, a := range []smime.Algorithms{{}, {GCM: true, OAEP: true}} {
		t.Run(fmt.Sprintf("GCM=%v", a.GCM), func(t *testing.T) { streamLarge(t, a) })
	}
}

func streamLarge(t *testing.T, a smime.Algorithms) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	tr := &countingTransport{}
	s := newSender(t, tr, newProtector(t, storeOf(t, ann), smime.Options{Algorithms: a}))
	const size = 50 << 20
	m := message("ann@example.org")
	m.Attachments = []mailsec.Attachment{{Filename: "big.bin", Content: io.LimitReader(zeroReader{}, size)}}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	rec, err := s.Send(context.Background(), m)
	close(done)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{false: "aes256-cbc", true: "aes256-gcm"}[a.GCM]; rec.Recipients[0].Protection.Cipher != want {
		t.Fatalf("cipher %q, want %s", rec.Recipients[0].Protection.Cipher, want)
	}
	// The attachment is base64 inside (4/3) and the ciphertext base64 again.
	if n := tr.n.Load(); n < size*4/3*4/3 {
		t.Fatalf("only %d octets written", n)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("heap grew by at most %d KiB for a %d MiB attachment", grew>>10, size>>20)
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MiB while sending %d MiB", grew>>20, size>>20)
	}
}

// countingTransport accepts every delivery and counts the octets of its
// content, which it discards.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) Deliver(ctx context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	n, err := d.Content.WriteTo(io.Discard)
	c.n.Add(n)
	if err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{}
	for _, to := range d.To {
		res.Recipients = append(res.Recipients, mailsec.RecipientResult{Address: to, Accepted: true})
	}
	return res, nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestReadCertificates(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "Ann@Example.org", Key: f.key1})
	good := mailsectest.LeafPEM(ann)
	s, err := smime.ReadCertificates(bytes.NewReader(append([]byte("junk before\n"), good...)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup(context.Background(), "ann@EXAMPLE.ORG")
	if err != nil || len(got) != 1 || !got[0].Equal(ann.Leaf) {
		t.Fatalf("Lookup: %v %v", got, err)
	}
	if got, _ := s.Lookup(context.Background(), "bob@example.org"); len(got) != 0 {
		t.Fatal("found a certificate for another address")
	}
	corrupt := bytes.Replace(good, []byte("MII"), []byte("MIJ"), 1)
	truncated := good[:len(good)/2]
	badDER := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	for name, in := range map[string][]byte{"corrupt": corrupt, "truncated": truncated, "bad DER": badDER, "empty": nil,
		"key only": []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")} {
		_, err := smime.ReadCertificates(bytes.NewReader(in))
		if err == nil || !strings.HasPrefix(err.Error(), "smime: ") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestNewSignerChecks(t *testing.T) {
	f := getFixture(t)
	app := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2})
	if _, err := smime.NewSigner([]*x509.Certificate{app.Leaf}, f.key1); err == nil {
		t.Fatal("mismatched key accepted")
	}
	expired := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	s, err := smime.NewSigner([]*x509.Certificate{expired.Leaf}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = smime.New(storeOf(t, app), &smime.Options{Roots: f.ca.Pool(), Signer: s})
	var ce *smime.CertificateError
	if !errors.As(err, &ce) || ce.Reason != "expired" {
		t.Fatalf("expired signer: %v", err)
	}
	noSig := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: f.key2, KeyUsage: x509.KeyUsageKeyEncipherment})
	s, _ = smime.NewSigner([]*x509.Certificate{noSig.Leaf}, f.key2)
	_, err = smime.New(storeOf(t, app), &smime.Options{Roots: f.ca.Pool(), Signer: s})
	if !errors.As(err, &ce) || ce.Reason != "keyUsage lacks digitalSignature" {
		t.Fatalf("signer without digitalSignature: %v", err)
	}
}

// testEntity is a small message entity as the Sender builds it.
func testEntity() *mailsec.Entity {
	var h textproto.Header
	h.Set("Content-Transfer-Encoding", "7bit")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("MIME-Version", "1.0")
	h.Set("Subject", realSubject)
	h.Set("To", "ann@example.org")
	h.Set("From", "app@example.com")
	return &mailsec.Entity{Header: h, Body: stringBody("Hello\r\n" + canary + "\r\n")}
}

type stringBody string

func (s stringBody) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, string(s))
	return int64(n), err
}

// 8-bit and NUL octets anywhere (word-aligned or not) are refused; bare
// CR and LF become CRLF.
func TestCanonical(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	p := newProtector(t, storeOf(t, ann), smime.Options{})
	for _, body := range []string{"Hello \xe9\r\n", "0123456789abcdef\x00\r\n", strings.Repeat("a", 37) + "\x80"} {
		e := testEntity()
		e.Body = stringBody(body)
		pr, err := p.Protect(context.Background(), e, []string{"ann@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pr.Entity.Body.WriteTo(io.Discard); err == nil || !strings.Contains(err.Error(), "8-bit or NUL") {
			t.Fatalf("%q: %v", body, err)
		}
	}
	e := testEntity()
	e.Body = stringBody("line one\nline two\rline three\r\n" + canary + "\n")
	pr, err := p.Protect(context.Background(), e, []string{"ann@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := pr.Entity.Body.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(decodeBody(t, b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := p7.Decrypt(ann.Leaf, f.key1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(plain, []byte("line one\r\nline two\r\nline three\r\n"+canary+"\r\n")) {
		t.Fatalf("not canonical: %q", plain)
	}
}

// Addresses compare with ASCII case folding only: a mailbox spelled with
// U+212A KELVIN SIGN is another mailbox, not kate@, and never gets kate's
// certificate; an internationalised domain matches in either form.
func TestAddressFolding(t *testing.T) {
	f := getFixture(t)
	kate := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "kate@example.org", Key: f.key1})
	s := storeOf(t, kate)
	if got, _ := s.Lookup(context.Background(), "\u212Aate@example.org"); len(got) != 0 {
		t.Fatal("the KELVIN SIGN mailbox found kate's certificate")
	}
	if got, _ := s.Lookup(context.Background(), "KATE@example.org"); len(got) != 1 {
		t.Fatal("ASCII case folding lost")
	}
	idn := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@xn--bcher-kva.example", Key: f.key2})
	if got, _ := storeOf(t, idn).Lookup(context.Background(), "ann@bücher.example"); len(got) != 1 {
		t.Fatal("U-label address did not find the A-label certificate")
	}
}

// A message whose header needs SMTPUTF8 cannot become 7-bit S/MIME
// content: Protect refuses it before anything is written.
func TestEightBitHeaderRefused(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, newProtector(t, storeOf(t, ann), smime.Options{}))
	m := message("ann@example.org")
	m.Cc = []string{"jürgen@example.org"}
	_, err := s.Send(context.Background(), m)
	if err == nil || !strings.Contains(err.Error(), "not 7-bit") || len(rt.Deliveries()) != 0 {
		t.Fatalf("error %v, %d deliveries", err, len(rt.Deliveries()))
	}
}

// Recipient certificates issued by an intermediate CA verify when the
// intermediate travels in the certificate file, and only then; the
// intermediate adds no trust of its own (with other roots, the same file
// is refused).
func TestIntermediateFromCertificateFile(t *testing.T) {
	f := getFixture(t)
	inter, err := f.ca.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	ann := issue(t, inter, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	interPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Certificate.Raw})

	withInter, err := smime.ReadCertificates(bytes.NewReader(append(mailsectest.LeafPEM(ann), interPEM...)))
	if err != nil {
		t.Fatal(err)
	}
	if withInter.Intermediates() == nil {
		t.Fatal("the intermediate in the file was not found")
	}
	rt := &mailsectest.RecordingTransport{}
	if _, err := newSender(t, rt, newProtector(t, withInter, smime.Options{})).Send(context.Background(), message("ann@example.org")); err != nil {
		t.Fatalf("leaf with its intermediate in the file: %v", err)
	}
	if n := len(rt.Deliveries()); n != 1 {
		t.Fatalf("%d deliveries", n)
	}

	for name, p := range map[string]*smime.Protector{
		"without the intermediate": newProtector(t, storeOf(t, ann), smime.Options{}),
		"other roots":              newProtector(t, withInter, smime.Options{Roots: f.otherCA.Pool()}),
	} {
		rt := &mailsectest.RecordingTransport{}
		_, err := newSender(t, rt, p).Send(context.Background(), message("ann@example.org"))
		if !errors.Is(err, mailsec.ErrNoKey) {
			t.Errorf("%s: err = %v, want ErrNoKey", name, err)
		}
		if n := len(rt.Deliveries()); n != 0 {
			t.Errorf("%s: %d deliveries", name, n)
		}
	}
}

// A signer whose certificate names neither the From nor the Sender
// address signs nothing and sends nothing (RFC 8550 §3: receivers check
// exactly that); naming the Sender is enough.
func TestSignerMustBeAuthor(t *testing.T) {
	f := getFixture(t)
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1})
	other := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "someone-else@example.com", Key: f.key2})
	signer, err := smime.NewSigner([]*x509.Certificate{other.Leaf}, f.key2)
	if err != nil {
		t.Fatal(err)
	}
	p := newProtector(t, storeOf(t, ann), smime.Options{Signer: signer})
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	_, err = s.Send(context.Background(), message("ann@example.org"))
	var ce *smime.CertificateError
	if !errors.As(err, &ce) || !errors.Is(err, smime.WrongAddress) || !strings.Contains(ce.Reason, "not the From or Sender address") {
		t.Fatalf("err = %v, want a CertificateError about the author", err)
	}
	if errors.Is(err, mailsec.ErrNoKey) {
		t.Fatal("a signer mismatch must not count as a missing recipient key (no fallback)")
	}
	if n := len(rt.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries", n)
	}

	m := message("ann@example.org")
	m.Sender = "Someone Else <someone-else@example.com>"
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("signer named by Sender: %v", err)
	}
}
