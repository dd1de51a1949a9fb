package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/outbox"
)

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
