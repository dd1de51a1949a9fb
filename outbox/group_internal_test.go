package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
)

// Concurrent callers' work commits together, each caller's own failure
// (an error or a panic) undoes its work alone, and every caller returns
// only once its work is committed: a second connection sees it.
func TestGroupCommitIsolatesCallers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	db, err := sql.Open("sqlite", "file:"+path+sqlitePragmas)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", "file:"+path+sqlitePragmas)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	g := &groupCommit{db: db}
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = g.do(t.Context(), func(ctx context.Context, q txn) error {
				if _, err := q.exec(ctx, `INSERT INTO t (k) VALUES ($1)`, i); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return fmt.Errorf("refused %d", i)
				case 7:
					panic("boom")
				}
				return nil
			})
			if errs[i] != nil {
				return
			}
			var got int
			if err := other.QueryRow(`SELECT count(*) FROM t WHERE k = ?`, i).Scan(&got); err != nil || got != 1 {
				errs[i] = fmt.Errorf("after do returned nil, another connection finds %d rows for %d (%v)", got, i, err)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch i % 10 {
		case 3, 7:
			if err == nil {
				t.Errorf("caller %d: failed work reported nil", i)
			}
		default:
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
		}
	}
	rows, err := other.Query(`SELECT k FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	count := 0
	for rows.Next() {
		var k int
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		if k%10 == 3 || k%10 == 7 {
			t.Errorf("row %d of a failed caller committed", k)
		}
		count++
	}
	if want := n - 2*n/10; count != want {
		t.Errorf("%d rows committed, want %d", count, want)
	}

	// A caller whose context has ended runs nothing.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	if err := g.do(ctx, func(context.Context, txn) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Errorf("with an ended context: err %v, ran %v", err, ran)
	}
}

// Concurrent Enqueues on SQLite share transactions, and the delivery jobs
// of a group's messages are inserted at its end: every message queued has
// exactly one job, and a message whose caller's work failed after
// queueing it has neither row nor job.
func TestGroupQueuesOneJobPerMessage(t *testing.T) {
	ctx := t.Context()
	ob, path := openGroupTest(t)

	const n = 96
	ids := make([]string, n)
	errs := make([]error, n)
	refused := errors.New("refused after queueing")
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := &mailsec.Message{From: "app@example.com", To: []string{fmt.Sprintf("r%d@example.org", i)}, Subject: "s", Text: "t"}
			if i%8 != 5 {
				ids[i], errs[i] = ob.Enqueue(ctx, m, nil)
				return
			}
			pm, err := ob.prepare(m, nil)
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = ob.eng.inTx(ctx, func(ctx context.Context, q txn) error {
				id, queued, err := ob.enqueue(ctx, q, m, pm)
				ids[i] = id
				if err != nil || !queued {
					return fmt.Errorf("enqueue: %v (queued %v)", err, queued)
				}
				return refused
			})
		})
	}
	wg.Wait()

	db, err := sql.Open("sqlite", "file:"+path+sqlitePragmas)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, id := range ids {
		var rows, jobs int
		if err := db.QueryRow(`SELECT count(*) FROM mailsec_outbox_message WHERE id = ?`, id).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT count(*) FROM river_job WHERE kind = ? AND args ->> 'id' = ?`, deliverKind, id).Scan(&jobs); err != nil {
			t.Fatal(err)
		}
		want := 1
		if i%8 == 5 {
			want = 0
			if !errors.Is(errs[i], refused) {
				t.Errorf("caller %d: got %v, want its own error", i, errs[i])
			}
		} else if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
		}
		if id == "" || rows != want || jobs != want {
			t.Errorf("caller %d (message %q): %d rows and %d delivery jobs, want %d of each", i, id, rows, jobs, want)
		}
	}
}

// When the group's delivery jobs cannot be inserted, nothing of the group
// commits and every caller is told so.
func TestGroupJobsFailTogether(t *testing.T) {
	ctx := t.Context()
	ob, path := openGroupTest(t)
	db, err := sql.Open("sqlite", "file:"+path+sqlitePragmas)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A trigger refuses every delivery job, as a failing insert would.
	if _, err := db.Exec(`CREATE TRIGGER refuse_jobs BEFORE INSERT ON river_job
BEGIN SELECT RAISE(ABORT, 'no jobs today'); END`); err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m := &mailsec.Message{From: "app@example.com", To: []string{fmt.Sprintf("r%d@example.org", i)}, Subject: "s", Text: "t"}
			_, errs[i] = ob.Enqueue(ctx, m, nil)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "no jobs today") {
			t.Errorf("caller %d: got %v, want the job insert's error", i, err)
		}
	}
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM mailsec_outbox_message`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("%d messages stored without their jobs (%v)", rows, err)
	}
}

// openGroupTest opens an outbox on a new SQLite file, not started.
func openGroupTest(t *testing.T) (*Outbox, string) {
	t.Helper()
	sender, err := mailsec.NewSender(&mailsectest.RecordingTransport{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mail.db")
	ob, err := Open(t.Context(), sender, path, &Options{Keys: []Key{NewKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close(context.Background()) })
	return ob, path
}
