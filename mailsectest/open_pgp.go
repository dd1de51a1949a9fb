package mailsectest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/emersion/go-message"
)

// OpenPGP decrypts a received PGP/MIME message (RFC 3156
// multipart/encrypted, as package pgp writes it) with key, a recipient's
// secret key, and returns its protected content. When the content is
// signed (a multipart/signed inside the encryption, or a signature in the
// OpenPGP message itself), the signature must verify with one of signers'
// public keys: a message signed by another key, one whose signature does
// not verify, or a signed one without signers to check it with, is an
// error. A message that is not encrypted is an error too.
func OpenPGP(raw []byte, key *openpgp.Entity, signers ...*openpgp.Entity) (*Opened, error) {
	if key == nil {
		return nil, errors.New("mailsectest: OpenPGP: no key")
	}
	outer, params, _, err := readOuter(raw, "multipart/encrypted")
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(params["protocol"], "application/pgp-encrypted") {
		return nil, fmt.Errorf("mailsectest: multipart/encrypted with protocol %q, not application/pgp-encrypted", params["protocol"])
	}
	armored, err := pgpEncryptedPart(raw)
	if err != nil {
		return nil, err
	}
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		return nil, fmt.Errorf("mailsectest: encrypted part is not ASCII-armored: %w", err)
	}
	if block.Type != "PGP MESSAGE" {
		return nil, fmt.Errorf("mailsectest: encrypted part is %s, not PGP MESSAGE", block.Type)
	}
	ring := openpgp.EntityList{key}
	ring = append(ring, signers...)
	md, err := openpgp.ReadMessage(block.Body, ring, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("mailsectest: decrypting: %w", err)
	}
	if !md.IsEncrypted {
		return nil, errors.New("mailsectest: the OpenPGP message is not encrypted")
	}
	content, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, maxOpen))
	if err != nil {
		// The integrity check (MDC or AEAD) fails here.
		return nil, fmt.Errorf("mailsectest: decrypting: %w", err)
	}
	var signer *openpgp.Entity
	if md.IsSigned {
		if md.SignatureError != nil {
			return nil, fmt.Errorf("mailsectest: OpenPGP signature: %w", md.SignatureError)
		}
		if md.SignedBy == nil || !isOneOf(md.SignedBy.Entity, signers) {
			return nil, fmt.Errorf("mailsectest: signed by key %X, not one of the signers given", md.SignedByKeyId)
		}
		signer = md.SignedBy.Entity
	}
	if isMultipartSigned(content) {
		part, sig, err := splitSigned(content, "application/pgp-signature")
		if err != nil {
			return nil, fmt.Errorf("mailsectest: %w", err)
		}
		if len(signers) == 0 {
			return nil, errors.New("mailsectest: the content is signed; pass the signer's public key to verify it")
		}
		sigBytes, err := io.ReadAll(io.LimitReader(sig.Body, maxOpen))
		if err != nil {
			return nil, err
		}
		s, err := openpgp.CheckArmoredDetachedSignature(openpgp.EntityList(signers), bytes.NewReader(part), bytes.NewReader(sigBytes), nil)
		if err != nil {
			return nil, fmt.Errorf("mailsectest: PGP/MIME signature does not verify: %w", err)
		}
		o, err := opened(outer, part)
		if err != nil {
			return nil, err
		}
		o.Signed, o.SignerKey = true, s
		return o, nil
	}
	o, err := opened(outer, content)
	if err != nil {
		return nil, err
	}
	o.Signed, o.SignerKey = signer != nil, signer
	return o, nil
}

// pgpEncryptedPart returns the body of the application/octet-stream part
// of a multipart/encrypted message, after checking its
// application/pgp-encrypted control part.
func pgpEncryptedPart(raw []byte) ([]byte, error) {
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) {
		return nil, err
	}
	mr := e.MultipartReader()
	if mr == nil {
		return nil, errors.New("mailsectest: multipart/encrypted without parts")
	}
	var parts []*message.Entity
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil && !message.IsUnknownCharset(err) {
			return nil, fmt.Errorf("mailsectest: multipart/encrypted: %w", err)
		}
		parts = append(parts, p)
		if len(parts) == 2 {
			break
		}
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("mailsectest: multipart/encrypted with %d parts, want 2", len(parts))
	}
	if t, _, _ := parts[0].Header.ContentType(); t != "application/pgp-encrypted" {
		return nil, fmt.Errorf("mailsectest: first part is %s, not application/pgp-encrypted", t)
	}
	if t, _, _ := parts[1].Header.ContentType(); t != "application/octet-stream" {
		return nil, fmt.Errorf("mailsectest: second part is %s, not application/octet-stream", t)
	}
	return io.ReadAll(io.LimitReader(parts[1].Body, maxOpen))
}

func isOneOf(e *openpgp.Entity, list []*openpgp.Entity) bool {
	for _, x := range list {
		if x != nil && e != nil && x.PrimaryKey.KeyId == e.PrimaryKey.KeyId {
			return true
		}
	}
	return false
}
