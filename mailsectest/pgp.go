package mailsectest

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// PGPAlgorithm selects the public-key algorithm of a test key.
type PGPAlgorithm int

// Algorithms for NewPGPKey. The zero value is Curve25519 (Ed25519 primary
// key, X25519 encryption subkey), the fastest to generate.
const (
	PGPCurve25519 PGPAlgorithm = iota
	PGPRSA2048
	PGPRSA3072
	// PGPRSA1024 is too weak for mailsec: use it to test the refusal.
	PGPRSA1024
)

// PGPKeyOptions shapes a test key made by NewPGPKey. The zero value is a
// valid Curve25519 key with one user ID and one encryption subkey, created
// a minute ago, that never expires.
type PGPKeyOptions struct {
	Algorithm PGPAlgorithm
	// Expired makes the primary key expire a day before now.
	Expired bool
	// Revoked adds a revocation signature to the primary key.
	Revoked bool
	// SignOnly leaves out the encryption subkey.
	SignOnly bool
	// RevokedEncryptionSubkey revokes the only encryption subkey.
	RevokedEncryptionSubkey bool
	// V6 makes an RFC 9580 version 6 key, which gpg 2.2 cannot read.
	V6 bool
	// Now is the reference time; zero means time.Now.
	Now time.Time
}

// NewPGPKey generates an OpenPGP key (with its private part) whose one
// user ID is `name <addr>`. RSA-3072 takes about a second; generate such
// keys once per test binary.
func NewPGPKey(name, addr string, o PGPKeyOptions) (*openpgp.Entity, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	created := now.Add(-time.Minute)
	cfg := &packet.Config{
		DefaultHash:   crypto.SHA256,
		DefaultCipher: packet.CipherAES256,
		V6Keys:        o.V6,
	}
	switch o.Algorithm {
	case PGPCurve25519:
		cfg.Algorithm = packet.PubKeyAlgoEdDSA
		cfg.Curve = packet.Curve25519
	case PGPRSA2048, PGPRSA3072, PGPRSA1024:
		cfg.Algorithm = packet.PubKeyAlgoRSA
		cfg.RSABits = map[PGPAlgorithm]int{PGPRSA2048: 2048, PGPRSA3072: 3072, PGPRSA1024: 1024}[o.Algorithm]
	default:
		return nil, fmt.Errorf("mailsectest: unknown PGP algorithm %d", o.Algorithm)
	}
	if o.V6 && o.Algorithm == PGPCurve25519 {
		cfg.Algorithm = packet.PubKeyAlgoEd25519
	}
	if o.Expired {
		created = now.Add(-48 * time.Hour)
		cfg.KeyLifetimeSecs = 24 * 60 * 60
	}
	cfg.Time = func() time.Time { return created }
	e, err := openpgp.NewEntity(name, "", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("mailsectest: generating PGP key: %w", err)
	}
	if o.SignOnly {
		e.Subkeys = nil
	}
	if o.RevokedEncryptionSubkey {
		if len(e.Subkeys) == 0 {
			return nil, errors.New("mailsectest: no encryption subkey to revoke")
		}
		if err := e.RevokeSubkey(&e.Subkeys[0], packet.KeySuperseded, "test", cfg); err != nil {
			return nil, err
		}
	}
	if o.Revoked {
		if err := e.RevokeKey(packet.KeyCompromised, "test", cfg); err != nil {
			return nil, err
		}
	}
	// Round-trip through the wire form so that the entity looks exactly
	// like one read from a key file.
	var buf bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&buf, nil); err != nil {
		return nil, err
	}
	el, err := openpgp.ReadKeyRing(&buf)
	if err != nil {
		return nil, err
	}
	return el[0], nil
}

// ArmorPublic returns e's transferable public key, ASCII-armored.
func ArmorPublic(e *openpgp.Entity) (string, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", err
	}
	if err := e.Serialize(w); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// ArmorPrivate returns e's transferable secret key, ASCII-armored, its
// secret parts encrypted with passphrase (left in clear when passphrase is
// empty). e itself is not changed.
func ArmorPrivate(e *openpgp.Entity, passphrase []byte) (string, error) {
	var raw bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&raw, nil); err != nil {
		return "", err
	}
	el, err := openpgp.ReadKeyRing(&raw)
	if err != nil {
		return "", err
	}
	c := el[0]
	if len(passphrase) > 0 {
		if err := c.EncryptPrivateKeys(passphrase, &packet.Config{DefaultCipher: packet.CipherAES256}); err != nil {
			return "", err
		}
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return "", err
	}
	if err := c.SerializePrivateWithoutSigning(w, nil); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}
