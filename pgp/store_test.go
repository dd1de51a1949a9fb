package pgp_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

func fprs(es []*openpgp.Entity) []string {
	var out []string
	for _, e := range es {
		out = append(out, pgp.Fingerprint(e))
	}
	return out
}

func lookupFprs(t *testing.T, kr *pgp.KeyRing, addr string) []string {
	t.Helper()
	es, err := kr.Lookup(context.Background(), addr)
	if err != nil && !errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatal(err)
	}
	return fprs(es)
}

// Add, Replace and Remove change what Lookup finds; a key is kept or
// dropped whole, for all its addresses.
func TestKeyRingEdits(t *testing.T) {
	k := testKeys(t)
	ann, bob := k["ann@example.org"], k["bob@example.org"]
	ann2, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kr := &pgp.KeyRing{} // the zero KeyRing works
	if kr.Len() != 0 || len(lookupFprs(t, kr, "ann@example.org")) != 0 {
		t.Fatal("zero KeyRing not empty")
	}
	kr.Add(ann, nil, bob, ann) // nil left out, the second ann replaces the first
	if kr.Len() != 2 || strings.Join(lookupFprs(t, kr, "ANN@example.org"), ",") != pgp.Fingerprint(ann) {
		t.Fatalf("after Add: %d keys, ann: %v", kr.Len(), lookupFprs(t, kr, "ann@example.org"))
	}
	kr.Add(ann2)
	if got := lookupFprs(t, kr, "ann@example.org"); len(got) != 2 {
		t.Fatalf("two keys for ann: %v", got)
	}
	kr.Replace("Ann@Example.org", ann2)
	if got := lookupFprs(t, kr, "ann@example.org"); len(got) != 1 || got[0] != pgp.Fingerprint(ann2) || kr.Len() != 2 {
		t.Fatalf("after Replace: %v, %d keys", got, kr.Len())
	}
	if got := lookupFprs(t, kr, "bob@example.org"); len(got) != 1 || got[0] != pgp.Fingerprint(bob) {
		t.Fatalf("Replace touched bob: %v", got)
	}
	if kr.Remove("0000") {
		t.Fatal("Remove of an unknown fingerprint reported true")
	}
	if !kr.Remove(strings.ToLower(pgp.Fingerprint(bob))) || len(lookupFprs(t, kr, "bob@example.org")) != 0 || kr.Len() != 1 {
		t.Fatal("Remove did not remove bob's key")
	}
	kr.Replace("ann@example.org")
	if kr.Len() != 0 {
		t.Fatal("Replace with no keys left keys")
	}
	if _, err := kr.Lookup(context.Background(), "ann@example.org"); !errors.Is(err, pgp.ErrKeyNotFound) {
		t.Fatalf("Lookup on emptied ring: %v", err)
	}
}

// Sends run while the application replaces and removes the recipient's
// key: every Send uses a key the ring held while it ran, a Send that
// starts after Replace returns uses the new key, and after Remove the
// recipient receives nothing. Run with -race.
func TestKeyRingReplaceWhileSending(t *testing.T) {
	k := testKeys(t)
	old := k["ann@example.org"]
	fresh, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kr := pgp.NewKeyRing(old)
	p, err := pgp.New(kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s := newSender(t, rt, p)
	msg := func() *mailsec.Message {
		return &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "results", Text: canary}
	}
	valid := map[string]bool{pgp.Fingerprint(old): true, pgp.Fingerprint(fresh): true}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				rec, err := s.Send(context.Background(), msg())
				if err != nil {
					t.Error(err)
					return
				}
				if fpr := rec.Recipients[0].Protection.Fingerprint; !valid[fpr] {
					t.Errorf("sent with key %s", fpr)
				}
				sent.Add(1)
			}
		})
	}
	defer wg.Wait() // after cancel, also when a round fails
	defer cancel()
	// At least 20 rounds, and more until a concurrent Send has completed
	// (the workers may not have run yet when the 20 rounds are over),
	// always an even number: the last Replace puts the old key back.
	deadline := time.Now().Add(time.Minute)
	for i := 0; i < 20 || i%2 == 1 || (sent.Load() == 0 && !t.Failed() && time.Now().Before(deadline)); i++ {
		next := []*openpgp.Entity{fresh, old}[i%2]
		kr.Replace("ann@example.org", next)
		rec, err := s.Send(context.Background(), msg())
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.Recipients[0].Protection.Fingerprint; got != pgp.Fingerprint(next) {
			t.Fatalf("round %d: sent with %s after Replace with %s", i, got, pgp.Fingerprint(next))
		}
	}
	cancel()
	wg.Wait()
	if sent.Load() == 0 {
		t.Fatal("no concurrent Send completed")
	}

	kr.Remove(pgp.Fingerprint(old))
	n := len(rt.Deliveries())
	rec, err := s.Send(context.Background(), msg())
	if !errors.Is(err, mailsec.ErrNoKey) || len(rt.Deliveries()) != n {
		t.Fatalf("after Remove: %v, %d deliveries (had %d)", err, len(rt.Deliveries()), n)
	}
	if rec.Recipients[0].Protection != nil && rec.Recipients[0].Protection.Fingerprint != "" {
		t.Fatalf("receipt names a key: %+v", rec.Recipients[0].Protection)
	}
}
