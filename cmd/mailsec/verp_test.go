package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/outbox"
)

// verpSecret writes a VERP secret file the way the help says to make
// one, and returns its path and the secret the commands read from it.
func verpSecret(t *testing.T) (string, []byte) {
	t.Helper()
	secret := []byte(base64.StdEncoding.EncodeToString(randomBytes(t, 32)))
	return writeFile(t, "verp.key", append(append([]byte(nil), secret...), '\n')), secret
}

var verpPath = regexp.MustCompile(`^bounces\+([a-z0-9_-]+)\.[a-z2-7]{16}@example\.com$`)

// send -verp sends from a signed return path of its own, which the VERP
// of the same secret accepts for the delivery's ENVID; the message's
// From is the author's still.
func TestSendVERP(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	file, secret := verpSecret(t)
	r := runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv),
		"-from", "noreply@example.com", "-to", "ann@example.org", "-subject", "x",
		"-verp", "bounces@example.com", "-verp-secret-file", file)
	wantCode(t, r, 0)
	if strings.Contains(r.stderr, string(secret)) || strings.Contains(r.stderr, "warning") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	m := messageTo(t, srv, "ann@example.org")
	if !verpPath.MatchString(m.From) {
		t.Fatalf("MAIL FROM %q, want bounces+<tag>@example.com", m.From)
	}
	v := &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: secret}
	tag, err := v.Parse(m.From)
	if err != nil || !tag.Signs(m.EnvelopeID) {
		t.Fatalf("MAIL FROM %q is not the signed return path of ENVID %q: %v", m.From, m.EnvelopeID, err)
	}
	other := &bounce.VERP{Local: "bounces", Domain: "example.com", Secret: randomBytes(t, 32)}
	if tag, err := other.Parse(m.From); err != nil || tag.Signs(m.EnvelopeID) {
		t.Fatalf("another secret signs %q too (%v)", m.From, err)
	}
	if !strings.Contains(string(m.Data), "From: noreply@example.com\r\n") {
		t.Errorf("the header From changed:\n%s", m.Data)
	}
}

// queue run -verp delivers each message from its signed return path, and
// bounce ingest -recipient matches a bounce that carries no ENVID by
// that path: the bounce's recipient becomes bounced. A tag made up,
// altered or checked with another secret changes nothing and exits 0,
// so that a Postfix pipe does not keep it.
func TestBounceIngestVERP(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	environ, _ := queueEnv(t)
	file, _ := verpSecret(t)
	verp := []string{"-verp", "bounces@example.com", "-verp-secret-file", file}
	db := filepath.Join(t.TempDir(), "mail.db")
	id := enqueueCmd(t, environ, db, "-to", "nobody@example.org,ann@example.org")
	r := runCmd(t, "", environ, append([]string{"queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)}, verp...)...)
	wantCode(t, r, 0)
	rp := srv.Messages()[0].From
	if m := verpPath.FindStringSubmatch(rp); m == nil || m[1] != strings.ToLower(id) {
		t.Fatalf("MAIL FROM %q, want bounces+%s.<mac>@example.com", rp, strings.ToLower(id))
	}

	raw, err := os.ReadFile(corpusFile("postfix-failed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	// A server that drops the DSN parameters: no Original-Envelope-Id.
	noENVID := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41\n", "", 1)
	if noENVID == string(raw) {
		t.Fatal("the corpus bounce has no Original-Envelope-Id line to remove")
	}
	unchanged := func() {
		t.Helper()
		if st := showJSON(t, environ, db, id); st.State != outbox.Delivered || len(st.Bounces) != 0 {
			t.Fatalf("an unmatched bounce changed the message: %+v", st)
		}
	}

	at := strings.IndexByte(rp, '@')
	last := rp[at-1 : at]
	flip := "a"
	if last == "a" {
		flip = "b"
	}
	otherSecret, _ := verpSecret(t)
	for _, tc := range []struct {
		name      string
		recipient string
		args      []string
	}{
		{"altered mac", rp[:at-1] + flip + rp[at:], verp},
		{"another message's ID", "bounces+" + strings.Repeat("z", len(id)) + rp[strings.IndexByte(rp, '.'):], verp},
		{"no tag", "bounces@example.com", verp},
		{"another domain", strings.Replace(rp, "@example.com", "@example.net", 1), verp},
		{"another secret", rp, []string{"-verp", "bounces@example.com", "-verp-secret-file", otherSecret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, noENVID, environ, append([]string{"bounce", "ingest", "-db", db, "-recipient", tc.recipient}, tc.args...)...)
			wantCode(t, r, 0)
			if !strings.Contains(r.stderr, "unmatched") {
				t.Fatalf("stderr %q", r.stderr)
			}
			unchanged()
		})
	}

	r = runCmd(t, noENVID, environ, append([]string{"bounce", "ingest", "-db", db, "-json", "-recipient", strings.ToUpper(rp[:7]) + rp[7:]}, verp...)...)
	wantCode(t, r, 0)
	var res outbox.IngestResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.ID != id || len(res.Bounced) != 1 || res.Bounced[0] != "nobody@example.org" {
		t.Fatalf("%v %+v", err, res)
	}
	st := showJSON(t, environ, db, id)
	if st.State != outbox.PartlyDelivered || st.Recipients[0].State != outbox.Bounced || st.Recipients[1].State != outbox.Accepted {
		t.Fatalf("after the bounce: %+v", st)
	}
}

// A bounce delivered to the VERP's own address, without a tag, is
// matched by its ENVID, as without -verp: mail sent before -verp was
// turned on still has its bounces recorded.
func TestBounceIngestVERPUntagged(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{DSN: true})
	environ, _ := queueEnv(t)
	file, _ := verpSecret(t)
	db := filepath.Join(t.TempDir(), "mail.db")
	id := enqueueCmd(t, environ, db, "-to", "nobody@example.org")
	wantCode(t, runCmd(t, "", environ, "queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)), 0)
	raw, err := os.ReadFile(corpusFile("postfix-failed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	ours := strings.Replace(string(raw), "Original-Envelope-Id: ms-7f3a9c2e41", "Original-Envelope-Id: "+srv.Messages()[0].EnvelopeID, 1)
	r := runCmd(t, ours, environ, "bounce", "ingest", "-db", db, "-verp", "bounces@example.com", "-verp-secret-file", file, "-recipient", "Bounces@Example.com")
	wantCode(t, r, 0)
	if st := showJSON(t, environ, db, id); st.Recipients[0].State != outbox.Bounced {
		t.Fatalf("stderr %q, status %+v", r.stderr, st)
	}
}

// The -verp flags refuse what cannot work before anything is sent or
// read: each is a usage error (exit 2) that names the flag, and the
// secret is never printed.
func TestVERPUsage(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	environ, _ := queueEnv(t)
	good, secret := verpSecret(t)
	short := writeFile(t, "short.key", []byte(strings.Repeat("s", 31)+"\n"))
	large := writeFile(t, "large.key", []byte(strings.Repeat("s", 5000)))
	missing := filepath.Join(t.TempDir(), "missing.key")
	db := filepath.Join(t.TempDir(), "mail.db")
	id := enqueueCmd(t, environ, db, "-to", "ann@example.org")
	send := func(extra ...string) []string {
		return append([]string{"send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "noreply@example.com",
			"-to", "ann@example.org"}, extra...)
	}
	run := func(extra ...string) []string {
		return append([]string{"queue", "run", "-db", db, "-once", "-server", srv.Addr, "-ca", caFile(t, srv)}, extra...)
	}
	ingest := func(extra ...string) []string {
		return append([]string{"bounce", "ingest", "-db", db}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"send without secret", send("-verp", "bounces@example.com"), "-verp-secret-file"},
		{"send secret without verp", send("-verp-secret-file", good), "-verp"},
		{"send missing secret", send("-verp", "bounces@example.com", "-verp-secret-file", missing), "-verp-secret-file"},
		{"send short secret", send("-verp", "bounces@example.com", "-verp-secret-file", short), "at least 32"},
		{"send large secret", send("-verp", "bounces@example.com", "-verp-secret-file", large), "larger than"},
		{"send directory secret", send("-verp", "bounces@example.com", "-verp-secret-file", t.TempDir()), "-verp-secret-file"},
		{"send no domain", send("-verp", "bounces", "-verp-secret-file", good), "LOCAL@DOMAIN"},
		{"send plus in local", send("-verp", "bounces+x@example.com", "-verp-secret-file", good), "local part"},
		{"send long local", send("-verp", strings.Repeat("b", maxVERPLocal+1)+"@example.com", "-verp-secret-file", good), "local part"},
		{"send bad domain", send("-verp", "bounces@exa mple.com", "-verp-secret-file", good), "domain"},
		{"send queue verp", []string{"send", "-queue", db, "-from", "noreply@example.com", "-to", "ann@example.org",
			"-verp", "bounces@example.com", "-verp-secret-file", good}, "queue run"},
		{"run short secret", run("-verp", "bounces@example.com", "-verp-secret-file", short), "at least 32"},
		{"run missing secret", run("-verp", "bounces@example.com", "-verp-secret-file", missing), "-verp-secret-file"},
		{"ingest recipient without verp", ingest("-recipient", "bounces+x.y@example.com"), "-recipient"},
		{"ingest empty recipient", ingest("-recipient", "", "-verp", "bounces@example.com", "-verp-secret-file", good), "-recipient"},
		{"ingest short secret", ingest("-recipient", "bounces+x.y@example.com", "-verp", "bounces@example.com", "-verp-secret-file", short), "at least 32"},
		{"ingest missing secret", ingest("-verp", "bounces@example.com", "-verp-secret-file", missing), "-verp-secret-file"},
		{"ingest without secret", ingest("-verp", "bounces@example.com"), "-verp-secret-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, "", environ, tc.args...)
			wantCode(t, r, 2)
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "run 'mailsec ") {
				t.Errorf("stderr does not mention %q:\n%s", tc.want, r.stderr)
			}
			if strings.Contains(r.stderr, string(secret)) || strings.Contains(r.stderr, strings.Repeat("s", 31)) {
				t.Errorf("stderr prints the secret:\n%s", r.stderr)
			}
		})
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("%d connections after usage errors", n)
	}
	if st := showJSON(t, environ, db, id); st.State != outbox.Queued {
		t.Errorf("a usage error changed the queued message: %+v", st)
	}
}

// A secret file its group or others may read draws a warning, as a
// -dkim key does; the secret itself is not printed.
func TestVERPSecretReadableWarning(t *testing.T) {
	t.Parallel()
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	file, secret := verpSecret(t)
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", nil, "send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "noreply@example.com",
		"-to", "ann@example.org", "-verp", "bounces@example.com", "-verp-secret-file", file)
	wantCode(t, r, 0)
	if !strings.Contains(r.stderr, "warning: the VERP secret "+file+" is readable by others") || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("no warning:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, string(secret)) {
		t.Errorf("stderr prints the secret:\n%s", r.stderr)
	}
}
