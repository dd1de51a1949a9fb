package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// berElems returns the elements of the constructed value b.
func berElems(b []byte) ([]BERValue, error) {
	v, rest, err := ParseBER(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 || !v.Constructed {
		return nil, errors.New("not one constructed value")
	}
	var out []BERValue
	for in := v.Content; len(in) > 0; {
		var c BERValue
		if c, in, err = ParseBER(in, 0); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// openCMS is the test reader behind OpenCMS. It checks the structure as
// RFC 5652 and RFC 5083 give it, and refuses anything else.
func openCMS(der []byte, cert *x509.Certificate, key *rsa.PrivateKey) ([]byte, string, string, error) {
	ci, err := berElems(der)
	if err != nil || len(ci) != 2 || ci[1].Tag != 0xa0 {
		return nil, "", "", fmt.Errorf("ContentInfo: %v", err)
	}
	auth := string(ci[0].Full) == oidAuthEnvelopedData
	if !auth && string(ci[0].Full) != oidEnvelopedData {
		return nil, "", "", fmt.Errorf("content type % x", ci[0].Full)
	}
	ed, err := berElems(ci[1].Content)
	if err != nil {
		return nil, "", "", err
	}
	if want := 3 + btoi(auth); len(ed) != want || string(ed[0].Full) != "\x02\x01\x00" || ed[1].Tag != 0x31 {
		return nil, "", "", fmt.Errorf("%d elements in the (Auth)EnvelopedData, want %d, version 0", len(ed), want)
	}
	// The recipient info for cert.
	var ckey []byte
	var keyAlg string
	for rest := ed[1].Content; len(rest) > 0; {
		var ri struct {
			Version int
			IAS     struct {
				Issuer asn1.RawValue
				Serial asn1.RawValue
			}
			Alg struct {
				OID    asn1.ObjectIdentifier
				Params asn1.RawValue `asn1:"optional"`
			}
			EK []byte
		}
		if rest, err = asn1.Unmarshal(rest, &ri); err != nil {
			return nil, "", "", fmt.Errorf("KeyTransRecipientInfo: %w", err)
		}
		serial, _ := asn1.Marshal(cert.SerialNumber)
		if ri.Version != 0 || !bytes.Equal(ri.IAS.Issuer.FullBytes, cert.RawIssuer) || !bytes.Equal(ri.IAS.Serial.FullBytes, serial) {
			continue
		}
		alg, _ := asn1.Marshal(ri.Alg)
		switch string(alg) {
		case algRSA:
			keyAlg = "rsaEncryption"
			//lint:ignore SA1019 the default key transport, read as every S/MIME client reads it.
			ckey, err = rsa.DecryptPKCS1v15(nil, key, ri.EK)
		case algOAEP:
			keyAlg = "rsaes-oaep-sha256"
			ckey, err = rsa.DecryptOAEP(sha256.New(), nil, key, ri.EK, nil)
		default:
			return nil, "", "", fmt.Errorf("key transport % x", alg)
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("key transport: %w", err)
		}
	}
	if ckey == nil {
		return nil, "", "", errors.New("no recipient info for the certificate")
	}
	eci, err := berElems(ed[2].Full)
	if err != nil || len(eci) != 3 || string(eci[0].Full) != oidData || eci[2].Tag&^0x20 != 0x80 {
		return nil, "", "", fmt.Errorf("EncryptedContentInfo: %v", err)
	}
	var ct []byte
	if eci[2].Constructed {
		chunks, err := berElems(eci[2].Full)
		if err != nil {
			return nil, "", "", err
		}
		for _, c := range chunks {
			if c.Tag != 0x04 {
				return nil, "", "", fmt.Errorf("chunk tag %#x", c.Tag)
			}
			ct = append(ct, c.Content...)
		}
	} else {
		ct = eci[2].Content
	}
	var alg struct {
		OID    asn1.ObjectIdentifier
		Params asn1.RawValue
	}
	if rest, err := asn1.Unmarshal(eci[1].Full, &alg); err != nil || len(rest) != 0 {
		return nil, "", "", fmt.Errorf("content encryption algorithm: %v", err)
	}
	block, err := aes.NewCipher(ckey)
	if err != nil {
		return nil, "", "", err
	}
	switch {
	case !auth && alg.OID.String() == "2.16.840.1.101.3.4.1.42":
		var iv []byte
		if _, err := asn1.Unmarshal(alg.Params.FullBytes, &iv); err != nil || len(iv) != 16 || len(ct)%16 != 0 || len(ct) == 0 {
			return nil, "", "", fmt.Errorf("AES-CBC: IV %d octets, content %d: %v", len(iv), len(ct), err)
		}
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(ct, ct)
		pad := int(ct[len(ct)-1])
		if pad == 0 || pad > 16 || !bytes.Equal(ct[len(ct)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
			return nil, "", "", errors.New("AES-CBC: bad padding")
		}
		return ct[:len(ct)-pad], keyAlg, "aes256-cbc", nil
	case auth && alg.OID.String() == "2.16.840.1.101.3.4.1.46":
		var p struct {
			Nonce  []byte
			ICVLen int
		}
		if rest, err := asn1.Unmarshal(alg.Params.FullBytes, &p); err != nil || len(rest) != 0 || len(p.Nonce) != 12 || p.ICVLen != 16 {
			return nil, "", "", fmt.Errorf("GCMParameters %+v: %v", p, err)
		}
		var mac []byte
		if rest, err := asn1.Unmarshal(ed[3].Full, &mac); err != nil || len(rest) != 0 || len(mac) != 16 {
			return nil, "", "", fmt.Errorf("mac: %v", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, "", "", err
		}
		plain, err := aead.Open(nil, p.Nonce, append(ct, mac...), nil)
		if err != nil {
			return nil, "", "", fmt.Errorf("AES-GCM: %w", err)
		}
		return plain, keyAlg, "aes256-gcm", nil
	}
	return nil, "", "", fmt.Errorf("content encryption %v in %s", alg.OID, map[bool]string{true: "AuthEnvelopedData", false: "EnvelopedData"}[auth])
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
