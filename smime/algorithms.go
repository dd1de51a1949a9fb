package smime

import (
	"context"
	"crypto/x509"
)

// Algorithms says which algorithms, beyond AES-256-CBC content encryption
// and RSA PKCS #1 v1.5 key transport that every S/MIME reader decrypts, a
// recipient's mail reader is known to decrypt. The zero value means none:
// the message is readable by gpgsm 2.2 and every version of Outlook.
type Algorithms struct {
	// GCM is AES-256-GCM content encryption in an AuthEnvelopedData
	// (RFC 5083, RFC 5084; recommended by RFC 8551 section 2.7), which
	// authenticates the ciphertext: a changed octet makes decryption fail
	// instead of yielding altered text. OpenSSL 3 reads it; gpgsm 2.2
	// does not. One message (one CMS object for all its recipients) has
	// one content cipher: it is AES-256-GCM only when every recipient
	// allows it.
	GCM bool
	// OAEP is RSAES-OAEP key transport with SHA-256 and MGF1-SHA-256
	// (RFC 3560, RFC 8017), which resists the padding-oracle attacks on
	// PKCS #1 v1.5. OpenSSL 3 reads it; gpgsm 2.2 does not. Key transport
	// is chosen per recipient (per certificate).
	OAEP bool
}

// ReaderAlgorithms says for one recipient, given its address (as the
// Sender passed it to Protect) and the certificate chosen for it, what its
// mail reader decrypts. An application that knows (from the
// SMIMECapabilities of a signed message the recipient sent, RFC 8551
// section 2.5.2, or from the user) answers from its record; one that
// cannot tell returns the zero Algorithms, the default every reader
// takes. It is called while Protect runs, from many goroutines at once
// for concurrent sends, and must not block for long.
type ReaderAlgorithms func(ctx context.Context, addr string, cert *x509.Certificate) Algorithms

// sealingFor chooses the algorithms of one CMS object for rcpts, each of
// which picked[i] is the chosen certificate of. With Options.Readers set
// it decides per recipient, else Options.Algorithms holds for all. The
// content is AES-256-GCM only when every recipient allows it; a
// certificate's key is transported with RSA-OAEP only when every
// recipient it is for allows it.
func (p *Protector) sealingFor(ctx context.Context, rcpts []string, picked []*x509.Certificate) sealing {
	s := sealing{gcm: len(rcpts) > 0}
	for i, r := range rcpts {
		c := picked[i]
		a := p.algorithms
		if p.readers != nil {
			a = p.readers(ctx, r, c)
		}
		s.gcm = s.gcm && a.GCM
		j := -1
		for k, have := range s.certs {
			if have.Equal(c) {
				j = k
				break
			}
		}
		if j < 0 {
			s.certs = append(s.certs, c)
			s.oaep = append(s.oaep, a.OAEP)
			continue
		}
		s.oaep[j] = s.oaep[j] && a.OAEP
	}
	return s
}
