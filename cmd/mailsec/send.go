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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/outbox"
	"github.com/mailsec/mailsec/transport"
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
	dkim      dkimList
	protect   protectOptions
}

func (o *deliveryOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.server, "server", "", "submission server `HOST:PORT` (required unless -mx)")
	fs.BoolVar(&o.mx, "mx", false, "deliver directly to each recipient domain's MX hosts (DANE, MTA-STS, REQUIRETLS), without -server")
	fs.StringVar(&o.dns, "dns", "", "with -mx: the validating resolver, `HOST:PORT` (default: /etc/resolv.conf's; its DNSSEC answers count only from loopback)")
	fs.IntVar(&o.mxPort, "mx-port", 0, "with -mx: the `PORT` MX hosts listen on (default 25; for test setups)")
	fs.BoolVar(&o.allowPriv, "allow-private", false, "with -mx: connect to MX and MTA-STS policy hosts at loopback, private, link-local and other non-global addresses (refused by default; for test setups and internal networks)")
	fs.StringVar(&o.level, "level", "", "with -mx: the security `LEVEL` for every recipient domain: verified (default), dane-only, dane, verify, secure, encrypt, may, none")
	fs.StringVar(&o.tlsMode, "tls", "", "how TLS starts, `implicit|starttls` (default implicit on port 465, starttls otherwise)")
	fs.StringVar(&o.caFile, "ca", "", "PEM `FILE` of root certificates to trust in addition to the system's")
	fs.StringVar(&o.user, "user", "", "authenticate as `NAME`; the password is read from $"+passwordEnv)
	fs.Var(&o.dkim, "dkim", "sign with DKIM, with the PEM private key in KEYFILE, mail whose From domain is DOMAIN, `DOMAIN:SELECTOR:KEYFILE` (repeatable: an rsa and an ed25519 key sign each message twice); mail from another domain is refused")
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
	case !o.mx && (o.dns != "" || o.mxPort != 0 || o.level != "" || o.allowPriv):
		return usagef("-dns, -mx-port, -level and -allow-private go with -mx")
	case o.mx && (o.tlsMode != "" || o.user != ""):
		return usagef("-tls and -user are for submission (-server), not -mx")
	}
	switch o.tlsMode {
	case "", "implicit", "starttls":
	default:
		return usagef("-tls %q: must be implicit or starttls", o.tlsMode)
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
	return o.protect.check()
}

// senderOptions reads the key and certificate files the protection flags
// name and returns the Sender's options: its Policy, Protectors and
// Notice.
func (o *deliveryOptions) senderOptions(getenv func(string) string) (*mailsec.Options, error) {
	protectors, err := o.protect.protectors(getenv)
	if err != nil {
		return nil, err
	}
	policy := o.protect.policy()
	if o.level != "" {
		l, _ := mailsec.ParseSecurityLevel(o.level)
		policy = mailsec.WithSecurity(policy, mailsec.Security{Level: l})
	}
	return &mailsec.Options{Policy: policy, Protectors: protectors, Notice: o.protect.notice()}, nil
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
	fs.StringVar(&o.subject, "subject", "", "the subject `TEXT` (required, may be empty)")
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
	case !o.set["subject"]:
		return usagef("-subject is required")
	case len(o.to)+len(o.cc)+len(o.bcc) == 0:
		return usagef("at least one recipient is required (-to, -cc or -bcc)")
	}
	if o.timeout <= 0 {
		return usagef("-timeout must be positive")
	}
	if o.htmlFile == "-" {
		return usagef("-html reads a file; only -body can read standard input")
	}
	return nil
}

func newSendFlags(o *sendOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("mailsec send", flag.ContinueOnError)
	o.register(fs)
	return fs
}

const sendSynopsis = `usage: mailsec send {-server HOST:PORT [-tls implicit|starttls] [-user NAME] |
                   -mx [-dns HOST:PORT] [-level LEVEL] [-mx-port PORT] [-allow-private]} [-ca FILE]
           -from ADDR -to ADDR[,ADDR...] [-cc ADDR,...] [-bcc ADDR,...] -subject TEXT
           [-body FILE|-] [-html FILE] [-attach FILE]... [-requiretls] [-timeout D] [-json]
           [-pgp-keys FILE [-pgp-sign FILE]] [-smime-certs FILE [-smime-roots FILE]
            [-smime-sign-cert FILE -smime-sign-key FILE]] [-outer-subject TEXT]
           [-notice-url URL | -prefer-protection] [-dkim DOMAIN:SELECTOR:KEYFILE]...
       mailsec send -queue DB -from ADDR -to ADDR[,ADDR...] ... -subject TEXT [the message flags above]
`

func sendBrief(w io.Writer) {
	fmt.Fprint(w, sendSynopsis, "\nFlags:\n")
	fs := newSendFlags(&sendOptions{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func sendUsage(w io.Writer) {
	fmt.Fprint(w, sendSynopsis, `
Send submits one message to a submission server (Postfix, an email provider's
relay) with mandatory TLS: implicit TLS on port 465, STARTTLS on any other
port, and the certificate verified for the host in -server. A server that does
not offer STARTTLS, or whose certificate does not verify, receives nothing.
Bcc recipients each get a delivery of their own and appear in no header.

With -mx instead of -server, the message goes straight to each recipient
domain's MX hosts, looked up through -dns (a validating resolver; DNSSEC
counts only from one on loopback). By default a host must be authenticated:
by DANE when its TLSA records are DNSSEC-signed and usable, else by the
domain's MTA-STS policy when it enforces, else by a certificate valid for the
MX host name; a host that meets none gets nothing. -level lowers or changes
that for every recipient domain (Postfix's names: dane-only, dane, verify,
secure, encrypt, may, none) and the receipt records every fallback taken.
The MTA-STS policy host is looked up through -dns as well, and its
certificate is checked against the same roots as the MX hosts' (-ca). An MX
or policy host at a loopback, private, link-local or other non-global address
is not connected to (a recipient domain's DNS must not point mail at this
machine's own network) unless -allow-private is given; at most 5 addresses
and 2 sessions are tried per recipient domain.

A line per recipient on standard error says whether the server accepted the
message, and over which TLS, or why not. Standard output stays empty unless
-json is given. A comma inside a quoted display name or <...> does not split
a recipient list.

With -pgp-keys or -smime-certs the message is encrypted end to end (PGP/MIME
or S/MIME; with both, PGP where the recipient has a usable OpenPGP key, else
S/MIME) for each recipient's key or certificate, and every recipient must
have a usable one: a recipient whose key is missing, expired, revoked, weak or
made out to another address receives nothing, and the error says why. With
-notice-url such recipients get a short notice with that link instead; with
-prefer-protection they get the message unencrypted, over verified TLS, and
the progress line says NOT encrypted. The real subject travels inside the
encryption; outside it reads "..." (or -outer-subject). -pgp-sign and
-smime-sign-cert/-smime-sign-key also sign it.

With -queue DB the message is queued in an outbox (a SQLite file, or a
postgres:// URL) instead of sent, sealed with the key in `+outboxKeyEnv+`, and
its ID printed on standard output (-json: its status); "mailsec queue run"
delivers it, with the transport and protection flags given there, which
-queue therefore refuses.

Flags:
`)
	fs := newSendFlags(&sendOptions{})
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Environment:
  `+passwordEnv+`  the password for -user, required with it (there is no
                    flag for it, and it is never printed)
  `+pgpPassphraseEnv+`
                    the passphrase of the -pgp-sign key, if it has one
  `+outboxKeyEnv+`
                    with -queue: the outbox's key (see 'mailsec help queue')

Exit status:
  0  the server accepted the message for every recipient (with -queue: the
     message is queued)
  1  some recipient was not accepted (refused, no secure connection,
     authentication failed, time-out, interrupt), or the library refused the
     message as invalid before sending anything (a malformed address, subject
     or attachment name); the error on standard error says why
  2  bad usage: unknown flag, stray argument, missing -server, -from,
     -subject or recipients, an empty item in a recipient list, -server
     without a port, a bad -tls value, -user without `+passwordEnv+`,
     -notice-url that is not https, a key, certificate or other file that
     cannot be read or parsed (a -pgp-sign key whose passphrase is wrong
     included)
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
		if opts, err = o.senderOptions(e.getenv); err != nil {
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
	if receipt != nil {
		if o.json {
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
	}
	if err != nil {
		fmt.Fprintln(e.stderr, errorLine(err))
		return exitFail
	}
	if receipt == nil || len(receipt.Failed()) > 0 {
		// Send promises an error whenever a recipient failed; do not trust
		// a success that left someone out.
		fmt.Fprintln(e.stderr, "mailsec: not every recipient was accepted")
		return exitFail
	}
	return exitOK
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
		d := &transport.Direct{Resolver: newResolver(o.dns), TLSConfig: tc, Port: o.mxPort, AllowPrivate: o.allowPriv}
		if err := d.Validate(); err != nil {
			return nil, usagef("%v", err)
		}
		return o.signing(d)
	}
	t := &transport.Submission{Addr: o.server, TLSConfig: tc}
	switch o.tlsMode {
	case "implicit":
		t.Mode = transport.ImplicitTLS
	case "starttls":
		t.Mode = transport.StartTLS
	default:
		t.Mode = transport.Auto
	}
	if o.user != "" {
		t.Auth = &transport.Auth{Username: o.user, Password: e.getenv(passwordEnv)}
	}
	if err := t.Validate(); err != nil {
		return nil, usagef("%v", err)
	}
	return o.signing(t)
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
