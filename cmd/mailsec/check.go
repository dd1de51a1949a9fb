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
	"github.com/mailsec/mailsec/transport"
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

const checkSynopsis = `usage: mailsec check DOMAIN [-dns HOST:PORT] [-ca FILE] [-allow-private] [-dkim-selector S] [-json] [-timeout D]
`

func checkBrief(w io.Writer) {
	fmt.Fprint(w, checkSynopsis, "\nFlags:\n")
	fs := newCheckFlags(&checkOptions{})
	fs.SetOutput(w)
	fs.PrintDefaults()
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
example.org.

Flags:
`)
	fs := newCheckFlags(&checkOptions{})
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Exit status:
  0  the check ran (whatever it found)
  1  it could not run: the time ran out or it was interrupted
  2  bad usage: no domain, an unknown flag, a -ca file that cannot be used
`)
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
	d := &transport.Direct{Resolver: newResolver(o.dns), Port: o.mxPort, AllowPrivate: o.allowPriv}
	if o.caFile != "" {
		roots, err := loadRoots(o.caFile)
		if err != nil {
			return reportUsage(e, name, err)
		}
		d.TLSConfig = &tls.Config{RootCAs: roots}
	}
	if err := d.Validate(); err != nil {
		return reportUsage(e, name, usagef("%v", err))
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rep, err := d.Check(ctx, domain)
	if rep == nil {
		if errors.Is(err, mailsec.ErrInvalid) {
			return reportUsage(e, name, usagef("%v", err))
		}
		fmt.Fprintf(e.stderr, "mailsec check: %s\n", printable(err.Error()))
		return exitFail
	}
	var dc *dkimCheck
	if o.selector != "" {
		var derr error
		dc, derr = checkDKIM(ctx, newResolver(o.dns), rep.Domain, o.selector)
		if derr != nil {
			dc.Problem = "lookup failed: " + derr.Error()
			err = errors.Join(err, fmt.Errorf("DKIM record %s: %w", dc.Name, derr))
		}
	}
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			*transport.DomainCheck
			DKIM *dkimCheck `json:"dkim,omitempty"`
		}{rep, dc})
	} else {
		printCheck(e.stdout, rep)
		if dc != nil {
			printDKIM(e.stdout, dc)
		}
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "mailsec check: %s\n", printable(err.Error()))
		return exitFail
	}
	return exitOK
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printCheck writes the report for a person.
func printCheck(w io.Writer, r *transport.DomainCheck) {
	p := func(format string, a ...any) { fmt.Fprintln(w, printable(fmt.Sprintf(format, a...))) }
	p("Domain:   %s", r.Domain)
	switch {
	case r.NullMX:
		p("MX:       null MX (the domain accepts no mail)")
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
	default:
		p("MTA-STS:  record found, policy unusable: %s", s.Error)
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
