package transport_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

// TLS session resumption: a new session to a server the transport has
// spoken to resumes an earlier TLS session, under the same requirement
// only, and a resumed session meets every check a full handshake meets.

// oneMessagePerSession makes every delivery open a new session.
func oneMessagePerSession(tr *transport.Submission) *transport.Submission {
	tr.MaxMessagesPerConn = 1
	return tr
}

func deliverOK(t *testing.T, tr *transport.Submission, sec mailsec.Security) *mailsec.ConnectionState {
	t.Helper()
	d, _ := canaryDelivery(t)
	d.Security = sec
	res, err := deliver(t, tr, d)
	if err != nil {
		t.Fatal(err)
	}
	return res.Connection
}

func TestTLSSessionResumed(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		t.Run(fmt.Sprintf("implicit=%v", implicit), func(t *testing.T) {
			srv := mailsectest.NewServer(t, mailsectest.Config{ImplicitTLS: implicit, Users: users})
			tr := oneMessagePerSession(srv.Transport())
			tr.Auth = &transport.Auth{Username: "alice", Password: password}
			first := deliverOK(t, tr, mailsec.Security{})
			second := deliverOK(t, tr, mailsec.Security{})
			if first.TLSResumed || !second.TLSResumed {
				t.Fatalf("resumed: first %v, second %v; want false, true", first.TLSResumed, second.TLSResumed)
			}
			if second.Reused {
				t.Fatal("the second delivery reused the first session; it must have a new one")
			}
			if second.Verification != mailsec.VerifiedWebPKI || second.PeerPin != first.PeerPin || second.SASLMechanism == "" {
				t.Fatalf("resumed session state %+v, first %+v", second, first)
			}
			if n := srv.Connections(); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
			if len(srv.Messages()) != 2 {
				t.Fatalf("%d messages delivered, want 2", len(srv.Messages()))
			}
			js, err := json.Marshal(second)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(js), `"tls_resumed":true`) {
				t.Fatalf("the Receipt does not record the resumption: %s", js)
			}
		})
	}
}

// Sessions are kept per requirement: one established under Verified is
// not offered under Pinned (even with the right pin), nor under another
// set of pins, and each requirement resumes its own.
func TestResumptionScopedToRequirement(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := oneMessagePerSession(srv.Transport())
	verified := mailsec.Security{}
	pin := deliverOK(t, tr, verified).PeerPin
	pinned := mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin}}
	twoPins := mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin, {1}}}
	for i, step := range []struct {
		sec  mailsec.Security
		want bool
	}{
		{pinned, false}, // a session of Verified is not offered
		{pinned, true},
		{twoPins, false}, // another requirement
		{twoPins, true},
		{verified, true}, // its own session, kept
	} {
		cs := deliverOK(t, tr, step.sec)
		if cs.TLSResumed != step.want {
			t.Fatalf("step %d (%v, %d pins): resumed %v, want %v", i+1, step.sec.Level, len(step.sec.Pins), cs.TLSResumed, step.want)
		}
	}
}

// sharedCache ignores the requirement a session was established under:
// it is what a cache keyed by the server name alone would be. It counts
// the sessions it hands out.
type sharedCache struct {
	mu    sync.Mutex
	cs    *tls.ClientSessionState
	given int
}

func (c *sharedCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil {
		return nil, false
	}
	c.given++
	return c.cs, true
}

func (c *sharedCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs != nil {
		c.cs = cs
	}
}

func (c *sharedCache) handedOut() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.given
}

// The scoping taken away: a session established without verification is
// offered under requirements it never met, and the resumed handshake is
// refused by each requirement's own check (crypto/tls calls
// VerifyConnection on resumption, and the checks on the finished handshake
// run again). The right pin resumes: the session was offered and taken.
func TestResumedSessionCheckedAgain(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	shared := &sharedCache{}
	useShared := func(c *tls.Config) { c.ClientSessionCache = shared }
	cs, err := transport.DialWith(srv.Transport(), transport.SubmissionPolicy(mailsec.Security{Level: mailsec.Unverified}), useShared)
	if err != nil {
		t.Fatal(err)
	}
	pin := cs.PeerPin
	otherTLSA := dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}
	refusedAfterOffer := func(name string, dial func() error, reason error) {
		t.Helper()
		before := shared.handedOut()
		err := dial()
		if shared.handedOut() == before {
			t.Fatalf("%s: the cached session was not offered: the test shows nothing", name)
		}
		assertSecurity(t, err, reason, mailsec.ErrCertificate)
	}
	refusedAfterOffer("pinned to another key", func() error {
		_, err := transport.DialWith(srv.Transport(), transport.SubmissionPolicy(mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{{1}}}), useShared)
		return err
	}, transport.FailPinMismatch)
	refusedAfterOffer("a DANE record of another key", func() error {
		_, err := transport.DialWith(srv.Transport(), transport.DANEPolicy([]dns.TLSA{otherTLSA}, "localhost"), useShared)
		return err
	}, transport.FailDANE)
	refusedAfterOffer("another domain", func() error {
		_, err := transport.DialWith(srv.Transport(), transport.DomainPolicy("example.net"), useShared)
		return err
	}, transport.FailCertificate)
	cs, err = transport.DialWith(srv.Transport(), transport.SubmissionPolicy(mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin}}), useShared)
	if err != nil || !cs.TLSResumed {
		t.Fatalf("the right pin: resumed %v, error %v; want a resumed session", cs.TLSResumed, err)
	}
	match := dns.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: pin[:]}
	cs, err = transport.DialWith(srv.Transport(), transport.DANEPolicy([]dns.TLSA{match}, "localhost"), useShared)
	if err != nil || !cs.TLSResumed || cs.Verification != mailsec.VerifiedDANEEE {
		t.Fatalf("the matching record: %+v, error %v; want a resumed DANE-EE session", cs, err)
	}
}

// A check of the application's that now refuses the server's certificate
// refuses a resumed session too: VerifyConnection is called on resumption;
// VerifyPeerCertificate is not, so with it set nothing is resumed.
func TestResumptionKeepsApplicationChecks(t *testing.T) {
	for _, hook := range []string{"VerifyConnection", "VerifyPeerCertificate"} {
		t.Run(hook, func(t *testing.T) {
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			tr := oneMessagePerSession(srv.Transport())
			var refuse atomic.Bool
			errRefused := errors.New("refused by the application")
			switch hook {
			case "VerifyConnection":
				tr.TLSConfig.VerifyConnection = func(tls.ConnectionState) error {
					if refuse.Load() {
						return errRefused
					}
					return nil
				}
			default:
				tr.TLSConfig.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error {
					if refuse.Load() {
						return errRefused
					}
					return nil
				}
			}
			deliverOK(t, tr, mailsec.Security{})
			refuse.Store(true)
			d, canary := canaryDelivery(t)
			_, err := deliver(t, tr, d)
			if !errors.Is(err, mailsec.ErrCertificate) && !errors.Is(err, mailsec.ErrHandshake) {
				t.Fatalf("error %v: want the certificate refused", err)
			}
			if n := len(srv.Messages()); n != 1 {
				t.Fatalf("%d messages delivered; the second must not be", n)
			}
			assertNoCanary(t, srv, canary)
		})
	}
}

// A cached session whose certificate has expired since is not resumed,
// and the full handshake refuses the expired certificate.
func TestResumptionRefusesExpiredCertificate(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := oneMessagePerSession(srv.Transport())
	var later atomic.Bool
	tr.TLSConfig.Time = func() time.Time {
		if later.Load() {
			return time.Now().Add(48 * time.Hour) // the certificate is valid for a day
		}
		return time.Now()
	}
	deliverOK(t, tr, mailsec.Security{})
	if !deliverOK(t, tr, mailsec.Security{}).TLSResumed {
		t.Fatal("no resumption before the certificate expired: the test shows nothing")
	}
	later.Store(true)
	d, canary := canaryDelivery(t)
	_, err := deliver(t, tr, d)
	if !errors.Is(err, mailsec.ErrCertificate) {
		t.Fatalf("error %v: want the expired certificate refused", err)
	}
	assertNoCanary(t, srv, canary)
}

// assertNoCanary fails if the server read the canary.
func assertNoCanary(t *testing.T, srv *mailsectest.Server, canary string) {
	t.Helper()
	for _, m := range srv.Messages() {
		if strings.Contains(m.String(), canary) {
			t.Fatalf("the server received the message with %s", canary)
		}
	}
}
