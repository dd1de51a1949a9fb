package mailsec

import (
	"errors"
	"strings"

	"github.com/mailsec/mailsec/internal/syntax"
)

// allowedSender is one entry of Options.AllowedSenders.
type allowedSender struct {
	local  string // empty for a domain entry
	domain string // A-labels, lower case
	suffix bool   // ".example.com": domains below it
}

func parseAllowedSender(s string) (allowedSender, error) {
	switch {
	case strings.HasPrefix(s, "."):
		m, reason := parseAddrSpec("x@" + s[1:])
		if reason != "" {
			return allowedSender{}, errors.New(reason)
		}
		return allowedSender{domain: strings.ToLower(m.aDomain), suffix: true}, nil
	case strings.Contains(s, "@"):
		m, reason := parseAddrSpec(s)
		if reason != "" {
			return allowedSender{}, errors.New(reason)
		}
		return allowedSender{local: m.local, domain: strings.ToLower(m.aDomain)}, nil
	default:
		m, reason := parseAddrSpec("x@" + s)
		if reason != "" {
			return allowedSender{}, errors.New(reason)
		}
		return allowedSender{domain: strings.ToLower(m.aDomain)}, nil
	}
}

func (a allowedSender) allows(mb mailbox) bool {
	d := strings.ToLower(mb.aDomain)
	switch {
	case a.suffix:
		return strings.HasSuffix(d, "."+a.domain)
	case a.local != "":
		// Local parts compare case-insensitively in ASCII only: the
		// application's own mailboxes do not differ only by case, and
		// Unicode folding would make other mailboxes equal to them.
		return d == a.domain && syntax.FoldAddress(mb.local) == syntax.FoldAddress(a.local)
	}
	return d == a.domain
}

// checkSender refuses an author or envelope-from outside AllowedSenders.
func (s *Sender) checkSender(field string, mb mailbox) error {
	if len(s.allowed) == 0 {
		return nil
	}
	for _, a := range s.allowed {
		if a.allows(mb) {
			return nil
		}
	}
	return &SenderError{Field: field, Address: mb.addr(false)}
}
