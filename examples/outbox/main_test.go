package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec/outbox"
)

// The example runs as "go run ./examples/outbox" would: the message is
// delivered, and the printed Status says so.
func TestExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out, func(string) string { return "" }); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	_, after, ok := strings.Cut(s, "Status:\n")
	if !ok {
		t.Fatalf("no status printed:\n%s", s)
	}
	js, _, _ := strings.Cut(after, "\nDelivered")
	var st outbox.Status
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatalf("the printed status does not parse: %v\n%s", err, s)
	}
	if st.State != outbox.Delivered || len(st.Attempts) != 1 || st.Attempts[0].Receipt == nil ||
		!st.Attempts[0].Receipt.Recipients[0].Accepted || !st.Sealed || time.Since(st.Finished) > time.Minute {
		t.Errorf("status: %+v", st)
	}
	if !strings.Contains(s, "the server received 1 message(s)") {
		t.Errorf("output:\n%s", s)
	}
}

// A key from MAILSEC_OUTBOX_KEY is used; a malformed one stops the example.
func TestExampleKeyFromEnvironment(t *testing.T) {
	k := outbox.NewKey()
	var out bytes.Buffer
	if err := run(t.Context(), &out, func(string) string { return k.Base64() }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"key_id": "`+k.ID()+`"`) {
		t.Errorf("the status does not name the key from the environment:\n%s", out.String())
	}
	if err := run(t.Context(), &out, func(string) string { return "not-a-key" }); err == nil {
		t.Error("a malformed MAILSEC_OUTBOX_KEY was accepted")
	}
}
