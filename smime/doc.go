// Package smime protects mail with S/MIME (RFC 8551): it encrypts each
// message for its recipients' X.509 certificates, and optionally signs it
// first, so that Outlook, Apple Mail, Thunderbird, gpgsm and openssl can
// read and verify it and nobody in between can.
//
// # Use
//
// Load the recipients' certificates and the roots they must chain to, make
// a Protector and give it to the Sender with a policy that requires
// protection:
//
//	certs, err := smime.LoadCertificates("recipients.pem")
//	roots, err := smime.LoadRoots("roots.pem")
//	p, err := smime.New(certs, &smime.Options{Roots: roots})
//	s, err := mailsec.NewSender(tr, &mailsec.Options{
//		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
//		Protectors: []mailsec.Protector{p},
//	})
//
// Any CertSource works in place of the PEM file (an LDAP directory, a
// database); NewCertStore() is an empty store, for an application with no
// recipients' certificates yet. New refuses a nil one (a LoadCertificates
// whose error was ignored) with a *mailsec.ConfigError, as it refuses
// every other configuration mistake. To sign, load the sender's certificate and key with
// LoadSigner and set Options.Signer; the certificate must name the
// message's From address (or its Sender address) in an rfc822Name, as
// receivers check (RFC 8550 §3), or Protect fails and nothing is sent.
//
// # Certificates over their lifetime
//
// When a user uploads a certificate, Protector.CheckCertificate gives it
// the verdict a Send would give it now, through the same checks: a
// *CertificateError whose Problem (Expired, NotYetValid, WrongAddress,
// Untrusted, WeakKey, UnsupportedKey, KeyUsage, Malformed, Revoked,
// RevocationUnknown) errors.Is matches, or a CertificateCheck with the fingerprint and expiry
// to keep and the chain to store. A CertStore takes Add, Replace and
// Remove while Sends run, and the next Send uses what it holds; an
// application that keeps certificates in its own database implements
// CertSource instead (see its documentation). Protect reports, per
// recipient, when the certificate's chain expires, the content cipher,
// and a note when that is within Options.ExpiryWarning (30 days by
// default), all of which land in the recipient's Receipt.
//
// # Wire format
//
// The message keeps Date, From, To, Cc and Message-ID outside; its Subject
// becomes "..." (Options.OuterSubject). The body is
//
//	Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"
//	Content-Disposition: attachment; filename="smime.p7m"
//	Content-Transfer-Encoding: base64
//
// holding one CMS EnvelopedData (RFC 5652) for all recipients of a
// delivery (the Sender makes one delivery per Bcc recipient): AES-256-CBC
// content encryption with a fresh key and IV on every write, RSA PKCS#1
// v1.5 key transport, recipients identified by issuer and serial number
// (KeyTransRecipientInfo version 0). This is what gpgsm 2.2, OpenSSL 3,
// Outlook and Thunderbird all decrypt, and the default; AES-256-GCM and
// RSA-OAEP are chosen per recipient (see Stronger algorithms below).
// DES, 3DES, RC2 and SHA-1 are never emitted. The encrypted content is
// the protected-headers entity (multipart/mixed; protected-headers="v1")
// carrying the real Subject and the original content, in canonical form
// (CRLF, 7-bit).
//
// The EnvelopedData is written as a stream in BER, in the form openssl
// cms -encrypt -stream emits and gpgsm and openssl read: ContentInfo,
// EnvelopedData, EncryptedContentInfo and the encrypted content have
// indefinite lengths, and the ciphertext is a constructed OCTET STRING of
// 16 KiB chunks; the recipient infos are DER. It is base64-encoded in
// lines of 76 characters as it is encrypted.
//
// With a Signer, that entity is first wrapped in
// multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256
// with a detached SignedData (SHA-256, RSA PKCS#1 v1.5; signed attributes
// contentType, messageDigest and signingTime; the signer's chain included)
// in an application/pkcs7-signature part named smime.p7s.
//
// # Stronger algorithms
//
// RFC 8551 section 2.7 recommends AES-256-GCM in an AuthEnvelopedData
// (RFC 5083, RFC 5084): unlike CBC it authenticates the ciphertext, so a
// message altered on the way fails to decrypt instead of decrypting to
// something else. RSA-OAEP key transport (RFC 3560, RFC 8017) is not
// open to the padding-oracle attacks on PKCS #1 v1.5. Neither is the
// default because not every reader takes them: gpgsm 2.2 (2.2.40 tested)
// decrypts neither, and the tests show it refusing AuthEnvelopedData;
// OpenSSL 3's openssl cms decrypts both (openssl smime, the PKCS #7
// command, reads no RSA-OAEP), and the tests prove it, with a changed
// octet of ciphertext or tag making it fail.
//
// Options.Algorithms turns them on for every recipient; Options.Readers,
// a ReaderAlgorithms function, decides per recipient instead (from a set
// of addresses, a column in the application's database). The rule:
//
//   - One message is one CMS object for all its recipients, so it has one
//     content cipher: AES-256-GCM only when every recipient of the
//     delivery allows it (a Bcc recipient, delivered apart, is decided
//     alone), AES-256-CBC otherwise.
//   - Key transport is per recipient: RSA-OAEP for each certificate
//     whose recipients all allow it, PKCS #1 v1.5 for the others, in the
//     same message.
//
// The Receipt records the content cipher of each recipient's delivery in
// ProtectionInfo.Cipher ("aes256-gcm" or "aes256-cbc").
//
// With AES-256-GCM the body's Content-Type is
// application/pkcs7-mime; smime-type=authEnveloped-data (RFC 8551
// section 3.2.2), and it holds an AuthEnvelopedData (version 0) whose
// content encryption is id-aes256-GCM with GCMParameters of a fresh
// 12-octet nonce and a 16-octet ICV, no authenticated attributes, and
// the 16-octet tag in mac. With RSA-OAEP the key transport algorithm is
// id-RSAES-OAEP with SHA-256, MGF1 with SHA-256 and the empty label. The
// AuthEnvelopedData is streamed as the EnvelopedData is: the content is
// encrypted (AES-CTR, as GCM does) and hashed chunk by chunk, and the
// tag, which follows the content in the encoding, is written last, so
// memory does not grow with the message either.
//
// # Size
//
// Without a Signer nothing is buffered: the message is encrypted and
// encoded while it is written to the server, so an attachment of any size
// costs a few tens of KiB of memory. A content error found on the way (an
// 8-bit octet) makes the write fail part way, and the transport then
// abandons the transaction. A signature covers the whole content, so with
// a Signer the inner entity is held in memory while it is signed:
// Options.MaxSize (DefaultMaxSize, 32 MiB, when zero) bounds it, and a
// larger message fails with ErrTooLarge before any of it is sent. The
// encrypted body is written anew on every write, so a retried delivery can
// send it again.
//
// # Certificate checks
//
// Protect checks every recipient's certificates before anything is sent
// and uses the newest one that passes all of these, in this order:
//
//   - an rfc822Name SAN equal to the recipient (ASCII case-insensitive);
//   - an RSA key of at least 2048 bits (EC keys are refused: there is no
//     ECDH key agreement yet);
//   - the current time (Options.Now) inside its validity period;
//   - keyUsage with keyEncipherment (digitalSignature for the signer);
//   - extKeyUsage with emailProtection, present explicitly;
//   - a chain to Options.Roots valid for emailProtection.
//
// A recipient without a usable certificate gets a *mailsec.ProtectionError
// (matching mailsec.ErrNoKey) whose KeyID is the certificate subject and
// whose Reason says what failed ("expired", "not yet valid", "untrusted
// root", "weak algorithm: RSA-1024", "EC keys are not supported (no
// ECDH)"...), wrapping a *CertificateError; the Sender then delivers to the
// others only; the *CertificateError's Problem classifies the reason.
// Chain verifications are cached per certificate and minute.
//
// # Revocation
//
// With Options.Revocation (a *revocation.Checker of package
// smime/revocation), a certificate that passed the checks above is then
// checked by OCSP and CRLs, and so is every CA certificate of its chain
// below the root that names an OCSP responder or a CRL (one that names
// neither is passed over: many CAs publish nothing for their
// intermediates). A revoked
// certificate is refused with Reason "revoked" ("issuing CA certificate
// revoked" for a CA) and Problem Revoked, wrapping a *revocation.RevokedError; it is never
// temporary, whatever the options. A certificate whose status could not
// be established (responder unreachable, no valid answer, a stale CRL) is
// refused with Reason "revocation status unavailable" (Problem
// RevocationUnknown), wrapping a
// *revocation.UnavailableError, which is temporary: the Sender does not
// fall back, and a retry may succeed. So is, with an error that is not
// temporary (asking again cannot help), a recipient certificate that
// names no OCSP responder and no CRL distribution point, or only ones
// that are not fetched (LDAP or HTTPS URLs, CRLs with
// revocation.Options.NoCRL). Set Options.RevocationSoftFail to encrypt to
// either anyway. The Receipt's ProtectionInfo.Notes say what was
// established: "certificate status good (OCSP, http://ocsp.example/,
// produced at 2026-01-02T03:04:05Z)", or "revocation of certificate not
// checked: ...; sent because RevocationSoftFail". The signer's own
// certificate is not checked. Without Options.Revocation nothing is
// checked.
//
// # Compatibility
//
// The tests decrypt with openssl cms -decrypt, openssl smime -decrypt and
// gpgsm --decrypt (AES-256-GCM and RSA-OAEP with openssl cms alone), verify with openssl cms -verify -purpose smimesign and
// gpgsm --verify, and read messages back from a real Postfix's Maildir.
// gpgsm needs the recipient's key as a PKCS#12 file with legacy PBE
// (openssl pkcs12 -export -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES
// -macalg sha1) and the CA in its trustlist.txt.
//
// The EnvelopedData and AuthEnvelopedData encodings are this package's own; signatures come from
// github.com/smallstep/pkcs7, whose package settings (which concern its
// encryption) this package does not touch.
package smime
