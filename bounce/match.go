package bounce

import (
	"crypto/subtle"
	"strings"

	"github.com/mailsec/mailsec"
)

// Match is a per-recipient report matched to the recipient of a Receipt
// it speaks for.
type Match struct {
	// Report is the report on the recipient.
	Report *Recipient
	// Receipt is the recipient's entry in the Receipt.
	Receipt *mailsec.RecipientReceipt
}

// For returns the per-recipient reports of r that speak for recipients of
// rec: a report counts only when its recipient (its OriginalRecipient,
// else its FinalRecipient, compared without regard to case) was carried
// by the delivery whose ENVID is r.EnvelopeID, that is, when that
// recipient's RecipientReceipt.EnvelopeID equals it (compared in constant
// time). Each delivery of a message has its own ENVID, which only the
// servers on that delivery's path see: a report on a recipient of another
// delivery, or under an ENVID rec does not hold, is forged, and is left
// out. For returns nil when nothing matches, or when r or rec is nil.
func (r *Report) For(rec *mailsec.Receipt) []Match {
	if r == nil || rec == nil || r.EnvelopeID == "" {
		return nil
	}
	var out []Match
	for i := range r.Recipients {
		rr := &r.Recipients[i]
		for _, a := range []string{rr.OriginalRecipient, rr.FinalRecipient} {
			j := carried(rec, a, r.EnvelopeID)
			if j >= 0 {
				out = append(out, Match{Report: rr, Receipt: &rec.Recipients[j]})
				break
			}
		}
	}
	return out
}

// carried returns the index in rec of the recipient addr whose delivery
// had the ENVID envid; -1 for none.
func carried(rec *mailsec.Receipt, addr, envid string) int {
	addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	if addr == "" {
		return -1
	}
	for j := range rec.Recipients {
		rc := &rec.Recipients[j]
		if rc.EnvelopeID != "" && strings.EqualFold(rc.Address, addr) &&
			subtle.ConstantTimeCompare([]byte(rc.EnvelopeID), []byte(envid)) == 1 {
			return j
		}
	}
	return -1
}
