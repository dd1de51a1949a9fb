package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/outbox"
)

func scriptMsg(to ...string) *mailsec.Message {
	m := message()
	m.To = to
	return m
}

// Sanity: the scripted server delivers a plain message.
func TestScriptSanity(t *testing.T) {
	srv := newScriptServer(t)
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org", "bob@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, outbox.Delivered, 20*time.Second)
	if len(st.Attempts) != 1 || len(srv.Txns()) != 1 {
		t.Fatalf("%d attempts, %d txns", len(st.Attempts), len(srv.Txns()))
	}
}

func rcptStatus(st *outbox.Status, addr string) *outbox.RecipientStatus {
	for i := range st.Recipients {
		if st.Recipients[i].Address == addr {
			return &st.Recipients[i]
		}
	}
	return nil
}

// A server offering PIPELINING and CHUNKING takes the whole message (MAIL,
// RCPT and BDAT LAST arrive in one write) and the connection breaks
// before any reply reaches the client. The server may have the message:
// the next attempt that sends it again must name the recipient as a
// possible duplicate.
func TestChunkingDropBeforeRepliesFlagged(t *testing.T) {
	srv := newScriptServer(t)
	srv.pipelining, srv.chunking = true, true
	srv.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "DROP"
		}
		return ""
	}
	at := newAttempts()
	st := deliverScripted(t, srv.Transport(), &outbox.Options{OnReceipt: at.on}, "ann@example.org")
	if got := srv.copiesFor("ann@example.org"); got != 2 {
		t.Fatalf("server took %d copies for ann (test expects the drop to cause a resend)", got)
	}
	t.Logf("state %s, attempts %d", st.State, len(st.Attempts))
	for _, a := range st.Attempts {
		t.Logf("attempt %d: dup=%v err=%q", a.Number, a.PossibleDuplicates, a.Error)
		if a.Receipt != nil {
			for _, r := range a.Receipt.Recipients {
				t.Logf("  %s accepted=%v err=%v", r.Address, r.Accepted, r.Err)
			}
		}
	}
	last := st.Attempts[len(st.Attempts)-1]
	if !slicesHas(last.PossibleDuplicates, "ann@example.org") {
		t.Errorf("the attempt that sent ann a second copy does not name her a possible duplicate: %v", last.PossibleDuplicates)
	}
	if rs := rcptStatus(st, "ann@example.org"); rs == nil || !rs.PossibleDuplicate {
		t.Errorf("ann's status: %+v, want PossibleDuplicate", rs)
	}
}

// Control: the same drop after the final dot of DATA (no CHUNKING), with
// PIPELINING and without.
func TestDataDropAfterDotFlagged(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprint("pipelining ", pipelining), func(t *testing.T) {
			srv := newScriptServer(t)
			srv.pipelining = pipelining
			srv.end = func(n int, _ []string, _ []byte) string {
				if n == 1 {
					return "DROP"
				}
				return ""
			}
			st := deliverScripted(t, srv.Transport(), nil, "ann@example.org")
			last := st.Attempts[len(st.Attempts)-1]
			if st.State != outbox.Delivered || !slicesHas(last.PossibleDuplicates, "ann@example.org") {
				t.Fatalf("state %s, last attempt's possible duplicates %v", st.State, last.PossibleDuplicates)
			}
		})
	}
}

// The end of the message is never answered (timeout): the next attempt
// flags the recipient.
func TestFinalReplyTimeoutFlagged(t *testing.T) {
	srv := newScriptServer(t)
	srv.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "HANG"
		}
		return ""
	}
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{DeliveryTimeout: 2 * time.Second}), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 30*time.Second)
	last := st.Attempts[len(st.Attempts)-1]
	if st.State != outbox.Delivered || len(st.Attempts) != 2 || !slicesHas(last.PossibleDuplicates, "ann@example.org") {
		t.Fatalf("state %s, %d attempts, last attempt's possible duplicates %v", st.State, len(st.Attempts), last.PossibleDuplicates)
	}
	if rs := rcptStatus(st, "ann@example.org"); rs == nil || !rs.PossibleDuplicate {
		t.Fatalf("ann's status: %+v", rs)
	}
}

// Attempt 1 loses the reply to the end of the message (ann may have it);
// attempt 2 sends nothing: refused at RCPT with 450, or the server is
// restarting (421 at the greeting); attempt 3 sends the message to ann
// again. Attempt 3 is the one that may give her a second copy: its
// PossibleDuplicates name her, and attempt 2's name nobody.
func TestUnknownSurvivesAttemptThatSentNothing(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(*scriptServer)
	}{
		{"450 at RCPT", func(srv *scriptServer) {
			srv.rcpt = func(n int, to string) string {
				if n == 2 {
					return "450 4.2.1 try later"
				}
				return ""
			}
		}},
		{"server down", func(srv *scriptServer) {
			srv.greet = func(n int) string {
				if n == 2 {
					return "421 4.3.2 restarting"
				}
				return ""
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newScriptServer(t)
			srv.end = func(n int, _ []string, _ []byte) string {
				if n == 1 {
					return "DROP"
				}
				return ""
			}
			c.setup(srv)
			st := deliverScripted(t, srv.Transport(), nil, "ann@example.org")
			if st.State != outbox.Delivered || len(st.Attempts) != 3 || srv.copiesFor("ann@example.org") != 2 {
				t.Fatalf("state %s, %d attempts, %d copies", st.State, len(st.Attempts), srv.copiesFor("ann@example.org"))
			}
			if !slicesHas(st.Attempts[2].PossibleDuplicates, "ann@example.org") {
				t.Errorf("attempt 3 sent ann a second copy without naming her a possible duplicate")
			}
			if got := st.Attempts[1].PossibleDuplicates; len(got) != 0 {
				t.Errorf("attempt 2 sent nothing, yet names %v possible duplicates", got)
			}
		})
	}
}

// rcptLimit has srv accept the first accept recipients of each
// transaction and answer reply to the others. It returns a count of the
// transactions begun.
func rcptLimit(srv *scriptServer, accept int, reply string) (txns func() int) {
	var mu sync.Mutex
	count := map[int]int{}
	srv.rcpt = func(n int, to string) string {
		mu.Lock()
		defer mu.Unlock()
		count[n]++
		if count[n] > accept {
			return reply
		}
		return ""
	}
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(count)
	}
}

// RFC 5321 section 4.5.3.1.10: recipients beyond the server's limit on
// recipients in one transaction (452, or 552 from a server that follows
// RFC 821, with X.5.3 or no enhanced code) are deferred, not refused, and
// go in the next transaction at once: with backoffs of an hour, all five
// are delivered, two at a time, each once.
func TestOverRecipientLimitRetriedAtOnce(t *testing.T) {
	for _, reply := range []string{
		"452 4.5.3 Too many recipients",
		"452 Too many recipients",
		"552 5.5.3 Too many recipients",
	} {
		t.Run(reply, func(t *testing.T) {
			srv := newScriptServer(t)
			rcptLimit(srv, 2, reply)
			ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{MinBackoff: time.Hour, MaxBackoff: time.Hour}), true)
			rc := []string{"a1@example.org", "a2@example.org", "a3@example.org", "a4@example.org", "a5@example.org"}
			id, err := ob.Enqueue(context.Background(), scriptMsg(rc...), nil)
			if err != nil {
				t.Fatal(err)
			}
			st := waitFor(t, ob, id, "", 20*time.Second)
			if st.State != outbox.Delivered || len(st.Attempts) != 3 {
				t.Fatalf("state %s, %d attempts", st.State, len(st.Attempts))
			}
			for _, r := range rc {
				if c := srv.copiesFor(r); c != 1 {
					t.Fatalf("%s got %d copies", r, c)
				}
			}
		})
	}
}

// Deferrals that a smaller transaction does not help wait for the
// backoff, even when others were accepted: a 452 for want of storage
// (4.3.1), a 450, and a limit met by every recipient of an attempt (none
// accepted: the attempt made no progress).
func TestDeferralsWaitForBackoff(t *testing.T) {
	for _, c := range []struct {
		name   string
		accept int // recipients accepted per transaction
		reply  string
	}{
		{"452 4.3.1 after two accepted", 2, "452 4.3.1 Insufficient system storage"},
		{"450 after two accepted", 2, "450 4.2.1 Try again later"},
		{"452 4.5.3 to every recipient", 0, "452 4.5.3 Too many recipients"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newScriptServer(t)
			txns := rcptLimit(srv, c.accept, c.reply)
			at := newAttempts()
			ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{OnReceipt: at.on, MinBackoff: time.Hour, MaxBackoff: time.Hour}), true)
			id, err := ob.Enqueue(context.Background(), scriptMsg("a1@example.org", "a2@example.org", "a3@example.org"), nil)
			if err != nil {
				t.Fatal(err)
			}
			at.next(t)
			// Long enough for an attempt made at once to be recorded.
			time.Sleep(500 * time.Millisecond)
			st, err := ob.Status(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != outbox.Queued || len(st.Attempts) != 1 || time.Until(st.Next) < 20*time.Minute {
				t.Fatalf("state %s, %d attempts, next in %v; want Queued after one attempt, the next in half an hour at least",
					st.State, len(st.Attempts), time.Until(st.Next))
			}
			if n := txns(); n != 1 {
				t.Fatalf("%d transactions, want 1", n)
			}
		})
	}
}

// Mixed RCPT replies, then 451 to the end of the message: bob (550) is
// refused for good, ann (250) and carl (450) are tried again; nobody gets
// two copies.
func TestMixedRcptThen451(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		switch {
		case to == "bob@example.org":
			return "550 5.1.1 no such user"
		case n == 1 && to == "carl@example.org":
			return "450 4.2.1 later"
		}
		return ""
	}
	srv.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "451 4.3.0 local error"
		}
		return ""
	}
	st := deliverScripted(t, srv.Transport(), nil, "ann@example.org", "bob@example.org", "carl@example.org")
	if st.State != outbox.PartlyDelivered || len(st.Attempts) != 2 {
		t.Fatalf("state %s, %d attempts", st.State, len(st.Attempts))
	}
	if r := st.Attempts[1].Receipt.Recipients; len(r) != 2 {
		t.Fatalf("second attempt tried %+v", r)
	}
	// ann's copy in txn 1 was refused with 451; she must have exactly one accepted copy.
	acc := 0
	for _, tx := range srv.Txns() {
		if tx.N != 1 && slicesHas(tx.Rcpts, "ann@example.org") {
			acc++
		}
	}
	if acc != 1 || rcptStatus(st, "bob@example.org").State != outbox.Refused {
		t.Fatalf("ann accepted copies %d, bob %+v", acc, rcptStatus(st, "bob@example.org"))
	}
}

// 421 to the second RCPT (ann accepted): nothing was delivered, both
// retried, each gets one copy.
func Test421AtRcpt(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if n == 1 && to == "bob@example.org" {
			return "421 4.3.2 shutting down"
		}
		return ""
	}
	st := deliverScripted(t, srv.Transport(), nil, "ann@example.org", "bob@example.org")
	if st.State != outbox.Delivered || srv.copiesFor("ann@example.org") != 1 || srv.copiesFor("bob@example.org") != 1 {
		t.Fatalf("state %s, copies ann %d bob %d", st.State, srv.copiesFor("ann@example.org"), srv.copiesFor("bob@example.org"))
	}
	for _, a := range st.Attempts {
		if len(a.PossibleDuplicates) > 0 {
			t.Fatalf("attempt %d flags %v", a.Number, a.PossibleDuplicates)
		}
	}
}

// Bcc never appears in any header, on the first attempt or on a retry
// of the Bcc recipient alone, nor of the To recipient alone.
func TestBccNeverLeaked(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if n <= 2 {
			return "450 4.2.1 later"
		}
		return ""
	}
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	m := scriptMsg("ann@example.org")
	m.Bcc = []string{"Dora Secret <dora@example.net>", "eve@example.net"}
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 30*time.Second)
	if st.State != outbox.Delivered {
		t.Fatalf("state %s", st.State)
	}
	for _, tx := range srv.Txns() {
		head := string(tx.Data)
		if i := strings.Index(head, "\r\n\r\n"); i >= 0 {
			head = head[:i]
		}
		if strings.Contains(strings.ToLower(head), "dora") || strings.Contains(strings.ToLower(head), "eve@") || strings.Contains(strings.ToLower(head), "bcc") {
			t.Fatalf("txn %d to %v leaks Bcc in its header:\n%s", tx.N, tx.Rcpts, head)
		}
		if len(tx.Rcpts) > 1 && (slicesHas(tx.Rcpts, "dora@example.net") || slicesHas(tx.Rcpts, "eve@example.net")) {
			t.Fatalf("Bcc recipient shares txn %d: %v", tx.N, tx.Rcpts)
		}
	}
	for _, r := range []string{"ann@example.org", "dora@example.net", "eve@example.net"} {
		if c := srv.copiesFor(r); c != 1 {
			t.Fatalf("%s got %d", r, c)
		}
	}
}

// The same mailbox in To and in Bcc, the domain written in another case
// (domains are case-insensitive): one copy.
func TestSameMailboxToAndBccDifferentCase(t *testing.T) {
	srv := newScriptServer(t)
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
	m := scriptMsg("ann@example.org")
	m.Bcc = []string{"ann@EXAMPLE.ORG"}
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	t.Logf("state %s recipients %+v", st.State, st.Recipients)
	if c := srv.copiesFor("ann@example.org"); c != 1 {
		t.Fatalf("ann@example.org got %d copies (txns %+v)", c, len(srv.Txns()))
	}
}

// Temporary failures until MaxAge: the message expires; every attempt
// the server saw is recorded, numbered 1..n, none after the expiry.
func TestExpiryNumbering(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string { return "450 4.2.1 later" }
	st := deliverScripted(t, srv.Transport(), &outbox.Options{MaxAge: 1500 * time.Millisecond}, "ann@example.org")
	time.Sleep(500 * time.Millisecond)
	srv.mu.Lock()
	mails := srv.mail
	srv.mu.Unlock()
	if st.State != outbox.Expired || len(st.Attempts) != mails {
		t.Fatalf("state %s, %d attempts recorded, server saw %d transactions", st.State, len(st.Attempts), mails)
	}
	for i, a := range st.Attempts {
		if a.Number != i+1 {
			t.Fatalf("attempt %d numbered %d", i+1, a.Number)
		}
	}
	if last := st.Attempts[len(st.Attempts)-1]; last.Started.Before(st.Expires) {
		t.Fatalf("expired by an attempt that started at %v before expiry %v", last.Started, st.Expires)
	}
	if rs := rcptStatus(st, "ann@example.org"); rs.State != outbox.ExpiredRecipient {
		t.Fatalf("ann %+v", rs)
	}
}

// Restart: ann accepted, bob deferred; the outbox is closed and opened
// again: bob is delivered, ann never twice.
func TestRestartAfterPartial(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if n == 1 && to == "bob@example.org" {
			return "450 4.2.1 later"
		}
		return ""
	}
	at := newAttempts()
	s := newSender(t, srv.Transport(), nil)
	ob, path := openFile(t, s, fast(&outbox.Options{OnReceipt: at.on, MinBackoff: 2 * time.Second, MaxBackoff: 2 * time.Second}), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org", "bob@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	at.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ob.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ob2 := openAt(t, s, path, fast(nil), true)
	if err := ob2.Retry(context.Background(), id); err != nil {
		t.Logf("Retry: %v", err)
	}
	st := waitFor(t, ob2, id, "", 20*time.Second)
	if st.State != outbox.Delivered || srv.copiesFor("ann@example.org") != 1 || srv.copiesFor("bob@example.org") != 1 {
		t.Fatalf("state %s, ann %d bob %d", st.State, srv.copiesFor("ann@example.org"), srv.copiesFor("bob@example.org"))
	}
}

// Same as the chunking drop, but the server never answers at all (the
// attempt's deadline ends it): the server has the message.
func TestChunkingSilentTimeoutFlagged(t *testing.T) {
	srv := newScriptServer(t)
	srv.pipelining, srv.chunking = true, true
	srv.end = func(n int, _ []string, _ []byte) string {
		if n == 1 {
			return "HANG"
		}
		return ""
	}
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{DeliveryTimeout: 2 * time.Second}), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, ob, id, "", 30*time.Second)
	if got := srv.copiesFor("ann@example.org"); got != 2 {
		t.Fatalf("server took %d copies for ann", got)
	}
	t.Logf("attempt 1 error for ann: %v", st.Attempts[0].Receipt.Recipients[0].Err)
	last := st.Attempts[len(st.Attempts)-1]
	if !slicesHas(last.PossibleDuplicates, "ann@example.org") {
		t.Errorf("second copy sent without naming ann a possible duplicate: %v", last.PossibleDuplicates)
	}
	if rs := rcptStatus(st, "ann@example.org"); rs == nil || !rs.PossibleDuplicate {
		t.Errorf("ann's status: %+v, want PossibleDuplicate", rs)
	}
}

// Retry after a partial delivery: only the deferred recipient is sent.
func TestRetryAfterPartial(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if n == 1 && to == "bob@example.org" {
			return "450 4.2.1 later"
		}
		return ""
	}
	at := newAttempts()
	ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(&outbox.Options{OnReceipt: at.on, MinBackoff: time.Hour, MaxBackoff: time.Hour}), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org", "bob@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	at.next(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := ob.Retry(context.Background(), id)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := waitFor(t, ob, id, "", 20*time.Second)
	if st.State != outbox.Delivered || srv.copiesFor("ann@example.org") != 1 || srv.copiesFor("bob@example.org") != 1 || len(st.Attempts) != 2 {
		t.Fatalf("state %s, ann %d bob %d, %d attempts", st.State, srv.copiesFor("ann@example.org"), srv.copiesFor("bob@example.org"), len(st.Attempts))
	}
}

// A key removed while the message waits for a retry, under a policy that
// sends the link-only notice without a key: the retry sends the notice,
// never the content in clear.
func TestKeyRemovedBetweenAttemptsNotice(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if n == 1 {
			return "450 4.2.1 later"
		}
		return ""
	}
	p := &keyProtector{keys: map[string]bool{"ann@example.org": true}}
	notice := func(context.Context, *mailsec.Message, mailsec.Recipient) (*mailsec.Notice, error) {
		return &mailsec.Notice{Text: "NOTICE: read it at https://example.com/m/1"}, nil
	}
	s := newSender(t, srv.Transport(), &mailsec.Options{Policy: mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy())),
		Protectors: []mailsec.Protector{p}, Notice: notice})
	at := newAttempts()
	ob, _ := openFile(t, s, fast(&outbox.Options{OnReceipt: at.on, MinBackoff: 500 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}), true)
	m := scriptMsg("ann@example.org")
	m.Text = "SECRET statement body"
	id, err := ob.Enqueue(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	at.next(t)
	p.mu.Lock()
	p.keys["ann@example.org"] = false
	p.mu.Unlock()
	st := waitFor(t, ob, id, "", 20*time.Second)
	for _, tx := range srv.Txns() {
		if strings.Contains(string(tx.Data), "SECRET") {
			t.Fatalf("content in clear in txn %d", tx.N)
		}
	}
	txns := srv.Txns()
	if st.State != outbox.Delivered || len(txns) != 1 || !strings.Contains(string(txns[0].Data), "NOTICE") {
		t.Fatalf("state %s, %d txns", st.State, len(txns))
	}
}

// Recipients written unusually (an IDN domain, a domain in capitals, a
// display name with a comment) deferred once, then retried by SendTo with
// the address the Receipt recorded. Local parts mailsec does not send
// (quoted, or with a misplaced dot) are refused at Enqueue, as Send
// refuses them.
func TestOddAddressesRetried(t *testing.T) {
	for _, c := range []struct {
		addr   string
		queued bool
	}{
		{`Bob <bob@EXAMPLE.org>`, true},
		{`bob@xn--bcher-kva.example`, true},
		{`bob@bücher.example`, true},
		{`bob (comment) <bob@example.org>`, true},
		{`"bob smith"@example.org`, false},
		{`"bob\"x"@example.org`, false},
		{`bob.@example.org`, false},
	} {
		t.Run(c.addr, func(t *testing.T) {
			srv := newScriptServer(t)
			srv.rcpt = func(n int, to string) string {
				if n == 1 && to != "ann@example.org" {
					return "450 4.2.1 later"
				}
				return ""
			}
			ob, _ := openFile(t, newSender(t, srv.Transport(), nil), fast(nil), true)
			id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org", c.addr), nil)
			if !c.queued {
				var ve *mailsec.ValidationError
				if !errors.As(err, &ve) || ve.Field != "To[1]" {
					t.Fatalf("Enqueue: %v (%T), want a ValidationError for To[1]", err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := waitFor(t, ob, id, "", 20*time.Second)
			if st.State != outbox.Delivered || len(st.Attempts) != 2 {
				t.Fatalf("state %s: %+v; attempts %d", st.State, st.Recipients, len(st.Attempts))
			}
		})
	}
}

// Close interrupts an attempt whose end of the message (the terminating
// dot, or BDAT LAST) the server has taken while its verdict is still
// awaited; the next process sends the message again and flags the
// recipient.
func TestCloseInterruptFlagged(t *testing.T) {
	for _, chunking := range []bool{false, true} {
		t.Run(fmt.Sprint("chunking ", chunking), func(t *testing.T) {
			srv := newScriptServer(t)
			srv.pipelining, srv.chunking = chunking, chunking
			took := make(chan struct{}, 1)
			srv.end = func(n int, _ []string, _ []byte) string {
				if n == 1 {
					took <- struct{}{}
					return "HANG"
				}
				return ""
			}
			s := newSender(t, srv.Transport(), nil)
			ob, path := openFile(t, s, fast(nil), true)
			id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org"), nil)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-took:
			case <-time.After(20 * time.Second):
				t.Fatal("server never got the message")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_ = ob.Close(ctx)
			cancel()
			ob2 := openAt(t, s, path, fast(nil), true)
			st := waitFor(t, ob2, id, "", 20*time.Second)
			last := st.Attempts[len(st.Attempts)-1]
			if srv.copiesFor("ann@example.org") != 2 || !slicesHas(last.PossibleDuplicates, "ann@example.org") {
				t.Fatalf("%d copies, last attempt flags %v", srv.copiesFor("ann@example.org"), last.PossibleDuplicates)
			}
		})
	}
}

// 421 as the reply to the end of the message: not taken, no duplicate
// flag; 250 followed at once by 421: taken, not sent again.
func Test421AtEndOfData(t *testing.T) {
	for _, tc := range []struct {
		reply    string
		attempts int
		copies   int
	}{
		{"421 4.3.2 closing", 2, 2},
		{"250 2.0.0 ok\r\n421 4.3.2 closing", 1, 1},
	} {
		t.Run(tc.reply[:3], func(t *testing.T) {
			srv := newScriptServer(t)
			srv.pipelining = true
			srv.end = func(n int, _ []string, _ []byte) string {
				if n == 1 {
					return tc.reply
				}
				return ""
			}
			st := deliverScripted(t, srv.Transport(), nil, "ann@example.org", "bob@example.org")
			if st.State != outbox.Delivered || len(st.Attempts) != tc.attempts || srv.copiesFor("ann@example.org") != tc.copies {
				t.Fatalf("state %s, %d attempts, %d copies", st.State, len(st.Attempts), srv.copiesFor("ann@example.org"))
			}
			for _, a := range st.Attempts {
				if len(a.PossibleDuplicates) > 0 {
					t.Fatalf("attempt %d flags %v", a.Number, a.PossibleDuplicates)
				}
			}
		})
	}
}

// 2 of 3 accepted, the third deferred (450); the process restarts; the
// third's final reply is lost once; then it is accepted. Only the third
// is flagged, ann and bob get one copy.
func TestRestartThenLostReply(t *testing.T) {
	srv := newScriptServer(t)
	srv.rcpt = func(n int, to string) string {
		if n == 1 && to == "carl@example.org" {
			return "450 4.2.1 try again later"
		}
		return ""
	}
	srv.end = func(n int, _ []string, _ []byte) string {
		if n == 2 {
			return "DROP"
		}
		return ""
	}
	at := newAttempts()
	s := newSender(t, srv.Transport(), nil)
	ob, path := openFile(t, s, fast(&outbox.Options{OnReceipt: at.on, MinBackoff: time.Hour, MaxBackoff: time.Hour}), true)
	id, err := ob.Enqueue(context.Background(), scriptMsg("ann@example.org", "bob@example.org", "carl@example.org"), nil)
	if err != nil {
		t.Fatal(err)
	}
	at.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = ob.Close(ctx)
	cancel()
	ob2 := openAt(t, s, path, fast(nil), true)
	deadline := time.Now().Add(5 * time.Second)
	for ob2.Retry(context.Background(), id) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	st := waitFor(t, ob2, id, "", 20*time.Second)
	if st.State != outbox.Delivered || srv.copiesFor("ann@example.org") != 1 || srv.copiesFor("bob@example.org") != 1 || srv.copiesFor("carl@example.org") != 2 {
		t.Fatalf("state %s, copies %d %d %d", st.State, srv.copiesFor("ann@example.org"), srv.copiesFor("bob@example.org"), srv.copiesFor("carl@example.org"))
	}
	last := st.Attempts[len(st.Attempts)-1]
	if len(last.PossibleDuplicates) != 1 || last.PossibleDuplicates[0] != "carl@example.org" || !rcptStatus(st, "carl@example.org").PossibleDuplicate {
		t.Fatalf("last attempt flags %v", last.PossibleDuplicates)
	}
}

// RFC 3207: "454 TLS not available due to temporary reason". The message
// waits and is sent once TLS is back; it does not fail for good.
func TestStartTLS454Temporary(t *testing.T) {
	srv := newScriptServer(t)
	srv.starttls = func(n int) string {
		if n == 1 {
			return "454 4.7.0 TLS not available due to temporary reason"
		}
		return ""
	}
	st := deliverScripted(t, srv.Transport(), nil, "ann@example.org")
	if st.State != outbox.Delivered {
		t.Fatalf("state %s: %+v", st.State, st.Recipients)
	}
}
