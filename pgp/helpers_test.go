package pgp_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

const canary = "CANARY-7f3a-body-secret"

// gpgHome makes a fresh, short GNUPGHOME and stops its agent afterwards.
func gpgHome(t *testing.T) string {
	t.Helper()
	return tooltest.NewGPG(t).Home
}

// gpg runs gpg in home and returns its stdout (status lines with
// --status-fd 1) and stderr.
func gpg(t *testing.T, home string, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	r := (&tooltest.GPG{Home: home}).Run(stdin, args...)
	return r.Stdout, r.Stderr, r.Err
}

func mustGPG(t *testing.T, home string, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, err := gpg(t, home, stdin, args...)
	if err != nil {
		t.Fatalf("gpg %v: %v\n%s\n%s", args, err, out, errs)
	}
	return out
}

// gpgKey generates a key in home with gpg (a signing primary key of algo
// and, unless sub is empty, an encryption subkey of sub) and returns its
// armored public key.
func gpgKey(t *testing.T, home, uid, algo, sub string) []byte {
	t.Helper()
	mustGPG(t, home, nil, "--passphrase", "", "--quick-gen-key", uid, algo, "sign", "never")
	if sub != "" {
		mustGPG(t, home, nil, "--passphrase", "", "--quick-add-key", fprOf(t, home, uid), sub, "encr", "never")
	}
	return []byte(mustGPG(t, home, nil, "--armor", "--export", uid))
}

func fprOf(t *testing.T, home, uid string) string {
	out := mustGPG(t, home, nil, "--with-colons", "--list-keys", uid)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fpr:") {
			return strings.Split(l, ":")[9]
		}
	}
	t.Fatalf("no fingerprint for %s", uid)
	return ""
}

// encryptedPart returns the armored ciphertext (part 2) of a raw PGP/MIME
// message, and checks the structure on the way.
func encryptedPart(t *testing.T, raw []byte) []byte {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	ct, params, _ := e.Header.ContentType()
	if ct != "multipart/encrypted" || params["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("Content-Type %s %v", ct, params)
	}
	mr := e.MultipartReader()
	p1, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	v, _ := io.ReadAll(p1.Body)
	if ct, _, _ := p1.Header.ContentType(); ct != "application/pgp-encrypted" || strings.TrimSpace(string(v)) != "Version: 1" {
		t.Fatalf("part 1: %s %q", ct, v)
	}
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct, ps, _ := p2.Header.ContentType(); ct != "application/octet-stream" || ps["name"] != "encrypted.asc" {
		t.Fatalf("part 2: %s %v", ct, ps)
	}
	body, _ := io.ReadAll(p2.Body)
	if !bytes.HasPrefix(body, []byte("-----BEGIN PGP MESSAGE-----\r\n")) {
		t.Fatalf("part 2 is not an armored message with CRLF:\n%q", body[:min(len(body), 80)])
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatal("more than two parts")
	}
	return body
}

// checkWire fails if raw leaks the canary or subject, or breaks the DATA
// rules (CRLF, 7-bit, ≤ 998 octets).
func checkWire(t *testing.T, raw []byte, subject string) {
	t.Helper()
	if bytes.Contains(raw, []byte(canary)) || bytes.Contains(raw, []byte(subject)) {
		t.Fatalf("plaintext on the wire:\n%s", raw)
	}
	for _, l := range bytes.Split(raw, []byte("\r\n")) {
		if len(l) > 998 || bytes.ContainsAny(l, "\r\n") {
			t.Fatalf("bad line %q", l)
		}
		for _, c := range l {
			if c >= 0x80 {
				t.Fatalf("8-bit byte in %q", l)
			}
		}
	}
}

// mapSource serves fixed keys by address, whatever their user IDs say.
type mapSource map[string][]*openpgp.Entity

func (m mapSource) Lookup(_ context.Context, addr string) ([]*openpgp.Entity, error) {
	if es := m[addr]; len(es) > 0 {
		return es, nil
	}
	return nil, pgp.ErrKeyNotFound
}

var (
	keyOnce sync.Once
	keys    map[string]*openpgp.Entity
	keyErr  error
)

// testKeys generates, once per test binary, Curve25519 keys for a few
// addresses.
func testKeys(t testing.TB) map[string]*openpgp.Entity {
	keyOnce.Do(func() {
		keys = map[string]*openpgp.Entity{}
		for _, a := range []string{"ann@example.org", "bob@example.org", "carl@example.org", "dave@example.org", "app@example.com"} {
			e, err := mailsectest.NewPGPKey(strings.Split(a, "@")[0], a, mailsectest.PGPKeyOptions{})
			if err != nil {
				keyErr = err
				return
			}
			keys[a] = e
		}
	})
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	return keys
}

// publicRing returns a KeyRing holding the public parts of es, as a user
// would load it.
func publicRing(t testing.TB, es ...*openpgp.Entity) *pgp.KeyRing {
	t.Helper()
	var all bytes.Buffer
	for _, e := range es {
		a, err := mailsectest.ArmorPublic(e)
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(a)
	}
	kr, err := pgp.ReadKeyRing(&all)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func newSender(t testing.TB, tr mailsec.Transport, p mailsec.Protector) *mailsec.Sender {
	t.Helper()
	s, err := mailsec.NewSender(tr, &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type strBody string

func (s strBody) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, string(s))
	return int64(n), err
}

// headerFor is a message header as the Sender builds it.
func headerFor(to string) textproto.Header {
	var h textproto.Header
	for _, f := range [][2]string{
		{"Content-Transfer-Encoding", "7bit"}, {"Content-Type", "text/plain; charset=utf-8"}, {"MIME-Version", "1.0"},
		{"Message-Id", "<id@example.com>"}, {"Subject", "secret subject"}, {"To", to},
		{"From", "App <app@example.com>"}, {"Date", "Mon, 23 Nov 2026 10:00:00 +0000"},
	} {
		h.Add(f[0], f[1])
	}
	return h
}
