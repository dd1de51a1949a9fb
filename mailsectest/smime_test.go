package mailsectest_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
)

// IssueSMIME makes what its options say, and the default certificate
// verifies for emailProtection against the CA.
func TestIssueSMIME(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	l := c.Leaf
	if k, ok := l.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("key %T", l.PublicKey)
	}
	if l.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment || len(l.EmailAddresses) != 1 || l.EmailAddresses[0] != "ann@example.org" {
		t.Fatalf("leaf %v %v", l.KeyUsage, l.EmailAddresses)
	}
	if _, err := l.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || len(mailsectest.LeafPEM(c)) == 0 {
		t.Fatal("chain or PEM missing")
	}
	if _, err := ca.IssueSMIME(mailsectest.SMIMEOptions{}); err == nil {
		t.Fatal("no Email accepted")
	}
	past := time.Now().Add(-time.Hour)
	odd, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "b@example.org", EC: true, NoKeyUsage: true, NoEKU: true,
		NotBefore: past.Add(-time.Hour), NotAfter: past})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := odd.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || odd.Leaf.KeyUsage != 0 || len(odd.Leaf.ExtKeyUsage) != 0 || !odd.Leaf.NotAfter.Before(time.Now()) {
		t.Fatalf("options ignored: %+v", odd.Leaf)
	}
}
