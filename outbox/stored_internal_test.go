package outbox

import (
	"reflect"
	"testing"
	"time"

	"github.com/mailsec/mailsec"
)

// Every field of mailsec.Message is stored and rebuilt: a field added to
// Message and forgotten here would be dropped from every queued message.
func TestStoredMessageCarriesEveryField(t *testing.T) {
	mt, st := reflect.TypeFor[mailsec.Message](), reflect.TypeFor[storedMessage]()
	for f := range mt.Fields() {
		if _, ok := st.FieldByName(f.Name); !ok {
			t.Errorf("mailsec.Message.%s is not stored by the outbox", f.Name)
		}
	}
	m := &mailsec.Message{
		From: "App <app@example.com>", Sender: "ops@example.com", ReplyTo: []string{"help@example.com"},
		To: []string{"ann@example.org"}, Cc: []string{"bob@example.org"}, Bcc: []string{"carl@example.org"},
		Subject: "s", Text: "t", HTML: "<p>h</p>", Headers: []mailsec.Header{{Name: "X-Entity-Ref-ID", Value: "1"}},
		EnvelopeFrom: "bounces@example.com", RequireTLS: true, TLSRequiredNo: false,
		DSN: &mailsec.DSN{Return: mailsec.DSNReturnHeaders}, Date: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		MessageID: "id@example.com", Reference: "ref-1", ReportType: "tlsrpt",
	}
	ob := &Outbox{}
	back := ob.message(t.Context(), "x", toStored(m), &deliveryState{})
	back.Attachments, back.Inline = nil, nil
	if !reflect.DeepEqual(m, back) {
		t.Fatalf("stored and rebuilt:\n%+v\nwant\n%+v", back, m)
	}
}
