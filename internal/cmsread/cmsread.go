// Package cmsread decrypts the CMS EnvelopedData (RFC 5652) and
// AuthEnvelopedData (RFC 5083, RFC 5084) that package smime writes, with
// the standard library only. It is the reader behind mailsectest.OpenSMIME
// and the tests of package smime: written apart from the writer, from the
// RFCs, so that the two check each other.
//
// It reads what an S/MIME writer of RFC 8551 sends a key transport
// recipient: KeyTransRecipientInfo by issuer and serial number, RSA
// PKCS #1 v1.5 or RSAES-OAEP with SHA-256 key transport, AES-CBC or
// AES-GCM content encryption, definite or indefinite lengths. Anything
// else (originatorInfo, authenticated attributes, other recipient info
// types or algorithms) is an error, never a guess.
package cmsread

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

// Value is one BER value. For an indefinite length, Content runs up to
// the end-of-contents octets and Full includes them.
type Value struct {
	Tag         byte // the identifier octet
	Constructed bool
	Content     []byte
	Full        []byte
}

// maxDepth bounds the nesting ParseBER follows.
const maxDepth = 64

// ParseBER reads one value with a one-octet identifier from b, with
// definite or indefinite length, and returns it and what follows it.
// depth is the nesting of b (0 at the top).
func ParseBER(b []byte, depth int) (v Value, rest []byte, err error) {
	if depth > maxDepth {
		return v, nil, errors.New("ber: too deep")
	}
	if len(b) < 2 {
		return v, nil, errors.New("ber: truncated")
	}
	v.Tag, v.Constructed = b[0], b[0]&0x20 != 0
	if b[0]&0x1f == 0x1f {
		return v, nil, errors.New("ber: multi-octet tag")
	}
	l := int(b[1])
	hdr := 2
	switch {
	case l == 0x80:
		if !v.Constructed {
			return v, nil, errors.New("ber: indefinite primitive")
		}
		in := b[2:]
		for {
			if len(in) >= 2 && in[0] == 0 && in[1] == 0 {
				n := len(b) - len(in)
				v.Content, v.Full = b[2:n], b[:n+2]
				return v, in[2:], nil
			}
			if _, in, err = ParseBER(in, depth+1); err != nil {
				return v, nil, err
			}
		}
	case l > 0x80:
		nb := l & 0x7f
		if nb > 4 || len(b) < 2+nb {
			return v, nil, errors.New("ber: bad length")
		}
		l = 0
		for _, c := range b[2 : 2+nb] {
			l = l<<8 | int(c)
		}
		hdr += nb
		if l < 0 {
			return v, nil, errors.New("ber: bad length")
		}
	}
	if l > len(b)-hdr {
		return v, nil, errors.New("ber: truncated")
	}
	v.Content, v.Full = b[hdr:hdr+l], b[:hdr+l]
	return v, b[hdr+l:], nil
}

// Elements returns the elements of b, one constructed value and nothing
// after it.
func Elements(b []byte) ([]Value, error) {
	v, rest, err := ParseBER(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 || !v.Constructed {
		return nil, errors.New("ber: not one constructed value")
	}
	var out []Value
	for in := v.Content; len(in) > 0; {
		var c Value
		if c, in, err = ParseBER(in, 1); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Names of the algorithms, as Decrypted reports them.
const (
	RSAPKCS1   = "rsaEncryption"
	RSAOAEP256 = "rsaes-oaep-sha256"
	AES128CBC  = "aes128-cbc"
	AES256CBC  = "aes256-cbc"
	AES128GCM  = "aes128-gcm"
	AES256GCM  = "aes256-gcm"
)

// Decrypted is the content of an EnvelopedData or AuthEnvelopedData and
// how it was protected.
type Decrypted struct {
	Content []byte
	// Authenticated is true for an AuthEnvelopedData.
	Authenticated bool
	// KeyTransport is RSAPKCS1 or RSAOAEP256.
	KeyTransport string
	// ContentCipher is one of the AES names above.
	ContentCipher string
}

var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
	oidRSAEncryption     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidSHA256            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidAES128CBC         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES256CBC         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128GCM         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES256GCM         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
)

// Decrypt decrypts der, the BER of a ContentInfo holding an EnvelopedData
// or an AuthEnvelopedData, for the recipient cert with its private key.
// An AuthEnvelopedData whose tag does not verify is an error.
func Decrypt(der []byte, cert *x509.Certificate, key *rsa.PrivateKey) (*Decrypted, error) {
	if cert == nil || key == nil {
		return nil, errors.New("cms: no certificate or no key")
	}
	ci, err := Elements(der)
	if err != nil {
		return nil, fmt.Errorf("cms: ContentInfo: %w", err)
	}
	if len(ci) != 2 || ci[1].Tag != 0xa0 {
		return nil, errors.New("cms: ContentInfo is not contentType and [0] content")
	}
	var ct asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(ci[0].Full, &ct); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("cms: contentType: %v", err)
	}
	d := &Decrypted{}
	switch {
	case ct.Equal(oidEnvelopedData):
	case ct.Equal(oidAuthEnvelopedData):
		d.Authenticated = true
	default:
		return nil, fmt.Errorf("cms: content type %s is not EnvelopedData or AuthEnvelopedData", ct)
	}
	name := map[bool]string{false: "EnvelopedData", true: "AuthEnvelopedData"}[d.Authenticated]
	ed, err := Elements(ci[1].Content)
	if err != nil {
		return nil, fmt.Errorf("cms: %s: %w", name, err)
	}
	// EnvelopedData: version, recipientInfos, encryptedContentInfo.
	// AuthEnvelopedData: version, recipientInfos, authEncryptedContentInfo,
	// mac. The optional parts (originatorInfo, attributes) are refused.
	want := 3
	if d.Authenticated {
		want = 4
	}
	if len(ed) != want || string(ed[0].Full) != "\x02\x01\x00" || ed[1].Tag != 0x31 {
		return nil, fmt.Errorf("cms: %s of %d elements, want %d, version 0 and no optional parts", name, len(ed), want)
	}
	ckey, err := recipientKey(ed[1].Content, cert, key, d)
	if err != nil {
		return nil, fmt.Errorf("cms: %s: %w", name, err)
	}
	eci, err := Elements(ed[2].Full)
	if err != nil || len(eci) != 3 || eci[2].Tag&^0x20 != 0x80 {
		return nil, fmt.Errorf("cms: %s: EncryptedContentInfo without [0] encryptedContent: %v", name, err)
	}
	var inner asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(eci[0].Full, &inner); err != nil || len(rest) != 0 || !inner.Equal(oidData) {
		return nil, fmt.Errorf("cms: %s: encrypted content type %v is not id-data: %v", name, inner, err)
	}
	ciphertext, err := octets(eci[2])
	if err != nil {
		return nil, fmt.Errorf("cms: %s: encryptedContent: %w", name, err)
	}
	var alg pkix.AlgorithmIdentifier
	if rest, err := asn1.Unmarshal(eci[1].Full, &alg); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("cms: %s: contentEncryptionAlgorithm: %v", name, err)
	}
	if d.Authenticated {
		var mac []byte
		if rest, err := asn1.Unmarshal(ed[3].Full, &mac); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("cms: AuthEnvelopedData: mac: %v", err)
		}
		d.Content, err = openGCM(alg, ckey, ciphertext, mac, d)
	} else {
		d.Content, err = openCBC(alg, ckey, ciphertext, d)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: %s: %w", name, err)
	}
	return d, nil
}

// recipientKey finds cert's KeyTransRecipientInfo in infos (the content
// of the RecipientInfos SET) and decrypts the content-encryption key.
func recipientKey(infos []byte, cert *x509.Certificate, key *rsa.PrivateKey, d *Decrypted) ([]byte, error) {
	serial, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		return nil, err
	}
	for rest := infos; len(rest) > 0; {
		var ri struct {
			Version int
			IAS     struct {
				Issuer asn1.RawValue
				Serial asn1.RawValue
			}
			Alg pkix.AlgorithmIdentifier
			EK  []byte
		}
		if rest, err = asn1.Unmarshal(rest, &ri); err != nil {
			return nil, fmt.Errorf("KeyTransRecipientInfo: %w", err)
		}
		if ri.Version != 0 || !bytes.Equal(ri.IAS.Issuer.FullBytes, cert.RawIssuer) || !bytes.Equal(ri.IAS.Serial.FullBytes, serial) {
			continue
		}
		var ckey []byte
		switch {
		case ri.Alg.Algorithm.Equal(oidRSAEncryption):
			if !absentOrNull(ri.Alg.Parameters) {
				return nil, errors.New("rsaEncryption with parameters")
			}
			d.KeyTransport = RSAPKCS1
			//lint:ignore SA1019 the default key transport of S/MIME, read as every client reads it.
			ckey, err = rsa.DecryptPKCS1v15(nil, key, ri.EK)
		case ri.Alg.Algorithm.Equal(oidRSAESOAEP):
			if err := checkOAEP(ri.Alg.Parameters); err != nil {
				return nil, err
			}
			d.KeyTransport = RSAOAEP256
			ckey, err = rsa.DecryptOAEP(sha256.New(), nil, key, ri.EK, nil)
		default:
			return nil, fmt.Errorf("key transport %s", ri.Alg.Algorithm)
		}
		if err != nil {
			return nil, fmt.Errorf("key transport %s: %w", d.KeyTransport, err)
		}
		return ckey, nil
	}
	return nil, fmt.Errorf("no recipient info for %s serial %s", cert.Issuer, cert.SerialNumber)
}

// checkOAEP accepts RSAES-OAEP-params (RFC 4055 section 4.1) of SHA-256
// and MGF1 with SHA-256, the label empty: the one OAEP RFC 8551 readers
// agree on.
func checkOAEP(params asn1.RawValue) error {
	var p struct {
		Hash    pkix.AlgorithmIdentifier `asn1:"explicit,tag:0,optional"`
		MGF     pkix.AlgorithmIdentifier `asn1:"explicit,tag:1,optional"`
		PSource asn1.RawValue            `asn1:"explicit,tag:2,optional"`
	}
	if rest, err := asn1.Unmarshal(params.FullBytes, &p); err != nil || len(rest) != 0 {
		return fmt.Errorf("RSAES-OAEP-params: %v", err)
	}
	var mgfHash pkix.AlgorithmIdentifier
	if rest, err := asn1.Unmarshal(p.MGF.Parameters.FullBytes, &mgfHash); err != nil || len(rest) != 0 {
		return fmt.Errorf("RSAES-OAEP-params: mask generation: %v", err)
	}
	if !p.Hash.Algorithm.Equal(oidSHA256) || !absentOrNull(p.Hash.Parameters) ||
		!p.MGF.Algorithm.Equal(oidMGF1) || !mgfHash.Algorithm.Equal(oidSHA256) || !absentOrNull(mgfHash.Parameters) ||
		len(p.PSource.FullBytes) != 0 {
		return fmt.Errorf("RSAES-OAEP with %s, %s(%s), want SHA-256 and MGF1 with SHA-256 and no label",
			p.Hash.Algorithm, p.MGF.Algorithm, mgfHash.Algorithm)
	}
	return nil
}

func absentOrNull(v asn1.RawValue) bool {
	return len(v.FullBytes) == 0 || bytes.Equal(v.FullBytes, asn1.NullBytes)
}

// octets returns the content of an encryptedContent: primitive, or
// constructed of OCTET STRING chunks.
func octets(v Value) ([]byte, error) {
	if !v.Constructed {
		return v.Content, nil
	}
	chunks, err := Elements(v.Full)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, c := range chunks {
		if c.Tag != 0x04 {
			return nil, fmt.Errorf("chunk with tag %#x, want OCTET STRING", c.Tag)
		}
		out = append(out, c.Content...)
	}
	return out, nil
}

// contentCiphers are the content-encryption algorithms read: AES-CBC in
// an EnvelopedData, AES-GCM in an AuthEnvelopedData.
var contentCiphers = []struct {
	oid     asn1.ObjectIdentifier
	name    string
	keySize int
	auth    bool
}{
	{oidAES128CBC, AES128CBC, 16, false},
	{oidAES256CBC, AES256CBC, 32, false},
	{oidAES128GCM, AES128GCM, 16, true},
	{oidAES256GCM, AES256GCM, 32, true},
}

// contentCipher returns the AES cipher alg names, keyed with ckey, and
// records its name in d; auth says which content type alg came in.
func contentCipher(alg pkix.AlgorithmIdentifier, ckey []byte, auth bool, d *Decrypted) (cipher.Block, error) {
	for _, c := range contentCiphers {
		if !c.oid.Equal(alg.Algorithm) || c.auth != auth {
			continue
		}
		d.ContentCipher = c.name
		if len(ckey) != c.keySize {
			return nil, fmt.Errorf("%s with a key of %d octets", c.name, len(ckey))
		}
		return aes.NewCipher(ckey)
	}
	return nil, fmt.Errorf("content encryption %s", alg.Algorithm)
}

// openCBC decrypts an AES-CBC encryptedContent (RFC 3565): the IV is the
// parameter, the padding that of PKCS #7.
func openCBC(alg pkix.AlgorithmIdentifier, ckey, ct []byte, d *Decrypted) ([]byte, error) {
	block, err := contentCipher(alg, ckey, false, d)
	if err != nil {
		return nil, err
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(alg.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 || len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("%s: IV of %d octets: %v", d.ContentCipher, len(iv), err)
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%s: ciphertext of %d octets", d.ContentCipher, len(ct))
	}
	plain := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > aes.BlockSize || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, fmt.Errorf("%s: bad padding", d.ContentCipher)
	}
	return plain[:len(plain)-pad], nil
}

// openGCM decrypts an AES-GCM authEncryptedContent (RFC 5084) and checks
// its tag, mac: the nonce and the tag's length come from GCMParameters
// (aes-ICVlen 12 when absent). No authAttrs are read, so GCM
// authenticates no additional data.
func openGCM(alg pkix.AlgorithmIdentifier, ckey, ct, mac []byte, d *Decrypted) ([]byte, error) {
	block, err := contentCipher(alg, ckey, true, d)
	if err != nil {
		return nil, err
	}
	var p struct {
		Nonce  []byte
		ICVLen int `asn1:"optional,default:12"`
	}
	if rest, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%s: GCMParameters: %v", d.ContentCipher, err)
	}
	if p.ICVLen < 12 || p.ICVLen > 16 || len(mac) != p.ICVLen {
		return nil, fmt.Errorf("%s: aes-ICVlen %d, mac of %d octets", d.ContentCipher, p.ICVLen, len(mac))
	}
	var aead cipher.AEAD
	switch {
	case len(p.Nonce) == 12:
		aead, err = cipher.NewGCMWithTagSize(block, p.ICVLen)
	case len(p.Nonce) > 0 && p.ICVLen == 16:
		aead, err = cipher.NewGCMWithNonceSize(block, len(p.Nonce))
	default:
		return nil, fmt.Errorf("%s: nonce of %d octets with aes-ICVlen %d", d.ContentCipher, len(p.Nonce), p.ICVLen)
	}
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, p.Nonce, append(bytes.Clone(ct), mac...), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.ContentCipher, err)
	}
	return plain, nil
}
