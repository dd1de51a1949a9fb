package transport

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailsec/mailsec"
)

// Direct's sessions are kept for reuse in one pool per MX host, with the
// limits and health checks of a Submission's pool. A session is reused
// only for a delivery whose requirement for that host is the one it was
// established under, which directKey spells out in full: nothing a
// delivery's requirement rests on is left out of it.

// DefaultMaxConnsPerHost bounds, by default, the sessions Direct has open
// at once with one MX host (see Direct.MaxConnsPerHost).
const DefaultMaxConnsPerHost = 8

// directPools holds Direct's pools, one per MX host, created on first use
// and dropped once empty.
type directPools struct {
	max         int
	maxMessages int
	idleTimeout time.Duration
	probeAfter  time.Duration
	logger      *slog.Logger

	mu     sync.Mutex
	byHost map[string]*hostPool
	closed bool
	swept  int // pools kept by the last sweep
}

// hostPool is one MX host's pool and the deliveries using it.
type hostPool struct {
	*pool
	users int
}

// acquire returns host's pool, for use until release.
func (dp *directPools) acquire(host string) (*hostPool, error) {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.closed {
		return nil, ErrClosed
	}
	hp := dp.byHost[host]
	if hp == nil {
		dp.sweepLocked()
		hp = &hostPool{pool: &pool{
			host:        host,
			max:         dp.max,
			maxMessages: dp.maxMessages,
			idleTimeout: dp.idleTimeout,
			probeAfter:  dp.probeAfter,
			idle:        map[string][]*session{},
			logger:      dp.logger,
		}}
		dp.byHost[host] = hp
	}
	hp.users++
	return hp, nil
}

func (dp *directPools) release(hp *hostPool) {
	dp.mu.Lock()
	hp.users--
	dp.mu.Unlock()
}

// sweepLocked drops the pools no delivery uses and no session is open
// in, once their number has doubled since the last sweep, so that a
// process that reaches many domains over time does not keep a pool for
// each.
func (dp *directPools) sweepLocked() {
	if len(dp.byHost) < 2*dp.swept+16 {
		return
	}
	for host, hp := range dp.byHost {
		if hp.users == 0 && hp.empty() {
			delete(dp.byHost, host)
		}
	}
	dp.swept = len(dp.byHost)
}

// empty reports whether no session is open in p.
func (p *pool) empty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open == 0
}

func (dp *directPools) isClosed() bool {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	return dp.closed
}

// close closes every idle session and makes later deliveries fail with
// ErrClosed. Sessions in use are closed when their delivery ends.
func (dp *directPools) close() {
	dp.mu.Lock()
	dp.closed = true
	all := make([]*hostPool, 0, len(dp.byHost))
	for _, hp := range dp.byHost {
		all = append(all, hp)
	}
	dp.mu.Unlock()
	for _, hp := range all {
		hp.close()
	}
}

// directKey names the requirement a session with an MX host is
// established under, for one delivery: two deliveries share a session only
// when their keys are equal. It holds the recipient domain, the MX host,
// the address connected to, the name sent as SNI and checked, the
// delivery's level, what the level made of the host (the policy, the TLS
// mode, whether plaintext is allowed, the verification label), the DANE
// records and reference names, the pins, REQUIRETLS and TLS-Required: No,
// and the domain's MTA-STS policy (its id and its text) whenever it has one,
// whatever set the requirement. Every value is quoted, so that no value can
// pass for another field.
func directKey(d *mailsec.Delivery, ds *domainState, host, addr string, hp *hostPlan) string {
	var b strings.Builder
	field := func(name, v string) {
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(v))
		b.WriteByte(';')
	}
	list := func(name string, vs []string) {
		vs = slices.Clone(vs)
		slices.Sort(vs)
		field(name, strings.Join(vs, "\n"))
	}
	field("domain", ds.domain)
	field("mx", host)
	field("addr", addr)
	field("sni", hp.serverName)
	field("level", d.Security.Level.String())
	field("policy", hp.policy)
	field("mode", strconv.Itoa(int(hp.pol.mode)))
	field("optional", strconv.FormatBool(hp.pol.optional))
	field("loopback-only", strconv.FormatBool(hp.pol.loopbackOnly))
	field("label", string(hp.pol.label))
	tlsa := make([]string, len(hp.pol.tlsa))
	for i, r := range hp.pol.tlsa {
		tlsa[i] = r.String()
	}
	list("tlsa", tlsa)
	field("names", strings.Join(hp.pol.names, "\n")) // in order: the first is matched first
	pins := make([]string, len(hp.pol.pins))
	for i, p := range hp.pol.pins {
		pins[i] = p.String()
	}
	list("pins", pins)
	field("requiretls", strconv.FormatBool(d.RequireTLS))
	field("tls-required-no", strconv.FormatBool(d.TLSRequiredNo))
	if ds.sts != nil && ds.sts.Policy != nil {
		field("mta-sts-id", ds.sts.ID)
		field("mta-sts", strings.Join(stsLines(ds.sts.Policy), "\n"))
	}
	return b.String()
}
