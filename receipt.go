package mailsec

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailsec/mailsec/internal/syntax"
)

// Receipt is the record of one Send: which message, who sent it, when,
// and per recipient what was delivered, how, and what the server said, or
// why not. It holds no message content: no Subject, no body. Its JSON
// form is stable; see the README.
type Receipt struct {
	MessageID string `json:"message_id"`
	// Reference is the Message's Reference, the application's own name
	// for it (never sent).
	Reference string `json:"reference,omitempty"`
	// From is the author's address, from the From field without its
	// display name; EnvelopeFrom the reverse-path the message was sent
	// with (MAIL FROM), where bounces go.
	From         string `json:"from"`
	EnvelopeFrom string `json:"envelope_from"`
	// EnvelopeID is the message's ENVID (RFC 3461): Message.DSN's, or
	// one Send generated. Each delivery is sent, to servers that offer
	// DSN, with its own ENVID: this one, a dot and a random part
	// (RecipientReceipt.EnvelopeID). A delivery status notification
	// carries that back (Original-Envelope-Id); it begins with this
	// prefix, and each recipient's ORCPT names the recipient in it.
	EnvelopeID string `json:"envelope_id,omitempty"`
	// Started and Finished bound the attempt: from the call to Send to
	// the end of its last delivery, just before OnReceipt is called, by
	// the Sender's clock (Options.Now).
	Started    time.Time          `json:"started"`
	Finished   time.Time          `json:"finished"`
	Recipients []RecipientReceipt `json:"recipients"`
}

// Failed returns the receipts of recipients that were not accepted.
func (r *Receipt) Failed() []RecipientReceipt {
	if r == nil {
		return nil
	}
	var out []RecipientReceipt
	for _, rr := range r.Recipients {
		if !rr.Accepted {
			out = append(out, rr)
		}
	}
	return out
}

// maxReference bounds Message.Reference.
const maxReference = 256

// checkReference checks Message.Reference, which is written into
// Receipts and log records as it is: text that needs no cleaning.
func checkReference(ref string) (string, bool) {
	switch {
	case len(ref) > maxReference:
		return "longer than " + strconv.Itoa(maxReference) + " octets", false
	case syntax.PeerText(ref) != ref || strings.ContainsRune(ref, '\t'):
		return "control characters, line or paragraph separators, bidirectional controls or invalid UTF-8", false
	}
	return "", true
}

// RecipientReceipt is the outcome for one recipient.
type RecipientReceipt struct {
	Address  string        `json:"address"`
	Kind     RecipientKind `json:"kind"`
	Accepted bool          `json:"accepted"`
	// Delivery numbers the SMTP transaction (MAIL FROM to the end of
	// DATA) that carried, or tried to carry, this recipient; recipients
	// with the same number shared one. Numbers start at 1 in each
	// Receipt; 0 means none did: the recipient failed before any session
	// (policy, protection, DNS, connection), or its session ended before
	// MAIL FROM (a security requirement or a missing extension).
	Delivery int `json:"delivery"`
	// EnvelopeID is the ENVID the recipient's delivery was sent with:
	// Receipt.EnvelopeID, a dot and a random part of its own, so that
	// no two deliveries share one. A delivery status notification whose
	// Original-Envelope-Id is this speaks for this delivery's recipients
	// alone; a report in it about any other recipient is forged (its
	// sender received some other delivery) and must be ignored. Empty
	// when Delivery is 0.
	EnvelopeID string `json:"envelope_id,omitempty"`
	// Plan is what the Policy decided for the recipient.
	Plan Plan `json:"plan"`
	// RequireTLS is set when the message was sent with REQUIRETLS.
	RequireTLS bool `json:"requiretls,omitempty"`
	// TLSRequiredNo is set when the message carried "TLS-Required: No".
	TLSRequiredNo bool `json:"tls_required_no,omitempty"`
	// Reply is the server's reply: to RCPT when the recipient was refused,
	// to the end of DATA otherwise.
	Reply   *Reply `json:"reply,omitempty"`
	QueueID string `json:"queue_id,omitempty"`
	// Connection describes the session's transport security.
	Connection *ConnectionState `json:"connection,omitempty"`
	// Protection is set when the content was protected for the recipient.
	Protection *ProtectionInfo `json:"protection,omitempty"`
	// Failure is set when the recipient was not accepted: whether a retry
	// can help, and the evidence of what was tried.
	Failure *Failure `json:"failure,omitempty"`
	// Err is why the recipient was not accepted; its text is the "error"
	// member of the JSON form.
	Err error `json:"-"`
}

// Failure is what the Receipt keeps about a recipient that was not
// accepted, beside its error: whether trying again later can help, and
// what was seen on the way. Every string in it that came from the network
// (host names, policies, server replies) is cleaned of control
// characters; nothing secret is in it.
type Failure struct {
	// Temporary reports whether sending to the recipient again later,
	// unchanged, may succeed: IsTemporary of its error. A queue retries
	// such a recipient, and only such a recipient.
	Temporary bool `json:"temporary"`
	// Explanation says in one sentence what went wrong, in the words
	// package bounce uses for the same status code in a bounce that
	// arrives later (see ExplainError): set for a server's refusal, a
	// REQUIRETLS failure and a network failure; nil for the other errors,
	// whose text says more. Its Retry is Temporary.
	Explanation *Explanation `json:"explanation,omitempty"`
	// Attempts are the servers tried for the recipient, in order, and
	// what was seen at each: every MX host (and address) direct delivery
	// tried, or the smarthost. The last one's session, when it got as far
	// as a transaction, is also the recipient's Connection. Empty when
	// the recipient failed before any server was tried (its plan, its
	// key, its domain's DNS).
	Attempts []Attempt `json:"attempts,omitempty"`
	// Notes are what the transport noted on the way beyond the attempts
	// (MX hosts not considered or not tried, a policy that could not be
	// had), when no session in Connection records them in its own Notes.
	Notes []string `json:"notes,omitempty"`
}

// Attempt is one try at a server that did not take the message for a
// recipient, and the evidence of why.
type Attempt struct {
	// Host is the server's name: the MX host, or the smarthost.
	Host string `json:"host"`
	// Addr is the address tried ("192.0.2.25:25"): under direct delivery
	// the MX host's address from the DNS (also one refused as not global,
	// which is not dialled), under submission the server's once connected.
	// Empty when no connection was tried: the host was refused first (an
	// MTA-STS policy that does not list it, a TLSA lookup that failed) or
	// has no address.
	Addr string `json:"addr,omitempty"`
	// Policy names what set the session's requirement under direct
	// delivery, as ConnectionState.Policy does: "dane", "mta-sts",
	// "verified"...
	Policy string `json:"policy,omitempty"`
	// Error is why the server did not take the message.
	Error string `json:"error"`
	// PeerPin is the SHA-256 of the public key of the certificate the
	// server presented, also when it was refused: what to compare with a
	// pin or a TLSA record, or to recognise an impostor by.
	PeerPin Pin `json:"peer_spki_sha256,omitzero"`
	// TLSA are the DNSSEC-authenticated DANE records the server's
	// certificate had to match, as in a zone file.
	TLSA []string `json:"tlsa,omitempty"`
	// MTASTS is the recipient domain's MTA-STS policy, as the lines of
	// its policy file, when the policy decided the attempt: it does not
	// list the host, or it set the requirement the session failed.
	MTASTS []string `json:"mta_sts,omitempty"`
}

// attemptOf is the Attempt of a session c that ended in err.
func attemptOf(c *ConnectionState, err error) Attempt {
	return Attempt{Host: c.Host, Addr: c.Addr, Policy: c.Policy, PeerPin: c.PeerPin, Error: syntax.PeerText(err.Error())}
}

// MarshalJSON adds the error text to the JSON form.
func (r RecipientReceipt) MarshalJSON() ([]byte, error) {
	type plain RecipientReceipt
	v := struct {
		plain
		Error string `json:"error,omitempty"`
	}{plain: plain(r)}
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads the JSON form back; the "error" member becomes an
// error with that text (its type is not preserved).
func (r *RecipientReceipt) UnmarshalJSON(b []byte) error {
	type plain RecipientReceipt
	var v struct {
		plain
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = RecipientReceipt(v.plain)
	if v.Error != "" {
		r.Err = errors.New(v.Error)
	}
	return nil
}

// Reply is an SMTP server reply.
type Reply struct {
	Code         int          `json:"code"`
	EnhancedCode EnhancedCode `json:"enhanced_code,omitzero"`
	Text         string       `json:"text"`
}

func (r *Reply) String() string {
	if r == nil {
		return ""
	}
	s := strconv.Itoa(r.Code)
	if r.EnhancedCode != (EnhancedCode{}) {
		s += " " + r.EnhancedCode.String()
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// EnhancedCode is an RFC 3463 status code such as 5.7.1.
type EnhancedCode [3]int

func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// MarshalText writes the dotted form.
func (c EnhancedCode) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads the dotted form.
func (c *EnhancedCode) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*c = EnhancedCode{}
		return nil
	}
	v, ok := ParseEnhancedCode(string(b))
	if !ok {
		return fmt.Errorf("mailsec: malformed enhanced status code %q", b)
	}
	*c = v
	return nil
}

// ParseEnhancedCode parses "class.subject.detail" (RFC 3463).
func ParseEnhancedCode(s string) (EnhancedCode, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return EnhancedCode{}, false
	}
	var c EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return EnhancedCode{}, false
		}
		c[i] = n
	}
	if c[0] != 2 && c[0] != 4 && c[0] != 5 {
		return EnhancedCode{}, false
	}
	return c, true
}

// ConnectionState describes the SMTP session a delivery used.
type ConnectionState struct {
	// Host is the server name the certificate was checked against.
	Host string `json:"host"`
	// Addr is the remote network address.
	Addr        string `json:"addr,omitempty"`
	TLSVersion  string `json:"tls_version,omitempty"`  // "TLS 1.3"; empty without TLS
	CipherSuite string `json:"cipher_suite,omitempty"` // IANA name
	// TLSResumed is set when the handshake resumed an earlier TLS session
	// with the server (a session ticket) instead of a full handshake. The
	// certificate is then that of the earlier session, checked again
	// against this session's requirement.
	TLSResumed bool `json:"tls_resumed,omitempty"`
	// Verification says how the server's certificate was authenticated.
	Verification Verification `json:"verification"`
	// PeerPin is the SHA-256 of the server certificate's public key.
	PeerPin Pin `json:"peer_spki_sha256,omitzero"`
	// SASLMechanism names the SMTP AUTH mechanism used, if any.
	SASLMechanism string `json:"sasl_mechanism,omitempty"`
	// Reused is set when the session had carried earlier messages.
	Reused bool `json:"reused"`

	// The fields below are set by direct delivery to MX hosts.

	// Domain is the recipient domain whose MX host this session reached.
	Domain string `json:"domain,omitempty"`
	// Policy names what set the session's requirement: "dane" (usable
	// TLSA records), "mta-sts" (an enforce policy), "mta-sts-testing",
	// or the security level ("verified", "may", "encrypt"...).
	Policy string `json:"policy,omitempty"`
	// TLSA is the DANE record that matched, as in a zone file.
	TLSA string `json:"tlsa,omitempty"`
	// Notes record every fallback taken on the way: MX hosts skipped and
	// why, MTA-STS testing-mode violations, a missing STARTTLS under an
	// opportunistic level, policies set aside by "TLS-Required: No".
	Notes []string `json:"notes,omitempty"`
}

// Verification says how a server's identity was established.
type Verification string

// Verification results.
const (
	// VerifiedWebPKI: the chain verified to a trusted root, for the host name.
	VerifiedWebPKI Verification = "webpki"
	// VerifiedPin: the certificate's key matched a configured SPKI pin.
	VerifiedPin Verification = "pinned-spki"
	// NotVerified: TLS without certificate verification (explicit opt-in).
	NotVerified Verification = "unverified"
	// NoTLS: no TLS at all (explicit opt-in: loopback only for
	// submission; a per-domain level for direct delivery).
	NoTLS Verification = "none"
	// VerifiedDANEEE: the certificate's key or whole certificate matched
	// a DNSSEC-authenticated DANE-EE(3) TLSA record (RFC 7672 §3.1.1).
	VerifiedDANEEE Verification = "dane-ee"
	// VerifiedDANETA: the chain led to a trust anchor named by a
	// DNSSEC-authenticated DANE-TA(2) TLSA record, and the certificate was
	// valid for the MX host (RFC 7672 §3.1.2).
	VerifiedDANETA Verification = "dane-ta"
	// VerifiedMTASTS: the chain verified to a trusted root for an MX host
	// name that the domain's MTA-STS policy in enforce mode lists
	// (RFC 8461 §4).
	VerifiedMTASTS Verification = "mta-sts"
)

// ProtectionInfo records what a recipient's plan led to when it asked for
// protection: the method and key used, or why the content was not
// protected and what was sent instead.
type ProtectionInfo struct {
	// Method is the Protector's method ("pgp", "smime"), MethodNotice
	// when the link-only notice was sent instead of the content, or
	// MethodNone when the content went unprotected (ProtectionPreferred
	// without a usable key).
	Method string `json:"method"`
	// Fingerprint is that of the recipient's key or certificate.
	Fingerprint string `json:"fingerprint,omitempty"`
	// KeyExpires is when that key or certificate expires (zero: never or
	// not reported), so an application can ask its user for a new one in
	// time.
	KeyExpires time.Time `json:"key_expires,omitzero"`
	// Cipher names the content encryption used ("aes256-cbc",
	// "aes256-gcm", "aes256-ocb"...), when the Protector reported it.
	Cipher string `json:"cipher,omitempty"`
	Signed bool   `json:"signed,omitempty"`
	// Notes are the Protector's observations about the key: expiring
	// within its warning window, how revocation was checked, or that its
	// status could not be established and the content was sent anyway
	// because the application chose to fail soft.
	Notes []string `json:"notes,omitempty"`
	// Reason says why the content was not protected (no key, expired,
	// revoked...), for MethodNotice and MethodNone.
	Reason string `json:"reason,omitempty"`
	// NoticeMessageID is the Message-ID of the notice sent instead.
	NoticeMessageID string `json:"notice_message_id,omitempty"`
}

// Methods recorded in ProtectionInfo besides the Protectors' own.
const (
	// MethodNotice: the link-only notice was sent instead of the content.
	MethodNotice = "notice"
	// MethodNone: protection was preferred, no usable key existed, and
	// the content was sent unprotected over the plan's transport security.
	MethodNone = "none"
)

// queueID extracts the queue identifier from a reply to the end of DATA,
// in the forms Postfix ("queued as 4ZxY"), Exim ("id=1abc-..."), and others
// ("Ok: queued as <id>", "Ok <id>") use. It returns "" when there is none.
func queueID(text string) string {
	fields := strings.Fields(text)
	for i, f := range fields {
		if strings.EqualFold(f, "as") && i > 0 && strings.EqualFold(fields[i-1], "queued") && i+1 < len(fields) {
			return strings.Trim(fields[i+1], "<>.,;()")
		}
		if v, ok := strings.CutPrefix(f, "id="); ok && v != "" {
			return strings.Trim(v, "<>.,;()")
		}
	}
	return ""
}
