package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/outbox"
)

// What may be a key is found anywhere in an argument; a message ID, a
// word, a short base64 value and a key's unpadded form are not taken for
// one (ParseKeys wants the padding).
func TestSecretsIn(t *testing.T) {
	k := outbox.NewKey().Base64()
	for _, c := range []struct {
		arg  string
		want int
	}{
		{k, 1},
		{"-x=" + k, 1},
		{k + "," + k + ",", 2},
		{outboxKeyEnv + "=" + k, 1},
		{"a4mvswdqzeo3cgyq3ceqf2qj6y", 0}, // a message ID
		{"abcdefghijklmnopqrstuvwxyz", 0},
		{"c2hvcnQ=", 0},
		{strings.TrimRight(k, "="), 0},
	} {
		if got := len(secretsIn([]string{c.arg}, "")); got != c.want {
			t.Errorf("secretsIn(%q) found %d, want %d", c.arg, got, c.want)
		}
	}
	if got := len(secretsIn(nil, k)); got != 1 {
		t.Errorf("the key variable's value: found %d, want 1", got)
	}
	var b bytes.Buffer
	w := redacting(&b, secretsIn([]string{k}, ""))
	if n, err := w.Write([]byte("bad: " + k + "\n")); err != nil || n != len(k)+6 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if strings.Contains(b.String(), k) || !strings.Contains(b.String(), keyNotShown) {
		t.Errorf("redacted: %q", b.String())
	}
}
