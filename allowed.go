package mailsec

import (
	"errors"
	"strings"

	"github.com/mailsec/mailsec/internal/syntax"
)

// allowedSender is one entry of Options.AllowedSenders.
type allowedSender struct {
	local  string        // empty for a domain entry
	domain domainPattern // the address's domain, or the domain entry
}

func parseAllowedSender(s string) (allowedSender, error) {
	if strings.Contains(s, "@") && !strings.HasPrefix(s, ".") {
		m, reason := parseAddrSpec(s)
		if reason != "" {
			return allowedSender{}, errors.New(reason)
		}
		return allowedSender{local: m.local, domain: domainPattern{name: strings.ToLower(m.aDomain)}}, nil
	}
	p, reason := parseDomainPattern(s)
	if reason != "" {
		return allowedSender{}, errors.New(reason)
	}
	return allowedSender{domain: p}, nil
}

func (a allowedSender) allows(mb mailbox) bool {
	d := strings.ToLower(mb.aDomain)
	if a.local != "" {
		// Local parts compare case-insensitively in ASCII only: the
		// application's own mailboxes do not differ only by case, and
		// Unicode folding would make other mailboxes equal to them.
		return d == a.domain.name && syntax.FoldAddress(mb.local) == syntax.FoldAddress(a.local)
	}
	return a.domain.matches(d)
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
