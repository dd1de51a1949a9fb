package outbox

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// On Postgres the sealed envelope and attachment chunks are stored as
// they are, without a try at compressing them: in a new outbox, and in
// one migrated from schema version 4.
func TestSealedColumnsStoredUncompressed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, e, _ := pgGroupOutbox(t, 0)
	pool := e.q.(pgQ).r.(*pgxpool.Pool)
	storage := func() string {
		t.Helper()
		var got string
		if err := pool.QueryRow(ctx, `SELECT string_agg(c.relname || '.' || a.attname || '=' || a.attstorage::text, ' ' ORDER BY c.relname)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE (c.relname, a.attname) IN (('mailsec_outbox_message', 'envelope'), ('mailsec_outbox_chunk', 'data'))`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	const want = "mailsec_outbox_chunk.data=e mailsec_outbox_message.envelope=e"
	if got := storage(); got != want {
		t.Errorf("new outbox: %s, want %s", got, want)
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE mailsec_outbox_message ALTER COLUMN envelope SET STORAGE EXTENDED;
ALTER TABLE mailsec_outbox_chunk ALTER COLUMN data SET STORAGE EXTENDED;
UPDATE mailsec_outbox_schema SET version = 4`); err != nil {
		t.Fatal(err)
	}
	if err := e.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := storage(); got != want {
		t.Errorf("migrated from version 4: %s, want %s", got, want)
	}
}
