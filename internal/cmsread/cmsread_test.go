package cmsread

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
)

// gcmParams is GCMParameters (RFC 5084); ICVLen 0 leaves it out.
type gcmParams struct {
	Nonce  []byte
	ICVLen int `asn1:"optional"`
}

// authEnveloped writes, with encoding/asn1 (definite lengths), an
// AuthEnvelopedData of content for cert: AES-256-GCM with the given
// nonce and tag length, its GCMParameters params, and the tag as mac.
func authEnveloped(t *testing.T, cert *x509.Certificate, key *rsa.PrivateKey, content, nonce []byte, tagLen int, params gcmParams) []byte {
	t.Helper()
	ckey := make([]byte, 32)
	if _, err := rand.Read(ckey); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(ckey)
	if err != nil {
		t.Fatal(err)
	}
	var aead cipher.AEAD
	if len(nonce) == 12 {
		aead, err = cipher.NewGCMWithTagSize(block, tagLen)
	} else {
		aead, err = cipher.NewGCMWithNonceSize(block, len(nonce))
	}
	if err != nil {
		t.Fatal(err)
	}
	sealed := aead.Seal(nil, nonce, content, nil)
	ct, mac := sealed[:len(content)], sealed[len(content):]
	//lint:ignore SA1019 the key transport the reader must read.
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, ckey)
	if err != nil {
		t.Fatal(err)
	}
	p, err := asn1.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	type ias struct {
		Issuer asn1.RawValue
		Serial *big.Int
	}
	type ktri struct {
		Version int
		IAS     ias
		Alg     pkix.AlgorithmIdentifier
		EK      []byte
	}
	type eci struct {
		Type    asn1.ObjectIdentifier
		Alg     pkix.AlgorithmIdentifier
		Content []byte `asn1:"tag:0"`
	}
	type aed struct {
		Version int
		RIs     []ktri `asn1:"set"`
		ECI     eci
		MAC     []byte
	}
	type contentInfo struct {
		Type    asn1.ObjectIdentifier
		Content aed `asn1:"explicit,tag:0"`
	}
	der, err := asn1.Marshal(contentInfo{Type: oidAuthEnvelopedData, Content: aed{
		RIs: []ktri{{IAS: ias{Issuer: asn1.RawValue{FullBytes: cert.RawIssuer}, Serial: cert.SerialNumber},
			Alg: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue}, EK: ek}},
		ECI: eci{Type: oidData, Alg: pkix.AlgorithmIdentifier{Algorithm: oidAES256GCM, Parameters: asn1.RawValue{FullBytes: p}}, Content: ct},
		MAC: mac,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// The nonce and the tag length come from GCMParameters: aes-ICVlen
// absent means 12 (RFC 5084), a nonce other than 12 octets is read with
// a 16-octet tag, and a mac whose length differs from aes-ICVlen, or a
// changed octet of it, is refused.
func TestDecryptGCMParameters(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := asn1.Marshal(pkix.Name{CommonName: "cmsread test"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	cert := &x509.Certificate{RawIssuer: issuer, SerialNumber: big.NewInt(0x1234)}
	content := []byte("Subject: lab result\r\n\r\ncanary-7d1e\r\n")
	nonce12, nonce16 := bytes.Repeat([]byte{7}, 12), bytes.Repeat([]byte{9}, 16)
	for _, tc := range []struct {
		name   string
		nonce  []byte
		tagLen int
		params gcmParams
		err    string
	}{
		{"ICVlen absent, 12", nonce12, 12, gcmParams{Nonce: nonce12}, ""},
		{"ICVlen 16", nonce12, 16, gcmParams{Nonce: nonce12, ICVLen: 16}, ""},
		{"ICVlen 13", nonce12, 13, gcmParams{Nonce: nonce12, ICVLen: 13}, ""},
		{"16-octet nonce", nonce16, 16, gcmParams{Nonce: nonce16, ICVLen: 16}, ""},
		{"ICVlen absent, mac of 16", nonce12, 16, gcmParams{Nonce: nonce12}, "aes-ICVlen 12, mac of 16"},
		{"ICVlen 8", nonce12, 16, gcmParams{Nonce: nonce12, ICVLen: 8}, "aes-ICVlen 8"},
		{"16-octet nonce, ICVlen 12", nonce16, 16, gcmParams{Nonce: nonce16, ICVLen: 12}, "aes-ICVlen 12, mac of 16"},
		{"other nonce", nonce12, 16, gcmParams{Nonce: bytes.Repeat([]byte{8}, 12), ICVLen: 16}, "message authentication failed"},
	} {
		der := authEnveloped(t, cert, key, content, tc.nonce, tc.tagLen, tc.params)
		d, err := Decrypt(der, cert, key)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !bytes.Equal(d.Content, content) || !d.Authenticated || d.ContentCipher != AES256GCM || d.KeyTransport != RSAPKCS1 {
			t.Errorf("%s: %+v", tc.name, d)
		}
		// The mac is the last octets of the encoding.
		bad := bytes.Clone(der)
		bad[len(bad)-1] ^= 1
		if _, err := Decrypt(bad, cert, key); err == nil || !strings.Contains(err.Error(), "message authentication failed") {
			t.Errorf("%s: a changed tag: %v", tc.name, err)
		}
	}
	other := &x509.Certificate{RawIssuer: issuer, SerialNumber: big.NewInt(0x1235)}
	if _, err := Decrypt(authEnveloped(t, cert, key, content, nonce12, 12, gcmParams{Nonce: nonce12}), other, key); err == nil ||
		!strings.Contains(err.Error(), "no recipient info") {
		t.Errorf("another certificate: %v", err)
	}
}
