package dkimsign_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/mailsec/mailsec/dkimsign"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, s := range signers(t, "example.com") {
		r, err := dkimsign.ParseRecord(s.Record())
		if err != nil {
			t.Fatalf("%s: %v", s.Record(), err)
		}
		if r.Algorithm != s.Algorithm() || (r.Algorithm == "rsa") != (r.Bits == 2048) {
			t.Errorf("%s: read as %+v", s.Record(), r)
		}
		line := s.ZoneLine()
		if !strings.HasPrefix(line, s.Selector()+"._domainkey.example.com. IN TXT \"v=DKIM1; k=") || strings.Contains(line, "\n") {
			t.Errorf("zone line %q", line)
		}
		// Joined back, the character-strings are the record.
		_, quoted, _ := strings.Cut(line, " IN TXT ")
		joined := strings.ReplaceAll(strings.Trim(quoted, `"`), `" "`, "")
		if joined != s.Record() {
			t.Errorf("zone line %q does not join back to %q", line, s.Record())
		}
		for _, part := range strings.Split(quoted, `" "`) {
			if len(strings.Trim(part, `"`)) > 255 {
				t.Errorf("a character-string longer than 255 octets in %q", line)
			}
		}
	}
}

func TestRecordProblems(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&weak.PublicKey)
	for _, rec := range []string{
		"v=DKIM1; k=rsa; p=",
		"v=DKIM1; k=rsa",
		"k=rsa; v=DKIM1; p=AAAA",
		"v=DKIM2; p=AAAA",
		"v=DKIM1; k=ed25519; p=AAAA",
		"v=DKIM1; k=dsa; p=AAAA",
		"v=DKIM1; k=rsa; p=!!!",
		"v=DKIM1; h=sha1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der),
	} {
		if _, err := dkimsign.ParseRecord(rec); !errors.Is(err, dkimsign.ErrRecord) {
			t.Errorf("%q: %v, want ErrRecord", rec, err)
		}
	}
}
