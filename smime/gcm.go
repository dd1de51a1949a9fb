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
// instructions): sealing an empty plaintext with additional data A gives
// E(K, J0) ⊕ GHASH_H(A ‖ len(A)), from which the hash state after the
// chunk follows with one multiplication by H⁻¹. The state so far enters
// each chunk by being added to its first block, GHASH being linear:
//
//	y' = Σ Aᵢ·H^(m+1-i) with A₁ ⊕ y in place of A₁
//	(E(K, J0) ⊕ Seal(A)) = (y' ⊕ L)·H, L the length block of A

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

// gfInv returns x⁻¹ = x^(2¹²⁸-2), or false when x is zero.
func gfInv(x gf) (gf, bool) {
	if x == (gf{}) {
		return gf{}, false
	}
	r := gf{hi: 1 << 63}
	a := x
	for range 127 {
		a = gfMul(a, a)
		r = gfMul(r, a)
	}
	return r, true
}

// gcmStream encrypts content in chunks and computes its tag. Every chunk
// but the last must be a whole number of blocks.
type gcmStream struct {
	ctr   cipher.Stream
	aead  cipher.AEAD
	nonce [gcmNonceSize]byte
	ekj0  gf // E(K, J0)
	h     gf
	hinv  gf
	y     gf    // GHASH state over the ciphertext so far
	n     int64 // content octets so far
	last  bool  // a chunk that was not whole blocks has been hashed
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
	g := &gcmStream{aead: aead}
	copy(g.nonce[:], nonce)
	var blk [aes.BlockSize]byte
	b.Encrypt(blk[:], blk[:])
	g.h = gfLoad(blk[:])
	var ok bool
	if g.hinv, ok = gfInv(g.h); !ok {
		// E(K, 0) = 0: one key in 2¹²⁸.
		return nil, errors.New("smime: degenerate AES-GCM key; try again")
	}
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
	a := p
	if len(p) < aes.BlockSize {
		clear(g.block[:])
		copy(g.block[:], p)
		a = g.block[:]
	}
	if len(p)%aes.BlockSize != 0 {
		g.last = true
	}
	// A₁ ⊕ y, hashed, then A₁ restored.
	first := gfLoad(a)
	gfAdd(first, g.y).put(a)
	t := g.aead.Seal(g.tag[:0], g.nonce[:], nil, a)
	first.put(a)
	s := gfAdd(gfLoad(t), g.ekj0)
	g.y = gfAdd(gfMul(s, g.hinv), gf{hi: uint64(len(a)) * 8})
	return nil
}

// sum returns the tag: GHASH of the ciphertext and its length block (no
// additional data), encrypted with E(K, J0).
func (g *gcmStream) sum() []byte {
	s := gfAdd(gfMul(gfAdd(g.y, gf{lo: uint64(g.n) * 8}), g.h), g.ekj0)
	s.put(g.tag[:])
	return g.tag[:]
}

func gfAdd(x, y gf) gf { return gf{x.hi ^ y.hi, x.lo ^ y.lo} }
