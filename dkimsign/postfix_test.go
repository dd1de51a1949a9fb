package dkimsign_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dkimsign"
	"github.com/mailsec/mailsec/internal/postfixtest"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
	"github.com/mailsec/mailsec/transport"
)

// dkimpyScript verifies every DKIM-Signature of the message in argv[1]
// with dkimpy, the public keys coming from the JSON object in argv[2]
// (record name to TXT record) instead of DNS. It prints one line per
// signature: its index and True or False.
const dkimpyScript = `
import sys, json, dkim, nacl
msg = open(sys.argv[1], 'rb').read()
records = json.loads(sys.argv[2])
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    r = records.get(name.rstrip('.'))
    return r.encode() if r else None
n = sum(1 for line in msg.split(b'\r\n') if line.lower().startswith(b'dkim-signature:'))
print(n)
for i in range(n):
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError as e:
        print('#', i, e)
        ok = False
    print(i, ok)
`

// needDkimpy skips the test unless Debian's python3 with dkimpy and
// PyNaCl is installed, and fails it in CI.
func needDkimpy(t *testing.T) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("/usr/bin/python3 with dkim and nacl (Debian python3-dkim, python3-nacl) is required in CI: %v\n%s", err, out)
		}
		t.Skipf("dkimpy is not installed: %v", err)
	}
}

// dkimpyVerify returns dkimpy's verdict on each signature of msg.
func dkimpyVerify(t *testing.T, msg []byte, ss []*dkimsign.Signer) []bool {
	t.Helper()
	records := map[string]string{}
	for _, s := range ss {
		records[s.RecordName()] = s.Record()
	}
	js, err := json.Marshal(records)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "-c", dkimpyScript, path, string(js)).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	var verdicts []bool
	for _, l := range lines[1:] {
		verdicts = append(verdicts, strings.HasSuffix(l, " True"))
	}
	if len(verdicts) != len(lines)-1 || lines[0] != itoa(len(verdicts)) {
		t.Fatalf("dkimpy printed:\n%s", out)
	}
	return verdicts
}

func itoa(n int) string { return strconv.Itoa(n) }

// crlf turns a Maildir file's LF line endings into the CRLF of the wire.
func crlf(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// changeBodyByte changes one letter or digit in the middle of the body.
func changeBodyByte(t *testing.T, msg []byte) []byte {
	t.Helper()
	out := bytes.Clone(msg)
	start := bytes.Index(out, []byte("\r\n\r\n")) + 4
	for i := start + (len(out)-start)/2; i < len(out); i++ {
		c := out[i]
		if 'a' <= c && c <= 'y' || 'A' <= c && c <= 'Y' || '0' <= c && c <= '8' {
			out[i]++
			return out
		}
	}
	t.Fatal("no letter in the body's second half")
	return nil
}

// changeHeaderByte changes the last byte of the first field named name.
func changeHeaderByte(t *testing.T, msg []byte, name string) []byte {
	t.Helper()
	out := bytes.Clone(msg)
	i := bytes.Index(out, []byte("\r\n"+name+": "))
	if i < 0 {
		t.Fatalf("no %s field", name)
	}
	end := i + 2 + bytes.Index(out[i+2:], []byte("\r\n"))
	out[end-1] ^= 0x01
	return out
}

// Through a real Postfix, dkimpy verifies the RSA and Ed25519 signatures
// of a plain, a PGP/MIME and an S/MIME message read from the Maildir; a
// one-byte change in the body, or in the signed Subject or From, makes
// each signature fail.
func TestDkimpyVerifiesPostfixMaildir(t *testing.T) {
	needDkimpy(t)
	ss := signers(t, "example.test")
	pf := postfixtest.Start(t, postfixtest.Config{Domain: "example.test",
		Mailboxes: []string{"ann"}, Users: map[string]string{"alice": "pf-secret"}})
	sub := &transport.Submission{Addr: pf.SubmissionAddr, ServerName: pf.Hostname,
		TLSConfig: &tls.Config{RootCAs: pf.RootCAs()}, Auth: &transport.Auth{Username: "alice", Password: "pf-secret"}}
	t.Cleanup(func() { sub.Close() })
	tr, err := dkimsign.NewTransport(sub, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.test": ss}})
	if err != nil {
		t.Fatal(err)
	}

	ann, err := mailsectest.NewPGPKey("Ann", "ann@example.test", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pgpP, err := pgp.New(pgp.NewKeyRing(ann), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := smime.ReadCertificates(bytes.NewReader(mailsectest.LeafPEM(cert)))
	if err != nil {
		t.Fatal(err)
	}
	smimeP, err := smime.New(store, &smime.Options{Roots: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []struct {
		name string
		p    mailsec.Protector
		want string // in the Maildir file
	}{
		{"plain", nil, canary},
		{"PGP/MIME", pgpP, "multipart/encrypted"},
		{"S/MIME", smimeP, "application/pkcs7-mime"},
	}
	for n, k := range kinds {
		o := &mailsec.Options{}
		if k.p != nil {
			o = &mailsec.Options{Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{k.p}}
		}
		s, err := mailsec.NewSender(tr, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Send(context.Background(), &mailsec.Message{From: "Lab <lab@example.test>", To: []string{"Ann <ann@example.test>"},
			Subject: "Results " + k.name, Text: "Dear Ann,\n\n" + canary + "\ntrailing spaces   \n\n\n"}); err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		msgs := pf.Wait(t, "ann", n+1)
		var raw []byte
		for _, m := range msgs {
			if bytes.Contains(m, []byte(k.want)) && (k.p == nil) == bytes.Contains(m, []byte(canary)) {
				raw = crlf(m)
			}
		}
		if raw == nil {
			t.Fatalf("%s: no such message in the Maildir", k.name)
		}
		if got := dkimpyVerify(t, raw, ss); len(got) != 2 || !got[0] || !got[1] {
			t.Fatalf("%s: dkimpy verdicts %v, want two valid signatures\n%s", k.name, got, raw[:min(len(raw), 3000)])
		}
		for what, changed := range map[string][]byte{
			"one body byte":       changeBodyByte(t, raw),
			"one Subject byte":    changeHeaderByte(t, raw, "Subject"),
			"one From byte":       changeHeaderByte(t, raw, "From"),
			"one Message-ID byte": changeHeaderByte(t, raw, "Message-ID"),
		} {
			if got := dkimpyVerify(t, changed, ss); len(got) != 2 || got[0] || got[1] {
				t.Errorf("%s, %s changed: dkimpy verdicts %v, want two failures", k.name, what, got)
			}
		}
	}
}
