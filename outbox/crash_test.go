package outbox_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/internal/proctest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
)

// The crash tests run enqueuing and delivering processes as children of
// the test binary (internal/proctest) and kill them with SIGKILL.

func TestMain(m *testing.M) {
	proctest.Main(map[string]proctest.Func{
		"enqueue": childEnqueue,
		"worker":  childWorker,
	})
	os.Exit(m.Run())
}

// crashTimeout is the DeliveryTimeout of the crash tests' outboxes: with
// the least margin, 5 s, the rescue interval is 19 s.
const (
	crashTimeout = 4 * time.Second
	crashRescue  = crashTimeout + 3*5*time.Second
)

// childConfig is what a child process is given, as JSON in its one
// argument.
type childConfig struct {
	DB   string `json:"db"`
	Keys string `json:"keys"` // as MAILSEC_OUTBOX_KEY has them
	// For "enqueue": how many messages, and to whom.
	N  int    `json:"n,omitempty"`
	To string `json:"to,omitempty"`
	// For "worker": the smarthost, the CA that issued its certificate
	// (PEM), the name it is verified for, and how many messages the
	// worker delivers at once.
	Addr       string `json:"addr,omitempty"`
	CA         string `json:"ca,omitempty"`
	ServerName string `json:"server_name,omitempty"`
	Workers    int    `json:"workers,omitempty"`
}

func (c childConfig) arg(t testing.TB) string {
	t.Helper()
	if c.Keys == "" {
		c.Keys = testKey.Base64()
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readChildConfig(args []string) (*childConfig, []outbox.Key, error) {
	if len(args) != 1 {
		return nil, nil, fmt.Errorf("want one argument, got %q", args)
	}
	var c childConfig
	if err := json.Unmarshal([]byte(args[0]), &c); err != nil {
		return nil, nil, err
	}
	keys, err := outbox.ParseKeys(c.Keys)
	return &c, keys, err
}

// crashMessage is the i-th message of a crash test, to rcpt.
func crashMessage(rcpt string, i int) *mailsec.Message {
	if rcpt == "" {
		rcpt = "Ann <ann@example.org>"
	}
	return &mailsec.Message{
		From:    "App <app@example.com>",
		To:      []string{rcpt},
		Subject: fmt.Sprint("Statement ", i),
		Text:    "Your statement is ready.",
	}
}

// childEnqueue enqueues N messages one after the other and prints
// "enqueued ID" after each Enqueue that returned nil; then it waits,
// its database open, to be killed.
func childEnqueue(ctx context.Context, args []string) error {
	c, keys, err := readChildConfig(args)
	if err != nil {
		return err
	}
	s, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		return err
	}
	ob, err := outbox.Open(ctx, s, c.DB, &outbox.Options{Keys: keys, DeliveryTimeout: crashTimeout})
	if err != nil {
		return err
	}
	for i := range c.N {
		id, err := ob.Enqueue(ctx, crashMessage(c.To, i), nil)
		if err != nil {
			return err
		}
		fmt.Printf("enqueued %s\n", id)
	}
	fmt.Println("done")
	<-ctx.Done()
	return ob.Close(context.Background())
}

// childWorker delivers what is queued, printing "ready" once started and
// "attempt ID NUMBER STATE" after each attempt, until it is stopped or
// killed.
func childWorker(ctx context.Context, args []string) error {
	c, keys, err := readChildConfig(args)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return errors.New("no CA certificate")
	}
	name := c.ServerName
	if name == "" {
		name = "localhost"
	}
	tr := &transport.Submission{Addr: c.Addr, Mode: transport.StartTLS, ServerName: name,
		TLSConfig: &tls.Config{RootCAs: pool}, LocalName: "client.test"}
	defer tr.Close()
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		return err
	}
	ob, err := outbox.Open(ctx, s, c.DB, crashOptions(&outbox.Options{Keys: keys, Workers: c.Workers,
		OnReceipt: func(_ context.Context, a *outbox.Attempt) {
			fmt.Printf("attempt %s %d %s\n", a.ID, a.Number, a.State)
		}}))
	if err != nil {
		return err
	}
	if err := ob.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ob.Close(cctx)
}

// crashOptions are fast() with the crash tests' DeliveryTimeout.
func crashOptions(o *outbox.Options) *outbox.Options {
	if o == nil {
		o = &outbox.Options{}
	}
	o.DeliveryTimeout = crashTimeout
	return fast(o)
}

// crashDB returns a fresh database of the kind named: a SQLite file or a
// database on a private Postgres, with the Postgres instance (nil for
// SQLite).
func crashDB(t *testing.T, kind string) (string, *pgtest.Instance) {
	t.Helper()
	if kind == "postgres" {
		pg := pgtest.Start(t)
		return pg.NewDatabase(t), pg
	}
	return filepath.Join(t.TempDir(), "mail.db"), nil
}

// enqueueN queues n messages to rcpt through an outbox that does not
// deliver, and returns their IDs.
func enqueueN(t *testing.T, db string, n int, rcpt string) []string {
	t.Helper()
	ob := openAt(t, newSender(t, &mailsectest.RecordingTransport{}, nil), db, crashOptions(nil), false)
	ids := make([]string, n)
	for i := range ids {
		var err error
		if ids[i], err = ob.Enqueue(context.Background(), crashMessage(rcpt, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ob.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ids
}

// waitDrained waits until ob's queue holds no unfinished message.
func waitDrained(t *testing.T, ob *outbox.Outbox, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := ob.Stats(context.Background())
		if err == nil && s.Depth == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained after %v: %+v, %v", timeout, s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkOnce checks that every message in ids was delivered, and that
// received (times each Message-ID reached the server) has each once,
// or more only where the Status flags its recipient as a possible
// duplicate; and that the server had no other message, unless others
// is set. It returns how many were flagged and how many the server had
// more than once.
func checkOnce(t *testing.T, ob *outbox.Outbox, ids []string, received map[string]int, others bool) (flagged, twice int) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		st, err := ob.Status(context.Background(), id)
		if err != nil {
			t.Fatalf("message %s: %v", id, err)
		}
		if st.State != outbox.Delivered {
			t.Fatalf("message %s is %s: %+v", id, st.State, st.Recipients)
		}
		mid := bareID(st.MessageID)
		want[mid] = true
		dup := st.Recipients[0].PossibleDuplicate
		if dup {
			flagged++
		}
		switch n := received[mid]; {
		case n == 0:
			t.Errorf("message %s (%s) delivered, says its Status, but the server never had it", id, mid)
		case n > 1 && !dup:
			t.Errorf("message %s (%s) reached the server %d times, and its Status flags no possible duplicate", id, mid, n)
		case n > 1:
			twice++
		}
	}
	for mid, n := range received {
		if !want[mid] && !others {
			t.Errorf("the server had %d times a message %q the test did not queue", n, mid)
		}
	}
	return flagged, twice
}

// idsPrinted returns the IDs in a child's "enqueued ID" lines.
func idsPrinted(p *proctest.Process) []string {
	var ids []string
	for _, l := range p.Stdout() {
		if id, ok := strings.CutPrefix(l, "enqueued "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

func serverReceived(srv *mailsectest.Server) map[string]int {
	got := map[string]int{}
	for _, m := range srv.Messages() {
		got[bareID(m.Header("Message-Id"))]++
	}
	return got
}

// Once Enqueue returned nil in a process, a SIGKILL of that process right
// after loses nothing: the message is in the database, queued, and a new
// worker delivers it; in a batch killed at a random point, every message
// whose ID was printed is delivered exactly once.
func TestCrashAfterEnqueue(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			db, _ := crashDB(t, kind)
			p := proctest.Start(t, "enqueue", childConfig{DB: db, N: 1}.arg(t))
			p.WaitFor(t, "enqueued ")
			p.Kill()
			first := idsPrinted(p)
			if !p.Killed() || len(first) != 1 {
				t.Fatalf("child: killed %v, printed %q", p.Killed(), first)
			}

			const n = 50
			p = proctest.Start(t, "enqueue", childConfig{DB: db, N: n}.arg(t))
			k := 5 + rand.N(n-10)
			for range k {
				p.WaitFor(t, "enqueued ")
			}
			p.Kill()
			batch := idsPrinted(p)
			if !p.Killed() || len(batch) < k {
				t.Fatalf("child: killed %v, printed %d IDs", p.Killed(), len(batch))
			}
			t.Logf("batch killed after %d of %d messages (waited for %d)", len(batch), n, k)

			srv := mailsectest.NewServer(t, mailsectest.Config{})
			ob := openAt(t, newSender(t, srv.Transport(), nil), db, crashOptions(nil), false)
			ids := append(first, batch...)
			for _, id := range ids {
				st, err := ob.Status(context.Background(), id)
				if err != nil || st.State != outbox.Queued {
					t.Fatalf("message %s after the kill: %+v, %v", id, st, err)
				}
			}
			if err := ob.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitDrained(t, ob, 30*time.Second)
			got := serverReceived(srv)
			if flagged, twice := checkOnce(t, ob, ids, got, true); flagged != 0 || twice != 0 {
				t.Fatalf("%d flagged, %d twice: nothing was in flight", flagged, twice)
			}
			// An Enqueue under way at the kill may have committed without
			// printing; whatever committed went out once.
			for mid, c := range got {
				if c != 1 {
					t.Errorf("message %s reached the server %d times", mid, c)
				}
			}
			if len(got) < len(ids) || len(got) > len(ids)+1 {
				t.Errorf("the server had %d messages for %d IDs printed", len(got), len(ids))
			}
		})
	}
}

// A worker killed in the middle of two SMTP transactions: another worker
// takes the messages up after the rescue interval, and delivers them. The
// one killed after the server had the whole message (its 250 lost with
// the worker) the server has twice, and the Status flags its recipient as
// a possible duplicate; the one killed before DATA the server has once
// (the flag is still set: the outbox cannot tell where its worker died).
func TestCrashMidDelivery(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			h := newHoldServer(t, holdNone, 0, 0)
			const early, late = "ann@example.org", "bob@example.org"
			h.holdFor(map[string]holdStage{early: holdBeforeData, late: holdEndOfData})
			db, _ := crashDB(t, kind)
			ids := append(enqueueN(t, db, 1, early), enqueueN(t, db, 1, late)...)
			w := proctest.Start(t, "worker", childConfig{DB: db, Addr: h.Addr, CA: string(h.CA.CertPEM()), Workers: 2}.arg(t))
			w.WaitFor(t, "ready")
			h.waitHeld(t)
			h.waitHeld(t)
			w.Kill()
			killed := time.Now()

			ob := openAt(t, newSender(t, h.Transport(), nil), db, crashOptions(nil), false)
			for _, id := range ids {
				st, err := ob.Status(context.Background(), id)
				if err != nil || st.State != outbox.Sending || len(st.Attempts) != 0 {
					t.Fatalf("after the kill: %+v, %v", st, err)
				}
			}
			if err := ob.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, id := range ids {
				// The rescue interval, River's rescuer (every 30 s, on the
				// leader, elected anew within 15 s or so of the kill) and
				// its retry: under a minute (a rescuer's look just before
				// the interval ends puts it near 50 s).
				st := waitFor(t, ob, id, outbox.Delivered, 90*time.Second)
				t.Logf("%s delivered %v after the kill", st.Recipients[0].Address, time.Since(killed).Round(time.Millisecond))
				if len(st.Attempts) != 1 || st.Attempts[0].Number != 2 {
					t.Fatalf("attempts: %+v", st.Attempts)
				}
				a := st.Attempts[0]
				if wait := a.Started.Sub(killed); wait < crashRescue-time.Second {
					t.Fatalf("taken up %v after the kill, before the rescue interval (%v)", wait, crashRescue)
				}
				want := []int{1, 2}[i]
				if got := h.Received()[bareID(st.MessageID)]; got != want {
					t.Fatalf("the server had the message to %s %d times, want %d", st.Recipients[0].Address, got, want)
				}
				if !slices.Equal(a.PossibleDuplicates, []string{st.Recipients[0].Address}) || !st.Recipients[0].PossibleDuplicate {
					t.Fatalf("possible duplicates %v, recipient %+v", a.PossibleDuplicates, st.Recipients[0])
				}
			}
			if h.Total() != 3 {
				t.Fatalf("the server took %d messages, want 3", h.Total())
			}
		})
	}
}

// Two worker processes on one Postgres deliver every message exactly
// once; when one is killed midway, the other finishes every message
// after the rescue interval, and the only messages the server had twice
// are those the Status flags.
func TestCrashTwoWorkersPostgres(t *testing.T) {
	t.Parallel()
	const n = 200
	t.Run("no crash", func(t *testing.T) {
		t.Parallel()
		srv := mailsectest.NewServer(t, mailsectest.Config{})
		db, _ := crashDB(t, "postgres")
		ids := enqueueN(t, db, n, "")
		cfg := childConfig{DB: db, Addr: srv.Addr, CA: string(srv.CA.CertPEM()), Workers: 4}
		a := proctest.Start(t, "worker", cfg.arg(t))
		b := proctest.Start(t, "worker", cfg.arg(t))
		ob := openAt(t, newSender(t, srv.Transport(), nil), db, crashOptions(nil), false)
		waitDrained(t, ob, 60*time.Second)
		stop(t, a, b)
		got := serverReceived(srv)
		if flagged, twice := checkOnce(t, ob, ids, got, false); flagged != 0 || twice != 0 || len(got) != n || len(srv.Messages()) != n {
			t.Fatalf("%d messages for %d Message-IDs, %d flagged, want %d once each", len(srv.Messages()), len(got), flagged, n)
		}
		attempts := 0
		for _, p := range []*proctest.Process{a, b} {
			c := 0
			for _, l := range p.Stdout() {
				if strings.HasPrefix(l, "attempt ") {
					c++
				}
			}
			if c == 0 {
				t.Errorf("worker %d made no attempt", p.Pid())
			}
			attempts += c
		}
		if attempts != n {
			t.Errorf("%d attempts for %d messages", attempts, n)
		}
	})
	t.Run("one killed", func(t *testing.T) {
		t.Parallel()
		// The server takes its time before each 250, so that the killed
		// worker has transactions under way.
		h := newHoldServer(t, holdNone, 0, 30*time.Millisecond)
		db, _ := crashDB(t, "postgres")
		ids := enqueueN(t, db, n, "")
		cfg := childConfig{DB: db, Addr: h.Addr, CA: string(h.CA.CertPEM()), Workers: 4}
		a := proctest.Start(t, "worker", cfg.arg(t))
		for range 20 {
			a.WaitFor(t, "attempt ")
		}
		// Kill a while the server holds one of its transactions past the
		// end of the message (so the server has it), with its other
		// workers at whatever they are doing; then b takes over.
		h.holdNext(holdEndOfData)
		h.waitHeld(t)
		a.Kill()
		h.Release()
		b := proctest.Start(t, "worker", cfg.arg(t))
		ob := openAt(t, newSender(t, h.Transport(), nil), db, crashOptions(nil), false)
		waitDrained(t, ob, 90*time.Second)
		stop(t, b)
		flagged, twice := checkOnce(t, ob, ids, h.Received(), false)
		t.Logf("%d messages flagged as possible duplicates, %d of them received twice", flagged, twice)
		if flagged == 0 || twice == 0 {
			t.Fatal("the message held when the worker was killed was not taken over, or not received twice")
		}
	})
}

// stop stops worker processes gracefully and checks they exited cleanly.
func stop(t *testing.T, ps ...*proctest.Process) {
	t.Helper()
	for _, p := range ps {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range ps {
		if err := p.Wait(); err != nil {
			t.Errorf("worker %d: %v", p.Pid(), err)
		}
	}
}

// A Postgres restart while deliveries are under way (their 250s held
// until it is back) loses nothing and sends nothing twice: the outcome
// the worker has in hand is recorded once the database is back.
func TestCrashPostgresRestartMidDelivery(t *testing.T) {
	t.Parallel()
	const workers = 4
	// Every worker holds a message at the end of DATA during the restart;
	// no other attempt is under way then.
	h := newHoldServer(t, holdEndOfData, workers, 0)
	db, pg := crashDB(t, "postgres")
	ob := openAt(t, newSender(t, h.Transport(), nil), db, crashOptions(&outbox.Options{Workers: workers}), true)
	var ids []string
	for i := range 10 {
		id, err := ob.Enqueue(context.Background(), crashMessage("", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for range workers {
		h.waitHeld(t)
	}
	pg.Restart(t)
	h.Release()
	waitDrained(t, ob, 60*time.Second)
	if flagged, twice := checkOnce(t, ob, ids, h.Received(), false); flagged != 0 || twice != 0 || h.Total() != len(ids) {
		t.Fatalf("%d messages taken for %d queued, %d flagged, %d twice", h.Total(), len(ids), flagged, twice)
	}
}

// A smarthost down for the whole test, a worker killed during its
// attempts and a Postgres restart: every message stays
// queued, none expires or fails, each attempt says a retry can help; and
// every one is still whole, delivered once the smarthost is back.
func TestCrashSmarthostDown(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			db, pg := crashDB(t, kind)
			ids := enqueueN(t, db, 5, "")
			srv := mailsectest.NewServer(t, mailsectest.Config{})
			w := proctest.Start(t, "worker", childConfig{DB: db, Addr: deadAddr(t), CA: string(srv.CA.CertPEM())}.arg(t))
			for range 2 * len(ids) {
				w.WaitFor(t, "attempt ")
			}
			w.Kill()
			if pg != nil {
				pg.Restart(t)
			}
			ob := openAt(t, newSender(t, srv.Transport(), nil), db, crashOptions(nil), false)
			for _, id := range ids {
				st, err := ob.Status(context.Background(), id)
				if err != nil || (st.State != outbox.Queued && st.State != outbox.Sending) {
					t.Fatalf("message %s: %+v, %v", id, st, err)
				}
				for _, a := range st.Attempts {
					if a.Receipt == nil || a.Receipt.Recipients[0].Failure == nil || !a.Receipt.Recipients[0].Failure.Temporary {
						t.Fatalf("attempt while the smarthost is down: %+v", a)
					}
				}
			}
			if s, err := ob.Stats(context.Background()); err != nil || s.Depth != len(ids) {
				t.Fatalf("stats: %+v, %v", s, err)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Fatalf("%d messages reached the server that was not the smarthost", n)
			}
			if err := ob.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitDrained(t, ob, 90*time.Second)
			checkOnce(t, ob, ids, serverReceived(srv), false)
		})
	}
}

// A worker killed while it delivers to a real Postfix: the messages it
// had under way are finished by another after the rescue interval; the
// Maildir holds every message, and holds twice only those the Status
// flags.
func TestCrashWorkerPostfix(t *testing.T) {
	t.Parallel()
	pf := postfixtest.Start(t, postfixtest.Config{Domain: "example.test", Mailboxes: []string{"ann"}})
	db, _ := crashDB(t, "sqlite")
	const n = 20
	ids := enqueueN(t, db, n, "Ann <ann@example.test>")
	w := proctest.Start(t, "worker", childConfig{DB: db, Addr: pf.SMTPAddr, CA: string(pf.CertPEM), ServerName: pf.Hostname, Workers: 2}.arg(t))
	for range 3 {
		w.WaitFor(t, "attempt ")
	}
	w.Kill()
	tr := &transport.Submission{Addr: pf.SMTPAddr, Mode: transport.StartTLS, ServerName: pf.Hostname,
		TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, LocalName: "client.test"}
	t.Cleanup(func() { tr.Close() })
	ob := openAt(t, newSender(t, tr, nil), db, crashOptions(nil), true)
	waitDrained(t, ob, 90*time.Second)
	// Postfix delivers to the Maildir after its 250: wait for every
	// message, then for any second copy still on its way.
	pf.Wait(t, "ann", n)
	got := maildirReceived(t, pf)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		got = maildirReceived(t, pf)
	}
	flagged, twice := checkOnce(t, ob, ids, got, false)
	t.Logf("%d flagged, %d received twice", flagged, twice)
}

func maildirReceived(t *testing.T, pf *postfixtest.Instance) map[string]int {
	t.Helper()
	msgs, err := pf.Messages("ann")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, raw := range msgs {
		m, err := mail.ReadMessage(strings.NewReader(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		got[bareID(m.Header.Get("Message-Id"))]++
	}
	return got
}
