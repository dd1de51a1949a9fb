package bounce

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailsec/mailsec/internal/syntax"
)

// FuzzParse feeds Parse arbitrary messages, starting from the corpus:
// it must never panic (not even one it recovers from), must refuse with
// one of its three kinds of error, and must return only cleaned text.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no corpus: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	p := &Parser{Limits: Limits{MaxSize: 1 << 20, MaxHeaderBytes: 8 << 10, MaxStatusBytes: 64 << 10, MaxDepth: 4, MaxParts: 20, MaxRecipients: 50}}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		rep, err := p.Parse(r)
		if err != nil {
			var pe panicError
			if errors.As(err, &pe) {
				t.Fatalf("panic: %v", pe)
			}
			if !errors.Is(err, ErrNotDSN) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error of no kind: %v", err)
			}
			if rep != nil {
				t.Fatal("a report beside an error")
			}
			return
		}
		if r.Len() != 0 {
			t.Errorf("%d octets left unread", r.Len())
		}
		if len(rep.Recipients) == 0 || len(rep.Recipients) > 50 {
			t.Fatalf("%d recipients", len(rep.Recipients))
		}
		texts := []string{rep.ReportingMTA, rep.EnvelopeID, rep.ReceivedFromMTA, rep.MessageID}
		for _, rc := range rep.Recipients {
			switch rc.Action {
			case ActionFailed, ActionDelayed, ActionDelivered, ActionRelayed, ActionExpanded:
			default:
				t.Errorf("action %q", rc.Action)
			}
			if rc.FinalRecipient == "" {
				t.Error("no final recipient")
			}
			if c := rc.Status; c[0] != 2 && c[0] != 4 && c[0] != 5 {
				t.Errorf("status %v", c)
			}
			if x := rc.Explain(); x.Text == "" {
				t.Errorf("no explanation for %v", rc.Code())
			}
			texts = append(texts, rc.FinalRecipient, rc.OriginalRecipient, rc.RemoteMTA, rc.DiagnosticType, rc.DiagnosticCode)
		}
		for _, s := range texts {
			if syntax.PeerText(s) != s {
				t.Errorf("text not cleaned: %q", s)
			}
		}
	})
}
