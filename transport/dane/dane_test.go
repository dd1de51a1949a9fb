package dane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport/dane"
)

var mxNames = []string{"mx.example.org"}

func TestUsable(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf.cert
	ok311 := rec(3, 1, 1, leaf)
	ok301 := rec(3, 0, 1, leaf)
	ok300 := rec(3, 0, 0, leaf)
	ok312 := rec(3, 1, 2, leaf)
	ok211 := rec(2, 1, 1, p.root.cert)
	ok202 := rec(2, 0, 2, p.root.cert)
	withData := func(r dns.TLSA, n int) dns.TLSA {
		r.Data = bytes.Repeat([]byte{0xab}, n)
		return r
	}
	set := func(r dns.TLSA, u, s, m uint8) dns.TLSA {
		r.Usage, r.Selector, r.MatchingType = u, s, m
		return r
	}
	tests := []struct {
		name string
		in   []dns.TLSA
		want []dns.TLSA
	}{
		{"empty", nil, nil},
		{"DANE-EE and DANE-TA kept", []dns.TLSA{ok311, ok301, ok300, ok211}, []dns.TLSA{ok311, ok301, ok300, ok211}},
		{"PKIX-TA(0) dropped", []dns.TLSA{set(ok211, 0, 1, 1)}, nil},
		{"PKIX-EE(1) dropped", []dns.TLSA{set(ok311, 1, 1, 1), ok301}, []dns.TLSA{ok301}},
		{"usage 4 dropped", []dns.TLSA{set(ok311, 4, 1, 1)}, nil},
		{"usage 255 dropped", []dns.TLSA{set(ok311, 255, 1, 1)}, nil},
		{"selector 2 dropped", []dns.TLSA{set(ok311, 3, 2, 1)}, nil},
		{"selector 255 dropped", []dns.TLSA{set(ok311, 3, 255, 1)}, nil},
		{"matching type 3 dropped", []dns.TLSA{set(ok311, 3, 1, 3)}, nil},
		{"matching type 255 dropped", []dns.TLSA{withData(set(ok311, 3, 1, 255), 32)}, nil},
		{"SHA-256 of 31 octets", []dns.TLSA{withData(ok311, 31)}, nil},
		{"SHA-256 of 33 octets", []dns.TLSA{withData(ok311, 33)}, nil},
		{"SHA-256 of 64 octets", []dns.TLSA{withData(ok311, 64)}, nil},
		{"SHA-512 of 32 octets", []dns.TLSA{withData(ok312, 32)}, nil},
		{"SHA-512 of 63 octets", []dns.TLSA{withData(ok312, 63)}, nil},
		{"Full without data", []dns.TLSA{withData(ok300, 0)}, nil},
		{"SHA-256 without data", []dns.TLSA{withData(ok311, 0)}, nil},
		// RFC 7671 §9: the strongest digest per usage and selector wins;
		// Full(0) always stays.
		{"SHA-512 retires SHA-256", []dns.TLSA{ok311, ok312}, []dns.TLSA{ok312}},
		{"SHA-512 retires SHA-256 after it", []dns.TLSA{ok312, ok311, ok300}, []dns.TLSA{ok312, ok300}},
		{"agility per selector", []dns.TLSA{ok312, ok301}, []dns.TLSA{ok312, ok301}},
		{"agility per usage", []dns.TLSA{ok202, ok301, rec(2, 0, 1, p.root.cert)}, []dns.TLSA{ok202, ok301}},
		{"Full kept beside SHA-512", []dns.TLSA{rec(3, 1, 0, leaf), ok312}, []dns.TLSA{rec(3, 1, 0, leaf), ok312}},
		{"malformed SHA-512 does not retire SHA-256", []dns.TLSA{ok311, withData(ok312, 32)}, []dns.TLSA{ok311}},
		{"unusable usage does not retire SHA-256", []dns.TLSA{ok311, set(ok312, 1, 1, 2)}, []dns.TLSA{ok311}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := dane.Usable(tt.in)
			if !slices.EqualFunc(got, tt.want, tlsaEqual) {
				t.Errorf("Usable(%v) = %v, want %v", tt.in, got, tt.want)
			}
			if tt.want == nil && got != nil {
				t.Errorf("Usable(%v) = %#v, want nil", tt.in, got)
			}
		})
	}

	t.Run("returns copies", func(t *testing.T) {
		in := []dns.TLSA{rec(3, 1, 1, leaf)}
		orig := bytes.Clone(in[0].Data)
		out := dane.Usable(in)
		out[0].Data[0] ^= 0xff
		if !bytes.Equal(in[0].Data, orig) {
			t.Error("changing a record Usable returned changed the caller's record")
		}
	})
}

func tlsaEqual(a, b dns.TLSA) bool {
	return a.Usage == b.Usage && a.Selector == b.Selector && a.MatchingType == b.MatchingType && bytes.Equal(a.Data, b.Data)
}

// wantMatch checks that Verify accepts chain with recs and reports want.
func wantMatch(t *testing.T, chain []*x509.Certificate, recs []dns.TLSA, names []string, want dns.TLSA, depth int) dane.Match {
	t.Helper()
	m, err := dane.Verify(chain, recs, names, testNow)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !tlsaEqual(m.Record, want) || m.Depth != depth {
		t.Fatalf("Verify matched %v at depth %d, want %v at depth %d", m.Record, m.Depth, want, depth)
	}
	return m
}

// wantFail checks that Verify refuses chain with an *Error of the given
// TLS-RPT result type, matching each of the sentinels in is.
func wantFail(t *testing.T, chain []*x509.Certificate, recs []dns.TLSA, names []string, result string, is ...error) *dane.Error {
	t.Helper()
	m, err := dane.Verify(chain, recs, names, testNow)
	if err == nil {
		t.Fatalf("Verify accepted the chain with %v (depth %d)", m.Record, m.Depth)
	}
	var de *dane.Error
	if !errors.As(err, &de) {
		t.Fatalf("Verify error %T (%v), want *dane.Error", err, err)
	}
	if got := de.ResultType(); got != result {
		t.Errorf("ResultType() = %q, want %q (error: %v)", got, result, err)
	}
	for _, target := range is {
		if !errors.Is(err, target) {
			t.Errorf("error %q does not match %v", err, target)
		}
	}
	if de.Temporary() {
		t.Errorf("error %q is temporary", err)
	}
	if m.Record.Data != nil || m.Depth != 0 || m.Name != "" {
		t.Errorf("Verify failed but returned match %+v", m)
	}
	return de
}

func TestDANEEE(t *testing.T) {
	p := newPKI(t)
	chain := chainOf(p.leaf, p.inter)
	for _, params := range [][3]uint8{{3, 1, 1}, {3, 0, 1}, {3, 1, 2}, {3, 0, 2}, {3, 1, 0}, {3, 0, 0}} {
		r := rec(params[0], params[1], params[2], p.leaf.cert)
		t.Run(r.String()[:5]+" match", func(t *testing.T) {
			m := wantMatch(t, chain, []dns.TLSA{r}, mxNames, r, 0)
			if m.Record.Usage != 3 || m.Name != "" {
				t.Errorf("match %+v: usage %d, Name %q", m, m.Record.Usage, m.Name)
			}
		})
		t.Run(r.String()[:5]+" mismatch", func(t *testing.T) {
			other := rec(params[0], params[1], params[2], p.wrongName.cert)
			de := wantFail(t, chain, []dns.TLSA{other}, mxNames, "validation-failure", dane.ErrNoMatch)
			if errors.Is(de, dane.ErrExpired) || errors.Is(de, dane.ErrNameMismatch) || errors.Is(de, dane.ErrNoUsableRecords) {
				t.Errorf("no-match error %q matches a more specific sentinel", de)
			}
			if de.Host != "mx.example.org" || !strings.Contains(de.Error(), "mx.example.org") {
				t.Errorf("error %q: Host %q", de, de.Host)
			}
		})
	}

	// RFC 7672 §3.1.1: names, dates and issuer do not matter.
	t.Run("expired wrong-name self-signed leaf", func(t *testing.T) {
		odd := newCert(t, certOpts{cn: "nobody.invalid", dnsNames: []string{"nobody.invalid"},
			notBefore: testNow.Add(-1000 * time.Hour), notAfter: testNow.Add(-999 * time.Hour)}, nil)
		r := rec(3, 1, 1, odd.cert)
		wantMatch(t, chainOf(odd), []dns.TLSA{r}, mxNames, r, 0)
		wantMatch(t, chainOf(odd), []dns.TLSA{r}, nil, r, 0)
	})
	t.Run("expired leaf under a CA", func(t *testing.T) {
		r := rec(3, 0, 1, p.expired.cert)
		wantMatch(t, chainOf(p.expired, p.inter), []dns.TLSA{r}, mxNames, r, 0)
	})
	t.Run("wrong-name leaf", func(t *testing.T) {
		r := rec(3, 1, 2, p.wrongName.cert)
		wantMatch(t, chainOf(p.wrongName), []dns.TLSA{r}, mxNames, r, 0)
	})
	t.Run("same key, other certificate", func(t *testing.T) {
		// A renewed certificate with the same key still matches 3 1 x,
		// not 3 0 x.
		renewed := newCert(t, certOpts{cn: "mx.example.org", dnsNames: []string{"mx.example.org"}, key: p.leaf.key}, p.inter)
		spki, cert := rec(3, 1, 1, p.leaf.cert), rec(3, 0, 1, p.leaf.cert)
		wantMatch(t, chainOf(renewed, p.inter), []dns.TLSA{spki}, mxNames, spki, 0)
		wantFail(t, chainOf(renewed, p.inter), []dns.TLSA{cert}, mxNames, "validation-failure", dane.ErrNoMatch)
	})
	t.Run("only the leaf", func(t *testing.T) {
		// A DANE-EE record for a certificate further up the chain does
		// not authenticate the server.
		r := rec(3, 1, 1, p.inter.cert)
		wantFail(t, chainOf(p.leaf, p.inter, p.root), []dns.TLSA{r}, mxNames, "validation-failure", dane.ErrNoMatch)
	})
	t.Run("unusable EE record ignored", func(t *testing.T) {
		// A PKIX-EE record with the leaf's hash is not usable, even passed
		// to Verify directly.
		r := rec(1, 1, 1, p.leaf.cert)
		wantFail(t, chain, []dns.TLSA{r}, mxNames, "tlsa-invalid", dane.ErrNoUsableRecords)
	})
	t.Run("digest agility", func(t *testing.T) {
		// A 3 1 2 record for another key retires the matching 3 1 1.
		recs := []dns.TLSA{rec(3, 1, 1, p.leaf.cert), rec(3, 1, 2, p.wrongName.cert)}
		wantFail(t, chain, recs, mxNames, "validation-failure", dane.ErrNoMatch)
		recs = append(recs, rec(3, 1, 2, p.leaf.cert))
		wantMatch(t, chain, recs, mxNames, recs[2], 0)
	})
}

func TestDANETA(t *testing.T) {
	p := newPKI(t)
	full := chainOf(p.leaf, p.inter, p.root)

	tests := []struct {
		name  string
		chain []*x509.Certificate
		rec   dns.TLSA
		depth int
	}{
		{"2 1 1 root sent", full, rec(2, 1, 1, p.root.cert), 2},
		{"2 0 0 root sent", full, rec(2, 0, 0, p.root.cert), 2},
		{"2 0 1 root sent", full, rec(2, 0, 1, p.root.cert), 2},
		{"2 1 2 root sent", full, rec(2, 1, 2, p.root.cert), 2},
		{"2 1 1 intermediate", chainOf(p.leaf, p.inter), rec(2, 1, 1, p.inter.cert), 1},
		{"2 0 0 intermediate", chainOf(p.leaf, p.inter), rec(2, 0, 0, p.inter.cert), 1},
		{"2 1 1 intermediate, root sent too", full, rec(2, 1, 1, p.inter.cert), 1},
		{"2 0 0 intermediate, root sent too", full, rec(2, 0, 0, p.inter.cert), 1},
		// RFC 7671 §5.2.2: a "2 0 0" anchor need not be sent.
		{"2 0 0 root not sent", chainOf(p.leaf, p.inter), rec(2, 0, 0, p.root.cert), 2},
		{"2 0 0 intermediate not sent", chainOf(p.leaf), rec(2, 0, 0, p.inter.cert), 1},
		// Chains in the wrong order still verify: the order is not what
		// authenticates.
		{"2 1 1 root, disordered chain", chainOf(p.leaf, p.root, p.inter), rec(2, 1, 1, p.root.cert), 1},
		{"wildcard leaf", chainOf(p.wildcard, p.inter), rec(2, 0, 1, p.inter.cert), 1},
		{"leaf without extended key usage", chainOf(newCert(t, certOpts{cn: "mx.example.org", dnsNames: mxNames,
			eku: []x509.ExtKeyUsage{}}, p.inter), p.inter), rec(2, 1, 1, p.inter.cert), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := wantMatch(t, tt.chain, []dns.TLSA{tt.rec}, mxNames, tt.rec, tt.depth)
			if m.Record.Usage != 2 || m.Name != "mx.example.org" {
				t.Errorf("match %+v: usage %d, Name %q", m, m.Record.Usage, m.Name)
			}
		})
	}

	t.Run("second reference name", func(t *testing.T) {
		r := rec(2, 1, 1, p.inter.cert)
		m := wantMatch(t, full, []dns.TLSA{r}, []string{"mx.cname-target.example", "MX.Example.ORG."}, r, 1)
		if m.Name != "MX.Example.ORG." {
			t.Errorf("Name = %q", m.Name)
		}
	})

	type failCase struct {
		name   string
		chain  []*x509.Certificate
		recs   []dns.TLSA
		names  []string
		result string
		is     []error
	}
	fails := []failCase{
		{"anchor not in chain (2 1 1)", chainOf(p.leaf, p.inter), []dns.TLSA{rec(2, 1, 1, p.root.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"anchor not in chain (2 0 1)", chainOf(p.leaf, p.inter), []dns.TLSA{rec(2, 0, 1, p.root.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"chain does not lead to anchor", chainOf(p.otherLeaf, p.otherCA, p.root), []dns.TLSA{rec(2, 1, 1, p.root.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"intermediate missing", chainOf(p.leaf, p.root), []dns.TLSA{rec(2, 0, 1, p.root.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"DNS anchor not the issuer", chainOf(p.otherLeaf, p.otherCA), []dns.TLSA{rec(2, 0, 0, p.root.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"expired leaf", chainOf(p.expired, p.inter, p.root), []dns.TLSA{rec(2, 1, 1, p.root.cert)}, mxNames,
			"certificate-expired", []error{dane.ErrNoMatch, dane.ErrExpired}},
		{"leaf not yet valid", chainOf(newCert(t, certOpts{cn: "mx.example.org", dnsNames: mxNames,
			notBefore: testNow.Add(time.Hour), notAfter: testNow.Add(48 * time.Hour)}, p.inter), p.inter),
			[]dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames,
			"certificate-expired", []error{dane.ErrNoMatch, dane.ErrExpired}},
		{"expired intermediate", chainOf(p.leafUnderExpired, p.expiredInter, p.root), []dns.TLSA{rec(2, 1, 1, p.root.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"wrong-name leaf", chainOf(p.wrongName, p.inter, p.root), []dns.TLSA{rec(2, 1, 1, p.root.cert)}, mxNames,
			"certificate-host-mismatch", []error{dane.ErrNoMatch, dane.ErrNameMismatch}},
		{"no names given", full, []dns.TLSA{rec(2, 1, 1, p.root.cert)}, nil,
			"certificate-host-mismatch", []error{dane.ErrNoMatch, dane.ErrNameMismatch}},
		{"common name not used", chainOf(p.cnOnly, p.inter), []dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames,
			"certificate-host-mismatch", []error{dane.ErrNoMatch, dane.ErrNameMismatch}},
		{"leaf for clients only", chainOf(newCert(t, certOpts{cn: "mx.example.org", dnsNames: mxNames,
			eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, p.inter), p.inter),
			[]dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames, "validation-failure", []error{dane.ErrNoMatch}},
		{"wildcard covers one label only", chainOf(p.wildcard, p.inter), []dns.TLSA{rec(2, 1, 1, p.inter.cert)}, []string{"a.mx.example.org"},
			"certificate-host-mismatch", []error{dane.ErrNoMatch, dane.ErrNameMismatch}},
		{"wildcard does not cover the parent", chainOf(p.wildcard, p.inter), []dns.TLSA{rec(2, 1, 1, p.inter.cert)}, []string{"example.org"},
			"certificate-host-mismatch", []error{dane.ErrNoMatch, dane.ErrNameMismatch}},
		// The server's own certificate is never a trust anchor (RFC 7671
		// §5.2; OpenSSL, and so Postfix and Exim, behave the same).
		{"TA record for the self-signed leaf", chainOf(p.selfSigned), []dns.TLSA{rec(2, 0, 1, p.selfSigned.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"TA 2 0 0 record for the self-signed leaf", chainOf(p.selfSigned), []dns.TLSA{rec(2, 0, 0, p.selfSigned.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"TA record for the leaf sent twice", chainOf(p.selfSigned, p.selfSigned), []dns.TLSA{rec(2, 1, 1, p.selfSigned.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
		{"TA record for a CA-issued leaf", chainOf(p.leaf, p.inter), []dns.TLSA{rec(2, 1, 1, p.leaf.cert)}, mxNames,
			"validation-failure", []error{dane.ErrNoMatch}},
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			wantFail(t, tt.chain, tt.recs, tt.names, tt.result, tt.is...)
		})
	}

	t.Run("verifies at the time given", func(t *testing.T) {
		// Valid at testNow (2040), so the wall clock must not be used;
		// and out of date a week later.
		r := rec(2, 1, 1, p.root.cert)
		if _, err := dane.Verify(full, []dns.TLSA{r}, mxNames, testNow); err != nil {
			t.Fatal(err)
		}
		_, err := dane.Verify(full, []dns.TLSA{r}, mxNames, testNow.Add(7*24*time.Hour))
		if !errors.Is(err, dane.ErrExpired) {
			t.Fatalf("a week later: %v, want ErrExpired", err)
		}
	})
}

func TestMultipleRecords(t *testing.T) {
	p := newPKI(t)
	chain := chainOf(p.leaf, p.inter, p.root)
	noEE := rec(3, 1, 1, p.otherLeaf.cert)
	noTA := rec(2, 1, 1, p.otherCA.cert)
	goodEE := rec(3, 0, 2, p.leaf.cert)
	goodTA := rec(2, 0, 1, p.inter.cert)
	pkix := rec(1, 1, 1, p.leaf.cert)

	wantMatch(t, chain, []dns.TLSA{noEE, noTA, pkix, goodTA}, mxNames, goodTA, 1)
	wantMatch(t, chain, []dns.TLSA{noTA, goodEE, noEE}, mxNames, goodEE, 0)
	// DANE-EE is tried first, whatever the order.
	wantMatch(t, chain, []dns.TLSA{goodTA, goodEE}, mxNames, goodEE, 0)
	wantFail(t, chain, []dns.TLSA{noEE, noTA, pkix}, mxNames, "validation-failure", dane.ErrNoMatch)

	// The failure reported is the one that got furthest: a chain that
	// verifies for another name beats records that match nothing.
	wantFail(t, chainOf(p.wrongName, p.inter, p.root), []dns.TLSA{noEE, noTA, rec(2, 1, 1, p.root.cert), noEE}, mxNames,
		"certificate-host-mismatch", dane.ErrNameMismatch)
	wantFail(t, chainOf(p.expired, p.inter, p.root), []dns.TLSA{rec(2, 1, 1, p.root.cert), noTA}, mxNames,
		"certificate-expired", dane.ErrExpired)
	// Of two anchors, the one the chain verifies to is used.
	wantMatch(t, chain, []dns.TLSA{rec(2, 1, 1, p.otherCA.cert), rec(2, 1, 1, p.root.cert)}, mxNames, rec(2, 1, 1, p.root.cert), 2)
	chainWithOther := chainOf(p.leaf, p.inter, p.otherCA, p.root)
	wantMatch(t, chainWithOther, []dns.TLSA{rec(2, 1, 1, p.otherCA.cert), rec(2, 1, 1, p.root.cert)}, mxNames, rec(2, 1, 1, p.root.cert), 3)
}

func TestOddInput(t *testing.T) {
	p := newPKI(t)
	r := rec(3, 1, 1, p.leaf.cert)
	ta := rec(2, 0, 0, p.root.cert)

	wantFail(t, nil, []dns.TLSA{r}, mxNames, "validation-failure", dane.ErrNoMatch)
	wantFail(t, []*x509.Certificate{}, []dns.TLSA{r, ta}, mxNames, "validation-failure", dane.ErrNoMatch)
	wantFail(t, []*x509.Certificate{nil}, []dns.TLSA{r, ta}, mxNames, "validation-failure", dane.ErrNoMatch)
	wantFail(t, []*x509.Certificate{nil, p.leaf.cert}, []dns.TLSA{r, ta}, mxNames, "validation-failure", dane.ErrNoMatch)
	wantMatch(t, []*x509.Certificate{p.leaf.cert, nil, p.inter.cert, nil}, []dns.TLSA{ta}, mxNames, ta, 4)
	wantFail(t, chainOf(p.leaf), nil, mxNames, "tlsa-invalid", dane.ErrNoUsableRecords)
	de := wantFail(t, chainOf(p.leaf), []dns.TLSA{rec(0, 1, 1, p.root.cert)}, nil, "tlsa-invalid", dane.ErrNoUsableRecords)
	if errors.Is(de, dane.ErrNoMatch) {
		t.Error("no-usable-records error matches ErrNoMatch")
	}
	if de.Host != "" {
		t.Errorf("Host = %q without names", de.Host)
	}

	// Hand-made certificates without DER, keys or names.
	empty := &x509.Certificate{}
	wantFail(t, []*x509.Certificate{empty, empty}, []dns.TLSA{r, ta, rec(2, 1, 1, p.root.cert)}, mxNames, "validation-failure", dane.ErrNoMatch)
	noKey := &x509.Certificate{Raw: []byte{1, 2, 3}, RawSubjectPublicKeyInfo: []byte{4, 5, 6}}
	wantMatch(t, []*x509.Certificate{p.leaf.cert, noKey, p.inter.cert}, []dns.TLSA{{Usage: 2, Selector: 0, MatchingType: 0, Data: []byte{1, 2, 3}}, ta}, mxNames, ta, 3)
	wantFail(t, []*x509.Certificate{p.leaf.cert, noKey}, []dns.TLSA{{Usage: 2, Selector: 1, MatchingType: 0, Data: []byte{4, 5, 6}}}, mxNames,
		"validation-failure", dane.ErrNoMatch)
	// A "2 0 0" record whose data is not a certificate.
	wantFail(t, chainOf(p.leaf), []dns.TLSA{{Usage: 2, Selector: 0, MatchingType: 0, Data: []byte("not DER")}}, mxNames,
		"validation-failure", dane.ErrNoMatch)
}

// handshake runs a TLS handshake over net.Pipe between a server sending
// chain and a client whose VerifyConnection is verify. It returns the
// client's and the server's errors.
func handshake(t *testing.T, chain tls.Certificate, verify func(tls.ConnectionState) error) (clientErr, serverErr error) {
	t.Helper()
	cc, sc := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// No session tickets, and the pipes closed without close_notify:
	// nothing is written after the handshake that the other side would
	// have to read.
	server := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{chain}, MinVersion: tls.VersionTLS12, SessionTicketsDisabled: true})
	client := tls.Client(cc, &tls.Config{
		ServerName:         "mx.example.org",
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true,
		VerifyConnection:   verify,
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		serverErr = server.HandshakeContext(ctx)
		sc.Close()
	})
	clientErr = client.HandshakeContext(ctx)
	cc.Close()
	wg.Wait()
	return clientErr, serverErr
}

func TestVerifyConnection(t *testing.T) {
	p := newPKI(t)
	clock := func() time.Time { return testNow }

	t.Run("DANE-EE match", func(t *testing.T) {
		r := rec(3, 1, 1, p.leaf.cert)
		var got []dane.Match
		cerr, serr := handshake(t, tlsCert(p.leaf, p.inter),
			dane.VerifyConnection([]dns.TLSA{rec(1, 1, 1, p.leaf.cert), r}, mxNames, clock, func(m dane.Match) { got = append(got, m) }))
		if cerr != nil || serr != nil {
			t.Fatalf("handshake: client %v, server %v", cerr, serr)
		}
		if len(got) != 1 || !tlsaEqual(got[0].Record, r) || got[0].Depth != 0 {
			t.Fatalf("onMatch got %+v, want one match of %v", got, r)
		}
	})

	t.Run("DANE-TA match", func(t *testing.T) {
		r := rec(2, 0, 1, p.root.cert)
		var got []dane.Match
		cerr, serr := handshake(t, tlsCert(p.leaf, p.inter, p.root),
			dane.VerifyConnection([]dns.TLSA{r}, mxNames, clock, func(m dane.Match) { got = append(got, m) }))
		if cerr != nil || serr != nil {
			t.Fatalf("handshake: client %v, server %v", cerr, serr)
		}
		if len(got) != 1 || !tlsaEqual(got[0].Record, r) || got[0].Depth != 2 || got[0].Name != "mx.example.org" {
			t.Fatalf("onMatch got %+v, want one match of %v at depth 2", got, r)
		}
	})

	t.Run("mismatch", func(t *testing.T) {
		called := false
		cerr, serr := handshake(t, tlsCert(p.leaf, p.inter),
			dane.VerifyConnection([]dns.TLSA{rec(3, 1, 1, p.otherLeaf.cert), rec(2, 1, 1, p.otherCA.cert)}, mxNames, clock,
				func(dane.Match) { called = true }))
		var de *dane.Error
		if !errors.As(cerr, &de) || de.ResultType() != "validation-failure" || !errors.Is(cerr, dane.ErrNoMatch) {
			t.Fatalf("client error %v, want a *dane.Error (validation-failure)", cerr)
		}
		if serr == nil {
			t.Error("server completed the handshake the client refused")
		}
		if called {
			t.Error("onMatch called on a failed verification")
		}
	})

	t.Run("wrong name under DANE-TA", func(t *testing.T) {
		cerr, _ := handshake(t, tlsCert(p.wrongName, p.inter),
			dane.VerifyConnection([]dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames, clock, nil))
		if !errors.Is(cerr, dane.ErrNameMismatch) {
			t.Fatalf("client error %v, want ErrNameMismatch", cerr)
		}
	})

	t.Run("nil clock is the wall clock", func(t *testing.T) {
		// The test PKI is valid in 2040 only: DANE-TA fails now, DANE-EE
		// (which ignores dates) succeeds.
		cerr, _ := handshake(t, tlsCert(p.leaf, p.inter),
			dane.VerifyConnection([]dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames, nil, nil))
		if !errors.Is(cerr, dane.ErrExpired) {
			t.Fatalf("client error %v, want ErrExpired", cerr)
		}
		cerr, serr := handshake(t, tlsCert(p.leaf, p.inter),
			dane.VerifyConnection([]dns.TLSA{rec(3, 1, 1, p.leaf.cert)}, mxNames, nil, nil))
		if cerr != nil || serr != nil {
			t.Fatalf("handshake: client %v, server %v", cerr, serr)
		}
	})

	t.Run("arguments copied", func(t *testing.T) {
		recs := []dns.TLSA{rec(3, 1, 1, p.leaf.cert)}
		names := []string{"mx.example.org"}
		taRecs := []dns.TLSA{rec(2, 1, 1, p.inter.cert)}
		ee := dane.VerifyConnection(recs, mxNames, clock, nil)
		ta := dane.VerifyConnection(taRecs, names, clock, nil)
		recs[0].Data[0] ^= 0xff
		taRecs[0].Data[0] ^= 0xff
		names[0] = "other.example"
		if cerr, serr := handshake(t, tlsCert(p.leaf, p.inter), ee); cerr != nil || serr != nil {
			t.Fatalf("DANE-EE after the caller changed its records: client %v, server %v", cerr, serr)
		}
		if cerr, serr := handshake(t, tlsCert(p.leaf, p.inter), ta); cerr != nil || serr != nil {
			t.Fatalf("DANE-TA after the caller changed its records and names: client %v, server %v", cerr, serr)
		}
	})
}

func TestErrorText(t *testing.T) {
	p := newPKI(t)
	_, err := dane.Verify(chainOf(p.wrongName, p.inter), []dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames, testNow)
	msg := err.Error()
	for _, want := range []string{"mx.example.org", "other.example.net", "2 1 1 ", "depth 1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	_, err = dane.Verify(chainOf(p.expired, p.inter), []dns.TLSA{rec(2, 1, 1, p.inter.cert)}, mxNames, testNow)
	var ci x509.CertificateInvalidError
	if !errors.As(err, &ci) || ci.Reason != x509.Expired {
		t.Errorf("expired error %v does not wrap the x509 error", err)
	}
}
