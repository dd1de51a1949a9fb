package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
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

// Encoded OBJECT IDENTIFIERs (tag, length, value).
const (
	oidData          = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01" // 1.2.840.113549.1.7.1
	oidEnvelopedData = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03" // 1.2.840.113549.1.7.3
	oidRSAEncryption = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01" // 1.2.840.113549.1.1.1
	oidAES256CBC     = "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2a" // 2.16.840.1.101.3.4.1.42
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
)

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
// issuerAndSerialNumber, rsaEncryption) that carries key for c.
func recipientInfo(c *x509.Certificate, key []byte) ([]byte, error) {
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("smime: certificate %s has no RSA key", c.Subject)
	}
	// RSA-OAEP would be better, but gpgsm 2.2 cannot decrypt it; PKCS #1
	// v1.5 key transport is what every S/MIME client reads.
	//lint:ignore SA1019 PKCS #1 v1.5 is needed for gpgsm 2.2 (see above).
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	if err != nil {
		return nil, fmt.Errorf("smime: key transport to %s failed: %w", c.Subject, err)
	}
	serial, err := asn1.Marshal(c.SerialNumber)
	if err != nil {
		return nil, fmt.Errorf("smime: serial number of %s: %w", c.Subject, err)
	}
	const alg = "\x30\x0d" + oidRSAEncryption + "\x05\x00"
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
// BlockMode encrypts the content with it.
func envelopeHead(certs []*x509.Certificate) ([]byte, cipher.BlockMode, error) {
	if len(certs) == 0 {
		return nil, nil, errors.New("smime: no recipient certificates")
	}
	var kiv [32 + aes.BlockSize]byte
	defer clear(kiv[:])
	if _, err := rand.Read(kiv[:]); err != nil {
		return nil, nil, fmt.Errorf("smime: %w", err)
	}
	key, iv := kiv[:32], kiv[32:]
	ris := make([][]byte, len(certs))
	for i, c := range certs {
		ri, err := recipientInfo(c, key)
		if err != nil {
			return nil, nil, err
		}
		ris[i] = ri
	}
	// DER orders a SET OF by the encodings of its elements.
	slices.SortFunc(ris, bytes.Compare)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, fmt.Errorf("smime: %w", err)
	}
	n := 96 // the fixed octets around the recipient infos
	for _, ri := range ris {
		n += len(ri)
	}
	h := make([]byte, 0, n)
	h = append(h, "\x30\x80"+oidEnvelopedData+"\xa0\x80\x30\x80\x02\x01\x00"...)
	h = appendTLV(h, 0x31, ris...)
	h = append(h, "\x30\x80"+oidData+"\x30\x1d"+oidAES256CBC+"\x04\x10"...)
	h = append(h, iv...)
	h = append(h, 0xa0, 0x80)
	return h, cipher.NewCBCEncrypter(block, iv), nil
}

// cmsWriter encrypts what is written to it into the encryptedContent of
// an EnvelopedData and writes the whole as base64. With canon set it
// first brings line endings to CRLF and refuses 8-bit and NUL octets.
// cmsWriters are pooled: newCMSWriter takes one for a message, release
// clears its plaintext and puts it back.
type cmsWriter struct {
	cbc   cipher.BlockMode
	stage []byte // plaintext of the next chunk, capacity chunkSize
	lw    lineWriter
	canon bool
	cr    bool  // canon: the last octet written was a CR, already sent as CRLF
	off   int64 // canon: octets written so far, for error offsets
	err   error
}

var cmsPool = sync.Pool{New: func() any {
	return &cmsWriter{stage: make([]byte, 0, chunkSize), lw: lineWriter{out: make([]byte, 0, outSize)}}
}}

// newCMSWriter starts an EnvelopedData for certs on w and returns the
// writer for its content. Nothing is written to w when it fails.
func newCMSWriter(w io.Writer, certs []*x509.Certificate, canon bool) (*cmsWriter, error) {
	head, cbc, err := envelopeHead(certs)
	if err != nil {
		return nil, err
	}
	cw := cmsPool.Get().(*cmsWriter)
	cw.cbc, cw.canon = cbc, canon
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
	cw.cbc, cw.canon, cw.cr, cw.off, cw.err = nil, false, false, 0, nil
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
		return len(p), cw.lw.err
	}
	if canonicalPrefix(p) == len(p) {
		// Already canonical and 7-bit (an LF at the start, after a CR
		// that ended the previous write, is not in the prefix).
		cw.off += int64(len(p))
		cw.cr = false
		cw.emit(p)
		return len(p), cw.lw.err
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
	return len(p), cw.lw.err
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

// emit stages plaintext, sending each full chunk.
func (cw *cmsWriter) emit(p []byte) {
	for len(p) > 0 {
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
	cw.cbc.CryptBlocks(cw.stage, cw.stage)
	var h [8]byte
	cw.lw.write(appendLength(append(h[:0], 0x04), len(cw.stage)))
	cw.lw.write(cw.stage)
	cw.stage = cw.stage[:0]
}

// close pads (PKCS #7) and writes the last chunk and the end of the
// EnvelopedData, then flushes. It returns the octets written to the
// underlying writer.
func (cw *cmsWriter) close() (int64, error) {
	if cw.err != nil {
		return cw.lw.n, cw.err
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
