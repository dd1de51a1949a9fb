package smime

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

type cmsKey struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

var (
	cmsKeysOnce sync.Once
	cmsKeys     [2]cmsKey
	cmsKeysErr  error
)

// testKeys returns two self-signed RSA-2048 certificates with their keys,
// made once per test binary.
func testKeys(t testing.TB) [2]cmsKey {
	t.Helper()
	cmsKeysOnce.Do(func() {
		for i := range cmsKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				cmsKeysErr = err
				return
			}
			// A serial with the high bit set needs a leading zero octet.
			serial := new(big.Int).SetBytes([]byte{0x80 + byte(i), 1, 2, 3, 4, 5, 6, 7})
			tmpl := &x509.Certificate{
				SerialNumber: serial,
				Subject:      pkix.Name{CommonName: "cms test " + string(rune('a'+i))},
				NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
				KeyUsage: x509.KeyUsageKeyEncipherment,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
			if err != nil {
				cmsKeysErr = err
				return
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				cmsKeysErr = err
				return
			}
			cmsKeys[i] = cmsKey{c, k}
		}
	})
	if cmsKeysErr != nil {
		t.Fatal(cmsKeysErr)
	}
	return cmsKeys
}

// seal runs content through a cmsWriter in writes of step octets (all at
// once when step is 0) and returns the base64 output.
func seal(t testing.TB, s sealing, content []byte, canon bool, step int) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	cw, err := newCMSWriter(&out, s, canon)
	if err != nil {
		t.Fatal(err)
	}
	defer cw.release()
	if step == 0 {
		step = max(len(content), 1)
	}
	for p := content; len(p) > 0; {
		n := min(step, len(p))
		if _, err := cw.Write(p[:n]); err != nil {
			return nil, err
		}
		p = p[n:]
	}
	n, err := cw.close()
	if err != nil {
		return nil, err
	}
	if n != int64(out.Len()) {
		t.Fatalf("close reports %d octets, %d written", n, out.Len())
	}
	return out.Bytes(), nil
}

func unbase64(t testing.TB, b []byte) []byte {
	t.Helper()
	lines := bytes.Split(b, []byte("\r\n"))
	if len(lines[len(lines)-1]) != 0 {
		t.Fatal("output does not end in CRLF")
	}
	for i, l := range lines[:len(lines)-1] {
		if len(l) > 76 || len(l) == 0 || (len(l) < 76 && i < len(lines)-2) {
			t.Fatalf("line %d has %d characters", i, len(l))
		}
	}
	der, err := base64.StdEncoding.DecodeString(string(bytes.ReplaceAll(b, []byte("\r\n"), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Content of every size around the block and chunk boundaries, written
// at once or in small pieces, decrypts (pkcs7) to itself for each
// recipient.
func TestCMSRoundTrip(t *testing.T) {
	ks := testKeys(t)
	certs := []*x509.Certificate{ks[0].cert, ks[1].cert}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 15, 16, 17, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 100} {
		content := make([]byte, size)
		for i := range content {
			content[i] = byte(rng.UintN(256))
		}
		for _, step := range []int{0, 1, 7, 4096} {
			if step == 1 && size > chunkSize+1 {
				continue
			}
			out, err := seal(t, sealing{certs: certs}, content, false, step)
			if err != nil {
				t.Fatal(err)
			}
			p7, err := pkcs7.Parse(unbase64(t, out))
			if err != nil {
				t.Fatalf("size %d step %d: %v", size, step, err)
			}
			for _, k := range ks {
				plain, err := p7.Decrypt(k.cert, k.key)
				if err != nil {
					t.Fatalf("size %d step %d: %v", size, step, err)
				}
				if !bytes.Equal(plain, content) {
					t.Fatalf("size %d step %d: plaintext differs", size, step)
				}
			}
		}
	}
}

// The structure is RFC 5652 EnvelopedData as specified: versions 0,
// issuerAndSerialNumber from the certificate, rsaEncryption with NULL
// parameters, id-data, aes256-CBC with a 16-octet IV, chunks of
// chunkSize octets, and a fresh key and IV every time.
func TestCMSStructure(t *testing.T) {
	ks := testKeys(t)
	content := bytes.Repeat([]byte("0123456789abcdef"), 2*chunkSize/16+3)
	var ivs, eks [][]byte
	for range 2 {
		out, err := seal(t, sealing{certs: []*x509.Certificate{ks[0].cert}}, content, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		der := unbase64(t, out)
		if !bytes.HasPrefix(der, []byte("\x30\x80"+oidEnvelopedData+"\xa0\x80\x30\x80\x02\x01\x00\x31")) ||
			!bytes.HasSuffix(der, []byte(eoc)) {
			t.Fatalf("not an indefinite-length EnvelopedData: % x", der[:32])
		}
		ci := children(t, der)
		if len(ci) != 2 || ci[1].Tag != 0xa0 {
			t.Fatalf("ContentInfo of %d elements", len(ci))
		}
		ed := children(t, ci[1].Content)
		if len(ed) != 3 || ed[1].Tag != 0x31 {
			t.Fatalf("EnvelopedData of %d elements", len(ed))
		}
		ri := children(t, ed[1].Full)
		if len(ri) != 1 {
			t.Fatalf("%d recipients", len(ri))
		}
		var ktri struct {
			Version int
			IAS     struct {
				Issuer asn1.RawValue
				Serial *big.Int
			}
			Alg struct {
				OID    asn1.ObjectIdentifier
				Params asn1.RawValue
			}
			EK []byte
		}
		if rest, err := asn1.Unmarshal(ri[0].Full, &ktri); err != nil || len(rest) != 0 {
			t.Fatalf("KeyTransRecipientInfo: %v", err)
		}
		if ktri.Version != 0 || !bytes.Equal(ktri.IAS.Issuer.FullBytes, ks[0].cert.RawIssuer) ||
			ktri.IAS.Serial.Cmp(ks[0].cert.SerialNumber) != 0 || ktri.Alg.OID.String() != "1.2.840.113549.1.1.1" ||
			ktri.Alg.Params.Tag != asn1.TagNull || len(ktri.EK) != 256 {
			t.Fatalf("KeyTransRecipientInfo %+v", ktri)
		}
		eci := children(t, ed[2].Full)
		if len(eci) != 3 || string(eci[0].Full) != oidData {
			t.Fatal("EncryptedContentInfo is not id-data")
		}
		var alg struct {
			OID asn1.ObjectIdentifier
			IV  []byte
		}
		if _, err := asn1.Unmarshal(eci[1].Full, &alg); err != nil || alg.OID.String() != "2.16.840.1.101.3.4.1.42" || len(alg.IV) != 16 {
			t.Fatalf("content encryption algorithm %v %v", alg, err)
		}
		if eci[2].Tag != 0xa0 || eci[2].Full[1] != 0x80 {
			t.Fatalf("encryptedContent is not a constructed [0]: % x", eci[2].Full[:2])
		}
		chunks := children(t, eci[2].Full)
		total := 0
		for i, c := range chunks {
			if c.Tag != 0x04 || (i < len(chunks)-1 && len(c.Content) != chunkSize) || len(c.Content)%16 != 0 {
				t.Fatalf("chunk %d: tag %#x, %d octets", i, c.Tag, len(c.Content))
			}
			total += len(c.Content)
		}
		if len(chunks) != 3 || total != len(content)+16 {
			t.Fatalf("%d chunks, %d octets", len(chunks), total)
		}
		ivs, eks = append(ivs, alg.IV), append(eks, ktri.EK)
	}
	if bytes.Equal(ivs[0], ivs[1]) || bytes.Equal(eks[0], eks[1]) {
		t.Fatal("IV or encrypted key repeated")
	}
}

// children returns the elements of the constructed BER value b.
func children(t testing.TB, b []byte) []BERValue {
	t.Helper()
	v, rest, err := ParseBER(b, 0)
	if err != nil || len(rest) != 0 || !v.Constructed {
		t.Fatalf("not one constructed value: %v", err)
	}
	var out []BERValue
	for in := v.Content; len(in) > 0; {
		var c BERValue
		if c, in, err = ParseBER(in, 0); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// The OID constants are the encodings of the OIDs they name.
func TestCMSOIDs(t *testing.T) {
	for enc, want := range map[string]string{oidData: "1.2.840.113549.1.7.1", oidEnvelopedData: "1.2.840.113549.1.7.3",
		oidRSAEncryption: "1.2.840.113549.1.1.1", oidAES256CBC: "2.16.840.1.101.3.4.1.42",
		oidAuthEnvelopedData: "1.2.840.113549.1.9.16.1.23", oidAES256GCM: "2.16.840.1.101.3.4.1.46",
		oidRSAESOAEP: "1.2.840.113549.1.1.7", oidMGF1: "1.2.840.113549.1.1.8", oidSHA256: "2.16.840.1.101.3.4.2.1"} {
		var oid asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal([]byte(enc), &oid); err != nil || len(rest) != 0 || oid.String() != want {
			t.Fatalf("%x: %v %v, want %s", enc, oid, err, want)
		}
	}
}

// The OAEP AlgorithmIdentifier is RFC 4055's RSAES-OAEP-params with
// SHA-256 as the hash and in MGF1, and the default (empty) label; the
// PKCS #1 v1.5 one is rsaEncryption with NULL parameters.
func TestKeyTransportAlgorithms(t *testing.T) {
	type algID struct {
		OID    asn1.ObjectIdentifier
		Params asn1.RawValue `asn1:"optional"`
	}
	var oaep struct {
		OID    asn1.ObjectIdentifier
		Params struct {
			Hash algID `asn1:"explicit,tag:0"`
			MGF  struct {
				OID  asn1.ObjectIdentifier
				Hash algID
			} `asn1:"explicit,tag:1"`
			Label asn1.RawValue `asn1:"optional,explicit,tag:2"`
		}
	}
	if rest, err := asn1.Unmarshal([]byte(algOAEP), &oaep); err != nil || len(rest) != 0 {
		t.Fatalf("algOAEP: %v", err)
	}
	if oaep.OID.String() != "1.2.840.113549.1.1.7" || oaep.Params.Hash.OID.String() != "2.16.840.1.101.3.4.2.1" ||
		len(oaep.Params.Hash.Params.FullBytes) != 0 || oaep.Params.MGF.OID.String() != "1.2.840.113549.1.1.8" ||
		oaep.Params.MGF.Hash.OID.String() != "2.16.840.1.101.3.4.2.1" || len(oaep.Params.Label.FullBytes) != 0 {
		t.Fatalf("algOAEP: %+v", oaep)
	}
	var rsa algID
	if rest, err := asn1.Unmarshal([]byte(algRSA), &rsa); err != nil || len(rest) != 0 ||
		rsa.OID.String() != "1.2.840.113549.1.1.1" || rsa.Params.Tag != asn1.TagNull {
		t.Fatalf("algRSA: %+v %v", rsa, err)
	}
}

// Every combination of content cipher and key transport, for two
// recipients (one with OAEP and one without, too), content of sizes
// around the block and chunk boundaries written whole or in pieces:
// the standard library's AES-GCM or AES-CBC, RSA-OAEP or PKCS #1 v1.5,
// gives the content back to each recipient, through the algorithms asked
// for.
func TestCMSAlgorithmsRoundTrip(t *testing.T) {
	ks := testKeys(t)
	certs := []*x509.Certificate{ks[0].cert, ks[1].cert}
	rng := mrand.New(mrand.NewPCG(9, 10))
	for _, s := range []sealing{
		{certs: certs},
		{certs: certs, gcm: true},
		{certs: certs, gcm: true, oaep: []bool{true, true}},
		{certs: certs, oaep: []bool{true, false}},
		{certs: certs, gcm: true, oaep: []bool{false, true}},
	} {
		for _, size := range []int{0, 1, 15, 16, 17, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 100} {
			content := make([]byte, size)
			for i := range content {
				content[i] = byte(rng.UintN(256))
			}
			for _, step := range []int{0, 7, 4096} {
				out, err := seal(t, s, content, false, step)
				if err != nil {
					t.Fatal(err)
				}
				der := unbase64(t, out)
				for i, k := range ks {
					plain, keyAlg, cipherAlg, err := OpenCMS(der, k.cert, k.key)
					if err != nil {
						t.Fatalf("%+v size %d step %d recipient %d: %v", s, size, step, i, err)
					}
					if !bytes.Equal(plain, content) {
						t.Fatalf("%+v size %d step %d: plaintext differs", s, size, step)
					}
					wantKey := "rsaEncryption"
					if s.oaep != nil && s.oaep[i] {
						wantKey = "rsaes-oaep-sha256"
					}
					if keyAlg != wantKey || cipherAlg != s.cipherName() {
						t.Fatalf("%+v recipient %d: %s and %s", s, i, keyAlg, cipherAlg)
					}
					if s.gcm {
						continue
					}
					// A second reader for EnvelopedData, RSA-OAEP included.
					p7, err := pkcs7.Parse(der)
					if err != nil {
						t.Fatal(err)
					}
					if plain, err = p7.Decrypt(k.cert, k.key); err != nil || !bytes.Equal(plain, content) {
						t.Fatalf("%+v size %d recipient %d: pkcs7: %v", s, size, i, err)
					}
				}
			}
		}
	}
}

// The AuthEnvelopedData is streamed as the doc of cms.go draws it: the
// fixed parts, GCMParameters with a 12-octet nonce and ICV length 16,
// chunks of chunkSize, the 16-octet mac after the content, a fresh nonce
// every time; and a changed octet of ciphertext, tag or nonce makes
// decryption fail.
func TestCMSAuthEnvelopedStructure(t *testing.T) {
	ks := testKeys(t)
	content := bytes.Repeat([]byte("0123456789abcdef"), 2*chunkSize/16+3)
	s := sealing{certs: []*x509.Certificate{ks[0].cert}, gcm: true}
	var nonces [][]byte
	for range 2 {
		out, err := seal(t, s, content, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		der := unbase64(t, out)
		if !bytes.HasPrefix(der, []byte("\x30\x80"+oidAuthEnvelopedData+"\xa0\x80\x30\x80\x02\x01\x00\x31")) ||
			!bytes.HasSuffix(der[:len(der)-16-len(eocAuth)], []byte(eocContent+"\x04\x10")) || !bytes.HasSuffix(der, []byte(eocAuth)) {
			t.Fatalf("not an indefinite-length AuthEnvelopedData: % x ... % x", der[:32], der[len(der)-32:])
		}
		ci := children(t, der)
		ed := children(t, ci[1].Content)
		if len(ed) != 4 || ed[3].Tag != 0x04 || len(ed[3].Content) != 16 {
			t.Fatalf("AuthEnvelopedData of %d elements", len(ed))
		}
		eci := children(t, ed[2].Full)
		if len(eci) != 3 || string(eci[0].Full) != oidData {
			t.Fatal("EncryptedContentInfo is not id-data")
		}
		if len(eci[1].Full) != 32 || !bytes.HasPrefix(eci[1].Full, []byte("\x30\x1e"+oidAES256GCM+"\x30\x11\x04\x0c")) ||
			!bytes.HasSuffix(eci[1].Full, []byte("\x02\x01\x10")) {
			t.Fatalf("content encryption algorithm % x", eci[1].Full)
		}
		chunks := children(t, eci[2].Full)
		total := 0
		for i, c := range chunks {
			if c.Tag != 0x04 || (i < len(chunks)-1 && len(c.Content) != chunkSize) {
				t.Fatalf("chunk %d: tag %#x, %d octets", i, c.Tag, len(c.Content))
			}
			total += len(c.Content)
		}
		if len(chunks) != 3 || total != len(content) {
			t.Fatalf("%d chunks, %d octets", len(chunks), total)
		}
		nonces = append(nonces, eci[1].Full[15:27])

		if _, _, _, err := OpenCMS(der, ks[0].cert, ks[0].key); err != nil {
			t.Fatal(err)
		}
		ctOff := len(der) - len(eocAuth) - 18 - len(eocContent) - 100
		for name, off := range map[string]int{"ciphertext": ctOff, "tag": len(der) - len(eocAuth) - 1,
			"nonce": bytes.Index(der, eci[1].Full) + 20} {
			bad := bytes.Clone(der)
			bad[off] ^= 1
			if _, _, _, err := OpenCMS(bad, ks[0].cert, ks[0].key); err == nil {
				t.Fatalf("a changed octet of the %s went unnoticed", name)
			}
		}
	}
	if bytes.Equal(nonces[0], nonces[1]) {
		t.Fatal("nonce repeated")
	}
}

// sealAndOpen encrypts in to k's certificate in writes of chunk bytes,
// decrypts it with pkcs7 and checks that the result is in made canonical.
func sealAndOpen(t *testing.T, k cmsKey, in []byte, chunk int) {
	t.Helper()
	want, err := canonical(bytes.Clone(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := seal(t, sealing{certs: []*x509.Certificate{k.cert}}, in, true, chunk)
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(unbase64(t, out))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p7.Decrypt(k.cert, k.key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%q: got %q, want %q", in, got, want)
	}
}

// Streaming canonicalisation gives what the buffered canonical gives, for
// any mix of CR and LF and any split into writes.
func TestCMSCanonicalStream(t *testing.T) {
	ks := testKeys(t)
	rng := mrand.New(mrand.NewPCG(3, 4))
	alphabet := []byte("ab\r\n")
	for range 200 {
		in := make([]byte, rng.IntN(64))
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		sealAndOpen(t, ks[0], in, 1+rng.IntN(5))
	}
}

// naiveCanonicalPrefix is canonicalPrefix written the obvious way.
func naiveCanonicalPrefix(p []byte) int {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == 0 || c >= 0x80, c == '\n', c == '\r' && (i+1 == len(p) || p[i+1] != '\n'):
			return i
		case c == '\r':
			i++
		}
	}
	return len(p)
}

func TestCanonicalPrefix(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	for _, alphabet := range []string{"abcdefgh\r\n", "ab\r\n\x00\x80\xff\x7f\t\x01\x0c\x0e", "abcdefghijklmnopqrstuvwxyz0123456789\r\n"} {
		for range 5000 {
			in := make([]byte, rng.IntN(100))
			for i := range in {
				in[i] = alphabet[rng.IntN(len(alphabet))]
			}
			if got, want := canonicalPrefix(in), naiveCanonicalPrefix(in); got != want {
				t.Fatalf("canonicalPrefix(%q) = %d, want %d", in, got, want)
			}
		}
	}
	line := []byte("The quick brown fox jumps over the lazy dog 0123456789.\r\n")
	for pos := range line {
		for _, c := range []byte{0, '\r', '\n', 0x80, '\t', 0x01, 0x0c, 0x0e, 0x8d, 0x8e, 0xff} {
			in := bytes.Repeat(line, 3)
			in[len(line)+pos] = c
			if got, want := canonicalPrefix(in), naiveCanonicalPrefix(in); got != want {
				t.Fatalf("canonicalPrefix(%q) = %d, want %d", in, got, want)
			}
		}
	}
}

// Long writes in any split give the canonical content.
func TestCMSCanonicalLongWrites(t *testing.T) {
	ks := testKeys(t)
	rng := mrand.New(mrand.NewPCG(7, 8))
	for _, alphabet := range []string{"abcdefghijklmnop\r\n", "abcdefghijklmnopqrstuvwxyz\r\n\r\n\r\n\n"} {
		for range 40 {
			in := make([]byte, rng.IntN(3000))
			for i := range in {
				in[i] = alphabet[rng.IntN(len(alphabet))]
			}
			sealAndOpen(t, ks[0], in, 1+rng.IntN(200))
		}
	}
}

// An 8-bit octet in a later write is refused with its offset in the
// whole content.
func TestCMS8BitOffset(t *testing.T) {
	ks := testKeys(t)
	in := []byte(strings.Repeat("a", 100) + "\xff")
	_, err := seal(t, sealing{certs: []*x509.Certificate{ks[0].cert}}, in, true, 30)
	if err == nil || !strings.Contains(err.Error(), "8-bit or NUL octets at offset 100") {
		t.Fatalf("got %v", err)
	}
}

// writeBase64 writes full lines of 76 characters and a short last one.
func TestWriteBase64(t *testing.T) {
	for _, n := range []int{0, 1, 56, 57, 58, 57 * 300, 57*300 + 1} {
		in := bytes.Repeat([]byte{0xfb}, n)
		var b bytes.Buffer
		m, err := writeBase64(&b, in)
		if err != nil || m != int64(b.Len()) {
			t.Fatal(m, err)
		}
		if n == 0 {
			if b.Len() != 0 {
				t.Fatalf("%q for no input", b.Bytes())
			}
			continue
		}
		if got := unbase64(t, b.Bytes()); !bytes.Equal(got, in) {
			t.Fatalf("%d octets: round trip differs", n)
		}
	}
}

// writeBase64 writes exactly what encoding/base64 gives, in lines of 76
// characters and CRLF: for every 12-bit value in either half of a group
// of three octets, at every offset of a line, and for random input.
func TestWriteBase64Std(t *testing.T) {
	var in []byte
	for v := range 1 << 12 {
		g := v<<12 | (v*2654435761)&0xfff
		in = append(in, byte(g>>16), byte(g>>8), byte(g))
	}
	for shift := range 4 {
		if shift > 0 {
			in = append(in[1:], in[0])
		}
		random := make([]byte, 57*40+shift*19)
		if _, err := rand.Read(random); err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{in, random} {
			var got bytes.Buffer
			if _, err := writeBase64(&got, b); err != nil {
				t.Fatal(err)
			}
			enc := base64.StdEncoding.EncodeToString(b)
			var want strings.Builder
			for len(enc) > 0 {
				n := min(len(enc), 76)
				want.WriteString(enc[:n] + "\r\n")
				enc = enc[n:]
			}
			if got.String() != want.String() {
				t.Fatalf("%d octets: writeBase64 differs from encoding/base64", len(b))
			}
		}
	}
}

// tlvLen agrees with appendLength.
func TestTLVLen(t *testing.T) {
	for _, n := range []int{0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000} {
		if got, want := tlvLen(n), 1+len(appendLength(nil, n))+n; got != want {
			t.Fatalf("tlvLen(%d) = %d, want %d", n, got, want)
		}
	}
}

// BenchmarkCMSWriter encrypts 10 KB of text for one RSA-2048 recipient
// and encodes it as base64, without the message around it: with
// AES-256-CBC and PKCS #1 v1.5, and with AES-256-GCM and RSA-OAEP.
func BenchmarkCMSWriter(b *testing.B) {
	ks := testKeys(b)
	certs := []*x509.Certificate{ks[0].cert}
	content := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog 0123456789.\r\n", 10<<10/56))
	for name, s := range map[string]sealing{"cbc": {certs: certs}, "gcm": {certs: certs, gcm: true, oaep: []bool{true}}} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(content)))
			b.ReportAllocs()
			for b.Loop() {
				cw, err := newCMSWriter(io.Discard, s, true)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := cw.Write(content); err != nil {
					b.Fatal(err)
				}
				if _, err := cw.close(); err != nil {
					b.Fatal(err)
				}
				cw.release()
			}
		})
	}
}

// FuzzCanonicalPrefix checks canonicalPrefix against the obvious loop, and
// base64 lines against encoding/base64.
func FuzzCanonicalPrefix(f *testing.F) {
	f.Add([]byte("a\r\nb\nc\rd\x00e\x80"))
	f.Add(bytes.Repeat([]byte("The quick brown fox.\r\n"), 5))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 {
			return
		}
		if got, want := canonicalPrefix(in), naiveCanonicalPrefix(in); got != want {
			t.Fatalf("canonicalPrefix(%q) = %d, want %d", in, got, want)
		}
		var b bytes.Buffer
		if _, err := writeBase64(&b, in); err != nil {
			t.Fatal(err)
		}
		if got := unbase64(t, b.Bytes()); !bytes.Equal(got, in) {
			t.Fatalf("base64 of %q does not decode to it", in)
		}
		for _, line := range bytes.SplitAfter(b.Bytes(), []byte("\r\n")) {
			if len(line) > 78 {
				t.Fatalf("line of %d octets", len(line))
			}
		}
	})
}
