package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	mrand "math/rand/v2"
	"testing"
)

// The streamed AES-256-GCM gives what crypto/cipher's GCM gives for the
// whole content at once, ciphertext and tag, for sizes around the block
// and chunk boundaries and any split into whole-block chunks.
func TestGCMStreamMatchesAEAD(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	key := make([]byte, 32)
	nonce := make([]byte, gcmNonceSize)
	for _, size := range []int{0, 1, 15, 16, 17, 31, 32, 33, 1000, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 100} {
		for _, step := range []int{16, 64, chunkSize} {
			for i := range key {
				key[i] = byte(rng.UintN(256))
			}
			for i := range nonce {
				nonce[i] = byte(rng.UintN(256))
			}
			plain := make([]byte, size)
			for i := range plain {
				plain[i] = byte(rng.UintN(256))
			}
			b, _ := aes.NewCipher(key)
			aead, _ := cipher.NewGCM(b)
			want := aead.Seal(nil, nonce, plain, nil)

			g, err := newGCMStream(key, nonce)
			if err != nil {
				t.Fatal(err)
			}
			got := bytes.Clone(plain)
			for p := got; len(p) > 0; {
				n := min(step, len(p))
				if err := g.crypt(p[:n]); err != nil {
					t.Fatal(err)
				}
				p = p[n:]
			}
			got = append(got, g.sum()...)
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d step %d: streamed GCM differs from crypto/cipher", size, step)
			}
		}
	}
}

// A partial chunk must be the last: the tag would be wrong otherwise.
func TestGCMStreamPartialLast(t *testing.T) {
	g, err := newGCMStream(make([]byte, 32), make([]byte, gcmNonceSize))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.crypt(make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	if err := g.crypt(make([]byte, 16)); err == nil {
		t.Fatal("a chunk after a partial one was accepted")
	}
}

// Multiplication agrees with SP 800-38D's test case 2 (H·C, C the
// ciphertext block of an all-zero key and IV, is its GHASH before the
// length block), and 1 (x⁰) is its identity.
func TestGFMul(t *testing.T) {
	h := gfLoad(unhex(t, "66e94bd4ef8a2c3b884cfa59ca342b2e"))
	c := gfLoad(unhex(t, "0388dace60b6a392f328c2b971b2fe78"))
	if got, want := gfMul(c, h), gfLoad(unhex(t, "5e2ec746917062882c85b0685353deb7")); got != want {
		t.Fatalf("C·H = %x, want %x", got, want)
	}
	one := gf{hi: 1 << 63}
	if gfMul(h, one) != h || gfMul(one, c) != c {
		t.Fatal("1 is not the identity")
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The content limit of one nonce is enforced before anything is
// encrypted past it.
func TestGCMStreamLimit(t *testing.T) {
	g, err := newGCMStream(make([]byte, 32), make([]byte, gcmNonceSize))
	if err != nil {
		t.Fatal(err)
	}
	g.n = gcmMaxContent - 16
	if err := g.crypt(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := g.crypt(make([]byte, 16)); err != errGCMTooLarge {
		t.Fatalf("past the limit: %v", err)
	}
}
