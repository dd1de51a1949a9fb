package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/internal/tooltest"
	"github.com/mailsec/mailsec/mailsectest"
)

// gpgKeys are public keys gpg made, one file each.
type gpgKeys struct {
	fine, expired, revoked, des, expiring, signOnly string // file names
	both                                            string // fine and expired in one file
	fineFpr                                         string
}

// makeGPGKeys has gpg make the keys keys check reads, dated an hour ago
// so that no signature gpg makes is dated after the check.
func makeGPGKeys(t *testing.T) gpgKeys {
	t.Helper()
	g := tooltest.NewGPG(t)
	// gpg's faked clock runs on from the time given, so a key may be dated
	// a second or more after it: what changes a key is done a minute
	// later, lest gpg find the key made in its future.
	hourAgo := time.Now().Add(-time.Hour)
	epoch := func(at time.Time) string { return fmt.Sprint(at.Unix()) }
	gen := func(at time.Time, uid, expiry string) string {
		g.Must(nil, "--faked-system-time", epoch(at), "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", expiry)
		fpr := gpgFpr(t, g, uid)
		g.Must(nil, "--faked-system-time", epoch(at.Add(time.Minute)), "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", expiry)
		return fpr
	}
	dir := t.TempDir()
	export := func(name string, uids ...string) string {
		p := filepath.Join(dir, name)
		out := g.Must(nil, append([]string{"--armor", "--export"}, uids...)...)
		if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var k gpgKeys
	k.fineFpr = gen(hourAgo, "Ann <ann@example.org>", "never")
	// Made 20 days ago, valid for 5.
	gen(time.Now().Add(-20*24*time.Hour), "Bob <bob@example.org>", "5d")
	revFpr := gen(hourAgo, "Carl <carl@example.org>", "never")
	rev, err := os.ReadFile(filepath.Join(g.Home, "openpgp-revocs.d", revFpr+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	g.Must(bytes.Replace(rev, []byte(":-----BEGIN"), []byte("-----BEGIN"), 1), "--import")
	desFpr := gen(hourAgo, "Dan <dan@example.org>", "never")
	g.Must([]byte("setpref S2 H8 Z0\ny\nsave\n"), "--faked-system-time", epoch(hourAgo.Add(2*time.Minute)), "--command-fd", "0", "--edit-key", desFpr)
	gen(hourAgo, "Eve <eve@example.org>", "10d")
	g.Must(nil, "--faked-system-time", epoch(hourAgo), "--passphrase", "", "--quick-gen-key", "Fay <fay@example.org>", "ed25519", "sign", "never")
	k.fine = export("ann.asc", "ann@example.org")
	k.expired = export("bob.asc", "bob@example.org")
	k.revoked = export("carl.asc", "carl@example.org")
	k.des = export("dan.asc", "dan@example.org")
	k.expiring = export("eve.asc", "eve@example.org")
	k.signOnly = export("fay.asc", "fay@example.org")
	k.both = export("both.asc", "ann@example.org", "bob@example.org")
	return k
}

func gpgFpr(t *testing.T, g *tooltest.GPG, uid string) string {
	t.Helper()
	for l := range strings.Lines(g.Must(nil, "--with-colons", "--list-keys", uid)) {
		if strings.HasPrefix(l, "fpr:") {
			return strings.Split(l, ":")[9]
		}
	}
	t.Fatalf("no fingerprint for %s", uid)
	return ""
}

func keyReports(t *testing.T, r result) []keyReport {
	t.Helper()
	var out []keyReport
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("-json output: %v\n%s", err, r.stdout)
	}
	return out
}

// Each gpg key gets the verdict sending would give it: a fine key and a
// key that prefers only 3DES (encrypted to with AES-128) pass, an expired
// one, a revoked one and one expiring within -within do not, and the
// exit status says whether any failed.
func TestKeysCheckGPG(t *testing.T) {
	k := makeGPGKeys(t)
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		problem string // of the only key; "" for fine
		note    string
	}{
		{name: "fine", args: []string{k.fine}, code: 0},
		{name: "fine for its address", args: []string{k.fine, "-address", "ann@example.org"}, code: 0},
		{name: "fine key, other address", args: []string{"-address", "zoe@example.org", k.fine}, code: 1, problem: "wrong-address"},
		{name: "expired", args: []string{k.expired}, code: 1, problem: "expired"},
		{name: "revoked", args: []string{k.revoked}, code: 1, problem: "revoked"},
		{name: "no encryption subkey", args: []string{k.signOnly}, code: 1, problem: "no-encryption-subkey"},
		{name: "3des only", args: []string{k.des}, code: 0, note: "prefers no AES cipher (3DES)"},
		{name: "expiring", args: []string{k.expiring}, code: 1, problem: "expires-soon", note: "key expires in "},
		{name: "expiring, shorter window", args: []string{k.expiring, "-within", "5d"}, code: 0},
		{name: "expiring, no window", args: []string{k.expiring, "-within", "0"}, code: 0},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			r := runCmd(t, "", nil, append([]string{"keys", "check", "-json"}, tc.args...)...)
			wantCode(t, r, tc.code)
			reps := keyReports(t, r)
			if len(reps) != 1 {
				t.Fatalf("%d reports, want 1", len(reps))
			}
			rep := reps[0]
			if rep.Problem != tc.problem || rep.OK != (tc.problem == "") {
				t.Fatalf("problem %q (ok %v), want %q", rep.Problem, rep.OK, tc.problem)
			}
			if tc.note != "" && !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, tc.note) }) {
				t.Errorf("notes %q, want one containing %q", rep.Notes, tc.note)
			}
			if rep.Kind != "openpgp" || len(rep.Fingerprint) != 40 || len(rep.Addresses) != 1 {
				t.Errorf("report %+v", rep)
			}
		})
	}

	// Both keys of one file are listed, with fingerprint, address and
	// expiry, and one bad key makes the status 1.
	r := runCmd(t, "", nil, "keys", "check", k.both)
	wantCode(t, r, 1)
	blocks := strings.Split(strings.TrimSpace(r.stdout), "\n\n")
	if len(blocks) != 2 {
		t.Fatalf("%d reports, want 2:\n%s", len(blocks), r.stdout)
	}
	wantFine := k.both + ": OpenPGP key " + k.fineFpr + ": ok\n  addresses: ann@example.org\n  expires:   never"
	if !slices.Contains(blocks, wantFine) {
		t.Errorf("no report\n%s\nin\n%s", wantFine, r.stdout)
	}
	var expired string
	for _, b := range blocks {
		if strings.Contains(b, "bob@example.org") {
			expired = b
		}
	}
	if !strings.Contains(expired, ": EXPIRED\n") || !strings.Contains(expired, "\n  expired:   "+time.Now().Add(-15*24*time.Hour).UTC().Format(time.DateOnly)) {
		t.Errorf("expired key's report:\n%s", expired)
	}
	if !strings.Contains(r.stderr, "1 of 2 keys and certificates have a problem") {
		t.Errorf("stderr %q", r.stderr)
	}

	// Several files: all fine.
	r = runCmd(t, "", nil, "keys", "check", k.fine, k.des, "-within", "30d")
	wantCode(t, r, 0)
	if strings.Count(r.stdout, ": ok\n") != 2 {
		t.Errorf("want two fine keys:\n%s", r.stdout)
	}
}

// S/MIME certificates, from mailsectest.CA and from openssl signing with
// the same CA, get CheckCertificate's verdict.
func TestKeysCheckSMIME(t *testing.T) {
	tooltest.Need(t, "openssl")
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPEM, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	issue := func(name string, o mailsectest.SMIMEOptions) (string, string) {
		c, err := ca.IssueSMIME(o)
		if err != nil {
			t.Fatal(err)
		}
		chain, _, err := mailsectest.PEM(c)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, chain, 0o600); err != nil {
			t.Fatal(err)
		}
		return p, mailsectestFingerprint(c.Certificate[0])
	}
	fine, fineFpr := issue("ann.pem", mailsectest.SMIMEOptions{Email: "ann@example.org", NotAfter: time.Now().Add(400 * 24 * time.Hour)})
	expired, _ := issue("bob.pem", mailsectest.SMIMEOptions{Email: "bob@example.org",
		NotBefore: time.Now().Add(-60 * 24 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	weak, _ := issue("carl.pem", mailsectest.SMIMEOptions{Email: "carl@example.org", RSABits: 1024, NotAfter: time.Now().Add(400 * 24 * time.Hour)})

	// openssl: a key and a certificate for dan@example.org, valid for 20
	// days, signed with the test CA's key.
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	caKey := filepath.Join(dir, "ca.key")
	if err := os.WriteFile(caKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: caKeyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "ext.cnf")
	if err := os.WriteFile(ext, []byte("keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:dan@example.org\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	csr, danKey, dan := filepath.Join(dir, "dan.csr"), filepath.Join(dir, "dan.key"), filepath.Join(dir, "dan.der")
	tooltest.Must(t, nil, nil, "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", danKey, "-subj", "/CN=Dan", "-out", csr)
	tooltest.Must(t, nil, nil, "openssl", "x509", "-req", "-in", csr, "-CA", caPEM, "-CAkey", caKey, "-days", "20",
		"-extfile", ext, "-outform", "DER", "-out", dan)

	// The fine certificate and its CA as a DER PKCS#7 bundle (.p7c).
	p7c := filepath.Join(dir, "ann.p7c")
	tooltest.Must(t, nil, nil, "openssl", "crl2pkcs7", "-nocrl", "-certfile", fine, "-outform", "DER", "-out", p7c)

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		problem string
	}{
		{name: "fine", args: []string{fine, "-ca", caPEM}, code: 0},
		{name: "pkcs7 bundle", args: []string{p7c, "-ca", caPEM}, code: 0},
		{name: "only a CA", args: []string{caPEM, "-ca", caPEM}, code: 1, problem: "unusable"},
		{name: "fine for its address", args: []string{fine, "-ca", caPEM, "-address", "ann@example.org"}, code: 0},
		{name: "other address", args: []string{fine, "-ca", caPEM, "-address", "zoe@example.org"}, code: 1, problem: "wrong-address"},
		{name: "untrusted", args: []string{fine}, code: 1, problem: "untrusted"},
		{name: "expired", args: []string{expired, "-ca", caPEM}, code: 1, problem: "expired"},
		{name: "weak", args: []string{weak, "-ca", caPEM}, code: 1, problem: "weak-algorithm"},
		{name: "openssl DER, expiring", args: []string{dan, "-ca", caPEM}, code: 1, problem: "expires-soon"},
		{name: "openssl DER, shorter window", args: []string{dan, "-ca", caPEM, "-within", "10d"}, code: 0},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			r := runCmd(t, "", nil, append([]string{"keys", "check", "-json"}, tc.args...)...)
			wantCode(t, r, tc.code)
			reps := keyReports(t, r)
			if len(reps) != 1 {
				t.Fatalf("%d reports, want 1", len(reps))
			}
			rep := reps[0]
			if rep.Problem != tc.problem || rep.OK != (tc.problem == "") {
				t.Fatalf("problem %q (ok %v), want %q", rep.Problem, rep.OK, tc.problem)
			}
			if tc.problem == "unusable" {
				return
			}
			if rep.Kind != "smime" || len(rep.Fingerprint) != 64 || len(rep.Addresses) != 1 || rep.Expires == nil {
				t.Errorf("report %+v", rep)
			}
		})
	}

	r := runCmd(t, "", nil, "keys", "check", "-ca", caPEM, fine)
	wantCode(t, r, 0)
	want := fine + ": S/MIME certificate " + fineFpr + ": ok\n"
	if !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stdout, "\n  addresses: ann@example.org\n") {
		t.Errorf("stdout\n%s\nwant it to start with\n%s", r.stdout, want)
	}
}

// mailsectestFingerprint is the hex SHA-256 of a certificate's DER, as
// Receipts record it.
func mailsectestFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Bad command lines are usage errors (2); a file with neither keys nor
// certificates is a problem (1).
func TestKeysCheckUsage(t *testing.T) {
	junk := writeFile(t, "junk.txt", []byte("not a key\n"))
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"keys"}, 2, "no subcommand"},
		{[]string{"keys", "list"}, 2, `unknown subcommand "list"`},
		{[]string{"keys", "check"}, 2, "no FILE"},
		{[]string{"keys", "check", filepath.Join(t.TempDir(), "missing.asc")}, 2, "no such file"},
		{[]string{"keys", "check", junk, "-within", "-3d"}, 2, "-within"},
		{[]string{"keys", "check", junk, "-within", "soon"}, 2, "-within"},
		{[]string{"keys", "check", junk, "-address", "Ann <ann@example.org>"}, 2, "-address"},
		{[]string{"keys", "check", junk, "-ca", junk}, 2, "-ca"},
		{[]string{"keys", "check", junk, "-bogus"}, 2, "-bogus"},
		{[]string{"keys", "check", junk}, 1, "1 of 1"},
	} {
		r := runCmd(t, "", nil, tc.args...)
		wantCode(t, r, tc.code)
		if !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: stderr %q, want %q", tc.args, r.stderr, tc.msg)
		}
		if tc.code == 2 && r.stdout != "" {
			t.Errorf("%v: stdout %q on a usage error", tc.args, r.stdout)
		}
	}
	r := runCmd(t, "", nil, "keys", "check", junk, "-json")
	wantCode(t, r, 1)
	if reps := keyReports(t, r); len(reps) != 1 || reps[0].Problem != "unreadable" || reps[0].OK {
		t.Errorf("reports %+v", reps)
	}
}

// A check that cannot run (the context is cancelled: interrupted) exits
// 3, and reports no verdict.
func TestKeysCheckInterrupted(t *testing.T) {
	k, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := mailsectest.ArmorPublic(k)
	if err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "ann.asc", []byte(pub))
	wantCode(t, runCmd(t, "", nil, "keys", "check", file), 0)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := runCtx(t, ctx, "", nil, "keys", "check", file)
	wantCode(t, r, 3)
	if r.stdout != "" || !strings.Contains(r.stderr, "context canceled") {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// With -revocation the OCSP responder and CRLs of an S/MIME certificate
// ("openssl ocsp" and CRLs from "openssl ca" on loopback) are asked: a
// good certificate passes, a revoked one is a problem (1), one whose
// status cannot be established is reported as such and exits 3, unless
// another certificate has a definite problem (1). Without -revocation
// nothing is asked; without -allow-private loopback is not fetched from,
// which fails closed.
func TestKeysCheckRevocation(t *testing.T) {
	p := tooltest.NewPKI(t, tooltest.PKIOptions{Leaves: []tooltest.PKILeaf{
		{Email: "good@example.org"},
		{Email: "revoked@example.org", Revoked: true},
		{Email: "down@example.org", OCSPURL: tooltest.DeadURL(t), CRLURL: tooltest.DeadURL(t)},
		// Sending refuses these two: their status cannot be established.
		{Email: "silent@example.org", OCSPURL: "-", CRLURL: "-"},
		{Email: "ldap@example.org", OCSPURL: "-", CRLURL: "ldap://ldap.example.org/cn=CA?certificateRevocationList"},
	}})
	ca := writeFile(t, "root.pem", p.Root.CertPEM())
	file := func(email string) string {
		chain, _, err := mailsectest.PEM(p.Leaf(email))
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, strings.Split(email, "@")[0]+".pem", chain)
	}
	good, revoked, down := file("good@example.org"), file("revoked@example.org"), file("down@example.org")
	silent, ldap := file("silent@example.org"), file("ldap@example.org")
	// The PKI's certificates are valid for a day: -within 0.
	rev := []string{"-ca", ca, "-within", "0", "-revocation", "-allow-private"}

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		problems []string
		asked    bool
	}{
		{"good", append([]string{good}, rev...), 0, []string{""}, true},
		{"revoked", append([]string{revoked}, rev...), 1, []string{"revoked"}, true},
		{"responder down", append([]string{down}, rev...), 3, []string{"revocation-unknown"}, false},
		{"good and down", append([]string{good, down}, rev...), 3, []string{"", "revocation-unknown"}, true},
		{"revoked and down", append([]string{revoked, down}, rev...), 1, []string{"revoked", "revocation-unknown"}, true},
		{"no responder and no CRL", append([]string{silent}, rev...), 3, []string{"revocation-unknown"}, false},
		{"an LDAP CRL only", append([]string{ldap}, rev...), 3, []string{"revocation-unknown"}, false},
		{"good and no responder", append([]string{good, silent}, rev...), 3, []string{"", "revocation-unknown"}, true},
		{"loopback refused", []string{good, "-ca", ca, "-within", "0", "-revocation"}, 3, []string{"revocation-unknown"}, false},
		{"revoked, not asked", []string{revoked, "-ca", ca, "-within", "0"}, 0, []string{""}, false},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			ocsp0, crl0 := p.Hits()
			r := runCmd(t, "", nil, append([]string{"keys", "check", "-json"}, tc.args...)...)
			wantCode(t, r, tc.code)
			reps := keyReports(t, r)
			if len(reps) != len(tc.problems) {
				t.Fatalf("%d reports, want %d", len(reps), len(tc.problems))
			}
			for i, rep := range reps {
				if rep.Problem != tc.problems[i] || rep.OK != (tc.problems[i] == "") {
					t.Errorf("report %d: problem %q (ok %v), want %q: %s", i, rep.Problem, rep.OK, tc.problems[i], rep.Reason)
				}
				if rep.Problem == "revocation-unknown" && !strings.Contains(rep.Reason, "revocation status unavailable") {
					t.Errorf("report %d: reason %q", i, rep.Reason)
				}
				if rep.OK && tc.asked && !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.HasPrefix(n, "certificate status good (OCSP") }) {
					t.Errorf("report %d: notes %q", i, rep.Notes)
				}
			}
			if ocsp1, crl1 := p.Hits(); (ocsp1+crl1 > ocsp0+crl0) != tc.asked {
				t.Errorf("responder and CRLs asked %d times, want asked %v", ocsp1+crl1-ocsp0-crl0, tc.asked)
			}
			if tc.code == 3 && !strings.Contains(r.stderr, "could not check the revocation status") {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}

	r := runCmd(t, "", nil, append([]string{"keys", "check", down}, rev...)...)
	wantCode(t, r, 3)
	if !strings.Contains(r.stdout, ": REVOCATION UNKNOWN\n") || !strings.Contains(r.stdout, "  problem:   revocation status unavailable") {
		t.Errorf("stdout\n%s", r.stdout)
	}
	r = runCmd(t, "", nil, "keys", "check", good, "-allow-private")
	wantCode(t, r, 2)
	if !strings.Contains(r.stderr, "-allow-private needs -revocation") {
		t.Errorf("stderr %q", r.stderr)
	}
}
