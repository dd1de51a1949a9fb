package smime_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// swapSource is a CertSource whose certificates a test sets.
type swapSource struct {
	mu    sync.Mutex
	certs []*x509.Certificate
}

func (s *swapSource) set(certs []*x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs = certs
}

func (s *swapSource) Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.certs), nil
}

// upload is a certificate as a user would upload it.
type upload struct {
	name string
	data []byte              // what CheckCertificate gets
	cert []*x509.Certificate // what the CertSource then returns to Protect
	want smime.Problem       // -1: accepted
	note bool                // accepted with an expiry note
}

const accepted smime.Problem = -1

func pemOf(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// CheckCertificate accepts a certificate exactly when Protect encrypts to
// it, with the same Problem when both refuse, and reports the fingerprint,
// expiry and notes that Protect reports in Protected.Keys.
func TestCheckCertificateAgreesWithProtect(t *testing.T) {
	f := getFixture(t)
	const addr = "ann@example.org"
	now := time.Now()
	inter, err := f.ca.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	o := func(mod func(*mailsectest.SMIMEOptions)) mailsectest.SMIMEOptions {
		so := mailsectest.SMIMEOptions{Email: addr, Key: f.key1}
		if mod != nil {
			mod(&so)
		}
		return so
	}
	mk := func(name string, ca *mailsectest.CA, so mailsectest.SMIMEOptions, want smime.Problem) upload {
		c := issue(t, ca, so).Leaf
		return upload{name: name, data: pemOf(c), cert: []*x509.Certificate{c}, want: want}
	}
	good := issue(t, f.ca, o(nil)).Leaf
	viaInter := issue(t, inter, o(nil)).Leaf
	longLived := issue(t, inter, o(func(so *mailsectest.SMIMEOptions) { so.NotAfter = now.AddDate(6, 0, 0) })).Leaf
	cases := []upload{
		{name: "good PEM", data: pemOf(good), cert: []*x509.Certificate{good}, want: accepted, note: true},
		{name: "good DER", data: good.Raw, cert: []*x509.Certificate{good}, want: accepted, note: true},
		{name: "good with its root", data: pemOf(good, f.ca.Certificate), cert: []*x509.Certificate{good}, want: accepted, note: true},
		mk("expires in 10 days", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.NotAfter = now.Add(10 * 24 * time.Hour) }), accepted),
		mk("expires in 60 days", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.NotAfter = now.Add(60 * 24 * time.Hour) }), accepted),
		mk("expired", f.ca, o(func(so *mailsectest.SMIMEOptions) {
			so.NotBefore, so.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
		}), smime.Expired),
		mk("not yet valid", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.NotBefore = now.Add(time.Hour) }), smime.NotYetValid),
		mk("wrong address", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.Email = "bob@example.org" }), smime.WrongAddress),
		mk("other CA", f.otherCA, o(nil), smime.Untrusted),
		mk("RSA-1024", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.Key = f.key1024 }), smime.WeakKey),
		mk("ECDSA", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.Key, so.EC = nil, true }), smime.UnsupportedKey),
		mk("no keyEncipherment", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.KeyUsage = x509.KeyUsageDigitalSignature }), smime.KeyUsage),
		mk("no extKeyUsage", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.NoEKU = true }), smime.KeyUsage),
		mk("serverAuth only", f.ca, o(func(so *mailsectest.SMIMEOptions) { so.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), smime.KeyUsage),
		{name: "with its intermediate", data: pemOf(viaInter, inter.Certificate), cert: []*x509.Certificate{viaInter, inter.Certificate}, want: accepted, note: true},
		{name: "without its intermediate", data: pemOf(viaInter), cert: []*x509.Certificate{viaInter}, want: smime.Untrusted},
		// The leaf outlives its intermediate: the chain expires with the intermediate.
		{name: "outlives its intermediate", data: pemOf(longLived, inter.Certificate), cert: []*x509.Certificate{longLived, inter.Certificate}, want: accepted},
	}
	cases[3].note = true
	cases = append(cases, opensslUploads(t, f, addr)...)

	src := &swapSource{}
	p := newProtector(t, src, smime.Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			chk, cerr := p.CheckCertificate(context.Background(), c.data, addr)
			src.set(c.cert)
			pr, perr := p.Protect(context.Background(), testEntity(), []string{addr})
			if (cerr == nil) != (perr == nil) {
				t.Fatalf("upload and send disagree:\ncheck:   %v\nprotect: %v", cerr, perr)
			}
			if c.want == accepted {
				if cerr != nil {
					t.Fatalf("refused: %v", cerr)
				}
				ku := pr.Keys[addr]
				if chk.Fingerprint != pr.Fingerprints[addr] || !chk.Expires.Equal(ku.Expires) || !slices.Equal(chk.Notes, ku.Notes) {
					t.Fatalf("check %s %v %q, protect %s %v %q", chk.Fingerprint, chk.Expires, chk.Notes, pr.Fingerprints[addr], ku.Expires, ku.Notes)
				}
				if ku.Cipher != "aes256-cbc" {
					t.Fatalf("Cipher %q", ku.Cipher)
				}
				wantExp := c.cert[0].NotAfter
				for _, x := range c.cert[1:] {
					if x.NotAfter.Before(wantExp) {
						wantExp = x.NotAfter
					}
				}
				if !chk.Expires.Equal(wantExp) {
					t.Fatalf("Expires %v, want %v", chk.Expires, wantExp)
				}
				if (len(chk.Notes) > 0) != c.note {
					t.Fatalf("notes %q, want a note: %v", chk.Notes, c.note)
				}
				if !chk.Certificate.Equal(c.cert[0]) || !chk.Chain[0].Equal(c.cert[0]) {
					t.Fatal("Certificate or Chain is not the uploaded leaf")
				}
				return
			}
			var ce *smime.CertificateError
			if !errors.As(cerr, &ce) || ce.Problem != c.want || !errors.Is(cerr, c.want) {
				t.Fatalf("check: %v, want problem %v", cerr, c.want)
			}
			if ce.Address != addr || !strings.Contains(cerr.Error(), addr) || mailsec.IsTemporary(cerr) {
				t.Fatalf("check error does not name %s, or is temporary: %v", addr, cerr)
			}
			var pe *smime.CertificateError
			if !errors.As(perr, &pe) || pe.Problem != c.want || pe.Reason != ce.Reason || !errors.Is(perr, mailsec.ErrNoKey) {
				t.Fatalf("protect: %v, want problem %v (%s)", perr, c.want, ce.Reason)
			}
		})
	}
}

// opensslUploads are certificates made by openssl with the test CA's key,
// as a real CA would issue them, in PEM, DER and PKCS#7 form.
func opensslUploads(t *testing.T, f *fixture, addr string) []upload {
	needTool(t, "openssl")
	dir := t.TempDir()
	_, caKey, err := mailsectest.PEM(tls.Certificate{Certificate: [][]byte{f.ca.Certificate.Raw}, PrivateKey: f.ca.Key})
	if err != nil {
		t.Fatal(err)
	}
	caCrt := writeFile(t, dir, "ca.crt", f.ca.CertPEM())
	caKeyPath := writeFile(t, dir, "ca.key", caKey)
	mkCert := func(name, keyopt, ext string) *x509.Certificate {
		key := filepath.Join(dir, name+".key")
		csr := filepath.Join(dir, name+".csr")
		crt := filepath.Join(dir, name+".crt")
		extPath := writeFile(t, dir, name+".ext", []byte(ext))
		mustRun(t, "openssl", "req", "-new", "-newkey", keyopt, "-nodes", "-keyout", key, "-subj", "/CN="+name, "-out", csr)
		mustRun(t, "openssl", "x509", "-req", "-in", csr, "-CA", caCrt, "-CAkey", caKeyPath, "-CAcreateserial",
			"-days", "365", "-sha256", "-extfile", extPath, "-out", crt)
		der, err := os.ReadFile(crt)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(der)
		if b == nil {
			t.Fatal("openssl wrote no PEM certificate")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const smimeExt = "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n"
	good := mkCert("openssl-good", "rsa:2048", "subjectAltName=email:"+addr+"\n"+smimeExt)
	weak := mkCert("openssl-1024", "rsa:1024", "subjectAltName=email:"+addr+"\n"+smimeExt)
	noSAN := mkCert("openssl-nosan", "rsa:2048", smimeExt)
	clientAuth := mkCert("openssl-clientauth", "rsa:2048", "subjectAltName=email:"+addr+"\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
	p7 := filepath.Join(dir, "good.p7c")
	mustRun(t, "openssl", "crl2pkcs7", "-nocrl", "-certfile", filepath.Join(dir, "openssl-good.crt"), "-certfile", caCrt, "-outform", "DER", "-out", p7)
	p7der, err := os.ReadFile(p7)
	if err != nil {
		t.Fatal(err)
	}
	p7pem := tooRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7)
	one := func(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c} }
	return []upload{
		{name: "openssl good", data: pemOf(good), cert: one(good), want: accepted},
		{name: "openssl good PKCS#7 DER", data: p7der, cert: one(good), want: accepted},
		{name: "openssl good PKCS#7 PEM", data: []byte(p7pem), cert: one(good), want: accepted},
		{name: "openssl RSA-1024", data: pemOf(weak), cert: one(weak), want: smime.WeakKey},
		{name: "openssl no SAN", data: pemOf(noSAN), cert: one(noSAN), want: smime.WrongAddress},
		{name: "openssl clientAuth", data: pemOf(clientAuth), cert: one(clientAuth), want: smime.KeyUsage},
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	tooRun(t, name, args...)
}

func tooRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := run(nil, nil, name, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// What is not one certificate for the address is refused before any
// rule: garbage, a CA certificate alone, two end-entity certificates.
func TestCheckCertificateInput(t *testing.T) {
	f := getFixture(t)
	p := newProtector(t, smime.NewCertStore(), smime.Options{})
	ann := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1}).Leaf
	ann2 := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key2}).Leaf
	for _, c := range []struct {
		name string
		data []byte
		want smime.Problem
	}{
		{"empty", nil, smime.Malformed},
		{"garbage", []byte("not a certificate"), smime.Malformed},
		{"corrupt PEM", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), smime.Malformed},
		{"a key", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), smime.Malformed},
		{"truncated DER", ann.Raw[:len(ann.Raw)/2], smime.Malformed},
		{"CA only", pemOf(f.ca.Certificate), smime.Unusable},
		{"two leaves", pemOf(ann, ann2), smime.Unusable},
		{"too large", bytes.Repeat([]byte{'x'}, 2<<20), smime.Malformed},
	} {
		_, err := p.CheckCertificate(context.Background(), c.data, "ann@example.org")
		var ce *smime.CertificateError
		if !errors.As(err, &ce) || !errors.Is(err, c.want) || !strings.Contains(err.Error(), "ann@example.org") {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	for _, addr := range []string{"", "ann", "@example.org", "ann@", "Ann <ann@example.org>"} {
		_, err := p.CheckCertificate(context.Background(), pemOf(ann), addr)
		if !errors.Is(err, smime.WrongAddress) {
			t.Errorf("address %q: %v", addr, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.CheckCertificate(ctx, pemOf(ann), "ann@example.org"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// Every Problem has a name, which fmt prints.
func TestProblemNames(t *testing.T) {
	seen := map[string]bool{}
	for p := smime.Unusable; p <= smime.Revoked; p++ {
		s := fmt.Sprint(p)
		if s == "" || strings.HasPrefix(s, "smime.Problem(") || seen[s] {
			t.Errorf("Problem %d is named %q", int(p), s)
		}
		seen[s] = true
	}
	if s := fmt.Sprint(smime.Revoked + 1); s != fmt.Sprintf("smime.Problem(%d)", int(smime.Revoked)+1) {
		t.Errorf("unknown Problem prints %q", s)
	}
}
