package mailsec

import "testing"

// The queue identifier is read from the reply to the end of DATA in the
// forms Postfix, Exim and others use, and nothing is made up otherwise.
func TestQueueID(t *testing.T) {
	for text, want := range map[string]string{
		"Ok: queued as 4ZxY7b2kQz":                 "4ZxY7b2kQz",
		"OK id=1tNxyz-0004Ab-2C":                   "1tNxyz-0004Ab-2C",
		"Ok: queued as <abc.def@host>":             "abc.def@host",
		"Message accepted for delivery":            "",
		"2.0.0 OK 1700000000 x1si12345.12 - gsmtp": "",
	} {
		if got := queueID(text); got != want {
			t.Errorf("queueID(%q) = %q, want %q", text, got, want)
		}
	}
}
