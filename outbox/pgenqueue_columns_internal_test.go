package outbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/pgtest"
	"github.com/mailsec/mailsec/mailsectest"
)

// A grouped Enqueue, in pgx's default mode and another, sealed and
// plaintext, stores each column from the right value: the envelope and
// progress open (under their own AD), idem is the key's current digest,
// fingerprint its MAC; the grouped records of delivery store attempts
// that open.
func TestPgEnqueueGroupStoresEachColumn(t *testing.T) {
	pg := pgtest.Start(t)
	for _, mode := range []string{"cache_statement", "exec"} {
		for _, plaintext := range []bool{false, true} {
			t.Run(fmt.Sprint(mode, plaintext), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				defer cancel()
				srv := mailsectest.NewServer(t, mailsectest.Config{})
				s, err := mailsec.NewSender(srv.Transport(), nil)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := pgxpool.ParseConfig(pg.NewDatabase(t) + "&pool_max_conns=8&default_query_exec_mode=" + mode)
				if err != nil {
					t.Fatal(err)
				}
				pool, err := pgxpool.NewWithConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer pool.Close()
				o := &Options{Keys: []Key{NewKey()}}
				if plaintext {
					o = &Options{Plaintext: true}
				}
				ob, err := OpenPostgres(ctx, s, pool, o)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = ob.Close(ctx) }()
				type want struct {
					subject, key string
					n            int
				}
				var wants []want
				var calls []func() (string, error)
				for i := range 6 {
					w := want{subject: fmt.Sprintf("subject %d", i)}
					w.n = i
					if i%2 == 1 {
						w.key = fmt.Sprint("key", i)
					}
					wants = append(wants, w)
					calls = append(calls, func() (string, error) {
						var eo *EnqueueOptions
						if w.key != "" {
							eo = &EnqueueOptions{IdempotencyKey: w.key}
						}
						return ob.Enqueue(ctx, &mailsec.Message{From: "a@example.com", To: []string{"b@example.org"}, Subject: w.subject, Text: "body " + strings.Repeat("z", 9000*w.n)}, eo)
					})
				}
				ids, errs := inOneEnqueueGroup(t, ob.enqueueGroup, calls)
				for i, id := range ids {
					if errs[i] != nil {
						t.Fatalf("Enqueue %d: %v", i, errs[i])
					}
					var env, prog, idem, fp []byte
					if err := pool.QueryRow(ctx, `SELECT envelope, progress, idem, fingerprint FROM mailsec_outbox_message WHERE id = $1`, id).Scan(&env, &prog, &idem, &fp); err != nil {
						t.Fatal(err)
					}
					if sealed(env) == plaintext || sealed(prog) == plaintext {
						t.Errorf("%d: stored in the wrong form", i)
					}
					plain, err := ob.keys.open(env, aad("envelope", id, ""), id, "envelope")
					if err != nil {
						t.Fatalf("%d: envelope: %v", i, err)
					}
					sm, err := decodeEnvelope(plain)
					if err != nil || sm.Subject != wants[i].subject {
						t.Fatalf("%d: envelope %v", i, err)
					}
					if !plaintext && bytes.Contains(env, []byte(wants[i].subject)) {
						t.Errorf("%d: plaintext in the sealed envelope", i)
					}
					if _, err := ob.keys.open(prog, aad("progress", id, ""), id, "progress"); err != nil {
						t.Fatalf("%d: progress: %v", i, err)
					}
					if wants[i].key == "" {
						if idem != nil || fp != nil {
							t.Errorf("%d: idem %x, fingerprint %x without a key", i, idem, fp)
						}
						continue
					}
					if d := ob.keys.idemDigests(wants[i].key); !bytes.Equal(idem, d[0]) {
						t.Errorf("%d: idem %x, want %x", i, idem, d[0])
					}
					if len(fp) != sha256.Size || bytes.Equal(fp, idem) {
						t.Errorf("%d: fingerprint %x", i, fp)
					}
					// The same message again with its key: the same ID
					// (the fingerprint matched).
					again, err := calls[i]()
					if err != nil || again != id {
						t.Errorf("%d: again: %s, %v", i, again, err)
					}
				}
				if st, err := ob.RunDue(ctx); err != nil || st.Depth != 0 {
					t.Fatalf("RunDue: %+v, %v", st, err)
				}
				for i, id := range ids {
					st, err := ob.Status(ctx, id)
					if err != nil || st.State != Delivered || len(st.Attempts) != 1 {
						t.Fatalf("%d: %+v, %v", i, st, err)
					}
					var data []byte
					var n int
					if err := pool.QueryRow(ctx, `SELECT n, data FROM mailsec_outbox_attempt WHERE message_id = $1`, id).Scan(&n, &data); err != nil {
						t.Fatal(err)
					}
					if _, err := ob.keys.open(data, aad("attempt", id, strconv.Itoa(n)), id, "attempt"); err != nil {
						t.Errorf("%d: attempt %d: %v", i, n, err)
					}
				}
				if got := len(srv.Messages()); got != len(ids) {
					t.Errorf("%d delivered, want %d", got, len(ids))
				}
			})
		}
	}
}
