package outbox

import (
	"context"
	"sync"
	"testing"
	"time"
)

type testCall struct{ done chan struct{} }

// A call whose context ends while it waits for a group is withdrawn at
// once and never run; a group left with no call is not run at all; the
// leader's place is given back.
func TestCoalescerWithdrawsWaitingCall(t *testing.T) {
	var c coalescer[*testCall]
	var mu sync.Mutex
	var groups [][]*testCall
	release := make(chan struct{})
	run := func(calls []*testCall) {
		mu.Lock()
		groups = append(groups, calls)
		first := len(groups) == 1
		mu.Unlock()
		if first {
			<-release
		}
		for _, call := range calls {
			close(call.done)
		}
	}
	first := &testCall{done: make(chan struct{})}
	go c.add(first, run)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(groups)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first call's group did not run")
		}
	}
	second := &testCall{done: make(chan struct{})}
	c.add(second, run) // the one group running: it waits
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	withdrawn := make(chan bool, 1)
	go func() { withdrawn <- c.wait(ctx, second, second.done) }()
	select {
	case w := <-withdrawn:
		if !w {
			t.Error("a call whose context ended before any group took it was not withdrawn")
		}
	case <-time.After(2 * time.Second):
		t.Error("a call whose context ended before any group took it still waits")
	}
	close(release)
	<-first.done
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		leaders, pending := c.leaders, len(c.pending)
		c.mu.Unlock()
		if leaders == 0 && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leaders and %d calls pending after every call ended", leaders, pending)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(groups) != 1 {
		t.Errorf("%d groups ran, want the first alone: %v", len(groups), groups)
	}
}

// A group whose run panics gives its place back: later calls are led.
func TestCoalescerPanicKeepsNoPlace(t *testing.T) {
	var c coalescer[*testCall]
	func() {
		defer func() { _ = recover() }()
		c.add(&testCall{}, func([]*testCall) { panic("boom") })
	}()
	ran := make(chan struct{})
	c.add(&testCall{}, func([]*testCall) { close(ran) })
	select {
	case <-ran:
	case <-time.After(2 * time.Second):
		t.Error("a call after a group that panicked was never led")
	}
}
