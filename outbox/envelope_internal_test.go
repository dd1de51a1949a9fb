package outbox

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
)

func envelopeSample() *storedMessage {
	return &storedMessage{
		From: "App <app@example.com>", To: []string{"ann@example.org"}, Bcc: []string{"carl@example.org"},
		Subject: "Statement", Text: strings.Repeat("line \"quoted\" \\ ünïcode\n", 400), HTML: "<p>\x00 h</p>",
		Headers:     []mailsec.Header{{Name: "X-Entity-Ref-ID", Value: "1"}},
		Attachments: []storedAttachment{{Filename: "a.pdf", ContentType: "application/pdf", Size: 70000, Chunks: 2, Part: 0}},
		Date:        time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), MessageID: "id@example.com",
	}
}

// The binary form gives back what was stored, bodies included, and an
// envelope the outbox stored as JSON (before the binary form) still opens.
func TestEnvelopeForms(t *testing.T) {
	sm := envelopeSample()
	b, err := encodeEnvelope(sm)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != envelopeBinary || bytes.Contains(b, []byte(`"text"`)) {
		t.Fatalf("not the binary form: %q", b[:min(len(b), 40)])
	}
	got, err := decodeEnvelope(b)
	if err != nil || !reflect.DeepEqual(got, sm) {
		t.Fatalf("binary form: %v\n%+v\nwant\n%+v", err, got, sm)
	}
	legacy, err := json.Marshal(sm)
	if err != nil {
		t.Fatal(err)
	}
	got, err = decodeEnvelope(legacy)
	if err != nil || !reflect.DeepEqual(got, sm) {
		t.Fatalf("JSON form: %v", err)
	}
	empty, err := encodeEnvelope(&storedMessage{From: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeEnvelope(empty); err != nil || got.Text != "" || got.HTML != "" || got.From != "a@example.com" {
		t.Fatalf("no bodies: %v %+v", err, got)
	}
}

// Anything else is refused: the opened value was not written by the
// outbox (it never is: it is sealed; a defence in depth all the same).
func TestEnvelopeRefusesMalformed(t *testing.T) {
	good, err := encodeEnvelope(envelopeSample())
	if err != nil {
		t.Fatal(err)
	}
	field := func(parts ...[]byte) []byte {
		b := []byte{envelopeBinary}
		for _, p := range parts {
			b = binary.AppendUvarint(b, uint64(len(p)))
			b = append(b, p...)
		}
		return b
	}
	huge := binary.AppendUvarint([]byte{envelopeBinary}, 1<<62)
	cases := map[string][]byte{
		"empty":             nil,
		"unknown form":      append([]byte{0x02}, good[1:]...),
		"truncated":         good[:len(good)-1],
		"trailing octets":   append(append([]byte{}, good...), 0),
		"length past end":   huge,
		"two fields":        field([]byte(`{}`), []byte("t")),
		"text in metadata":  field([]byte(`{"text":"x"}`), nil, nil),
		"html in metadata":  field([]byte(`{"html":"x"}`), nil, nil),
		"metadata not JSON": field([]byte(`{`), nil, nil),
		"JSON not closed":   []byte(`{"from":"a"`),
		"bad varint":        {envelopeBinary, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range cases {
		if sm, err := decodeEnvelope(b); err == nil {
			t.Errorf("%s: decoded as %+v", name, sm)
		}
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	good, err := encodeEnvelope(envelopeSample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"from":"a@example.com","text":"t"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sm, err := decodeEnvelope(b)
		// Decoding in the envelope's own memory reads the same, and
		// refuses the same.
		shared, serr := decodeEnvelopeAs(bytes.Clone(b), true)
		if (err == nil) != (serr == nil) || !reflect.DeepEqual(shared, sm) {
			t.Fatalf("shared decoding differs: %v, %v", err, serr)
		}
		if err != nil || b[0] != envelopeBinary {
			return
		}
		// What decodes re-encodes to the same octets' meaning.
		again, err := encodeEnvelope(sm)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := decodeEnvelope(again); err != nil || !reflect.DeepEqual(back, sm) {
			t.Fatalf("re-encoded envelope differs: %v", err)
		}
	})
}
