package pgp

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// referenceArmor is the OpenPGP library's armor (with CRC-24) with
// its LF line endings turned into CRLF, followed by tail.
func referenceArmor(t *testing.T, data []byte, tail string) string {
	t.Helper()
	var b bytes.Buffer
	aw, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(b.String(), "\n", "\r\n") + "\r\n" + tail
}

// writeSplit writes data to w in pieces of random sizes up to max.
func writeSplit(t *testing.T, w io.Writer, data []byte, r *rand.Rand, max int) {
	t.Helper()
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(max))
		if m, err := w.Write(data[:n]); err != nil || m != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		data = data[n:]
	}
}

// TestArmorMatchesLibrary checks that armorWriter writes exactly what the
// OpenPGP library's armor writes (with CRLF), for lengths around every
// line and buffer boundary and writes split in every way, and that the
// library reads it back.
func TestArmorMatchesLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const tail = "\r\n--B--\r\n"
	lengths := []int{1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, armorOut*3/4 - 1, armorOut * 3 / 4, armorOut, 100000}
	for _, n := range lengths {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		want := "-----BEGIN PGP MESSAGE-----\r\n\r\n" + strings.TrimPrefix(referenceArmor(t, data, tail), "-----BEGIN PGP MESSAGE-----\r\n\r\n")
		for _, max := range []int{1, 5, 48, 100, 5000, n + 1} {
			var out bytes.Buffer
			ws := (&writerPool{}).get()
			a := &ws.armor
			a.reset(&out)
			a.text("-----BEGIN PGP MESSAGE-----\r\n\r\n")
			writeSplit(t, a, data, r, max)
			if err := a.finish("-----END PGP MESSAGE-----\r\n", tail); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != want {
				t.Fatalf("length %d, writes up to %d:\ngot  %q\nwant %q", n, max, got, want)
			}
			blk, err := armor.Decode(strings.NewReader(out.String()))
			if err != nil {
				t.Fatalf("length %d: library cannot read the armor: %v", n, err)
			}
			back, err := io.ReadAll(blk.Body)
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("length %d: read back %d bytes (%v), want %d", n, len(back), err, n)
			}
		}
	}
}
