package bounce

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/syntax"
)

// VERP makes and reads signed VERP return paths (variable envelope return
// paths): each delivery is sent with a reverse-path of its own,
//
//	<Local>+<ref>.<mac>@<Domain>
//
// where ref is the first dot-separated field of the delivery's ENVID
// (the message's ENVID Send generated, or the outbox's message ID) and
// mac is 16 base32 characters (80 bits) of HMAC-SHA-256, under Secret, of
// the delivery's whole ENVID. A bounce then names its delivery by the
// address it was sent to, even from a server that drops the DSN
// parameters (no Original-Envelope-Id): ref finds the message, and mac
// says which of its deliveries, which only the holder of Secret can
// compute. A tag made up or altered matches no delivery.
//
// Give ReturnPath to the Sender (mailsec.Options.ReturnPath), and the
// same VERP to whatever reads the bounces (Report.ForReturnPath,
// outbox.Options.VERP). The domain must route every address
// <Local>+anything to the application (Postfix: recipient_delimiter = +,
// and a transport for <Local>@<Domain>; see the README). A local part is
// at most 64 octets (RFC 5321 §4.5.3.1.1): Local, the '+', ref, the '.' and
// the 16 characters of mac must fit, so ref may be at most 46 - len(Local)
// characters; ReturnPath refuses a longer one. Local parts are compared
// without regard to case, so that a server that lower-cases them does not
// break the match; ref and mac are written in lower case.
type VERP struct {
	// Local is the local part before the '+': "bounces".
	Local string
	// Domain is the domain the bounces go to: "example.com".
	Domain string
	// Secret keys the HMAC: at least 32 random bytes, kept like a
	// password and the same in every process that sends or reads.
	Secret []byte
}

// verpMAC is the length of a tag's MAC, in base32 characters (80 bits).
const verpMAC = 16

// maxLocalPart is RFC 5321's limit on a local part, in octets.
const maxLocalPart = 64

// ErrForged: a return path is not a signed VERP address of this VERP (it
// has the wrong local part or domain, no tag, or a malformed one), or its
// tag matches none of the deliveries it could name. Never temporary.
var ErrForged = errors.New("bounce: not a return path this application signed")

// VERPError is why a return path was refused.
type VERPError struct {
	Address string // the return path, cleaned of control characters
	Reason  string
}

func (e *VERPError) Error() string {
	return "bounce: return path " + strconv.Quote(e.Address) + ": " + e.Reason
}

// Is matches ErrForged.
func (e *VERPError) Is(target error) bool { return target == ErrForged }

// Temporary reports false: the same address never passes later.
func (e *VERPError) Temporary() bool { return false }

// Check reports a VERP that cannot work: a *mailsec.ConfigError naming
// the field at fault.
func (v *VERP) Check() error {
	switch {
	case v == nil:
		return &mailsec.ConfigError{Field: "bounce.VERP", Reason: "nil"}
	case v.Local == "" || strings.ContainsAny(v.Local, "+@\"\\ ") || !syntax.IsPrintableASCII(v.Local) ||
		len(v.Local) > maxLocalPart-2-verpMAC-1:
		return &mailsec.ConfigError{Field: "bounce.VERP.Local", Value: v.Local,
			Reason: "a plain local part (no '+', '@', quotes or spaces) leaving room for the tag: at most " + strconv.Itoa(maxLocalPart-2-verpMAC-1) + " characters"}
	case v.Domain == "" || strings.ContainsAny(v.Domain, "@ ") || !syntax.IsPrintableASCII(v.Domain):
		return &mailsec.ConfigError{Field: "bounce.VERP.Domain", Value: v.Domain, Reason: "a domain name, in A-labels"}
	case len(v.Secret) < 32:
		return &mailsec.ConfigError{Field: "bounce.VERP.Secret", Value: strconv.Itoa(len(v.Secret)) + " bytes",
			Reason: "at least 32 random bytes"}
	}
	return nil
}

// mac returns the tag's MAC of a delivery's ENVID.
func (v *VERP) mac(envelopeID string) string {
	m := hmac.New(sha256.New, v.Secret)
	m.Write([]byte("mailsec verp v1\x00"))
	m.Write([]byte(envelopeID))
	return strings.ToLower(base32.StdEncoding.EncodeToString(m.Sum(nil)))[:verpMAC]
}

// ReturnPath returns the signed return path of the delivery whose ENVID
// is envelopeID; it is mailsec.Options.ReturnPath. It fails with a
// *mailsec.ConfigError when the VERP is not usable (see Check), or when
// the ENVID's first field is not 1 or more letters, digits, '-' or '_'
// short enough for the local part to stay within 64 octets.
func (v *VERP) ReturnPath(envelopeID string) (string, error) {
	if err := v.Check(); err != nil {
		return "", err
	}
	ref, _, _ := strings.Cut(envelopeID, ".")
	if limit := maxLocalPart - len(v.Local) - 2 - verpMAC; ref == "" || len(ref) > limit || !plainRef(ref) {
		return "", &mailsec.ConfigError{Field: "DSN.EnvelopeID", Value: ref,
			Reason: "a signed return path needs the ENVID's first field to be 1 to " + strconv.Itoa(limit) +
				" letters, digits, '-' or '_' (the local part is at most 64 octets)"}
	}
	return v.Local + "+" + strings.ToLower(ref) + "." + v.mac(envelopeID) + "@" + v.Domain, nil
}

func plainRef(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// VERPTag is a return path read by Parse: the message it names, and the
// MAC that says which delivery.
type VERPTag struct {
	// Ref is the first field of the delivery's ENVID, in lower case: the
	// message's ENVID as Send generated it, or the outbox's message ID.
	// Anyone can write any Ref; only Signs says the tag is genuine.
	Ref string
	v   *VERP
	mac string
}

// Parse reads a return path as it arrived (the envelope recipient of the
// bounce, with or without angle brackets): it must be
// <Local>+<ref>.<mac>@<Domain>, local part and domain compared without
// regard to case. What it returns is not yet trusted: Signs checks the
// MAC against a delivery. A return path of any other shape is a
// *VERPError matching ErrForged.
func (v *VERP) Parse(addr string) (*VERPTag, error) {
	if err := v.Check(); err != nil {
		return nil, err
	}
	shown := syntax.PeerText(addr)
	bad := func(reason string) (*VERPTag, error) { return nil, &VERPError{Address: shown, Reason: reason} }
	a := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at < 0 || !strings.EqualFold(strings.TrimSuffix(a[at+1:], "."), v.Domain) {
		return bad("not at " + v.Domain)
	}
	local := a[:at]
	if len(local) > maxLocalPart {
		return bad("local part longer than 64 octets")
	}
	head, tag, ok := strings.Cut(local, "+")
	if !ok || !strings.EqualFold(head, v.Local) {
		return bad("not " + v.Local + "+<tag>")
	}
	ref, mac, ok := strings.Cut(tag, ".")
	if !ok || ref == "" || !plainRef(ref) || len(mac) != verpMAC {
		return bad("malformed tag")
	}
	return &VERPTag{Ref: strings.ToLower(ref), v: v, mac: strings.ToLower(mac)}, nil
}

// Signs reports whether the tag is the one ReturnPath makes for the
// delivery whose ENVID is envelopeID (compared in constant time), and the
// ENVID's first field is the tag's Ref.
func (t *VERPTag) Signs(envelopeID string) bool {
	if t == nil || t.v == nil || envelopeID == "" {
		return false
	}
	ref, _, _ := strings.Cut(envelopeID, ".")
	ok := subtle.ConstantTimeCompare([]byte(t.v.mac(envelopeID)), []byte(t.mac)) == 1
	return ok && strings.EqualFold(ref, t.Ref)
}

// ForReturnPath returns the per-recipient reports of r that speak for
// recipients of rec, by the return path the bounce was delivered to (the
// envelope recipient a Postfix pipe(8) transport passes as ${recipient}),
// for bounces from servers that do not return the ENVID: the path must
// be v's signed tag of the delivery that carried the recipient, as
// VERP.ReturnPath made it. A report's own Original-Envelope-Id, when it
// has one, must name the same delivery.
//
// Every recipient of a delivery reads its return path (the Return-Path
// field of its copy), so a return path speaks for one recipient only: a
// Sender with Options.ReturnPath gives each recipient a delivery of its
// own, and a report about any other recipient matches nothing. A return
// path that matches no delivery of rec, or a delivery that carried more
// than one recipient (any of whom could have written the report), is a
// *VERPError matching ErrForged.
func (r *Report) ForReturnPath(v *VERP, returnPath string, rec *mailsec.Receipt) ([]Match, error) {
	tag, err := v.Parse(returnPath)
	if err != nil {
		return nil, err
	}
	if r == nil || rec == nil {
		return nil, nil
	}
	carried, n := -1, 0
	for j := range rec.Recipients {
		if tag.Signs(rec.Recipients[j].EnvelopeID) {
			carried = j
			n++
		}
	}
	switch {
	case n == 0:
		return nil, &VERPError{Address: syntax.PeerText(returnPath), Reason: "its tag names no delivery of message " + rec.EnvelopeID}
	case n > 1:
		return nil, &VERPError{Address: syntax.PeerText(returnPath), Reason: fmt.Sprintf("its tag names a delivery of message %s that carried %d recipients; a return path speaks for one", rec.EnvelopeID, n)}
	}
	rc := &rec.Recipients[carried]
	if r.EnvelopeID != "" && subtle.ConstantTimeCompare([]byte(rc.EnvelopeID), []byte(r.EnvelopeID)) != 1 {
		return nil, nil
	}
	var out []Match
	for i := range r.Recipients {
		rr := &r.Recipients[i]
		for _, a := range []string{rr.OriginalRecipient, rr.FinalRecipient} {
			a = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a), "<"), ">")
			if a != "" && strings.EqualFold(rc.Address, a) {
				out = append(out, Match{Report: rr, Receipt: rc})
				break
			}
		}
	}
	return out, nil
}
