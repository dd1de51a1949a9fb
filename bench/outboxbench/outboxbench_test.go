package outboxbench

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for p, want := range map[int]time.Duration{50: 100, 99: 198, 100: 200, 1: 2} {
		if got := percentile(d, p); got != want {
			t.Errorf("percentile(1..200, %d) = %d, want %d", p, got, want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("percentile of one = %d", got)
	}
}

func TestPayload(t *testing.T) {
	a, b := NewPayload(MessageSize), NewPayload(MessageSize)
	if len(a.Sealed) != MessageSize+SealOverhead || string(a.Sealed) != string(b.Sealed) {
		t.Errorf("payload: %d bytes, same in every run: %v", len(a.Sealed), string(a.Sealed) == string(b.Sealed))
	}
}

// TestRiverSQLite runs the floor on SQLite with a few items, and checks
// that a delivery that did not work its items fails.
func TestRiverSQLite(t *testing.T) {
	ctx := context.Background()
	env := NewEnv(t.TempDir(), "")
	p := NewPayload(1000)
	peer := River(Tuned())
	enq, err := MeasureEnqueue(ctx, env, SQLite, peer, p, 40, Concurrency, 2)
	if err != nil {
		t.Fatal(err)
	}
	if enq.N != 40 || enq.P50 <= 0 || enq.P99 < enq.P50 || enq.Max < enq.P99 {
		t.Errorf("enqueue result %+v", enq)
	}
	del, err := MeasureDeliver(ctx, env, SQLite, peer, p, 30)
	if err != nil {
		t.Fatal(err)
	}
	if del.N != 30 || del.PerSecond() <= 0 {
		t.Errorf("delivery result %+v", del)
	}

	// Items queued but never worked: Close must say so.
	db, drop, err := env.Fresh(ctx, SQLite)
	if err != nil {
		t.Fatal(err)
	}
	defer drop()
	d, err := peer.Deliver(ctx, db, p, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err == nil || !strings.Contains(err.Error(), "0 of 10 jobs") {
		t.Errorf("Close after no Run = %v, want it to report 0 of 10 jobs completed", err)
	}
}

func TestFreshPostgresNeedsServer(t *testing.T) {
	env := NewEnv(t.TempDir(), "")
	if env.HasPostgres() {
		t.Fatal("HasPostgres with no URL")
	}
	if _, _, err := env.Fresh(context.Background(), Postgres); err == nil {
		t.Error("Fresh(Postgres) without a server succeeded")
	}
}

// TestOutboxSQLite runs the outbox and a pooled Send on SQLite with a few
// messages, and checks that a delivery that did not deliver its messages
// fails.
func TestOutboxSQLite(t *testing.T) {
	ctx := context.Background()
	sink, err := StartSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	env := NewEnv(t.TempDir(), "")
	p := NewPayload(1000)
	s := Outbox()
	s.MaxWorkers = 4
	peers := Peers(s, sink)
	if len(peers) != 3 || peers[0].Name != Floor || peers[1].Name != OutboxPeerName || peers[2].Name != SendPeerName {
		t.Fatalf("peers with the outbox's settings and a sink: %v", peerNames(peers))
	}
	if got := peerNames(Peers(Tuned(), sink)); strings.Join(got, ",") != "river,send" {
		t.Errorf("peers with other fetch settings: %v, want the outbox left out", got)
	}
	ob, send := peers[1], peers[2]

	enq, err := MeasureEnqueue(ctx, env, SQLite, ob, p, 20, Concurrency, 2)
	if err != nil {
		t.Fatal(err)
	}
	if enq.N != 20 || enq.P50 <= 0 || enq.P99 < enq.P50 {
		t.Errorf("enqueue result %+v", enq)
	}
	before := sink.Transactions()
	del, err := MeasureDeliver(ctx, env, SQLite, ob, p, 15)
	if err != nil {
		t.Fatal(err)
	}
	if del.N != 15 || del.PerSecond() <= 0 || sink.Transactions()-before != 15 {
		t.Errorf("delivery result %+v, sink received %d", del, sink.Transactions()-before)
	}
	before = sink.Transactions()
	if del, err = MeasureDeliver(ctx, env, SQLite, send, p, 12); err != nil {
		t.Fatal(err)
	}
	// The warm-up Sends count too.
	if del.N != 12 || sink.Transactions()-before < 12 {
		t.Errorf("pooled Send result %+v, sink received %d", del, sink.Transactions()-before)
	}

	// Messages queued but never delivered: Close must say so.
	db, drop, err := env.Fresh(ctx, SQLite)
	if err != nil {
		t.Fatal(err)
	}
	defer drop()
	d, err := ob.Deliver(ctx, db, p, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err == nil || !strings.Contains(err.Error(), "0 of 10 messages") {
		t.Errorf("Close after no Run = %v, want it to report 0 of 10 messages delivered", err)
	}
}

func peerNames(peers []Peer) []string {
	var names []string
	for _, p := range peers {
		names = append(names, p.Name)
	}
	return names
}
