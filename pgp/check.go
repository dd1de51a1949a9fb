package pgp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mailsec/mailsec"
)

// KeyCode says why a key cannot be used, in a form an application can
// switch on (to show its own message, say). KeyError.Reason says the same
// in words, with details.
type KeyCode string

// The codes of KeyError. Those marked "upload" come only from CheckKey;
// the others are what CheckKey and Protect decide alike.
const (
	// KeyUnreadable: upload; not OpenPGP key data, or no key in it.
	KeyUnreadable KeyCode = "unreadable"
	// KeySecret: upload; the data holds a secret key. Nothing of it is
	// kept: the user must upload the public key (gpg --export).
	KeySecret KeyCode = "secret-key"
	// KeyMultiple: upload; more than one key, where one is expected.
	KeyMultiple KeyCode = "multiple-keys"
	// KeyMalformed: a key without a primary key.
	KeyMalformed KeyCode = "malformed"
	// KeyWrongAddress: no user ID of the key has the address.
	KeyWrongAddress KeyCode = "wrong-address"
	// KeyUserIDRevoked: the user ID for the address is revoked or its
	// self-signature expired.
	KeyUserIDRevoked KeyCode = "user-id-revoked"
	// KeyUnsupportedVersion: a version 5 or 6 key or subkey, refused
	// unless Options.AllowV6Keys (gpg 2.2 cannot read them).
	KeyUnsupportedVersion KeyCode = "unsupported-version"
	// KeyWeak: DSA, ElGamal or RSA under 2048 bits.
	KeyWeak KeyCode = "weak-algorithm"
	// KeyRevoked: the primary key is revoked.
	KeyRevoked KeyCode = "revoked"
	// KeyNoSelfSignature: the primary key has no valid self-signature.
	KeyNoSelfSignature KeyCode = "no-self-signature"
	// KeyExpired: the primary key or its self-signature expired.
	KeyExpired KeyCode = "expired"
	// KeyNoEncryptionSubkey: no valid (non-expired, non-revoked)
	// encryption-capable key.
	KeyNoEncryptionSubkey KeyCode = "no-encryption-subkey"
	// KeySignerNotAuthor: Options.Signer has no valid user ID for the
	// message's From or Sender address. Not about a recipient's key.
	KeySignerNotAuthor KeyCode = "signer-not-author"
)

// KeyError explains why a key cannot be used. Protect returns it as the
// Err of the *mailsec.ProtectionError for the recipient, which already
// states the address, key ID and reason, so there its message is only
// the full fingerprint; CheckKey and a Signer that does not match the
// author return it alone, and its message says everything.
//
// It matches mailsec.ErrNoKey (errors.Is), except with Code
// KeySignerNotAuthor; the upload codes (KeyUnreadable, KeySecret,
// KeyMultiple) also match mailsec.ErrInvalid. Retrying with the same key
// never helps: Temporary is false.
type KeyError struct {
	Address     string // the recipient or author the key was for
	KeyID       string // 16 hex digits; empty when no key was read
	Fingerprint string
	Code        KeyCode
	Reason      string // the code in words, with details: "weak algorithm: RSA-1024"

	// wrapped is set when a ProtectionError carries the rest.
	wrapped bool
}

func (e *KeyError) Error() string {
	if e.wrapped {
		return "fingerprint " + e.Fingerprint
	}
	s := "pgp: "
	if e.Address != "" {
		s += e.Address + ": "
	}
	if e.Fingerprint != "" {
		s += "key " + e.Fingerprint + ": "
	}
	return s + e.Reason
}

// Is matches mailsec.ErrNoKey and, for a refused upload,
// mailsec.ErrInvalid.
func (e *KeyError) Is(target error) bool {
	switch target {
	case mailsec.ErrNoKey:
		return e.Code != KeySignerNotAuthor
	case mailsec.ErrInvalid:
		return e.Code == KeyUnreadable || e.Code == KeySecret || e.Code == KeyMultiple
	}
	return false
}

// Temporary is false: the same key is refused again.
func (e *KeyError) Temporary() bool { return false }

// checked is a key that passed every check, with the key to encrypt to.
type checked struct {
	entity  *openpgp.Entity
	fpr     string
	enc     *packet.PublicKey
	expires time.Time // zero: never
}

// check applies the key checks in order and returns the depth reached
// with the error, so that among several failing keys the most nearly
// valid one is reported. A key without the address in a user ID is the
// least relevant failure, so that check comes first. CheckKey and
// Protector.resolve both decide with it.
func check(e *openpgp.Entity, addr string, now time.Time, allowV6 bool) (c checked, depth int, kerr *KeyError) {
	fail := func(d int, code KeyCode, reason string) (checked, int, *KeyError) {
		return checked{}, d, &KeyError{Address: addr, KeyID: keyID(e), Fingerprint: Fingerprint(e), Code: code, Reason: reason}
	}
	if e == nil || e.PrimaryKey == nil {
		return fail(0, KeyMalformed, "malformed key")
	}
	want := foldAddr(addr)
	found, revokedUID := false, false
	var uidSig *packet.Signature
	for _, id := range e.Identities {
		if want == "" || id.UserId == nil || foldAddr(id.UserId.Email) != want {
			continue
		}
		if id.Revoked(now) || id.SelfSignature == nil || id.SelfSignature.SigExpired(now) {
			revokedUID = true
			continue
		}
		if !found || outlasts(sigExpiry(id.SelfSignature), sigExpiry(uidSig)) {
			uidSig = id.SelfSignature
		}
		found = true
	}
	if !found {
		if revokedUID {
			return fail(1, KeyUserIDRevoked, "user ID for this address is revoked or expired")
		}
		return fail(1, KeyWrongAddress, "no user ID for this address")
	}
	if e.PrimaryKey.Version >= 5 && !allowV6 {
		return fail(2, KeyUnsupportedVersion, fmt.Sprintf("version %d key (gpg 2.2 cannot read it)", e.PrimaryKey.Version))
	}
	if w := weak(e.PrimaryKey); w != "" {
		return fail(3, KeyWeak, "weak algorithm: "+w)
	}
	if e.Revoked(now) {
		return fail(4, KeyRevoked, "revoked")
	}
	selfSig, _ := e.PrimarySelfSignature()
	if selfSig == nil {
		return fail(4, KeyNoSelfSignature, "no valid self-signature")
	}
	if e.PrimaryKey.KeyExpired(selfSig, now) || selfSig.SigExpired(now) {
		return fail(4, KeyExpired, "expired")
	}
	k, ok := e.EncryptionKey(now)
	if !ok {
		return fail(6, KeyNoEncryptionSubkey, "no valid encryption subkey")
	}
	if w := weak(k.PublicKey); w != "" {
		return fail(7, KeyWeak, "weak algorithm: "+w)
	}
	if k.PublicKey.Version >= 5 && !allowV6 {
		return fail(7, KeyUnsupportedVersion, fmt.Sprintf("version %d subkey (gpg 2.2 cannot read it)", k.PublicKey.Version))
	}
	exp := earliest(
		keyExpiry(e.PrimaryKey, selfSig), sigExpiry(selfSig), sigExpiry(uidSig),
		keyExpiry(k.PublicKey, k.SelfSignature), sigExpiry(k.SelfSignature))
	return checked{entity: e, fpr: Fingerprint(e), enc: k.PublicKey, expires: exp}, 8, nil
}

// outlasts reports whether expiry a is later than b, zero meaning never.
func outlasts(a, b time.Time) bool {
	return !b.IsZero() && (a.IsZero() || a.After(b))
}

// keyExpiry is when pk expires according to sig; zero when never.
func keyExpiry(pk *packet.PublicKey, sig *packet.Signature) time.Time {
	if pk == nil || sig == nil || sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return time.Time{}
	}
	return pk.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
}

// sigExpiry is when sig expires; zero when never.
func sigExpiry(sig *packet.Signature) time.Time {
	if sig == nil || sig.SigLifetimeSecs == nil || *sig.SigLifetimeSecs == 0 {
		return time.Time{}
	}
	return sig.CreationTime.Add(time.Duration(*sig.SigLifetimeSecs) * time.Second)
}

// earliest returns the earliest non-zero time, or zero.
func earliest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if !t.IsZero() && (out.IsZero() || t.Before(out)) {
			out = t
		}
	}
	return out
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

// DefaultExpiryWarning is how long before a key expires CheckKey warns
// and Protect notes it, when Options.ExpiryWarning is zero.
const DefaultExpiryWarning = 30 * 24 * time.Hour

// maxUpload bounds the key data CheckKey reads.
const maxUpload = 1 << 20

// expiryWarning returns the note for a key expiring within the window,
// or "".
func expiryWarning(expires, now time.Time, window time.Duration) string {
	if expires.IsZero() || window < 0 {
		return ""
	}
	if window == 0 {
		window = DefaultExpiryWarning
	}
	left := expires.Sub(now)
	if left > window {
		return ""
	}
	days := int(left.Hours() / 24)
	when := "in " + fmt.Sprint(days) + " days"
	switch days {
	case 0:
		when = "within a day"
	case 1:
		when = "in 1 day"
	}
	return fmt.Sprintf("key expires %s (%s)", when, expires.UTC().Format(time.DateOnly))
}

// CheckedKey is a key CheckKey accepted: what to store for the address.
type CheckedKey struct {
	// Entity is the parsed public key, ready for a KeyRing (Add,
	// Replace) or a KeySource.
	Entity *openpgp.Entity
	// Address is the address it was checked for, as given.
	Address     string
	Fingerprint string // upper-case hex, as Fingerprint returns
	KeyID       string // 16 hex digits
	// Expires is when the key stops being usable for the address: the
	// earliest expiry of the primary key, its self-signature, the user
	// ID's self-signature and the encryption subkey. Zero: never.
	Expires time.Time
	// Warnings are reasons to tell the user, none of them a refusal: a
	// key that expires within Options.ExpiryWarning, as "key expires in
	// 12 days (2026-12-14)"; a key whose cipher preferences name no AES
	// cipher ("key prefers no AES cipher (3DES, CAST5); AES-128 is used
	// instead"). Protect records the same as notes in Protected.Keys.
	Warnings []string
}

// Armor returns the key as an ASCII-armored public key block, the form
// to keep in a database and read back with ReadKeyRing.
func (c *CheckedKey) Armor() ([]byte, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Entity.Serialize(w); err != nil {
		return nil, fmt.Errorf("pgp: serializing key %s: %w", c.KeyID, err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// CheckKey checks a public key a user uploads for addr (ASCII-armored or
// binary, at most 1 MiB) and returns what to store, or why not. Give it
// the Options the Protector is made with (nil: New's defaults): the
// verdict is the one Protect would reach for addr with this key, from
// the same checks (see "Key checks" in the package documentation), at
// the same time (Options.Now). On top of those, an upload must hold
// exactly one key, and only its public parts.
//
// A refusal is a *KeyError naming addr, with a Code to switch on; it
// matches mailsec.ErrNoKey, and for data that is not one public key
// (KeyUnreadable, KeySecret, KeyMultiple) also mailsec.ErrInvalid. A key
// that expires within Options.ExpiryWarning is accepted with a warning.
// Secret key material is refused and dropped, never returned.
func CheckKey(ctx context.Context, r io.Reader, addr string, o *Options) (ck *CheckedKey, err error) {
	defer recoverTo(&err, "checking key")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts, now := checkOptions(o)
	refuse := func(e *openpgp.Entity, code KeyCode, reason string) error {
		return &KeyError{Address: addr, KeyID: keyID(e), Fingerprint: Fingerprint(e), Code: code, Reason: reason}
	}
	list, secret, err := readKeys(r, maxUpload)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, refuse(nil, KeyUnreadable, "not an OpenPGP public key: "+err.Error())
	}
	if secret {
		return nil, refuse(nil, KeySecret, "the upload holds a secret key; upload the public key only (gpg --armor --export ADDRESS)")
	}
	if len(list) != 1 {
		return nil, refuse(nil, KeyMultiple, fmt.Sprintf("the upload holds %d keys, want exactly 1", len(list)))
	}
	return checkEntity(list[0], addr, now, opts)
}

// CheckEntity checks a key already parsed (read from a KeyRing, from the
// application's database, from a key file) for addr, as CheckKey checks
// an upload: the verdict Protect would reach for addr with this key at
// Options.Now. Use it to re-check stored keys, for instance every night,
// and ask users whose key expires within Options.ExpiryWarning for a new
// one. A key with secret parts is checked as its public key would be.
func CheckEntity(e *openpgp.Entity, addr string, o *Options) (ck *CheckedKey, err error) {
	defer recoverTo(&err, "checking key")
	opts, now := checkOptions(o)
	return checkEntity(e, addr, now, opts)
}

// checkOptions returns the options a check runs with (the zero value for
// nil) and the time it checks against (Options.Now, else the clock).
func checkOptions(o *Options) (Options, time.Time) {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.Now != nil {
		return opts, opts.Now()
	}
	return opts, time.Now()
}

func checkEntity(e *openpgp.Entity, addr string, now time.Time, opts Options) (*CheckedKey, error) {
	c, _, kerr := check(e, addr, now, opts.AllowV6Keys)
	if kerr != nil {
		return nil, kerr
	}
	ck := &CheckedKey{Entity: c.entity, Address: addr, Fingerprint: c.fpr, KeyID: keyID(c.entity), Expires: c.expires}
	if w := expiryWarning(c.expires, now, opts.ExpiryWarning); w != "" {
		ck.Warnings = append(ck.Warnings, w)
	}
	if w := preferenceNote(c.entity); w != "" {
		ck.Warnings = append(ck.Warnings, w)
	}
	return ck, nil
}
