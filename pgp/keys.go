package pgp

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/mailsec/mailsec/internal/syntax"
)

// ErrKeyNotFound reports that a KeySource has no key for an address.
var ErrKeyNotFound = errors.New("pgp: no key found for address")

// maxKeyRing bounds what ReadKeyRing and ReadSigningKey accept.
const maxKeyRing = 16 << 20

// KeySource finds recipients' public keys; KeyRing, WKD and an
// application's own database implement it. Lookup returns every
// candidate key for addr: the Protector checks each (CheckKey's checks)
// and uses the first valid one, so a source need not filter expired or
// revoked keys, and a source that also returns keys not naming addr
// cannot make the Protector use them. Its errors decide what the Sender
// does:
//
//   - an error matching ErrKeyNotFound, or no key and no error: the
//     recipient has no key, and gets what the plan says for a recipient
//     without a key (nothing, under RequireProtection);
//   - any other error: the source could not answer (a database down, a
//     timeout). The recipient is reported as a temporary failure and
//     receives nothing: it is never treated as keyless, so a policy that
//     prefers protection cannot send in clear because a lookup failed.
//
// Lookup must honour ctx and be safe for concurrent use; it is called
// once per recipient per Send, so a source backed by a database should
// answer from an index on the address. The keys it returns must not be
// modified afterwards. A source keeping keys as text stores what
// CheckedKey.Armor returns and parses it with ReadKeyRing.
type KeySource interface {
	Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error)
}

// KeyRing is a set of public keys, indexed by the e-mail addresses of
// their user IDs. It implements KeySource and is safe for concurrent use:
// an application may Add, Replace and Remove keys while Sends run, and
// every Lookup that starts after one of those returns sees its effect (a
// Send already under way keeps the key it found). The zero KeyRing, like
// NewKeyRing(), holds no key: every Lookup finds none.
//
// A key given to a KeyRing must not be modified afterwards: Sends running
// at the same time read it.
type KeyRing struct {
	mu   sync.Mutex // serialises writers; readers load snap
	snap atomic.Pointer[ringSnap]
}

// ringSnap is one immutable state of a KeyRing.
type ringSnap struct {
	all    []*openpgp.Entity
	byAddr map[string][]*openpgp.Entity
}

// ReadKeyRing reads OpenPGP keys: one or more ASCII-armored blocks, or
// binary packets. Input that does not parse is an error (never a panic),
// as is input with no key in it.
func ReadKeyRing(r io.Reader) (kr *KeyRing, err error) {
	defer recoverTo(&err, "reading key ring")
	list, _, err := readKeys(r, maxKeyRing)
	if err != nil {
		return nil, err
	}
	return NewKeyRing(list...), nil
}

// readKeys reads at most limit bytes of armored or binary keys. secret
// reports whether any of them came with secret key material (an armored
// PRIVATE KEY block, or secret key packets).
func readKeys(r io.Reader, limit int) (list openpgp.EntityList, secret bool, err error) {
	data, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > limit {
		return nil, false, fmt.Errorf("pgp: key data larger than %d bytes", limit)
	}
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		rest := data
		for {
			i := bytes.Index(rest, []byte("-----BEGIN PGP"))
			if i < 0 {
				break
			}
			rest = rest[i:]
			block, err := armor.Decode(bytes.NewReader(rest))
			if err != nil {
				return nil, false, fmt.Errorf("pgp: corrupt armored block: %w", err)
			}
			if block.Type != openpgp.PublicKeyType && block.Type != openpgp.PrivateKeyType {
				return nil, false, fmt.Errorf("pgp: armored block is %q, not a key", block.Type)
			}
			secret = secret || block.Type == openpgp.PrivateKeyType
			el, err := openpgp.ReadKeyRing(block.Body)
			if err != nil {
				return nil, false, fmt.Errorf("pgp: corrupt armored block: %w", err)
			}
			list = append(list, el...)
			end := bytes.Index(rest, []byte("-----END PGP"))
			if end < 0 {
				break
			}
			rest = rest[end+len("-----END PGP"):]
		}
	} else {
		list, err = openpgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			return nil, false, fmt.Errorf("pgp: corrupt key data: %w", err)
		}
	}
	if len(list) == 0 {
		return nil, false, errors.New("pgp: no key in input")
	}
	for _, e := range list {
		secret = secret || e.PrivateKey != nil
	}
	return list, secret, nil
}

// LoadKeyRing reads the key file at path with ReadKeyRing.
func LoadKeyRing(path string) (*KeyRing, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadKeyRing(f)
}

// NewKeyRing returns a KeyRing holding the given keys (nil ones are left
// out). With none, it is an empty ring: for an application that has no
// recipients' keys yet, whose recipients then get what their plan says
// for a recipient without a key.
func NewKeyRing(keys ...*openpgp.Entity) *KeyRing {
	kr := &KeyRing{}
	kr.Add(keys...)
	return kr
}

// load returns the current state; the zero KeyRing has none.
func (kr *KeyRing) load() *ringSnap {
	if s := kr.snap.Load(); s != nil {
		return s
	}
	return &ringSnap{}
}

// update replaces the key list with edit's result and re-indexes it.
func (kr *KeyRing) update(edit func(all []*openpgp.Entity) []*openpgp.Entity) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	old := kr.load().all
	all := edit(append([]*openpgp.Entity(nil), old...))
	s := &ringSnap{all: all, byAddr: map[string][]*openpgp.Entity{}}
	for _, e := range all {
		seen := map[string]bool{}
		for _, a := range addresses(e) {
			if !seen[a] {
				seen[a] = true
				s.byAddr[a] = append(s.byAddr[a], e)
			}
		}
	}
	kr.snap.Store(s)
}

// addresses returns the folded addresses of e's user IDs.
func addresses(e *openpgp.Entity) []string {
	var out []string
	for _, id := range e.Identities {
		if id.UserId == nil {
			continue
		}
		if a := foldAddr(id.UserId.Email); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// usable reports whether e can go into a KeyRing at all.
func usable(e *openpgp.Entity) bool { return e != nil && e.PrimaryKey != nil }

// Add adds keys to the ring (nil ones are left out). A key whose
// fingerprint the ring already holds replaces that one in place: adding
// a refreshed copy of a key (a new expiry date, a revocation) updates it.
// Add does not check the keys; CheckKey does, as Protect will.
func (kr *KeyRing) Add(keys ...*openpgp.Entity) {
	kr.update(func(all []*openpgp.Entity) []*openpgp.Entity {
		for _, e := range keys {
			if !usable(e) {
				continue
			}
			all = putKey(all, e)
		}
		return all
	})
}

// putKey replaces the key with e's fingerprint in all, or appends e.
func putKey(all []*openpgp.Entity, e *openpgp.Entity) []*openpgp.Entity {
	fpr := Fingerprint(e)
	for i, old := range all {
		if Fingerprint(old) == fpr {
			all[i] = e
			return all
		}
	}
	return append(all, e)
}

// Replace makes keys the ones the ring holds for addr: every key with a
// user ID for addr is removed (for all of its addresses: a key is kept or
// dropped whole), then keys are added as Add does. Replace with no keys
// removes addr's keys. A Send that starts after Replace returns uses the
// new keys; one under way keeps the key it found. A key without a user
// ID for addr is added too, but Lookup(addr) does not return it: check
// an uploaded key with CheckKey first.
func (kr *KeyRing) Replace(addr string, keys ...*openpgp.Entity) {
	want := foldAddr(addr)
	kr.update(func(all []*openpgp.Entity) []*openpgp.Entity {
		kept := all[:0]
		for _, e := range all {
			if !slices.Contains(addresses(e), want) {
				kept = append(kept, e)
			}
		}
		for _, e := range keys {
			if usable(e) {
				kept = putKey(kept, e)
			}
		}
		return kept
	})
}

// Remove removes the key with the given fingerprint (hex, as Fingerprint
// returns it; case and spaces do not matter) and reports whether the ring
// held it.
func (kr *KeyRing) Remove(fingerprint string) bool {
	want := strings.ToUpper(strings.ReplaceAll(fingerprint, " ", ""))
	found := false
	kr.update(func(all []*openpgp.Entity) []*openpgp.Entity {
		return slices.DeleteFunc(all, func(e *openpgp.Entity) bool {
			if Fingerprint(e) == want {
				found = true
				return true
			}
			return false
		})
	})
	return found
}

// Len returns the number of keys in the ring.
func (kr *KeyRing) Len() int { return len(kr.load().all) }

// Entities returns every key in the ring.
func (kr *KeyRing) Entities() []*openpgp.Entity {
	return append([]*openpgp.Entity(nil), kr.load().all...)
}

// Lookup returns the keys with a user ID whose address is addr (compared
// without regard to ASCII case), or an error matching ErrKeyNotFound.
func (kr *KeyRing) Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	es := kr.load().byAddr[foldAddr(addr)]
	if len(es) == 0 {
		return nil, ErrKeyNotFound
	}
	return append([]*openpgp.Entity(nil), es...), nil
}

// ReadSigningKey reads an armored (or binary) secret key and decrypts its
// secret parts with passphrase. A key whose secret parts are encrypted
// needs the right passphrase; a key without a usable signing key is
// refused. The passphrase is never part of an error.
func ReadSigningKey(r io.Reader, passphrase []byte) (e *openpgp.Entity, err error) {
	defer recoverTo(&err, "reading signing key")
	kr, err := ReadKeyRing(r)
	if err != nil {
		return nil, err
	}
	all := kr.Entities()
	if len(all) != 1 {
		return nil, fmt.Errorf("pgp: signing key file holds %d keys, want 1", len(all))
	}
	e = all[0]
	if e.PrivateKey == nil {
		return nil, fmt.Errorf("pgp: key %s has no secret part (export it with gpg --export-secret-keys)", keyID(e))
	}
	encrypted := e.PrivateKey.Encrypted
	for _, s := range e.Subkeys {
		encrypted = encrypted || (s.PrivateKey != nil && s.PrivateKey.Encrypted)
	}
	if encrypted {
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("pgp: key %s is protected by a passphrase and none was given", keyID(e))
		}
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			return nil, fmt.Errorf("pgp: key %s: wrong passphrase or unsupported protection", keyID(e))
		}
	}
	if _, ok := e.SigningKey(time.Now()); !ok {
		return nil, fmt.Errorf("pgp: key %s has no valid signing key", keyID(e))
	}
	return e, nil
}

// Fingerprint returns the primary key's fingerprint in upper-case hex, as
// gpg prints it without spaces.
func Fingerprint(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

// keyID is the 16-digit key ID gpg shows with --keyid-format long.
func keyID(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	return fmt.Sprintf("%016X", e.PrimaryKey.KeyId)
}

// foldAddr is the form addresses are compared in: ASCII letters lowered,
// as gpg compares them, and the domain in A-labels.
func foldAddr(s string) string { return syntax.FoldAddress(s) }

// recoverTo turns a panic inside the crypto library into an error.
func recoverTo(err *error, what string) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("pgp: %s: internal error in the OpenPGP library: %v", what, v)
	}
}
