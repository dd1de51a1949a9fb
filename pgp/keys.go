package pgp

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/mailsec/mailsec/internal/syntax"
)

// ErrKeyNotFound reports that a KeySource has no key for an address.
var ErrKeyNotFound = errors.New("pgp: no key found for address")

// maxKeyRing bounds what ReadKeyRing and ReadSigningKey accept.
const maxKeyRing = 16 << 20

// KeySource finds recipients' public keys. Lookup returns every candidate
// key for addr (the Protector picks a valid one), or an error matching
// ErrKeyNotFound (an empty slice means the same). Implementations must be
// safe for concurrent use.
type KeySource interface {
	Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error)
}

// KeyRing is a fixed set of public keys, indexed by the e-mail addresses
// of their user IDs. It implements KeySource and is safe for concurrent
// use; it is not modified after ReadKeyRing returns it. The zero KeyRing,
// like NewKeyRing(), holds no key: every Lookup finds none.
type KeyRing struct {
	all    []*openpgp.Entity
	byAddr map[string][]*openpgp.Entity
}

// ReadKeyRing reads OpenPGP keys: one or more ASCII-armored blocks, or
// binary packets. Input that does not parse is an error (never a panic),
// as is input with no key in it.
func ReadKeyRing(r io.Reader) (kr *KeyRing, err error) {
	defer recoverTo(&err, "reading key ring")
	data, err := io.ReadAll(io.LimitReader(r, maxKeyRing+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyRing {
		return nil, fmt.Errorf("pgp: key ring larger than %d bytes", maxKeyRing)
	}
	var list openpgp.EntityList
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
				return nil, fmt.Errorf("pgp: corrupt armored block: %w", err)
			}
			if block.Type != openpgp.PublicKeyType && block.Type != openpgp.PrivateKeyType {
				return nil, fmt.Errorf("pgp: armored block is %q, not a key", block.Type)
			}
			el, err := openpgp.ReadKeyRing(block.Body)
			if err != nil {
				return nil, fmt.Errorf("pgp: corrupt armored block: %w", err)
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
			return nil, fmt.Errorf("pgp: corrupt key data: %w", err)
		}
	}
	if len(list) == 0 {
		return nil, errors.New("pgp: no key in input")
	}
	kr = &KeyRing{byAddr: map[string][]*openpgp.Entity{}}
	for _, e := range list {
		kr.add(e)
	}
	return kr, nil
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
	kr := &KeyRing{byAddr: map[string][]*openpgp.Entity{}}
	for _, e := range keys {
		if e != nil && e.PrimaryKey != nil {
			kr.add(e)
		}
	}
	return kr
}

func (kr *KeyRing) add(e *openpgp.Entity) {
	kr.all = append(kr.all, e)
	seen := map[string]bool{}
	for _, id := range e.Identities {
		if id.UserId == nil {
			continue
		}
		a := foldAddr(id.UserId.Email)
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		kr.byAddr[a] = append(kr.byAddr[a], e)
	}
}

// Entities returns every key in the ring.
func (kr *KeyRing) Entities() []*openpgp.Entity {
	return append([]*openpgp.Entity(nil), kr.all...)
}

// Lookup returns the keys with a user ID whose address is addr (compared
// without regard to ASCII case), or an error matching ErrKeyNotFound.
func (kr *KeyRing) Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	es := kr.byAddr[foldAddr(addr)]
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
	if len(kr.all) != 1 {
		return nil, fmt.Errorf("pgp: signing key file holds %d keys, want 1", len(kr.all))
	}
	e = kr.all[0]
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

// KeyError explains why a recipient's key cannot be used. It is the Err of
// the *mailsec.ProtectionError that Protect returns for that recipient,
// which already states the address, key ID and reason; its own message
// adds the full fingerprint.
type KeyError struct {
	Address     string // the recipient
	KeyID       string // 16 hex digits
	Fingerprint string
	Reason      string // "expired", "revoked", "no valid encryption subkey"...
}

func (e *KeyError) Error() string {
	return "fingerprint " + e.Fingerprint
}

// checked is a key that passed every check, with the subkey to use.
type checked struct {
	entity *openpgp.Entity
	fpr    string
}

// check applies the key checks in order and returns the depth reached
// with the error, so that among several failing keys the most nearly
// valid one is reported. A key without the address in a user ID is the
// least relevant failure, so that check comes first.
func check(e *openpgp.Entity, addr string, now time.Time, allowV6 bool) (c checked, depth int, kerr *KeyError) {
	fail := func(d int, reason string) (checked, int, *KeyError) {
		return checked{}, d, &KeyError{Address: addr, KeyID: keyID(e), Fingerprint: Fingerprint(e), Reason: reason}
	}
	if e == nil || e.PrimaryKey == nil {
		return fail(0, "malformed key")
	}
	want := foldAddr(addr)
	found, revokedUID := false, false
	for _, id := range e.Identities {
		if id.UserId == nil || foldAddr(id.UserId.Email) != want {
			continue
		}
		if id.Revoked(now) || id.SelfSignature == nil || id.SelfSignature.SigExpired(now) {
			revokedUID = true
			continue
		}
		found = true
	}
	if !found {
		if revokedUID {
			return fail(1, "user ID for this address is revoked or expired")
		}
		return fail(1, "no user ID for this address")
	}
	if e.PrimaryKey.Version >= 5 && !allowV6 {
		return fail(2, fmt.Sprintf("version %d key (gpg 2.2 cannot read it)", e.PrimaryKey.Version))
	}
	if w := weak(e.PrimaryKey); w != "" {
		return fail(3, "weak algorithm: "+w)
	}
	if e.Revoked(now) {
		return fail(4, "revoked")
	}
	selfSig, _ := e.PrimarySelfSignature()
	if selfSig == nil {
		return fail(4, "no valid self-signature")
	}
	if e.PrimaryKey.KeyExpired(selfSig, now) || selfSig.SigExpired(now) {
		return fail(4, "expired")
	}
	k, ok := e.EncryptionKey(now)
	if !ok {
		return fail(6, "no valid encryption subkey")
	}
	if w := weak(k.PublicKey); w != "" {
		return fail(7, "weak algorithm: "+w)
	}
	if k.PublicKey.Version >= 5 && !allowV6 {
		return fail(7, fmt.Sprintf("version %d subkey (gpg 2.2 cannot read it)", k.PublicKey.Version))
	}
	return checked{entity: e, fpr: Fingerprint(e)}, 8, nil
}

// weak names a public-key algorithm mailsec does not encrypt to or trust.
func weak(pk *packet.PublicKey) string {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoDSA:
		return "DSA"
	case packet.PubKeyAlgoElGamal:
		return "ElGamal"
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		bits, err := pk.BitLength()
		if err != nil {
			return "RSA of unknown size"
		}
		if bits < 2048 {
			return fmt.Sprintf("RSA-%d", bits)
		}
	}
	return ""
}

// recoverTo turns a panic inside the crypto library into an error.
func recoverTo(err *error, what string) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("pgp: %s: internal error in the OpenPGP library: %v", what, v)
	}
}
