package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sync"
)

// This file writes CMS EnvelopedData (RFC 5652 section 6) as a stream:
// the outer ContentInfo, the EnvelopedData, the EncryptedContentInfo and
// its encryptedContent use BER indefinite lengths, and the ciphertext is a
// constructed OCTET STRING of chunks, so no length has to be known before
// the content is written. This is the form openssl cms -encrypt -stream
// emits. The recipient infos are DER.
//
//	30 80                            ContentInfo
//	  06 09 envelopedData
//	  a0 80                          [0] EXPLICIT
//	    30 80                        EnvelopedData
//	      02 01 00                   version 0
//	      31 ..                      SET OF KeyTransRecipientInfo
//	      30 80                      EncryptedContentInfo
//	        06 09 data
//	        30 ..                    aes256-CBC, IV
//	        a0 80                    [0] IMPLICIT OCTET STRING, constructed
//	          04 .. ciphertext       one per chunk
//	        00 00 00 00 00 00 00 00 00 00
//
// With AES-256-GCM the same stream is an AuthEnvelopedData (RFC 5083),
// whose authentication tag follows the ciphertext, so it too is written
// once the content has been:
//
//	30 80                            ContentInfo
//	  06 0b authEnvelopedData
//	  a0 80                          [0] EXPLICIT
//	    30 80                        AuthEnvelopedData
//	      02 01 00                   version 0
//	      31 ..                      SET OF KeyTransRecipientInfo
//	      30 80                      EncryptedContentInfo
//	        06 09 data
//	        30 1e                    aes256-GCM, GCMParameters (RFC 5084)
//	        a0 80                    [0] IMPLICIT OCTET STRING, constructed
//	          04 .. ciphertext       one per chunk
//	        00 00 00 00
//	      04 10 tag                  mac
//	      00 00 00 00 00 00
//
// No authAttrs are written, so GCM authenticates no additional data.

// Encoded OBJECT IDENTIFIERs (tag, length, value).
const (
	oidData          = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01" // 1.2.840.113549.1.7.1
	oidEnvelopedData = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03" // 1.2.840.113549.1.7.3
	oidRSAEncryption = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01" // 1.2.840.113549.1.1.1
	oidAES256CBC     = "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2a" // 2.16.840.1.101.3.4.1.42

	oidAuthEnvelopedData = "\x06\x0b\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x01\x17" // 1.2.840.113549.1.9.16.1.23
	oidAES256GCM         = "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2e"         // 2.16.840.1.101.3.4.1.46
	oidRSAESOAEP         = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x07"         // 1.2.840.113549.1.1.7
	oidMGF1              = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08"         // 1.2.840.113549.1.1.8
	oidSHA256            = "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01"         // 2.16.840.1.101.3.4.2.1
)

// Encoded AlgorithmIdentifiers of key transport.
const (
	// algRSA is rsaEncryption with NULL parameters: RSA PKCS #1 v1.5.
	algRSA = "\x30\x0d" + oidRSAEncryption + "\x05\x00"
	// algOAEP is id-RSAES-OAEP with RSAES-OAEP-params of SHA-256 and
	// MGF1 with SHA-256, the label empty (the default pSourceAlgorithm,
	// so absent). The SHA-256 AlgorithmIdentifiers have no parameters,
	// as RFC 5754 section 2 says to generate them.
	algOAEP = "\x30\x38" + oidRSAESOAEP + "\x30\x2b" +
		"\xa0\x0d\x30\x0b" + oidSHA256 +
		"\xa1\x1a\x30\x18" + oidMGF1 + "\x30\x0b" + oidSHA256
)

const (
	// chunkSize is the plaintext (and ciphertext) size of each OCTET
	// STRING of the encrypted content but the last. A multiple of the
	// AES block size.
	chunkSize = 16 << 10
	// lineBytes is what one base64 line of 76 characters holds.
	lineBytes = 57
	// outSize is the base64 output buffered before each write.
	outSize = 210 * (76 + 2)
	// eoc ends the five indefinite-length values.
	eoc = "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	// eocContent ends the encrypted content and EncryptedContentInfo of
	// an AuthEnvelopedData, eocAuth the three values around its mac.
	eocContent = "\x00\x00\x00\x00"
	eocAuth    = "\x00\x00\x00\x00\x00\x00"
)

// sealing is what one CMS object is encrypted with.
type sealing struct {
	// certs are the recipients' certificates, each once.
	certs []*x509.Certificate
	// oaep, when not nil, says for each of certs whether its key is
	// transported with RSA-OAEP instead of PKCS #1 v1.5.
	oaep []bool
	// gcm selects AES-256-GCM in an AuthEnvelopedData instead of
	// AES-256-CBC in an EnvelopedData.
	gcm bool
}

// cipherName is the content encryption, as Receipts record it.
func (s sealing) cipherName() string {
	if s.gcm {
		return "aes256-gcm"
	}
	return "aes256-cbc"
}

// appendLength appends a DER length.
func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	case n < 0x10000:
		return append(b, 0x82, byte(n>>8), byte(n))
	case n < 0x1000000:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// appendTLV appends a definite-length value with the given tag whose
// contents are the concatenation of parts.
func appendTLV(b []byte, tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b = appendLength(append(b, tag), n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// tlvLen is the size of a definite-length value (with a one-octet tag)
// of n content octets.
func tlvLen(n int) int {
	switch {
	case n < 0x80:
		return 2 + n
	case n < 0x100:
		return 3 + n
	case n < 0x10000:
		return 4 + n
	case n < 0x1000000:
		return 5 + n
	default:
		return 6 + n
	}
}

// recipientInfo returns the DER KeyTransRecipientInfo (version 0,
// issuerAndSerialNumber) that carries key for c: with RSA-OAEP (SHA-256)
// when oaep is set, else RSA PKCS #1 v1.5 (rsaEncryption).
func recipientInfo(c *x509.Certificate, key []byte, oaep bool) ([]byte, error) {
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("smime: certificate %s has no RSA key", c.Subject)
	}
	var (
		ek  []byte
		err error
		alg = algRSA
	)
	if oaep {
		alg = algOAEP
		ek, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, key, nil)
	} else {
		// PKCS #1 v1.5 key transport is what every S/MIME client reads,
		// gpgsm 2.2 among them; RSA-OAEP is for readers known to take it.
		//lint:ignore SA1019 PKCS #1 v1.5 is needed for gpgsm 2.2 (see above).
		ek, err = rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	}
	if err != nil {
		return nil, fmt.Errorf("smime: key transport to %s failed: %w", c.Subject, err)
	}
	serial, err := asn1.Marshal(c.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("smime: serial number of %s: %w", c.Subject, err)
	}
	ias := len(c.RawIssuer) + len(serial)
	n := 3 + tlvLen(ias) + len(alg) + tlvLen(len(ek))
	b := make([]byte, 0, tlvLen(n))
	b = appendLength(append(b, 0x30), n)
	b = appendLength(append(b, 0x02, 0x01, 0x00, 0x30), ias)
	b = append(append(b, c.RawIssuer...), serial...)
	b = appendLength(append(append(b, alg...), 0x04), len(ek))
	return append(b, ek...), nil
}

// envelopeHead returns everything that precedes the encrypted content:
// a fresh AES-256 key is encrypted to each certificate, and the returned
// BlockMode (AES-256-CBC) or gcmStream (AES-256-GCM) encrypts the content
// with it.
func envelopeHead(s sealing) ([]byte, cipher.BlockMode, *gcmStream, error) {
	if len(s.certs) == 0 {
		return nil, nil, nil, errors.New("smime: no recipient certificates")
	}
	if s.oaep != nil && len(s.oaep) != len(s.certs) {
		return nil, nil, nil, errors.New("smime: internal error: key transport not chosen for every certificate")
	}
	var kiv [32 + aes.BlockSize]byte
	defer clear(kiv[:])
	if _, err := rand.Read(kiv[:]); err != nil {
		return nil, nil, nil, fmt.Errorf("smime: %w", err)
	}
	key, iv := kiv[:32], kiv[32:]
	ris := make([][]byte, len(s.certs))
	for i, c := range s.certs {
		ri, err := recipientInfo(c, key, s.oaep != nil && s.oaep[i])
		if err != nil {
			return nil, nil, nil, err
		}
		ris[i] = ri
	}
	// DER orders a SET OF by the encodings of its elements.
	slices.SortFunc(ris, bytes.Compare)
	n := 128 // the fixed octets around the recipient infos
	for _, ri := range ris {
		n += len(ri)
	}
	h := make([]byte, 0, n)
	if s.gcm {
		nonce := iv[:gcmNonceSize]
		g, err := newGCMStream(key, nonce)
		if err != nil {
			return nil, nil, nil, err
		}
		h = append(h, "\x30\x80"+oidAuthEnvelopedData+"\xa0\x80\x30\x80\x02\x01\x00"...)
		h = appendTLV(h, 0x31, ris...)
		// GCMParameters: the nonce, and aes-ICVlen 16 (not the DEFAULT
		// 12, so present).
		h = append(h, "\x30\x80"+oidData+"\x30\x1e"+oidAES256GCM+"\x30\x11\x04\x0c"...)
		h = append(h, nonce...)
		h = append(h, 0x02, 0x01, gcmTagSize, 0xa0, 0x80)
		return h, nil, g, nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("smime: %w", err)
	}
	h = append(h, "\x30\x80"+oidEnvelopedData+"\xa0\x80\x30\x80\x02\x01\x00"...)
	h = appendTLV(h, 0x31, ris...)
	h = append(h, "\x30\x80"+oidData+"\x30\x1d"+oidAES256CBC+"\x04\x10"...)
	h = append(h, iv...)
	h = append(h, 0xa0, 0x80)
	return h, cipher.NewCBCEncrypter(block, iv), nil, nil
}

// cmsWriter encrypts what is written to it into the encryptedContent of
// an EnvelopedData or AuthEnvelopedData and writes the whole as base64.
// With canon set it first brings line endings to CRLF and refuses 8-bit
// and NUL octets.
// cmsWriters are pooled: newCMSWriter takes one for a message, release
// clears its plaintext and puts it back.
type cmsWriter struct {
	cbc   cipher.BlockMode // AES-256-CBC, or
	gcm   *gcmStream       // AES-256-GCM
	wrote bool             // a chunk has been written
	stage []byte           // plaintext of the next chunk, capacity chunkSize
	lw    lineWriter
	canon bool
	cr    bool  // canon: the last octet written was a CR, already sent as CRLF
	off   int64 // canon: octets written so far, for error offsets
	err   error
}

var cmsPool = sync.Pool{New: func() any {
	return &cmsWriter{stage: make([]byte, 0, chunkSize), lw: lineWriter{out: make([]byte, 0, outSize)}}
}}

// newCMSWriter starts an EnvelopedData or AuthEnvelopedData as s says on
// w and returns the writer for its content. Nothing is written to w when
// it fails.
func newCMSWriter(w io.Writer, s sealing, canon bool) (*cmsWriter, error) {
	head, cbc, gcm, err := envelopeHead(s)
	if err != nil {
		return nil, err
	}
	cw := cmsPool.Get().(*cmsWriter)
	cw.cbc, cw.gcm, cw.canon = cbc, gcm, canon
	cw.lw.w = w
	cw.lw.write(head)
	return cw, nil
}

// release clears the plaintext and returns cw to the pool.
func (cw *cmsWriter) release() {
	// Chunks are encrypted in place: only what is still staged (after a
	// failed write) is plaintext.
	clear(cw.stage)
	cw.stage = cw.stage[:0]
	cw.cbc, cw.gcm, cw.wrote, cw.canon, cw.cr, cw.off, cw.err = nil, nil, false, false, false, 0, nil
	cw.lw.reset()
	cmsPool.Put(cw)
}

func (cw *cmsWriter) Write(p []byte) (int, error) {
	if cw.err != nil {
		return 0, cw.err
	}
	if cw.lw.err != nil {
		return 0, cw.lw.err
	}
	if !cw.canon {
		cw.emit(p)
		return len(p), cw.failed()
	}
	if canonicalPrefix(p) == len(p) {
		// Already canonical and 7-bit (an LF at the start, after a CR
		// that ended the previous write, is not in the prefix).
		cw.off += int64(len(p))
		cw.cr = false
		cw.emit(p)
		return len(p), cw.failed()
	}
	if i := not7bit(p); i >= 0 {
		cw.err = fmt.Errorf("smime: content has 8-bit or NUL octets at offset %d; only 7-bit content can be protected", cw.off+int64(i))
		return 0, cw.err
	}
	cw.off += int64(len(p))
	q := p
	if cw.cr && len(q) > 0 && q[0] == '\n' {
		q = q[1:]
	}
	cw.cr = false
	for len(q) > 0 {
		n := canonicalPrefix(q)
		cw.emit(q[:n])
		q = q[n:]
		if len(q) == 0 {
			break
		}
		// q[0] is a bare CR or LF, or a CR that may pair with an LF at
		// the start of the next write.
		cw.emit([]byte{'\r', '\n'})
		cw.cr = q[0] == '\r' && len(q) == 1
		q = q[1:]
	}
	return len(p), cw.failed()
}

// canonicalPrefix returns the length of the longest prefix of p in which
// every CR is followed by LF and every LF follows a CR, and which has no
// NUL or 8-bit octet. It tests eight octets at a time, and looks at single
// octets only from one below 0x0e or 8-bit.
func canonicalPrefix(p []byte) int {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	for i := 0; i < len(p); {
		if i+8 <= len(p) {
			w := binary.LittleEndian.Uint64(p[i : i+8])
			// The high bit of each octet that is 8-bit or below 0x0e (NUL,
			// LF and CR among them): the "has an octet less than n" test.
			// Borrows can mark octets above one that is, never below: the
			// lowest mark is exact.
			m := (w | (w - 0x0e*ones)) & high
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		}
		switch c := p[i]; {
		case c == 0 || c >= 0x80, c == '\n':
			return i
		case c == '\r':
			if i+1 == len(p) || p[i+1] != '\n' {
				return i
			}
			i += 2
		default:
			i++
		}
	}
	return len(p)
}

// failed returns the error that stopped cw, if any: of the content, of
// its encryption or of the underlying writer.
func (cw *cmsWriter) failed() error {
	if cw.err != nil {
		return cw.err
	}
	return cw.lw.err
}

// emit stages plaintext, sending each full chunk.
func (cw *cmsWriter) emit(p []byte) {
	for len(p) > 0 && cw.err == nil {
		n := copy(cw.stage[len(cw.stage):cap(cw.stage)], p)
		cw.stage = cw.stage[:len(cw.stage)+n]
		p = p[n:]
		if len(cw.stage) == cap(cw.stage) {
			cw.chunk()
		}
	}
}

// chunk encrypts the staged plaintext and writes it as one OCTET STRING.
func (cw *cmsWriter) chunk() {
	if cw.gcm != nil {
		if err := cw.gcm.crypt(cw.stage); err != nil {
			cw.err = err
			return
		}
	} else {
		cw.cbc.CryptBlocks(cw.stage, cw.stage)
	}
	cw.wrote = true
	var h [8]byte
	cw.lw.write(appendLength(append(h[:0], 0x04), len(cw.stage)))
	cw.lw.write(cw.stage)
	cw.stage = cw.stage[:0]
}

// close pads (PKCS #7, for CBC) and writes the last chunk and the end of
// the EnvelopedData (with the tag, for GCM), then flushes. It returns the
// octets written to the underlying writer.
func (cw *cmsWriter) close() (int64, error) {
	if cw.err != nil {
		return cw.lw.n, cw.err
	}
	if cw.gcm != nil {
		if len(cw.stage) > 0 || !cw.wrote {
			cw.chunk()
			if cw.err != nil {
				return cw.lw.n, cw.err
			}
		}
		cw.lw.write([]byte(eocContent + "\x04\x10"))
		cw.lw.write(cw.gcm.sum())
		cw.lw.write([]byte(eocAuth))
		err := cw.lw.close()
		return cw.lw.n, err
	}
	pad := aes.BlockSize - len(cw.stage)%aes.BlockSize
	for range pad {
		cw.stage = append(cw.stage, byte(pad))
	}
	cw.chunk()
	cw.lw.write([]byte(eoc))
	err := cw.lw.close()
	return cw.lw.n, err
}

// lineWriter encodes base64 in lines of 76 characters, each ending in
// CRLF (RFC 2045 section 6.8), buffering up to outSize octets of output.
type lineWriter struct {
	w    io.Writer
	part [lineBytes]byte // input short of a whole line
	np   int
	out  []byte
	n    int64
	err  error
}

func (l *lineWriter) write(p []byte) {
	if l.err != nil {
		return
	}
	if l.np > 0 {
		c := copy(l.part[l.np:], p)
		l.np += c
		p = p[c:]
		if l.np < lineBytes {
			return
		}
		l.line(l.part[:])
		l.np = 0
	}
	for len(p) >= lineBytes {
		l.line(p[:lineBytes])
		p = p[lineBytes:]
	}
	l.np = copy(l.part[:], p)
}

func (l *lineWriter) line(b []byte) {
	if len(l.out)+76+2 > cap(l.out) {
		l.flush()
	}
	o := len(l.out)
	if len(b) == lineBytes {
		l.out = l.out[:o+78]
		encodeLine((*[78]byte)(l.out[o:]), (*[lineBytes]byte)(b))
		return
	}
	e := o + base64.StdEncoding.EncodedLen(len(b))
	l.out = l.out[:e+2]
	base64.StdEncoding.Encode(l.out[o:e], b)
	l.out[e], l.out[e+1] = '\r', '\n'
}

// base64Pairs holds the two base64 characters of every 12-bit value, the
// first in the low octet; it is only read. Two lookups and one store per
// three octets, instead of encoding/base64's four lookups and four
// stores, make whole lines about twice as fast to encode.
var base64Pairs = func() (t [1 << 12]uint16) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for v := range t {
		t[v] = uint16(alphabet[v>>6]) | uint16(alphabet[v&0x3f])<<8
	}
	return t
}()

// encodeLine encodes one whole line of input (RFC 4648 section 4: no
// padding within a line of 57 octets) and its CRLF: six octets at a time,
// with one load and one store, two such groups per round so that their
// lookups overlap, then the last nine octets.
func encodeLine(dst *[78]byte, src *[lineBytes]byte) {
	t := &base64Pairs
	eight := func(v uint64) uint64 {
		return uint64(t[v>>52&0xfff]) | uint64(t[v>>40&0xfff])<<16 | uint64(t[v>>28&0xfff])<<32 | uint64(t[v>>16&0xfff])<<48
	}
	for i := 0; i < 8; i += 2 {
		a := eight(binary.BigEndian.Uint64(src[6*i : 6*i+8]))
		b := eight(binary.BigEndian.Uint64(src[6*i+6 : 6*i+14]))
		binary.LittleEndian.PutUint64(dst[8*i:8*i+8], a)
		binary.LittleEndian.PutUint64(dst[8*i+8:8*i+16], b)
	}
	binary.LittleEndian.PutUint64(dst[64:72], eight(binary.BigEndian.Uint64(src[48:56])))
	v := uint32(src[54])<<16 | uint32(src[55])<<8 | uint32(src[56])
	binary.LittleEndian.PutUint32(dst[72:76], uint32(t[v>>12&0xfff])|uint32(t[v&0xfff])<<16)
	dst[76], dst[77] = '\r', '\n'
}

func (l *lineWriter) flush() {
	if l.err == nil && len(l.out) > 0 {
		m, err := l.w.Write(l.out)
		l.n += int64(m)
		l.err = err
	}
	l.out = l.out[:0]
}

func (l *lineWriter) close() error {
	if l.np > 0 && l.err == nil {
		l.line(l.part[:l.np])
		l.np = 0
	}
	l.flush()
	return l.err
}

func (l *lineWriter) reset() {
	clear(l.part[:])
	*l = lineWriter{out: l.out[:0]}
}

// writeBase64 writes b as base64 in lines of 76 characters, each ending
// in CRLF.
func writeBase64(w io.Writer, b []byte) (int64, error) {
	l := lineWriter{w: w, out: make([]byte, 0, min(outSize, (len(b)/lineBytes+1)*78))}
	l.write(b)
	err := l.close()
	return l.n, err
}
