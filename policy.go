package mailsec

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Policy decides, for each recipient of a message, how it must be
// delivered: the transport security floor and whether end-to-end protection
// is required. It must be safe for concurrent use.
//
// Policies compose as wrappers: a function that takes a Policy and returns
// one that changes some decisions and defers to the wrapped one for the
// rest (see RequireProtection).
//
// A Policy may also declare what its plans may ask of the Sender, with a
// method
//
//	Needs() (PolicyNeeds, error)
//
// that NewSender calls once, so that it can refuse a Sender that could not
// carry the plans out (see PolicyNeeds). The policies and wrappers of this
// package declare theirs, and a wrapper passes on what the Policy it wraps
// declares; a Policy without the method, such as a PolicyFunc, declares
// nothing, and NewSender then checks only what the wrappers around it
// declare. The wrappers of this package around a nil Policy are refused
// by NewSender, and fail every recipient when used otherwise.
type Policy interface {
	Plan(ctx context.Context, m *Message, r Recipient) (Plan, error)
}

// PolicyFunc adapts a function to the Policy interface.
type PolicyFunc func(ctx context.Context, m *Message, r Recipient) (Plan, error)

// Plan calls f.
func (f PolicyFunc) Plan(ctx context.Context, m *Message, r Recipient) (Plan, error) {
	return f(ctx, m, r)
}

// PolicyNeeds is what the plans of a Policy may ask of the Sender,
// declared by the Policy's Needs method. NewSender refuses, with a
// *ConfigError that says what to change:
//
//   - Protectors, when no plan asks for protection: they would never be
//     used, and messages meant to be protected would go out as they are
//     (wrap the Policy in RequireProtection or PreferProtection);
//   - a Policy that may ask for protection, with no Protector;
//   - a method a plan may name that no Protector has;
//   - a Policy that may require protection and send the link-only notice
//     to a recipient without a key, with no Options.Notice;
//   - the error Needs returns (a malformed DomainRule, say).
//
// A Policy of the application's own that declares must cover every plan
// it may make: Protection at least as strong as any plan asks for, every
// method any plan names, Notice when any plan may say NoKeyNotice.
// NewSender takes the declaration at its word: one that claims less may
// refuse a Sender that fits, or let a mistake through to Send, where it
// fails the recipients it concerns. For example:
//
//	type labPolicy struct{}
//
//	func (labPolicy) Plan(ctx context.Context, m *mailsec.Message, r mailsec.Recipient) (mailsec.Plan, error) {
//		if r.Domain == "clinic.example" {
//			return mailsec.Plan{Protection: mailsec.ProtectionRequired, Methods: []string{"smime"}}, nil
//		}
//		return mailsec.Plan{}, nil
//	}
//
//	func (labPolicy) Needs() (mailsec.PolicyNeeds, error) {
//		return mailsec.PolicyNeeds{Protection: mailsec.ProtectionRequired, Methods: []string{"smime"}}, nil
//	}
type PolicyNeeds struct {
	// Protection is the strongest protection any plan may ask for:
	// ProtectionNone when no plan asks for protection, ProtectionRequired
	// when some plan may require it.
	Protection Protection
	// Methods lists every method a plan may name in Plan.Methods; empty
	// when plans name none (and so accept every Protector the Sender has).
	Methods []string
	// Notice reports that a plan may say NoKeyNotice.
	Notice bool

	// partial marks needs some of whose plans come from a Policy that
	// declares nothing: the fields are then what the wrappers around it
	// certainly add, and Protection is no upper bound.
	partial bool
}

// needsOf returns what p declares, or, when p declares nothing, partial
// needs. A panic in p's Needs method is an error.
func needsOf(p Policy) (n PolicyNeeds, err error) {
	d, ok := p.(interface{ Needs() (PolicyNeeds, error) })
	if !ok {
		return PolicyNeeds{partial: true}, nil
	}
	defer func() {
		if v := recover(); v != nil {
			n, err = PolicyNeeds{}, fmt.Errorf("its Needs method panicked: %v", v)
		}
	}()
	n, err = d.Needs()
	n.Methods = slices.Clone(n.Methods)
	return n, err
}

// checkPolicy refuses a Policy that does not fit the Sender's Protectors
// and notice, as PolicyNeeds lists.
func (s *Sender) checkPolicy() error {
	n, err := needsOf(s.policy)
	if err != nil {
		if ce, ok := errors.AsType[*ConfigError](err); ok {
			return ce
		}
		return policyError(typeName(s.policy), err)
	}
	var have []string
	for _, np := range s.protectors {
		have = append(have, np.name)
	}
	switch {
	case len(s.protectors) > 0 && n.Protection == ProtectionNone && !n.partial:
		return badConfig("Options.Policy", "", "no plan asks for protection, so Options.Protectors would never be used and every message would go out unprotected: "+
			"wrap the policy in mailsec.RequireProtection (protected content or nothing) or mailsec.PreferProtection (protected where the recipient has a key)")
	case len(s.protectors) == 0 && n.Protection != ProtectionNone:
		return badConfig("Options.Protectors", "", "empty, but the Policy asks for "+n.Protection.String()+" protection: "+
			"add a Protector (pgp.New, smime.New), or use a Policy that asks for none")
	}
	for _, m := range n.Methods {
		if n.Protection == ProtectionNone {
			break // no plan asks for protection: its methods are never used
		}
		if m == "" {
			return badConfig("Options.Policy", "", "names an empty protection method")
		}
		if !slices.Contains(have, m) {
			return badConfig("Options.Policy", "", fmt.Sprintf("a plan may name the protection method %q, which no Protector in Options.Protectors has (they have %s): add a Protector for it, or drop it from the policy",
				m, strings.Join(have, ", ")))
		}
	}
	if n.Notice && n.Protection == ProtectionRequired && s.notice == nil {
		return badConfig("Options.Notice", "", "nil, but the Policy may send a recipient without a usable key the link-only notice (NoticeWhenNoKey, or a DomainRule with NoKeyNotice): "+
			"set Options.Notice to build it, or let such recipients fail")
	}
	return nil
}

// declared is a Policy of this package: its plans and what they may need.
type declared struct {
	PolicyFunc
	needs func() (PolicyNeeds, error)
}

// Needs implements the declaration NewSender reads (see PolicyNeeds).
func (d declared) Needs() (PolicyNeeds, error) { return d.needs() }

// wrap declares what a wrapper around next needs: next's needs, changed
// by change.
func wrap(next Policy, plan PolicyFunc, change func(*PolicyNeeds) error) Policy {
	return declared{PolicyFunc: plan, needs: func() (PolicyNeeds, error) {
		n, err := needsOf(next)
		if err != nil {
			return n, err
		}
		return n, change(&n)
	}}
}

// DefaultPolicy returns the policy a Sender uses when none is given: every
// recipient over TLS verified for the server name, no end-to-end protection.
func DefaultPolicy() Policy {
	return declared{
		PolicyFunc: func(context.Context, *Message, Recipient) (Plan, error) { return Plan{}, nil },
		needs:      func() (PolicyNeeds, error) { return PolicyNeeds{}, nil },
	}
}

// RequireProtection wraps next so that every recipient's plan requires
// end-to-end protection, with methods (if any) as the allowed methods in
// order of preference. A recipient without a usable key gets nothing, or
// the notice when combined with NoticeWhenNoKey.
func RequireProtection(next Policy, methods ...string) Policy {
	next = orRefuse(next, "RequireProtection")
	methods = slices.Clone(methods)
	return wrap(next, func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		p.Protection = ProtectionRequired
		if len(methods) > 0 {
			p.Methods = slices.Clone(methods)
		}
		return p, err
	}, func(n *PolicyNeeds) error {
		n.Protection = ProtectionRequired
		if len(methods) > 0 {
			n.Methods = slices.Clone(methods)
		}
		return nil
	})
}

// PreferProtection wraps next so that every recipient's content is
// protected where an allowed method has a usable key, and sent as it is
// (over the plan's transport security) otherwise. A plan that already
// requires protection keeps requiring it.
func PreferProtection(next Policy, methods ...string) Policy {
	next = orRefuse(next, "PreferProtection")
	methods = slices.Clone(methods)
	return wrap(next, func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		if p.Protection != ProtectionRequired {
			p.Protection = ProtectionPreferred
		}
		if len(methods) > 0 {
			p.Methods = slices.Clone(methods)
		}
		return p, err
	}, func(n *PolicyNeeds) error {
		if n.Protection != ProtectionRequired {
			n.Protection = ProtectionPreferred
		}
		if len(methods) > 0 {
			n.Methods = slices.Clone(methods)
		}
		return nil
	})
}

// NoticeWhenNoKey wraps next so that a recipient whose plan requires
// protection but who has no usable key receives the Sender's link-only
// notice (Options.Notice) instead of nothing.
func NoticeWhenNoKey(next Policy) Policy {
	next = orRefuse(next, "NoticeWhenNoKey")
	return wrap(next, func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		p.NoKey = NoKeyNotice
		return p, err
	}, func(n *PolicyNeeds) error {
		n.Notice = true
		return nil
	})
}

// orRefuse returns next, or, when next is nil (or a typed nil), a Policy
// that NewSender refuses and that fails every recipient: a wrapper around
// nothing is a mistake, and the default it might stand for protects less
// than was meant.
func orRefuse(next Policy, wrapper string) Policy {
	if !isNil(next) {
		return next
	}
	reason := wrapper + " wraps a nil Policy; wrap mailsec.DefaultPolicy() to start from the default"
	return declared{
		PolicyFunc: func(context.Context, *Message, Recipient) (Plan, error) {
			return Plan{}, invalid("Policy", "", reason)
		},
		needs: func() (PolicyNeeds, error) { return PolicyNeeds{}, badConfig("Options.Policy", "", reason) },
	}
}

// DomainRule changes the plans of the recipients in one domain. Zero
// fields change nothing.
type DomainRule struct {
	// Domain is "example.org" for exactly that domain, or ".example.org"
	// for every domain below it (not example.org itself), as in Postfix's
	// policy tables. Internationalised names may be given in either form.
	Domain string
	// Security, when set, replaces the transport security requirement
	// (to pin a partner's server, say, or, visibly, to allow a
	// development domain less).
	Security *Security
	// Protection raises the plan's protection: a rule never lowers it.
	Protection Protection
	// Methods, when set, replaces the allowed methods.
	Methods []string
	// NoKey, when set, replaces the no-key action.
	NoKey *NoKeyAction
}

// ForDomains wraps next with per-domain rules. For each recipient the most
// specific matching rule applies: an exact domain before a ".domain" rule,
// and a longer ".domain" rule before a shorter one. Recipients in no
// listed domain keep next's plan. A malformed rule fails every recipient
// with a policy error, before anything is sent.
func ForDomains(next Policy, rules ...DomainRule) Policy {
	next = orRefuse(next, "ForDomains")
	type rule struct {
		DomainRule
		domain domainPattern
	}
	var parsed []rule
	var bad error
	for i, r := range rules {
		domain, reason := parseDomainPattern(r.Domain)
		if reason != "" {
			bad = invalid("DomainRule["+strconv.Itoa(i)+"].Domain", r.Domain, reason)
			break
		}
		if r.Security != nil {
			if err := r.Security.validate(); err != nil {
				bad = err
				break
			}
		}
		parsed = append(parsed, rule{DomainRule: r, domain: domain})
	}
	return wrap(next, func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		if err != nil {
			return p, err
		}
		if bad != nil {
			return p, bad
		}
		d := strings.ToLower(r.Domain)
		var best *rule
		for i := range parsed {
			c := &parsed[i]
			if !c.domain.matches(d) {
				continue
			}
			if !c.domain.below {
				best = c // an exact domain before any ".domain" rule
				break
			}
			if best == nil || len(c.domain.name) > len(best.domain.name) {
				best = c
			}
		}
		if best == nil {
			return p, nil
		}
		if best.Security != nil {
			p.Security = *best.Security
			p.Security.Pins = slices.Clone(best.Security.Pins)
		}
		if best.Protection.rank() > p.Protection.rank() {
			p.Protection = best.Protection
		}
		if len(best.Methods) > 0 {
			p.Methods = slices.Clone(best.Methods)
		}
		if best.NoKey != nil {
			p.NoKey = *best.NoKey
		}
		return p, nil
	}, func(n *PolicyNeeds) error {
		if bad != nil {
			return policyError("ForDomains", bad)
		}
		for _, r := range parsed {
			if r.Protection.rank() > n.Protection.rank() {
				n.Protection = r.Protection
			}
			for _, m := range r.Methods {
				if !slices.Contains(n.Methods, m) {
					n.Methods = append(n.Methods, m)
				}
			}
			if r.NoKey != nil && *r.NoKey == NoKeyNotice {
				n.Notice = true
			}
		}
		return nil
	})
}

// policyError is what a Policy (a wrapper, say, of a malformed argument)
// reports from its Needs method, as NewSender reports it: a *ConfigError
// that no longer matches ErrInvalid, since the mistake is not a user's.
func policyError(who string, err error) error {
	if ve, ok := errors.AsType[*ValidationError](err); ok {
		return badConfig("Options.Policy", ve.Value, who+": "+ve.Field+": "+ve.Reason)
	}
	return &ConfigError{Field: "Options.Policy", Reason: who, Err: err}
}

// WithSecurity wraps next so that every recipient's transport security is
// s. Use it to pin a smarthost's key, or, visibly, to lower the floor for
// a development server.
func WithSecurity(next Policy, s Security) Policy {
	next = orRefuse(next, "WithSecurity")
	s.Pins = slices.Clone(s.Pins)
	return wrap(next, func(ctx context.Context, m *Message, r Recipient) (Plan, error) {
		p, err := next.Plan(ctx, m, r)
		p.Security = s
		p.Security.Pins = slices.Clone(s.Pins)
		return p, err
	}, func(*PolicyNeeds) error {
		if err := s.validate(); err != nil {
			return policyError("WithSecurity", err)
		}
		return nil
	})
}

// Recipient is one recipient as a Policy sees it.
type Recipient struct {
	// Address is the addr-spec as it will be sent in RCPT TO (domain in
	// A-label form).
	Address string
	Kind    RecipientKind
	// Domain is the address's domain in A-label form, lower case.
	Domain string
}

// Plan is the delivery plan for one recipient. The zero Plan is the safe
// default: verified TLS, no protection.
type Plan struct {
	// Security is the transport security floor.
	Security Security `json:"security"`
	// Protection is none, required or preferred.
	Protection Protection `json:"protection"`
	// Methods are the protection methods allowed, in order of preference,
	// by the names the Sender's Protectors report ("pgp", "smime"). Empty
	// means every Protector the Sender has, in the order it was given them.
	Methods []string `json:"methods,omitempty"`
	// NoKey is what happens when protection is required and no allowed
	// method has a usable key for the recipient: fail the recipient (the
	// zero value) or send it the Sender's link-only notice instead.
	NoKey NoKeyAction `json:"no_key"`
}

func (p Plan) validate() error {
	if err := p.Security.validate(); err != nil {
		return err
	}
	switch p.Protection {
	case ProtectionNone, ProtectionRequired, ProtectionPreferred:
	default:
		return invalid("Plan.Protection", p.Protection.String(), "unknown protection")
	}
	switch p.NoKey {
	case NoKeyFail, NoKeyNotice:
	default:
		return invalid("Plan.NoKey", p.NoKey.String(), "unknown action")
	}
	for _, m := range p.Methods {
		if m == "" {
			return invalid("Plan.Methods", "", "empty method name")
		}
	}
	return nil
}

// key groups recipients whose plans are identical.
func (p Plan) key() string {
	k := strconv.Itoa(int(p.Security.Level)) + "|" + strconv.Itoa(int(p.Protection)) + "|" + strconv.Itoa(int(p.NoKey)) +
		"|" + strings.Join(p.Methods, ",")
	if len(p.Security.Pins) == 0 {
		return k
	}
	pins := make([]string, len(p.Security.Pins))
	for i, pin := range p.Security.Pins {
		pins[i] = pin.String()
	}
	slices.Sort(pins)
	return k + "|" + strings.Join(pins, ",")
}

// NoKeyAction is what a Sender does for a recipient whose plan requires
// protection when no usable key or certificate exists.
type NoKeyAction int

// No-key actions.
const (
	// NoKeyFail: the recipient receives nothing and Send reports why.
	NoKeyFail NoKeyAction = iota
	// NoKeyNotice: the recipient receives the Sender's link-only notice
	// (Options.Notice) instead of the content, and the Receipt says so.
	NoKeyNotice
)

func (a NoKeyAction) String() string {
	switch a {
	case NoKeyFail:
		return "fail"
	case NoKeyNotice:
		return "notice"
	}
	return fmt.Sprintf("NoKeyAction(%d)", int(a))
}

// MarshalText implements encoding.TextMarshaler.
func (a NoKeyAction) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *NoKeyAction) UnmarshalText(b []byte) error {
	switch string(b) {
	case "fail":
		*a = NoKeyFail
	case "notice":
		*a = NoKeyNotice
	default:
		return fmt.Errorf("mailsec: unknown no-key action %q", b)
	}
	return nil
}

// Protection says whether a recipient's content must be protected end to end.
type Protection int

// Protection choices.
const (
	// ProtectionNone sends the content as it is (over the transport
	// security the plan requires).
	ProtectionNone Protection = iota
	// ProtectionRequired sends only what one of the Sender's Protectors
	// produced for the recipient; without a usable key the recipient gets
	// nothing, or the link-only notice when the plan says so.
	ProtectionRequired
	// ProtectionPreferred protects the content when an allowed method has
	// a usable key for the recipient, and otherwise sends it as it is over
	// the plan's transport security. The Receipt records which happened
	// and why.
	ProtectionPreferred
)

// rank orders protections by strength.
func (p Protection) rank() int {
	switch p {
	case ProtectionRequired:
		return 2
	case ProtectionPreferred:
		return 1
	}
	return 0
}

func (p Protection) String() string {
	switch p {
	case ProtectionNone:
		return "none"
	case ProtectionRequired:
		return "required"
	case ProtectionPreferred:
		return "preferred"
	}
	return fmt.Sprintf("Protection(%d)", int(p))
}

// MarshalText implements encoding.TextMarshaler.
func (p Protection) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Protection) UnmarshalText(b []byte) error {
	switch string(b) {
	case "none":
		*p = ProtectionNone
	case "required":
		*p = ProtectionRequired
	case "preferred":
		*p = ProtectionPreferred
	default:
		return fmt.Errorf("mailsec: unknown protection %q", b)
	}
	return nil
}
