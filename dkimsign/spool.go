package dkimsign

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/chacha20poly1305"
)

// A spool keeps one delivery's content between the pass that hashes it
// and the passes that send it. Up to its memory limit it is a buffer; past
// that it moves to a temporary file, sealed in chunks with
// XChaCha20-Poly1305 under a key drawn for this spool alone and held only
// in memory (invariant 10: nothing readable at rest). Each chunk's nonce
// holds the chunk's number and whether it is the last one, so chunks
// cannot be reordered, dropped or cut off unnoticed (the STREAM
// construction of Hoang, Reyhanitabar, Rogaway and Vizár).
//
// A spool is written once, then read any number of times, possibly at
// once: readers use ReadAt on the file, which is safe for concurrent use.
type spool struct {
	dir   string // where the file goes; "" for os.TempDir
	limit int    // bytes kept in memory before the spool moves to a file

	mem bytes.Buffer // the content, while it fits in memory

	f      *os.File
	aead   cipher.AEAD
	chunk  []byte // plaintext waiting to be sealed, up to spoolChunk bytes
	n      uint64 // chunks sealed so far
	sealed []byte // scratch for a sealed chunk
	closed bool
}

// spoolChunk is the plaintext size of a sealed chunk.
const spoolChunk = 64 << 10

// sealedChunk is the size of a full chunk on disk.
const sealedChunk = spoolChunk + chacha20poly1305.Overhead

func newSpool(dir string, limit int) *spool {
	return &spool{dir: dir, limit: limit}
}

// Write appends p to the content.
func (s *spool) Write(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("dkimsign: write to a closed spool")
	}
	if s.f == nil {
		if s.mem.Len()+len(p) <= s.limit {
			return s.mem.Write(p)
		}
		if err := s.toFile(); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(p) {
		k := min(spoolChunk-len(s.chunk), len(p)-n)
		s.chunk = append(s.chunk, p[n:n+k]...)
		n += k
		if len(s.chunk) == spoolChunk {
			if err := s.seal(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// toFile moves the content written so far from memory to a sealed file.
func (s *spool) toFile() error {
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	aead, err := chacha20poly1305.NewX(key)
	clear(key)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, "mailsec-dkim-*.spool")
	if err != nil {
		return fmt.Errorf("dkimsign: spool: %w", err)
	}
	s.f, s.aead = f, aead
	s.chunk = make([]byte, 0, spoolChunk)
	s.sealed = make([]byte, 0, sealedChunk)
	held := s.mem.Bytes()
	s.mem = bytes.Buffer{}
	_, err = s.Write(held)
	clear(held)
	return err
}

func (s *spool) nonce(i uint64, last bool) []byte {
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	binary.BigEndian.PutUint64(nonce[chacha20poly1305.NonceSizeX-9:], i)
	if last {
		nonce[chacha20poly1305.NonceSizeX-1] = 1
	}
	return nonce
}

// seal writes the pending chunk to the file.
func (s *spool) seal(last bool) error {
	s.sealed = s.aead.Seal(s.sealed[:0], s.nonce(s.n, last), s.chunk, nil)
	clear(s.chunk)
	s.chunk = s.chunk[:0]
	s.n++
	if _, err := s.f.Write(s.sealed); err != nil {
		return fmt.Errorf("dkimsign: spool: %w", err)
	}
	return nil
}

// finish ends the writing: the last chunk is sealed. The spool can then
// be read.
func (s *spool) finish() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.f == nil {
		return nil
	}
	return s.seal(true)
}

// WriteTo writes the whole content to w. It may be called any number of
// times, from several goroutines at once, after finish.
func (s *spool) WriteTo(w io.Writer) (int64, error) {
	if s.f == nil {
		n, err := w.Write(s.mem.Bytes())
		return int64(n), err
	}
	var total int64
	buf := make([]byte, sealedChunk)
	var plain []byte
	for i := uint64(0); i < s.n; i++ {
		last := i == s.n-1
		k, err := s.f.ReadAt(buf, int64(i)*sealedChunk)
		if err != nil && !(last && errors.Is(err, io.EOF)) {
			return total, fmt.Errorf("dkimsign: spool: %w", err)
		}
		plain, err = s.aead.Open(plain[:0], s.nonce(i, last), buf[:k], nil)
		if err != nil {
			return total, errors.New("dkimsign: spool: a sealed chunk does not open: the file was changed")
		}
		n, err := w.Write(plain)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Close removes the file, if any, and forgets the key.
func (s *spool) Close() error {
	s.mem = bytes.Buffer{}
	s.aead = nil
	if s.f == nil {
		return nil
	}
	name := s.f.Name()
	err := s.f.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}
