package outbox

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/mailsec/mailsec"
)

// Key is a secret the outbox seals what it stores with: 32 random bytes,
// kept away from the database (in a secret store, or the environment of
// the processes that open the outbox). Its ID, derived from it, is stored
// beside everything sealed with it, so that the right key opens it after a
// rotation. Its String and GoString methods print the ID, never the
// secret, so that a Key printed by mistake gives nothing away.
type Key struct {
	secret [32]byte
	id     [8]byte
	set    bool
}

// NewKey returns a fresh random key.
func NewKey() Key {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	k, _ := KeyFromBytes(b[:])
	return k
}

// KeyFromBytes returns the key made of b, which must be 32 bytes from a
// cryptographically secure random source.
func KeyFromBytes(b []byte) (Key, error) {
	if len(b) != 32 {
		return Key{}, &mailsec.ConfigError{Field: "outbox key", Value: strconv.Itoa(len(b)) + " bytes",
			Reason: "a key is 32 random bytes (NewKey makes one)"}
	}
	if allZero(b) {
		return Key{}, &mailsec.ConfigError{Field: "outbox key", Value: "32 zero bytes",
			Reason: "not a random key: anyone could open what it seals (NewKey makes one)"}
	}
	var k Key
	copy(k.secret[:], b)
	h := sha256.Sum256(append([]byte("mailsec outbox key id v1\x00"), b...))
	copy(k.id[:], h[:8])
	k.set = true
	return k, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ParseKeys reads keys written as MAILSEC_OUTBOX_KEY has them: each the
// standard base64 of 32 bytes, several separated by commas, the first one
// sealing and all of them opening (a rotation puts the new key first and
// keeps the old ones until nothing sealed with them is left). Spaces
// around each key are ignored. A mistake is a *mailsec.ConfigError that
// says which key, by position, never by value.
func ParseKeys(s string) ([]Key, error) {
	var keys []Key
	for i, f := range strings.Split(s, ",") {
		field := "outbox key " + strconv.Itoa(i+1)
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(f))
		if err != nil {
			return nil, &mailsec.ConfigError{Field: field, Reason: "not standard base64 (a key is the base64 of 32 random bytes)"}
		}
		k, err := KeyFromBytes(b)
		if err != nil {
			reason := "a key is the base64 of 32 random bytes"
			if len(b) == 32 {
				reason += "; these are all zero"
			}
			return nil, &mailsec.ConfigError{Field: field, Value: strconv.Itoa(len(b)) + " bytes", Reason: reason}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// ID identifies the key in stored records: 16 hex digits derived from it
// by a one-way function.
func (k Key) ID() string { return hex.EncodeToString(k.id[:]) }

// Base64 returns the key in the form ParseKeys reads. It is the secret:
// write it only where secrets go.
func (k Key) Base64() string { return base64.StdEncoding.EncodeToString(k.secret[:]) }

// String names the key by its ID.
func (k Key) String() string { return "outbox.Key(" + k.ID() + ")" }

// GoString names the key by its ID, for %#v.
func (k Key) GoString() string { return k.String() }

// Format writes the key's String for every verb, so that no formatting
// of a Key (nor of a struct holding one) prints the secret.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// The first byte of everything stored: how it was stored.
const (
	formPlain  = 0 // as it is: the outbox was opened with Plaintext
	formSealed = 1 // XChaCha20-Poly1305 under a key named by the next 8 bytes
)

// keyring seals with its first key and opens with any; with no key it
// stores plaintext.
type keyring struct {
	keys []ringKey
}

type ringKey struct {
	id   [8]byte
	aead cipher.AEAD
	idem []byte // the HMAC key for idempotency keys and fingerprints
	rpt  []byte // the HMAC key for the TLS-RPT counts' row identifiers
}

// plaintextIdem is the HMAC key for idempotency keys without a Key: the
// digests are then only as secret as the keys themselves.
var plaintextIdem = []byte("mailsec outbox plaintext idempotency v1")

// plaintextRpt is the HMAC key for TLS-RPT row identifiers without a Key.
var plaintextRpt = []byte("mailsec outbox plaintext tlsrpt v1")

func newKeyring(keys []Key) (*keyring, error) {
	kr := &keyring{}
	seen := map[[8]byte]bool{}
	for i, k := range keys {
		if !k.set {
			return nil, &mailsec.ConfigError{Field: "Options.Keys[" + strconv.Itoa(i) + "]", Reason: "the zero Key; make keys with NewKey, ParseKeys or KeyFromBytes"}
		}
		if seen[k.id] {
			return nil, &mailsec.ConfigError{Field: "Options.Keys[" + strconv.Itoa(i) + "]", Value: k.ID(), Reason: "listed twice"}
		}
		seen[k.id] = true
		sk, err := hkdf.Key(sha256.New, k.secret[:], nil, "mailsec outbox v1 seal", chacha20poly1305.KeySize)
		if err != nil {
			return nil, err
		}
		aead, err := chacha20poly1305.NewX(sk)
		if err != nil {
			return nil, err
		}
		ik, err := hkdf.Key(sha256.New, k.secret[:], nil, "mailsec outbox v1 idempotency", 32)
		if err != nil {
			return nil, err
		}
		rk, err := hkdf.Key(sha256.New, k.secret[:], nil, "mailsec outbox v1 tlsrpt", 32)
		if err != nil {
			return nil, err
		}
		kr.keys = append(kr.keys, ringKey{id: k.id, aead: aead, idem: ik, rpt: rk})
	}
	return kr, nil
}

func (kr *keyring) plaintext() bool { return len(kr.keys) == 0 }

// has reports whether the keyring holds the key of that ID.
func (kr *keyring) has(id [8]byte) bool {
	for _, k := range kr.keys {
		if k.id == id {
			return true
		}
	}
	return false
}

// aad binds a sealed value to what it is and where it belongs: its
// purpose ("envelope", "progress", "chunk", "attempt"), the message's ID,
// and a position within the message (a chunk's part and number, an
// attempt's number). A value copied to another row, column or position
// does not open.
func aad(purpose, id, pos string) []byte {
	return []byte("mailsec outbox v1\x00" + purpose + "\x00" + id + "\x00" + pos)
}

// sealHead is what a sealed value holds before its ciphertext: its form,
// its key's ID and its nonce; sealSpare is what sealing adds after the
// plaintext, the tag.
const (
	sealHead  = 1 + 8 + chacha20poly1305.NonceSizeX
	sealSpare = chacha20poly1305.Overhead
)

// seal stores plaintext under the first key, bound to ad.
func (kr *keyring) seal(plain, ad []byte) []byte {
	if kr.plaintext() {
		return append([]byte{formPlain}, plain...)
	}
	k := kr.keys[0]
	out := make([]byte, sealHead, sealHead+len(plain)+sealSpare)
	k.writeHead(out)
	return k.aead.Seal(out, out[9:sealHead], plain, ad)
}

// sealAfter is seal of what b holds after its first sealHead octets, made
// in b's own memory: those octets are left for the sealed value's head,
// and b has capacity for sealSpare octets more (without it, a copy is
// sealed). The plaintext in b is overwritten.
func (kr *keyring) sealAfter(b, ad []byte) []byte {
	plain := b[sealHead:]
	if kr.plaintext() {
		b[sealHead-1] = formPlain
		return b[sealHead-1:]
	}
	if cap(b)-len(b) < sealSpare {
		return kr.seal(plain, ad)
	}
	k := kr.keys[0]
	k.writeHead(b)
	ct := k.aead.Seal(plain[:0], b[9:sealHead], plain, ad)
	return b[:sealHead+len(ct)]
}

// writeHead writes the head of a value sealed under k into b's first
// sealHead octets: the form, the key's ID and a fresh nonce.
func (k *ringKey) writeHead(b []byte) {
	b[0] = formSealed
	copy(b[1:9], k.id[:])
	_, _ = rand.Read(b[9:sealHead])
}

// Why a stored value could not be opened.
var (
	// ErrTampered: a stored value failed authentication: it was changed,
	// truncated, or copied from another row or place, or it is plaintext
	// where the outbox seals. A message that does not open is never sent.
	ErrTampered = errors.New("outbox: stored message does not authenticate")
	// ErrUnknownKey: a stored value was sealed under a key the outbox was
	// not given (a key rotated out too early, or the wrong key list).
	ErrUnknownKey = errors.New("outbox: stored message sealed under a key not configured")
)

// OpenError reports a stored value that could not be opened. Nothing of
// the message is sent while it does not open.
type OpenError struct {
	ID    string // the outbox message; for a TLS-RPT count, its day and row
	What  string // "envelope", "progress", "chunk", "attempt", "TLS-RPT count"
	KeyID string // the key it names, when it names one
	Err   error  // ErrTampered or ErrUnknownKey
}

func (e *OpenError) Error() string {
	s := "outbox: message " + e.ID + ": " + e.What + ": "
	if e.What == rptWhat {
		s = "outbox: " + e.What + " " + e.ID + ": "
	}
	if errors.Is(e.Err, ErrUnknownKey) {
		return s + "sealed under key " + e.KeyID + ", which is not among the outbox's keys"
	}
	return s + "does not authenticate (changed, truncated, copied from elsewhere, or not sealed)"
}

func (e *OpenError) Unwrap() error { return e.Err }

// Temporary reports an unknown key: the outbox may be given it.
func (e *OpenError) Temporary() bool { return errors.Is(e.Err, ErrUnknownKey) }

// open returns what seal stored, checking it is bound to ad.
func (kr *keyring) open(stored, ad []byte, id, what string) ([]byte, error) {
	return kr.openIn(false, stored, ad, id, what)
}

// consume is open for a stored value its caller gives up: the value is
// opened in its own memory, with no copy made, and that memory then holds
// the plaintext. A sealed value that fails authentication is left zeroed
// where its ciphertext was; one refused before that (too short, an
// unknown key or form) is left as it was.
func (kr *keyring) consume(stored, ad []byte, id, what string) ([]byte, error) {
	return kr.openIn(true, stored, ad, id, what)
}

// openIn is open, in stored's own memory when inPlace.
func (kr *keyring) openIn(inPlace bool, stored, ad []byte, id, what string) ([]byte, error) {
	fail := func(keyID string, err error) ([]byte, error) {
		return nil, &OpenError{ID: id, What: what, KeyID: keyID, Err: err}
	}
	if len(stored) == 0 {
		return fail("", ErrTampered)
	}
	switch stored[0] {
	case formPlain:
		if !kr.plaintext() {
			return fail("", ErrTampered)
		}
		return stored[1:], nil
	case formSealed:
		if len(stored) < 1+8+chacha20poly1305.NonceSizeX {
			return fail("", ErrTampered)
		}
		id8, _ := sealedWith(stored)
		for _, k := range kr.keys {
			if k.id != id8 {
				continue
			}
			ct := stored[9+chacha20poly1305.NonceSizeX:]
			var dst []byte
			if inPlace {
				dst = ct[:0]
			}
			plain, err := k.aead.Open(dst, stored[9:9+chacha20poly1305.NonceSizeX], ct, ad)
			if err != nil {
				return fail(hex.EncodeToString(id8[:]), ErrTampered)
			}
			return plain, nil
		}
		return fail(hex.EncodeToString(id8[:]), ErrUnknownKey)
	}
	return fail("", ErrTampered)
}

// sealed reports whether stored was sealed (rather than kept as plaintext).
func sealed(stored []byte) bool { return len(stored) > 0 && stored[0] == formSealed }

// sealedWith returns the ID of the key stored (or its first 9 bytes) was
// sealed under; ok is false when it was not sealed.
func sealedWith(stored []byte) (id [8]byte, ok bool) {
	if !sealed(stored) || len(stored) < 9 {
		return id, false
	}
	return [8]byte(stored[1:9]), true
}

// idemDigests returns the digest of an idempotency key under each key,
// the sealing key's first (the one stored with a new message).
func (kr *keyring) idemDigests(key string) [][]byte {
	if kr.plaintext() {
		return [][]byte{mac(plaintextIdem, "key", []byte(key))}
	}
	out := make([][]byte, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = mac(k.idem, "key", []byte(key))
	}
	return out
}

// fingerprint returns the stored form of a content digest under the key
// whose idempotency digest is at index i of idemDigests.
func (kr *keyring) fingerprint(i int, digest []byte) []byte {
	if kr.plaintext() {
		return mac(plaintextIdem, "content", digest)
	}
	return mac(kr.keys[i].idem, "content", digest)
}

func mac(key []byte, purpose string, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose + "\x00"))
	m.Write(b)
	return m.Sum(nil)
}

// rptKeys returns the HMAC keys for TLS-RPT row identifiers, the sealing
// key's first, each with the ID of the key it derives from ("" without a
// Key).
func (kr *keyring) rptKeys() []rptKey {
	if kr.plaintext() {
		return []rptKey{{key: plaintextRpt}}
	}
	out := make([]rptKey, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = rptKey{id: hex.EncodeToString(k.id[:]), key: k.rpt}
	}
	return out
}

type rptKey struct {
	id  string
	key []byte
}
