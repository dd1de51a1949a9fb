package smime_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// A user replaces their certificate, or removes it, while the app runs:
// the next Send uses the new one, or refuses; a CA certificate added later
// lets the next Send build a chain it could not before.
func TestCertStoreChangesReachTheNextSend(t *testing.T) {
	f := getFixture(t)
	const addr = "ann@example.org"
	old := issue(t, f.ca, mailsectest.SMIMEOptions{Email: addr, Key: f.key1}).Leaf
	repl := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "Ann@example.org", Key: f.key2}).Leaf
	store := smime.NewCertStore(old)
	p := newProtector(t, store, smime.Options{})
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	s := newSender(t, srv.Transport(), p)
	send := func() (*mailsec.Receipt, error) { return s.Send(context.Background(), message(addr)) }
	fp := func(c *x509.Certificate) string { sum := sha256Sum(c.Raw); return hexString(sum[:]) }

	rec, err := send()
	if err != nil || rec.Recipients[0].Protection.Fingerprint != fp(old) {
		t.Fatalf("first send: %v", err)
	}
	if err := store.Replace(addr, repl); err != nil {
		t.Fatal(err)
	}
	rec, err = send()
	if err != nil || rec.Recipients[0].Protection.Fingerprint != fp(repl) {
		t.Fatalf("after Replace: %v %+v", err, rec)
	}
	if got := store.Certificates(); len(got) != 1 || !got[0].Equal(repl) {
		t.Fatalf("Replace kept the old certificate: %d certificates", len(got))
	}
	if n := store.Remove("ANN@example.org"); n != 1 {
		t.Fatalf("Remove removed %d", n)
	}
	before := len(srv.Messages())
	if _, err := send(); !errors.Is(err, mailsec.ErrNoKey) {
		t.Fatalf("after Remove: %v, want ErrNoKey", err)
	}
	if len(srv.Messages()) != before {
		t.Fatal("sent after the certificate was removed")
	}

	// A certificate from an intermediate the store does not hold yet.
	inter, err := f.ca.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	viaInter := issue(t, inter, mailsectest.SMIMEOptions{Email: addr, Key: f.key3}).Leaf
	store.Add(viaInter)
	var ce *smime.CertificateError
	if _, err := send(); !errors.As(err, &ce) || ce.Problem != smime.Untrusted {
		t.Fatalf("without the intermediate: %v", err)
	}
	store.Add(inter.Certificate)
	if rec, err := send(); err != nil || rec.Recipients[0].Protection.Fingerprint != fp(viaInter) {
		t.Fatalf("with the intermediate added: %v", err)
	}

	// Replace refuses an end-entity certificate for another address and
	// changes nothing.
	bob := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key1}).Leaf
	if err := store.Replace(addr, bob); !errors.Is(err, smime.WrongAddress) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Replace with bob's certificate: %v", err)
	}
	if got, _ := store.Lookup(context.Background(), addr); len(got) != 1 || !got[0].Equal(viaInter) {
		t.Fatal("a refused Replace changed the store")
	}
}

// Sends run while other goroutines add, replace and remove certificates
// (run with -race). Every Send either encrypts to a certificate the store
// held for the address or refuses with ErrNoKey; none sends in clear.
func TestCertStoreConcurrentUse(t *testing.T) {
	f := getFixture(t)
	var zero smime.CertStore // the zero CertStore works too
	store := &zero
	p := newProtector(t, store, smime.Options{})
	keys := []crypto.Signer{f.key1, f.key2, f.key3}
	certs := map[string]bool{}
	var pool [][]*x509.Certificate // per address: two certificates
	const n = 4
	for i := range n {
		addr := fmt.Sprintf("user%d@example.org", i)
		var cs []*x509.Certificate
		for j := range 2 {
			c := issue(t, f.ca, mailsectest.SMIMEOptions{Email: addr, Key: keys[(i+j)%3]}).Leaf
			sum := sha256Sum(c.Raw)
			certs[hexString(sum[:])] = true
			cs = append(cs, c)
		}
		pool = append(pool, cs)
		store.Add(cs[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var sent, refused atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			for k := 0; ctx.Err() == nil && k < 300; k++ {
				i := (k + w) % n
				addr := fmt.Sprintf("user%d@example.org", i)
				switch k % 3 {
				case 0:
					if err := store.Replace(addr, pool[i][k%2]); err != nil {
						t.Error(err)
						return
					}
				case 1:
					store.Remove(addr)
				case 2:
					store.Add(pool[i][(k+1)%2])
				}
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for k := 0; ctx.Err() == nil && k < 100; k++ {
				addr := fmt.Sprintf("user%d@example.org", (k+w)%n)
				pr, err := p.Protect(ctx, testEntity(), []string{addr})
				switch {
				case err == nil:
					if !certs[pr.Fingerprints[addr]] || pr.Entity == nil {
						t.Errorf("%s: protected for an unknown certificate %s", addr, pr.Fingerprints[addr])
						return
					}
					sent.Add(1)
				case errors.Is(err, mailsec.ErrNoKey):
					refused.Add(1)
				case ctx.Err() != nil:
					return
				default:
					t.Errorf("%s: %v", addr, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if sent.Load() == 0 {
		t.Fatalf("no Protect succeeded (%d refused): the test proves nothing", refused.Load())
	}
	t.Logf("%d protected, %d refused while the store changed", sent.Load(), refused.Load())
}

// The Receipt records the certificate's expiry (the earliest in its
// chain), the content cipher, and a note when it expires within
// Options.ExpiryWarning.
func TestReceiptKeyExpiry(t *testing.T) {
	f := getFixture(t)
	now := time.Now()
	clock := func() time.Time { return now }
	soon := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1, NotAfter: now.Add(12*24*time.Hour + time.Hour)}).Leaf
	later := issue(t, f.ca, mailsectest.SMIMEOptions{Email: "bob@example.org", Key: f.key2, NotAfter: now.Add(60*24*time.Hour + time.Hour)}).Leaf
	store := smime.NewCertStore(soon, later)
	for _, c := range []struct {
		name       string
		warn       time.Duration
		annN, bobN []string
	}{
		{"default window", 0, []string{"certificate expires in 12 days (" + soon.NotAfter.UTC().Format(time.DateOnly) + ")"}, nil},
		{"90 days", 90 * 24 * time.Hour, []string{"certificate expires in 12 days (" + soon.NotAfter.UTC().Format(time.DateOnly) + ")"},
			[]string{"certificate expires in 60 days (" + later.NotAfter.UTC().Format(time.DateOnly) + ")"}},
		{"off", -1, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newProtector(t, store, smime.Options{Now: clock, ExpiryWarning: c.warn})
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			s := newSender(t, srv.Transport(), p)
			rec, err := s.Send(context.Background(), message("ann@example.org", "bob@example.org"))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]struct {
				exp   time.Time
				notes []string
			}{"ann@example.org": {soon.NotAfter, c.annN}, "bob@example.org": {later.NotAfter, c.bobN}}
			for _, r := range rec.Recipients {
				w := want[r.Address]
				pi := r.Protection
				if pi == nil || !pi.KeyExpires.Equal(w.exp) || pi.Cipher != "aes256-cbc" || !slices.Equal(pi.Notes, w.notes) {
					t.Fatalf("%s: %+v, want expiry %v, notes %q", r.Address, pi, w.exp, w.notes)
				}
			}
		})
	}
}

// Adding or removing recipients' certificates keeps the intermediates
// pool (and so the Protector's cached chain checks); adding a CA
// certificate makes a new one.
func TestCertStoreIntermediatesShared(t *testing.T) {
	f := getFixture(t)
	inter, err := f.ca.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	store := smime.NewCertStore(inter.Certificate)
	pool := store.Intermediates()
	if pool == nil {
		t.Fatal("no intermediates")
	}
	ann := issue(t, inter, mailsectest.SMIMEOptions{Email: "ann@example.org", Key: f.key1}).Leaf
	store.Add(ann)
	store.Remove("ann@example.org")
	if store.Intermediates() != pool {
		t.Fatal("a recipient's certificate changed the intermediates pool")
	}
	other, err := f.otherCA.NewIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	store.Add(other.Certificate)
	if store.Intermediates() == pool {
		t.Fatal("a new CA certificate did not change the pool")
	}
	if got := smime.NewCertStore(ann).Intermediates(); got != nil {
		t.Fatal("a store without CA certificates has intermediates")
	}
}
