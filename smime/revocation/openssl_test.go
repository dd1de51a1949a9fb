package revocation_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime/revocation"
)

const (
	good    = "good@example.org"
	revoked = "revoked@example.org"
)

func newChecker(t testing.TB, o revocation.Options) *revocation.Checker {
	t.Helper()
	o.AllowPrivate = true
	c, err := revocation.New(&o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leafOf returns the leaf certificate for email.
func leafOf(p *tooltest.PKI, email string) *x509.Certificate { return p.Leaf(email).Leaf }

func wantRevoked(t *testing.T, err error, src revocation.Source) *revocation.RevokedError {
	t.Helper()
	var re *revocation.RevokedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *RevokedError", err)
	}
	if re.Source != src || !errors.Is(err, revocation.ErrRevoked) || mailsec.IsTemporary(err) {
		t.Fatalf("revoked: source %s, Is %v, temporary %v; want %s, true, false", re.Source, errors.Is(err, revocation.ErrRevoked), mailsec.IsTemporary(err), src)
	}
	return re
}

func wantUnavailable(t *testing.T, err error, reason string) *revocation.UnavailableError {
	t.Helper()
	var ue *revocation.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want an *UnavailableError", err)
	}
	if !errors.Is(err, revocation.ErrUnavailable) || !mailsec.IsTemporary(err) {
		t.Fatalf("unavailable: Is %v, temporary %v; want both", errors.Is(err, revocation.ErrUnavailable), mailsec.IsTemporary(err))
	}
	if !strings.Contains(err.Error(), reason) {
		t.Fatalf("err = %v, want it to say %q", err, reason)
	}
	return ue
}

// TestOpenSSLResponder checks good and revoked leaves against openssl
// ocsp, answered by a delegated responder and by the issuer itself, and
// the intermediate against the root's CRL.
func TestOpenSSLResponder(t *testing.T) {
	for _, withIssuer := range []bool{false, true} {
		name := "delegated"
		if withIssuer {
			name = "issuer"
		}
		t.Run(name, func(t *testing.T) {
			p := tooltest.NewPKI(t, tooltest.PKIOptions{SignWithIssuer: withIssuer,
				Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t)}, {Email: revoked, Key: ecKey(t), Revoked: true}}})
			c := newChecker(t, revocation.Options{})
			ctx := context.Background()

			st, err := c.Check(ctx, leafOf(p, good), p.Intermediate.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			if st.Source != revocation.SourceOCSP || st.URL != p.OCSPURL || !st.Nonce || st.Cached || st.NextUpdate.IsZero() {
				t.Fatalf("status %+v: want OCSP from %s with the nonce echoed and a nextUpdate", st, p.OCSPURL)
			}
			if s := st.String(); !strings.HasPrefix(s, "certificate status good (OCSP, "+p.OCSPURL+", produced at ") {
				t.Errorf("note %q", s)
			}
			st, err = c.Check(ctx, leafOf(p, good), p.Intermediate.Certificate)
			if err != nil || !st.Cached {
				t.Fatalf("second check: %+v, %v; want a cached answer", st, err)
			}
			if o, _ := p.Hits(); o != 1 {
				t.Errorf("%d OCSP requests, want 1 (the second answer is cached)", o)
			}

			_, err = c.Check(ctx, leafOf(p, revoked), p.Intermediate.Certificate)
			re := wantRevoked(t, err, revocation.SourceOCSP)
			if re.Reason != 1 || re.RevokedAt.IsZero() || !strings.Contains(err.Error(), revoked) || !strings.Contains(err.Error(), "keyCompromise") {
				t.Errorf("revoked: %v (reason %d)", err, re.Reason)
			}

			// The intermediate names only the root's CRL.
			st, err = c.Check(ctx, p.Intermediate.Certificate, p.Root.Certificate)
			if err != nil || st.Source != revocation.SourceCRL || st.URL != p.RootCRLURL {
				t.Fatalf("intermediate: %+v, %v; want good from the root's CRL", st, err)
			}
		})
	}
}

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	ca, err := mailsectest.NewCA() // a fresh P-256 key, quickly
	if err != nil {
		t.Fatal(err)
	}
	return ca.Key
}

func TestRevokedIntermediate(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{RevokeIntermediate: true})
	c := newChecker(t, revocation.Options{})
	_, err := c.Check(context.Background(), p.Intermediate.Certificate, p.Root.Certificate)
	wantRevoked(t, err, revocation.SourceCRL)
}

// TestCRLFallback: with the responder down, the CRL answers.
func TestCRLFallback(t *testing.T) {
	dead := tooltest.DeadURL(t)
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{
		{Email: good, Key: ecKey(t), OCSPURL: dead}, {Email: revoked, Key: ecKey(t), Revoked: true, OCSPURL: dead}}})
	c := newChecker(t, revocation.Options{})
	ctx := context.Background()
	st, err := c.Check(ctx, leafOf(p, good), p.Intermediate.Certificate)
	if err != nil || st.Source != revocation.SourceCRL || st.URL != p.CRLURL {
		t.Fatalf("good: %+v, %v; want good from the CRL", st, err)
	}
	_, err = c.Check(ctx, leafOf(p, revoked), p.Intermediate.Certificate)
	re := wantRevoked(t, err, revocation.SourceCRL)
	if re.Reason != 1 {
		t.Errorf("reason %d, want 1 (keyCompromise)", re.Reason)
	}
	if _, crl := p.Hits(); crl != 1 {
		t.Errorf("%d CRL fetches, want 1 (the CRL is cached)", crl)
	}
}

// TestResponderDown: nothing answers, so nothing is established.
func TestResponderDown(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t), CRLURL: tooltest.DeadURL(t)}}})
	p.StopOCSP()
	var skip atomic.Int64
	c := newChecker(t, revocation.Options{Timeout: 5 * time.Second,
		Now: func() time.Time { return time.Now().Add(time.Duration(skip.Load())) }})
	_, err := c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate)
	ue := wantUnavailable(t, err, "unavailable")
	var fe *revocation.FetchError
	if len(ue.Attempts) != 2 || !errors.As(ue.Attempts[0], &fe) || fe.Source != revocation.SourceOCSP || !errors.As(ue.Attempts[1], &fe) || fe.Source != revocation.SourceCRL {
		t.Fatalf("attempts %v, want an OCSP then a CRL fetch error", ue.Attempts)
	}
	// The failure is remembered for a while: the next sends do not each
	// wait for the responder.
	_, err = c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate)
	wantUnavailable(t, err, "unavailable")
	if o, _ := p.Hits(); o != 1 {
		t.Fatalf("%d OCSP requests, want 1: the failure is remembered", o)
	}
	skip.Store(int64(time.Minute))
	_, err = c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate)
	wantUnavailable(t, err, "unavailable")
	if o, _ := p.Hits(); o != 2 {
		t.Fatalf("%d OCSP requests, want 2: a failure is remembered for less than a minute", o)
	}
}

func TestStaleCRL(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: revoked, Key: ecKey(t), Revoked: true, OCSPURL: "-"}}})
	p.ServeCRL(false, p.GenCRL(false, "-crl_lastupdate", "20240101000000Z", "-crl_nextupdate", "20240102000000Z"))
	c := newChecker(t, revocation.Options{})
	_, err := c.Check(context.Background(), leafOf(p, revoked), p.Intermediate.Certificate)
	wantUnavailable(t, err, "stale")
}

// TestCRLWrongKey: a CRL under the issuer's name, signed by another key,
// is not believed, neither to clear a certificate nor to revoke one.
func TestCRLWrongKey(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{
		{Email: good, Key: ecKey(t), OCSPURL: "-"}, {Email: revoked, Key: ecKey(t), Revoked: true, OCSPURL: "-"}}})
	p.ServeCRL(false, p.GenCRLWith(p.Impostor()))
	c := newChecker(t, revocation.Options{})
	for _, who := range []string{good, revoked} {
		_, err := c.Check(context.Background(), leafOf(p, who), p.Intermediate.Certificate)
		wantUnavailable(t, err, "signature does not verify")
	}
}

// forge returns an OCSP response for cert saying status, signed by key
// with responder embedded.
func forge(t testing.TB, cert, issuer, responder *x509.Certificate, key crypto.Signer, status int, opt func(*ocsp.Response)) []byte {
	t.Helper()
	now := time.Now()
	tmpl := ocsp.Response{Status: status, SerialNumber: cert.SerialNumber, ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(time.Hour), Certificate: responder}
	if opt != nil {
		opt(&tmpl)
	}
	der, err := ocsp.CreateResponse(issuer, responder, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestUnauthorisedResponder: responses signed by anyone but the issuer or
// its OCSP-signing delegate are refused. The revoked leaf's CRL is still
// there: a forged "good" must not hide the revocation.
func TestUnauthorisedResponder(t *testing.T) {
	other := tooltest.NewPKI(t, tooltest.PKIOptions{})
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{
		{Email: revoked, Key: ecKey(t), Revoked: true}, {Email: good, Key: ecKey(t)}}})
	victim, issuer := leafOf(p, revoked), p.Intermediate.Certificate
	mallory := p.Leaf(good) // issued by the issuer, but not for OCSP signing
	cases := []struct {
		name, reason string
		resp         []byte
	}{
		{"another CA's responder", "not issued by the certificate's issuer",
			forge(t, victim, issuer, other.Responder.Certificate, other.Responder.Key, ocsp.Good, nil)},
		{"a leaf of the issuer", "lacks the id-kp-OCSPSigning",
			forge(t, victim, issuer, mallory.Leaf, mallory.PrivateKey.(crypto.Signer), ocsp.Good, nil)},
		{"another CA's key, no certificate", "signature does not verify with the issuer's key",
			forge(t, victim, issuer, other.Intermediate.Certificate, other.Intermediate.Key, ocsp.Good, func(r *ocsp.Response) { r.Certificate = nil })},
		{"another issuer's CertID", "CertID names another issuer",
			forge(t, victim, other.Intermediate.Certificate, p.Responder.Certificate, p.Responder.Key, ocsp.Good, nil)},
		{"out of date", "out of date",
			forge(t, victim, issuer, p.Responder.Certificate, p.Responder.Key, ocsp.Good, func(r *ocsp.Response) {
				r.ThisUpdate, r.NextUpdate = time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour)
			})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.OCSPFilter(func(_, _ []byte) []byte { return tc.resp })
			c := newChecker(t, revocation.Options{})
			_, err := c.Check(context.Background(), victim, issuer)
			re := wantRevoked(t, err, revocation.SourceCRL)
			_ = re
			c = newChecker(t, revocation.Options{NoCRL: true})
			_, err = c.Check(context.Background(), victim, issuer)
			wantUnavailable(t, err, tc.reason)
		})
	}
	// The same forgery by the authorised responder is believed: the cases
	// above fail for the reason they name, not for a flaw of the forgery.
	p.OCSPFilter(func(_, _ []byte) []byte {
		return forge(t, victim, issuer, p.Responder.Certificate, p.Responder.Key, ocsp.Good, nil)
	})
	c := newChecker(t, revocation.Options{NoCRL: true})
	if st, err := c.Check(context.Background(), victim, issuer); err != nil || st.Source != revocation.SourceOCSP || st.Nonce {
		t.Fatalf("control: %+v, %v; want good from OCSP without a nonce", st, err)
	}
	c = newChecker(t, revocation.Options{NoCRL: true, Nonce: revocation.NonceRequire})
	_, err := c.Check(context.Background(), victim, issuer)
	wantUnavailable(t, err, "does not echo the request's nonce")
}

// TestNonceReplay: a response openssl signed for an earlier request, with
// that request's nonce, is refused when replayed.
func TestNonceReplay(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t), CRLURL: "-"}}})
	var first []byte
	p.OCSPFilter(func(_, resp []byte) []byte {
		if first == nil {
			first = resp
		}
		return first
	})
	c := newChecker(t, revocation.Options{CacheEntries: -1})
	leaf := leafOf(p, good)
	if _, err := c.Check(context.Background(), leaf, p.Intermediate.Certificate); err != nil {
		t.Fatal(err)
	}
	_, err := c.Check(context.Background(), leaf, p.Intermediate.Certificate)
	wantUnavailable(t, err, "nonce does not match")
}

// TestAddressGuard: without AllowPrivate, loopback responders are not
// contacted.
func TestAddressGuard(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t)}}})
	c, err := revocation.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate)
	var ae *mailsec.AddressError
	if !errors.As(err, &ae) || ae.Host != "127.0.0.1" {
		t.Fatalf("err = %v, want an *AddressError for 127.0.0.1", err)
	}
	if !errors.Is(err, revocation.ErrUnavailable) || mailsec.IsTemporary(err) {
		t.Fatalf("err = %v (temporary %v), want ErrUnavailable, not temporary: the addresses will not change", err, mailsec.IsTemporary(err))
	}
	if o, crl := p.Hits(); o+crl != 0 {
		t.Fatalf("%d OCSP and %d CRL requests reached the servers", o, crl)
	}
}

func TestSizeLimit(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t)}}})
	c := newChecker(t, revocation.Options{MaxResponseSize: 64, MaxCRLSize: 64})
	_, err := c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate)
	wantUnavailable(t, err, "limit of 64")
}

// TestSizeLimitChunked: a response without a Content-Length is cut off
// at the limit too.
func TestSizeLimitChunked(t *testing.T) {
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/ocsp-response")
		for range 16 {
			_, _ = w.Write(bytes.Repeat([]byte{0x30}, 64))
			w.(http.Flusher).Flush()
		}
	}))
	defer big.Close()
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t), OCSPURL: big.URL + "/", CRLURL: "-"}}})
	c := newChecker(t, revocation.Options{MaxResponseSize: 512})
	_, err := c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate)
	wantUnavailable(t, err, "exceeds the limit of 512 bytes")
}

// TestConcurrentChecks runs checks of the same certificates at once (run
// with -race).
func TestConcurrentChecks(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t)}, {Email: revoked, Key: ecKey(t), Revoked: true}}})
	c := newChecker(t, revocation.Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			if i%2 == 0 {
				if _, err := c.Check(context.Background(), leafOf(p, good), p.Intermediate.Certificate); err != nil {
					errs <- err
				}
				return
			}
			if _, err := c.Check(context.Background(), leafOf(p, revoked), p.Intermediate.Certificate); !errors.Is(err, revocation.ErrRevoked) {
				errs <- fmt.Errorf("revoked: %v", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCancel: a cancelled check returns at once, and is not temporary.
func TestCancel(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{{Email: good, Key: ecKey(t)}}})
	p.OCSPFilter(func(_, resp []byte) []byte { time.Sleep(time.Second); return resp })
	c := newChecker(t, revocation.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Check(ctx, leafOf(p, good), p.Intermediate.Certificate)
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("took %v after cancellation", d)
	}
	if !errors.Is(err, revocation.ErrUnavailable) || !errors.Is(err, context.Canceled) || mailsec.IsTemporary(err) {
		t.Fatalf("err = %v (temporary %v), want ErrUnavailable for a cancelled check, not temporary", err, mailsec.IsTemporary(err))
	}
}
