// Package pgp protects mailsec messages with PGP/MIME (RFC 3156): each
// message is encrypted, and optionally signed, to the recipients' OpenPGP
// keys so that only they can read it, in a form GnuPG 2.2 and the mail
// clients built on it read.
//
// # Use
//
// Load the recipients' public keys (a KeyRing from a file, a WKD lookup,
// or a KeySource of your own), make a Protector, and give it to the
// Sender together with a policy that requires protection:
//
//	keys, err := pgp.LoadKeyRing("recipients.asc")
//	p, err := pgp.New(keys, &pgp.Options{Signer: signer})
//	s, err := mailsec.NewSender(t, &mailsec.Options{
//		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
//		Protectors: []mailsec.Protector{p},
//	})
//
// A recipient without a usable key receives nothing; Send reports why in
// a *mailsec.ProtectionError (matching mailsec.ErrNoKey) that wraps a
// *KeyError naming the key and the reason. The Receipt records, per
// recipient, the method "pgp" and the fingerprint of the key used. An
// application with no recipients' keys yet starts with NewKeyRing(), an
// empty ring; New refuses a nil one (a LoadKeyRing whose error was
// ignored) with a *mailsec.ConfigError, as it refuses every other
// configuration mistake.
//
// # Wire format
//
// The message leaves as multipart/encrypted;
// protocol="application/pgp-encrypted" with two parts: an
// application/pgp-encrypted part holding "Version: 1", and an
// application/octet-stream part (encrypted.asc, inline) holding the
// ASCII-armored OpenPGP message with CRLF line endings. Its outer header
// keeps what delivery needs (From, To, Cc, Date, Message-ID) and replaces
// the Subject with "..." (Options.OuterSubject). Inside the encryption is
// a multipart/mixed with protected-headers="v1" carrying the real Subject
// and the other identifying fields, then the original content, so that
// Thunderbird and other clients show the real Subject.
//
// The OpenPGP message is SEIPD version 1 with MDC and AES-256 (unless a
// recipient key's preferences exclude AES-256) and no compression; its
// armor keeps the CRC-24 line, which gpg 2.2 needs to find the end of the
// data when that is a multiple of three octets long. It is one ciphertext
// for all the recipients of one delivery: To and Cc share one, every Bcc
// recipient gets a delivery and a ciphertext of its own that names no
// other key. With Options.EncryptToSelf the sender's key is added, for
// the Sent copy. Encryption streams: the body is encrypted while it is
// written to the server, and a retried delivery encrypts it afresh.
//
// With Options.Signer the protected content is first signed as RFC 3156
// §5 multipart/signed, provided the signing key has a valid user ID for the
// message's From address (or its Sender address); otherwise Protect
// fails with a *KeyError and nothing is sent. micalg names the hash of the signature actually
// made (pgp-sha256 for the usual keys). The signed part is made canonical
// first (CRLF, 7-bit, no trailing white space, no line starting with
// "From "; parts that break these rules are re-encoded as base64), so the
// signature survives transport. Signing buffers the message in memory, up
// to Options.MaxSize (DefaultMaxSize, 32 MiB; more fails with ErrTooLarge);
// encryption alone does not. Options.Autocrypt adds an Autocrypt Level 1
// header with the signer's key (primary key, the From user ID and its
// self-signature, one encryption subkey and its binding signature).
//
// # Key checks
//
// Before anything is sent, every recipient's key must pass, in order:
// a non-revoked, non-expired user ID whose address equals the recipient's
// (ASCII case-insensitive, as gpg compares); a version 4 key (version 6
// keys are refused unless Options.AllowV6Keys, since gpg 2.2 cannot read
// them); no weak algorithm (DSA, ElGamal, RSA under 2048 bits); primary
// key neither revoked nor expired; a valid (non-expired, non-revoked)
// encryption subkey, the newest of them being used. Of several keys for
// one address the first valid one is used; if none is valid, the error
// is the one of the key that came closest.
//
// # Compatibility
//
// The output is tested against gpg 2.2.40: gpg decrypts it (reporting
// MDC and AES-256), verifies its signatures (GOODSIG, VALIDSIG), and
// reads keys made with this library; keys made by gpg (RSA-3072,
// Curve25519) are read here. Options.AllowSEIPDv2 allows the newer
// AEAD packet when every recipient key advertises it; gpg 2.2 cannot read
// it, so it is off by default.
//
// Errors inside the OpenPGP library (github.com/ProtonMail/go-crypto),
// panics included, are returned as errors. Passphrases and secret keys
// never appear in errors.
package pgp
