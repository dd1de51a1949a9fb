// Package transport holds the mailsec.Transport implementations and the
// SMTP session layer they share.
//
// [Submission] delivers to one smarthost (Postfix, an ESP's relay) the way
// RFC 8314 and RFC 6409 describe message submission: implicit TLS on port
// 465 or STARTTLS on 587, in both cases with TLS mandatory, the certificate
// verified for the configured host name, and SMTP AUTH only inside TLS.
//
// [Direct] delivers to each recipient domain's MX hosts itself, on port 25,
// where downgrades usually happen: by default a host must be authenticated
// by DANE (RFC 7672, package dane) when its DNSSEC-signed TLSA records are
// usable, else by the domain's MTA-STS policy in enforce mode (RFC 8461,
// package mtasts), else by a certificate valid for the MX host name, and
// REQUIRETLS (RFC 8689) goes only to hosts DNSSEC or an enforce policy
// vouches for. Every session's outcome can be recorded for TLS reporting
// (RFC 8460, package tlsrpt). [Direct.Check] reports all of it for a domain
// without sending mail. Every name it needs goes through one dns.Resolver
// (package dns; a dns.Client pointed at a validating resolver on the same
// host). The security levels a delivery may ask for are mailsec's, named
// after Postfix's: see mailsec.SecurityLevel.
//
// # Reading the code
//
// One delivery through Direct goes down these files: direct.go (Deliver
// groups recipients by domain, deliverDomain tries a domain's MX hosts in
// order, tryHost connects to one and runs the transaction); directpool.go
// (one pool of reused sessions per MX host, and the key that says which
// deliveries may share a session); gather.go (what the DNS and the
// domain's MTA-STS policy say, learnt before any connection); tlspolicy.go
// (what the delivery's security level requires of the session with that
// host: the one place where every level gets its meaning, for Submission
// too); session.go (the SMTP session, which enforces it, and ends it with
// one of the reasons in refusal.go when the requirement is not met);
// tlsreport.go (each attempt's outcome for TLS reporting). check.go is Direct.Check, which reads the same facts. A
// Submission goes through submission.go, pool.go (its reused sessions),
// tlspolicy.go and session.go; auth.go is SMTP AUTH.
//
// # What the session layer enforces
//
//   - The TLS handshake completes, and the certificate is verified as the
//     delivery's mailsec.Security requires, before the first command that
//     matters: nothing is sent after STARTTLS until then, and nothing but
//     the handshake is sent on an implicit-TLS port.
//   - TLS 1.2 or later.
//   - Before STARTTLS the client reads the greeting, sends EHLO and
//     STARTTLS, and nothing else. A missing STARTTLS capability, a refusal
//     (454), or any byte the server sends after its 220 reply to STARTTLS
//     and before the handshake ends the session with a *mailsec.SecurityError
//     matching mailsec.ErrDowngrade. Capabilities are read again after TLS,
//     and only the post-TLS list is trusted.
//   - AUTH only after TLS, from the post-TLS mechanism list, choosing the
//     strongest mechanism both sides allow (SCRAM-SHA-256-PLUS with
//     tls-exporter channel binding on TLS 1.3, SCRAM-SHA-256, CRAM-MD5,
//     PLAIN, LOGIN; XOAUTH2 with a token source). A server that offers AUTH only
//     before TLS gets no credentials, and neither does one whose certificate
//     was not verified (the Unverified level): every mechanism hands an
//     unauthenticated peer the password, a token, or material for an
//     offline dictionary attack.
//   - REQUIRETLS only over verified TLS and only when the server offers it
//     after TLS; otherwise the delivery fails before MAIL FROM.
//   - The content is clean: every line ending is CRLF (a bare CR
//     included), lines are at most 998 octets; with DATA, dots are stuffed
//     and there is one terminator; with BDAT, the chunks add up to exactly
//     that content and the last is marked LAST. If writing the content
//     fails midway the connection is dropped rather than terminated (or
//     BDAT LAST sent), so the server never accepts a truncated message.
//   - Replies belong to their own commands. Each command gets exactly one
//     reply; anything more the server sends (a second reply, a reply
//     before the command, a reply before the end of the message, bytes
//     while the session is idle in the pool) ends the session with an
//     error wrapping ErrUnsolicitedReply, and the session is never reused.
//     After every reply, before the terminator of DATA is sent, and before
//     an idle session is reused, the session looks for such bytes without
//     waiting: in its reply reader, in the TLS records crypto/tls has
//     received and not yet handed over (one reply per record or several),
//     and on the socket.
//   - AUTH failures carry the reply codes and never the text of any reply
//     in the exchange, which a server may use to echo credentials back
//     (see Auth).
//   - Every step, the greeting included, is bounded by the context passed
//     to Deliver, and by a timeout of its own when the context has no
//     deadline: DialTimeout for establishing a session, 5 minutes for a
//     reply (10 for the reply to the end of DATA), 3 minutes for each write
//     of a message's content (RFC 5321 section 4.5.3.2), so that a server
//     that stops answering or reading cannot hold a delivery forever.
//
// # The SMTP client
//
// The session layer speaks SMTP itself, one command (or one pipelined
// group) at a time, reading replies with package internal/smtpwire, which
// frames them exactly and keeps whatever follows a reply where the session
// can see it. go-smtp's client, which this package used before, reads
// through a buffer of its own that no caller can inspect, so a second reply
// to one command would silently become the reply to the next; it also has
// no PIPELINING, no CHUNKING and no context support,
// reports a TLS connection as established before its handshake has run,
// drops bytes injected before the handshake without a word, and passes a
// bare CR through DATA.
//
// # Round trips: PIPELINING and CHUNKING
//
// When the server lists PIPELINING (RFC 2920) in its EHLO reply after TLS,
// a transaction's commands go out as one group: MAIL, every RCPT and DATA
// in one write, and the replies are read in order, each taken for its own
// command and recipient. When it lists CHUNKING (RFC 3030) as well, the
// content goes with BDAT instead of DATA: a message of up to 256 KiB as
// "BDAT n LAST" in the same write as MAIL and the RCPTs, so that a message
// on a reused session costs one round trip; a larger one in chunks of
// 256 KiB, streamed, so that its size never shows in memory. BDAT carries
// the same canonical content as DATA (CRLF line endings, lines of at most
// 998 octets, a final CRLF), without dot-stuffing; BINARYMIME is never
// used. Errors and the Receipt name the content's phase "DATA" however it
// was sent.
//
// With DATA, no byte of the content is sent unless MAIL and at least one
// RCPT were accepted; a DATA the server opened anyway is ended with the
// terminator alone. With BDAT the first chunk leaves before the replies to
// RCPT are known: when every recipient is refused the server discards it
// (it went only to the server the delivery's security requirement was met
// for) and the result is the one DATA gives. Once a reply refuses the
// transaction (MAIL, every RCPT, a chunk) no further chunk is sent, and
// BDAT LAST never is. A failure once BDAT LAST went out, before its reply,
// leaves the verdict unknown (ErrNoVerdict), unless a reply had already
// refused the transaction; a failure after a chunk went out and before BDAT
// LAST did leaves it known: nothing was delivered. Neither is retried on a
// new session.
//
// Greeting, EHLO, STARTTLS and AUTH are never pipelined: each waits for its
// reply, as before, and bytes before the TLS handshake still end the
// session. After a transaction that may have left the server's state open
// (every recipient refused, say), the RSET goes in the same write as the
// next message's MAIL.
//
// Replies still belong to their own commands. Within a group, a reply that
// cannot answer the command it would be taken for (a 354 to anything but
// DATA, a success reply to DATA, a verdict on BDAT LAST with an address's
// enhanced status code, a success for the content of a transaction whose
// MAIL or RCPTs were refused), or any byte after the group's last reply,
// ends the session with ErrUnsolicitedReply, and no verdict is taken from
// it. A server that offers neither extension gets one command at a time,
// as before.
//
// # Connection reuse
//
// A Submission keeps up to MaxConns sessions open and reuses them across
// deliveries, so concurrent Sends do not each pay a TCP and TLS handshake.
// A session that carried an aborted transaction is reset with RSET before
// reuse; one idle longer than HealthCheckAfter is probed with NOOP; one
// whose MAIL FROM fails at the network level (the server timed it out) is
// replaced by a fresh session transparently, which is safe because nothing
// had been accepted. Sessions are closed after IdleTimeout or
// MaxMessagesPerConn messages.
//
// A Direct keeps sessions the same way, with the same limits (at most
// MaxConnsPerHost with each MX host) and the same health checks, and
// reuses one only for a delivery whose security requirement for the host
// is the one the session was established under, spelt out in full: the
// recipient domain, the MX host and the address connected to, the name
// sent as SNI and checked, the level, the policy and TLS mode it led to
// (DANE and its usable TLSA records, the domain's MTA-STS policy by id and
// text, WebPKI for the MX host name, pins), REQUIRETLS and TLS-Required:
// No. A session is never shared across requirements: a message with a
// stricter level, or one that demands REQUIRETLS, never rides a session
// made for a weaker one, and a new TLSA record set or MTA-STS policy id
// leads to a new session. The requirement is worked out afresh for every
// delivery, from the DNS and the policy as they are then, before the
// pool is asked.
//
// With either transport, a failure on a reused session before any of the
// message's content was sent moves the delivery to a fresh session;
// after content was sent (with CHUNKING, in the first write) without a
// verdict, it is not retried, since the message may have been delivered.
// A reused session shows Reused in the Receipt's connection, with the
// evidence it was established with.
package transport
