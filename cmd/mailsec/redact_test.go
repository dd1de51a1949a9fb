package main

import (
	"bytes"
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
