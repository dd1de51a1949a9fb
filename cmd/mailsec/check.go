package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/transport"
	"github.com/mailsec/mailsec/transport/mtasts"
)

type checkOptions struct {
	dns       string
	caFile    string
	mxPort    int
	allowPriv bool
	timeout   time.Duration
	json      bool
	selector  string
}

func newCheckFlags(o *checkOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("mailsec check", flag.ContinueOnError)
	fs.StringVar(&o.dns, "dns", "", "the validating resolver, `HOST:PORT` (default: /etc/resolv.conf's; its DNSSEC answers count only from loopback)")
	fs.StringVar(&o.caFile, "ca", "", "PEM `FILE` of root certificates to trust in addition to the system's")
	fs.IntVar(&o.mxPort, "mx-port", 0, "the `PORT` MX hosts listen on (default 25; for test setups)")
	fs.BoolVar(&o.allowPriv, "allow-private", false, "connect to MX and MTA-STS policy hosts at loopback, private, link-local and other non-global addresses (refused by default; for test setups and internal networks)")
	fs.DurationVar(&o.timeout, "timeout", time.Minute, "give up after `DURATION`")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on standard output")
	fs.StringVar(&o.selector, "dkim-selector", "", "also report whether the DKIM key record of `SELECTOR` (at SELECTOR._domainkey.DOMAIN) is published and well-formed")
	return fs
}

const checkSynopsis = `usage: mailsec check DOMAIN [-dns HOST:PORT] [-ca FILE] [-mx-port PORT] [-allow-private]
                     [-dkim-selector S] [-json] [-timeout D]
`

func checkFlagGroups() []flagGroup {
	return []flagGroup{
		{"Network and trust", []string{"dns", "ca", "mx-port", "allow-private"}},
		{"What to check", []string{"dkim-selector"}},
		{"Output and limits", []string{"json", "timeout"}},
	}
}

func checkUsage(w io.Writer) {
	fmt.Fprint(w, checkSynopsis, `
Check reports how well mail to DOMAIN is protected in transit: its MX hosts
and whether DNSSEC authenticates them, its MTA-STS record and policy, its
TLS-RPT report addresses, and for each MX host its DANE TLSA records, whether
it offers STARTTLS, the TLS version, whether its certificate is valid for
its name and whether it matches the TLSA records, with a verdict in plain
words: what mailsec send -mx would do with the host by default, and why.
No mail is sent; each host sees EHLO, STARTTLS and QUIT on port 25.
Every name is looked up through -dns, the MTA-STS policy host's included.
With -dkim-selector, it also reports whether the DKIM key record of that
selector is published, DNSSEC-signed and well-formed (a known key type,
a key that parses, RSA of at least 2048 bits, not revoked), and if not, why.
A host at a loopback, private, link-local or other non-global address is
reported as refused and not connected to, unless -allow-private is given.
DOMAIN is a domain name: "ann@example.org" is refused, not read as
example.org. The last line, and "result" in -json, sums it up: protected,
partly-protected, verified-only, undeliverable, null-mx, no-route, or
incomplete when the check could not run.

Examples:
  mailsec check example.org
  mailsec check example.org -dkim-selector mail2026 -json | jq .result

  # a test setup: a local validating resolver, MX hosts on a private CA and port
  mailsec check example.test -dns 127.0.0.1:53 -ca ca.pem -mx-port 2525 -allow-private
`)
	fs := newCheckFlags(&checkOptions{})
	printFlags(w, fs, checkFlagGroups())
	fmt.Fprint(w, `
Exit status:
  0  protected: DANE or an MTA-STS policy in enforce mode authenticates every
     MX host, and the DKIM record (with -dkim-selector) is usable
  1  weaker or broken, and the output says which: some host only verified or
     refused, a null MX, no MX route, an unusable DKIM record
  2  bad usage: no domain, an unknown flag, a -ca file that cannot be used
  3  the check could not run: the resolver did not answer, no MX host could
     be reached (port 25 may be blocked here), or the time ran out
`)
}

// checkResult is the domain's verdict for scripts: the "result" member of
// check -json, and the exit status.
type checkResult struct {
	// Status is protected, partly-protected, verified-only, undeliverable,
	// null-mx, no-route or incomplete.
	Status     string `json:"status"`
	ExitStatus int    `json:"exit_status"`
	// Reasons say what keeps the domain from protected, or the check
	// from completing.
	Reasons []string `json:"reasons,omitempty"`
}

// resolverDown reports whether err is a lookup that got no answer about
// the name: the resolver unreachable, silent or refusing, or the time up.
func resolverDown(err error) bool {
	var de *dns.Error
	if errors.As(err, &de) {
		return de.Kind == dns.Unreachable || de.Kind == dns.Timeout || de.Kind == dns.Refused
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// stsState says what was seen of the domain's MTA-STS record when the
// report has an error and no policy: "seen" (a record, whose policy could
// not be used), "none" (no record), or "unknown" with the lookup's error.
func stsState(ctx context.Context, r *dns.Client, domain string) (string, error) {
	ans, err := r.LookupTXT(ctx, "_mta-sts."+domain)
	switch {
	case dns.IsNotFound(err):
		return "none", nil
	case err != nil:
		return "unknown", err
	}
	if _, err := mtasts.SelectRecord(ans.Records); err != nil {
		return "none", nil
	}
	return "seen", nil
}

// judge sums the report up.
func judge(ctx context.Context, r *dns.Client, rep *transport.DomainCheck, dc *dkimCheck, dkimErr, checkErr error, sts string, stsErr error) checkResult {
	var incomplete []string
	if checkErr != nil {
		incomplete = append(incomplete, "the check ended early: "+checkErr.Error())
	}
	if rep.MXError != "" {
		if _, err := r.LookupMX(ctx, rep.Domain); err != nil && resolverDown(err) {
			incomplete = append(incomplete, "the MX lookup got no answer: "+err.Error())
		}
	}
	if sts == "unknown" && resolverDown(stsErr) {
		incomplete = append(incomplete, "the MTA-STS record lookup got no answer: "+stsErr.Error())
	}
	if dkimErr != nil && resolverDown(dkimErr) {
		incomplete = append(incomplete, "the DKIM record lookup got no answer: "+dkimErr.Error())
	}
	unreachable := 0
	for _, h := range rep.Hosts {
		if h.Status == "unreachable" {
			unreachable++
		}
	}
	if len(rep.Hosts) > 0 && unreachable == len(rep.Hosts) {
		incomplete = append(incomplete, "no MX host could be reached (outgoing port 25 may be blocked from here)")
	}
	if len(incomplete) > 0 {
		return checkResult{Status: "incomplete", ExitStatus: exitCheck, Reasons: incomplete}
	}

	res := checkResult{ExitStatus: exitFail}
	count := map[string]int{}
	for _, h := range rep.Hosts {
		count[h.Status]++
		if h.Status != "protected" {
			res.Reasons = append(res.Reasons, h.Host+": "+h.Status+": "+h.Verdict)
		}
	}
	switch {
	case rep.NullMX:
		res.Status = "null-mx"
		res.Reasons = []string{"the domain accepts no mail (null MX, RFC 7505)"}
	case rep.MXError != "":
		res.Status = "no-route"
		res.Reasons = []string{"the MX lookup failed: " + rep.MXError}
	case len(rep.Hosts) > 0 && count["protected"] == len(rep.Hosts):
		res.Status, res.ExitStatus = "protected", exitOK
	case count["protected"] > 0:
		res.Status = "partly-protected"
	case count["verified"] > 0:
		res.Status = "verified-only"
	default:
		res.Status = "undeliverable"
	}
	if dc != nil && dc.Problem != "" {
		res.ExitStatus = exitFail
		res.Reasons = append(res.Reasons, "DKIM record "+dc.Name+": "+dc.Problem)
	}
	for i, s := range res.Reasons {
		res.Reasons[i] = printable(s)
	}
	return res
}

func runCheck(ctx context.Context, e *env, args []string) int {
	const name = "check"
	o := &checkOptions{}
	fs := newCheckFlags(o)
	// The domain may come before or after the flags.
	var domain string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		domain, args = args[0], args[1:]
	}
	if code, ok := parseFlagsArgs(e, name, fs, checkUsage, args, 1); !ok {
		return code
	}
	if domain == "" && fs.NArg() == 1 {
		domain = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return reportUsage(e, name, usagef("unexpected argument %q", fs.Arg(0)))
	}
	if domain == "" {
		return reportUsage(e, name, usagef("a domain is required"))
	}
	if o.mxPort < 0 || o.mxPort > 65535 {
		return reportUsage(e, name, usagef("-mx-port %d: not a port number", o.mxPort))
	}
	r := newResolver(o.dns)
	d := &transport.Direct{Resolver: r, Port: o.mxPort, AllowPrivate: o.allowPriv}
	if o.caFile != "" {
		roots, err := loadRoots(o.caFile)
		if err != nil {
			return reportUsage(e, name, err)
		}
		d.TLSConfig = &tls.Config{RootCAs: roots}
	}
	if err := d.Validate(); err != nil {
		return reportUsage(e, name, flagConfigError(err))
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rep, err := d.Check(ctx, domain)
	if rep == nil {
		if errors.Is(err, mailsec.ErrInvalid) {
			return reportUsage(e, name, usagef("%s", strings.TrimPrefix(err.Error(), "mailsec: ")))
		}
		fmt.Fprintf(e.stderr, "mailsec check: could not check: %s\n", printable(strings.TrimPrefix(err.Error(), "mailsec: ")))
		return exitCheck
	}
	var dc *dkimCheck
	var dkimErr error
	if o.selector != "" {
		dc, dkimErr = checkDKIM(ctx, r, rep.Domain, o.selector)
		if dkimErr != nil {
			dc.Problem = "lookup failed: " + dkimErr.Error()
		}
	}
	// The report's MTA-STS error does not say whether a record was seen:
	// ask, so that none is reported that was not.
	sts, stsErr := "", error(nil)
	if s := rep.MTASTS; s != nil && s.Mode == "" && s.Error != "" {
		sts, stsErr = stsState(ctx, r, rep.Domain)
	}
	res := judge(ctx, r, rep, dc, dkimErr, err, sts, stsErr)
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			*transport.DomainCheck
			MTASTSRecord string      `json:"mta_sts_record,omitempty"`
			DKIM         *dkimCheck  `json:"dkim,omitempty"`
			Result       checkResult `json:"result"`
		}{rep, sts, dc, res})
	} else {
		printCheck(e.stdout, rep, sts, stsErr)
		if dc != nil {
			printDKIM(e.stdout, dc)
		}
		printResult(e.stdout, res)
	}
	if res.Status == "incomplete" {
		fmt.Fprintf(e.stderr, "mailsec check: could not check %s: %s\n", printable(rep.Domain), res.Reasons[0])
	}
	return res.ExitStatus
}

// printResult writes the summing-up lines, every reason in full.
func printResult(w io.Writer, res checkResult) {
	fmt.Fprintf(w, "Result:  %s (exit status %d)\n", res.Status, res.ExitStatus)
	for _, r := range res.Reasons {
		fmt.Fprintln(w, "  - "+r)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printCheck writes the report for a person.
//
// sts is what stsState found when the report's MTA-STS error left it open.
func printCheck(w io.Writer, r *transport.DomainCheck, sts string, stsErr error) {
	p := func(format string, a ...any) { fmt.Fprintln(w, printable(fmt.Sprintf(format, a...))) }
	p("Domain:   %s", r.Domain)
	switch {
	case r.NullMX:
		p("MX:       none: the domain accepts no mail (null MX, RFC 7505)")
	case r.MXError != "":
		p("MX:       lookup failed: %s", r.MXError)
	default:
		implicit := ""
		if r.ImplicitMX {
			implicit = " (no MX records: the domain itself)"
		}
		p("MX:       %s%s, DNSSEC: %s", strings.Join(r.MX, ", "), implicit, yesNo(r.MXAuthentic))
		if r.MoreMX > 0 {
			p("          and %d more MX hosts, which mailsec never tries", r.MoreMX)
		}
	}
	switch s := r.MTASTS; {
	case s == nil:
		p("MTA-STS:  none")
	case s.Mode != "":
		p("MTA-STS:  id %s, mode %s, mx %s, max_age %d", s.ID, s.Mode, strings.Join(s.MX, " "), s.MaxAge)
		if s.Error != "" {
			p("          (refresh failed: %s)", s.Error)
		}
	case sts == "seen":
		p("MTA-STS:  record found, policy unusable: %s", s.Error)
	case sts == "none":
		p("MTA-STS:  none (an earlier attempt failed: %s)", s.Error)
	default:
		p("MTA-STS:  unknown: the record lookup failed: %v", stsErr)
	}
	switch {
	case len(r.TLSRPT) > 0:
		p("TLS-RPT:  %s", strings.Join(r.TLSRPT, ", "))
	case r.TLSRPTError != "":
		p("TLS-RPT:  %s", r.TLSRPTError)
	default:
		p("TLS-RPT:  none")
	}
	for _, h := range r.Hosts {
		p("")
		p("%s [%s] (address DNSSEC: %s)", h.Host, strings.Join(h.Addrs, " "), yesNo(h.AddrAuthentic))
		switch {
		case h.TLSAError != "":
			p("  DANE:        TLSA lookup failed: %s", h.TLSAError)
		case len(h.TLSA) > 0:
			p("  DANE:        %s (usable: %s)", strings.Join(h.TLSA, "; "), yesNo(h.DANEUsable))
			if h.DANEMatch != "" {
				p("  DANE match:  %s", h.DANEMatch)
			} else if h.DANEError != "" {
				p("  DANE match:  none: %s", h.DANEError)
			}
		default:
			p("  DANE:        no TLSA records")
		}
		if h.Connected {
			p("  STARTTLS:    %s", yesNo(h.StartTLS))
			if h.StartTLS {
				p("  TLS:         %s %s", h.TLSVersion, h.CipherSuite)
				if h.CertValid {
					p("  Certificate: valid for %s until %s", h.Host, h.CertExpires.UTC().Format(time.DateOnly))
				} else {
					p("  Certificate: NOT valid for %s: %s", h.Host, h.CertError)
				}
			}
		} else if h.Error != "" {
			p("  Connection:  %s", h.Error)
		}
		p("  Verdict:     %s: %s", h.Status, h.Verdict)
	}
	p("")
	p("Verdict: %s", r.Verdict)
}
