// Package mailsectest provides what an application needs to test code that
// sends mail with mailsec, in the manner of net/http/httptest:
//
//   - [Server]: an in-process SMTP server on 127.0.0.1 with its own test
//     CA, speaking implicit TLS or STARTTLS, optionally requiring AUTH,
//     offering REQUIRETLS, SMTPUTF8 or DSN, or failing MAIL, RCPT or DATA
//     with a chosen reply. It keeps every accepted message with its envelope,
//     raw data and TLS state, and a [Transcript] of each connection: every
//     byte the server read and wrote, decrypted after TLS. Assert on
//     [Server.Received] or [Server.Transcripts] that a client did not send
//     something; [Server.Wire], the bytes as they crossed the network, is
//     ciphertext after the handshake. [Server.Transport] returns a
//     transport that already trusts it.
//   - [RecordingTransport]: a mailsec.Transport that records deliveries
//     instead of sending them.
//   - [CA]: a throwaway certificate authority to issue server certificates
//     (expired, wrong-name, self-signed) and, with [CA.IssueSMIME], S/MIME
//     certificates (including the kinds mailsec must refuse: expired, no
//     EKU, no keyUsage, EC, RSA-1024).
//   - [NewPGPKey], [ArmorPublic], [ArmorPrivate]: OpenPGP test keys, good
//     ones and the kinds mailsec must refuse (expired, revoked, sign-only,
//     revoked encryption subkey, RSA-1024, version 6).
//   - [Resolver]: a map-backed dns.Resolver, a stand-in for dns.Client
//     wherever the library resolves names (transport.Direct, MTA-STS,
//     TLS-RPT, pgp.WKD): MX, address, TXT and TLSA records, zones marked
//     as DNSSEC-signed, scripted failures, and counts of the lookups made.
//   - [OpenPGP], [OpenSMIME]: read a received protected message as its
//     recipient would, with the recipient's key: decrypted, its signature
//     verified, its protected header (the real Subject) and its text at
//     hand in an [Opened], so that a test asserts that a patient can read
//     their result. The S/MIME counterpart of pgp.NewKeyRing, for the
//     certificates a test encrypts to, is smime.NewCertStore.
//
// Nothing here is meant for production use.
package mailsectest
