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
// The OpenPGP message is SEIPD version 1 with MDC, encrypted with AES-256
// or AES-128 (see Ciphers), and no compression; its
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
// is the one of the key that came closest. Each refusal is a *KeyError
// whose Code (KeyExpired, KeyRevoked, KeyWeak, KeyNoEncryptionSubkey,
// KeyWrongAddress...) says which check failed.
//
// A key is used until it expires: the earliest expiry of its primary
// key, its self-signature, the user ID's self-signature and the
// encryption subkey. Protect reports it per recipient in Protected.Keys,
// which the Sender copies into the Receipt (ProtectionInfo.KeyExpires),
// with a note such as "key expires in 12 days (2026-12-14)" when that is
// within Options.ExpiryWarning (30 days unless set): time to ask the
// recipient for a new key before mail to them stops.
//
// # Keys over their lifetime
//
// Check a key when the user uploads it, not when the first message to
// them is sent: CheckKey runs the checks above, for the address the key
// is uploaded for, with the Options the Protector is made with, so that
// upload and Send never disagree. It also refuses an upload that is not
// exactly one public key (a secret key is refused and dropped), and
// returns the fingerprint, the expiry, warnings, and the parsed key to
// keep:
//
//	ck, err := pgp.CheckKey(ctx, r.Body, user.Email, opts)
//	if ke, ok := errors.AsType[*pgp.KeyError](err); ok {
//		// ke.Code: pgp.KeyExpired, pgp.KeyWrongAddress, pgp.KeySecret...
//	}
//	keys.Replace(user.Email, ck.Entity) // keys: the *pgp.KeyRing given to New
//
// A KeyRing may change while Sends run (Add, Replace, Remove): the next
// Send uses the new key. An application that keeps keys in its own
// database implements KeySource instead (its documentation states the
// contract), storing CheckedKey.Armor and reading it back with
// ReadKeyRing.
//
// # Ciphers
//
// Only AES-256 and AES-128 are used, whatever a recipient key prefers.
// The message is encrypted with AES-256 when every recipient key (and,
// with EncryptToSelf, the sender's) lists AES-256 among its preferred
// symmetric algorithms, and with AES-128 otherwise. A key whose
// preferences name only older ciphers (3DES, CAST5, IDEA, Blowfish, as
// keys made long ago or edited with gpg's setpref may) is not refused but
// overridden with AES-128: RFC 9580 (§9.3) makes AES-128 mandatory to
// implement and places it implicitly at the end of every preference list
// (§5.2.3.14), and every OpenPGP implementation mail clients use today
// (gpg 1.4 and later included) reads it, so the override costs the
// recipient nothing and never weakens the message below 128-bit
// security, while refusing would push a sending application towards
// sending in clear. AES-256 needs the key's consent because an old
// reader might lack it; AES-128 does not. The choice is made here, not
// left to the OpenPGP library, and Protected.Keys names it: "aes256-cfb"
// or "aes128-cfb" (SEIPDv1: CFB with MDC). A key whose preferences name
// no AES cipher gets a note saying so (and a warning from CheckKey): the
// recipient's software may be too old to read what it is sent.
//
// With Options.AllowSEIPDv2, a message whose every recipient key
// advertises SEIPDv2 in its Features subpacket is sent as SEIPD version 2
// (RFC 9580 §5.13.2, AEAD, with a version 6 PKESK); its ciphersuite is
// the first of AES-256 with OCB, GCM, EAX, then AES-128 with the same,
// that every key lists among its preferred AEAD ciphersuites, or
// AES-128-OCB when they have none in common (RFC 9580 §5.2.3.15), and it
// is named so: "aes256-ocb", "aes128-gcm". gpg 2.2 cannot read SEIPDv2,
// so it is off by default and every message stays SEIPDv1.
//
// # Compatibility
//
// The output is tested against gpg 2.2.40: gpg decrypts it (reporting
// MDC and AES-256), verifies its signatures (GOODSIG, VALIDSIG), and
// reads keys made with this library; keys made by gpg (RSA-3072,
// Curve25519) are read here, and CheckKey gives gpg's expired, revoked,
// weak and sign-only keys the verdicts Protect gives them. A key that gpg
// was told to prefer only 3DES and CAST5 gets AES-128, which gpg
// decrypts. gpg 2.2 cannot read SEIPDv2 (Options.AllowSEIPDv2); the
// tests read it back with go-crypto.
//
// Errors inside the OpenPGP library (github.com/ProtonMail/go-crypto),
// panics included, are returned as errors. Passphrases and secret keys
// never appear in errors.
package pgp
