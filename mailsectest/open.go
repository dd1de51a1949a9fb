package mailsectest

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	// Registers the charsets go-message decodes text parts with.
	_ "github.com/emersion/go-message/charset"
)

// maxOpen bounds the message, and what it decrypts to, that the Open
// helpers read.
const maxOpen = 64 << 20

// Opened is a protected message as its recipient reads it: decrypted,
// its signature (if any) verified.
type Opened struct {
	// Outer is the header the message travelled with (Subject "...").
	Outer mail.Header
	// Header is the header of the protected content: the real Subject,
	// From, To and Date when the sender protected its headers
	// (protected-headers="v1"), otherwise only the content fields.
	Header mail.Header
	// Raw is the protected content, header included, as it was encrypted
	// (the part that was signed, when it was).
	Raw []byte
	// Signed reports a signature that verified; SignerCertificate (S/MIME)
	// or SignerKey (OpenPGP) made it. A signature that does not verify is
	// an error, never Signed false.
	Signed            bool
	SignerCertificate *x509.Certificate
	SignerKey         *openpgp.Entity
	// KeyTransport and ContentCipher say how an S/MIME message was
	// encrypted: KeyTransport "rsaEncryption" or "rsaes-oaep-sha256",
	// ContentCipher "aes256-cbc", "aes256-gcm" (AuthEnvelopedData, its
	// tag verified), "aes128-cbc" or "aes128-gcm". Empty for OpenPGP.
	KeyTransport  string
	ContentCipher string
}

// Entity parses Raw afresh: the protected content as go-message reads it.
func (o *Opened) Entity() (*message.Entity, error) {
	return message.Read(bytes.NewReader(o.Raw))
}

// Text returns the first text/plain part of the protected content,
// decoded (transfer encoding and charset), or an error when there is none.
func (o *Opened) Text() (string, error) {
	e, err := o.Entity()
	if err != nil && !message.IsUnknownCharset(err) {
		return "", err
	}
	var text string
	found := false
	err = e.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil {
			return err
		}
		if found {
			return nil
		}
		if t, _, _ := part.Header.ContentType(); t == "text/plain" {
			b, err := io.ReadAll(io.LimitReader(part.Body, maxOpen))
			if err != nil {
				return err
			}
			text, found = string(b), true
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("mailsectest: reading the protected content: %w", err)
	}
	if !found {
		return "", errors.New("mailsectest: no text/plain part in the protected content")
	}
	return text, nil
}

// readOuter reads the header of a received message and its body, the
// transfer encoding undone, and checks that it is wantType.
func readOuter(raw []byte, wantType ...string) (mail.Header, map[string]string, []byte, error) {
	if len(raw) > maxOpen {
		return mail.Header{}, nil, nil, fmt.Errorf("mailsectest: message larger than %d bytes", maxOpen)
	}
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) {
		return mail.Header{}, nil, nil, fmt.Errorf("mailsectest: message does not parse: %w", err)
	}
	t, params, err := e.Header.ContentType()
	if err != nil {
		return mail.Header{}, nil, nil, fmt.Errorf("mailsectest: Content-Type: %w", err)
	}
	ok := false
	for _, w := range wantType {
		ok = ok || t == w
	}
	if !ok {
		return mail.Header{}, nil, nil, fmt.Errorf("mailsectest: message is %s, not %s: not protected as expected", t, strings.Join(wantType, " or "))
	}
	body, err := io.ReadAll(io.LimitReader(e.Body, maxOpen))
	if err != nil {
		return mail.Header{}, nil, nil, fmt.Errorf("mailsectest: reading the body: %w", err)
	}
	return mail.Header{Header: e.Header}, params, body, nil
}

// splitSigned splits a multipart/signed entity (RFC 1847) into the exact
// octets of its first part, which the signature covers, and the entity of
// its second part, the signature. The Content-Type must name one of
// protocols.
func splitSigned(content []byte, protocols ...string) (signed []byte, sig *message.Entity, err error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(content)))
	if err != nil {
		return nil, nil, err
	}
	t, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return nil, nil, err
	}
	known := false
	for _, p := range protocols {
		known = known || strings.EqualFold(params["protocol"], p)
	}
	if t != "multipart/signed" || !known || params["boundary"] == "" {
		return nil, nil, fmt.Errorf("not multipart/signed with protocol %s", strings.Join(protocols, " or "))
	}
	delim := []byte("--" + params["boundary"])
	// The first delimiter line, then the first part up to the CRLF that
	// belongs to the next delimiter (RFC 2046 §5.1.1).
	i := bytes.Index(content, append(delim, '\r', '\n'))
	if i < 0 || (i > 0 && content[i-1] != '\n') {
		return nil, nil, errors.New("multipart/signed without its first delimiter")
	}
	start := i + len(delim) + 2
	j := bytes.Index(content[start:], append([]byte("\r\n"), delim...))
	if j < 0 {
		return nil, nil, errors.New("multipart/signed with one part")
	}
	signed = content[start : start+j]
	rest := content[start+j+2+len(delim):]
	if !bytes.HasPrefix(rest, []byte("\r\n")) {
		return nil, nil, errors.New("multipart/signed: malformed second delimiter")
	}
	rest = rest[2:]
	k := bytes.Index(rest, append(append([]byte("\r\n"), delim...), '-', '-'))
	if k < 0 {
		return nil, nil, errors.New("multipart/signed without its close delimiter")
	}
	sig, err = message.Read(bytes.NewReader(rest[:k]))
	if err != nil {
		return nil, nil, fmt.Errorf("signature part: %w", err)
	}
	return signed, sig, nil
}

// opened builds the result from the protected content's octets.
func opened(outer mail.Header, raw []byte) (*Opened, error) {
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) {
		return nil, fmt.Errorf("mailsectest: decrypted content does not parse: %w", err)
	}
	return &Opened{Outer: outer, Header: mail.Header{Header: e.Header}, Raw: raw}, nil
}

// isMultipartSigned reports whether content's header says multipart/signed.
func isMultipartSigned(content []byte) bool {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(content)))
	if err != nil {
		return false
	}
	t, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return t == "multipart/signed"
}
