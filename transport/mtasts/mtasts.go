// Parsing of MTA-STS (RFC 8461) TXT records and policy files, and
// matching of MX host names against a policy's patterns. None of it does
// I/O; client.go discovers, fetches and caches.
//
// Parsing is strict where the RFC is, so that a malformed record or
// policy is treated as no policy at all (section 3.1: "senders MUST assume
// the recipient domain does not implement MTA-STS") rather than guessed at:
//
//   - a TXT record starts with "v=STSv1;" and has an "id" of 1 to 32
//     letters and digits; other fields are ignored; exactly one such
//     record must exist for the domain;
//   - a policy has "version: STSv1", a "mode" of enforce, testing or none,
//     a "max_age" of at most 10 digits (values above 31557600 seconds, one
//     year, are capped to it), and at least one "mx" pattern unless the
//     mode is none; lines end in LF or CRLF; "version", "mode" and
//     "max_age" may appear once; unknown fields are ignored.

package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxAge is the longest a policy may be cached (RFC 8461 section 3.2).
const MaxAge = 31557600

// MaxPolicySize bounds a policy file; RFC 8461 section 3.3 suggests 64 KiB.
const MaxPolicySize = 64 << 10

// Mode is a policy's enforcement mode.
type Mode string

// Modes.
const (
	Enforce Mode = "enforce"
	Testing Mode = "testing"
	None    Mode = "none"
)

// Record is a parsed "_mta-sts" TXT record.
type Record struct {
	// ID changes whenever the policy does.
	ID string
}

// ErrNoRecord reports that no TXT record, or more than one, starts with
// "v=STSv1": the domain does not implement MTA-STS.
var ErrNoRecord = errors.New("mtasts: no single v=STSv1 record")

// SelectRecord picks the MTA-STS record among a domain's "_mta-sts" TXT
// records: those not starting with "v=STSv1;" are discarded, and exactly
// one must remain and parse.
func SelectRecord(txts []string) (Record, error) {
	var found []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1;") {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return Record{}, ErrNoRecord
	}
	return ParseRecord(found[0])
}

// ParseRecord parses one TXT record: "v=STSv1; id=20160831085700Z;".
func ParseRecord(txt string) (Record, error) {
	if !strings.HasPrefix(txt, "v=STSv1;") {
		return Record{}, errors.New("mtasts: record does not start with v=STSv1;")
	}
	var r Record
	seen := false
	for _, f := range strings.Split(txt[len("v=STSv1;"):], ";") {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok || !isTerm(k, 32) {
			return Record{}, fmt.Errorf("mtasts: malformed record field %q", f)
		}
		if k != "id" {
			continue // extension fields are ignored
		}
		if seen {
			return Record{}, errors.New("mtasts: more than one id")
		}
		seen = true
		if len(v) < 1 || len(v) > 32 || !isAlnum(v) {
			return Record{}, fmt.Errorf("mtasts: malformed id %q", v)
		}
		r.ID = v
	}
	if !seen {
		return Record{}, errors.New("mtasts: record has no id")
	}
	return r, nil
}

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Mode   Mode
	MaxAge int64    // seconds, at most MaxAge
	MX     []string // patterns, lower case: "mail.example.com", "*.example.net"
}

// ParsePolicy parses a policy file body.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("mtasts: policy larger than %d bytes", MaxPolicySize)
	}
	var p Policy
	var version, mode, maxAge bool
	text := string(b)
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimRight(line, " \t") == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !isTerm(k, 32) {
			return nil, fmt.Errorf("mtasts: line %d: malformed field %q", n+1, line)
		}
		v = strings.Trim(v, " \t")
		if strings.ContainsAny(v, "\r") || !printable(v) {
			return nil, fmt.Errorf("mtasts: line %d: malformed value", n+1)
		}
		switch k {
		case "version":
			if version || v != "STSv1" {
				return nil, fmt.Errorf("mtasts: line %d: version must be STSv1, once", n+1)
			}
			version = true
		case "mode":
			if mode {
				return nil, fmt.Errorf("mtasts: line %d: mode given twice", n+1)
			}
			switch Mode(v) {
			case Enforce, Testing, None:
				p.Mode, mode = Mode(v), true
			default:
				return nil, fmt.Errorf("mtasts: line %d: unknown mode %q", n+1, v)
			}
		case "max_age":
			if maxAge || len(v) < 1 || len(v) > 10 || !isDigits(v) {
				return nil, fmt.Errorf("mtasts: line %d: max_age must be 1 to 10 digits, once", n+1)
			}
			age, _ := strconv.ParseInt(v, 10, 64)
			p.MaxAge, maxAge = min(age, MaxAge), true
		case "mx":
			pat := strings.ToLower(v)
			if !validPattern(pat) {
				return nil, fmt.Errorf("mtasts: line %d: malformed mx pattern %q", n+1, v)
			}
			p.MX = append(p.MX, pat)
		}
	}
	switch {
	case !version:
		return nil, errors.New("mtasts: policy has no version")
	case !mode:
		return nil, errors.New("mtasts: policy has no mode")
	case !maxAge:
		return nil, errors.New("mtasts: policy has no max_age")
	case len(p.MX) == 0 && p.Mode != None:
		return nil, errors.New("mtasts: policy has no mx")
	}
	return &p, nil
}

// Matches reports whether an MX host name is allowed by the policy: equal
// to a pattern, or, for "*.example.net", equal to it but for exactly one
// leftmost label ("mx1.example.net", not "a.b.example.net" or
// "example.net"). Comparison ignores ASCII case and a trailing dot.
func (p *Policy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

func validPattern(p string) bool {
	p = strings.TrimPrefix(p, "*.")
	if p == "" || len(p) > 253 {
		return false
	}
	for _, l := range strings.Split(p, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func isTerm(s string, max int) bool {
	if len(s) < 1 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
