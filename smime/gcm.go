package smime

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
)

// This file encrypts AES-256-GCM (NIST SP 800-38D) as a stream, for the
// AuthEnvelopedData of cms.go: crypto/cipher's AEAD needs the whole
// plaintext at once, a message does not fit in memory.
//
// The content is encrypted in CTR mode from the counter block after J0,
// as GCM does. The tag is GHASH over the ciphertext, computed chunk by
// chunk with the standard library's GCM (and so its carry-less multiply
// instructions): sealing an empty plaintext with additional data
// A₁…Aₘ gives E(K, J0) ⊕ GHASH_H(A ‖ L), L the length block of A, that
// is E(K, J0) ⊕ (Σ Aᵢ·H^(m+1-i) ⊕ L)·H. The state carried from chunk to
// chunk is w = y·H, y the GHASH state over the ciphertext so far. GHASH
// being linear, adding w to the second block of a chunk adds
// w·H^(m-1) = y·H^m, what the chunk's blocks add to y, so
//
//	E(K, J0) ⊕ Seal(A₁, A₂⊕w, A₃…Aₘ) = y'·H ⊕ L·H = w' ⊕ L·H
//
// A chunk of less than two whole blocks (only ever the last) is hashed a
// block at a time instead: w' = (y ⊕ A)·H·H = w·H ⊕ A·H².

// gcmNonceSize and gcmTagSize are the GCMParameters this package writes
// (RFC 5084 section 3.2): the 12-octet nonce the RFC recommends, and a
// 16-octet ICV.
const (
	gcmNonceSize = 12
	gcmTagSize   = 16
	// gcmMaxContent is the most content one nonce may encrypt: the 32-bit
	// counter of J0+1 must not wrap (2³² - 2 blocks). Below it, CTR mode
	// with a 128-bit counter, as crypto/cipher's, gives GCM's stream.
	gcmMaxContent = (1<<32 - 2) * aes.BlockSize
)

// errGCMTooLarge is returned when the content exceeds what one AES-GCM
// nonce may encrypt (64 GiB).
var errGCMTooLarge = errors.New("smime: content larger than AES-GCM allows (64 GiB)")

// gf is an element of GF(2¹²⁸) in GCM's representation: the block read
// big-endian, the coefficient of x⁰ in the most significant bit of hi.
type gf struct{ hi, lo uint64 }

func gfLoad(b []byte) gf {
	return gf{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

func (x gf) put(b []byte) {
	binary.BigEndian.PutUint64(b, x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
}

// gfMul returns x·y (SP 800-38D algorithm 1), in constant time. It runs
// once or twice per chunk, never per block.
func gfMul(x, y gf) gf {
	var z gf
	v := y
	for i := range 128 {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		m := -bit
		z.hi ^= v.hi & m
		z.lo ^= v.lo & m
		r := -(v.lo & 1)
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ 0xe1<<56&r
	}
	return z
}

// gcmStream encrypts content in chunks and computes its tag. Every chunk
// but the last must be a whole number of blocks.
type gcmStream struct {
	ctr   cipher.Stream
	aead  cipher.AEAD
	nonce [gcmNonceSize]byte
	ekj0  gf    // E(K, J0)
	h, h2 gf    // H and H²
	w     gf    // y·H, y the GHASH state over the ciphertext so far
	n     int64 // content octets so far
	last  bool  // a chunk that was not whole blocks has been hashed
	lh    gf    // L·H for chunks of lhLen octets
	lhLen int
	block [aes.BlockSize]byte
	tag   [gcmTagSize]byte
}

func newGCMStream(key []byte, nonce []byte) (*gcmStream, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("smime: %w", err)
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("smime: %w", err)
	}
	g := &gcmStream{aead: aead, lhLen: -1}
	copy(g.nonce[:], nonce)
	var blk [aes.BlockSize]byte
	b.Encrypt(blk[:], blk[:])
	g.h = gfLoad(blk[:])
	g.h2 = gfMul(g.h, g.h)
	copy(blk[:], nonce)
	binary.BigEndian.PutUint32(blk[12:], 1)
	b.Encrypt(g.block[:], blk[:])
	g.ekj0 = gfLoad(g.block[:])
	binary.BigEndian.PutUint32(blk[12:], 2)
	g.ctr = cipher.NewCTR(b, blk[:])
	clear(blk[:])
	clear(g.block[:])
	return g, nil
}

// crypt encrypts p in place and adds it to the tag.
func (g *gcmStream) crypt(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if g.last {
		return errors.New("smime: internal error: GCM chunk after a partial one")
	}
	if int64(len(p)) > gcmMaxContent-g.n {
		return errGCMTooLarge
	}
	g.n += int64(len(p))
	g.ctr.XORKeyStream(p, p)
	if len(p)%aes.BlockSize != 0 {
		g.last = true
	}
	if len(p) < 2*aes.BlockSize {
		for q := p; len(q) > 0; {
			clear(g.block[:])
			q = q[copy(g.block[:], q):]
			g.w = gfAdd(gfMul(g.w, g.h), gfMul(gfLoad(g.block[:]), g.h2))
		}
		return nil
	}
	// A₂ ⊕ w, hashed, then A₂ restored.
	a2 := p[aes.BlockSize : 2*aes.BlockSize]
	orig := gfLoad(a2)
	gfAdd(orig, g.w).put(a2)
	t := g.aead.Seal(g.tag[:0], g.nonce[:], nil, p)
	orig.put(a2)
	if len(p) != g.lhLen {
		g.lh, g.lhLen = gfMul(gf{hi: uint64(len(p)) * 8}, g.h), len(p)
	}
	g.w = gfAdd(gfAdd(gfLoad(t), g.ekj0), g.lh)
	return nil
}

// sum returns the tag: GHASH of the ciphertext and its length block (no
// additional data), encrypted with E(K, J0).
func (g *gcmStream) sum() []byte {
	s := gfAdd(gfAdd(g.w, gfMul(gf{lo: uint64(g.n) * 8}, g.h)), g.ekj0)
	s.put(g.tag[:])
	return g.tag[:]
}

func gfAdd(x, y gf) gf { return gf{x.hi ^ y.hi, x.lo ^ y.lo} }
