// Command mailsec is the operator's tool for the mailsec library. It sends a
// test message exactly the way an application using the library would, and
// reports what happened to each recipient.
//
// Usage:
//
//	mailsec <command> [flags]
//	mailsec <command> -h
//
// The commands are send, which sends one message (or queues it in an
// outbox with -queue), check, which reports how well mail to a domain is
// protected in transit, queue, which delivers and manages queued
// messages, bounce, which explains bounces, and version. "mailsec COMMAND
// -h" prints a command's synopsis, examples, and flags grouped by purpose.
// A usage error is one line, and a second that points to that help.
//
// # mailsec send
//
//	mailsec send {-server HOST:PORT [-tls implicit|starttls|none] [-user NAME] |
//		-mx [-dns HOST:PORT] [-level LEVEL] [-mx-port PORT] [-allow-private]
//		[-mta-sts-cache DIR]} [-ca FILE]
//		-from ADDR -to ADDR[,ADDR...] [-cc ADDR,...] [-bcc ADDR,...] [-subject TEXT]
//		[-body FILE|-] [-html FILE] [-attach FILE]... [-requiretls] [-timeout D] [-json]
//		[-pgp-keys FILE [-pgp-sign FILE]] [-smime-certs FILE [-smime-roots FILE]
//		 [-smime-sign-cert FILE -smime-sign-key FILE]] [-outer-subject TEXT]
//		[-notice-url URL | -prefer-protection] [-dkim DOMAIN:SELECTOR:KEYFILE]...
//		[-verp LOCAL@DOMAIN -verp-secret-file FILE]
//
// With -mx instead of -server the message goes straight to each recipient
// domain's MX hosts (transport.Direct: DANE, MTA-STS, REQUIRETLS), every
// name looked up through -dns; MX and policy hosts at loopback, private,
// link-local and other non-global addresses are not connected to unless
// -allow-private is given.
//
// Send submits one message to a submission server (Postfix, an email
// provider's relay) with mandatory TLS: implicit TLS on port 465, STARTTLS
// on any other port, and the server's certificate verified for the host name
// given in -server. A server that does not offer STARTTLS, or whose
// certificate does not verify, receives nothing: not the envelope, not the
// credentials, not the message. Bcc recipients each get a delivery of their
// own and never appear in a header.
//
// The flags are:
//
//	-server HOST:PORT  the submission server (required without -mx)
//	-tls MODE          "implicit", "starttls" or "none"; default implicit on
//	                   port 465, STARTTLS on any other port; "none" sends
//	                   without TLS to a development server (Mailpit,
//	                   MailHog) at a loopback -server only, never with
//	                   -user, with a warning, and the Receipt records the
//	                   plaintext level
//	-ca FILE           PEM file of extra trusted root certificates, added
//	                   to the system roots
//	-user NAME         authenticate as NAME (SMTP AUTH, only inside TLS);
//	                   the password comes from MAILSEC_PASSWORD
//	-from ADDR         the author (required)
//	-to, -cc, -bcc     comma-separated recipient lists; each flag may
//	                   repeat; at least one recipient is required. A comma
//	                   inside a quoted display name or <...> does not split.
//	-subject TEXT      the subject (default: none)
//	-body FILE         the plain-text body, from FILE or, with "-", from
//	                   standard input
//	-html FILE         the HTML body
//	-attach FILE       attach FILE (repeatable); the content type is derived
//	                   from the file name's extension
//	-requiretls        ask for REQUIRETLS (RFC 8689): fail unless the server
//	                   offers it, and make every later hop use verified TLS
//	-timeout D         bound the whole send (default 2m)
//	-json              print the receipt (the library's Receipt) as JSON on
//	                   standard output
//	-pgp-keys FILE     encrypt end to end (PGP/MIME) to the armored OpenPGP
//	                   public keys in FILE; every recipient needs a usable key
//	-pgp-sign FILE     also sign, with the armored secret key in FILE; its
//	                   passphrase comes from MAILSEC_PGP_PASSPHRASE
//	-smime-certs FILE  encrypt end to end (S/MIME) to the PEM certificates in
//	                   FILE; CA certificates in it serve as intermediates
//	                   (they add no trust); with -pgp-keys too, S/MIME serves
//	                   the recipients without an OpenPGP key
//	-smime-roots FILE  the roots S/MIME certificates must chain to (default:
//	                   the system's)
//	-smime-sign-cert FILE, -smime-sign-key FILE
//	                   also sign, with this certificate chain and key
//	-outer-subject T   the Subject outside the encryption (default "...")
//	-notice-url URL    recipients without a usable key get a link-only notice
//	                   pointing to this https URL instead of the message
//	-prefer-protection recipients without a usable key get the message
//	                   unencrypted, over verified TLS, and the progress line
//	                   says NOT encrypted
//	-dkim DOMAIN:SELECTOR:KEYFILE
//	                   sign with DKIM (package dkimsign), with the PEM key in
//	                   KEYFILE, mail whose From domain is DOMAIN (repeatable:
//	                   an RSA and an Ed25519 key sign each message); mail
//	                   from any other domain is refused, nothing sent
//	-verp LOCAL@DOMAIN send each delivery from a signed VERP return path of
//	                   its own, LOCAL+<tag>@DOMAIN (bounce.VERP)
//	-verp-secret-file FILE
//	                   the secret that signs the tags: at least 32 bytes,
//	                   never printed
//
// A line per recipient on standard error says whether the server accepted
// the message, over which TLS version and with which certificate
// verification, and how it was protected (method and key fingerprint, a
// notice instead, or NOT encrypted), or why not. Without -json nothing is written to standard
// output.
//
// With -mx, MTA-STS policies are kept between runs in -mta-sts-cache DIR,
// by default mailsec/mta-sts under the user's cache directory ("none":
// this run only). A cache directory owned by another user or writable by
// its group or others is refused (exit status 2), as ssh refuses such a
// ~/.ssh; a file in it that is a link, not the user's, or writable by
// others is ignored.
//
// A -dkim KEYFILE or a -verp-secret-file that its group or others may read
// draws a warning.
//
// # mailsec check
//
//	mailsec check DOMAIN [-dns HOST:PORT] [-ca FILE] [-mx-port PORT] [-allow-private]
//		[-dkim-selector S] [-json] [-timeout D]
//
// Check reports, for a recipient domain, its MX hosts and whether DNSSEC
// authenticates them, its MTA-STS record and policy, its TLS-RPT addresses,
// and for each MX host its TLSA records, STARTTLS, TLS version and
// certificate, with a verdict: what "mailsec send -mx" would do with the
// host, and why. No mail is sent. It exits 0 when the path is protected
// (DANE or MTA-STS enforce for every MX host), 1 when it is weaker or
// broken (the reasons are listed), 2 on bad usage, and 3 when the check
// could not run (the resolver did not answer, no MX host was reachable,
// the time ran out); -json carries the same verdict as "result".
//
// # mailsec version
//
// Version prints the module's path and version and the Go version the
// binary was built with, from its build information.
//
// # mailsec dkim keygen
//
//	mailsec dkim keygen -domain DOMAIN -selector SELECTOR [-algo rsa|ed25519] -out FILE
//
// Keygen writes a new DKIM private key to FILE (PEM, mode 0600; an
// existing file is never overwritten) and prints the DNS TXT record to
// publish as one zone-file line. "mailsec check DOMAIN -dkim-selector
// SELECTOR" then reports whether the record is published and well-formed.
//
// # mailsec send -queue, mailsec queue
//
//	mailsec send -queue DB -from ADDR -to ADDR ... -subject TEXT [the message flags of send]
//	mailsec queue run -db DB [-once] {-server HOST:PORT ... | -mx ...} [the delivery flags of send]
//	mailsec queue list -db DB [-state STATE[,STATE...]] [-limit N] [-json]
//	mailsec queue show ID -db DB [-json]
//	mailsec queue retry ID -db DB
//	mailsec queue cancel ID -db DB
//
// send -queue validates the message as send would and queues it in the
// outbox DB (a SQLite file, or a PostgreSQL database named by a
// postgres:// URL), sealed with the key in MAILSEC_OUTBOX_KEY, and prints
// its ID. queue run delivers queued messages with the transport and
// protection flags of send, retrying temporary failures, until interrupted
// or, with -once, until none is due. list, show, retry and cancel inspect
// and manage messages by ID.
//
// # mailsec bounce
//
//	mailsec bounce explain FILE [-json]
//	mailsec bounce ingest -db DB [-verp LOCAL@DOMAIN -verp-secret-file FILE -recipient ADDR] [-json] < MESSAGE
//
// bounce explain reads a delivery status notification (a bounce or delay
// warning, RFC 3464) from FILE, or from standard input with "-", and prints
// per recipient what happened, the status code and what it means in one
// sentence, whether trying again can help, and what the remote server said
// (-json: as JSON). It exits 0 when the DSN was explained, 1 when the
// message is not a DSN, is malformed or too large, and 2 on bad usage or a
// FILE that cannot be opened.
//
// bounce ingest reads one bounce on standard input and records it in the
// outbox DB for the message it matches (by the ENVID the outbox sent); it
// exits 0 for a bounce it cannot match too, and 75 (EX_TEMPFAIL) when the
// database fails or holds no up-to-date outbox (it never makes nor
// migrates one), for a Postfix pipe transport. With -verp and
// -verp-secret-file (as queue run was given them), -recipient ADDR, the
// address the bounce was delivered to, matches it by its signed return
// path (Outbox.IngestReturnPath), for servers that drop the ENVID; a tag
// made up or altered matches nothing.
//
// # mailsec keys check
//
//	mailsec keys check FILE... [-within 30d] [-address ADDR] [-ca FILE] [-json]
//
// keys check lists the OpenPGP keys and S/MIME certificates in the FILEs
// with the verdict sending would give each (pgp.CheckKey, smime's
// CheckCertificate): fingerprint, addresses, expiry, and a problem such as
// expired, revoked, weak, untrusted or expiring within -within. It exits
// 0 when all are fine, 1 when any has a problem, 2 on bad usage or a FILE
// that cannot be read, and 3 when a check could not run.
//
// # Environment
//
// MAILSEC_PASSWORD is the password for -user, and is required with it. There
// is deliberately no flag for it, so that it never appears in a process
// list or a shell history; mailsec never prints it. MAILSEC_PGP_PASSPHRASE
// is, in the same way, the passphrase of the -pgp-sign key, and
// MAILSEC_OUTBOX_KEY the outbox's at-rest keys (each the standard base64 of
// 32 random bytes; several separated by commas to rotate, the first one
// sealing), required by send -queue and every queue command.
//
// # Exit status of send
//
//	0  the server accepted the message for every recipient
//	75 some recipient was not accepted, and every failure is one a later
//	   try may get past (a time-out, a 4xx reply, a DANE or MTA-STS
//	   refusal at an MX host): sendmail's EX_TEMPFAIL
//	1  some recipient was not accepted for good (a 5xx reply, a null MX,
//	   a certificate that does not verify, authentication failed), or the
//	   library refused the message as invalid before sending anything (a
//	   malformed address, subject or attachment name); the error on
//	   standard error says why
//	2  bad usage: no or unknown command, unknown flag or stray argument,
//	   missing -server, -from or recipients, an empty item in a
//	   recipient list, a -server without a port, a bad -tls value, -tls
//	   none to a server not on loopback, -user
//	   without MAILSEC_PASSWORD, a -ca file that cannot be read or holds no
//	   certificate, a -body, -html or -attach file that cannot be read, a
//	   key or certificate file that cannot be read or parsed (or a -pgp-sign
//	   key whose passphrase is wrong), or a -notice-url that is not https
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal has cancelled the send, restore the default
	// behaviour so that a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
