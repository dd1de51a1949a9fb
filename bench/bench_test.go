package bench_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/mailsec/mailsec/bench/submitbench"
)

// env holds the one sink every benchmark in this process sends to.
var env *submitbench.Env

func TestMain(m *testing.M) {
	var err error
	env, err = submitbench.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the sink:", err)
		os.Exit(2)
	}
	code := m.Run()
	_ = env.Close()
	if err := closeOutboxEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the outbox benchmarks' databases:", err)
		code = max(code, 1)
	}
	os.Exit(code)
}

// BenchmarkMailsec64: one mailsec.Sender, default pool, 64 goroutines
// calling Send.
func BenchmarkMailsec64(b *testing.B) {
	env.Mailsec(submitbench.Concurrency, submitbench.Pool{})(b)
}

// BenchmarkGoSMTPReuse: the floor, a bare go-smtp client reusing one
// connection sequentially.
func BenchmarkGoSMTPReuse(b *testing.B) { env.GoSMTPReuse(b) }

// BenchmarkGoMailPerMessage: go-mail, a new client and connection per
// message, sequentially.
func BenchmarkGoMailPerMessage(b *testing.B) { env.GoMailPerMessage(b) }

// BenchmarkGoMailBatch: go-mail, batches of 100 messages per connection.
func BenchmarkGoMailBatch(b *testing.B) { env.GoMailBatch(b) }

// BenchmarkMailsec64Pool is BenchmarkMailsec64 with the pool settings of
// transport.Submission changed from the benchmark side: MaxConns (the
// library's default is 8) and MaxMessagesPerConn (default 100, after which
// a session is replaced, with a new TLS handshake). Run it on its own:
//
//	go test -bench Mailsec64Pool -benchtime 2000x -count 5
func BenchmarkMailsec64Pool(b *testing.B) {
	for _, msgs := range []int{100, 1000} {
		for _, conns := range []int{1, 2, 4, 8, 16, 32, 64} {
			p := submitbench.Pool{MaxConns: conns, MaxMessagesPerConn: msgs}
			name := "maxconns=" + strconv.Itoa(conns) + "/maxmsgs=" + strconv.Itoa(msgs)
			b.Run(name, env.Mailsec(submitbench.Concurrency, p))
		}
	}
}

// TestMessage checks the message every benchmark sends: about 2 KB as
// each client builds it, the same body each time.
func TestMessage(t *testing.T) {
	ms, gm, raw, err := submitbench.MessageSizes()
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"mailsec": ms, "go-mail": gm, "go-smtp (Raw)": raw} {
		if n < 1800 || n > 2600 {
			t.Errorf("%s builds a %d-byte message, want about 2 KB", name, n)
		}
	}
	t.Logf("message sizes: mailsec %d B, go-mail %d B, go-smtp %d B", ms, gm, raw)
	if submitbench.Body != submitbench.MailsecMessage().Text {
		t.Error("mailsec message body differs from Body")
	}
}
