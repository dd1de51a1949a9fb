package outbox

import (
	"bytes"
	"sync"
)

// logBuffer is a log a test reads while the outbox writes to it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) Bytes() []byte { return []byte(l.String()) }

// LogBuffer is logBuffer for the tests of package outbox_test, which
// cannot reach an unexported name. It exists only while testing.
type LogBuffer = logBuffer
