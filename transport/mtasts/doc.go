// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (MTA-STS, RFC 8461): it discovers a recipient domain's policy,
// fetches it over HTTPS, caches it, and says which MX hosts the policy
// allows.
//
// # The threat
//
// SMTP between mail servers protects itself only opportunistically. An
// attacker on the network path can strip the STARTTLS capability from the
// server's reply, or answer for the MX host with a certificate of their own,
// and a sender that accepts plaintext or any certificate hands them the
// message. An attacker who can forge DNS answers can also substitute MX
// records, so that even a verified certificate belongs to the wrong host.
//
// A domain that publishes an MTA-STS policy states, over HTTPS with a WebPKI
// certificate for "mta-sts.<domain>", which MX host names are genuine and
// that they offer TLS with a certificate valid for those names. Senders
// cache the policy, so an attacker who later hides the TXT record or the
// policy server does not make it go away (RFC 8461 §10.2); the first contact
// with a domain, and a sender without a cache, remain open to that
// attacker. DANE (RFC 7672) closes that gap where DNSSEC is available, and
// takes precedence over MTA-STS when both exist.
//
// The recipient domain is also a stranger's choice, and so is the policy
// host it names: the host "mta-sts.<domain>" is resolved through the
// Client's Resolver (never the system's), and unless [Client.AllowPrivate]
// is set, a policy host at a loopback, private, link-local or other
// non-global address is not connected to, checked on each connection. The
// policy server's status line and headers are cleaned of control
// characters before they enter an error.
//
// # What a policy means to the caller
//
// [Client.Lookup] returns a [Result] whose Policy has a Mode:
//
//   - [Enforce]: deliver only to MX hosts that [Policy.Matches], and only over
//     TLS 1.2 or later with a certificate verified under WebPKI for the MX
//     host name. When no such host accepts the message, do not deliver; the
//     failure is temporary.
//   - [Testing]: apply the same checks, report failures (TLS-RPT, RFC
//     8460), but deliver anyway.
//   - [None], or a nil Policy: deliver as if the domain had no policy.
//
// Result.Err reports a failure that did not stop delivery (a policy that
// could not be fetched, was invalid, or could not be refreshed while a
// cached one stays in force); it is an [*Error] whose ResultType method
// gives the TLS-RPT result type to report.
//
// # Using it
//
// Create one [Client] at start-up, with a [dns.Resolver] and, so that
// policies survive restarts, a [DirCache] in a directory only the sending
// process can write to:
//
//	sts := &mtasts.Client{
//		Resolver: new(dns.Client),
//		Cache:    mtasts.DirCache("/var/lib/myapp/mta-sts"),
//	}
//	res, err := sts.Lookup(ctx, "example.com")
//
// A cached policy costs no HTTPS request; its TXT record is looked up at
// most once per [Client.RefreshInterval], and concurrent Lookups of one
// domain share one lookup and one fetch. [MemCache] is the in-memory
// [Cache] a Client uses when given none.
//
// The parsers ([ParseRecord], [SelectRecord], [ParsePolicy]) are strict:
// anything malformed counts as no record or no policy, as RFC 8461 §3.1
// and §3.2 require.
package mtasts
