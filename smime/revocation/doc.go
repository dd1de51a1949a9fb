// Package revocation establishes whether a CA has revoked an X.509
// certificate, by OCSP (RFC 6960) and by CRLs (RFC 5280), for the S/MIME
// Protector: a certificate its CA revoked yesterday must not be encrypted
// to today.
//
// # Use
//
// Make one [Checker] with [New] and give it to the S/MIME Protector
// (smime.Options.Revocation); it then checks every recipient certificate,
// and every CA certificate between it and the roots that names an OCSP
// responder or a CRL, before content is encrypted to it. A recipient
// certificate that names neither cannot be checked and is refused unless
// smime.Options.RevocationSoftFail; a CA certificate that names neither is
// passed over. [Checker.Check]
// checks one certificate against its issuer for other uses.
//
// # What is checked
//
// OCSP comes first: the responder named in the certificate's Authority
// Information Access extension is asked over HTTP POST, with a fresh
// nonce (RFC 8954). The response must carry a CertID equal to the
// request's (serial, issuer name hash and issuer key hash), be signed by
// the issuer or by a responder certificate the issuer issued with the
// id-kp-OCSPSigning extended key usage and valid now (RFC 6960 §4.2.2.2),
// and be current: thisUpdate not in the future and nextUpdate not past,
// give or take Options.Skew. A nonce the response echoes must equal the
// one sent; a response without one (most public responders serve
// pre-signed responses, RFC 5019, and echo none) is accepted unless
// Options.Nonce is [NonceRequire], and then only while its nextUpdate, or
// for an hour after thisUpdate when it has none.
//
// When OCSP gives no answer (no responder, unreachable, an invalid or
// "unknown" response), the CRLs of the CRL distribution points are
// fetched over HTTP (LDAP and other schemes are skipped). A CRL must be
// signed by the issuer (with the cRLSign key usage), name it as its
// issuer, be current (nextUpdate present and not past), and be a complete
// CRL for the certificate's kind: delta CRLs and indirect or
// reason-partitioned CRLs are refused. A CRL whose issuing distribution
// point names a distributionPoint covers only that partition of the
// issuer's certificates: the URL the certificate names (not a redirect's
// target) must be among its fullName URIs (RFC 5280 §6.3.3), and one
// named relative to the issuer is refused. The highest CRL number seen
// for an issuer and distribution point is remembered (30 days after it
// was last seen, within the cache's bounds), and a CRL with a lower one
// is refused even while it is current: served again, an older CRL would
// hide the revocations a newer one lists.
//
// golang.org/x/crypto/ocsp parses responses; this package adds what it
// leaves out: the request nonce and its echo, the full CertID match, and
// the responder's authorisation (x/crypto/ocsp checks that an embedded
// responder certificate was signed by the issuer but not its
// id-kp-OCSPSigning usage nor its validity).
//
// # Results
//
// [Checker.Check] returns a [*Status] for a certificate found good, or
// for one that names neither an OCSP responder nor a CRL distribution
// point (Source [SourceNone]: nothing can be checked). A revoked
// certificate is a [*RevokedError], never temporary. A certificate whose
// status could not be established is an [*UnavailableError], temporary:
// the responder may answer later, a stale CRL may be refreshed. It is not
// temporary when the check was cancelled, or when every source was
// refused by the address guard or not fetched: a certificate that names
// only LDAP or HTTPS URLs (or only CRLs, with Options.NoCRL) gets an
// UnavailableError listing each as an [*UnsupportedError]. What to do
// then, refuse or go on, is the caller's choice; the S/MIME Protector
// refuses unless smime.Options.RevocationSoftFail is set.
//
// # Fetching
//
// Every fetch is bounded in time (Options.Timeout) and size
// (Options.MaxResponseSize, Options.MaxCRLSize), follows at most three
// redirects, to HTTP URLs only, and by default connects only to global
// unicast addresses: a certificate's URLs are a stranger's say-so, and a
// responder at 127.0.0.1 or 169.254.169.254 would make the library a
// client of services that trust the local network. Options.AllowPrivate
// lifts this for tests and in-house CAs.
//
// # Cache
//
// Answers are cached until their nextUpdate (an OCSP response without
// one is not cached), in a cache bounded in entries and bytes whose
// least recently used entries go first. A fetch that got no answer is
// remembered for 30 seconds, so that the sends of the next moments do not
// each wait for a responder that is down. Concurrent checks of the same
// certificate share one fetch. One Check tries at most three responders
// and three CRLs, each within Options.Timeout; its context bounds the
// whole.
package revocation
