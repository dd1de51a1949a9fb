package dkimsign

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrRecord: a DKIM key record that is malformed, revoked, or that names
// a key a receiver would refuse.
var ErrRecord = errors.New("dkimsign: unusable DKIM key record")

// Record is a DKIM key record (RFC 6376 §3.6.1), as ParseRecord read it.
type Record struct {
	Algorithm string   // k=: "rsa" or "ed25519"
	Bits      int      // an RSA key's size; 256 for Ed25519
	Hashes    []string // h=, when given
	Testing   bool     // t=y: receivers treat signatures as unsigned
	Strict    bool     // t=s: i= must be d=, not a subdomain
	Services  []string // s=, when given
	Notes     string   // n=
}

// RecordError says why a key record cannot be used. errors.Is(err,
// ErrRecord) holds.
type RecordError struct {
	Reason string
}

func (e *RecordError) Error() string        { return "dkimsign: key record: " + e.Reason }
func (e *RecordError) Is(target error) bool { return target == ErrRecord }

// Temporary reports false: the record must be changed.
func (e *RecordError) Temporary() bool { return false }

// ParseRecord reads a DKIM key record, the TXT record's character-strings
// joined, and checks it the way a receiver would: v=DKIM1 first when
// given, a key type it knows (rsa, ed25519), a public key that parses
// and is not empty (an empty p= revokes the key), an RSA key of at least
// MinRSABits bits, and sha256 among the hashes when h= lists them. Any
// other problem is a *RecordError.
func ParseRecord(txt string) (*Record, error) {
	tags := map[string]string{}
	for i, part := range strings.Split(txt, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, &RecordError{Reason: fmt.Sprintf("%q is not a tag=value pair", part)}
		}
		if _, dup := tags[name]; dup {
			return nil, &RecordError{Reason: fmt.Sprintf("tag %s= appears twice", name)}
		}
		value = strings.Join(strings.Fields(value), "")
		if name == "v" {
			if i != 0 {
				return nil, &RecordError{Reason: "v= must be the first tag"}
			}
			if value != "DKIM1" {
				return nil, &RecordError{Reason: fmt.Sprintf("v=%s, want DKIM1", value)}
			}
		}
		tags[name] = value
	}
	r := &Record{Algorithm: "rsa", Notes: tags["n"]}
	if k, ok := tags["k"]; ok {
		r.Algorithm = k
	}
	if h, ok := tags["h"]; ok {
		r.Hashes = strings.Split(h, ":")
		has := false
		for _, x := range r.Hashes {
			has = has || x == "sha256"
		}
		if !has {
			return nil, &RecordError{Reason: fmt.Sprintf("h=%s does not allow sha256", h)}
		}
	}
	if s, ok := tags["s"]; ok {
		r.Services = strings.Split(s, ":")
		ok := false
		for _, x := range r.Services {
			ok = ok || x == "*" || x == "email"
		}
		if !ok {
			return nil, &RecordError{Reason: fmt.Sprintf("s=%s does not cover email", s)}
		}
	}
	for _, f := range strings.Split(tags["t"], ":") {
		r.Testing = r.Testing || f == "y"
		r.Strict = r.Strict || f == "s"
	}
	p, ok := tags["p"]
	if !ok {
		return nil, &RecordError{Reason: "no p= tag (public key)"}
	}
	if p == "" {
		return nil, &RecordError{Reason: "p= is empty: the key is revoked"}
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, &RecordError{Reason: "p= is not base64"}
	}
	switch r.Algorithm {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// Some publish the PKCS #1 form; receivers accept it too.
			if pk, err1 := x509.ParsePKCS1PublicKey(der); err1 == nil {
				pub, err = pk, nil
			}
		}
		rk, ok := pub.(*rsa.PublicKey)
		if err != nil || !ok {
			return nil, &RecordError{Reason: "p= is not an RSA public key"}
		}
		r.Bits = rk.N.BitLen()
		if r.Bits < MinRSABits {
			return nil, &RecordError{Reason: fmt.Sprintf("the RSA key has %d bits; at least %d are expected", r.Bits, MinRSABits)}
		}
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, &RecordError{Reason: fmt.Sprintf("p= holds %d octets, an Ed25519 key has %d", len(der), ed25519.PublicKeySize)}
		}
		r.Bits = 256
	default:
		return nil, &RecordError{Reason: fmt.Sprintf("k=%s: not a key type DKIM signs with (rsa, ed25519)", r.Algorithm)}
	}
	return r, nil
}
