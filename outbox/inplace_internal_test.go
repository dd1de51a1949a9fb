package outbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
)

var (
	bodyText = strings.Repeat("text body 0123456789\n", 500)
	bodyHTML = strings.Repeat("<p>html body</p>\n", 400)
)

// Text and HTML opened in place in a scanned row do not change while the
// same connection reads further rows (driver buffer reuse), on SQLite and
// on Postgres (one connection, so pgx reuses its read buffer).
// The text and HTML an attempt decodes share the memory its row was read
// into: that memory is the row's own (pgx and database/sql copy a bytea
// or BLOB when they scan it), so reading more rows on the same connection,
// alone or in a group, changes none of what was decoded before.
func TestOpenedContentOutlivesDriverReuse(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			where := filepath.Join(t.TempDir(), "mail.db")
			if db == "postgres" {
				where = pgtest.Start(t).NewDatabase(t)
			}
			sender, err := mailsec.NewSender(nopTransport{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ob, err := Open(context.Background(), sender, where, &Options{Keys: []Key{NewKey()}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ob.Close(context.Background()) })
			var ids []string
			for i := range 4 {
				id, err := ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"},
					Subject: "s", Text: strings.Repeat(string(rune('a'+i)), 20000), HTML: strings.Repeat(string(rune('A'+i)), 9000)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			read := func(id string) []*row {
				r, err := loadRow(context.Background(), ob.eng.pool(), id)
				if err != nil {
					t.Fatal(err)
				}
				return []*row{r}
			}
			if db == "postgres" {
				cfg, err := pgxpool.ParseConfig(where)
				if err != nil {
					t.Fatal(err)
				}
				cfg.MaxConns = 1
				pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
				g := newPGReads(pool)
				read = func(id string) []*row {
					// one result set of several rows (pgx reuses its buffer row to row),
					// then a lone read on the same connection
					rs, err := g.many(context.Background(), []string{id, ids[0], ids[1], ids[2], ids[3]})
					if err != nil {
						t.Fatal(err)
					}
					r, err := g.one(context.Background(), id)
					if err != nil {
						t.Fatal(err)
					}
					return append(rs, r)
				}
			}
			kept := map[int][]*storedMessage{}
			for round := range 20 {
				for i, id := range ids {
					for _, r := range read(id) {
						_, sm, err := ob.openMessage(r)
						if err != nil {
							t.Fatal(err)
						}
						if round == 0 && r.id == id {
							kept[i] = append(kept[i], sm)
						}
						if r.id == ids[i] && (sm.Text != strings.Repeat(string(rune('a'+i)), 20000)) {
							t.Fatal("wrong text")
						}
					}
				}
			}
			for i, sms := range kept {
				for _, sm := range sms {
					if sm.Text != strings.Repeat(string(rune('a'+i)), 20000) || sm.HTML != strings.Repeat(string(rune('A'+i)), 9000) {
						t.Fatalf("message %d's text or HTML changed after decoding", i)
					}
				}
			}
		})
	}
}

// Concurrent attempts at one message read in one Postgres group each open
// their own copy: no caller's in-place open touches another's strings.
// A message asked for by several runs in one grouped read is opened by
// each, at once, in memory of its own.
func TestGroupedReadOpensEachCopy(t *testing.T) {
	ob, e, _ := pgGroupOutbox(t, 0)
	id, err := ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"},
		Subject: "s", Text: bodyText, HTML: bodyHTML}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = e
	const n = 4
	rows := make([]*row, n)
	var fns []func()
	for i := range n {
		fns = append(fns, func() {
			r, err := ob.eng.(*riverEngine[pgx.Tx]).readRow(context.Background(), id)
			if err != nil {
				t.Error(err)
			}
			rows[i] = r
		})
	}
	inOneGroup(t, e.reads, fns...)
	sms := make([]*storedMessage, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, sm, err := ob.openMessage(rows[i])
			if err != nil {
				t.Error(err)
				return
			}
			sms[i] = sm
		})
	}
	wg.Wait()
	seen := map[*byte]bool{}
	for i, sm := range sms {
		if sm == nil || sm.Text != bodyText || sm.HTML != bodyHTML {
			t.Fatalf("caller %d: wrong content", i)
		}
		p := unsafe.StringData(sm.Text)
		if seen[p] {
			t.Fatalf("caller %d shares another caller's memory", i)
		}
		seen[p] = true
	}
}

// A refused envelope leaves no plaintext in the row's memory, the error is
// the typed OpenError naming the message, and nothing is sent.
// An envelope that fails authentication in place leaves none of its
// plaintext in the row's memory and is reported as tampered; one sealed
// under a key the outbox lacks is left as it was.
func TestTamperedEnvelopeLeavesNoPlaintext(t *testing.T) {
	kr := testKeyring(t, NewKey())
	ob := &Outbox{keys: kr}
	sm := envelopeSample()
	sm.Text, sm.HTML = bodyText, bodyHTML
	for _, at := range []int{40, 500, -1, -17} {
		r := sealedRow(t, kr, "m9", sm)
		flip(r.envelope, at)
		mem := r.envelope
		_, got, err := ob.openMessage(r)
		var oe *OpenError
		if got != nil || !errors.As(err, &oe) || oe.ID != "m9" || oe.What != "envelope" || !errors.Is(err, ErrTampered) {
			t.Fatalf("flip at %d: %v", at, err)
		}
		if bytes.Contains(mem, []byte("text body")) || bytes.Contains(mem, []byte("html body")) || bytes.Contains(mem, []byte("example")) {
			t.Fatalf("flip at %d: plaintext left in the row's memory", at)
		}
	}
	// Unknown key: typed, temporary, the stored value untouched.
	r := sealedRow(t, testKeyring(t, NewKey()), "m9", sm)
	kept := bytes.Clone(r.envelope)
	mem := r.envelope
	// progress sealed under our key so that the envelope is reached
	r.progress = kr.seal([]byte(`{}`), aad("progress", "m9", ""))
	_, _, err := ob.openMessage(r)
	var oe *OpenError
	if !errors.As(err, &oe) || oe.ID != "m9" || !errors.Is(err, ErrUnknownKey) || !bytes.Equal(mem, kept) {
		t.Fatalf("unknown key: %v", err)
	}
}

// Short or malformed stored values never panic when consumed.
// A value too short, or all zeros, is refused, never opened, never a
// panic.
func TestConsumeShortInput(t *testing.T) {
	kr := testKeyring(t, NewKey())
	good := kr.seal([]byte("hello"), aad("chunk", "m", "0:0"))
	for n := 0; n <= len(good); n++ {
		for _, b := range [][]byte{bytes.Clone(good[:n]), append([]byte{formSealed}, make([]byte, n)...)} {
			if _, err := kr.consume(b, aad("chunk", "m", "0:0"), "m", "chunk"); err == nil && n != len(good) {
				t.Fatalf("length %d opened", n)
			}
		}
	}
}

// An attachment larger than a chunk reads back whole, twice (Seek), its
// chunks opened in place.
// An attachment over several chunks, each opened in place, reads back
// whole, and again after a Seek to its start.
func TestAttachmentChunksOpenInPlace(t *testing.T) {
	sender, err := mailsec.NewSender(nopTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := Open(context.Background(), sender, filepath.Join(t.TempDir(), "mail.db"), &Options{Keys: []Key{NewKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	content := make([]byte, 3*chunkSize+123)
	for i := range content {
		content[i] = byte(i * 7)
	}
	id, err := ob.Enqueue(context.Background(), &mailsec.Message{From: "app@example.com", To: []string{"ann@example.org"},
		Subject: "s", Text: "t", Attachments: []mailsec.Attachment{{Filename: "a.bin", ContentType: "application/octet-stream",
			Content: bytes.NewReader(content)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := loadRow(context.Background(), ob.eng.pool(), id)
	if err != nil {
		t.Fatal(err)
	}
	_, sm, err := ob.openMessage(r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds := &deliveryState{}
	m := ob.message(ctx, id, sm, ds)
	rs := m.Attachments[0].Content.(io.ReadSeeker)
	for range 2 {
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rs)
		if err != nil || !bytes.Equal(got, content) || ds.err() != nil {
			t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, content))
		}
	}
}
