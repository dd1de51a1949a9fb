package mailsec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	netmail "net/mail"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-message/mail"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/tooltest"
)

// hardNames are display names that a naive encoder turns into a second
// mailbox, a changed name or a header no parser reads.
var hardNames = []string{
	"Ann Example",
	"Müller, Anna",
	"José,bob@evil.example,y",
	"Smith, John",
	`"Quoted" Name`,
	`back\slash`,
	`a"b\c`,
	" leading space",
	"trailing space ",
	"   ",
	"multiple   spaces",
	"tab\there",
	"\t",
	"Dr. Who",
	"O'Brien",
	"(not a comment)",
	"undisclosed-recipients:;",
	"ann@example.org",
	"@",
	",",
	"a,b;c:d(e)f[g]h@i.j",
	"=?",
	"=?utf-8?q?x",
	"a=?b",
	"?= tail",
	"x =? y",
	"_=_",
	"a_b=c?d",
	"山田 太郎",
	"مرحبا بالعالم",
	"👩\u200d💻 Dev",
	"e\u0301 combining",
	"non\u00a0breaking",
	"c1\u0080control",
	"Müller,\tAnna  Maria ",
	strings.Repeat("a", 66),
	strings.Repeat("a", 67),
	strings.Repeat("b", 63) + ",",
	strings.Repeat("b", 64) + ",",
	strings.Repeat("word ", 50) + "end",
	strings.Repeat("Smith, ", 30) + "John",
	strings.Repeat("é", 128),
	strings.Repeat("🙂", 64),
	strings.Repeat("Grüße, ", 28),
	strings.Repeat("x", 250),
}

// quotedInput writes name as a quoted-string, the way an application that
// builds "Name <addr>" safely would.
func quotedInput(name, addr string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(name) + `" <` + addr + ">"
}

// wantBox is one mailbox as the application gave it.
type wantBox struct{ Name, Address string }

// addressMessage puts name into every address field, beside other
// mailboxes, and returns the message and the mailboxes each field must
// read back as.
func addressMessage(name string) (*mailsec.Message, map[string][]wantBox) {
	m := &mailsec.Message{
		From:    quotedInput(name, "app@example.com"),
		ReplyTo: []string{quotedInput(name, "reply@example.com"), "Help Desk <help@example.com>"},
		To:      []string{quotedInput(name, "ann@example.org"), `"Next, Person" <next@example.org>`},
		Cc:      []string{"cc@example.net", quotedInput(name, "carl@example.net")},
		Subject: "s",
		Text:    "t",
	}
	return m, map[string][]wantBox{
		"From":     {{name, "app@example.com"}},
		"Reply-To": {{name, "reply@example.com"}, {"Help Desk", "help@example.com"}},
		"To":       {{name, "ann@example.org"}, {"Next, Person", "next@example.org"}},
		"Cc":       {{"", "cc@example.net"}, {name, "carl@example.net"}},
	}
}

var addressFields = []string{"From", "Reply-To", "To", "Cc"}

// sendHeader sends m through a recording transport and returns the
// header block of what was delivered, blank line included.
func sendHeader(t testing.TB, m *mailsec.Message) ([]byte, error) {
	t.Helper()
	s, rt := newRecordingSender(t, nil)
	if _, err := s.Send(context.Background(), m); err != nil {
		if len(rt.Deliveries()) != 0 {
			t.Fatalf("refused message delivered: %v", err)
		}
		return nil, err
	}
	data := rt.Deliveries()[0].Data
	i := bytes.Index(data, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no end of header")
	}
	return data[:i+4], nil
}

// rawField returns the field's value as written, folding included.
func rawField(head []byte, name string) (string, bool) {
	lines := strings.SplitAfter(string(head), "\r\n")
	for i, l := range lines {
		v, ok := strings.CutPrefix(l, name+": ")
		if !ok {
			continue
		}
		for _, c := range lines[i+1:] {
			if !strings.HasPrefix(c, " ") && !strings.HasPrefix(c, "\t") {
				break
			}
			v += c
		}
		return strings.TrimSuffix(v, "\r\n"), true
	}
	return "", false
}

func boxesOf(as []*netmail.Address) []wantBox {
	out := make([]wantBox, len(as))
	for i, a := range as {
		out[i] = wantBox{a.Name, a.Address}
	}
	return out
}

var (
	encodedWordRE = regexp.MustCompile(`=\?[^?\s]*\?[^?\s]*\?[^?\s]*\?=`)
	phraseWordRE  = regexp.MustCompile(`^=\?utf-8\?(q\?[A-Za-z0-9!*+\-/=_]*|b\?[A-Za-z0-9+/=]*)\?=$`)
)

// checkAddressHeader checks the address fields of a rendered header
// against want: Go's net/mail reads them back (after RFC 5322 unfolding,
// and through net/textproto's own unfolding in ReadMessage), and so does
// go-message; every encoded-word uses only what RFC 2047 §5(3) allows in
// a phrase and fits its 75 octets; no line with one exceeds 76 octets; no
// quoted-string is folded.
func checkAddressHeader(t testing.TB, head []byte, want map[string][]wantBox) {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(head))
	if err != nil {
		t.Fatalf("net/mail: %v\n%s", err, head)
	}
	gm, err := mail.CreateReader(bytes.NewReader(append(bytes.Clone(head), "body\r\n"...)))
	if err != nil {
		t.Fatalf("go-message: %v\n%s", err, head)
	}
	for _, field := range addressFields {
		w := want[field]
		raw, ok := rawField(head, field)
		if !ok {
			if len(w) > 0 {
				t.Fatalf("no %s field in\n%s", field, head)
			}
			continue
		}
		unfolded := strings.ReplaceAll(raw, "\r\n", "")
		as, err := netmail.ParseAddressList(unfolded)
		if err != nil || !slices.Equal(boxesOf(as), w) {
			t.Fatalf("%s: net/mail reads %q as %+v (%v), want %+v", field, raw, boxesOf(as), err, w)
		}
		as, err = msg.Header.AddressList(field)
		if err != nil || !slices.Equal(boxesOf(as), w) {
			t.Fatalf("%s: net/mail.ReadMessage reads %q as %+v (%v), want %+v", field, raw, boxesOf(as), err, w)
		}
		gas, err := gm.Header.AddressList(field)
		var got []wantBox
		for _, a := range gas {
			got = append(got, wantBox{a.Name, a.Address})
		}
		if err != nil || !slices.Equal(got, w) {
			t.Fatalf("%s: go-message reads %q as %+v (%v), want %+v", field, raw, got, err, w)
		}
		for _, ew := range encodedWordRE.FindAllString(raw, -1) {
			if len(ew) > 75 || !phraseWordRE.MatchString(ew) {
				t.Fatalf("%s: encoded-word %q is longer than 75 octets or holds characters a phrase may not", field, ew)
			}
		}
		for _, q := range quotedStrings(raw) {
			if encodedWordRE.MatchString(q) {
				t.Fatalf("%s: quoted-string %q holds an encoded-word, which Python and mail clients decode", field, q)
			}
		}
		for _, line := range strings.Split(field+": "+raw, "\r\n") {
			if encodedWordRE.MatchString(line) && len(line) > 76 {
				t.Fatalf("%s: line of %d octets with an encoded-word: %q", field, len(line), line)
			}
			if oddQuotes(line) {
				t.Fatalf("%s: a quoted-string is folded: %q", field, raw)
			}
		}
	}
}

// quotedStrings returns the contents of the quoted-strings in v, with
// their quoted-pairs undone.
func quotedStrings(v string) []string {
	var out []string
	var cur strings.Builder
	in := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case in && c == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
		case c == '"':
			if in {
				out = append(out, cur.String())
				cur.Reset()
			}
			in = !in
		case in:
			cur.WriteByte(c)
		}
	}
	return out
}

// oddQuotes reports whether line opens a quoted-string it does not close.
func oddQuotes(line string) bool {
	in := false
	for i := 0; i < len(line); i++ {
		switch {
		case in && line[i] == '\\':
			i++
		case line[i] == '"':
			in = !in
		}
	}
	return in
}

// Every hard display name, in every address field and beside other
// mailboxes, reads back as exactly the mailboxes given, names included.
func TestDisplayNamesRoundTrip(t *testing.T) {
	for _, name := range hardNames {
		t.Run(fmt.Sprintf("%.20q", name), func(t *testing.T) {
			if a, err := netmail.ParseAddress(quotedInput(name, "a@example.org")); err != nil || a.Name != name {
				t.Fatalf("test input %q does not parse to its name: %v", name, err)
			}
			m, want := addressMessage(name)
			head, err := sendHeader(t, m)
			if err != nil {
				t.Fatal(err)
			}
			checkAddressHeader(t, head, want)
		})
	}
}

// The same names, read by Python's email package as a receiving
// application would: email.utils.getaddresses on the values as a compat32
// message gives them (folding kept) and unfolded, with encoded-words
// decoded; and the modern header parser (policy.default). Each must find
// exactly the mailboxes given.
func TestDisplayNamesPython(t *testing.T) {
	const python = "/usr/bin/python3" // Debian's, with the standard email package
	tooltest.Need(t, python)
	var heads []string
	var wants []map[string][]wantBox
	for _, name := range hardNames {
		m, want := addressMessage(name)
		head, err := sendHeader(t, m)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		heads = append(heads, string(head))
		wants = append(wants, want)
	}
	in, err := json.Marshal(heads)
	if err != nil {
		t.Fatal(err)
	}
	r := tooltest.Run(in, nil, python, "-c", pythonAddressScript)
	if r.Err != nil {
		t.Fatalf("python: %v\n%s", r.Err, r.Stderr)
	}
	var got []map[string][][2]string
	if err := json.Unmarshal([]byte(r.Stdout), &got); err != nil || len(got) != len(heads) {
		t.Fatalf("python output: %v\n%s", err, r.Stdout)
	}
	for i, res := range got {
		for _, field := range addressFields {
			var want [][2]string
			for _, b := range wants[i][field] {
				want = append(want, [2]string{b.Name, b.Address})
			}
			for _, mode := range []string{"raw", "unfolded"} {
				if g := res[field+"/"+mode]; !slices.Equal(g, want) {
					t.Errorf("name %q: Python (%s) reads %s as %q, want %q\n%s", hardNames[i], mode, field, g, want, heads[i])
				}
			}
			// Python's modern parser turns every run of whitespace in a
			// decoded encoded-word into one space, and keeps the space
			// between adjacent encoded-words (RFC 2047 §6.2 says to drop
			// it), so its names are compared without whitespace; the
			// mailboxes must still be exactly these.
			g := res[field+"/default"]
			same := len(g) == len(want)
			for j := 0; same && j < len(g); j++ {
				same = g[j][1] == want[j][1] && strings.Join(strings.Fields(g[j][0]), "") == strings.Join(strings.Fields(want[j][0]), "")
			}
			if !same {
				t.Errorf("name %q: Python (policy.default) reads %s as %q, want %q\n%s", hardNames[i], field, g, want, heads[i])
			}
		}
	}
}

// pythonAddressScript reads a JSON list of header blocks and writes, for
// each, the mailboxes of every address field as [name, address] pairs.
const pythonAddressScript = `
import email, email.policy, json, re, sys
from email.header import decode_header, make_header
from email.utils import getaddresses

def decoded(name):
    return str(make_header(decode_header(name)))

out = []
for head in json.load(sys.stdin):
    compat = email.message_from_string(head, policy=email.policy.compat32)
    modern = email.message_from_string(head, policy=email.policy.default)
    res = {}
    for field in ("From", "Reply-To", "To", "Cc"):
        values = compat.get_all(field) or []
        unfolded = [re.sub(r"\r?\n(?=[ \t])", "", v) for v in values]
        res[field + "/raw"] = [[decoded(n), a] for n, a in getaddresses(values)]
        res[field + "/unfolded"] = [[decoded(n), a] for n, a in getaddresses(unfolded)]
        h = modern[field]
        res[field + "/default"] = [[a.display_name, a.addr_spec] for a in h.addresses] if h is not None else []
    out.append(res)
json.dump(out, sys.stdout)
`

// FuzzAddressHeaders renders display names through the real builder in
// From, To, Cc and Reply-To, and requires every message the builder
// accepts to read back, through net/mail and go-message, as exactly the
// mailboxes given, names included.
func FuzzAddressHeaders(f *testing.F) {
	f.Add("Müller, Anna", "José,bob@evil.example,y", "Smith, John", " lead  trail ", "ann")
	f.Add(`"q" \b`, "=?utf-8?q?x", "a\tb", strings.Repeat("é,", 60), "jöhn")
	f.Add(strings.Repeat("word ", 40), "(c) x", "undisclosed-recipients:;", "@,:;", "x.y")
	f.Add("=?utf-8?q?x", "a =?b", `"=\?utf-8?q?x?="`, "?= =?", "z")
	f.Fuzz(func(t *testing.T, fromName, toName, ccRaw, replyName, local string) {
		m := &mailsec.Message{
			From:    quotedInput(fromName, "app@example.com"),
			To:      []string{quotedInput(toName, local+"@example.org"), "next@example.org"},
			Cc:      []string{ccRaw + " <cc@example.net>"},
			ReplyTo: []string{quotedInput(replyName, "reply@example.com"), quotedInput(toName, "r2@example.com")},
			Subject: "s",
			Text:    "t",
		}
		head, err := sendHeader(t, m)
		if err != nil {
			if !errors.Is(err, mailsec.ErrInvalid) {
				t.Fatalf("refused with %v, not a validation error", err)
			}
			return
		}
		// What the application gave, read the way the builder reads it.
		given := func(s string) wantBox {
			a, err := netmail.ParseAddress(s)
			if err != nil {
				t.Fatalf("builder accepted %q, which net/mail refuses: %v", s, err)
			}
			return wantBox{a.Name, a.Address}
		}
		want := map[string][]wantBox{
			"From":     {given(m.From)},
			"To":       {given(m.To[0]), {"", "next@example.org"}},
			"Cc":       {given(m.Cc[0])},
			"Reply-To": {given(m.ReplyTo[0]), given(m.ReplyTo[1])},
		}
		checkAddressHeader(t, head, want)
	})
}

// A signing Protector reads the author back from the From field the
// builder wrote: a display name with a comma no longer stops it.
func TestSignerReadsDisplayNameWithSpecials(t *testing.T) {
	s, rt := newRecordingSender(t, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{&authorProtector{}},
	})
	m := base()
	m.From = `"Müller, Anna" <app@example.com>`
	m.Sender = `"Mailer, The (bot)" <bot@example.com>`
	if _, err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n := len(rt.Deliveries()); n != 1 {
		t.Fatalf("%d deliveries", n)
	}
}

// authorProtector protects nothing; it fails unless the entity's From and
// Sender parse as one mailbox each, as pgp and smime need to check their
// signer.
type authorProtector struct{}

func (authorProtector) Method() string { return "fake" }

func (authorProtector) Protect(_ context.Context, e *mailsec.Entity, rcpts []string) (*mailsec.Protected, error) {
	for _, field := range []string{"From", "Sender"} {
		a, err := netmail.ParseAddress(e.Header.Get(field))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if want := map[string]string{"From": "Müller, Anna", "Sender": "Mailer, The (bot)"}[field]; a.Name != want {
			return nil, fmt.Errorf("%s name %q, want %q", field, a.Name, want)
		}
	}
	fps := map[string]string{}
	for _, r := range rcpts {
		fps[r] = "fp"
	}
	return &mailsec.Protected{Entity: e, Fingerprints: fps}, nil
}

// Encoded-word syntax in a display name is refused however the input
// spells it. Escaped with quoted-pairs ("=\?...?="), it passes a check on
// the raw text, and net/mail hands back the bare encoded-word as the
// name; written as a quoted-string, it is decoded by Python's email
// package and by mail clients into another name ("Bank <sec@bank.example>")
// or a line break, while net/mail reads the literal text. In a comment
// after the address, net/mail decodes it into the name itself.
func TestDisplayNameEscapedEncodedWordRefused(t *testing.T) {
	names := []string{
		`"=\?utf-8?b?QmFuayA8c2VjQGJhbmsuZXhhbXBsZT4=?="`,
		`"=?utf-8?b?QmFuayA8c2VjQGJhbmsuZXhhbXBsZT4=?\="`,
		`"=\?utf-8?q?x=0D=0ABcc:_evil@evil.example?="`,
		`"a \=\?iso-8859-1?q?=E9?\= b"`,
	}
	for _, name := range names {
		for _, field := range []string{"From", "Sender", "ReplyTo[0]", "To[0]", "Cc[0]", "Bcc[0]"} {
			m := base()
			set := func(addr string) string { return name + " <" + addr + ">" }
			switch field {
			case "From":
				m.From = set("app@example.com")
			case "Sender":
				m.Sender = set("bot@example.com")
			case "ReplyTo[0]":
				m.ReplyTo = []string{set("reply@example.com")}
			case "To[0]":
				m.To = []string{set("ann@example.org")}
			case "Cc[0]":
				m.Cc = []string{set("carl@example.org")}
			case "Bcc[0]":
				m.Bcc = []string{set("dan@example.org")}
			}
			s, rt := newRecordingSender(t, nil)
			_, err := s.Send(context.Background(), m)
			var ve *mailsec.ValidationError
			if !errors.As(err, &ve) || ve.Field != field {
				t.Errorf("%s %s: err = %v, want a ValidationError for the field", field, name, err)
			}
			if n := len(rt.Deliveries()); n != 0 {
				t.Errorf("%s %s: %d deliveries", field, name, n)
			}
		}
	}
	// The comment form: net/mail takes the comment as the display name
	// and decodes it.
	m := base()
	m.To = []string{`ann@example.org (=\?utf-8?q?Bank_Security?=)`}
	s, rt := newRecordingSender(t, nil)
	var ve *mailsec.ValidationError
	if _, err := s.Send(context.Background(), m); !errors.As(err, &ve) || ve.Field != "To[0]" || len(rt.Deliveries()) != 0 {
		t.Errorf("comment: err = %v, %d deliveries", err, len(rt.Deliveries()))
	}
}
