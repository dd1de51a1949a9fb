package mailsec

import (
	"errors"

	"github.com/mailsec/mailsec/internal/statuscode"
)

// Explanation says what an RFC 3463 enhanced status code means, in one
// sentence a support person can act on, and whether trying again later
// can help. The same vocabulary explains a server's refusal during Send
// (Failure.Explanation in the Receipt) and a bounce that arrives later
// (package bounce).
type Explanation struct {
	// Code is the code explained; the zero code when none was known.
	Code EnhancedCode `json:"code,omitzero"`
	// Text is the sentence.
	Text string `json:"text"`
	// Retry reports whether sending the message again later, unchanged,
	// can succeed: true for a transient failure (class 4), false for a
	// permanent one (class 5), which needs a change first (another
	// address, a smaller message, a fixed DNS record), and false for a
	// success (class 2).
	Retry bool `json:"retry"`
	// Listed reports whether the code itself is in the vocabulary (RFC
	// 3463 and the IANA registry of enhanced status codes); false when
	// Text is the sentence for the code's subject or class.
	Listed bool `json:"listed"`
}

// String returns the sentence followed by the retry advice.
func (e Explanation) String() string {
	if e.Code[0] == 2 {
		return e.Text
	}
	if e.Retry {
		return e.Text + " Trying again later can help."
	}
	return e.Text + " Trying again unchanged will not help."
}

// Explain returns the explanation of the code. The zero code gets a
// sentence saying that the cause is unknown, and no retry.
func (c EnhancedCode) Explain() Explanation {
	if c == (EnhancedCode{}) {
		return Explanation{Text: "The cause is not known: no status code was given."}
	}
	t, listed := statuscode.Lookup(c[0], c[1], c[2])
	return Explanation{Code: c, Text: t, Retry: statuscode.Retry(c[0]), Listed: listed}
}

// basicCodes maps RFC 5321 reply codes to the enhanced codes RFC 3463
// and RFC 5248 pair with them, for servers that send no enhanced code.
var basicCodes = map[int]EnhancedCode{
	421: {4, 3, 2},  // service not available, closing channel
	450: {4, 2, 0},  // mailbox unavailable
	451: {4, 3, 0},  // local error in processing
	452: {4, 3, 1},  // insufficient system storage
	454: {4, 7, 0},  // TLS not available for now
	530: {5, 7, 0},  // authentication required
	535: {5, 7, 8},  // authentication credentials invalid
	550: {5, 1, 1},  // mailbox unavailable (not found, no access)
	551: {5, 1, 6},  // user not local
	552: {5, 3, 4},  // exceeded storage allocation
	553: {5, 1, 3},  // mailbox name not allowed
	554: {5, 0, 0},  // transaction failed
	556: {5, 1, 10}, // domain does not accept mail (RFC 7504)
}

// ExplainError explains why a recipient was not accepted, in the same
// vocabulary as EnhancedCode.Explain: a server's refusal by its enhanced
// status code (or, when it sent none, by the enhanced code its basic
// reply code stands for), a REQUIRETLS failure as 5.7.30, a network
// failure as the routing status it is. It returns false for other errors
// (validation, configuration, protection, the other security failures),
// whose own text says more than a status code would. Retry follows
// IsTemporary(err) whenever the two differ: the error knows more than the
// code (a transport defers some permanent-looking failures).
func ExplainError(err error) (Explanation, bool) {
	if err == nil {
		return Explanation{}, false
	}
	var code EnhancedCode
	var se *SMTPError
	var sec *SecurityError
	var ne *NetworkError
	switch {
	case errors.As(err, &se):
		code = se.EnhancedCode
		if code == (EnhancedCode{}) {
			c, ok := basicCodes[se.Code]
			if !ok {
				c = EnhancedCode{se.Code / 100, 0, 0}
			}
			code = c
		}
	case errors.As(err, &sec) && errors.Is(sec.Category, ErrRequireTLS):
		code = EnhancedCode{5, 7, 30}
	case errors.As(err, &ne):
		code = EnhancedCode{4, 4, 2}
		if ne.Op == "dial" {
			code = EnhancedCode{4, 4, 1}
		}
	default:
		return Explanation{}, false
	}
	if code[0] != 2 && code[0] != 4 && code[0] != 5 {
		return Explanation{}, false
	}
	x := code.Explain()
	x.Retry = IsTemporary(err)
	return x, true
}
