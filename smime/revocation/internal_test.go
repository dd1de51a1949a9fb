package revocation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mailsec/mailsec/internal/tooltest"
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

// issueLeaf returns an end-entity certificate by ca naming the OCSP
// responders ocspURLs and the CRL distribution points crlURLs.
func issueLeaf(t testing.TB, ca *mailsectest.CA, ocspURLs, crlURLs []string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "Ann"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{"ann@example.org"}, OCSPServer: ocspURLs, CRLDistributionPoints: crlURLs}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// idpURI is an IssuingDistributionPoint whose distributionPoint is a
// fullName of the URIs us: the CRL of one partition of a CA's
// certificates (RFC 5280 §5.2.5).
func idpURI(us ...string) pkix.Extension {
	var names []byte
	for _, u := range us {
		names = append(names, 0x86, byte(len(u))) // [6] uniformResourceIdentifier
		names = append(names, u...)
	}
	full := append([]byte{0xa0, byte(len(names))}, names...) // [0] fullName
	return idp(append([]byte{0xa0, byte(len(full))}, full...)...)
}

// TestCRLPartition: a CA partitions its CRLs by distribution point, and
// the leaf names partition 1, which lists it as revoked. Partition 2,
// genuine and current, does not list it: served at the leaf's URL (the
// fetch is plain HTTP, an on-path attacker can answer it), it must be
// refused, not taken for a "good" (RFC 5280 §6.3.3 (b)(2)(i)). The URL
// matched is the one the certificate names, not a redirect's target.
func TestCRLPartition(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	var served map[string][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		_, _ = w.Write(served[r.URL.Path])
	}))
	defer srv.Close()
	url1, url2, moved := srv.URL+"/part1", srv.URL+"/part2", srv.URL+"/moved"
	leafFor := func(cdp string) *x509.Certificate { return issueLeaf(t, ca, nil, []string{cdp}) }
	leaf := leafFor(url1)
	serial := leaf.SerialNumber
	// nameRelativeToCRLIssuer [1] { SET { cn=part1 } }: cannot be matched
	// to a URL.
	rdn := []byte{0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x05, 'p', 'a', 'r', 't', '1'}
	relative := idp(append([]byte{0xa0, byte(len(rdn) + 2), 0xa1, byte(len(rdn))}, rdn...)...)
	cases := []struct {
		name   string
		cert   *x509.Certificate
		served map[string][]byte
		want   string // "revoked", "good", or the reason of an *InvalidError
	}{
		{"its partition", leaf, map[string][]byte{"/part1": makeCRL(t, ca, serial, idpURI(url1))}, "revoked"},
		{"its partition among others", leaf, map[string][]byte{"/part1": makeCRL(t, ca, serial, idpURI(url2, url1))}, "revoked"},
		{"a complete CRL", leaf, map[string][]byte{"/part1": makeCRL(t, ca, nil)}, "good"},
		{"another partition at its URL", leaf, map[string][]byte{"/part1": makeCRL(t, ca, nil, idpURI(url2))}, "another distribution point"},
		{"a partition without a URI", leaf, map[string][]byte{"/part1": makeCRL(t, ca, nil, idpURI())}, "another distribution point"},
		{"a distribution point relative to the issuer", leaf, map[string][]byte{"/part1": makeCRL(t, ca, nil, relative)}, "nameRelativeToCRLIssuer"},
		{"its partition after a redirect", leafFor(moved), map[string][]byte{"/elsewhere": makeCRL(t, ca, serial, idpURI(moved))}, "revoked"},
		{"the redirect target's partition", leafFor(moved), map[string][]byte{"/elsewhere": makeCRL(t, ca, nil, idpURI(srv.URL+"/elsewhere"))}, "another distribution point"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			served = tc.served
			st, err := testChecker(t).Check(context.Background(), tc.cert, ca.Certificate)
			var ie *InvalidError
			switch {
			case tc.want == "revoked":
				if !errors.Is(err, ErrRevoked) {
					t.Fatalf("%v, %v; want revoked", st, err)
				}
			case tc.want == "good":
				if err != nil || st.Source != SourceCRL {
					t.Fatalf("%v, %v; want good", st, err)
				}
			case !errors.As(err, &ie) || !strings.Contains(ie.Reason, tc.want):
				t.Fatalf("%v, %v; want an *InvalidError: %s", st, err, tc.want)
			case !errors.Is(err, ErrUnavailable):
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
		})
	}
}

// TestUnfetchedURLs: a certificate that names only URLs this package
// does not fetch has a status that cannot be established, for good (an
// *UnavailableError listing them, not temporary), not one with nothing to
// check; only a certificate that names nothing is a Status of Source
// SourceNone.
func TestUnfetchedURLs(t *testing.T) {
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ldap := "ldap://ldap.ca.example/cn=CA?certificateRevocationList"
	ocspTLS, crlTLS := "https://ocsp.ca.example/", "https://crl.ca.example/ca.crl"
	good := serve(t, makeCRL(t, ca, nil))
	noCRL, err := New(&Options{AllowPrivate: true, NoCRL: true, CacheEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		c         *Checker
		ocsp, crl []string
		skipped   []string // the URLs the *UnavailableError lists as not fetched
		temporary bool
	}{
		{"LDAP and HTTPS", testChecker(t), []string{ocspTLS}, []string{ldap, crlTLS}, []string{ocspTLS, ldap, crlTLS}, false},
		{"LDAP only", testChecker(t), nil, []string{ldap}, []string{ldap}, false},
		{"CRLs not fetched", noCRL, nil, []string{good}, []string{good}, false},
		{"an HTTP responder down, and LDAP", testChecker(t), []string{tooltest.DeadURL(t)}, []string{ldap}, []string{ldap}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tc.c.Check(context.Background(), issueLeaf(t, ca, tc.ocsp, tc.crl), ca.Certificate)
			var ue *UnavailableError
			if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%v, %v; want an *UnavailableError", st, err)
			}
			var skipped []string
			for _, a := range ue.Attempts {
				if u, ok := a.(*UnsupportedError); ok {
					skipped = append(skipped, u.URL)
				}
			}
			if !slices.Equal(skipped, tc.skipped) {
				t.Errorf("not fetched: %q, want %q (%v)", skipped, tc.skipped, err)
			}
			if got := ue.Temporary(); got != tc.temporary {
				t.Errorf("temporary = %v, want %v", got, tc.temporary)
			}
		})
	}

	st, err := testChecker(t).Check(context.Background(), issueLeaf(t, ca, nil, nil), ca.Certificate)
	if err != nil || st.Source != SourceNone {
		t.Fatalf("%v, %v; want Source none", st, err)
	}
	if want := "revocation not checked: the certificate names no OCSP responder and no CRL distribution point"; st.String() != want {
		t.Errorf("String() = %q, want %q", st, want)
	}
	st, err = testChecker(t).Check(context.Background(), issueLeaf(t, ca, []string{ocspTLS}, []string{good}), ca.Certificate)
	if err != nil || st.Source != SourceCRL {
		t.Errorf("an HTTPS responder and an HTTP CRL: %v, %v; want good by the CRL", st, err)
	}
}

// TestCRLReplay: once a CRL was seen, an older one from the same issuer
// and distribution point, still within its validity, is refused: served
// again, it would hide the revocations the newer one lists.
func TestCRLReplay(t *testing.T) {
	ca, leaf := testCA(t)
	start := time.Now()
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	c, err := New(&Options{AllowPrivate: true, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	crl := func(number int64, nextUpdate time.Time, revoked *big.Int) []byte {
		tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: start.Add(-time.Minute), NextUpdate: nextUpdate}
		if revoked != nil {
			tmpl.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: revoked, RevocationTime: start.Add(-time.Minute)}}
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Certificate, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	// CRL 1 is valid for a day; CRL 2, which lists the leaf, for ten
	// minutes (a CA that shortened its CRLs' validity).
	older, newer := crl(1, start.Add(24*time.Hour), nil), crl(2, start.Add(10*time.Minute), leaf.SerialNumber)
	var served atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(*served.Load()) }))
	defer srv.Close()
	u := srv.URL + "/ca.crl"

	served.Store(&older)
	if _, err := c.crl(context.Background(), u, leaf, ca.Certificate); err != nil {
		t.Fatalf("CRL 1: %v", err)
	}
	clock.Store(start.Add(25 * time.Hour).UnixNano()) // CRL 1 is stale: fetched again
	older = crl(1, start.Add(48*time.Hour), nil)      // and, reissued with the same number, current
	served.Store(&older)
	if _, err := c.crl(context.Background(), u, leaf, ca.Certificate); err != nil {
		t.Fatalf("CRL 1 reissued: %v", err)
	}
	clock.Store(start.UnixNano())
	if c, err = New(&Options{AllowPrivate: true, Now: func() time.Time { return time.Unix(0, clock.Load()) }}); err != nil {
		t.Fatal(err)
	}
	served.Store(&newer)
	if _, err := c.crl(context.Background(), u, leaf, ca.Certificate); !errors.Is(err, ErrRevoked) {
		t.Fatalf("CRL 2: %v, want revoked", err)
	}
	clock.Store(start.Add(20 * time.Minute).UnixNano()) // CRL 2 is stale, CRL 1 is not
	served.Store(&older)
	_, err = c.crl(context.Background(), u, leaf, ca.Certificate)
	var ie *InvalidError
	if !errors.As(err, &ie) || !strings.Contains(ie.Reason, "CRL number 1 is older than CRL number 2 seen before") {
		t.Fatalf("CRL 1 after CRL 2: %v, want an *InvalidError", err)
	}
	newest := crl(3, start.Add(time.Hour), leaf.SerialNumber)
	served.Store(&newest)
	if _, err := c.crl(context.Background(), u, leaf, ca.Certificate); !errors.Is(err, ErrRevoked) {
		t.Fatalf("CRL 3: %v, want revoked", err)
	}
}
