package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/ocsp"

	_ "crypto/sha1" // the CertID hash RFC 5019 asks for
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// The OIDs this file needs that x/crypto/ocsp keeps to itself.
var (
	oidNonce     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2} // RFC 6960 §4.4.1
	oidOCSPBasic = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	hashOIDs     = []struct {
		h   crypto.Hash
		oid asn1.ObjectIdentifier
	}{
		{crypto.SHA1, asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}},
		{crypto.SHA256, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}},
		{crypto.SHA384, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}},
		{crypto.SHA512, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}},
	}
)

// nonceSize is the nonce length RFC 8954 §2.1 recommends.
const nonceSize = 32

// maxUndatedAge is how long an OCSP response without nextUpdate and
// without the request's nonce stays acceptable after its thisUpdate.
const maxUndatedAge = time.Hour

// The ASN.1 of RFC 6960 §4.1 and §4.2, as far as this file reads or
// writes it.
type certID struct {
	HashAlgorithm pkix.AlgorithmIdentifier
	NameHash      []byte
	KeyHash       []byte
	Serial        *big.Int
}

type ocspRequest struct {
	TBS tbsRequest
}

type tbsRequest struct {
	RequestList []singleRequest
	Extensions  []pkix.Extension `asn1:"explicit,tag:2,optional"`
}

type singleRequest struct {
	Cert certID
}

type ocspResponse struct {
	Status   asn1.Enumerated
	Response responseBytes `asn1:"explicit,tag:0,optional"`
}

type responseBytes struct {
	Type     asn1.ObjectIdentifier
	Response []byte
}

type basicResponse struct {
	TBS          responseData
	SigAlg       pkix.AlgorithmIdentifier
	Signature    asn1.BitString
	Certificates []asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

type responseData struct {
	Version     int `asn1:"optional,default:0,explicit,tag:0"`
	ResponderID asn1.RawValue
	ProducedAt  time.Time `asn1:"generalized"`
	Responses   []singleResponse
	Extensions  []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

type singleResponse struct {
	CertID     certID
	Status     asn1.RawValue
	ThisUpdate time.Time        `asn1:"generalized"`
	NextUpdate time.Time        `asn1:"generalized,explicit,tag:0,optional"`
	Extensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

// newCertID returns the CertID of cert, issued by issuer, with hash h:
// the hashes of the issuer's DER name and of its public key's bits.
func newCertID(cert, issuer *x509.Certificate, h crypto.Hash, oid asn1.ObjectIdentifier) (certID, error) {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return certID{}, fmt.Errorf("issuer public key: %w", err)
	}
	name, key := h.New(), h.New()
	name.Write(issuer.RawSubject)
	key.Write(spki.PublicKey.RightAlign())
	return certID{
		HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.NullRawValue},
		NameHash:      name.Sum(nil),
		KeyHash:       key.Sum(nil),
		Serial:        cert.SerialNumber,
	}, nil
}

// ocspResult is what one responder said, for the cache.
type ocspResult struct {
	status  *Status
	revoked *RevokedError
}

// ocsp asks the responder at u about cert.
func (c *Checker) ocsp(ctx context.Context, u string, cert, issuer *x509.Certificate) (*Status, error) {
	ik := issuerKey(issuer)
	key := "ocsp|" + hex.EncodeToString(ik[:]) + "|" + cert.SerialNumber.Text(16) + "|" + u
	if v, ok := c.cache.get(key, c.now()); ok {
		if f, ok := v.(fetchFailure); ok {
			return nil, f.err
		}
		return v.(ocspResult).unpack(true)
	}
	v, err := c.shared(ctx, key, func(ctx context.Context) (any, error) {
		r, size, err := c.askOCSP(ctx, u, cert, issuer)
		if err != nil {
			c.remember(key, err)
			return nil, err
		}
		// A response without nextUpdate is not cached: newer
		// information is always available (RFC 5019 §2.2.4).
		if next := r.status.NextUpdate; !next.IsZero() {
			c.cache.put(key, r, size, next)
		}
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(ocspResult).unpack(false)
}

func (r ocspResult) unpack(cached bool) (*Status, error) {
	if r.revoked != nil {
		e := *r.revoked
		return nil, &e
	}
	s := *r.status
	s.Cached = cached
	return &s, nil
}

// askOCSP makes one request and checks the response. It returns the
// result and the response's size.
func (c *Checker) askOCSP(ctx context.Context, u string, cert, issuer *x509.Certificate) (ocspResult, int64, error) {
	invalid := func(format string, a ...any) error {
		err := &InvalidError{Source: SourceOCSP, URL: u, Reason: fmt.Sprintf(format, a...)}
		c.log.WarnContext(ctx, "invalid OCSP response", "url", u, "reason", err.Reason)
		return err
	}
	id, err := newCertID(cert, issuer, crypto.SHA1, hashOIDs[0].oid)
	if err != nil {
		return ocspResult{}, 0, invalid("%v", err)
	}
	req := ocspRequest{TBS: tbsRequest{RequestList: []singleRequest{{Cert: id}}}}
	var nonceValue []byte
	if c.nonce != NonceOmit {
		n := make([]byte, nonceSize)
		if _, err := rand.Read(n); err != nil {
			return ocspResult{}, 0, err
		}
		// extnValue holds the DER of Nonce ::= OCTET STRING.
		nonceValue, err = asn1.Marshal(n)
		if err != nil {
			return ocspResult{}, 0, err
		}
		req.TBS.Extensions = []pkix.Extension{{Id: oidNonce, Value: nonceValue}}
	}
	der, err := asn1.Marshal(req)
	if err != nil {
		return ocspResult{}, 0, err
	}
	raw, err := c.fetch(ctx, SourceOCSP, u, der, "application/ocsp-request", "application/ocsp-response", c.maxOCSP)
	if err != nil {
		return ocspResult{}, 0, err
	}
	return c.checkOCSP(ctx, u, raw, cert, issuer, nonceValue)
}

// checkOCSP checks the response raw from u to a request about cert,
// issued by issuer, that carried the nonce extension value nonceValue
// (nil when none).
func (c *Checker) checkOCSP(ctx context.Context, u string, raw []byte, cert, issuer *x509.Certificate, nonceValue []byte) (ocspResult, int64, error) {
	invalid := func(format string, a ...any) error {
		err := &InvalidError{Source: SourceOCSP, URL: u, Reason: fmt.Sprintf(format, a...)}
		c.log.WarnContext(ctx, "invalid OCSP response", "url", u, "reason", err.Reason)
		return err
	}
	var outer ocspResponse
	if rest, err := asn1.Unmarshal(raw, &outer); err != nil || len(rest) > 0 {
		return ocspResult{}, 0, invalid("response does not parse")
	}
	if outer.Status != 0 {
		return ocspResult{}, 0, invalid("responder answered %s", ocsp.ResponseStatus(outer.Status))
	}
	if !outer.Response.Type.Equal(oidOCSPBasic) {
		return ocspResult{}, 0, invalid("not a basic OCSP response")
	}
	var basic basicResponse
	if rest, err := asn1.Unmarshal(outer.Response.Response, &basic); err != nil || len(rest) > 0 {
		return ocspResult{}, 0, invalid("basic response does not parse")
	}
	// x/crypto/ocsp checks the signature against the embedded responder
	// certificate, or leaves it when there is none and no issuer is
	// given: the responder's authorisation is checked below.
	resp, err := ocsp.ParseResponseForCert(raw, cert, nil)
	if err != nil {
		return ocspResult{}, 0, invalid("%v", err)
	}

	// The CertID must be the one asked about: serial, and the issuer's
	// name and key (x/crypto/ocsp compares the serial only).
	i := slices.IndexFunc(basic.TBS.Responses, func(s singleResponse) bool { return s.CertID.Serial.Cmp(cert.SerialNumber) == 0 })
	if i < 0 {
		return ocspResult{}, 0, invalid("no response for serial %s", serialHex(cert.SerialNumber))
	}
	got := basic.TBS.Responses[i].CertID
	hi := slices.IndexFunc(hashOIDs, func(h struct {
		h   crypto.Hash
		oid asn1.ObjectIdentifier
	}) bool {
		return h.oid.Equal(got.HashAlgorithm.Algorithm)
	})
	if hi < 0 {
		return ocspResult{}, 0, invalid("CertID hash algorithm %v not supported", got.HashAlgorithm.Algorithm)
	}
	want, err := newCertID(cert, issuer, hashOIDs[hi].h, hashOIDs[hi].oid)
	if err != nil {
		return ocspResult{}, 0, invalid("%v", err)
	}
	if !bytes.Equal(got.NameHash, want.NameHash) || !bytes.Equal(got.KeyHash, want.KeyHash) {
		return ocspResult{}, 0, invalid("CertID names another issuer")
	}

	now := c.now()
	if err := c.authorised(resp, issuer, now); err != nil {
		return ocspResult{}, 0, invalid("%v", err)
	}

	nonceEchoed := false
	for _, e := range basic.TBS.Extensions {
		switch {
		case e.Id.Equal(oidNonce):
			if nonceValue == nil {
				continue
			}
			// Some responders echo the nonce without its OCTET STRING
			// wrapping; both forms carry the same bytes.
			if !bytes.Equal(e.Value, nonceValue) && !bytes.Equal(e.Value, nonceValue[2:]) {
				return ocspResult{}, 0, invalid("nonce does not match the request's (a replayed response?)")
			}
			nonceEchoed = true
		case e.Critical:
			return ocspResult{}, 0, invalid("unsupported critical extension %v", e.Id)
		}
	}
	if !nonceEchoed && c.nonce == NonceRequire {
		return ocspResult{}, 0, invalid("response does not echo the request's nonce")
	}

	if resp.ThisUpdate.After(now.Add(c.skew)) {
		return ocspResult{}, 0, invalid("thisUpdate %s is in the future", resp.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate.Add(c.skew)) {
		return ocspResult{}, 0, invalid("out of date: nextUpdate %s has passed", resp.NextUpdate.UTC().Format(time.RFC3339))
	}
	if resp.NextUpdate.IsZero() && !nonceEchoed && now.After(resp.ThisUpdate.Add(maxUndatedAge+c.skew)) {
		return ocspResult{}, 0, invalid("out of date: no nextUpdate, no nonce, and thisUpdate %s more than %v ago",
			resp.ThisUpdate.UTC().Format(time.RFC3339), maxUndatedAge)
	}

	st := &Status{Subject: cert.Subject.String(), Serial: cert.SerialNumber, Source: SourceOCSP, URL: u,
		ProducedAt: resp.ProducedAt, NextUpdate: resp.NextUpdate, Nonce: nonceEchoed}
	size := int64(len(raw))
	switch resp.Status {
	case ocsp.Good:
		c.log.DebugContext(ctx, "OCSP status good", "url", u, "serial", serialHex(cert.SerialNumber))
		return ocspResult{status: st}, size, nil
	case ocsp.Revoked:
		return ocspResult{status: st, revoked: &RevokedError{Subject: cert.Subject.String(), Serial: cert.SerialNumber,
			Issuer: issuer.Subject.String(), RevokedAt: resp.RevokedAt, Reason: resp.RevocationReason,
			Source: SourceOCSP, URL: u}}, size, nil
	default:
		return ocspResult{}, 0, invalid("responder does not know the certificate (status unknown)")
	}
}

// authorised checks that resp was signed by issuer, or by a responder
// certificate that issuer issued for OCSP signing and that is valid at
// now (RFC 6960 §4.2.2.2). Delegation goes one level only: the responder
// certificate must be signed by the issuer itself.
func (c *Checker) authorised(resp *ocsp.Response, issuer *x509.Certificate, now time.Time) error {
	d := resp.Certificate
	if d == nil || bytes.Equal(d.Raw, issuer.Raw) {
		if err := resp.CheckSignatureFrom(issuer); err != nil {
			return errors.New("signature does not verify with the issuer's key")
		}
		return nil
	}
	if resp.CheckSignatureFrom(issuer) == nil {
		// Signed by the issuer, with another certificate enclosed.
		return nil
	}
	who := "responder certificate " + d.Subject.String()
	if !bytes.Equal(d.RawIssuer, issuer.RawSubject) || d.CheckSignatureFrom(issuer) != nil {
		return errors.New(who + " was not issued by the certificate's issuer: not authorised")
	}
	if !slices.Contains(d.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New(who + " lacks the id-kp-OCSPSigning extended key usage: not authorised")
	}
	if now.Before(d.NotBefore.Add(-c.skew)) || now.After(d.NotAfter.Add(c.skew)) {
		return errors.New(who + " is not valid now")
	}
	if err := resp.CheckSignatureFrom(d); err != nil {
		return errors.New("signature does not verify with the " + who)
	}
	return nil
}
