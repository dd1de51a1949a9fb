// Package tooltest drives the real tools that must read what mailsec
// produces (gpg, gpgsm, openssl) from tests: each gets a fresh, short home
// directory, runs non-interactively, and is stopped when the test ends.
//
// A missing tool skips the test, unless the environment variable CI is set:
// then the test fails, because interoperability tests must never be
// skipped silently in CI.
package tooltest

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
)

// p12Passphrase protects the PKCS#12 files gpgsm imports keys from, and
// so the keys in its agent.
const p12Passphrase = "test"

// commandTimeout bounds every tool invocation.
const commandTimeout = 60 * time.Second

// Need skips or fails t unless every named program is installed.
func Need(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI: %v", n, err)
			}
			t.Skipf("%s is not installed", n)
		}
	}
}

// Result is what a tool printed and how it exited.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Run runs a program with stdin and extra environment variables.
func Run(stdin []byte, env []string, name string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return Result{o.String(), e.String(), err}
}

// Must runs a program and fails t if it exits with an error.
func Must(t testing.TB, stdin []byte, env []string, name string, args ...string) string {
	t.Helper()
	r := Run(stdin, env, name, args...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v\n%s\n%s", name, strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// Home returns a fresh directory under /tmp for GNUPGHOME (the agent's
// socket path must stay short), removed with its agent when t ends.
func Home(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "g")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Run(nil, []string{"GNUPGHOME=" + dir}, "gpgconf", "--kill", "all")
		os.RemoveAll(dir)
	})
	return dir
}

// GPG is a gpg with its own home.
type GPG struct {
	t    testing.TB
	Home string
}

// NewGPG returns a gpg with a fresh home.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	Need(t, "gpg", "gpgconf")
	return &GPG{t: t, Home: Home(t)}
}

// Run runs gpg in batch mode with loopback pinentry and every key trusted.
func (g *GPG) Run(stdin []byte, args ...string) Result {
	all := append([]string{"--batch", "--no-tty", "--pinentry-mode", "loopback", "--trust-model", "always"}, args...)
	return Run(stdin, []string{"GNUPGHOME=" + g.Home}, "gpg", all...)
}

// Must is Run that fails the test on error; it returns standard output.
func (g *GPG) Must(stdin []byte, args ...string) string {
	g.t.Helper()
	r := g.Run(stdin, args...)
	if r.Err != nil {
		g.t.Fatalf("gpg %s: %v\n%s\n%s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// Import imports armored keys (public or secret, without passphrase).
func (g *GPG) Import(armored []byte) {
	g.t.Helper()
	g.Must(armored, "--passphrase", "", "--import")
}

// Decrypt decrypts an OpenPGP message and returns the plaintext and the
// status lines gpg wrote (DECRYPTION_INFO, DECRYPTION_OKAY, GOODSIG...).
func (g *GPG) Decrypt(ciphertext []byte) (plain, status string) {
	g.t.Helper()
	r := g.Run(ciphertext, "--passphrase", "", "--status-fd", "2", "--output", "-", "--decrypt")
	if r.Err != nil {
		g.t.Fatalf("gpg --decrypt: %v\n%s", r.Err, r.Stderr)
	}
	var st strings.Builder
	for line := range strings.Lines(r.Stderr) {
		if strings.HasPrefix(line, "[GNUPG:] ") {
			st.WriteString(line)
		}
	}
	return r.Stdout, st.String()
}

// GPGSM is a gpgsm with its own home that trusts one CA and holds the
// private keys it was given.
type GPGSM struct {
	t   testing.TB
	env []string
}

// NewGPGSM returns a gpgsm whose home trusts ca (trustlist.txt, no CRL
// checks) and holds the keys of certs, imported as PKCS#12 files with the
// legacy PBE that gpgsm 2.2 reads.
func NewGPGSM(t testing.TB, ca *mailsectest.CA, certs ...tls.Certificate) *GPGSM {
	t.Helper()
	Need(t, "gpgsm", "gpgconf", "openssl")
	home := Home(t)
	env := []string{"GNUPGHOME=" + home}
	write := func(name string, data []byte) string {
		p := filepath.Join(home, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fp := sha1.Sum(ca.Certificate.Raw) // the form trustlist.txt uses
	write("trustlist.txt", []byte(strings.ToUpper(hex.EncodeToString(fp[:]))+" S\n"))
	write("gpgsm.conf", []byte("disable-crl-checks\ndisable-dirmngr\n"))
	write("gpg-agent.conf", []byte("allow-loopback-pinentry\n"))
	Must(t, nil, env, "gpgsm", "--batch", "--import", write("ca.pem", ca.CertPEM()))
	for _, c := range certs {
		chain, key, err := mailsectest.PEM(c)
		if err != nil {
			t.Fatal(err)
		}
		crt, keyPath := write("k.crt", chain), write("k.key", key)
		// gpgsm 2.2 now and then fails to parse a PKCS#12 file that openssl
		// wrote (it depends on the random salt); a fresh export imports.
		var r Result
		for range 4 {
			p12 := filepath.Join(home, "k.p12")
			Must(t, nil, nil, "openssl", "pkcs12", "-export", "-in", crt, "-inkey", keyPath, "-out", p12,
				"-passout", "pass:"+p12Passphrase, "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1")
			r = Run([]byte(p12Passphrase+"\n"), env, "gpgsm", "--batch", "--status-fd", "2", "--pinentry-mode", "loopback",
				"--passphrase-fd", "0", "--import", p12)
			if r.Err == nil && strings.Contains(r.Stderr, "IMPORT_OK") {
				break
			}
		}
		if r.Err != nil || !strings.Contains(r.Stderr, "IMPORT_OK") {
			t.Fatalf("gpgsm --import: %v\n%s", r.Err, r.Stderr)
		}
	}
	return &GPGSM{t: t, env: env}
}

// Env is the environment that selects the home, for running gpgsm (or
// gpgconf) directly.
func (g *GPGSM) Env() []string { return g.env }

// Run runs gpgsm in batch mode in its home.
func (g *GPGSM) Run(stdin []byte, args ...string) Result {
	return Run(stdin, g.env, "gpgsm", append([]string{"--batch", "--pinentry-mode", "loopback"}, args...)...)
}

// Decrypt decrypts DER-encoded CMS EnvelopedData with the imported keys
// (whose passphrase, from the PKCS#12 import, goes in on standard input).
func (g *GPGSM) Decrypt(der []byte) string {
	g.t.Helper()
	in := filepath.Join(g.t.TempDir(), "msg.der")
	if err := os.WriteFile(in, der, 0o600); err != nil {
		g.t.Fatal(err)
	}
	r := g.Run([]byte(p12Passphrase+"\n"), "--status-fd", "2", "--passphrase-fd", "0", "--decrypt", in)
	if r.Err != nil || !strings.Contains(r.Stderr, "DECRYPTION_OKAY") {
		g.t.Fatalf("gpgsm --decrypt: %v\n%s", r.Err, r.Stderr)
	}
	return r.Stdout
}

// OpenSSLDecrypt decrypts a whole S/MIME message with "openssl cms" and
// with "openssl smime", checks that both agree, and returns the plaintext.
// cert is the recipient's certificate, key its private key.
func OpenSSLDecrypt(t testing.TB, raw []byte, cert tls.Certificate) string {
	t.Helper()
	Need(t, "openssl")
	dir := t.TempDir()
	chain, key, err := mailsectest.PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string][]byte{"msg.eml": raw, "c.pem": chain, "k.pem": key}
	for name, data := range paths {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	in, crt, k := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	a := Must(t, nil, nil, "openssl", "cms", "-decrypt", "-in", in, "-recip", crt, "-inkey", k)
	b := Must(t, nil, nil, "openssl", "smime", "-decrypt", "-in", in, "-recip", crt, "-inkey", k)
	if a != b {
		t.Fatal("openssl cms and openssl smime disagree")
	}
	return a
}
