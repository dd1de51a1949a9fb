package dane_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec/dns"
)

// testNow is the time the tests verify at: far from the wall clock, so a
// check that used time.Now instead would fail.
var testNow = time.Date(2040, 3, 1, 12, 0, 0, 0, time.UTC)

// keyPair is a certificate and its private key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial atomic.Int64

// certOpts describes a certificate to make.
type certOpts struct {
	cn        string
	dnsNames  []string
	ca        bool
	notBefore time.Time
	notAfter  time.Time
	key       crypto.Signer      // nil: a new P-256 key
	eku       []x509.ExtKeyUsage // nil: serverAuth for leaves
}

// newCert makes a certificate signed by parent, or self-signed when parent
// is nil. Unless set, validity is a day either side of testNow.
func newCert(tb testing.TB, o certOpts, parent *keyPair) *keyPair {
	tb.Helper()
	key := o.key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		key = k
	}
	if o.notBefore.IsZero() {
		o.notBefore = testNow.Add(-24 * time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = testNow.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: o.cn, Organization: []string{"mailsec dane tests"}},
		DNSNames:              o.dnsNames,
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  o.ca,
	}
	if o.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if o.eku != nil {
		tmpl.ExtKeyUsage = o.eku
	}
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &keyPair{cert: c, key: key}
}

// testPKI is a small private PKI: a root, an intermediate under it, and
// leaves of several kinds.
type testPKI struct {
	root, inter      *keyPair
	leaf             *keyPair // mx.example.org, under inter
	expired          *keyPair // mx.example.org, under inter, expired at testNow
	wrongName        *keyPair // other.example.net, under inter
	wildcard         *keyPair // *.example.org, under inter
	cnOnly           *keyPair // CN mx.example.org, no subjectAltName, under inter
	selfSigned       *keyPair // mx.example.org, self-signed
	otherCA          *keyPair // an unrelated root
	otherLeaf        *keyPair // mx.example.org, under otherCA
	expiredInter     *keyPair // an intermediate under root, expired at testNow
	leafUnderExpired *keyPair // mx.example.org, under expiredInter
}

var pkiCache atomic.Pointer[testPKI]

func newPKI(tb testing.TB) *testPKI {
	tb.Helper()
	if p := pkiCache.Load(); p != nil {
		return p
	}
	p := &testPKI{}
	p.root = newCert(tb, certOpts{cn: "Test Root CA", ca: true, notAfter: testNow.Add(10 * 365 * 24 * time.Hour)}, nil)
	p.inter = newCert(tb, certOpts{cn: "Test Intermediate CA", ca: true}, p.root)
	p.leaf = newCert(tb, certOpts{cn: "mx.example.org", dnsNames: []string{"mx.example.org"}}, p.inter)
	p.expired = newCert(tb, certOpts{cn: "mx.example.org", dnsNames: []string{"mx.example.org"},
		notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Hour)}, p.inter)
	p.wrongName = newCert(tb, certOpts{cn: "other.example.net", dnsNames: []string{"other.example.net"}}, p.inter)
	p.wildcard = newCert(tb, certOpts{cn: "*.example.org", dnsNames: []string{"*.example.org"}}, p.inter)
	p.cnOnly = newCert(tb, certOpts{cn: "mx.example.org"}, p.inter)
	p.selfSigned = newCert(tb, certOpts{cn: "mx.example.org", dnsNames: []string{"mx.example.org"}}, nil)
	p.otherCA = newCert(tb, certOpts{cn: "Other Root CA", ca: true}, nil)
	p.otherLeaf = newCert(tb, certOpts{cn: "mx.example.org", dnsNames: []string{"mx.example.org"}}, p.otherCA)
	p.expiredInter = newCert(tb, certOpts{cn: "Expired Intermediate CA", ca: true,
		notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Hour)}, p.root)
	p.leafUnderExpired = newCert(tb, certOpts{cn: "mx.example.org", dnsNames: []string{"mx.example.org"},
		notBefore: testNow.Add(-72 * time.Hour)}, p.expiredInter)
	pkiCache.CompareAndSwap(nil, p)
	return pkiCache.Load()
}

// rec builds the TLSA record with the given parameters for c.
func rec(usage, selector, mtype uint8, c *x509.Certificate) dns.TLSA {
	b := c.Raw
	if selector == 1 {
		b = c.RawSubjectPublicKeyInfo
	}
	var data []byte
	switch mtype {
	case 0:
		data = append([]byte(nil), b...)
	case 1:
		h := sha256.Sum256(b)
		data = h[:]
	case 2:
		h := sha512.Sum512(b)
		data = h[:]
	}
	return dns.TLSA{Usage: usage, Selector: selector, MatchingType: mtype, Data: data}
}

func chainOf(kps ...*keyPair) []*x509.Certificate {
	out := make([]*x509.Certificate, len(kps))
	for i, kp := range kps {
		out[i] = kp.cert
	}
	return out
}

// tlsCert is the server certificate chain for a crypto/tls server.
func tlsCert(kps ...*keyPair) tls.Certificate {
	var c tls.Certificate
	for _, kp := range kps {
		c.Certificate = append(c.Certificate, kp.cert.Raw)
	}
	c.PrivateKey = kps[0].key
	c.Leaf = kps[0].cert
	return c
}
