package outbox

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The grouped record runs with plan_cache_mode force_generic_plan, and
// the setting ends with its transaction: no pool connection keeps it,
// after a group that commits, one whose statement fails, or one whose
// context ended before it ran.
func TestGenericPlanSettingEndsWithRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ob, e, ids := pgGroupOutbox(t, 2)
	pool := e.q.(pgQ).r.(*pgxpool.Pool)
	rec := func(id string) pgRecord {
		r, err := loadRow(ctx, ob.eng.pool(), id)
		if err != nil {
			t.Fatal(err)
		}
		return pgRecord{id: r.id, state: string(Queued), next: 1, progress: r.progress, n: r.attempts + 1, attempt: []byte("a"), run: 1,
			wasProgress: r.progress, wasAttempts: r.attempts}
	}
	check := func(when string) {
		t.Helper()
		for _, c := range pool.AcquireAllIdle(ctx) {
			var mode string
			if err := c.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil {
				t.Fatal(err)
			}
			if mode != "auto" {
				t.Errorf("%s: a pool connection has plan_cache_mode %s", when, mode)
			}
			c.Release()
		}
	}
	// What the record's transaction runs with, as a trigger sees it.
	if _, err := pool.Exec(ctx, `CREATE TABLE plan_seen (mode TEXT NOT NULL);
CREATE FUNCTION plan_seen() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO plan_seen VALUES (current_setting('plan_cache_mode')); RETURN NEW; END$$;
CREATE TRIGGER plan_seen BEFORE INSERT ON mailsec_outbox_attempt FOR EACH ROW EXECUTE FUNCTION plan_seen()`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.records.many(ctx, []pgRecord{rec(ids[0])}); err != nil {
		t.Fatal(err)
	}
	var seen string
	if err := pool.QueryRow(ctx, `SELECT string_agg(mode, ',') FROM plan_seen`).Scan(&seen); err != nil || seen != "force_generic_plan" {
		t.Errorf("the record ran with plan_cache_mode %q (%v), want force_generic_plan", seen, err)
	}
	check("after a commit")
	if _, err := pool.Exec(ctx, `CREATE FUNCTION plan_fail() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'refused'; END$$;
CREATE TRIGGER plan_fail BEFORE INSERT ON mailsec_outbox_attempt FOR EACH ROW EXECUTE FUNCTION plan_fail()`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.records.many(ctx, []pgRecord{rec(ids[1])}); err == nil {
		t.Fatal("the record succeeded despite the trigger")
	}
	check("after a failed record")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _ = e.records.many(cctx, []pgRecord{rec(ids[1])})
	check("after a cancelled record")
	if _, err := pool.Exec(ctx, `DROP TRIGGER plan_fail ON mailsec_outbox_attempt`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.records.many(ctx, []pgRecord{rec(ids[1])}); err != nil {
		t.Errorf("a record after the failures: %v", err)
	}
	check("at the end")
}
