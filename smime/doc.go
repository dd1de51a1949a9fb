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
// Untrusted, WeakKey, UnsupportedKey, KeyUsage, Malformed, Revoked)
// errors.Is matches, or a CertificateCheck with the fingerprint and expiry
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
// Outlook and Thunderbird all decrypt; RSA-OAEP and AES-GCM
// authEnvelopedData are not emitted because gpgsm 2.2 cannot read them.
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
// Revocation (CRL, OCSP) is not checked.
//
// # Compatibility
//
// The tests decrypt with openssl cms -decrypt, openssl smime -decrypt and
// gpgsm --decrypt, verify with openssl cms -verify -purpose smimesign and
// gpgsm --verify, and read messages back from a real Postfix's Maildir.
// gpgsm needs the recipient's key as a PKCS#12 file with legacy PBE
// (openssl pkcs12 -export -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES
// -macalg sha1) and the CA in its trustlist.txt.
//
// The EnvelopedData encoding is this package's own; signatures come from
// github.com/smallstep/pkcs7, whose package settings (which concern its
// encryption) this package does not touch.
package smime
