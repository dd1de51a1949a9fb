package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
	"github.com/mailsec/mailsec/transport/mtasts"
)

// passwordEnv names the environment variable that holds the -user password.
const passwordEnv = "MAILSEC_PASSWORD"

// deliveryOptions holds the flags that say how a message is delivered:
// the transport, its trust and credentials, and end-to-end protection.
// mailsec send and mailsec queue run share them. To add a flag, add a
// field here, register it in register and check it in check.
type deliveryOptions struct {
	server    string
	mx        bool
	dns       string
	mxPort    int
	allowPriv bool
	level     string
	tlsMode   string
	caFile    string
	user      string
	stsCache  string
	dkim      dkimList
	verp      verpOptions
	protect   protectOptions
}

func (o *deliveryOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.server, "server", "", "submission server `HOST:PORT` (required unless -mx)")
	fs.BoolVar(&o.mx, "mx", false, "deliver directly to each recipient domain's MX hosts (DANE, MTA-STS, REQUIRETLS), without -server")
	fs.StringVar(&o.dns, "dns", "", "with -mx: the validating resolver, `HOST:PORT` (default: /etc/resolv.conf's; its DNSSEC answers count only from loopback)")
	fs.IntVar(&o.mxPort, "mx-port", 0, "with -mx: the `PORT` MX hosts listen on (default 25; for test setups)")
	fs.BoolVar(&o.allowPriv, "allow-private", false, "with -mx: connect to MX and MTA-STS policy hosts at loopback, private, link-local and other non-global addresses (refused by default; for test setups and internal networks)")
	fs.StringVar(&o.level, "level", "", "with -mx: the security `LEVEL` for every recipient domain: verified (default), dane-only, dane, verify, secure, encrypt, may, none")
	fs.StringVar(&o.tlsMode, "tls", "", "how TLS starts, `implicit|starttls|none` (default implicit on port 465, starttls otherwise); none: no TLS at all, for a development server on this machine (Mailpit, MailHog) at a loopback -server, never with -user")
	fs.StringVar(&o.stsCache, "mta-sts-cache", "", "with -mx: keep MTA-STS policies in `DIR`, so that an enforce policy seen once protects later runs (default: mailsec/mta-sts in the user's cache directory; \"none\": this run only)")
	fs.StringVar(&o.caFile, "ca", "", "PEM `FILE` of root certificates to trust in addition to the system's")
	fs.StringVar(&o.user, "user", "", "authenticate as `NAME`; the password is read from $"+passwordEnv)
	fs.Var(&o.dkim, "dkim", "sign with DKIM, with the PEM private key in KEYFILE, mail whose From domain is DOMAIN, `DOMAIN:SELECTOR:KEYFILE` (repeatable: an rsa and an ed25519 key sign each message twice); mail from another domain is refused")
	o.verp.register(fs, "send each delivery from a return path of its own that names it, for bounces from servers that drop the ENVID:")
	o.protect.register(fs)
}

// deliveryFlagNames are the names of the flags deliveryOptions registers.
func deliveryFlagNames() []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	(&deliveryOptions{}).register(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// check reports what makes the parsed delivery flags unusable, before any
// file is read or any connection made.
func (o *deliveryOptions) check(getenv func(string) string) error {
	switch {
	case o.server == "" && !o.mx:
		return usagef("-server or -mx is required")
	case o.server != "" && o.mx:
		return usagef("-server and -mx exclude each other: submit to a server, or deliver to MX hosts")
	case !o.mx && (o.dns != "" || o.mxPort != 0 || o.level != "" || o.allowPriv || o.stsCache != ""):
		return usagef("-dns, -mx-port, -level, -allow-private and -mta-sts-cache go with -mx")
	case o.mx && (o.tlsMode != "" || o.user != ""):
		return usagef("-tls and -user are for submission (-server), not -mx")
	}
	if !o.mx {
		if err := checkServer(o.server); err != nil {
			return err
		}
	}
	switch o.tlsMode {
	case "", "implicit", "starttls":
	case "none":
		switch {
		case !isLoopbackHost(o.server):
			return usagef("-tls none sends without TLS, so only to a server on this machine: -server %s is not a loopback address (use 127.0.0.1, [::1] or localhost)", o.server)
		case o.user != "":
			return usagef("-tls none and -user exclude each other: credentials are never sent without TLS")
		case o.caFile != "":
			return usagef("-ca has no use with -tls none: there is no certificate to check")
		}
	default:
		return usagef("-tls %q: must be implicit, starttls or none", o.tlsMode)
	}
	if o.user != "" && getenv(passwordEnv) == "" {
		return usagef("-user %s needs the password in the environment variable %s", o.user, passwordEnv)
	}
	if o.mxPort < 0 || o.mxPort > 65535 {
		return usagef("-mx-port %d: not a port number", o.mxPort)
	}
	if o.level != "" {
		l, err := mailsec.ParseSecurityLevel(o.level)
		if err != nil || l == mailsec.Pinned {
			return usagef("-level %q: must be verified, dane-only, dane, verify, secure, encrypt, may or none", o.level)
		}
	}
	if err := o.verp.check(); err != nil {
		return err
	}
	return o.protect.check()
}

// senderOptions reads the key and certificate files the protection flags
// name, and the -verp secret, and returns the Sender's options: its
// Policy, Protectors, Notice and ReturnPath, and the VERP (nil without
// -verp) that makes the return paths.
func (o *deliveryOptions) senderOptions(e *env) (*mailsec.Options, *bounce.VERP, error) {
	protectors, err := o.protect.protectors(e.getenv)
	if err != nil {
		return nil, nil, err
	}
	verp, err := o.verp.verp(e.stderr)
	if err != nil {
		return nil, nil, err
	}
	policy := o.protect.policy()
	if o.tlsMode == "none" {
		// Recorded in the Receipt as each recipient's plan.
		policy = mailsec.WithSecurity(policy, mailsec.Security{Level: mailsec.Plaintext})
	}
	if o.level != "" {
		l, _ := mailsec.ParseSecurityLevel(o.level)
		policy = mailsec.WithSecurity(policy, mailsec.Security{Level: l})
	}
	opts := &mailsec.Options{Policy: policy, Protectors: protectors, Notice: o.protect.notice()}
	if verp != nil {
		opts.ReturnPath = verp.ReturnPath
	}
	return opts, verp, nil
}

// sendOptions holds the flags of mailsec send: how to deliver, and the
// message. To add a message flag, add a field here, register it in
// register and check it in check.
type sendOptions struct {
	deliveryOptions
	from       string
	to, cc     addrList
	bcc        addrList
	subject    string
	bodyFile   string
	htmlFile   string
	attach     fileList
	requireTLS bool
	timeout    time.Duration
	json       bool
	queue      string

	set map[string]bool // flags given on the command line
}

func (o *sendOptions) register(fs *flag.FlagSet) {
	o.deliveryOptions.register(fs)
	fs.StringVar(&o.from, "from", "", "the author, `ADDR` (required)")
	fs.Var(&o.to, "to", "To recipients, `ADDR[,ADDR...]` (repeatable)")
	fs.Var(&o.cc, "cc", "Cc recipients, `ADDR[,ADDR...]` (repeatable)")
	fs.Var(&o.bcc, "bcc", "Bcc recipients, `ADDR[,ADDR...]` (repeatable); each gets a delivery of its own")
	fs.StringVar(&o.subject, "subject", "", "the subject `TEXT` (default: none)")
	fs.StringVar(&o.bodyFile, "body", "", "read the plain-text body from `FILE` (- for standard input)")
	fs.StringVar(&o.htmlFile, "html", "", "read the HTML body from `FILE`")
	fs.Var(&o.attach, "attach", "attach `FILE` (repeatable)")
	fs.BoolVar(&o.requireTLS, "requiretls", false, "require REQUIRETLS (RFC 8689) from the server and every later hop")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up on the whole send after `DURATION`")
	fs.BoolVar(&o.json, "json", false, "print the receipt as JSON on standard output (with -queue: the queued message's status)")
	fs.StringVar(&o.queue, "queue", "", "queue the message in the outbox `DB` (a SQLite file or a postgres:// URL) instead of sending it; the key comes from $"+outboxKeyEnv+"; mailsec queue run delivers it")
}

// check reports what makes the parsed flags unusable, before any file is
// read or any connection made.
func (o *sendOptions) check(getenv func(string) string) error {
	if o.queue != "" {
		// The process that delivers decides how: its transport and
		// protection flags, not these.
		for _, name := range deliveryFlagNames() {
			if o.set[name] {
				return usagef("-%s goes to mailsec queue run, which delivers what -queue queues: with -queue, give only the message", name)
			}
		}
	} else if err := o.deliveryOptions.check(getenv); err != nil {
		return err
	}
	switch {
	case o.from == "":
		return usagef("-from is required")
	case len(o.to)+len(o.cc)+len(o.bcc) == 0:
		return usagef("at least one recipient is required (-to, -cc or -bcc)")
	}
	if o.timeout <= 0 {
		return usagef("-timeout must be positive")
	}
	if o.htmlFile == "-" {
		return usagef("-html reads a file; only -body can read standard input")
	}
	if o.requireTLS && o.tlsMode == "none" {
		return usagef("-requiretls and -tls none exclude each other: REQUIRETLS needs verified TLS")
	}
	return nil
}

// checkServer checks -server's form, so that its error names the flag.
func checkServer(server string) error {
	host, port, err := net.SplitHostPort(server)
	switch {
	case err != nil && !strings.Contains(server, ":"):
		return usagef("-server %s: the port is missing: give HOST:PORT, such as %s:587 (STARTTLS) or %s:465 (implicit TLS)", server, server, server)
	case err != nil || host == "" || port == "":
		return usagef("-server %s: must be HOST:PORT, such as smtp.example.com:587 (an IPv6 address in brackets: [::1]:587)", server)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return usagef("-server %s: %q is not a port", server, port)
	}
	return nil
}

// isLoopbackHost reports whether server ("host:port") names this machine:
// a loopback address or "localhost". The library checks the address it
// connected to as well.
func isLoopbackHost(server string) bool {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func newSendFlags(o *sendOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("mailsec send", flag.ContinueOnError)
	o.register(fs)
	return fs
}

const sendSynopsis = `usage: mailsec send -server HOST:PORT [server flags] -from ADDR -to ADDR[,ADDR...] [message flags]
       mailsec send -mx [direct delivery flags] -from ADDR -to ADDR[,ADDR...] [message flags]
       mailsec send -queue DB -from ADDR -to ADDR[,ADDR...] [message flags]
`

// deliveryFlagGroups are the headings of the delivery flags, which send
// and queue run share.
func deliveryFlagGroups() []flagGroup {
	return []flagGroup{
		{"Server (submission to a smarthost)", []string{"server", "tls", "ca", "user"}},
		{"Direct delivery (to the recipient domains' MX hosts)", []string{"mx", "dns", "level", "mx-port", "allow-private", "mta-sts-cache"}},
		{"Protection (end to end, and DKIM)", []string{"pgp-keys", "pgp-sign", "smime-certs", "smime-roots", "smime-sign-cert", "smime-sign-key",
			"outer-subject", "notice-url", "prefer-protection", "dkim"}},
		{"Bounces (signed VERP return paths)", verpFlagNames()},
	}
}

func sendFlagGroups() []flagGroup {
	g := deliveryFlagGroups()
	return []flagGroup{g[0], g[1],
		{"Message", []string{"from", "to", "cc", "bcc", "subject", "body", "html", "attach", "requiretls"}},
		g[2], g[3],
		{"Output and limits", []string{"json", "timeout", "queue"}},
	}
}

func sendUsage(w io.Writer) {
	fmt.Fprint(w, sendSynopsis, `
Send sends one message the way an application using the library would, and
says on standard error, per recipient, whether it was accepted, over which
TLS and with which certificate check, or why not.

With -server it submits to that server with mandatory TLS: implicit TLS on
port 465, STARTTLS on any other port, the certificate verified for the host
in -server. A server that does not offer STARTTLS, or whose certificate does
not verify, receives nothing: not the envelope, not the credentials, not
the message. -tls none sends without TLS, to a development server on this
machine only (a loopback -server, never with -user), with a warning; the
receipt records the level ("plaintext").

With -mx it goes straight to each recipient domain's MX hosts, looked up
through -dns (DNSSEC counts only from a resolver on loopback): DANE when the
host has usable TLSA records, else the domain's MTA-STS policy when it
enforces, else a certificate valid for the MX host name; a host that meets
none gets nothing. -level changes that for every domain (Postfix's names),
and the receipt records every fallback taken. MTA-STS policies are kept in
-mta-sts-cache between runs (RFC 8461 wants them remembered); a cache
directory that is not yours or that your group or others may write to is
refused (chmod go-w it, or name another), and a file in it that is not yours,
is writable by others or is a link is ignored. MX and policy
hosts at non-global addresses are not connected to without -allow-private.

With -pgp-keys or -smime-certs every recipient must have a usable key or
certificate: one without receives nothing (or, with -notice-url, a link-only
notice; with -prefer-protection, the message unencrypted, and the line says
NOT encrypted). Bcc recipients each get a delivery of their own.

With -verp each delivery is sent (MAIL FROM) from a return path of its own,
LOCAL+<tag>@DOMAIN, whose tag names the delivery and is signed with the
secret in -verp-secret-file, so that a bounce is matched to it even from a
server that drops the ENVID, and nobody without the secret can forge one
(mailsec bounce ingest -recipient; see the README).

With -queue the message is queued in an outbox instead; 'mailsec queue run'
delivers it, with the delivery flags given there (-verp among them).

Examples:
  # through a provider's submission server, authenticated
  MAILSEC_PASSWORD=... mailsec send -server smtp.example.com:587 -user app \
      -from app@example.com -to ann@example.org -subject "test" -body msg.txt

  # to Mailpit or MailHog on this machine, without TLS
  mailsec send -server 127.0.0.1:1025 -tls none -from app@example.com -to ann@example.org

  # a server with a certificate from your own CA
  mailsec send -server mail.internal:587 -ca ca.pem -from app@example.com -to ann@example.org

  # straight to the MX hosts, encrypted end to end with PGP
  mailsec send -mx -pgp-keys keys.asc -from app@example.com -to ann@example.org -body - < msg.txt

  # bounces to a signed bounces+<tag>@example.com of this delivery
  mailsec send -server smtp.example.com:587 -from app@example.com -to ann@example.org \
      -verp bounces@example.com -verp-secret-file /etc/mailsec/verp.key
`)
	fs := newSendFlags(&sendOptions{})
	printFlags(w, fs, sendFlagGroups())
	fmt.Fprint(w, `
Environment:
  `+passwordEnv+`  the password for -user, required with it (there is no
                    flag for it, and it is never printed)
  `+pgpPassphraseEnv+`
                    the passphrase of the -pgp-sign key, if it has one
  `+outboxKeyEnv+`
                    with -queue: the outbox's key (see 'mailsec queue -h')

Files:
  A -dkim key file that its group or others may read draws a
  warning: anyone who reads it can sign as you. chmod 600 it.
  So does a -verp-secret-file: anyone who reads it can forge bounces
  that are taken for real ones.

Exit status:
  0   the server accepted the message for every recipient (with -queue: the
      message is queued)
  75  some recipient was not accepted, and every failure is one a later try
      may get past (a time-out, a 4xx reply, a refused MTA-STS policy host,
      a DANE mismatch at an MX host): retry later (sendmail's EX_TEMPFAIL)
  1   some recipient was not accepted for good (a 5xx reply, a null MX, a
      certificate or TLS setting of the -server that does not work, failed
      authentication), or the message is invalid (a malformed address or
      subject)
  2   bad usage: an unknown flag, a missing -from or recipient, a -server
      without a port, -tls none to a non-loopback server, a file that cannot
      be read, a key that cannot be parsed, -verp without -verp-secret-file,
      a VERP secret shorter than 32 bytes
`)
}

func runSend(ctx context.Context, e *env, args []string) int {
	const name = "send"
	o := &sendOptions{}
	fs := newSendFlags(o)
	if code, ok := parseFlags(e, name, fs, sendUsage, args); !ok {
		return code
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if err := o.check(e.getenv); err != nil {
		return reportUsage(e, name, err)
	}

	var t closingTransport
	if o.queue == "" {
		var err error
		if t, err = o.transport(e); err != nil {
			return reportUsage(e, name, err)
		}
		defer t.Close()
	}

	msg := &mailsec.Message{
		From:       o.from,
		To:         o.to,
		Cc:         o.cc,
		Bcc:        o.bcc,
		Subject:    o.subject,
		RequireTLS: o.requireTLS,
	}
	files, err := o.attach.open()
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return reportUsage(e, name, err)
	}
	for _, f := range files {
		msg.Attachments = append(msg.Attachments, mailsec.Attachment{Filename: filepath.Base(f.Name()), Content: f})
	}
	if o.htmlFile != "" {
		b, err := os.ReadFile(o.htmlFile)
		if err != nil {
			return reportUsage(e, name, usagef("-html: %v", err))
		}
		msg.HTML = string(b)
	}
	var opts *mailsec.Options
	var keys []outbox.Key
	if o.queue == "" {
		if opts, _, err = o.senderOptions(e); err != nil {
			return reportUsage(e, name, err)
		}
	} else if keys, err = outboxKeys(e.getenv); err != nil {
		return reportUsage(e, name, err)
	}
	// Standard input is read last, once nothing else can fail, so that a
	// usage error never waits for input.
	switch o.bodyFile {
	case "":
	case "-":
		b, err := io.ReadAll(e.stdin)
		if err != nil {
			return reportUsage(e, name, usagef("-body -: reading standard input: %v", err))
		}
		msg.Text = string(b)
	default:
		b, err := os.ReadFile(o.bodyFile)
		if err != nil {
			return reportUsage(e, name, usagef("-body: %v", err))
		}
		msg.Text = string(b)
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if o.queue != "" {
		return enqueue(ctx, e, o, keys, msg)
	}
	sender, err := mailsec.NewSender(t, opts)
	if err != nil {
		fmt.Fprintln(e.stderr, errorLine(err))
		return exitFail
	}
	receipt, err := sender.Send(ctx, msg)

	printProgress(e.stderr, receipt)
	if receipt != nil && o.json {
		out, jerr := json.MarshalIndent(receipt, "", "  ")
		if jerr != nil {
			fmt.Fprintf(e.stderr, "mailsec: encoding the receipt: %v\n", jerr)
			return exitFail
		}
		if _, werr := e.stdout.Write(append(out, '\n')); werr != nil {
			fmt.Fprintf(e.stderr, "mailsec: writing the receipt: %v\n", werr)
			return exitFail
		}
	}
	return sendStatus(e.stderr, &o.deliveryOptions, receipt, err)
}

// sendStatus finishes a send: the summary line and hints on w, and the
// exit status: 0 when every recipient was accepted, 75 when every failure
// is one a later try can help with, 1 when any is permanent.
func sendStatus(w io.Writer, o *deliveryOptions, receipt *mailsec.Receipt, err error) int {
	failed := receipt.Failed()
	switch {
	case err == nil && receipt != nil && len(failed) == 0:
		return exitOK
	case err == nil:
		// Send promises an error whenever a recipient failed; do not trust
		// a success that left someone out.
		fmt.Fprintln(w, "mailsec: not every recipient was accepted")
		return exitFail
	case len(failed) > 0:
		// Each failure has had its line; the summary only counts them.
		fmt.Fprintf(w, "mailsec: %d of %d recipients not delivered\n", len(failed), len(receipt.Recipients))
	default:
		fmt.Fprintln(w, errorLine(err))
	}
	for _, h := range hints(o, err) {
		fmt.Fprintln(w, "mailsec: hint: "+h)
	}
	if mailsec.IsTemporary(err) {
		fmt.Fprintln(w, "mailsec: every failure is temporary: trying again later may succeed")
		return exitTemp
	}
	return exitFail
}

// hints says what to change on the command line for the failures in err
// that a flag explains, once each.
func hints(o *deliveryOptions, err error) []string {
	var out []string
	add := func(h string) {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	var ua x509.UnknownAuthorityError
	var rh tls.RecordHeaderError
	var ne *mailsec.NetworkError
	for _, e := range leafErrors(err) {
		switch {
		case errors.As(e, &ua) && o.caFile == "":
			add("the server's certificate is signed by a CA this machine does not trust; if that is your own CA (a test or company CA), give its certificate with -ca FILE")
		case errors.As(e, &ua):
			add("the server's certificate is signed by a CA that neither the system nor -ca " + o.caFile + " trusts")
		case errors.Is(e, transport.ErrImplicitTLSPort) && !o.mx:
			add("the server expects TLS from the first byte (implicit TLS, usually port 465): try -tls implicit")
		case errors.As(e, &rh) && errors.Is(e, mailsec.ErrDowngrade) && !o.mx && o.tlsMode != "starttls":
			add("the server greets in plaintext, so it expects STARTTLS (usually port 587): try -tls starttls")
		case errors.As(e, &ne) && ne.Op == "greeting" && !o.mx && o.tlsMode != "implicit":
			add("the server sent no greeting; if it expects TLS from the first byte (implicit TLS), try -tls implicit")
		}
	}
	return out
}

// leafErrors returns the errors in err's tree that stand for one failure
// each: one per recipient and, for direct delivery, per MX host tried.
func leafErrors(err error) []error {
	var se *mailsec.SecurityError
	var ne *mailsec.NetworkError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se) && se == err, errors.As(err, &ne) && ne == err:
		return []error{err}
	}
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range m.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	if inner := errors.Unwrap(err); inner != nil {
		if sub := leafErrors(inner); len(sub) > 1 {
			return sub
		}
	}
	return []error{err}
}

// printProgress writes a line per recipient of the receipt (if any),
// with the notes of direct delivery.
func printProgress(w io.Writer, receipt *mailsec.Receipt) {
	if receipt == nil {
		return
	}
	for _, r := range receipt.Recipients {
		fmt.Fprintln(w, progressLine(r))
		// Direct delivery: every fallback taken on the way, noted
		// with the session, or with the failure when there was none.
		var notes []string
		if c := r.Connection; c != nil {
			notes = c.Notes
		} else if f := r.Failure; f != nil {
			notes = f.Notes
		}
		for _, n := range notes {
			fmt.Fprintln(w, printable("  note: "+n))
		}
	}
}

// loadRoots returns the system roots plus the certificates in the PEM
// file at path.
func loadRoots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("-ca: %v", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, usagef("-ca %s: no PEM certificate in the file", path)
	}
	return roots, nil
}

// progressLine describes the outcome for one recipient.
func progressLine(r mailsec.RecipientReceipt) string {
	if !r.Accepted {
		reason := "not accepted"
		if r.Err != nil {
			err := r.Err
			// The line names the recipient already.
			var re *mailsec.RecipientError
			if errors.As(err, &re) && re.Recipient == r.Address && re.Err != nil {
				err = re.Err
			}
			reason = strings.TrimPrefix(err.Error(), "mailsec: ")
			if errors.Is(err, transport.ErrNullMX) {
				_, domain, _ := strings.Cut(r.Address, "@")
				reason = domain + " accepts no mail (null MX, RFC 7505)"
			}
		}
		return printable("mailsec: " + r.Address + ": NOT delivered: " + reason)
	}
	var b strings.Builder
	b.WriteString("mailsec: " + r.Address + ": accepted")
	if c := r.Connection; c != nil {
		tlsVersion := c.TLSVersion
		if tlsVersion == "" {
			tlsVersion = "no TLS"
		}
		fmt.Fprintf(&b, " by %s (%s, %s)", c.Host, tlsVersion, c.Verification)
		if c.Policy != "" {
			fmt.Fprintf(&b, " under %s", c.Policy)
		}
	}
	if r.QueueID != "" {
		b.WriteString(" queue id " + r.QueueID)
	}
	switch p := r.Protection; {
	case p == nil:
	case p.Method == mailsec.MethodNotice:
		fmt.Fprintf(&b, ", a link-only notice instead of the message (%s)", p.Reason)
	case p.Method == mailsec.MethodNone:
		fmt.Fprintf(&b, ", NOT encrypted (%s)", p.Reason)
	default:
		what := "encrypted"
		if p.Signed {
			what = "signed and encrypted"
		}
		fmt.Fprintf(&b, ", %s with %s for %s", what, p.Method, p.Fingerprint)
	}
	return printable(b.String())
}

// errorLine formats an error from the library for standard error.
func errorLine(err error) string {
	s := err.Error()
	if !strings.HasPrefix(s, "mailsec: ") {
		s = "mailsec: " + s
	}
	return printable(s)
}

// addrList is a flag.Value for a comma-separated list of addresses; the
// flag may repeat and the lists add up.
type addrList []string

func (l *addrList) String() string { return strings.Join(*l, ",") }

func (l *addrList) Set(s string) error {
	items, err := splitAddrs(s)
	if err != nil {
		return err
	}
	*l = append(*l, items...)
	return nil
}

// splitAddrs splits a comma-separated address list and trims spaces. A
// comma inside a quoted string ("Doe, Jane" <jane@example.org>) or inside
// angle brackets does not split. Empty items are an error.
func splitAddrs(s string) ([]string, error) {
	var items []string
	quoted, escaped, angle := false, false, false
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			items = append(items, s[start:i])
			start = i + 1
		}
	}
	items = append(items, s[start:])
	for i, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			return nil, errors.New("empty address in the list")
		}
		items[i] = it
	}
	return items, nil
}

// fileList is a repeatable flag.Value collecting file names.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ",") }

func (l *fileList) Set(s string) error {
	if s == "" {
		return errors.New("empty file name")
	}
	*l = append(*l, s)
	return nil
}

// open opens every file for reading. It returns the files it opened even
// on error, for the caller to close.
func (l fileList) open() ([]*os.File, error) {
	var files []*os.File
	for _, name := range l {
		f, err := os.Open(name)
		if err != nil {
			return files, usagef("-attach: %v", err)
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil {
			return files, usagef("-attach: %v", err)
		}
		if fi.IsDir() {
			return files, usagef("-attach %s: is a directory", name)
		}
	}
	return files, nil
}

// closingTransport is a Transport the command closes when it ends.
type closingTransport interface {
	mailsec.Transport
	Close() error
}

// transport builds the submission or direct transport the flags ask for.
func (o *deliveryOptions) transport(e *env) (closingTransport, error) {
	var tc *tls.Config
	if o.caFile != "" {
		roots, err := loadRoots(o.caFile)
		if err != nil {
			return nil, err
		}
		tc = &tls.Config{RootCAs: roots}
	}
	if o.mx {
		r := newResolver(o.dns)
		d := &transport.Direct{Resolver: r, TLSConfig: tc, Port: o.mxPort, AllowPrivate: o.allowPriv}
		cache, err := o.policyCache(e)
		if err != nil {
			return nil, err
		}
		if cache != nil {
			d.MTASTS = &mtasts.Client{Resolver: r, TLSConfig: tc, AllowPrivate: o.allowPriv, Cache: cache}
		}
		if err := d.Validate(); err != nil {
			return nil, flagConfigError(err)
		}
		return o.signing(d, e.stderr)
	}
	t := &transport.Submission{Addr: o.server, TLSConfig: tc}
	if o.tlsMode == "none" {
		fmt.Fprintf(e.stderr, "mailsec: warning: -tls none: the message goes to %s without TLS, readable by anyone who can watch this machine's loopback traffic; for development servers only\n", printable(o.server))
	}
	switch o.tlsMode {
	case "implicit":
		t.Mode = transport.ImplicitTLS
	case "starttls", "none":
		t.Mode = transport.StartTLS
	default:
		t.Mode = transport.Auto
	}
	if o.user != "" {
		t.Auth = &transport.Auth{Username: o.user, Password: e.getenv(passwordEnv)}
	}
	if err := t.Validate(); err != nil {
		return nil, flagConfigError(err)
	}
	return o.signing(t, e.stderr)
}

// policyCache is the MTA-STS policy cache -mta-sts-cache names: a
// directory, by default under the user's cache directory, or nil for
// "none" (the transport's own cache in memory, for this run only). The
// directory is created (mode 0700) when missing; one that another user
// owns, or that its group or others may write to, is refused, as ssh
// refuses such a ~/.ssh: whoever can write there can plant a policy in
// mode none for any domain.
func (o *deliveryOptions) policyCache(e *env) (mtasts.Cache, error) {
	dir := o.stsCache
	switch dir {
	case "none":
		return nil, nil
	case "":
		base, err := userCacheDir(e.getenv)
		if err != nil {
			fmt.Fprintf(e.stderr, "mailsec: note: %v; MTA-STS policies are kept for this run only (-mta-sts-cache DIR keeps them)\n", err)
			return nil, nil
		}
		dir = filepath.Join(base, "mailsec", "mta-sts")
	default:
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			return nil, usagef("-mta-sts-cache %s: not a directory", dir)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if o.stsCache == "" {
			fmt.Fprintf(e.stderr, "mailsec: note: %v; MTA-STS policies are kept for this run only (-mta-sts-cache DIR keeps them)\n", err)
			return nil, nil
		}
		return nil, usagef("-mta-sts-cache %s: %v", dir, err)
	}
	if err := mtasts.DirCache(dir).Check(); err != nil {
		if errors.Is(err, mtasts.ErrUnsafeCache) {
			return nil, usagef("-mta-sts-cache %s: refused, since another user could plant MTA-STS policies there: %v; it must belong to you and be writable by you only: chmod go-w it if it is yours, else name another directory", dir, err)
		}
		return nil, usagef("-mta-sts-cache %s: %v", dir, err)
	}
	return boundedDirCache{mtasts.DirCache(dir), maxCachedPolicies}, nil
}

// userCacheDir is os.UserCacheDir, read through getenv: $XDG_CACHE_HOME,
// else $HOME/.cache (on Unix systems other than macOS), or macOS's and
// Windows's own places.
func userCacheDir(getenv func(string) string) (string, error) {
	switch runtime.GOOS {
	case "windows", "darwin", "ios", "plan9":
		return os.UserCacheDir()
	}
	if dir := getenv("XDG_CACHE_HOME"); dir != "" {
		if !filepath.IsAbs(dir) {
			return "", errors.New("$XDG_CACHE_HOME is not an absolute path")
		}
		return dir, nil
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".cache"), nil
	}
	return "", errors.New("neither $XDG_CACHE_HOME nor $HOME is set")
}

// flagConfigError rewrites the library's *mailsec.ConfigError about a
// field the flags set as a usage error that names the flag.
func flagConfigError(err error) error {
	var ce *mailsec.ConfigError
	if !errors.As(err, &ce) {
		return usagef("%s", strings.TrimPrefix(err.Error(), "mailsec: "))
	}
	flag := map[string]string{
		"Submission.Addr":       "-server",
		"Submission.Mode":       "-tls",
		"Submission.ServerName": "-server",
		"Submission.Auth":       "-user",
		"Auth.Username":         "-user",
		"Auth.Password":         "$" + passwordEnv,
		"Direct.Port":           "-mx-port",
		"Direct.Resolver":       "-dns",
		"Direct.TLSConfig":      "-ca",
	}[ce.Field]
	if flag == "" {
		return usagef("%s", strings.TrimPrefix(err.Error(), "mailsec: "))
	}
	msg := flag
	if ce.Value != "" && !strings.HasPrefix(flag, "$") {
		msg += " " + ce.Value
	}
	if ce.Reason != "" {
		msg += ": " + ce.Reason
	}
	if ce.Err != nil {
		msg += ": " + ce.Err.Error()
	}
	return usagef("%s", msg)
}

// newResolver is the resolver for -dns: the server given, or the
// system's.
func newResolver(server string) *dns.Client {
	r := &dns.Client{}
	if server != "" {
		r.Servers = []string{server}
	}
	return r
}
