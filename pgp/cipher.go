package pgp

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// contentSuite is the content encryption of one message: SEIPDv1 with a
// cipher, or SEIPDv2 with an AEAD ciphersuite.
type contentSuite struct {
	cipher packet.CipherFunction // SEIPDv1
	aead   bool                  // SEIPDv2
	suite  packet.CipherSuite    // SEIPDv2
}

// String names the suite as Protected.Keys records it: "aes256-cfb" or
// "aes128-cfb" for SEIPDv1 (CFB with MDC), "aes256-ocb", "aes128-gcm"...
// for SEIPDv2.
func (s contentSuite) String() string {
	if s.aead {
		return cipherName(s.suite.Cipher) + "-" + map[packet.AEADMode]string{
			packet.AEADModeOCB: "ocb", packet.AEADModeGCM: "gcm", packet.AEADModeEAX: "eax"}[s.suite.Mode]
	}
	return cipherName(s.cipher) + "-cfb"
}

func cipherName(c packet.CipherFunction) string {
	switch c {
	case packet.CipherAES256:
		return "aes256"
	case packet.CipherAES192:
		return "aes192"
	case packet.CipherAES128:
		return "aes128"
	}
	return fmt.Sprintf("cipher%d", c)
}

// aeadOrder is the SEIPDv2 ciphersuites used, best first: AES-256 before
// AES-128, and OCB, the mode every RFC 9580 implementation has, first.
var aeadOrder = [...]packet.CipherSuite{
	{Cipher: packet.CipherAES256, Mode: packet.AEADModeOCB},
	{Cipher: packet.CipherAES256, Mode: packet.AEADModeGCM},
	{Cipher: packet.CipherAES256, Mode: packet.AEADModeEAX},
	{Cipher: packet.CipherAES128, Mode: packet.AEADModeOCB},
	{Cipher: packet.CipherAES128, Mode: packet.AEADModeGCM},
	{Cipher: packet.CipherAES128, Mode: packet.AEADModeEAX},
}

// chooseSuite picks the content encryption for keys (see "Ciphers" in
// the package documentation). Only AES-256 and AES-128 are ever chosen,
// whatever the keys prefer: AES-256 when every key lists it in its
// preferred symmetric algorithms, otherwise AES-128, which RFC 9580
// §9.3 makes mandatory to implement and which is implicitly at the end
// of every preference list. A key preferring only 3DES, CAST5, IDEA or
// Blowfish gets AES-128.
func chooseSuite(keys []*openpgp.Entity, allowV2 bool) contentSuite {
	all256, v2 := true, allowV2
	var suites []packet.CipherSuite
	if allowV2 {
		suites = aeadOrder[:]
	}
	for _, e := range keys {
		sig, _ := e.PrimarySelfSignature()
		if sig == nil {
			all256, v2 = false, false
			continue
		}
		if !slices.Contains(sig.PreferredSymmetric, uint8(packet.CipherAES256)) {
			all256 = false
		}
		if !sig.SEIPDv2 {
			v2 = false
		}
		suites = slices.DeleteFunc(slices.Clone(suites), func(s packet.CipherSuite) bool {
			return !slices.ContainsFunc(sig.PreferredCipherSuites, func(p [2]uint8) bool {
				return p[0] == uint8(s.Cipher) && p[1] == uint8(s.Mode)
			})
		})
	}
	if v2 {
		if len(suites) == 0 {
			// RFC 9580 §5.2.3.15: with no ciphersuite in common,
			// AES-128 with OCB, which every implementation has.
			return contentSuite{aead: true, cipher: packet.CipherAES128,
				suite: packet.CipherSuite{Cipher: packet.CipherAES128, Mode: packet.AEADModeOCB}}
		}
		return contentSuite{aead: true, cipher: suites[0].Cipher, suite: suites[0]}
	}
	if all256 {
		return contentSuite{cipher: packet.CipherAES256}
	}
	return contentSuite{cipher: packet.CipherAES128}
}

// encryptTo writes the public-key encrypted session key packets for keys
// and opens the encrypted data packet (SEIPDv1 with MDC, or SEIPDv2) with
// a literal data packet inside; closing the writer it returns finishes
// both. This is openpgp.Encrypt without a signature or compression, with
// the cipher chosen here rather than from the keys' preferences alone.
func encryptTo(w io.Writer, keys []*packet.PublicKey, cs contentSuite, cfg *packet.Config) (io.WriteCloser, error) {
	if len(keys) == 0 {
		return nil, errors.New("pgp: no key to encrypt to")
	}
	if cs.cipher != packet.CipherAES256 && cs.cipher != packet.CipherAES128 {
		return nil, fmt.Errorf("pgp: refusing content cipher %d", cs.cipher)
	}
	size := cs.cipher.KeySize()
	if cs.aead {
		size = cs.suite.Cipher.KeySize()
	}
	key := make([]byte, size)
	if _, err := io.ReadFull(cfg.Random(), key); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := packet.SerializeEncryptedKeyAEAD(w, k, cs.cipher, cs.aead, key, cfg); err != nil {
			return nil, fmt.Errorf("encrypting the session key to key %016X: %w", k.KeyId, err)
		}
	}
	data, err := packet.SerializeSymmetricallyEncrypted(w, cs.cipher, cs.aead, cs.suite, key, cfg)
	if err != nil {
		return nil, err
	}
	return packet.SerializeLiteral(data, true, "", 0)
}

// preferenceNote explains, for a key whose preferred symmetric
// algorithms name no AES cipher, that AES-128 is used all the same; ""
// for any other key. A key that lists no preferences at all needs no
// note: AES-128 is its implicit preference.
func preferenceNote(e *openpgp.Entity) string {
	sig, _ := e.PrimarySelfSignature()
	if sig == nil || len(sig.PreferredSymmetric) == 0 {
		return ""
	}
	var names []string
	for _, c := range sig.PreferredSymmetric {
		switch packet.CipherFunction(c) {
		case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
			return ""
		}
		names = append(names, symmetricName(c))
	}
	return "key prefers no AES cipher (" + strings.Join(names, ", ") + "); AES-128 is used instead"
}

// symmetricName names an OpenPGP symmetric algorithm (RFC 9580 §9.3).
func symmetricName(c uint8) string {
	switch c {
	case 1:
		return "IDEA"
	case 2:
		return "3DES"
	case 3:
		return "CAST5"
	case 4:
		return "Blowfish"
	case 10:
		return "Twofish"
	case 11, 12, 13:
		return fmt.Sprintf("Camellia-%d", 128+64*int(c-11))
	}
	return fmt.Sprintf("algorithm %d", c)
}
