// Package dkimsign signs the mail a mailsec.Sender sends with DKIM (RFC
// 6376), with RSA and Ed25519 keys (RFC 8463), so that receivers can tell
// it comes from the domain in its From field and was not changed on the
// way.
//
// Start with [NewSigner] for each key, then [NewTransport] around the
// Transport that delivers, and give the result to mailsec.NewSender:
//
//	rsaKey, _ := dkimsign.NewSigner("example.com", "r2025", rsaPrivateKey)
//	edKey, _ := dkimsign.NewSigner("example.com", "e2025", ed25519PrivateKey)
//	t, err := dkimsign.NewTransport(&transport.Submission{Addr: "smtp.example.com:465"}, &dkimsign.Options{
//		Domains: map[string][]*dkimsign.Signer{"example.com": {rsaKey, edKey}},
//	})
//	sender, err := mailsec.NewSender(t, nil)
//
// [Signer.ZoneLine] is the DNS record to publish for a key; "mailsec dkim
// keygen" makes a key and prints it, "mailsec check DOMAIN -dkim-selector
// S" checks it is published.
//
// The name: go-msgauth, which does the signing underneath, calls its
// package dkim, and an application that verifies too imports both.
// This package only signs, and only the way mailsec sends, so it is named
// for what it does and both import without a rename.
//
// # What is signed
//
// Each Signer of the message's From domain adds its own DKIM-Signature
// field: an RSA and an Ed25519 key sign the same message twice, so a
// receiver that ignores Ed25519 still verifies the RSA signature. Every
// signature uses relaxed/relaxed canonicalisation and SHA-256 (never
// SHA-1), covers the whole body (no l= tag), and may expire (x=,
// Options.Expiry). It signs the header fields in [OverSigned], each named
// once more than the message has it, so that none can be added without
// breaking it (RFC 6376 §8.15), and those in [AlsoSigned] as they occur.
//
// # Where it signs
//
// The Transport signs each Delivery a Sender hands it, and so what is
// sent: after PGP/MIME or S/MIME protection (each Bcc recipient's
// ciphertext, a delivery of its own, gets a signature of its own), and
// after the content is normalised as SMTP DATA carries it (CRLF line
// endings, a final CRLF). A transport that writes it again unchanged
// keeps the signature valid.
//
// # Memory and disk
//
// Signing needs the body's hash before the header can be written, so the
// content is read once, hashed and spooled, then sent from the spool.
// Content up to Options.SpoolMemory (1 MiB by default) stays in memory;
// beyond that it goes to a temporary file sealed with XChaCha20-Poly1305
// under a key drawn for that delivery and held only in memory, removed
// when the delivery ends: no plaintext reaches the disk, and a message
// with a 100 MB attachment is signed and sent with a heap far smaller
// than it.
//
// # Domains and alignment
//
// Options.Domains gives each From domain its Signers. A Signer's domain
// (d=) must be the From domain or a parent of it (relaxed alignment, which
// DMARC counts), unless Options.AllowUnaligned says otherwise. A message
// from a domain without Signers is refused with a [*DomainError] naming
// the domain (errors.Is ErrNoSigner), and nothing of it is sent, unless
// Options.SendUnsigned is set.
package dkimsign
