package smime_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
	"github.com/mailsec/mailsec/smime/revocation"
)

// revocationPKI makes a PKI whose leaves are good, revoked, and one whose
// responder and CRL are both unreachable, with the fixture's RSA keys.
func revocationPKI(t *testing.T, o tooltest.PKIOptions) *tooltest.PKI {
	f := getFixture(t)
	o.Leaves = []tooltest.PKILeaf{
		{Email: "good@example.org", Key: f.key1},
		{Email: "revoked@example.org", Key: f.key2, Revoked: true},
		{Email: "down@example.org", Key: f.key3, OCSPURL: tooltest.DeadURL(t), CRLURL: tooltest.DeadURL(t)},
	}
	return tooltest.NewPKI(t, o)
}

func revocationProtector(t *testing.T, p *tooltest.PKI, soft bool) *smime.Protector {
	t.Helper()
	rc, err := revocation.New(&revocation.Options{AllowPrivate: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	store := storeOf(t, p.Leaf("good@example.org"), p.Leaf("revoked@example.org"), p.Leaf("down@example.org"))
	return newProtector(t, store, smime.Options{Roots: p.Root.Pool(), Intermediates: p.Pool(), ExpiryWarning: -1,
		Revocation: rc, RevocationSoftFail: soft})
}

// sendRefused sends to addr, wants it refused with a CertificateError
// for reason, and checks that the server received nothing.
func sendRefused(t *testing.T, pr *smime.Protector, addr, reason string, temporary bool) error {
	t.Helper()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	rec, err := newSender(t, srv.Transport(), pr).Send(context.Background(), message(addr))
	if err == nil {
		t.Fatalf("%s: sent", addr)
	}
	var ce *smime.CertificateError
	if !errors.As(err, &ce) || ce.Reason != reason || ce.Address != addr || !strings.Contains(ce.Subject, addr) {
		t.Fatalf("%s: err = %v, want a CertificateError %q naming the recipient and the certificate", addr, err, reason)
	}
	if got := mailsec.IsTemporary(err); got != temporary {
		t.Fatalf("%s: temporary = %v, want %v (%v)", addr, got, temporary, err)
	}
	if rec.Recipients[0].Accepted {
		t.Fatalf("%s: accepted", addr)
	}
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := srv.Transactions(); n != 0 || bytes.Contains(srv.Received(), []byte(canary)) {
		t.Fatalf("%s: the server saw %d transactions", addr, n)
	}
	return err
}

// sendAccepted sends to addr and returns the Receipt's notes.
func sendAccepted(t *testing.T, pr *smime.Protector, addr string) []string {
	t.Helper()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	rec, err := newSender(t, srv.Transport(), pr).Send(context.Background(), message(addr))
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	if len(srv.Messages()) != 1 || rec.Recipients[0].Protection == nil || rec.Recipients[0].Protection.Method != smime.Method {
		t.Fatalf("%s: not delivered protected: %+v", addr, rec.Recipients[0])
	}
	return rec.Recipients[0].Protection.Notes
}

// TestRevocationSend checks recipients' certificates against openssl
// ocsp and CRLs from openssl ca while sending.
func TestRevocationSend(t *testing.T) {
	p := revocationPKI(t, tooltest.PKIOptions{})
	closed := revocationProtector(t, p, false)

	notes := sendAccepted(t, closed, "good@example.org")
	if len(notes) != 2 || !strings.HasPrefix(notes[0], "certificate status good (OCSP, "+p.OCSPURL+", produced at ") ||
		!strings.HasPrefix(notes[1], "CA certificate "+p.Intermediate.Certificate.Subject.String()+" status good (CRL, "+p.RootCRLURL) {
		t.Errorf("notes %q: want the leaf good by OCSP and the intermediate by the root's CRL", notes)
	}

	err := sendRefused(t, closed, "revoked@example.org", "revoked", false)
	var re *revocation.RevokedError
	if !errors.As(err, &re) || re.Source != revocation.SourceOCSP {
		t.Fatalf("err = %v, want a RevokedError from OCSP", err)
	}
	// Revoked is revoked, soft-fail or not.
	soft := revocationProtector(t, p, true)
	sendRefused(t, soft, "revoked@example.org", "revoked", false)

	// Unreachable: refused and worth retrying by default; sent and
	// noted when the application chose soft-fail.
	err = sendRefused(t, closed, "down@example.org", "revocation status unavailable", true)
	if !errors.Is(err, revocation.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	notes = sendAccepted(t, soft, "down@example.org")
	if len(notes) != 2 || !strings.HasPrefix(notes[0], "revocation of certificate not checked: ") || !strings.HasSuffix(notes[0], "; sent because RevocationSoftFail") {
		t.Errorf("notes %q: want the leaf noted as not checked", notes)
	}
}

// TestRevocationSendResponderDown: with openssl stopped and the CRL
// still served, the CRL decides.
func TestRevocationSendResponderDown(t *testing.T) {
	p := revocationPKI(t, tooltest.PKIOptions{})
	p.StopOCSP()
	pr := revocationProtector(t, p, false)
	notes := sendAccepted(t, pr, "good@example.org")
	if len(notes) == 0 || !strings.HasPrefix(notes[0], "certificate status good (CRL, "+p.CRLURL) {
		t.Errorf("notes %q: want the leaf good by the CRL", notes)
	}
	err := sendRefused(t, pr, "revoked@example.org", "revoked", false)
	var re *revocation.RevokedError
	if !errors.As(err, &re) || re.Source != revocation.SourceCRL {
		t.Fatalf("err = %v, want a RevokedError from the CRL", err)
	}
}

func TestRevocationSendRevokedCA(t *testing.T) {
	p := revocationPKI(t, tooltest.PKIOptions{RevokeIntermediate: true})
	sendRefused(t, revocationProtector(t, p, true), "good@example.org", "issuing CA certificate revoked", false)
}

// TestCheckCertificateRevocation: an upload is checked for revocation on
// the path sending takes, so a revoked certificate is refused at upload
// too, and an unknown status is a verdict worth retrying.
func TestCheckCertificateRevocation(t *testing.T) {
	p := revocationPKI(t, tooltest.PKIOptions{})
	closed := revocationProtector(t, p, false)
	ctx := context.Background()

	chk, err := closed.CheckCertificate(ctx, mailsectest.LeafPEM(p.Leaf("good@example.org")), "good@example.org")
	if err != nil {
		t.Fatalf("good: %v", err)
	}
	if !slices.ContainsFunc(chk.Notes, func(n string) bool { return strings.HasPrefix(n, "certificate status good (OCSP, ") }) {
		t.Errorf("good: notes %q", chk.Notes)
	}
	_, err = closed.CheckCertificate(ctx, mailsectest.LeafPEM(p.Leaf("revoked@example.org")), "revoked@example.org")
	if !errors.Is(err, smime.Revoked) || !errors.Is(err, revocation.ErrRevoked) || mailsec.IsTemporary(err) {
		t.Fatalf("revoked: %v", err)
	}
	_, err = closed.CheckCertificate(ctx, mailsectest.LeafPEM(p.Leaf("down@example.org")), "down@example.org")
	if !errors.Is(err, smime.RevocationUnknown) || !mailsec.IsTemporary(err) {
		t.Fatalf("down: %v (temporary %v)", err, mailsec.IsTemporary(err))
	}
}

// TestRevocationUncheckableRecipient: with a revocation Checker and
// without RevocationSoftFail, a recipient certificate whose status
// cannot be established because it names no responder and no CRL, or
// only ones that are not fetched (LDAP, HTTPS), is refused like one
// whose responder is down, but for good: asking again cannot help. With
// RevocationSoftFail it is sent, and the Receipt says it was not checked.
func TestRevocationUncheckableRecipient(t *testing.T) {
	f := getFixture(t)
	issue := func(email string, ocspURLs, crlURLs []string) tls.Certificate {
		t.Helper()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: email},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, EmailAddresses: []string{email},
			OCSPServer: ocspURLs, CRLDistributionPoints: crlURLs}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.Certificate, f.key1.Public(), f.ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: f.key1, Leaf: leaf}
	}
	ldap := "ldap://ldap.ca.example/cn=CA?certificateRevocationList"
	unfetched := issue("ann@example.org", []string{"https://ocsp.ca.example/"}, []string{ldap})
	silent := issue("bob@example.org", nil, nil)
	store := storeOf(t, unfetched, silent)
	protector := func(soft bool) *smime.Protector {
		rc, err := revocation.New(&revocation.Options{AllowPrivate: true})
		if err != nil {
			t.Fatal(err)
		}
		return newProtector(t, store, smime.Options{ExpiryWarning: -1, Revocation: rc, RevocationSoftFail: soft})
	}
	closed, soft := protector(false), protector(true)
	ctx := context.Background()

	for _, tc := range []struct {
		addr string
		cert tls.Certificate
		says []string // in the error and in the soft-fail note
	}{
		{"ann@example.org", unfetched, []string{"https://ocsp.ca.example/: not fetched", ldap + ": not fetched"}},
		{"bob@example.org", silent, []string{"names no OCSP responder and no CRL distribution point"}},
	} {
		err := sendRefused(t, closed, tc.addr, "revocation status unavailable", false)
		var ue *revocation.UnavailableError
		if !errors.Is(err, smime.RevocationUnknown) || !errors.As(err, &ue) {
			t.Fatalf("%s: err = %v, want RevocationUnknown wrapping an *UnavailableError", tc.addr, err)
		}
		_, err = closed.CheckCertificate(ctx, mailsectest.LeafPEM(tc.cert), tc.addr)
		if !errors.Is(err, smime.RevocationUnknown) || mailsec.IsTemporary(err) {
			t.Fatalf("%s: CheckCertificate: %v (temporary %v), want a permanent RevocationUnknown", tc.addr, err, mailsec.IsTemporary(err))
		}
		notes := sendAccepted(t, soft, tc.addr)
		if len(notes) == 0 || !strings.HasPrefix(notes[0], "revocation of certificate not checked: ") ||
			!strings.HasSuffix(notes[0], "; sent because RevocationSoftFail") {
			t.Fatalf("%s: notes %q, want the certificate noted as not checked", tc.addr, notes)
		}
		for _, s := range tc.says {
			if !strings.Contains(err.Error(), s) || !strings.Contains(notes[0], s) {
				t.Errorf("%s: error %q and note %q should say %q", tc.addr, err, notes[0], s)
			}
		}
	}
}
