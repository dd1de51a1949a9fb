package revocation

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mailsec/mailsec/mailsectest"
)

func testCA(t testing.TB) (*mailsectest.CA, *x509.Certificate) {
	t.Helper()
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org", EC: true})
	if err != nil {
		t.Fatal(err)
	}
	return ca, leaf.Leaf
}

func testChecker(t testing.TB) *Checker {
	t.Helper()
	c, err := New(&Options{AllowPrivate: true, CacheEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeCRL returns a CRL by ca listing revoked, with extra extensions.
func makeCRL(t testing.TB, ca *mailsectest.CA, revoked *big.Int, ext ...pkix.Extension) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(time.Hour), ExtraExtensions: ext}
	if revoked != nil {
		tmpl.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: revoked, RevocationTime: time.Now().Add(-time.Hour)}}
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Certificate, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func serve(t testing.TB, body []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	t.Cleanup(srv.Close)
	return srv.URL + "/crl"
}

func idp(der ...byte) pkix.Extension {
	return pkix.Extension{Id: oidIssuingDP, Critical: true, Value: append([]byte{0x30, byte(len(der))}, der...)}
}

// TestCRLKinds: the CRLs this package cannot read completely are refused,
// the others read.
func TestCRLKinds(t *testing.T) {
	ca, leaf := testCA(t)
	other, _ := testCA(t)
	cases := []struct {
		name   string
		crl    []byte
		cert   *x509.Certificate
		reason string // "" for good
	}{
		{"plain", makeCRL(t, ca, nil), leaf, ""},
		{"PEM", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: makeCRL(t, ca, nil)}), leaf, ""},
		{"user certificates only, for a user", makeCRL(t, ca, nil, idp(0x81, 1, 0xff)), leaf, ""},
		{"user certificates only, for a CA", makeCRL(t, ca, nil, idp(0x81, 1, 0xff)), ca.Certificate, "end-entity certificates only"},
		{"CA certificates only, for a user", makeCRL(t, ca, nil, idp(0x82, 1, 0xff)), leaf, "CA certificates only"},
		{"some reasons", makeCRL(t, ca, nil, idp(0x83, 2, 0x07, 0x80)), leaf, "some revocation reasons only"},
		{"indirect", makeCRL(t, ca, nil, idp(0x84, 1, 0xff)), leaf, "indirect"},
		{"attribute certificates", makeCRL(t, ca, nil, idp(0x85, 1, 0xff)), leaf, "attribute certificates"},
		{"delta", makeCRL(t, ca, nil, pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: []byte{2, 1, 1}}), leaf, "delta CRL"},
		{"unknown critical extension", makeCRL(t, ca, nil, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3}, Critical: true, Value: []byte{5, 0}}), leaf, "unsupported critical extension"},
		{"another issuer", makeCRL(t, other, nil), leaf, "not by the certificate's issuer"},
		{"garbage", []byte("not a CRL"), leaf, "does not parse"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The CA certificate is self-issued: its own CRL covers it.
			st, err := testChecker(t).crl(context.Background(), serve(t, tc.crl), tc.cert, ca.Certificate)
			switch {
			case tc.reason == "" && (err != nil || st.Source != SourceCRL):
				t.Fatalf("%+v, %v; want good", st, err)
			case tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)):
				t.Fatalf("err = %v, want %q", err, tc.reason)
			}
		})
	}
	_, err := testChecker(t).crl(context.Background(), serve(t, makeCRL(t, ca, leaf.SerialNumber)), leaf, ca.Certificate)
	if _, ok := err.(*RevokedError); !ok {
		t.Fatalf("err = %v, want a *RevokedError", err)
	}
}

// FuzzCheckOCSP: no response, however malformed, makes the check panic,
// and none passes without a status.
func FuzzCheckOCSP(f *testing.F) {
	ca, leaf := testCA(f)
	now := time.Now()
	good, err := ocsp.CreateResponse(ca.Certificate, ca.Certificate, ocsp.Response{Status: ocsp.Good, SerialNumber: leaf.SerialNumber,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}, ca.Key)
	if err != nil {
		f.Fatal(err)
	}
	c := testChecker(f)
	if _, _, err := c.checkOCSP(context.Background(), "http://x/", good, leaf, ca.Certificate, nil); err != nil {
		f.Fatalf("seed: %v", err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, _, err := c.checkOCSP(context.Background(), "http://x/", raw, leaf, ca.Certificate, nil)
		if err == nil && r.status == nil {
			t.Fatal("no error and no status")
		}
	})
}
