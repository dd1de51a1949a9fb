package outbox

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"unsafe"
)

func testKeyring(t testing.TB, keys ...Key) *keyring {
	t.Helper()
	kr, err := newKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// within reports whether p points into b's memory.
func within(p *byte, b []byte) bool {
	if len(b) == 0 || p == nil {
		return false
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	at := uintptr(unsafe.Pointer(p))
	return at >= start && at < start+uintptr(len(b))
}

// consume opens a value in its own memory, and refuses what open refuses,
// with the same errors.
func TestConsumeOpensInPlace(t *testing.T) {
	k := NewKey()
	kr := testKeyring(t, k)
	plain := bytes.Repeat([]byte("lab result 42\n"), 300)
	ad := aad("envelope", "m1", "")

	stored := kr.seal(plain, ad)
	got, err := kr.consume(stored, ad, "m1", "envelope")
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("consume: %v, %d bytes", err, len(got))
	}
	if !within(&got[0], stored) {
		t.Fatal("the plaintext is a copy, not the stored value's memory")
	}
	// open leaves the stored value as it was.
	stored = kr.seal(plain, ad)
	kept := bytes.Clone(stored)
	if got, err := kr.open(stored, ad, "m1", "envelope"); err != nil || !bytes.Equal(got, plain) || !bytes.Equal(stored, kept) {
		t.Fatalf("open: %v; stored value changed: %v", err, !bytes.Equal(stored, kept))
	}

	refused := map[string]struct {
		stored []byte
		ad     []byte
		want   error
	}{
		"ciphertext changed": {stored: flip(kr.seal(plain, ad), 40), ad: ad, want: ErrTampered},
		"tag changed":        {stored: flip(kr.seal(plain, ad), -1), ad: ad, want: ErrTampered},
		"nonce changed":      {stored: flip(kr.seal(plain, ad), 12), ad: ad, want: ErrTampered},
		"another row":        {stored: kr.seal(plain, aad("envelope", "m2", "")), ad: ad, want: ErrTampered},
		"truncated":          {stored: kr.seal(plain, ad)[:20], ad: ad, want: ErrTampered},
		"empty":              {stored: []byte{}, ad: ad, want: ErrTampered},
		"plaintext form":     {stored: append([]byte{formPlain}, plain...), ad: ad, want: ErrTampered},
		"unknown form":       {stored: append([]byte{7}, plain...), ad: ad, want: ErrTampered},
		"another key":        {stored: testKeyring(t, NewKey()).seal(plain, ad), ad: ad, want: ErrUnknownKey},
	}
	for name, c := range refused {
		got, err := kr.consume(c.stored, c.ad, "m1", "envelope")
		var oe *OpenError
		if !errors.Is(err, c.want) || !errors.As(err, &oe) || oe.ID != "m1" || oe.What != "envelope" || got != nil {
			t.Errorf("%s: got %d bytes, %v; want %v", name, len(got), err, c.want)
		}
		if bytes.Contains(c.stored, plain[:20]) && c.stored[0] == formSealed {
			t.Errorf("%s: plaintext left in the refused value's memory", name)
		}
	}

	// An outbox that stores plaintext gives back the stored value's own
	// memory as well.
	pkr := testKeyring(t)
	stored = pkr.seal(plain, ad)
	if got, err := pkr.consume(stored, ad, "m1", "envelope"); err != nil || !bytes.Equal(got, plain) || !within(&got[0], stored) {
		t.Fatalf("plaintext outbox: %v", err)
	}
}

// flip changes one byte of b: at i, or from the end when i is negative.
func flip(b []byte, i int) []byte {
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 0x80
	return b
}

// sealedRow is a row holding sm, sealed as Enqueue stores it, with an
// empty progress.
func sealedRow(t testing.TB, kr *keyring, id string, sm *storedMessage) *row {
	t.Helper()
	env, err := encodeEnvelope(sm)
	if err != nil {
		t.Fatal(err)
	}
	return &row{id: id, state: Queued,
		envelope: kr.seal(env, aad("envelope", id, "")),
		progress: kr.seal([]byte(`{}`), aad("progress", id, ""))}
}

// An attempt opens the envelope in the row's memory: the text and HTML are
// not copied, the row gives its envelope up, and a second open of the row
// fails rather than read what is left there.
func TestOpenMessageConsumesEnvelope(t *testing.T) {
	kr := testKeyring(t, NewKey())
	ob := &Outbox{keys: kr}
	sm := envelopeSample()
	r := sealedRow(t, kr, "m1", sm)
	mem := r.envelope

	_, got, err := ob.openMessage(r)
	if err != nil || !reflect.DeepEqual(got, sm) {
		t.Fatalf("openMessage: %v\n%+v\nwant\n%+v", err, got, sm)
	}
	if r.envelope != nil {
		t.Error("the row kept its envelope")
	}
	if !within(unsafe.StringData(got.Text), mem) || !within(unsafe.StringData(got.HTML), mem) {
		t.Error("the text or HTML is a copy")
	}
	var oe *OpenError
	if _, _, err := ob.openMessage(r); !errors.As(err, &oe) || !errors.Is(err, ErrTampered) {
		t.Fatalf("second open of a consumed row: %v", err)
	}

	// A tampered envelope is refused, consumed as well.
	r = sealedRow(t, kr, "m2", sm)
	flip(r.envelope, 100)
	if _, _, err := ob.openMessage(r); !errors.As(err, &oe) || oe.What != "envelope" || !errors.Is(err, ErrTampered) {
		t.Fatalf("tampered envelope: %v", err)
	}
	if r.envelope != nil {
		t.Error("the row kept a refused envelope")
	}

	// Status and the other readers open a copy, and leave the row whole.
	r = sealedRow(t, kr, "m3", sm)
	for range 2 {
		got, err := ob.openEnvelope(r.id, r.envelope)
		if err != nil || !reflect.DeepEqual(got, sm) || within(unsafe.StringData(got.Text), r.envelope) {
			t.Fatalf("openEnvelope: %v", err)
		}
	}
}

// What opening a message's envelope allocates, as an attempt opens it (in
// place) and as the other readers do (a copy); both start from the
// database driver's copy of the column, as a scanned row does.
//
//	go test -run '^$' -bench OpenEnvelope -benchmem ./outbox
func BenchmarkOpenEnvelope(b *testing.B) {
	kr := testKeyring(b, NewKey())
	ob := &Outbox{keys: kr}
	sm := envelopeSample()
	sm.Text, sm.HTML = string(bytes.Repeat([]byte("x"), 7000)), string(bytes.Repeat([]byte("y"), 3000))
	sealed := sealedRow(b, kr, "m1", sm).envelope
	b.Run("copy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ob.openEnvelope("m1", bytes.Clone(sealed)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("in place", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ob.openEnvelopeIn(true, "m1", bytes.Clone(sealed)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Enqueue seals an envelope in the memory it was written into, leaving
// room for the seal's head and tag; the value is what seal stores, and
// opens as seal's does, under a key and without one.
func TestSealAfterInPlace(t *testing.T) {
	sm := envelopeSample()
	ad := aad("envelope", "m1", "")
	for name, kr := range map[string]*keyring{"sealed": testKeyring(t, NewKey()), "plaintext": testKeyring(t)} {
		b, err := encodeEnvelopeAfter(sm, sealHead, sealSpare)
		if err != nil {
			t.Fatal(err)
		}
		stored := kr.sealAfter(b, ad)
		if !within(&stored[len(stored)-1], b[:cap(b)]) {
			t.Errorf("%s: sealed into new memory", name)
		}
		if id, ok := sealedWith(stored); ok != !kr.plaintext() || ok && id != kr.keys[0].id {
			t.Errorf("%s: stored in the wrong form", name)
		}
		plain, err := kr.open(stored, ad, "m1", "envelope")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, err := decodeEnvelope(plain); err != nil || !reflect.DeepEqual(got, sm) {
			t.Fatalf("%s: %v", name, err)
		}
		if kr.plaintext() {
			continue
		}
		if bytes.Contains(stored, []byte(sm.Subject)) {
			t.Errorf("%s: plaintext left in the sealed value", name)
		}
		// Without room for the tag a copy is sealed; an empty value
		// seals too.
		for _, b := range [][]byte{append(make([]byte, sealHead), "no room"...)[: sealHead+7 : sealHead+7], make([]byte, sealHead, sealHead+sealSpare)} {
			want := bytes.Clone(b[sealHead:])
			stored := kr.sealAfter(b, ad)
			if plain, err := kr.open(stored, ad, "m1", "envelope"); err != nil || !bytes.Equal(plain, want) {
				t.Fatalf("%s: %q: %v", name, want, err)
			}
		}
	}
}
