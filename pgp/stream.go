package pgp

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"sync"
)

const (
	// chunkSize is how much plaintext is gathered before it is handed to
	// the OpenPGP writer, which, once it holds more than 512 octets,
	// emits a packet chunk and makes a cipher call on every Write.
	chunkSize = 16 << 10
	// armorOut is how much armored output is gathered before it is
	// written to the destination.
	armorOut = 8 << 10
	// armorLine is the input of one armor line: 48 octets make 64 base64
	// characters, the line length gpg writes (RFC 9580 §6.3 allows 76).
	armorLine = 48
)

// writers holds the buffers one encryption needs. A Protector keeps them
// in a pool, so that a delivery does not allocate them afresh.
type writers struct {
	chunk chunkWriter
	armor armorWriter
}

// writerPool hands out writers and takes them back cleared of plaintext.
type writerPool struct{ p sync.Pool }

func (wp *writerPool) get() *writers {
	if v, ok := wp.p.Get().(*writers); ok {
		return v
	}
	return &writers{
		chunk: chunkWriter{buf: make([]byte, 0, chunkSize)},
		armor: armorWriter{out: make([]byte, 0, armorOut)},
	}
}

func (wp *writerPool) put(w *writers) {
	w.chunk.release()
	w.armor.release()
	wp.p.Put(w)
}

// chunkWriter gathers small writes into chunks of chunkSize octets for w.
// A Write at least that large while nothing is pending goes to w as it is.
type chunkWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (c *chunkWriter) reset(w io.Writer) {
	c.w, c.buf, c.err = w, c.buf[:0], nil
}

// release forgets the destination and wipes the plaintext the buffer
// held, before the buffer goes back to the pool.
func (c *chunkWriter) release() {
	clear(c.buf[:cap(c.buf)])
	c.w, c.buf, c.err = nil, c.buf[:0], nil
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(p)
	for len(p) > 0 {
		if len(c.buf) == 0 && len(p) >= cap(c.buf) {
			if _, c.err = c.w.Write(p); c.err != nil {
				return 0, c.err
			}
			return n, nil
		}
		m := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+m]
		p = p[m:]
		if len(c.buf) == cap(c.buf) {
			if err := c.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) WriteString(s string) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(s)
	for len(s) > 0 {
		m := copy(c.buf[len(c.buf):cap(c.buf)], s)
		c.buf = c.buf[:len(c.buf)+m]
		s = s[m:]
		if len(c.buf) == cap(c.buf) {
			if err := c.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Flush writes what is pending.
func (c *chunkWriter) Flush() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, c.err = c.w.Write(c.buf)
	c.buf = c.buf[:0]
	return c.err
}

// armorWriter writes OpenPGP ASCII armor (RFC 9580 §6.2) with CRLF line
// endings and the CRC-24 line, gathering its output so that w sees few,
// large writes. MIME text before and after the armor goes through text,
// into the same buffer.
//
// The CRC-24 line is written although RFC 9580 §6.1 says it should not
// be, because gpg 2.2 needs it: without it, when the data is a multiple
// of three octets long (so the last line has no "=" padding), gpg reads
// the "-----END" line as base64 and reports the message as manipulated.
type armorWriter struct {
	w    io.Writer
	out  []byte
	rem  [armorLine]byte // input not yet making a whole line
	nrem int
	crc  uint32
	err  error
}

func (a *armorWriter) reset(w io.Writer) {
	a.release()
	a.w = w
}

func (a *armorWriter) release() {
	a.w, a.out, a.nrem, a.crc, a.err = nil, a.out[:0], 0, crc24Init, nil
}

// text adds s to the output as it is.
func (a *armorWriter) text(s string) {
	if a.err != nil {
		return
	}
	if len(a.out)+len(s) > cap(a.out) {
		a.flush()
		if len(s) > cap(a.out) {
			if a.err == nil {
				_, a.err = io.WriteString(a.w, s)
			}
			return
		}
	}
	a.out = append(a.out, s...)
}

// Write encodes p as armor lines of 64 characters.
func (a *armorWriter) Write(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	n := len(p)
	a.crc = crc24(a.crc, p)
	if a.nrem > 0 {
		m := copy(a.rem[a.nrem:], p)
		a.nrem += m
		p = p[m:]
		if a.nrem < armorLine {
			return n, nil
		}
		a.line(a.rem[:])
		a.nrem = 0
	}
	for len(p) >= armorLine && a.err == nil {
		a.line(p[:armorLine])
		p = p[armorLine:]
	}
	if a.err != nil {
		return 0, a.err
	}
	a.nrem = copy(a.rem[:], p)
	return n, nil
}

// line encodes src (at most armorLine octets) as one line.
func (a *armorWriter) line(src []byte) {
	m := base64.StdEncoding.EncodedLen(len(src))
	if cap(a.out)-len(a.out) < m+2 {
		a.flush()
		if a.err != nil {
			return
		}
	}
	i := len(a.out)
	a.out = a.out[:i+m+2]
	if len(src) == armorLine {
		encodeLine((*[64]byte)(a.out[i:i+m]), (*[armorLine]byte)(src))
	} else {
		base64.StdEncoding.Encode(a.out[i:i+m], src)
	}
	a.out[i+m], a.out[i+m+1] = '\r', '\n'
}

// encodeLine is base64.StdEncoding.Encode for one whole line, twelve
// bits (two characters) per table lookup.
func encodeLine(dst *[64]byte, src *[armorLine]byte) {
	t := &base64Pairs
	for i, j := 0, 0; i < armorLine; i, j = i+3, j+4 {
		v := uint32(src[i])<<16 | uint32(src[i+1])<<8 | uint32(src[i+2])
		binary.LittleEndian.PutUint32(dst[j:], uint32(t[v>>12])|uint32(t[v&0xfff])<<16)
	}
}

// base64Pairs[v] holds the two base64 characters of the twelve bits v,
// the first in the low octet; it is computed once and only read
// afterwards.
var base64Pairs = func() (t [4096]uint16) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for v := range t {
		t[v] = uint16(alphabet[v>>6]) | uint16(alphabet[v&63])<<8
	}
	return t
}()

// finish encodes the last, short line and the CRC-24 line, adds end (the
// armor tail line and what follows it) and writes everything out.
func (a *armorWriter) finish(end ...string) error {
	if a.nrem > 0 {
		a.line(a.rem[:a.nrem])
		a.nrem = 0
	}
	sum := [3]byte{byte(a.crc >> 16), byte(a.crc >> 8), byte(a.crc)}
	var line [5]byte
	line[0] = '='
	base64.StdEncoding.Encode(line[1:], sum[:])
	a.text(string(line[:]) + "\r\n")
	for _, s := range end {
		a.text(s)
	}
	a.flush()
	return a.err
}

func (a *armorWriter) flush() {
	if a.err != nil || len(a.out) == 0 {
		return
	}
	_, a.err = a.w.Write(a.out)
	a.out = a.out[:0]
}

// CRC-24 of RFC 9580 §6.1, computed eight octets at a time. The register
// holds the 24-bit CRC in its top three octets, so that the usual
// MSB-first table method for 32-bit CRCs applies.
const (
	crc24Init = 0xb704ce
	crc24Poly = 0x864cfb << 8 // 0x1864cfb without its x^24 term, shifted up
)

// crc24Tables[k][i] is the register after octet i followed by k zero
// octets; the tables are computed once and only read afterwards.
var crc24Tables = func() (t [8][256]uint32) {
	for i := range t[0] {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ crc24Poly
			} else {
				c <<= 1
			}
		}
		t[0][i] = c
	}
	for k := 1; k < 8; k++ {
		for i := range t[k] {
			c := t[k-1][i]
			t[k][i] = c<<8 ^ t[0][c>>24]
		}
	}
	return t
}()

func crc24(crc uint32, p []byte) uint32 {
	t := &crc24Tables
	c := crc << 8
	for len(p) >= 8 {
		x := c ^ binary.BigEndian.Uint32(p)
		y := binary.BigEndian.Uint32(p[4:])
		c = t[7][x>>24] ^ t[6][x>>16&0xff] ^ t[5][x>>8&0xff] ^ t[4][x&0xff] ^
			t[3][y>>24] ^ t[2][y>>16&0xff] ^ t[1][y>>8&0xff] ^ t[0][y&0xff]
		p = p[8:]
	}
	for _, b := range p {
		c = c<<8 ^ t[0][byte(c>>24)^b]
	}
	return c >> 8
}
