package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/outbox"
)

// What may be a key is found anywhere in an argument, also glued to
// other base64; a message ID, a word, a shorter base64 value and a key's
// unpadded form typed as such are not taken for one (ParseKeys wants the
// padding). Each key found is redacted padded and unpadded.
func TestSecretsIn(t *testing.T) {
	k := outbox.NewKey().Base64()
	for _, c := range []struct {
		arg  string
		want int
	}{
		{k, 1},
		{"-x=" + k, 1},
		{"-k" + k, 1},
		{"/tmp/x/" + k, 1},
		{k + "," + k + ",", 2},
		{outboxKeyEnv + "=" + k, 1},
		{"a4mvswdqzeo3cgyq3ceqf2qj6y", 0}, // a message ID
		{"abcdefghijklmnopqrstuvwxyz", 0},
		{"dGhpcyBpcyBhIHRva2VuIQ==", 0}, // 16 octets
		{strings.TrimRight(k, "="), 0},
	} {
		if got := len(secretsIn([]string{c.arg}, "")); got != 2*c.want {
			t.Errorf("secretsIn(%q) found %d, want %d", c.arg, got/2, c.want)
		}
	}
	if got := len(secretsIn(nil, k)); got != 2 {
		t.Errorf("the key variable's value: found %d, want 1", got/2)
	}
	var b bytes.Buffer
	w := redacting(&b, secretsIn([]string{k}, ""))
	if n, err := w.Write([]byte("bad: " + k + "\n")); err != nil || n != len(k)+6 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := w.Write([]byte("unknown flag -" + strings.TrimRight(k, "=") + "\n")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), strings.TrimRight(k, "=")) || strings.Count(b.String(), keyNotShown) != 2 {
		t.Errorf("redacted: %q", b.String())
	}
}

// A key glued to other base64 in front (a flag typed without its space
// or '=', a path) is not printed, padded or not (the flag package cuts a
// name at '=').
func TestKeyGluedToArgumentNotPrinted(t *testing.T) {
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, _ := queueEnv(t)
	k := outbox.NewKey().Base64()
	for _, args := range [][]string{
		{"queue", "list", "-db", db, "-k" + k},
		{"queue", "list", "-db", db, "-" + k},
		{"queue", "list", "-db", "/tmp/x/" + k},
		{"queue", "list", "-db", db, "-limit=x" + k},
	} {
		r := runCmd(t, "", environ, args...)
		if bare := strings.TrimRight(k, "="); strings.Contains(r.stderr, bare) || strings.Contains(r.stdout, bare) {
			t.Errorf("mailsec %q: the key is printed:\n%s", args, r.stderr)
		}
	}
}

// A recipient whose local part carries a padded base64 tag (a reply
// token) shorter than a key is shown as it is.
func TestShortBase64NotReplaced(t *testing.T) {
	db := filepath.Join(t.TempDir(), "mail.db")
	environ, _ := queueEnv(t)
	to := "reply.dGhpcyBpcyBhIHRva2VuIQ==@example.org"
	r := runCmd(t, "body\n", environ, "send", "-queue", db, "-json", "-from", "noreply@example.com", "-subject", "x", "-body", "-", "-to", to)
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, to) {
		t.Errorf("send -json does not show the recipient %s:\n%s", to, r.stdout)
	}
}
