// Package dane authenticates an SMTP server's certificate with DANE TLSA
// records, as RFC 7672 prescribes for delivery to MX hosts (with the
// updates of RFC 7671 to RFC 6698).
//
// Start with [Usable], which picks from a TLSA RRset the records SMTP can
// use, then put [VerifyConnection] in a [tls.Config] (with
// InsecureSkipVerify set: DANE replaces the WebPKI here) or call [Verify]
// on the chain the server sent.
//
// # Threat model
//
// An active attacker between the client and an MX host can strip
// STARTTLS, answer with its own certificate, or (with forged DNS answers)
// point the client at its own MX host. DANE defeats all three, but only
// when the whole path is DNSSEC-secure: the MX RRset of the recipient
// domain, the address records of the MX host, and the TLSA RRset at
// "_25._tcp.<MX host>" must all be authenticated (the AD bit from a
// validating resolver the client can trust, RFC 7672 §2.1 and §2.2). Records
// from an insecure zone prove nothing: an attacker who can forge the MX
// answer can forge the TLSA answer too. This package checks certificates
// against records; it cannot tell how the records were obtained, so the
// caller must:
//
//   - look up the TLSA records only when the MX and address lookups were
//     authenticated, and use them only when the TLSA answer was
//     authenticated too (RFC 7672 §2.2);
//   - look up "_25._tcp." + the MX host name, following CNAMEs only as far
//     as every step is secure, and pass as names the TLSA base domain (the
//     name the records were found at, without "_25._tcp.") and the MX host
//     name as the MX record gave it (RFC 7672 §2.2.3, §3.2.2);
//   - refuse to connect when the TLSA lookup of a secure host failed (a
//     SERVFAIL or timeout, which is also how a validating resolver reports a
//     bogus answer): the records may have been suppressed by an attacker
//     (RFC 7672 §2.2). Try the next MX host, or fail the delivery;
//   - when an authenticated RRset holds records but [Usable] returns none,
//     still require TLS, without authenticating the server (RFC 7672 §2.2,
//     RFC 7671 §10.3): the domain asked for DANE, so a server without
//     STARTTLS is a downgrade;
//   - when [Usable] returns records, require TLS and accept the server only
//     if [Verify] does: a certificate that matches no usable record ends
//     the session, and is not a reason to fall back to the WebPKI or to
//     plaintext (RFC 7672 §2.2, §3).
//
// # What is checked
//
// A DANE-EE(3) record matches the server's own certificate, or its public
// key, and nothing else is checked: not the names, not the dates, not the
// issuer (RFC 7672 §3.1.1). A DANE-TA(2) record names a trust anchor: the
// server's certificate must chain to it (with the other certificates the
// server sent as intermediates), every certificate on the way, the anchor
// included, must be valid at the time given, the chain must allow
// serverAuth (an extended key usage that includes it, or none), and the
// server's certificate must carry one of the reference names as a
// subjectAltName dNSName (RFC 7672 §3.1.2, §3.2.2). Any one usable record
// that matches is enough.
//
// The trust anchor of a DANE-TA(2) record must be a certificate the server
// sent, other than its own (RFC 7672 §3.1.2 requires servers to send it),
// or, for a "2 0 0" record, the certificate in the record itself (RFC 7671
// §5.2.2). A "2 1 x" record matches an anchor certificate's public key, but
// a bare public key is not used as an anchor when no certificate the server
// sent carries it (RFC 7671 §5.2.3 leaves that optional). A DANE-TA(2)
// record that matches only the server's own certificate is not a trust
// anchor: publish a DANE-EE(3) record for that.
//
// # Example
//
//	// ans is the authenticated answer for "_25._tcp." + mxHost.
//	usable := dane.Usable(ans.Records)
//	base := strings.TrimPrefix(ans.Name, "_25._tcp.") // the TLSA base domain
//	cfg := &tls.Config{
//		ServerName:         base, // SNI (RFC 7671 §7)
//		MinVersion:         tls.VersionTLS12,
//		InsecureSkipVerify: true, // DANE, not the WebPKI, authenticates the server
//		VerifyConnection: dane.VerifyConnection(usable, []string{base, mxHost}, time.Now,
//			func(m dane.Match) { log.Printf("authenticated by TLSA %s", m.Record) }),
//	}
package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailsec/mailsec/dns"
)

// Certificate usages, selectors and matching types (RFC 6698 §2.1, names
// from RFC 7218).
const (
	usageDANETA = 2 // DANE-TA: a trust anchor for the server's chain
	usageDANEEE = 3 // DANE-EE: the server's own certificate or key

	selectorCert = 0 // the whole DER certificate
	selectorSPKI = 1 // the DER SubjectPublicKeyInfo

	matchFull   = 0 // the selected bytes themselves
	matchSHA256 = 1 // their SHA2-256 digest
	matchSHA512 = 2 // their SHA2-512 digest
)

// Usable returns the records of an authenticated TLSA RRset that SMTP can
// use (RFC 7672 §3.1): usage DANE-TA(2) or DANE-EE(3), selector Cert(0) or
// SPKI(1), and matching type Full(0) (with data), SHA2-256(1) (32 octets)
// or SHA2-512(2) (64 octets). PKIX-TA(0) and PKIX-EE(1) records are
// unusable for SMTP (RFC 7672 §3.1.3), and so are unknown parameters and
// data of the wrong length.
//
// Digest algorithm agility (RFC 7671 §9) is applied to what remains: for
// each usage and selector, only Full(0) records and the records with the
// strongest digest present are kept, so that a "3 1 2" record in the RRset
// retires every "3 1 1" record beside it, and an attacker who could find a
// SHA2-256 collision gains nothing.
//
// The records returned are copies, in their original order; nil when none
// is usable. An RRset with records but none usable means TLS is still
// required, unauthenticated (see the package documentation).
func Usable(recs []dns.TLSA) []dns.TLSA {
	// strongest[usage-2][selector] is the strongest digest present.
	var strongest [2][2]uint8
	for _, r := range recs {
		if wellFormed(r) {
			s := &strongest[r.Usage-usageDANETA][r.Selector]
			*s = max(*s, r.MatchingType)
		}
	}
	var out []dns.TLSA
	for _, r := range recs {
		if !wellFormed(r) {
			continue
		}
		// RFC 7671 §9: Full(0) records are always kept.
		if r.MatchingType != matchFull && r.MatchingType != strongest[r.Usage-usageDANETA][r.Selector] {
			continue
		}
		r.Data = bytes.Clone(r.Data)
		out = append(out, r)
	}
	return out
}

// wellFormed reports whether r has parameters SMTP clients use and data
// of the right length for its matching type (RFC 7672 §3.1, RFC 7671 §9:
// malformed records are discarded before digest agility applies).
func wellFormed(r dns.TLSA) bool {
	if r.Usage != usageDANETA && r.Usage != usageDANEEE {
		return false
	}
	if r.Selector != selectorCert && r.Selector != selectorSPKI {
		return false
	}
	switch r.MatchingType {
	case matchFull:
		return len(r.Data) > 0
	case matchSHA256:
		return len(r.Data) == sha256.Size
	case matchSHA512:
		return len(r.Data) == sha512.Size
	}
	return false
}

// Match says which record authenticated a server.
type Match struct {
	// Record is the TLSA record that matched. Its Usage says how the
	// server was authenticated: 3 (DANE-EE) or 2 (DANE-TA).
	Record dns.TLSA
	// Depth is where the matching certificate sits in the chain the
	// server sent: 0 (its own certificate) for DANE-EE; for DANE-TA the
	// depth of the trust anchor, 1 for the certificate after the
	// server's own. An anchor taken from a "2 0 0" record because the
	// server did not send it has Depth len(chain).
	Depth int
	// Name is, for DANE-TA, the reference name the server's certificate
	// was valid for; empty for DANE-EE, where names are not checked.
	Name string
}

// Errors an *Error matches with errors.Is.
var (
	// ErrNoUsableRecords: no record given is usable for SMTP (TLS-RPT
	// "tlsa-invalid"). TLS is still required; see the package
	// documentation.
	ErrNoUsableRecords = errors.New("dane: no usable TLSA records")
	// ErrNoMatch: no usable record authenticates the server's
	// certificate. Every *Error from Verify with usable records matches
	// it, including those that also match ErrExpired or ErrNameMismatch.
	ErrNoMatch = errors.New("dane: certificate not authenticated by any usable TLSA record")
	// ErrExpired: a DANE-TA(2) record named the trust anchor, but the
	// server's certificate was expired or not yet valid (TLS-RPT
	// "certificate-expired").
	ErrExpired = errors.New("dane: certificate expired or not yet valid")
	// ErrNameMismatch: the server's certificate chains to a DANE-TA(2)
	// trust anchor but is valid for none of the reference names (TLS-RPT
	// "certificate-host-mismatch").
	ErrNameMismatch = errors.New("dane: certificate not valid for the MX host")
)

// failure classifies a verification failure; a higher value is a failure
// that got further, reported in preference to the others.
type failure int

const (
	failNoUsable     failure = iota // no usable records
	failNoMatch                     // no certificate matched a record
	failChain                       // an anchor matched, the chain did not verify
	failExpired                     // an anchor matched, the server's certificate is out of date
	failNameMismatch                // the chain verified, the names did not
)

// Error reports that the TLSA records did not authenticate a server. It
// is permanent: the same certificate and records fail again.
type Error struct {
	// Host is the first reference name given to Verify (the TLSA base
	// domain or MX host name); empty if none was.
	Host string
	// Reason says what failed, for people: which records were tried and
	// what the certificate lacked.
	Reason string
	// Err is the underlying error from chain verification, if any.
	Err  error
	kind failure
}

func (e *Error) Error() string {
	s := "dane: "
	if e.Host != "" {
		s += e.Host + ": "
	}
	s += e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinels ErrNoUsableRecords, ErrNoMatch, ErrExpired and
// ErrNameMismatch by the kind of failure.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNoUsableRecords:
		return e.kind == failNoUsable
	case ErrNoMatch:
		return e.kind != failNoUsable
	case ErrExpired:
		return e.kind == failExpired
	case ErrNameMismatch:
		return e.kind == failNameMismatch
	}
	return false
}

// Temporary is false: the same certificate fails against the same records
// again.
func (e *Error) Temporary() bool { return false }

// ResultType is the TLS-RPT result type of the failure (RFC 8460 §4.3):
// "tlsa-invalid" when no record is usable, "certificate-expired" and
// "certificate-host-mismatch" for a DANE-TA chain that led to its anchor
// with an expired certificate or for other names, and
// "validation-failure" when no record matched or the chain did not verify.
func (e *Error) ResultType() string {
	switch e.kind {
	case failNoUsable:
		return "tlsa-invalid"
	case failExpired:
		return "certificate-expired"
	case failNameMismatch:
		return "certificate-host-mismatch"
	}
	return "validation-failure"
}

// Verify checks a server's certificate chain, leaf first as the server
// sent it, against TLSA records at time now. It uses only the usable
// records among recs (see [Usable]); records that Usable dropped are
// ignored. names are the reference identifiers for DANE-TA(2) records:
// the TLSA base domain and the MX host name (RFC 7672 §3.2.2). Each is
// matched against the server certificate's subjectAltName dNSNames,
// case-insensitively, a "*" being allowed as the whole leftmost label of
// a dNSName with at least two labels after it; the subject's common name
// is not used. DANE-EE(3) records ignore names and time.
//
// Verify returns the first record that authenticates the server, trying
// DANE-EE(3) records before DANE-TA(2) ones. When none does, the error is an *Error matching ErrNoUsableRecords or ErrNoMatch,
// describing the failure that got furthest.
func Verify(chain []*x509.Certificate, recs []dns.TLSA, names []string, now time.Time) (Match, error) {
	return verify(chain, Usable(recs), names, now)
}

// verify is Verify on records already filtered by Usable.
func verify(chain []*x509.Certificate, usable []dns.TLSA, names []string, now time.Time) (Match, error) {
	host := ""
	if len(names) > 0 {
		host = names[0]
	}
	if len(usable) == 0 {
		return Match{}, &Error{Host: host, kind: failNoUsable, Reason: "no usable TLSA records (usage 2 or 3, selector 0 or 1, matching type 0, 1 or 2)"}
	}
	if len(chain) == 0 || chain[0] == nil {
		return Match{}, &Error{Host: host, kind: failNoMatch, Reason: "the server sent no certificate"}
	}
	leaf := chain[0]

	// DANE-EE(3) first: it needs no chain, names or dates (RFC 7672
	// §3.1.1, RFC 7671 §5.1).
	for _, r := range usable {
		if r.Usage == usageDANEEE && matches(r, leaf) {
			return Match{Record: r, Depth: 0}, nil
		}
	}

	// DANE-TA(2) (RFC 7672 §3.1.2, RFC 7671 §5.2).
	best := &Error{Host: host, kind: failNoMatch,
		Reason: fmt.Sprintf("the certificate chain matches none of the %d usable TLSA records", len(usable))}
	for _, r := range usable {
		if r.Usage != usageDANETA {
			continue
		}
		for _, a := range anchors(r, chain) {
			m, err := verifyTA(r, a, chain, names, now)
			if err == nil {
				return m, nil
			}
			if err.kind > best.kind {
				best = err
			}
		}
	}
	best.Host = host
	return Match{}, best
}

// anchor is a candidate trust anchor for a DANE-TA(2) record.
type anchor struct {
	cert  *x509.Certificate
	depth int
}

// anchors returns the certificates a DANE-TA(2) record names as trust
// anchors: those the server sent, after its own certificate, that match
// the record; and for a "2 0 0" record that none matched, the certificate
// in the record itself, which the client must accept even when the
// server left it out (RFC 7671 §5.2.2). The server's own certificate is
// never an anchor: DANE-TA records apply to issuers (depth 1 and up).
func anchors(r dns.TLSA, chain []*x509.Certificate) []anchor {
	leaf := chain[0]
	var out []anchor
	for d := 1; d < len(chain); d++ {
		c := chain[d]
		if c == nil || c.Equal(leaf) || !matches(r, c) {
			continue
		}
		if slices.ContainsFunc(out, func(a anchor) bool { return a.cert.Equal(c) }) {
			continue
		}
		out = append(out, anchor{c, d})
	}
	if len(out) == 0 && r.Selector == selectorCert && r.MatchingType == matchFull {
		if c, err := x509.ParseCertificate(r.Data); err == nil && !c.Equal(leaf) {
			out = append(out, anchor{c, len(chain)})
		}
	}
	return out
}

// verifyTA checks that the leaf chains to a, that the chain is valid at
// now, and that the leaf is valid for one of names.
func verifyTA(r dns.TLSA, a anchor, chain []*x509.Certificate, names []string, now time.Time) (Match, *Error) {
	leaf := chain[0]
	roots := x509.NewCertPool()
	roots.AddCert(a.cert)
	inter := x509.NewCertPool()
	for d := 1; d < len(chain); d++ {
		if chain[d] != nil && d != a.depth {
			inter.AddCert(chain[d])
		}
	}
	where := fmt.Sprintf("TLSA %s matched the certificate at depth %d (%s)", r, a.depth, subject(a.cert))
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		var ci x509.CertificateInvalidError
		if errors.As(err, &ci) && ci.Reason == x509.Expired && ci.Cert == leaf {
			return Match{}, &Error{kind: failExpired, Reason: where + ", but the server's certificate is out of date", Err: err}
		}
		return Match{}, &Error{kind: failChain, Reason: where + ", but the server's certificate does not chain to it", Err: err}
	}
	// RFC 7672 §3.2.2, §3.2.3: the reference identifiers.
	for _, n := range names {
		for _, pattern := range leaf.DNSNames {
			if matchName(pattern, n) {
				return Match{Record: r, Depth: a.depth, Name: n}, nil
			}
		}
	}
	return Match{}, &Error{kind: failNameMismatch,
		Reason: fmt.Sprintf("%s, but the server's certificate is for %s, not %s", where, listNames(leaf.DNSNames), listNames(names))}
}

// matches reports whether c matches the record's data under its selector
// and matching type (RFC 6698 §2.1.2, §2.1.3).
func matches(r dns.TLSA, c *x509.Certificate) bool {
	var b []byte
	switch r.Selector {
	case selectorCert:
		b = c.Raw
	case selectorSPKI:
		b = c.RawSubjectPublicKeyInfo
	default:
		return false
	}
	if len(b) == 0 {
		return false
	}
	switch r.MatchingType {
	case matchFull:
		return bytes.Equal(b, r.Data)
	case matchSHA256:
		h := sha256.Sum256(b)
		return bytes.Equal(h[:], r.Data)
	case matchSHA512:
		h := sha512.Sum512(b)
		return bytes.Equal(h[:], r.Data)
	}
	return false
}

// matchName reports whether the dNSName pattern from a certificate covers
// the reference name, as the WebPKI does (RFC 6125 §6.4, RFC 7672 §3.2.3):
// ASCII case-insensitive, a final dot ignored, and "*" only as the whole
// leftmost label, standing for exactly one label, with at least two labels
// after it.
func matchName(pattern, name string) bool {
	pattern, ok1 := lowerASCII(strings.TrimSuffix(pattern, "."))
	name, ok2 := lowerASCII(strings.TrimSuffix(name, "."))
	if !ok1 || !ok2 || pattern == "" || name == "" || strings.Contains(name, "*") {
		return false
	}
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, after, found := strings.Cut(name, ".")
		return found && label != "" && after == rest &&
			!strings.Contains(rest, "*") && strings.Contains(rest, ".")
	}
	return !strings.Contains(pattern, "*") && pattern == name
}

// lowerASCII lower-cases s, refusing anything but printable ASCII.
func lowerASCII(s string) (string, bool) {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c <= ' ' || c >= 0x7f:
			return "", false
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b), true
}

func subject(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "empty subject"
}

func listNames(names []string) string {
	if len(names) == 0 {
		return "no DNS names"
	}
	const limit = 5
	if len(names) > limit {
		return strings.Join(names[:limit], ", ") + fmt.Sprintf(" and %d more", len(names)-limit)
	}
	return strings.Join(names, ", ")
}

// VerifyConnection returns a function for tls.Config.VerifyConnection
// that runs [Verify] on the certificates the server sent, with recs and
// names as given (copied now) and the time from now (nil means
// time.Now). onMatch, if not nil, receives the match of every successful
// verification, for example to record it in a Receipt; it is called from
// the handshake, before it completes.
//
// Set InsecureSkipVerify in the same tls.Config: DANE replaces the WebPKI
// here, and crypto/tls would otherwise also require a publicly trusted
// chain for ServerName.
func VerifyConnection(recs []dns.TLSA, names []string, now func() time.Time, onMatch func(Match)) func(tls.ConnectionState) error {
	usable := Usable(recs)
	names = slices.Clone(names)
	if now == nil {
		now = time.Now
	}
	return func(cs tls.ConnectionState) error {
		m, err := verify(cs.PeerCertificates, usable, names, now())
		if err != nil {
			return err
		}
		if onMatch != nil {
			onMatch(m)
		}
		return nil
	}
}
