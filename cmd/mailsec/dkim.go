package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mailsec/mailsec/dkimsign"
	mdns "github.com/mailsec/mailsec/dns"
)

// dkimList is the repeatable -dkim DOMAIN:SELECTOR:KEYFILE flag.
type dkimList []dkimKey

type dkimKey struct{ domain, selector, file string }

func (l *dkimList) String() string {
	var s []string
	for _, k := range *l {
		s = append(s, k.domain+":"+k.selector+":"+k.file)
	}
	return strings.Join(s, ",")
}

func (l *dkimList) Set(v string) error {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return fmt.Errorf("%q: want DOMAIN:SELECTOR:KEYFILE", v)
	}
	*l = append(*l, dkimKey{domain: parts[0], selector: parts[1], file: parts[2]})
	return nil
}

// signing wraps t in a DKIM-signing transport when -dkim was given: each
// DOMAIN's keys sign mail whose From domain is DOMAIN, and mail from any
// other domain is refused.
//
// A key file that its group or others may read gets a warning on warn,
// as ssh gives for a private key: anyone who reads it can sign mail as
// the domain.
func (o *deliveryOptions) signing(t closingTransport, warn io.Writer) (closingTransport, error) {
	if len(o.dkim) == 0 {
		return t, nil
	}
	domains := map[string][]*dkimsign.Signer{}
	for _, k := range o.dkim {
		data, err := os.ReadFile(k.file)
		if err != nil {
			return nil, usagef("-dkim %s:%s: %v", k.domain, k.selector, err)
		}
		if fi, err := os.Stat(k.file); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(warn, "mailsec: warning: the DKIM key %s is readable by others than its owner (mode %04o): anyone who reads it can sign mail as %s; chmod 600 %s\n",
				printable(k.file), fi.Mode().Perm(), printable(k.domain), printable(k.file))
		}
		key, err := dkimsign.ParsePrivateKey(data)
		if err != nil {
			return nil, usagef("-dkim %s:%s:%s: %v", k.domain, k.selector, k.file, err)
		}
		s, err := dkimsign.NewSigner(k.domain, k.selector, key)
		if err != nil {
			return nil, usagef("-dkim %s:%s: %v", k.domain, k.selector, err)
		}
		domains[s.Domain()] = append(domains[s.Domain()], s)
	}
	st, err := dkimsign.NewTransport(t, &dkimsign.Options{Domains: domains})
	if err != nil {
		return nil, usagef("-dkim: %v", err)
	}
	return st, nil
}

const dkimSynopsis = `usage: mailsec dkim keygen -domain DOMAIN -selector SELECTOR [-algo rsa|ed25519] -out FILE
`

func newKeygenFlags(domain, selector, algo, out *string) *flag.FlagSet {
	fs := flag.NewFlagSet("mailsec dkim keygen", flag.ContinueOnError)
	fs.StringVar(domain, "domain", "", "the signing `DOMAIN` (d=), the domain of the From addresses it signs or a parent of it")
	fs.StringVar(selector, "selector", "", "the `SELECTOR` (s=) the public key is published under, at SELECTOR._domainkey.DOMAIN")
	fs.StringVar(algo, "algo", "rsa", "the key `ALGORITHM`: rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463)")
	fs.StringVar(out, "out", "", "write the private key (PEM, PKCS #8, mode 0600) to `FILE`, which must not exist")
	return fs
}

func dkimUsage(w io.Writer) {
	fmt.Fprint(w, dkimSynopsis, `
dkim keygen makes a DKIM signing key, writes it to FILE, and prints on
standard output the DNS TXT record to publish, as one zone-file line:

  SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..."

Example:
  mailsec dkim keygen -domain example.com -selector r2026 -out r2026.pem

Sign with it: mailsec send -dkim DOMAIN:SELECTOR:FILE (repeatable: an rsa
and an ed25519 key sign the same message, for receivers that ignore
Ed25519). Check that the record is published: mailsec check DOMAIN
-dkim-selector SELECTOR. The key file is written with mode 0600; send
warns when it finds one that its group or others may read.

Flags of keygen:
`)
	var a, b, c, d string
	fs := newKeygenFlags(&a, &b, &c, &d)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Exit status:
  0  the key was written and its record printed
  1  the key could not be written
  2  bad usage: no or unknown subcommand, a missing flag, an unknown
     algorithm, a malformed domain or selector, an -out file that exists
`)
}

func runDKIM(_ context.Context, e *env, args []string) int {
	const name = "dkim"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "-help" && args[0] != "--help" {
		return reportUsage(e, name, usagef("a subcommand is required: keygen"))
	}
	switch args[0] {
	case "-h", "-help", "--help":
		dkimUsage(e.stdout)
		return exitOK
	case "keygen":
	default:
		return reportUsage(e, name, usagef("unknown subcommand %q", args[0]))
	}
	var domain, selector, algo, out string
	fs := newKeygenFlags(&domain, &selector, &algo, &out)
	if code, ok := parseFlags(e, name, fs, dkimUsage, args[1:]); !ok {
		return code
	}
	switch {
	case domain == "" || selector == "" || out == "":
		return reportUsage(e, name, usagef("keygen needs -domain, -selector and -out"))
	case algo != "rsa" && algo != "ed25519":
		return reportUsage(e, name, usagef("-algo %q: must be rsa or ed25519", algo))
	}
	key, err := dkimsign.GenerateKey(algo)
	if err != nil {
		fmt.Fprintf(e.stderr, "mailsec dkim: %v\n", err)
		return exitFail
	}
	s, err := dkimsign.NewSigner(domain, selector, key)
	if err != nil {
		return reportUsage(e, name, usagef("%v", err))
	}
	pemKey, err := dkimsign.MarshalPrivateKey(key)
	if err != nil {
		fmt.Fprintf(e.stderr, "mailsec dkim: %v\n", err)
		return exitFail
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return reportUsage(e, name, usagef("-out %s: the file exists; mailsec does not overwrite a key", out))
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "mailsec dkim: %v\n", err)
		return exitFail
	}
	_, err = f.Write(pemKey)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		fmt.Fprintf(e.stderr, "mailsec dkim: writing %s: %v\n", out, err)
		return exitFail
	}
	fmt.Fprintln(e.stdout, s.ZoneLine())
	return exitOK
}

// dkimCheck is what check -dkim-selector found.
type dkimCheck struct {
	Name      string `json:"name"`                // SELECTOR._domainkey.DOMAIN
	Published bool   `json:"published"`           // a TXT record exists
	Authentic bool   `json:"authentic"`           // DNSSEC validated it
	Record    string `json:"record,omitempty"`    // its text
	Algorithm string `json:"algorithm,omitempty"` // k=
	Bits      int    `json:"bits,omitempty"`
	Testing   bool   `json:"testing,omitempty"` // t=y
	Problem   string `json:"problem,omitempty"` // why a receiver would not use it
}

// checkDKIM looks up and reads the DKIM key record of selector at domain.
// The error is for a lookup that could not be made (a time-out, a server
// failure), not for a record that is missing or malformed.
func checkDKIM(ctx context.Context, r *mdns.Client, domain, selector string) (*dkimCheck, error) {
	c := &dkimCheck{Name: strings.ToLower(selector + "._domainkey." + strings.TrimSuffix(domain, "."))}
	ans, err := r.LookupTXT(ctx, c.Name)
	switch {
	case errors.Is(err, mdns.ErrNXDomain), errors.Is(err, mdns.ErrNoRecords):
		c.Problem = "no record published"
		return c, nil
	case err != nil:
		return c, err
	}
	c.Authentic = ans.Authentic
	var dkims []string
	for _, rec := range ans.Records {
		// A TXT record at the name that is not a DKIM key (RFC 6376
		// §3.6.2.2 lets it be shared) has no p=.
		if strings.Contains(rec, "p=") || strings.HasPrefix(strings.TrimSpace(rec), "v=DKIM1") {
			dkims = append(dkims, rec)
		}
	}
	switch len(dkims) {
	case 0:
		c.Problem = "no DKIM key record among the TXT records"
		return c, nil
	case 1:
	default:
		c.Published = true
		c.Problem = fmt.Sprintf("%d DKIM key records; receivers may pick any, publish one", len(dkims))
		return c, nil
	}
	c.Published, c.Record = true, dkims[0]
	rec, err := dkimsign.ParseRecord(dkims[0])
	if err != nil {
		var re *dkimsign.RecordError
		if errors.As(err, &re) {
			c.Problem = re.Reason
		} else {
			c.Problem = err.Error()
		}
		return c, nil
	}
	c.Algorithm, c.Bits, c.Testing = rec.Algorithm, rec.Bits, rec.Testing
	return c, nil
}

// printDKIM writes the DKIM part of a check report for a person.
func printDKIM(w io.Writer, c *dkimCheck) {
	p := func(format string, a ...any) { fmt.Fprintln(w, printable(fmt.Sprintf(format, a...))) }
	switch {
	case !c.Published:
		p("DKIM:     %s: %s", c.Name, c.Problem)
	case c.Problem != "":
		p("DKIM:     %s: published, NOT usable: %s", c.Name, c.Problem)
	default:
		testing := ""
		if c.Testing {
			testing = ", t=y (testing: receivers treat the mail as unsigned)"
		}
		p("DKIM:     %s: published, well-formed, %s %d bits, DNSSEC: %s%s", c.Name, c.Algorithm, c.Bits, yesNo(c.Authentic), testing)
	}
}
