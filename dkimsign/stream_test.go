package dkimsign_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dkimsign"
)

const canary = "CANARY-7f3a9c-results-positive"

// verifying is a Transport that streams the content it is handed into
// go-msgauth's verifier, and, while it has the delivery, reads every file
// in spoolDir.
type verifying struct {
	signers  []*dkimsign.Signer
	spoolDir string
	written  atomic.Int64
	results  []*dkim.Verification
	spooled  []spoolFile // the spool files, as seen during Deliver
}

// spoolFile is what a look at a spool file found.
type spoolFile struct {
	size      int64
	plaintext bool // it holds the canary or the Subject field
}

// grep reads a file in pieces, so as not to add its size to the heap, and
// reports whether any of the needles occurs in it.
func grep(name string, needles ...string) (spoolFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return spoolFile{}, err
	}
	defer f.Close()
	var out spoolFile
	buf := make([]byte, 0, 64<<10)
	piece := make([]byte, 32<<10)
	for {
		n, err := f.Read(piece)
		out.size += int64(n)
		buf = append(buf, piece[:n]...)
		for _, x := range needles {
			out.plaintext = out.plaintext || bytes.Contains(buf, []byte(x))
		}
		// Keep a tail, so that a needle across two pieces is found.
		if keep := 64; len(buf) > keep {
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func (v *verifying) Deliver(_ context.Context, d *mailsec.Delivery) (*mailsec.DeliveryResult, error) {
	if v.spoolDir != "" {
		ents, err := os.ReadDir(v.spoolDir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			sf, err := grep(filepath.Join(v.spoolDir, e.Name()), canary, "Subject: big")
			if err != nil {
				return nil, err
			}
			v.spooled = append(v.spooled, sf)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		n, err := d.Content.WriteTo(pw)
		v.written.Store(n)
		pw.CloseWithError(err)
	}()
	var err error
	v.results, err = dkim.VerifyWithOptions(pr, &dkim.VerifyOptions{LookupTXT: lookup(v.signers...)})
	pr.CloseWithError(errors.New("verifier done"))
	if err != nil {
		return nil, err
	}
	res := &mailsec.DeliveryResult{Recipients: make([]mailsec.RecipientResult, len(d.To))}
	for i, to := range d.To {
		res.Recipients[i] = mailsec.RecipientResult{Address: to, Accepted: true}
	}
	return res, nil
}

// A 100 MB attachment (40 MB under the race detector), generated on the
// fly, is signed and sent with the heap far below its size; the spool on
// disk holds no plaintext, and is gone once the delivery is over.
func TestLargeAttachmentSignedStreaming(t *testing.T) {
	size := int64(100 << 20)
	if raceEnabled {
		size = 40 << 20
	}
	ss := signers(t, "example.com")
	dir := t.TempDir()
	v := &verifying{signers: ss, spoolDir: dir}
	s := newSender(t, v, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}, SpoolDir: dir})

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	_, err := s.Send(context.Background(), &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"},
		Subject: "big", Text: "Your results: " + canary,
		Attachments: []mailsec.Attachment{{Filename: "big.bin", Content: &pattern{left: size}}}})
	close(stop)
	<-done
	if len(v.spooled) != 1 || v.spooled[0].size < size {
		t.Fatalf("want one spool file of at least %d bytes during the delivery, saw %+v", size, v.spooled)
	}
	if v.spooled[0].plaintext {
		t.Fatal("the spool file holds plaintext")
	}
	if err != nil {
		t.Fatal(err)
	}
	if w := v.written.Load(); w < size {
		t.Fatalf("only %d bytes written", w)
	}
	if len(v.results) != 2 {
		t.Fatalf("%d signatures verified, want 2", len(v.results))
	}
	for _, r := range v.results {
		if r.Err != nil {
			t.Fatalf("signature of the large message: %v", r.Err)
		}
	}
	grown := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("attachment %d MB, wire %d MB, heap in use grew by at most %.1f MB", size>>20, v.written.Load()>>20, float64(grown)/(1<<20))
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d bytes while signing and sending", grown)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d files left in the spool directory", len(ents))
	}
}

// A small message stays in memory: nothing is written to the spool
// directory at all.
func TestSmallMessageNotSpooledToDisk(t *testing.T) {
	ss := signers(t, "example.com")
	dir := t.TempDir()
	v := &verifying{signers: ss, spoolDir: dir}
	s := newSender(t, v, &dkimsign.Options{Domains: map[string][]*dkimsign.Signer{"example.com": ss}, SpoolDir: dir})
	if _, err := s.Send(context.Background(), &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"},
		Subject: "small", Text: canary}); err != nil {
		t.Fatal(err)
	}
	if len(v.spooled) != 0 {
		t.Fatalf("%d spool files for a small message", len(v.spooled))
	}
	if len(v.results) != 2 || v.results[0].Err != nil || v.results[1].Err != nil {
		t.Fatalf("verifications: %+v", v.results)
	}
}

// pattern yields left pseudo-random bytes without holding them.
type pattern struct {
	left int64
	x    uint64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		p.x = p.x*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.x >> 56)
	}
	p.left -= int64(len(b))
	return len(b), nil
}
