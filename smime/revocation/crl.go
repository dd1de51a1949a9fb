package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDP         = asn1.ObjectIdentifier{2, 5, 29, 28}
)

// crlResult is a verified CRL, reduced to what a lookup needs.
type crlResult struct {
	revoked    map[string]revokedEntry // by serial, hexadecimal
	thisUpdate time.Time
	nextUpdate time.Time
	// onlyUser and onlyCA are the scope the issuing distribution point
	// gives the CRL.
	onlyUser, onlyCA bool
	// partition reports that the issuing distribution point names a
	// distributionPoint: the CRL covers only the certificates that name
	// one of dpURIs, its fullName URIs, as their distribution point.
	partition bool
	dpURIs    []string
	// number is the CRL number (nil when the CRL has none).
	number *big.Int
}

// crlNumber is the highest CRL number seen for an issuer and
// distribution point.
type crlNumber struct{ n *big.Int }

// crlNumberTTL is how long the highest CRL number seen for an issuer and
// distribution point is remembered after it was last seen.
const crlNumberTTL = 30 * 24 * time.Hour

type revokedEntry struct {
	at     time.Time
	reason int
}

// crl looks cert up in the CRL at u, issued by issuer.
func (c *Checker) crl(ctx context.Context, u string, cert, issuer *x509.Certificate) (*Status, error) {
	ik := issuerKey(issuer)
	key := "crl|" + hex.EncodeToString(ik[:]) + "|" + u
	cached := true
	v, ok := c.cache.get(key, c.now())
	if f, failed := v.(fetchFailure); ok && failed {
		return nil, f.err
	}
	if !ok {
		cached = false
		var err error
		v, err = c.shared(ctx, key, func(ctx context.Context) (any, error) {
			r, size, err := c.fetchCRL(ctx, u, issuer)
			if err != nil {
				c.remember(key, err)
				return nil, err
			}
			if err := c.crlNumber(ctx, "crlnum|"+hex.EncodeToString(ik[:])+"|"+u, u, r); err != nil {
				return nil, err
			}
			c.cache.put(key, r, size, r.nextUpdate)
			return r, nil
		})
		if err != nil {
			return nil, err
		}
	}
	r := v.(*crlResult)
	invalid := func(reason string) error { return &InvalidError{Source: SourceCRL, URL: u, Reason: reason} }
	// A cached CRL may have become stale since it was stored.
	if c.now().After(r.nextUpdate.Add(c.skew)) {
		return nil, invalid("stale: nextUpdate " + r.nextUpdate.UTC().Format(time.RFC3339) + " has passed")
	}
	isCA := cert.BasicConstraintsValid && cert.IsCA
	switch {
	case r.onlyUser && isCA:
		return nil, invalid("the CRL covers end-entity certificates only, and this is a CA certificate")
	case r.onlyCA && !isCA:
		return nil, invalid("the CRL covers CA certificates only")
	}
	// RFC 5280 §6.3.3 (b)(2)(i): a CRL for one distribution point (a
	// partition of the issuer's CRLs) covers only the certificates that
	// name it. The URL compared is the certificate's, not a redirect's
	// target: a CRL served at the URL of another partition is refused.
	if r.partition && !slices.Contains(r.dpURIs, u) {
		return nil, invalid("the CRL is for another distribution point (" + strings.Join(r.dpURIs, ", ") + "), not for " + u)
	}
	if e, ok := r.revoked[cert.SerialNumber.Text(16)]; ok {
		return nil, &RevokedError{Subject: cert.Subject.String(), Serial: cert.SerialNumber, Issuer: issuer.Subject.String(),
			RevokedAt: e.at, Reason: e.reason, Source: SourceCRL, URL: u}
	}
	return &Status{Subject: cert.Subject.String(), Serial: cert.SerialNumber, Source: SourceCRL, URL: u,
		ProducedAt: r.thisUpdate, NextUpdate: r.nextUpdate, Cached: cached}, nil
}

// crlNumber refuses r, just fetched from u, when a CRL with a higher CRL
// number was seen before for the same issuer and URL (key): an older CRL,
// still within its validity, served again to hide a later revocation.
// Otherwise it remembers r's number.
func (c *Checker) crlNumber(ctx context.Context, key, u string, r *crlResult) error {
	if r.number == nil {
		return nil
	}
	now := c.now()
	if v, ok := c.cache.get(key, now); ok {
		if seen := v.(crlNumber).n; r.number.Cmp(seen) < 0 {
			err := &InvalidError{Source: SourceCRL, URL: u,
				Reason: fmt.Sprintf("CRL number %s is older than CRL number %s seen before", r.number, seen)}
			c.log.WarnContext(ctx, "invalid CRL", "url", u, "reason", err.Reason)
			return err
		}
	}
	c.cache.put(key, crlNumber{n: r.number}, 64, now.Add(crlNumberTTL))
	return nil
}

// fetchCRL fetches and checks the CRL at u. It returns it and its size.
func (c *Checker) fetchCRL(ctx context.Context, u string, issuer *x509.Certificate) (*crlResult, int64, error) {
	invalid := func(format string, a ...any) error {
		err := &InvalidError{Source: SourceCRL, URL: u, Reason: fmt.Sprintf(format, a...)}
		c.log.WarnContext(ctx, "invalid CRL", "url", u, "reason", err.Reason)
		return err
	}
	raw, err := c.fetch(ctx, SourceCRL, u, nil, "", "application/pkix-crl", c.maxCRL)
	if err != nil {
		return nil, 0, err
	}
	der := raw
	if b, _ := pem.Decode(raw); b != nil && b.Type == "X509 CRL" {
		der = b.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, 0, invalid("does not parse: %v", err)
	}
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return nil, 0, invalid("issued by %s, not by the certificate's issuer", crl.Issuer)
	}
	// CheckSignatureFrom also wants the issuer to be a CA with cRLSign
	// when it has a keyUsage extension.
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, 0, invalid("signature does not verify with the issuer's key: %v", err)
	}
	now := c.now()
	if crl.NextUpdate.IsZero() {
		return nil, 0, invalid("no nextUpdate (RFC 5280 §5.1.2.5 requires one)")
	}
	if now.After(crl.NextUpdate.Add(c.skew)) {
		return nil, 0, invalid("stale: nextUpdate %s has passed", crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	if crl.ThisUpdate.After(now.Add(c.skew)) {
		return nil, 0, invalid("thisUpdate %s is in the future", crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	r := &crlResult{revoked: make(map[string]revokedEntry, len(crl.RevokedCertificateEntries)),
		thisUpdate: crl.ThisUpdate, nextUpdate: crl.NextUpdate, number: crl.Number}
	for _, e := range crl.Extensions {
		switch {
		case e.Id.Equal(oidDeltaCRLIndicator):
			return nil, 0, invalid("a delta CRL, not a complete one")
		case e.Id.Equal(oidIssuingDP):
			if err := r.scope(e.Value); err != nil {
				return nil, 0, invalid("issuing distribution point: %v", err)
			}
		case e.Critical:
			return nil, 0, invalid("unsupported critical extension %v", e.Id)
		}
	}
	for _, e := range crl.RevokedCertificateEntries {
		for _, x := range e.Extensions {
			if x.Critical {
				// The certificate issuer extension (2.5.29.29) of an
				// indirect CRL among them: this entry may be another CA's.
				return nil, 0, invalid("entry %s has an unsupported critical extension %v", serialHex(e.SerialNumber), x.Id)
			}
		}
		r.revoked[e.SerialNumber.Text(16)] = revokedEntry{at: e.RevocationTime, reason: e.ReasonCode}
	}
	// The map costs more than the entries' DER: count it.
	return r, int64(len(raw)) + 64*int64(len(r.revoked)), nil
}

// scope reads an IssuingDistributionPoint (RFC 5280 §5.2.5) into r and
// refuses the kinds of CRL this package does not handle: partitioned by
// reason, indirect, for attribute certificates, or for a distribution
// point named relative to the issuer rather than by URI.
func (r *crlResult) scope(value []byte) error {
	in := cryptobyte.String(value)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return errors.New("does not parse")
	}
	for !seq.Empty() {
		var el cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadAnyASN1(&el, &tag) {
			return errors.New("does not parse")
		}
		flag := len(el) == 1 && el[0] != 0
		switch tag {
		case cbasn1.Tag(0).ContextSpecific().Constructed(): // distributionPoint
			if err := r.distributionPoint(el); err != nil {
				return err
			}
		case cbasn1.Tag(1).ContextSpecific():
			r.onlyUser = flag
		case cbasn1.Tag(2).ContextSpecific():
			r.onlyCA = flag
		case cbasn1.Tag(3).ContextSpecific():
			return errors.New("the CRL covers some revocation reasons only")
		case cbasn1.Tag(4).ContextSpecific():
			if flag {
				return errors.New("an indirect CRL")
			}
		case cbasn1.Tag(5).ContextSpecific():
			if flag {
				return errors.New("the CRL covers attribute certificates only")
			}
		default:
			return fmt.Errorf("unknown field [%d]", tag&0x1f)
		}
	}
	return nil
}

// distributionPoint reads the DistributionPointName of an issuing
// distribution point: its fullName's URIs go to r.dpURIs.
func (r *crlResult) distributionPoint(dpn cryptobyte.String) error {
	var full cryptobyte.String
	var tag cbasn1.Tag
	if !dpn.ReadAnyASN1(&full, &tag) || !dpn.Empty() {
		return errors.New("distributionPoint does not parse")
	}
	switch tag {
	case cbasn1.Tag(0).ContextSpecific().Constructed(): // fullName
	case cbasn1.Tag(1).ContextSpecific().Constructed():
		return errors.New("distributionPoint is a nameRelativeToCRLIssuer, which cannot be matched to an HTTP URL")
	default:
		return fmt.Errorf("distributionPoint: unknown name [%d]", tag&0x1f)
	}
	r.partition = true
	for !full.Empty() {
		var name cryptobyte.String
		if !full.ReadAnyASN1(&name, &tag) {
			return errors.New("distributionPoint fullName does not parse")
		}
		if tag == cbasn1.Tag(6).ContextSpecific() { // uniformResourceIdentifier
			r.dpURIs = append(r.dpURIs, string(name))
		}
	}
	return nil
}
