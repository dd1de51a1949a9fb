package main

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message"

	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

const (
	canary      = "CANARY-cli-body-5521"
	realSubject = "Lab results 5521"
)

func pgpKey(t *testing.T, name, addr string, o mailsectest.PGPKeyOptions) *openpgp.Entity {
	t.Helper()
	k, err := mailsectest.NewPGPKey(name, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func armorPublic(t *testing.T, keys ...*openpgp.Entity) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, k := range keys {
		a, err := mailsectest.ArmorPublic(k)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(a)
	}
	return b.Bytes()
}

func armorSecret(t *testing.T, k *openpgp.Entity, passphrase string) []byte {
	t.Helper()
	a, err := mailsectest.ArmorPrivate(k, []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(a)
}

func smimeCert(t *testing.T, ca *mailsectest.CA, o mailsectest.SMIMEOptions) tls.Certificate {
	t.Helper()
	c, err := ca.IssueSMIME(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkOpaque fails when a delivered message shows the body or the real
// Subject.
func checkOpaque(t *testing.T, raw []byte) {
	t.Helper()
	if bytes.Contains(raw, []byte(canary)) || bytes.Contains(raw, []byte(realSubject)) {
		t.Fatalf("plaintext in the delivered message:\n%s", raw)
	}
	if !bytes.Contains(raw, []byte("Subject: ...\r\n")) && !bytes.Contains(raw, []byte("Subject: ...\n")) { // a Maildir file has LF
		t.Fatalf("outer Subject is not \"...\":\n%s", raw)
	}
}

// checkPlain fails unless decrypted content holds the body and, in the
// protected headers, the real Subject.
func checkPlain(t *testing.T, plain string) {
	t.Helper()
	if !strings.Contains(plain, canary) || !strings.Contains(plain, "Subject: "+realSubject) {
		t.Fatalf("decrypted content lacks the body or the real Subject:\n%s", plain)
	}
}

// pgpCiphertext returns the armored message of a PGP/MIME message.
func pgpCiphertext(t *testing.T, raw []byte) []byte {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if ct, _, _ := e.Header.ContentType(); ct != "multipart/encrypted" {
		t.Fatalf("Content-Type %s", ct)
	}
	mr := e.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no application/octet-stream part: %v", err)
		}
		if ct, _, _ := p.Header.ContentType(); ct == "application/octet-stream" {
			b, _ := io.ReadAll(p.Body)
			return b
		}
	}
}

// smimeDER returns the decoded CMS of an S/MIME enveloped-data message.
func smimeDER(t *testing.T, raw []byte) []byte {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if ct, p, _ := e.Header.ContentType(); ct != "application/pkcs7-mime" || p["smime-type"] != "enveloped-data" {
		t.Fatalf("Content-Type %s %v", ct, p)
	}
	b, err := io.ReadAll(e.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSendPGP(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ann := pgpKey(t, "Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	bob := pgpKey(t, "Bob", "bob@example.org", mailsectest.PGPKeyOptions{})
	app := pgpKey(t, "App", "app@example.com", mailsectest.PGPKeyOptions{})
	keys := writeFile(t, "keys.asc", armorPublic(t, ann, bob))
	secret := writeFile(t, "app.asc", armorSecret(t, app, "pgp-pass"))
	body := writeFile(t, "body.txt", []byte("Your result: "+canary+"\n"))
	env := map[string]string{pgpPassphraseEnv: "pgp-pass"}

	r := runCmd(t, "", env, "send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "app@example.com",
		"-to", "ann@example.org", "-bcc", "bob@example.org", "-subject", realSubject, "-body", body,
		"-pgp-keys", keys, "-pgp-sign", secret, "-json")
	wantCode(t, r, 0)
	if strings.Contains(r.stdout+r.stderr, "pgp-pass") {
		t.Fatal("passphrase printed")
	}
	lines := progressLines(r.stderr)
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "signed and encrypted with pgp for "+pgp.Fingerprint(ann)) ||
		!strings.HasSuffix(lines[1], "signed and encrypted with pgp for "+pgp.Fingerprint(bob)) {
		t.Fatalf("progress lines: %q", lines)
	}
	if !strings.Contains(r.stdout, `"fingerprint": "`+pgp.Fingerprint(ann)+`"`) {
		t.Fatalf("receipt lacks the key fingerprint:\n%s", r.stdout)
	}
	if bytes.Contains(received(t, srv), []byte(canary)) {
		t.Fatal("the canary reached the server in clear")
	}

	g := tooltest.NewGPG(t)
	g.Import(armorSecret(t, ann, ""))
	g.Import(armorPublic(t, app))
	raw := messageTo(t, srv, "ann@example.org").Data
	checkOpaque(t, raw)
	plain, status := g.Decrypt(pgpCiphertext(t, raw))
	checkPlain(t, strings.ReplaceAll(plain, "=\r\n", ""))
	if !strings.Contains(status, "DECRYPTION_INFO 2 9") || !strings.Contains(status, "DECRYPTION_OKAY") {
		t.Fatalf("gpg status:\n%s", status)
	}
	// Bob's copy is for Bob's key alone.
	if out := g.Run(pgpCiphertext(t, messageTo(t, srv, "bob@example.org").Data), "--passphrase", "", "--decrypt"); out.Err == nil {
		t.Fatal("Ann's key decrypts the Bcc copy")
	}
}

func TestSendPGPRefusals(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ann := pgpKey(t, "Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	expired := pgpKey(t, "Old", "old@example.org", mailsectest.PGPKeyOptions{Expired: true})
	keys := writeFile(t, "keys.asc", armorPublic(t, ann, expired))
	app := pgpKey(t, "App", "app@example.com", mailsectest.PGPKeyOptions{})
	secret := writeFile(t, "app.asc", armorSecret(t, app, "right"))
	body := writeFile(t, "body.txt", []byte(canary))
	base := []string{"send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "app@example.com", "-subject", realSubject, "-body", body}

	// No key, an expired key: those recipients get nothing, Ann gets hers.
	r := runCmd(t, "", nil, append(base, "-to", "ann@example.org,nokey@example.org", "-cc", "old@example.org", "-pgp-keys", keys)...)
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, "nokey@example.org: NOT delivered") || !strings.Contains(r.stderr, "old@example.org: NOT delivered") ||
		!strings.Contains(r.stderr, "expired") {
		t.Fatalf("stderr does not name the recipients and the reason:\n%s", r.stderr)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "ann@example.org" {
		t.Fatalf("deliveries: %v", msgs)
	}
	if bytes.Contains(received(t, srv), []byte(canary)) {
		t.Fatal("the canary reached the server in clear")
	}

	// A wrong passphrase or a corrupt key file: bad usage, nothing sent.
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{pgpPassphraseEnv: "wrong"}, []string{"-pgp-keys", keys, "-pgp-sign", secret}, "-pgp-sign"},
		{nil, []string{"-pgp-keys", keys, "-pgp-sign", secret}, "-pgp-sign"},
		{nil, []string{"-pgp-keys", writeFile(t, "bad.asc", []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"))}, "-pgp-keys"},
		{nil, []string{"-pgp-keys", keys, "-notice-url", "http://app.example/inbox"}, "must be an https:// URL"},
		{nil, []string{"-pgp-keys", keys, "-notice-url", "https://app.example/inbox", "-prefer-protection"}, "exclude each other"},
		{nil, []string{"-notice-url", "https://app.example/inbox"}, "-notice-url needs"},
		{nil, []string{"-pgp-sign", secret}, "-pgp-sign needs -pgp-keys"},
		{nil, []string{"-outer-subject", "x"}, "-outer-subject needs"},
	} {
		r := runCmd(t, "", tc.env, append(base, append([]string{"-to", "ann@example.org"}, tc.args...)...)...)
		wantCode(t, r, 2)
		if !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("stderr lacks %q:\n%s", tc.want, r.stderr)
		}
	}
	if n := srv.Transactions(); n != 1 {
		t.Fatalf("%d transactions, want only the first", n)
	}
}

func TestSendSMIME(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ann := smimeCert(t, ca, mailsectest.SMIMEOptions{Email: "ann@example.org"})
	key := ann.PrivateKey.(crypto.Signer) // reused: RSA key generation is slow
	old := smimeCert(t, ca, mailsectest.SMIMEOptions{Email: "old@example.org", Key: key,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	app := smimeCert(t, ca, mailsectest.SMIMEOptions{Email: "app@example.com", Key: key})
	certs := writeFile(t, "certs.pem", append(mailsectest.LeafPEM(ann), mailsectest.LeafPEM(old)...))
	roots := writeFile(t, "roots.pem", ca.CertPEM())
	appChain, appKey, err := mailsectest.PEM(app)
	if err != nil {
		t.Fatal(err)
	}
	body := writeFile(t, "body.txt", []byte("Your result: "+canary+"\n"))
	base := []string{"send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "app@example.com", "-subject", realSubject,
		"-body", body, "-smime-certs", certs, "-smime-roots", roots}

	r := runCmd(t, "", nil, append(base, "-to", "ann@example.org",
		"-smime-sign-cert", writeFile(t, "app.pem", appChain), "-smime-sign-key", writeFile(t, "app.key", appKey))...)
	wantCode(t, r, 0)
	if lines := progressLines(r.stderr); len(lines) != 1 || !strings.Contains(lines[0], "signed and encrypted with smime for ") {
		t.Fatalf("progress lines: %q", lines)
	}
	raw := messageTo(t, srv, "ann@example.org").Data
	checkOpaque(t, raw)
	plain := tooltest.OpenSSLDecrypt(t, raw, ann)
	if !strings.Contains(plain, "multipart/signed") {
		t.Fatalf("not signed inside:\n%s", plain)
	}
	checkPlain(t, plain)

	// An expired certificate, none at all, an untrusted root: nothing sent.
	other, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-to", "old@example.org"}, "old@example.org: NOT delivered"},
		{[]string{"-to", "nobody@example.org"}, "nobody@example.org: NOT delivered"},
		{[]string{"-to", "ann@example.org", "-smime-roots", writeFile(t, "other.pem", other.CertPEM())}, "ann@example.org: NOT delivered"},
	} {
		before := srv.Transactions()
		r := runCmd(t, "", nil, append(base, tc.args...)...)
		wantCode(t, r, 1)
		if !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("stderr lacks %q:\n%s", tc.want, r.stderr)
		}
		if srv.Transactions() != before {
			t.Fatal("a message was sent")
		}
	}
	for _, args := range [][]string{
		{"-smime-sign-cert", roots},
		{"-smime-certs", writeFile(t, "corrupt.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))},
	} {
		r := runCmd(t, "", nil, append(base, append([]string{"-to", "ann@example.org"}, args...)...)...)
		wantCode(t, r, 2)
	}
	if bytes.Contains(received(t, srv), []byte(canary)) {
		t.Fatal("the canary reached the server in clear")
	}
}

// -notice-url and -prefer-protection decide for the recipients without a
// key; -pgp-keys and -smime-certs together serve each recipient with the
// method it has a key for.
func TestSendNoticeAndPrefer(t *testing.T) {
	srv := mailsectest.NewServer(t, mailsectest.Config{})
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ann := pgpKey(t, "Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	bob := smimeCert(t, ca, mailsectest.SMIMEOptions{Email: "bob@example.org"})
	keys := writeFile(t, "keys.asc", armorPublic(t, ann))
	certs := writeFile(t, "certs.pem", mailsectest.LeafPEM(bob))
	roots := writeFile(t, "roots.pem", ca.CertPEM())
	body := writeFile(t, "body.txt", []byte("Your result: "+canary+"\n"))
	attach := writeFile(t, "result.pdf", []byte("%PDF "+canary))
	base := []string{"send", "-server", srv.Addr, "-ca", caFile(t, srv), "-from", "lab@example.com", "-subject", realSubject,
		"-body", body, "-attach", attach, "-pgp-keys", keys, "-smime-certs", certs, "-smime-roots", roots,
		"-to", "ann@example.org,bob@example.org", "-cc", "carl@example.org"}

	r := runCmd(t, "", nil, append(base, "-notice-url", "https://app.example/inbox")...)
	wantCode(t, r, 0)
	lines := progressLines(r.stderr)
	if len(lines) != 3 || !strings.Contains(lines[0], "encrypted with pgp") || !strings.Contains(lines[1], "encrypted with smime") ||
		!strings.Contains(lines[2], "link-only notice instead of the message") {
		t.Fatalf("progress lines: %q", lines)
	}
	mailsectest.ExpectReceived(t, srv, "ann@example.org", mailsectest.KindPGP)
	mailsectest.ExpectReceived(t, srv, "bob@example.org", mailsectest.KindSMIME)
	notice := mailsectest.ExpectReceived(t, srv, "carl@example.org", mailsectest.KindPlain)
	if !bytes.Contains(notice.Data, []byte("https://app.example/inbox")) || bytes.Contains(notice.Data, []byte(realSubject)) ||
		bytes.Contains(notice.Data, []byte("result.pdf")) {
		t.Fatalf("notice:\n%s", notice.Data)
	}
	if bytes.Contains(received(t, srv), []byte(canary)) {
		t.Fatal("the canary reached the server in clear")
	}

	srv2 := mailsectest.NewServer(t, mailsectest.Config{})
	base[2], base[4] = srv2.Addr, caFile(t, srv2)
	r = runCmd(t, "", nil, append(base, "-prefer-protection")...)
	wantCode(t, r, 0)
	if lines := progressLines(r.stderr); len(lines) != 3 || !strings.Contains(lines[2], "NOT encrypted (") {
		t.Fatalf("progress lines: %q", lines)
	}
	mailsectest.ExpectReceived(t, srv2, "ann@example.org", mailsectest.KindPGP)
	mailsectest.ExpectReceived(t, srv2, "bob@example.org", mailsectest.KindSMIME)
	plain := mailsectest.ExpectReceived(t, srv2, "carl@example.org", mailsectest.KindPlain)
	if !bytes.Contains(plain.Data, []byte(canary)) {
		t.Fatal("the prefer-protection recipient without a key did not get the message")
	}
	for _, m := range srv2.Messages() {
		if m.TLS == nil {
			t.Fatal("a delivery without TLS")
		}
	}
}
