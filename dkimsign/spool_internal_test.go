package dkimsign

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"testing"
)

func TestSpoolReplaysAndDetectsChanges(t *testing.T) {
	data := make([]byte, 3*spoolChunk+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sp := newSpool(t.TempDir(), 1000)
	defer sp.Close()
	for i := 0; i < len(data); i += 7000 {
		if _, err := sp.Write(data[i:min(i+7000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.finish(); err != nil {
		t.Fatal(err)
	}
	if sp.f == nil {
		t.Fatal("content over the limit stayed in memory")
	}
	for range 2 {
		var out bytes.Buffer
		if _, err := sp.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("replay: %v, equal %v", err, bytes.Equal(out.Bytes(), data))
		}
	}
	name := sp.f.Name()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	// Cut off the last chunk: the one before it is not marked last.
	if err := os.Truncate(name, fi.Size()-int64(len(data)%spoolChunk)-24); err != nil {
		t.Fatal(err)
	}
	sp.n--
	if _, err := sp.WriteTo(io.Discard); err == nil {
		t.Fatal("a spool cut short replays without error")
	}
	sp.n++
	// A flipped byte.
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{'x'}, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.WriteTo(io.Discard); err == nil {
		t.Fatal("a changed spool replays without error")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Fatalf("spool file left behind: %v", err)
	}
}
