package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// lateRecords makes the records of finished attempts on Postgres after
// their runs have returned, so that a worker is free for the next message
// while the record of the last one commits: River fetches jobs for the
// workers that are free, every FetchCooldown, and a record holding its
// worker would keep it from the next fetch.
//
// The message's job is then completed (River's completer) before or
// after its record commits. In between, the message is unfinished and has
// no live job; Retry and the clean-up's sweep count a job completed less
// than lateWindow ago as live (liveJobs, sqlJobless), so that neither
// gives the message another job while its record may still commit, and
// Status, List, Stats and Ingest count it as one attempting its message
// (sqlRunningJob). A record that does not commit within its margin (the
// database unreachable, the process gone) leaves the message queued
// without a live job: the clean-up gives it one once lateWindow has
// passed, and its next attempt takes the run that sent it for one that
// died (its recipients flagged as possible duplicates), as when the
// worker dies before its record.
//
// Only a finished attempt's record is made late, and only when its run
// still owns its job (outcome.ownsJob): a message tried again is snoozed
// by its run, which needs the record first, and a run past River's
// JobTimeout may have had its job rescued and given to another run.
type lateRecords struct {
	slots chan struct{} // one for each record under way
	wg    sync.WaitGroup
	log   *slog.Logger

	// before, when set (by tests, before Start), runs before each late
	// record; a record for which it returns false is not made, as when
	// the process dies first.
	before func(id string) bool
}

// newLateRecords allows n late records under way at once; the records of
// attempts beyond them are made by their runs.
func newLateRecords(n int, log *slog.Logger) *lateRecords {
	return &lateRecords{slots: make(chan struct{}, n), log: log}
}

// lateWindow is how long after its job was completed a finished
// attempt's late record may still commit, with a margin for clocks that
// differ (River's completion time is the worker's clock, the reader's is
// its own): the record is given until its margin ends, which began before
// the run returned, and a group of records runs until the latest of its
// records' deadlines, which may hold one up for up to a margin more.
func lateWindow(margin time.Duration) time.Duration { return 3 * margin }

// take has record make rec's record after the run returns, and reports
// whether it did; when it does not (nil l, an attempt not finished, a run
// that may no longer own its job, every slot taken), the run makes the
// record itself. ctx bounds the record; it must have a deadline.
func (l *lateRecords) take(ctx context.Context, rec *recording, record func(context.Context, *recording) error) bool {
	if l == nil || !rec.state.finished() || !rec.o.ownsJob {
		return false
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		return false
	}
	select {
	case l.slots <- struct{}{}:
	default:
		return false
	}
	l.wg.Add(1)
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				// As a run's panic (work): the type and where, never the
				// value, which may hold the message's content.
				l.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: recording an attempt panicked", slog.String("id", rec.r.id),
					slog.String("panic", fmt.Sprintf("%T", v)), slog.String("stack", string(debug.Stack())))
			}
			cancel()
			<-l.slots
			l.wg.Done()
		}()
		if l.before != nil && !l.before(rec.r.id) {
			return
		}
		if err := record(ctx, rec); err != nil {
			l.log.LogAttrs(ctx, slog.LevelError, "mailsec outbox: the record of an attempt was lost; the clean-up will queue the message again",
				slog.String("id", rec.r.id), slog.Int("attempt", rec.a.Number), slog.String("error", err.Error()))
		}
	}()
	return true
}

// wait waits for the late records under way. Close calls it once River
// has stopped, when no run can start another.
func (l *lateRecords) wait() {
	if l != nil {
		l.wg.Wait()
	}
}
