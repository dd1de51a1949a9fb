package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/dns"
	"github.com/mailsec/mailsec/internal/typednil"
)

// Errors a *RecordError matches with errors.Is, by kind.
var (
	// ErrNoRecord: the domain publishes no TLSRPT record (no TXT record
	// at _smtp._tls.<domain> starts with "v=TLSRPTv1").
	ErrNoRecord = errors.New("tlsrpt: no TLSRPT record")
	// ErrMultipleRecords: more than one TXT record starts with
	// "v=TLSRPTv1"; RFC 8460 §3 says the domain then does not take part.
	ErrMultipleRecords = errors.New("tlsrpt: more than one TLSRPT record")
	// ErrSyntax: the record does not follow the grammar of RFC 8460 §3.
	ErrSyntax = errors.New("tlsrpt: malformed TLSRPT record")
	// ErrNoUsableURI: the record names no mailto: or https: URI this
	// package can deliver to.
	ErrNoUsableURI = errors.New("tlsrpt: no usable rua URI")
	// ErrLookup: the DNS lookup failed (the wrapped *dns.Error
	// says how, and whether it is temporary).
	ErrLookup = errors.New("tlsrpt: DNS lookup failed")
)

// RecordError reports why a domain's TLSRPT record could not be found or
// used.
type RecordError struct {
	// Domain is the policy domain; empty from ParseRecord.
	Domain string
	// Record is the TXT record at fault, if any.
	Record string
	// Kind is ErrNoRecord, ErrMultipleRecords, ErrSyntax, ErrNoUsableURI
	// or ErrLookup.
	Kind   error
	Reason string
	// Err is the underlying error, a *dns.Error for lookups.
	Err error
}

func (e *RecordError) Error() string {
	s := e.Kind.Error()
	if e.Domain != "" {
		s += " for " + e.Domain
	}
	if e.Record != "" {
		r := e.Record
		if len(r) > 200 {
			r = r[:200] + "..."
		}
		s += " (" + strconv.Quote(r) + ")"
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is matches the error's Kind.
func (e *RecordError) Is(target error) bool { return target == e.Kind }

func (e *RecordError) Unwrap() error { return e.Err }

// Temporary reports whether a later lookup may find a usable record: true
// only when the DNS lookup failed temporarily.
func (e *RecordError) Temporary() bool { return e.Err != nil && mailsec.IsTemporary(e.Err) }

// Extension is a field of a TLSRPT record other than "v" and "rua".
type Extension struct {
	Name, Value string
}

// Record is a parsed TLSRPT record.
type Record struct {
	// RUA holds the usable reporting URIs, mailto: and https:, in the
	// order of the record. Every rua field counts.
	RUA []*url.URL
	// Ignored holds the URIs of other schemes, and mailto: or https: URIs
	// that name no single address or host, as written in the record.
	Ignored []string
	// Extensions are the other fields, in order.
	Extensions []Extension
}

// Policy is a domain's reporting policy, as LookupPolicy found it.
type Policy struct {
	// Domain is the policy domain, lower case, without the final dot.
	Domain string
	// TXT is the record as published.
	TXT string
	Record
}

// maxRecord bounds the record ParseRecord accepts: far above any real
// one (a TXT record of 16 full character-strings is 4 KB).
const maxRecord = 16 << 10

// ParseRecord parses a TLSRPT TXT record strictly by the grammar of RFC
// 8460 §3 and keeps its mailto: and https: URIs. It fails with a
// *RecordError matching ErrSyntax when the record is malformed and
// ErrNoUsableURI when it names no URI this package can deliver to.
func ParseRecord(txt string) (*Record, error) {
	fail := func(kind error, reason string) (*Record, error) {
		return nil, &RecordError{Record: txt, Kind: kind, Reason: reason}
	}
	if len(txt) > maxRecord {
		return fail(ErrSyntax, "longer than "+strconv.Itoa(maxRecord)+" octets")
	}
	// tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
	// tlsrpt-version = %s"v=TLSRPTv1"
	rest, ok := strings.CutPrefix(txt, "v=TLSRPTv1")
	if !ok {
		return fail(ErrSyntax, `does not start with "v=TLSRPTv1"`)
	}
	rec := &Record{}
	fields := 0
	for {
		var delim bool
		rest, delim = fieldDelim(rest)
		if !delim {
			if rest != "" {
				return fail(ErrSyntax, "expected ';' at offset "+strconv.Itoa(len(txt)-len(rest)))
			}
			break
		}
		if rest == "" {
			break // the optional final field-delim
		}
		var err string
		rest, err = rec.field(rest)
		if err != "" {
			return fail(ErrSyntax, err+" at offset "+strconv.Itoa(len(txt)-len(rest)))
		}
		fields++
	}
	if fields == 0 {
		return fail(ErrSyntax, "no fields after the version")
	}
	if len(rec.RUA) == 0 {
		if len(rec.Ignored) == 0 {
			return fail(ErrNoUsableURI, "no rua field")
		}
		return fail(ErrNoUsableURI, "no mailto: or https: URI among "+strings.Join(rec.Ignored, ", "))
	}
	return rec, nil
}

// fieldDelim consumes field-delim = *WSP ";" *WSP.
func fieldDelim(s string) (string, bool) {
	t := strings.TrimLeft(s, " \t")
	if !strings.HasPrefix(t, ";") {
		return s, false
	}
	return strings.TrimLeft(t[1:], " \t"), true
}

// field consumes one tlsrpt-field (a rua or an extension), returning the
// rest and, on failure, a reason.
func (rec *Record) field(s string) (string, string) {
	// tlsrpt-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
	n := 0
	for n < len(s) && n < 33 && isExtNameChar(s[n], n == 0) {
		n++
	}
	if n == 0 {
		return s, "expected a field name"
	}
	if n == 33 {
		return s, "field name longer than 32 characters"
	}
	name := s[:n]
	rest, ok := strings.CutPrefix(s[n:], "=")
	if !ok {
		return s[n:], "expected '=' after " + strconv.Quote(name)
	}
	if name == "rua" {
		// tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
		for {
			uri := rest[:uriEnd(rest)]
			if uri == "" {
				return rest, "expected a URI"
			}
			if reason := rec.addURI(uri); reason != "" {
				return rest, reason
			}
			rest = rest[len(uri):]
			t := strings.TrimLeft(rest, " \t")
			if !strings.HasPrefix(t, ",") {
				return rest, ""
			}
			rest = strings.TrimLeft(t[1:], " \t")
		}
	}
	// tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
	m := 0
	for m < len(rest) && isExtValueChar(rest[m]) {
		m++
	}
	if m == 0 {
		return rest, "expected a value for " + strconv.Quote(name)
	}
	rec.Extensions = append(rec.Extensions, Extension{Name: name, Value: rest[:m]})
	return rest[m:], ""
}

func isExtNameChar(c byte, first bool) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return !first && (c == '_' || c == '-' || c == '.')
}

func isExtValueChar(c byte) bool {
	return 0x21 <= c && c <= 0x7e && c != ';' && c != '='
}

// uriEnd finds where a tlsrpt-uri ends: at a comma, which the RFC says
// must be percent-encoded inside a URI, at a semicolon, at white space or
// at the end.
func uriEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ',', c == ';', c == ' ', c == '\t':
			return i
		}
	}
	return len(s)
}

// addURI checks one URI of a rua field and files it under RUA or Ignored;
// it returns a reason when the URI is not a URI at all.
func (rec *Record) addURI(s string) string {
	for i := 0; i < len(s); i++ {
		// URI characters (RFC 3986 §2): printable ASCII except these.
		if c := s[i]; c <= 0x20 || c >= 0x7f || strings.IndexByte(`"<>\^`+"`{|}!", c) >= 0 {
			return "character " + strconv.QuoteRune(rune(c)) + " is not allowed in a URI"
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "malformed URI " + strconv.Quote(s)
	}
	switch strings.ToLower(u.Scheme) {
	case "mailto":
		if _, ok := mailtoAddress(u); ok {
			rec.RUA = append(rec.RUA, u)
			return ""
		}
	case "https":
		if u.Host != "" && u.Hostname() != "" {
			rec.RUA = append(rec.RUA, u)
			return ""
		}
	}
	rec.Ignored = append(rec.Ignored, s)
	return ""
}

// mailtoAddress returns the one address a mailto: URI names (RFC 6068),
// percent-decoded and checked as an ASCII addr-spec.
func mailtoAddress(u *url.URL) (string, bool) {
	raw := u.Opaque
	if raw == "" {
		raw = u.Path
	}
	addr, err := url.PathUnescape(raw)
	if err != nil || strings.Contains(addr, ",") {
		return "", false
	}
	if _, reason := splitAddrSpec(addr); reason != "" {
		return "", false
	}
	return addr, true
}

// LookupPolicy finds the TLSRPT policy of domain (RFC 8460 §3): the one
// TXT record at _smtp._tls.<domain> that starts with "v=TLSRPTv1". TXT
// records that do not are discarded; when none or more than one remain, the
// domain does not take part in TLS reporting. It fails with a *RecordError
// that names the domain and matches ErrNoRecord, ErrMultipleRecords,
// ErrSyntax, ErrNoUsableURI or ErrLookup, and with a
// *mailsec.ConfigError when r is nil or a nil pointer.
func LookupPolicy(ctx context.Context, r dns.Resolver, domain string) (*Policy, error) {
	if typednil.Is(r) {
		return nil, &mailsec.ConfigError{Field: "resolver", Value: fmt.Sprintf("%T", r), Reason: "nil: a Resolver is required"}
	}
	d, ok := normalizeDomain(domain)
	if !ok {
		return nil, &RecordError{Domain: domain, Kind: ErrNoRecord, Reason: "not a domain name"}
	}
	ans, err := r.LookupTXT(ctx, "_smtp._tls."+d)
	if err != nil {
		if dns.IsNotFound(err) {
			return nil, &RecordError{Domain: d, Kind: ErrNoRecord, Err: err}
		}
		return nil, &RecordError{Domain: d, Kind: ErrLookup, Err: err}
	}
	var found []string
	for _, txt := range ans.Records {
		if rest, ok := strings.CutPrefix(txt, "v=TLSRPTv1"); ok && (rest == "" || strings.IndexByte(" \t;", rest[0]) >= 0) {
			found = append(found, txt)
		}
	}
	switch len(found) {
	case 0:
		return nil, &RecordError{Domain: d, Kind: ErrNoRecord}
	case 1:
	default:
		return nil, &RecordError{Domain: d, Kind: ErrMultipleRecords, Reason: strconv.Itoa(len(found)) + " records"}
	}
	rec, err := ParseRecord(found[0])
	if err != nil {
		var re *RecordError
		if errors.As(err, &re) {
			re.Domain = d
		}
		return nil, err
	}
	return &Policy{Domain: d, TXT: found[0], Record: *rec}, nil
}
