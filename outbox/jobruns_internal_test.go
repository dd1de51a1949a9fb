package outbox

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/mailsec/mailsec/internal/pgtest"
)

type runsArgs struct{}

func (runsArgs) Kind() string { return "mailsec_outbox_runs_test" }

// runsWorker records jobRuns at each run and ends the run as script says:
// "snooze", "error" or "done".
type runsWorker struct {
	river.WorkerDefaults[runsArgs]
	script []string
	mu     sync.Mutex
	seen   []int
	done   chan struct{}
}

func (w *runsWorker) Work(ctx context.Context, job *river.Job[runsArgs]) error {
	w.mu.Lock()
	w.seen = append(w.seen, jobRuns(job.JobRow))
	n := len(w.seen)
	step := w.script[(n-1)%len(w.script)]
	w.mu.Unlock()
	defer func() { w.done <- struct{}{} }()
	switch step {
	case "snooze":
		return river.JobSnooze(time.Millisecond)
	case "error":
		return errors.New("this run fails")
	}
	return nil
}

type nowRetry struct{}

func (nowRetry) NextRetry(*rivertype.JobRow) time.Time { return time.Now() }

// River counts a job's runs for the outbox: attempt plus the metadata's
// snoozes grows by exactly one with each run, whether the run before
// snoozed, failed, or finished and was retried (Outbox.Retry's JobRetry).
// A dead worker's run (River's rescue) leaves attempt as it was too; the
// crash tests prove that end to end (TestCrashMidDelivery).
func TestJobRunsCountEveryRun(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "runs.db")+sqlitePragmas)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { _ = db.Close() })
		testJobRuns(t, riversqlite.New(db))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		pg := pgtest.Start(t)
		pool, err := pgxpool.New(t.Context(), pg.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		testJobRuns(t, riverpgxv5.New(pool))
	})
}

func testJobRuns[TTx any](t *testing.T, driver riverdriver.Driver[TTx]) {
	ctx := t.Context()
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		t.Fatal(err)
	}
	w := &runsWorker{script: []string{"snooze", "error", "snooze", "snooze", "error", "done"}, done: make(chan struct{}, 16)}
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 1}},
		Workers:           workers,
		FetchCooldown:     5 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		RetryPolicy:       nowRetry{},
		MaxAttempts:       maxJobAttempts,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Stop(context.WithoutCancel(ctx)) })
	res, err := client.Insert(ctx, runsArgs{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(runs int) {
		t.Helper()
		for len(w.snapshot()) < runs {
			select {
			case <-w.done:
			case <-time.After(20 * time.Second):
				t.Fatalf("runs seen: %v, want %d", w.snapshot(), runs)
			}
		}
	}
	wait(len(w.script))
	// Finished (completed); Outbox.Retry wakes a job with JobRetry.
	for {
		j, err := client.JobGet(ctx, res.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == rivertype.JobStateCompleted {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.mu.Lock()
	w.script = []string{"done"}
	w.mu.Unlock()
	if _, err := client.JobRetry(ctx, res.Job.ID); err != nil {
		t.Fatal(err)
	}
	wait(7)
	want := []int{1, 2, 3, 4, 5, 6, 7}
	if got := w.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("jobRuns at each run: %v, want %v", got, want)
	}
}

func (w *runsWorker) snapshot() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

func TestJobRunsUnreadable(t *testing.T) {
	for _, md := range []string{`{"snoozes":"x"}`, `{"snoozes":-1}`, `{"snoozes":1.5}`, `[`} {
		if n := jobRuns(&rivertype.JobRow{Attempt: 2, Metadata: []byte(md)}); n != 0 {
			t.Errorf("metadata %s: %d runs, want 0 (unknown)", md, n)
		}
	}
	if n := jobRuns(&rivertype.JobRow{Attempt: 2, Metadata: []byte(`{"snoozes":3,"river:rescue_count":1}`)}); n != 5 {
		t.Errorf("%d runs, want 5", n)
	}
	if n := jobRuns(&rivertype.JobRow{Attempt: 0}); n != 0 {
		t.Errorf("attempt 0: %d runs", n)
	}
}
