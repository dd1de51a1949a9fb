package smime

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
)

// BERValue is one BER value, for tests of the encoding. For an indefinite
// length, Content runs up to the end-of-contents octets and Full includes
// them.
type BERValue struct {
	Tag         byte // the identifier octet
	Constructed bool
	Content     []byte
	Full        []byte
}

// ParseBER reads one value with a one-octet identifier from b, with
// definite or indefinite length.
func ParseBER(b []byte, depth int) (v BERValue, rest []byte, err error) {
	if depth > 64 {
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
	}
	if l > len(b)-hdr {
		return v, nil, errors.New("ber: truncated")
	}
	v.Content, v.Full = b[hdr:hdr+l], b[:hdr+l]
	return v, b[hdr+l:], nil
}

// OpenCMS decrypts the DER (or BER) of an EnvelopedData or
// AuthEnvelopedData this package writes, for a recipient, with the
// standard library only: the tests' independent reader. It returns the
// content and the names of the key transport and content cipher.
func OpenCMS(der []byte, cert *x509.Certificate, key *rsa.PrivateKey) (content []byte, keyAlg, cipherAlg string, err error) {
	return openCMS(der, cert, key)
}
