package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/smallstep/pkcs7"

	"github.com/mailsec/mailsec/internal/syntax"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
	"github.com/mailsec/mailsec/smime/revocation"
)

// exitNoCheck: keys check could not check (interrupted, no system roots,
// a revocation status that could not be established).
const exitNoCheck = 3

// maxKeyFile bounds a file keys check reads.
const maxKeyFile = 16 << 20

const keysSynopsis = `usage: mailsec keys check FILE... [-within DURATION] [-address ADDR] [-ca FILE]
                        [-revocation [-allow-private]] [-json]
`

type keysOptions struct {
	within  string
	address string
	caFile  string
	json    bool
	revoc   bool
	private bool
}

func newKeysFlags(o *keysOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("mailsec keys check", flag.ContinueOnError)
	fs.StringVar(&o.within, "within", "30d", "report keys and certificates that expire within `DURATION` (\"30d\", \"36h\"; \"0\": only expired ones)")
	fs.StringVar(&o.address, "address", "", "check every key and certificate for `ADDR`, as sending to ADDR would (default: for each address it names)")
	fs.StringVar(&o.caFile, "ca", "", "PEM `FILE` of the roots S/MIME certificates must chain to (default: the system's)")
	fs.BoolVar(&o.revoc, "revocation", false, "ask the OCSP responders and CRL distribution points S/MIME certificates name whether they are revoked")
	fs.BoolVar(&o.private, "allow-private", false, "with -revocation: let OCSP and CRL fetches connect to loopback, private, link-local and other non-global addresses (refused by default; for test setups and in-house CAs)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on standard output")
	return fs
}

func keysUsage(w io.Writer) {
	fmt.Fprint(w, keysSynopsis, `
keys check reads OpenPGP public keys (armored or binary, any number per
file) and S/MIME certificates (PEM or DER, with the CA certificates of
their chains) and checks each key and end-entity certificate with the
checks sending makes (pgp.CheckKey, smime's CheckCertificate), so that a
key reported fine here is one mailsec send encrypts to. For each it prints
the fingerprint, the addresses it serves, when it expires, and its
problem: expired, revoked, weak algorithm, no encryption subkey, untrusted
chain, wrong address, or expiring within -within. A revocation is found in
an OpenPGP key itself. An S/MIME certificate is checked for revocation
only with -revocation: then the OCSP responder (AIA) and CRLs (CDP) of it
and of its intermediate CAs are asked, as a Sender with
smime.Options.Revocation asks them, failing closed: a certificate whose
status cannot be established (responder down, no answer that verifies) is
reported as "revocation unknown", never as fine. So is, as sending
refuses it, a certificate that names no responder and no CRL, or only
ones that are not fetched (ldap://, https://); its intermediate CAs that
name none are passed over.
Without -address each key is checked for each address of its user IDs, and
each certificate for each address of its rfc822Name SANs; it is fine for
the addresses it passes for. A key whose cipher preferences name no AES
cipher is fine, with a note: mailsec encrypts to it with AES-128
regardless.

Examples:
  mailsec keys check patient.asc
  mailsec keys check -within 60d -address ann@example.org ann.asc
  mailsec keys check -ca roots.pem -revocation clinicians/*.pem
  mailsec keys check -json -within 0 keys/*.asc certs/*.pem

Flags:
`)
	fs := newKeysFlags(&keysOptions{})
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Exit status:
  0  every key and certificate is fine
  1  some key or certificate has a problem (expired, revoked, weak,
     expiring within -within, untrusted...), or a file holds neither
  2  bad usage: no FILE, an unknown flag, a bad -within, a -ca file that
     cannot be used, -allow-private without -revocation, a FILE that
     cannot be opened or read
  3  a check could not run: interrupted, or no system roots to check
     S/MIME certificates against; or, with -revocation, the only problems
     are certificates whose revocation status could not be established,
     also for want of a responder or CRL that can be fetched (exit 1
     wins when any key or certificate has a definite problem)
`)
}

func runKeys(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		return reportUsage(e, "keys", usagef("no subcommand: check"))
	}
	switch args[0] {
	case "check":
		return runKeysCheck(ctx, e, args[1:])
	case "-h", "-help", "--help", "help":
		keysUsage(e.stdout)
		return exitOK
	}
	return reportUsage(e, "keys", usagef("unknown subcommand %q: check", args[0]))
}

// keyReport is one key or certificate as keys check reports it.
type keyReport struct {
	File        string     `json:"file"`
	Kind        string     `json:"kind"` // "openpgp" or "smime"
	Fingerprint string     `json:"fingerprint,omitempty"`
	Subject     string     `json:"subject,omitempty"` // S/MIME only
	Addresses   []string   `json:"addresses"`
	Expires     *time.Time `json:"expires,omitempty"` // absent: never, or unknown
	OK          bool       `json:"ok"`
	// Problem is a short code: expired, revoked, weak-algorithm,
	// no-encryption-subkey, untrusted, wrong-address, expires-soon,
	// revocation-unknown, unreadable...; Reason says it in words.
	Problem string   `json:"problem,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// errNoCheck marks a failure that kept a check from running.
type errNoCheck struct{ err error }

func (e errNoCheck) Error() string { return e.err.Error() }

func runKeysCheck(ctx context.Context, e *env, args []string) int {
	const name = "keys check"
	var o keysOptions
	fs := newKeysFlags(&o)
	// FILEs and flags may come in any order.
	var files []string
	for {
		if code, ok := parseFlagsArgs(e, name, fs, keysUsage, args, len(args)); !ok {
			return code
		}
		rest := fs.Args()
		i := slices.IndexFunc(rest, func(a string) bool { return strings.HasPrefix(a, "-") && a != "-" })
		if i < 0 {
			files = append(files, rest...)
			break
		}
		files = append(files, rest[:i]...)
		args = rest[i:]
	}
	if len(files) == 0 {
		return reportUsage(e, name, usagef("no FILE to check"))
	}
	window, err := parseWithin(o.within)
	if err != nil {
		return reportUsage(e, name, usagef("-within: %v", err))
	}
	if o.private && !o.revoc {
		return reportUsage(e, name, usagef("-allow-private needs -revocation"))
	}
	if o.address != "" {
		if a, err := mail.ParseAddress(o.address); err != nil || a.Address != o.address {
			return reportUsage(e, name, usagef("-address %q: want a bare address, local@domain", o.address))
		}
	}
	// A zero window turns the warnings off; the libraries read zero as
	// their default and a negative value as none.
	warn := window
	if warn == 0 {
		warn = -1
	}
	c := &keyChecker{address: o.address, window: window, now: time.Now()}
	c.pgpOpts = &pgp.Options{ExpiryWarning: warn, Now: func() time.Time { return c.now }}
	sopts := &smime.Options{ExpiryWarning: warn, Now: func() time.Time { return c.now }}
	if o.caFile != "" {
		roots, err := smime.LoadRoots(o.caFile)
		if err != nil {
			return reportUsage(e, name, usagef("-ca: %v", err))
		}
		sopts.Roots = roots
	}
	if o.revoc {
		rc, err := revocation.New(&revocation.Options{AllowPrivate: o.private})
		if err != nil {
			fmt.Fprintf(e.stderr, "mailsec %s: -revocation: %v\n", name, err)
			return exitNoCheck
		}
		sopts.Revocation = rc
	}
	c.smimeOpts = sopts
	// Every file is read before anything is checked, so that a usage
	// error comes before any report.
	data := make([][]byte, len(files))
	for i, f := range files {
		data[i], err = readKeyFile(f)
		if err != nil {
			return reportUsage(e, name, err)
		}
	}
	var reports []keyReport
	for i, f := range files {
		rs, err := c.checkFile(ctx, f, data[i])
		if err != nil {
			fmt.Fprintf(e.stderr, "mailsec %s: %s: %v\n", name, f, err)
			return exitNoCheck
		}
		reports = append(reports, rs...)
	}
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if reports == nil {
			reports = []keyReport{}
		}
		if err := enc.Encode(reports); err != nil {
			fmt.Fprintf(e.stderr, "mailsec %s: %v\n", name, err)
			return exitNoCheck
		}
	} else {
		writeKeyReports(e.stdout, reports, c.now)
	}
	bad, unknown := 0, 0
	for _, r := range reports {
		switch {
		case r.Problem == problemRevocationUnknown:
			unknown++
		case !r.OK:
			bad++
		}
	}
	switch {
	case bad > 0:
		fmt.Fprintf(e.stderr, "mailsec %s: %d of %d keys and certificates have a problem\n", name, bad+unknown, len(reports))
		return exitFail
	case unknown > 0:
		fmt.Fprintf(e.stderr, "mailsec %s: could not check the revocation status of %d of %d certificates\n", name, unknown, len(reports))
		return exitNoCheck
	}
	return exitOK
}

// parseWithin reads a duration in days ("30d") or as time.ParseDuration
// does ("36h"); "0" is zero.
func parseWithin(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 100*365 {
			return 0, fmt.Errorf("%q: want a number of days (\"30d\") or a duration (\"36h\")", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q: want a number of days (\"30d\") or a duration (\"36h\")", s)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

func readKeyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d MiB", name, maxKeyFile>>20)
	}
	return data, nil
}

type keyChecker struct {
	address   string
	window    time.Duration // -within; zero: no warning
	now       time.Time
	pgpOpts   *pgp.Options
	smimeOpts *smime.Options
	smimeProt *smime.Protector // made at the first certificate
}

// checkFile reports the keys or certificates in one file's data.
func (c *keyChecker) checkFile(ctx context.Context, file string, data []byte) ([]keyReport, error) {
	isPGP := bytes.Contains(data, []byte("-----BEGIN PGP"))
	if !isPGP && !bytes.Contains(data, []byte("-----BEGIN ")) {
		// Binary: OpenPGP packets, or DER.
		if _, err := x509.ParseCertificates(data); err != nil {
			isPGP = true
		}
	}
	if isPGP {
		kr, err := pgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			if binaryCMS(data) {
				return c.checkCerts(ctx, file, data)
			}
			return []keyReport{{File: file, Kind: "openpgp", Addresses: []string{}, Problem: "unreadable",
				Reason: "neither OpenPGP keys nor certificates: " + err.Error()}}, nil
		}
		var out []keyReport
		for _, ent := range kr.Entities() {
			r, err := c.checkPGP(ctx, file, ent)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return c.checkCerts(ctx, file, data)
}

// binaryCMS reports whether data may be a DER PKCS#7 bundle (an ASN.1
// SEQUENCE), which CheckCertificate reads.
func binaryCMS(data []byte) bool { return len(data) > 0 && data[0] == 0x30 }

// checkPGP checks one key for -address, or for each address of its user
// IDs, with pgp.CheckKey: the verdict sending would give.
func (c *keyChecker) checkPGP(ctx context.Context, file string, ent *openpgp.Entity) (keyReport, error) {
	r := keyReport{File: file, Kind: "openpgp", Fingerprint: pgp.Fingerprint(ent), Addresses: []string{}}
	if ent.PrivateKey != nil {
		r.Notes = append(r.Notes, "the file holds the secret key too: give recipients' public keys only to mailsec send -pgp-keys")
	}
	var pub bytes.Buffer
	if err := ent.Serialize(&pub); err != nil {
		r.Problem, r.Reason = "unreadable", "cannot re-encode the key: "+err.Error()
		return r, nil
	}
	addrs := []string{c.address}
	if c.address == "" {
		addrs = uidAddresses(ent)
	}
	if len(addrs) == 0 {
		r.Problem, r.Reason = "no-address", "no user ID with an e-mail address: no mail can be encrypted to it"
		return r, nil
	}
	var refusal *pgp.KeyError
	for _, a := range addrs {
		ck, err := pgp.CheckKey(ctx, bytes.NewReader(pub.Bytes()), a, c.pgpOpts)
		var ke *pgp.KeyError
		switch {
		case err == nil:
			r.Addresses = append(r.Addresses, a)
			if !ck.Expires.IsZero() && (r.Expires == nil || ck.Expires.After(*r.Expires)) {
				exp := ck.Expires
				r.Expires = &exp
			}
			for _, w := range ck.Warnings {
				if !slices.Contains(r.Notes, w) {
					r.Notes = append(r.Notes, w)
				}
			}
		case errors.As(err, &ke):
			// The key's own verdict (expired, weak...) is the same for
			// every address; a user ID revoked for one address is not.
			if refusal == nil || (refusal.Code == pgp.KeyUserIDRevoked || refusal.Code == pgp.KeyWrongAddress) {
				refusal = ke
			}
			if ke.Code == pgp.KeyUserIDRevoked && c.address == "" {
				r.Notes = append(r.Notes, "user ID for "+a+" is revoked or expired")
			}
		default:
			return r, errNoCheck{err}
		}
	}
	if len(r.Addresses) == 0 {
		r.Problem, r.Reason = string(refusal.Code), refusal.Reason
		// The addresses the key is for, which -address may not be.
		r.Addresses = uidAddresses(ent)
		if refusal.Code == pgp.KeyExpired {
			if exp := latestExpiry(ent); !exp.IsZero() {
				r.Expires = &exp
			}
		}
	}
	c.expiresSoon(&r)
	r.OK = r.Problem == ""
	return r, nil
}

// uidAddresses lists the e-mail addresses of ent's user IDs, each once.
func uidAddresses(ent *openpgp.Entity) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, id := range ent.Identities {
		if id.UserId == nil || id.UserId.Email == "" {
			continue
		}
		k := syntax.FoldAddress(id.UserId.Email)
		if !seen[k] {
			seen[k] = true
			out = append(out, id.UserId.Email)
		}
	}
	slices.Sort(out)
	return out
}

// latestExpiry is when an expired primary key expired, as its newest
// self-signature says.
func latestExpiry(ent *openpgp.Entity) time.Time {
	sig, _ := ent.PrimarySelfSignature()
	if sig == nil || sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return time.Time{}
	}
	return ent.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
}

// expiresSoon makes a usable key or certificate that expires within the
// window a problem, with the same arithmetic as the libraries' notes
// (which also carry other warnings, such as weak cipher preferences).
func (c *keyChecker) expiresSoon(r *keyReport) {
	if r.Problem != "" || r.Expires == nil || c.window <= 0 {
		return
	}
	if left := r.Expires.Sub(c.now); left <= c.window {
		r.Problem = "expires-soon"
		r.Reason = fmt.Sprintf("expires %s, within %s", r.Expires.UTC().Format(time.DateOnly), formatWindow(c.window))
	}
}

// formatWindow writes a -within duration back as days where it is whole
// days.
func formatWindow(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// checkCerts checks each end-entity certificate in data, with the CA
// certificates of the file as its chain, through CheckCertificate: for
// -address, or for each address the certificate names.
func (c *keyChecker) checkCerts(ctx context.Context, file string, data []byte) ([]keyReport, error) {
	if c.smimeProt == nil {
		p, err := smime.New(smime.NewCertStore(), c.smimeOpts)
		if err != nil {
			return nil, errNoCheck{err}
		}
		c.smimeProt = p
	}
	var leaves, cas []*x509.Certificate
	for _, ct := range splitCertificates(data) {
		if ct.BasicConstraintsValid && ct.IsCA {
			cas = append(cas, ct)
		} else {
			leaves = append(leaves, ct)
		}
	}
	if len(leaves) == 0 {
		r := keyReport{File: file, Kind: "smime", Addresses: []string{}, Problem: "unreadable",
			Reason: "neither OpenPGP keys nor certificates"}
		if len(cas) > 0 {
			r.Problem, r.Reason = "unusable", "only CA certificates, no end-entity certificate"
		}
		return []keyReport{r}, nil
	}
	var out []keyReport
	for _, leaf := range leaves {
		r, err := c.checkCert(ctx, file, pemChain(append([]*x509.Certificate{leaf}, cas...)), leaf)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func pemChain(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, ct := range certs {
		// Writing to a bytes.Buffer does not fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: ct.Raw})
	}
	return buf.Bytes()
}

// checkCert checks one end-entity certificate (data: it and the file's
// CA certificates) for -address, or for each address it names.
func (c *keyChecker) checkCert(ctx context.Context, file string, data []byte, leaf *x509.Certificate) (keyReport, error) {
	sum := sha256.Sum256(leaf.Raw)
	r := keyReport{File: file, Kind: "smime", Fingerprint: hex.EncodeToString(sum[:]), Subject: leaf.Subject.String(),
		Addresses: []string{}}
	addrs := []string{c.address}
	if c.address == "" {
		addrs = leaf.EmailAddresses
	}
	if len(addrs) == 0 {
		r.Problem, r.Reason = "no-address", "no rfc822Name SAN: no mail can be encrypted to it"
		return r, nil
	}
	var refusal error
	for _, a := range addrs {
		chk, err := c.smimeProt.CheckCertificate(ctx, data, a)
		if err != nil {
			if refusal == nil || errors.Is(refusal, smime.WrongAddress) {
				refusal = err
			}
			continue
		}
		r.Addresses = append(r.Addresses, a)
		if r.Expires == nil || chk.Expires.After(*r.Expires) {
			exp := chk.Expires
			r.Expires = &exp
		}
		for _, n := range chk.Notes {
			if !slices.Contains(r.Notes, n) {
				r.Notes = append(r.Notes, n)
			}
		}
	}
	if len(r.Addresses) == 0 {
		if err := c.certVerdict(&r, refusal); err != nil {
			return r, err
		}
		r.Addresses = append(r.Addresses, leaf.EmailAddresses...)
		exp := leaf.NotAfter
		r.Expires = &exp
	}
	c.expiresSoon(&r)
	r.OK = r.Problem == ""
	return r, nil
}

// certVerdict records CheckCertificate's refusal in r, or returns the
// error that kept it from checking.
func (c *keyChecker) certVerdict(r *keyReport, err error) error {
	var ce *smime.CertificateError
	if !errors.As(err, &ce) {
		return errNoCheck{err}
	}
	r.Problem, r.Reason = certProblem(ce.Problem), ce.Reason
	if ce.Err != nil {
		r.Reason += ": " + ce.Err.Error()
	}
	return nil
}

// problemRevocationUnknown is the Problem of a certificate whose
// revocation status -revocation could not establish.
const problemRevocationUnknown = "revocation-unknown"

// certProblem names an S/MIME problem with the codes OpenPGP keys use
// where they mean the same.
func certProblem(p smime.Problem) string {
	switch p {
	case smime.Malformed:
		return "unreadable"
	case smime.WrongAddress:
		return "wrong-address"
	case smime.WeakKey:
		return "weak-algorithm"
	case smime.UnsupportedKey:
		return "unsupported-key"
	case smime.NotYetValid:
		return "not-yet-valid"
	case smime.Expired:
		return "expired"
	case smime.KeyUsage:
		return "key-usage"
	case smime.Untrusted:
		return "untrusted"
	case smime.Revoked:
		return "revoked"
	case smime.RevocationUnknown:
		return problemRevocationUnknown
	}
	return "unusable"
}

// splitCertificates returns the certificates of PEM CERTIFICATE and
// PKCS7 blocks, or of DER certificates or a DER PKCS#7 bundle; nil when
// there are none.
func splitCertificates(data []byte) []*x509.Certificate {
	if !bytes.Contains(data, []byte("-----BEGIN ")) {
		if certs, err := x509.ParseCertificates(data); err == nil {
			return certs
		}
		return pkcs7Certificates(data)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs
		}
		switch b.Type {
		case "CERTIFICATE":
			if ct, err := x509.ParseCertificate(b.Bytes); err == nil {
				certs = append(certs, ct)
			}
		case "PKCS7", "CMS":
			certs = append(certs, pkcs7Certificates(b.Bytes)...)
		}
	}
}

// pkcs7Certificates returns the certificates of a PKCS#7 bundle (.p7c),
// or nil.
func pkcs7Certificates(der []byte) (certs []*x509.Certificate) {
	defer func() {
		// The parser panics on some malformed input.
		if recover() != nil {
			certs = nil
		}
	}()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil
	}
	return p7.Certificates
}

// writeKeyReports prints one block per key or certificate.
func writeKeyReports(w io.Writer, reports []keyReport, now time.Time) {
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		what := "OpenPGP key"
		if r.Kind == "smime" {
			what = "S/MIME certificate"
		}
		verdict := "ok"
		if !r.OK {
			verdict = strings.ToUpper(strings.ReplaceAll(r.Problem, "-", " "))
		}
		fmt.Fprintf(w, "%s: %s %s: %s\n", r.File, what, r.Fingerprint, verdict)
		if r.Subject != "" {
			fmt.Fprintf(w, "  subject:   %s\n", printable(r.Subject))
		}
		addrs := "(none)"
		if len(r.Addresses) > 0 {
			addrs = strings.Join(r.Addresses, ", ")
		}
		fmt.Fprintf(w, "  addresses: %s\n", printable(addrs))
		switch {
		case r.Expires == nil:
			fmt.Fprintf(w, "  expires:   never\n")
		case r.Expires.Before(now):
			fmt.Fprintf(w, "  expired:   %s\n", r.Expires.UTC().Format(time.DateOnly))
		default:
			fmt.Fprintf(w, "  expires:   %s (in %d days)\n", r.Expires.UTC().Format(time.DateOnly), int(r.Expires.Sub(now).Hours()/24))
		}
		if r.Reason != "" {
			fmt.Fprintf(w, "  problem:   %s\n", printable(r.Reason))
		}
		for _, n := range r.Notes {
			if n != r.Reason {
				fmt.Fprintf(w, "  note:      %s\n", printable(n))
			}
		}
	}
}
