// Package tlsrpt implements SMTP TLS Reporting (RFC 8460): it counts how
// TLS went in every session a direct-delivery transport had with a
// domain's MX hosts, builds the daily aggregate report, finds where the
// domain wants reports, and delivers them.
//
// # What to use first
//
// An [Aggregator] is what a transport records into: give
// transport.Direct one as its Reports field, and every session's outcome
// (success, or the RFC 8460 §4.3 [ResultType] of its failure, with the
// MTA-STS or DANE policy that applied) lands in it as a [Result].
//
// Once a UTC day is over, for each domain of [Aggregator.Domains], build
// the report with [Aggregator.Report], find the domain's reporting policy
// with [LookupPolicy], hand both to [Submitter.Submit], and call
// [Aggregator.Forget] when it went through:
//
//	day := time.Now().UTC().Add(-24 * time.Hour)
//	for _, d := range agg.Domains(day) {
//		rep, err := agg.Report(d, day, tlsrpt.Organization{Name: "Example", ContactInfo: "tlsrpt@mail.example.com"})
//		...
//		pol, err := tlsrpt.LookupPolicy(ctx, resolver, d)
//		if errors.Is(err, tlsrpt.ErrNoRecord) {
//			agg.Forget(d, day) // the domain does not want reports
//			continue
//		}
//		...
//		if err := sub.Submit(ctx, rep, pol); err == nil {
//			agg.Forget(d, day)
//		}
//	}
//
// Nothing here sends anything by itself: reporting is off until the
// application calls Submit.
//
// # Results that outlive the process
//
// An Aggregator keeps its counts in memory. [Aggregator.Flush] moves them
// into a [Store], where counts with the same UTC day, policy domain,
// policy and outcome (success, or one failure's details) add up: several
// instances of an application flushing into one store make one report per
// domain and day. A Store that fails loses nothing: the counts stay in
// the Aggregator, within its limits, for the next Flush.
// [Aggregator.StoredReport] builds a report from the merged counts, under
// the Aggregator's limits.
//
// A [Reporter] sends what is due from a Store: after flushing, the report
// of every domain with counts on the previous UTC day (once [Reporter.Grace]
// has passed after midnight, so that the other instances' last counts are
// in), never the day still running; it marks each report done in the
// Store when it is sent, not wanted or failed for good, so that it is sent
// once, and retries temporary failures until the day after. Package outbox
// keeps the Store in its database and runs the Reporter as a periodic job
// of its leader (outbox.Options.TLSRPT). An application without an outbox
// uses a [FileStore], one file per process:
//
//	store, err := tlsrpt.NewFileStore("/var/lib/app/tlsrpt.json")
//	...
//	rep := &tlsrpt.Reporter{Aggregator: agg, Store: store, Organization: org, Submitter: sub, Resolver: resolver}
//	// every minute, and before the process ends: agg.Flush(ctx, store)
//	// every hour: rep.Run(ctx)
//
// A FileStore and the outbox's tables hold what the reports carry
// (recipient domains, MX hosts, server addresses, counts), readable, and
// nothing of any message. They are bounded: a FileStore by MaxCounts
// (an Add beyond it fails with [ErrStoreFull] and adds nothing), both by
// the Aggregators' limits per flush and by Retention, after which
// Reporter.Run deletes a day.
//
// # Threat model
//
// Reports tell a domain's operators when mail to them could not be sent
// over authenticated TLS: an attacker stripping STARTTLS or presenting a
// forged certificate shows up in the report of the day. What a report
// reveals (the sending side's addresses, the MX hosts reached, session
// counts) goes only to the URIs the domain itself publishes in DNS at
// _smtp._tls.<domain>, and a report is only ever sent by the policy of
// the domain it is about. The record is parsed strictly; URIs other than
// mailto: and https: are ignored, https: reports go only over TLS with a
// verified certificate (redirects to http: are refused) and, unless
// [Submitter.AllowPrivate] is set, never to a loopback, private or other
// non-global address, and report mail
// goes through the application's mailsec.Sender, with its policy and
// validation.
//
// A report says nothing about the sending side's own network beyond the
// sending address field, which it fills only with a global unicast
// address: the Aggregator cleans each failure-reason-code of control
// characters and replaces the IP addresses in it (a resolver's, a local
// address) by "[address]".
//
// DNS answers are not authenticated here: whoever can forge the TXT
// record can have the report sent to them, which tells them what they
// could see on the network anyway. An [Aggregator] keeps bounded state
// however many results arrive: it caps domains per day, policies per
// domain, distinct failure details per policy (counting the rest), and
// the length of every string it keeps.
//
// # Errors
//
// [LookupPolicy] and [ParseRecord] fail with a [*RecordError] that names
// the domain and matches [ErrNoRecord], [ErrMultipleRecords],
// [ErrSyntax], [ErrNoUsableURI] or [ErrLookup]; its Temporary method says
// whether the DNS failure may pass. [Submitter.Submit] joins one
// [*SubmitError] per URI that failed.
package tlsrpt
