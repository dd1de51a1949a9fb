package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
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
