package mailsec_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/leaktest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/transport"
)

var transportAuth = transport.Auth{Username: "alice", Password: "hunter2-secret"}

func TestBccGetsOwnDeliveryAndNoHeader(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	m := base()
	m.To = []string{"ann@example.org", "Ann Again <ann@example.org>"}
	m.Cc = []string{"carl@example.org"}
	m.Bcc = []string{"hidden1@example.net", "hidden2@example.net", "carl@example.org"}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	ds := rt.Deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3 (To+Cc, one per Bcc)", len(ds))
	}
	if got := strings.Join(ds[0].To, ","); got != "ann@example.org,carl@example.org" {
		t.Fatalf("first delivery to %s", got)
	}
	for i, want := range []string{"hidden1@example.net", "hidden2@example.net"} {
		if got := ds[i+1].To; len(got) != 1 || got[0] != want {
			t.Fatalf("Bcc delivery %d to %v", i, got)
		}
	}
	for _, d := range ds {
		// (Not the bare word "bcc": a random Message-ID may contain it.)
		if bytes.Contains(bytes.ToLower(d.Data), []byte("hidden")) || bytes.Contains(bytes.ToLower(d.Data), []byte("\nbcc:")) {
			t.Fatalf("Bcc visible in a delivery:\n%s", d.Data)
		}
		if !bytes.Equal(headerOf(d.Data, "To"), headerOf(ds[0].Data, "To")) {
			t.Fatal("To differs between deliveries")
		}
	}
	if len(rec.Recipients) != 4 {
		t.Fatalf("receipt lists %d recipients (duplicates should be merged)", len(rec.Recipients))
	}
	kinds := ""
	for _, r := range rec.Recipients {
		kinds += string(r.Kind) + fmt.Sprint(r.Delivery) + " "
	}
	if kinds != "to1 cc1 bcc2 bcc3 " {
		t.Fatalf("receipt kinds and deliveries: %s", kinds)
	}
}

func headerOf(data []byte, name string) []byte {
	for _, l := range bytes.Split(data, []byte("\r\n")) {
		if len(l) == 0 {
			break
		}
		if bytes.HasPrefix(bytes.ToLower(l), []byte(strings.ToLower(name)+":")) {
			return l
		}
	}
	return nil
}

func TestPartialSuccess(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{
		"gone@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"},
		"busy@example.org": {Code: 451, EnhancedCode: mailsec.EnhancedCode{4, 3, 0}, Text: "try later"},
	}})
	s, err := mailsec.NewSender(srv.Transport(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.To = []string{"ann@example.org", "gone@example.org"}
	m.Bcc = []string{"busy@example.org"}
	rec, err := s.Send(context.Background(), m)
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 2 || !se.Partial() || se.Temporary() {
		t.Fatalf("error %v", err)
	}
	var smtpErr *mailsec.SMTPError
	if !errors.As(err, &smtpErr) || smtpErr.Code != 550 {
		t.Fatalf("errors.As SMTPError: %v", smtpErr)
	}
	var re *mailsec.RecipientError
	if !errors.As(err, &re) || re.Recipient != "gone@example.org" {
		t.Fatalf("first recipient error: %v", re)
	}
	if !mailsec.IsTemporary(se.Failed[1]) || mailsec.IsTemporary(se.Failed[0]) {
		t.Fatal("temporary classification per recipient")
	}
	if !strings.Contains(err.Error(), "gone@example.org") || !strings.Contains(err.Error(), "550") {
		t.Fatalf("message %q does not name the recipient and reply", err)
	}
	got := map[string]bool{}
	for _, r := range rec.Recipients {
		got[r.Address] = r.Accepted
		if r.Address == "ann@example.org" && (r.QueueID != "" || r.Reply == nil || r.Connection.Verification != mailsec.VerifiedWebPKI) {
			t.Fatalf("receipt for ann: %+v", r)
		}
		if r.Address == "gone@example.org" && (r.Reply == nil || r.Reply.Code != 550 || r.Err == nil) {
			t.Fatalf("receipt for gone: %+v", r)
		}
	}
	if !got["ann@example.org"] || got["gone@example.org"] || got["busy@example.org"] {
		t.Fatalf("accepted: %v", got)
	}
	if len(rec.Failed()) != 2 {
		t.Fatal("Failed()")
	}
}

// fakeProtector stands in for PGP or S/MIME: it wraps the whole entity in
// a reversible encoding (not encryption) for recipients it has a "key" for.
type fakeProtector struct {
	method       string            // the method name; empty means "fake"
	keys         map[string]string // address -> fingerprint
	calls        int
	mu           sync.Mutex
	panic        bool // in Protect
	panicOnWrite bool // while the protected body is written
	uses         map[string]mailsec.KeyUse
}

func (f *fakeProtector) Protect(_ context.Context, e *mailsec.Entity, rcpts []string) (*mailsec.Protected, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.panic {
		panic("bad key material")
	}
	var errs []error
	fps := map[string]string{}
	for _, r := range rcpts {
		fp, ok := f.keys[r]
		if !ok {
			errs = append(errs, &mailsec.RecipientError{Recipient: r, Err: &mailsec.ProtectionError{Recipient: r, Method: "fake", Reason: "no key"}})
			continue
		}
		fps[r] = fp
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	method := cmp.Or(f.method, "fake")
	var outer textproto.Header
	outer.Set("Content-Type", "application/x-"+method+"-protected")
	outer.Set("Subject", "...")
	for _, k := range []string{"Message-Id", "Cc", "To", "From", "Date"} {
		if v := e.Header.Get(k); v != "" {
			outer.Set(k, v)
		}
	}
	body := bodyFunc(func(w io.Writer) error {
		if f.panicOnWrite {
			_, _ = io.WriteString(w, "partial")
			panic("cipher state corrupt")
		}
		enc := base64.NewEncoder(base64.StdEncoding, &lineBreaker{w: w})
		if _, err := e.WriteTo(enc); err != nil {
			return err
		}
		return enc.Close()
	})
	return &mailsec.Protected{Entity: &mailsec.Entity{Header: outer, Body: body}, Fingerprints: fps, Keys: f.uses}, nil
}

// Method names the fake's method for Plan.Methods.
func (f *fakeProtector) Method() string { return cmp.Or(f.method, "fake") }

type bodyFunc func(io.Writer) error

func (f bodyFunc) WriteTo(w io.Writer) (int64, error) { return 0, f(w) }

type lineBreaker struct {
	w   io.Writer
	col int
}

func (l *lineBreaker) Write(p []byte) (int, error) {
	for _, b := range p {
		if l.col == 76 {
			if _, err := l.w.Write([]byte("\r\n")); err != nil {
				return 0, err
			}
			l.col = 0
		}
		if _, err := l.w.Write([]byte{b}); err != nil {
			return 0, err
		}
		l.col++
	}
	return len(p), nil
}

func TestProtectorSeam(t *testing.T) {
	const canary = "CANARY-lab-result-7731"
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	fp := &fakeProtector{keys: map[string]string{"ann@example.org": "FP-ANN", "bcc@example.net": "FP-BCC", "cc@example.org": "FP-CC"}}
	policy := mailsec.PolicyFunc(func(_ context.Context, _ *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		if r.Domain == "plain.example" {
			return mailsec.Plan{}, nil
		}
		return mailsec.Plan{Protection: mailsec.ProtectionRequired}, nil
	})
	tr := srv.Transport()
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{fp}})
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.Subject = "Your results " + canary
	m.Text = "Result: " + canary
	m.To = []string{"ann@example.org", "nokey@example.org", "bob@plain.example"}
	m.Cc = []string{"cc@example.org"}
	m.Bcc = []string{"bcc@example.net", "nokey-bcc@example.net"}
	rec, err := s.Send(context.Background(), m)

	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 2 {
		t.Fatalf("error %v", err)
	}
	if !errors.Is(err, mailsec.ErrNoKey) {
		t.Fatal("missing key does not match ErrNoKey")
	}
	for _, f := range se.Failed {
		if !strings.HasPrefix(f.Recipient, "nokey") {
			t.Fatalf("unexpected failure %v", f)
		}
	}

	msgs := srv.Messages()
	byRcpt := map[string][]byte{}
	for _, msg := range msgs {
		for _, to := range msg.To {
			if _, dup := byRcpt[to]; dup {
				t.Fatalf("%s received twice", to)
			}
			byRcpt[to] = msg.Data
		}
	}
	if _, ok := byRcpt["nokey@example.org"]; ok {
		t.Fatal("recipient without a key received something")
	}
	if _, ok := byRcpt["nokey-bcc@example.net"]; ok {
		t.Fatal("Bcc recipient without a key received something")
	}
	for _, r := range []string{"ann@example.org", "cc@example.org", "bcc@example.net"} {
		data := byRcpt[r]
		if data == nil {
			t.Fatalf("%s received nothing", r)
		}
		if bytes.Contains(data, []byte(canary)) {
			t.Fatalf("%s got the content in clear:\n%s", r, data)
		}
		if !bytes.Contains(data, []byte("application/x-fake-protected")) {
			t.Fatalf("%s did not get the protected form", r)
		}
	}
	if !bytes.Contains(byRcpt["bob@plain.example"], []byte(canary)) {
		t.Fatal("the unprotected recipient did not get the plain message")
	}
	// The plain recipient's copy carries the canary, over TLS: on every
	// connection the server read it only after the handshake.
	tr.Close()
	if err := srv.WaitIdle(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i, tr := range srv.Transcripts() {
		before := tr.Received[:tr.ReceivedBeforeTLS]
		if !tr.TLS || !bytes.Contains(before, []byte("STARTTLS")) || bytes.Contains(before, []byte(canary)) {
			t.Fatalf("connection %d: the canary crossed the wire in clear: %v", i+1, tr)
		}
	}
	for _, r := range rec.Recipients {
		switch r.Address {
		case "ann@example.org", "cc@example.org", "bcc@example.net":
			if r.Protection == nil || r.Protection.Method != "fake" || r.Protection.Fingerprint == "" {
				t.Fatalf("receipt for %s: %+v", r.Address, r.Protection)
			}
		case "bob@plain.example":
			if r.Protection != nil || !r.Accepted {
				t.Fatalf("receipt for bob: %+v", r)
			}
		}
	}
	if fp.Fingerprint("ann@example.org", rec) != "FP-ANN" {
		t.Fatal("fingerprint not recorded")
	}
}

func (f *fakeProtector) Fingerprint(addr string, rec *mailsec.Receipt) string {
	for _, r := range rec.Recipients {
		if r.Address == addr && r.Protection != nil {
			return r.Protection.Fingerprint
		}
	}
	return ""
}

// Protection required of a Sender without a Protector: NewSender refuses
// it; hidden from NewSender, every recipient fails with nothing sent.
func TestProtectionRequiredWithoutProtector(t *testing.T) {
	if _, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy())}); !errors.Is(err, mailsec.ErrConfig) {
		t.Fatalf("NewSender: %v", err)
	}
	s, rt := newRecordingSender(t, &mailsec.Options{Policy: undeclared(mailsec.RequireProtection(mailsec.DefaultPolicy()))})
	rec, err := s.Send(context.Background(), base())
	if !errors.Is(err, mailsec.ErrNoKey) || len(rt.Deliveries()) != 0 || rec.Recipients[0].Accepted {
		t.Fatalf("error %v, %d deliveries", err, len(rt.Deliveries()))
	}
}

func TestProtectorPanicBecomesError(t *testing.T) {
	s, rt := newRecordingSender(t, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{&fakeProtector{panic: true}},
	})
	_, err := s.Send(context.Background(), base())
	if err == nil || !strings.Contains(err.Error(), "panicked") || len(rt.Deliveries()) != 0 {
		t.Fatalf("error %v", err)
	}
}

// A Protector that panics while its output is written abandons that
// delivery (nothing is delivered, the error says why) without taking the
// application down or the pooled session with it.
func TestProtectorPanicWhileWriting(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	tr := srv.Transport()
	tr.MaxConns = 1
	s, _ := mailsec.NewSender(tr, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{&fakeProtector{panicOnWrite: true, keys: map[string]string{"ann@example.org": "FP"}}},
	})
	_, err := s.Send(context.Background(), base())
	if !errors.Is(err, mailsec.ErrContent) || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("error %v", err)
	}
	plain, _ := mailsec.NewSender(tr, nil)
	if _, err := plain.Send(context.Background(), base()); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages; the abandoned one must not arrive", n)
	}
}

func TestPolicyDecisionsReachTransport(t *testing.T) {
	pin := mailsec.Pin{7}
	policy := mailsec.PolicyFunc(func(_ context.Context, _ *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
		switch r.Domain {
		case "pinned.example":
			return mailsec.Plan{Security: mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{pin}}}, nil
		case "broken.example":
			return mailsec.Plan{Security: mailsec.Security{Level: mailsec.Pinned}}, nil
		case "error.example":
			return mailsec.Plan{}, errors.New("policy store unavailable")
		}
		return mailsec.Plan{}, nil
	})
	s, rt := newRecordingSender(t, &mailsec.Options{Policy: policy})
	m := base()
	m.To = []string{"a@example.org", "b@pinned.example", "c@broken.example", "d@error.example", "e@pinned.example"}
	rec, err := s.Send(context.Background(), m)
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 2 {
		t.Fatalf("error %v", err)
	}
	ds := rt.Deliveries()
	if len(ds) != 2 {
		t.Fatalf("%d deliveries; recipients with the same plan must share one", len(ds))
	}
	if ds[0].Security.Level != mailsec.Verified || ds[1].Security.Level != mailsec.Pinned || !slices.Equal(ds[1].To, []string{"b@pinned.example", "e@pinned.example"}) {
		t.Fatalf("deliveries %+v", ds)
	}
	if rec.Recipients[1].Plan.Security.Level != mailsec.Pinned {
		t.Fatal("plan not in receipt")
	}
}

func TestWithSecurityWrapper(t *testing.T) {
	s, rt := newRecordingSender(t, &mailsec.Options{Policy: mailsec.WithSecurity(mailsec.DefaultPolicy(), mailsec.Security{Level: mailsec.Unverified})})
	if _, err := s.Send(context.Background(), base()); err != nil {
		t.Fatal(err)
	}
	if rt.Deliveries()[0].Security.Level != mailsec.Unverified {
		t.Fatal("wrapper ignored")
	}
}

func TestOneShotAttachmentWithSeveralDeliveries(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	m := base()
	m.Bcc = []string{"x@example.net"}
	m.Attachments = []mailsec.Attachment{{Filename: "a.txt", Content: io.MultiReader(strings.NewReader("once"))}}
	_, err := s.Send(context.Background(), m)
	var ve *mailsec.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.Reason, "io.ReadSeeker") || len(rt.Deliveries()) != 0 {
		t.Fatalf("error %v", err)
	}
	// A seeker is read again from where it started.
	r := strings.NewReader("skip:payload")
	_, _ = r.Seek(5, io.SeekStart)
	m.Attachments = []mailsec.Attachment{{Filename: "a.txt", Content: r}}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	for _, d := range rt.Deliveries() {
		if !bytes.Contains(d.Data, []byte(base64.StdEncoding.EncodeToString([]byte("payload")))) {
			t.Fatalf("delivery lacks the attachment:\n%s", d.Data)
		}
	}
}

func TestReceiptJSON(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{RcptReply: map[string]*mailsec.Reply{"gone@example.org": {Code: 550, Text: "no"}}})
	s, _ := mailsec.NewSender(srv.Transport(), nil)
	const body = "CANARY-receipt-body-9341"
	m := base()
	m.Text = body
	m.To = append(m.To, "gone@example.org")
	rec, _ := s.Send(context.Background(), m)
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		MessageID  string `json:"message_id"`
		Recipients []struct {
			Address    string         `json:"address"`
			Kind       string         `json:"kind"`
			Accepted   bool           `json:"accepted"`
			Plan       map[string]any `json:"plan"`
			Reply      map[string]any `json:"reply"`
			Connection map[string]any `json:"connection"`
			Error      string         `json:"error"`
		} `json:"recipients"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	r0, r1 := v.Recipients[0], v.Recipients[1]
	if v.MessageID == "" || !r0.Accepted || r0.Kind != "to" || r0.Connection["verification"] != "webpki" ||
		r0.Connection["tls_version"] != "TLS 1.3" || r0.Plan["protection"] != "none" || r0.Reply["code"] != 250.0 ||
		r1.Accepted || r1.Error == "" || r1.Reply["code"] != 550.0 {
		t.Fatalf("JSON: %s", b)
	}
	if strings.Contains(string(b), body) || strings.Contains(string(b), m.Subject) {
		t.Fatal("receipt contains message content")
	}
	// The receipt reads back into the same types.
	var back mailsec.Receipt
	if err := json.Unmarshal(b, &back); err != nil || back.Recipients[0].Connection.Verification != mailsec.VerifiedWebPKI ||
		back.Recipients[0].Plan.Security.Level != mailsec.Verified || back.Recipients[1].Err == nil ||
		back.Recipients[1].Err.Error() != rec.Recipients[1].Err.Error() {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func TestLogsOneRecordPerDeliveryWithoutSecrets(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := mailsectest.NewServer(t, mailsectest.Config{Users: map[string]string{"alice": "hunter2-secret"}})
	tr := srv.Transport()
	tr.Auth = &transportAuth
	tr.Logger = logger
	s, _ := mailsec.NewSender(tr, &mailsec.Options{Logger: logger})
	m := base()
	m.Text = "body-canary-551"
	m.Bcc = []string{"b@example.net"}
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, `"msg":"mailsec delivery"`); n != 2 {
		t.Fatalf("%d delivery records:\n%s", n, out)
	}
	for _, secret := range []string{"hunter2-secret", "body-canary-551"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains %q:\n%s", secret, out)
		}
	}
}

func TestContextCancelledBeforeSend(t *testing.T) {
	s, rt := newRecordingSender(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Send(ctx, base())
	if !errors.Is(err, context.Canceled) || len(rt.Deliveries()) != 0 {
		t.Fatalf("error %v", err)
	}
}

// 64 goroutines share one Sender and its connection pool.
func TestConcurrentSends(t *testing.T) {
	noLeaks := leaktest.Check(t)
	srv, err := mailsectest.Start(mailsectest.Config{Users: map[string]string{"alice": "hunter2-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	tr := srv.Transport()
	tr.Auth = &transportAuth
	s, err := mailsec.NewSender(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			m := base()
			m.To = []string{fmt.Sprintf("user%d@example.org", i)}
			m.Subject = fmt.Sprintf("message %d", i)
			m.Attachments = []mailsec.Attachment{{Filename: "a.txt", Content: strings.NewReader(strings.Repeat("x", i*100))}}
			rec, err := s.Send(context.Background(), m)
			if err != nil || !rec.Recipients[0].Accepted {
				t.Errorf("send %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	msgs := srv.Messages()
	if len(msgs) != 64 {
		t.Fatalf("%d messages", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		subj := string(headerOf(m.Data, "Subject"))
		if seen[subj] || !strings.Contains(subj, "message") {
			t.Fatalf("duplicate or mixed-up message %q", subj)
		}
		seen[subj] = true
	}
	if c := srv.Connections(); c > 8 {
		t.Fatalf("%d connections for 64 concurrent sends (pool bound is 8)", c)
	}
	tr.Close()
	srv.Close()
	noLeaks()
}

func TestParsePin(t *testing.T) {
	p := mailsec.Pin{1, 2, 3}
	for _, s := range []string{p.String(), "sha256/" + p.String(), fmt.Sprintf("%x", p[:])} {
		got, err := mailsec.ParsePin(s)
		if err != nil || got != p {
			t.Errorf("ParsePin(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := mailsec.ParsePin("not a pin"); !errors.Is(err, mailsec.ErrInvalid) {
		t.Error("bad pin accepted")
	}
}

// Through Submission, the Receipt's delivery numbers follow the SMTP
// transactions: To and Cc recipients share one (a recipient refused at
// RCPT was in it too), each Bcc recipient has one of their own, and a
// recipient whose session never reached MAIL FROM (a pin mismatch, a
// missing REQUIRETLS or SMTPUTF8) has none, even when the session itself
// is described.
func TestReceiptDeliveryNumbersSubmission(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{
		RcptReply: map[string]*mailsec.Reply{"refused@example.org": {Code: 550, EnhancedCode: mailsec.EnhancedCode{5, 1, 1}, Text: "no such user"}},
	})
	var wrong mailsec.Pin
	wrong[0] = 1
	policy := mailsec.ForDomains(mailsec.DefaultPolicy(),
		mailsec.DomainRule{Domain: "partner.example", Security: &mailsec.Security{Level: mailsec.Pinned, Pins: []mailsec.Pin{wrong}}})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.To = []string{"ann@example.org", "refused@example.org", "bob@partner.example"}
	m.Cc = []string{"carl@example.org"}
	m.Bcc = []string{"b1@example.net", "b2@example.net"}
	rec, err := s.Send(context.Background(), m)
	var se *mailsec.SendError
	if !errors.As(err, &se) || len(se.Failed) != 2 {
		t.Fatalf("err = %v, want refused and bob failed", err)
	}
	want := map[string]int{"ann@example.org": 1, "refused@example.org": 1, "carl@example.org": 1, "bob@partner.example": 0,
		"b1@example.net": 2, "b2@example.net": 3}
	for _, r := range rec.Recipients {
		if r.Delivery != want[r.Address] {
			t.Errorf("%s: delivery %d, want %d", r.Address, r.Delivery, want[r.Address])
		}
	}
	if srv.Transactions() != 3 {
		t.Fatalf("%d transactions, want 3", srv.Transactions())
	}

	// The session is established and described, but ends before MAIL.
	for _, c := range []struct {
		name string
		edit func(*mailsec.Message)
	}{
		{"REQUIRETLS", func(m *mailsec.Message) { m.RequireTLS = true }},
		{"SMTPUTF8", func(m *mailsec.Message) { m.To = []string{"jöhn@example.org"} }},
	} {
		before := srv.Transactions()
		m := base()
		c.edit(m)
		rec, err := s.Send(context.Background(), m)
		if err == nil {
			t.Fatalf("%s: sent", c.name)
		}
		r := rec.Recipients[0]
		if r.Accepted || r.Delivery != 0 || srv.Transactions() != before {
			t.Fatalf("%s: delivery %d, %d transactions; want none", c.name, r.Delivery, srv.Transactions()-before)
		}
	}
}

// TestProtectorKeyUse: what a Protector reports about a recipient's key
// reaches that recipient's Receipt (and its JSON), cleaned and bounded,
// and no other recipient's.
func TestProtectorKeyUse(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	expires := time.Date(2027, 1, 5, 0, 0, 0, 0, time.UTC)
	notes := []string{"key expires in 34 days\x1b[31m", "ocsp: good"}
	for i := range 20 {
		notes = append(notes, fmt.Sprintf("note %d", i))
	}
	fp := &fakeProtector{
		keys: map[string]string{"ann@example.org": "FP-ANN", "bob@example.org": "FP-BOB"},
		uses: map[string]mailsec.KeyUse{"ann@example.org": {Expires: expires, Cipher: "aes256-gcm", Notes: notes}},
	}
	policy := mailsec.PolicyFunc(func(context.Context, *mailsec.Message, mailsec.Recipient) (mailsec.Plan, error) {
		return mailsec.Plan{Protection: mailsec.ProtectionRequired}, nil
	})
	s, err := mailsec.NewSender(srv.Transport(), &mailsec.Options{Policy: policy, Protectors: []mailsec.Protector{fp}})
	if err != nil {
		t.Fatal(err)
	}
	m := base()
	m.To = []string{"ann@example.org", "bob@example.org"}
	rec, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rec.Recipients {
		p := r.Protection
		if p == nil {
			t.Fatalf("%s: no protection info", r.Address)
		}
		switch r.Address {
		case "ann@example.org":
			if !p.KeyExpires.Equal(expires) || p.Cipher != "aes256-gcm" || len(p.Notes) != 8 {
				t.Fatalf("ann: %+v", p)
			}
			for _, n := range p.Notes {
				if strings.ContainsRune(n, 0x1b) {
					t.Fatalf("note not cleaned: %q", n)
				}
			}
		case "bob@example.org":
			if !p.KeyExpires.IsZero() || p.Cipher != "" || p.Notes != nil {
				t.Fatalf("bob: %+v", p)
			}
		}
	}
	js, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(js, []byte(`"key_expires":"2027-01-05T00:00:00Z"`)) || !bytes.Contains(js, []byte(`"cipher":"aes256-gcm"`)) {
		t.Fatalf("JSON: %s", js)
	}
	var back mailsec.Receipt
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	for _, r := range back.Recipients {
		if r.Address == "ann@example.org" && (!r.Protection.KeyExpires.Equal(expires) || len(r.Protection.Notes) != 8) {
			t.Fatalf("JSON round trip: %+v", r.Protection)
		}
	}
}
