package sqlitedb

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Stress: several connections, transactions with open Rows, cancellations
// closing Rows from database/sql's goroutine, and reuse of the same texts.
func TestAsModerncStress(t *testing.T) {
	for _, w := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "wrapped"}[w], func(t *testing.T) { stress(t, w) })
	}
}

func stress(t *testing.T, w bool) {
	path := filepath.Join(t.TempDir(), "st.db")
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate"
	db := openEither(t, w, dsn, Options{CacheSize: 3})
	defer db.Close()
	db.SetMaxOpenConns(3)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		db.Exec(`INSERT INTO t (v) VALUES (?)`, "x")
	}
	sel := `SELECT id, v FROM t WHERE id > ? ORDER BY id`
	var wg sync.WaitGroup
	var scanErrs sync.Map
	errc := make(chan error, 100000)
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*time.Millisecond)
				rows, err := db.QueryContext(ctx, sel, i)
				if err == nil {
					n := 0
					for rows.Next() {
						var id int
						var v string
						if err := rows.Scan(&id, &v); err != nil {
							scanErrs.Store(err.Error(), true)
							continue
						}
						if id <= i {
							errc <- fmt.Errorf("wrong row: id %d for id > %d (row %d)", id, i, n)
						}
						n++
					}
					rows.Close()
				}
				cancel()
				if g%2 == 0 {
					tx, err := db.BeginTx(context.Background(), nil)
					if err != nil {
						errc <- err
						continue
					}
					r1, err := tx.Query(sel, 90)
					if err != nil {
						errc <- err
						_ = tx.Rollback()
						continue
					}
					r1.Next()
					var cnt int
					if err := tx.QueryRow(`SELECT count(*) FROM t WHERE id > ?`, 0).Scan(&cnt); err != nil {
						errc <- err
					}
					r2, err := tx.Query(sel, 95) // same text while busy
					if err == nil {
						for r2.Next() {
						}
						r2.Close()
					}
					tx.Exec(`UPDATE t SET v = ? WHERE id = ?`, "y", i+1)
					tx.Exec(`SELECT ` + string(rune('a'+i%7)) + `1 FROM t LIMIT 0`)
					if i%3 == 0 {
						tx.Rollback()
					} else {
						tx.Commit()
					}
				} else {
					var v string
					if err := db.QueryRow(`SELECT v FROM t WHERE id = ?`, i+1).Scan(&v); err != nil {
						errc <- err
					}
				}
			}
		}(g)
	}
	wg.Wait()
	scanErrs.Range(func(k, _ any) bool { t.Logf("scan error seen: %v", k); return true })
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
