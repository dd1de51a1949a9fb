// Package dnstest runs a real, DNSSEC-validating resolver over locally
// signed zones, so that integration tests see genuine Authenticated Data
// (AD) bits, authenticated denials and validation failures.
//
// # What to use first
//
// Call [Need] at the top of an integration test, then [Start] with the
// zones the test needs, and point the resolver under test at
// [Server.Addr]:
//
//	srv := dnstest.Start(t,
//		dnstest.Zone{Name: "secure.test.", Signed: true, Records: []string{
//			"secure.test. 300 IN MX 10 mx.secure.test.",
//			"mx.secure.test. 300 IN A 127.0.0.2",
//		}},
//		dnstest.Zone{Name: "plain.test.", Records: []string{
//			"plain.test. 300 IN MX 10 mx.plain.test.",
//		}},
//	)
//	// query srv.Addr (UDP or TCP) with the DO bit set
//
// [TLSA] turns the certificate of a test TLS server into the TLSA record
// that pins it, for the records of a signed zone.
//
// # What runs
//
// Start signs a parent zone "test." itself and makes it the only trust
// anchor. Each [Zone] is a child of "test.": the parent delegates to it
// with NS and glue records, and publishes its DS record when the zone is
// signed (a secure delegation) and none when it is not (an insecure
// delegation, provably so through the parent's NSEC records). Signed zones
// get one ECDSA P-256 combined signing key (flags 257) from ldns-keygen and
// are signed by ldns-signzone with NSEC (RFC 4034 §4), so every denial of
// existence is provable. The signatures of the RRsets listed in
// [Zone.Bogus] are then corrupted, so a validating resolver must answer
// SERVFAIL for exactly those RRsets (RFC 4035 §5.5) while the rest of the
// zone stays secure.
//
// One NSD instance serves all zones authoritatively; one Unbound instance
// validates ("validator iterator") with a stub zone for "test." that
// points at NSD. Both listen on free loopback ports, keep everything
// (configuration, keys, zone files, logs) in a temporary directory, run
// without chroot and without dropping privileges, and are stopped when
// the test ends; the logs are printed when the test has failed. Unbound
// only sends queries from 127.0.0.1, so names outside "test." fail instead
// of reaching the network. Nothing is shared between calls to Start: each
// call starts its own pair of servers, which takes well under a second.
//
// # Threat model
//
// None: this is test infrastructure. The keys are throwaway, the servers
// accept queries from loopback only, and nothing here is fit for serving
// real zones.
//
// # Requirements
//
// Debian packages unbound, nsd and ldnsutils (ldns-keygen,
// ldns-signzone); tested with Unbound 1.17, NSD 4.6 and ldns 1.8 on
// Debian 12. [Need] skips the test when a program is missing, unless the
// environment variable CI is set: then it fails the test, because
// integration tests must never be skipped silently in CI.
package dnstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Parent is the zone Start signs itself and uses as the trust anchor;
// every [Zone] must lie below it. "test." is reserved for testing
// (RFC 6761 §6.2), so no real name can be shadowed.
const Parent = "test."

const (
	// ttl is the TTL of every record Start adds itself.
	ttl = 300
	// startTimeout bounds the whole of Start: keys, signing, both servers.
	startTimeout = 30 * time.Second
	// stopTimeout bounds the wait for a server to exit after SIGTERM.
	stopTimeout = 5 * time.Second
	// portAttempts is how often a server is started on a fresh port when
	// another process took the free port first.
	portAttempts = 3
	// maxRecords bounds the records of one zone, so that a mistaken
	// caller cannot make Start sign for minutes.
	maxRecords = 10000
)

// Zone is one child zone of [Parent].
type Zone struct {
	// Name is the zone's apex, e.g. "secure.test.": a name below
	// "test.", not below another Zone of the same Start call.
	Name string
	// Signed signs the zone and publishes its DS record in the parent,
	// which makes it secure. When false the parent delegates to it
	// without DS, which makes it provably insecure.
	Signed bool
	// Records are zone-file lines with absolute names inside the zone,
	// e.g. "secure.test. 300 IN MX 10 mx.secure.test.". Start adds the
	// SOA record, the apex NS record "ns.<Name>" and its address
	// 127.0.0.1 itself; Records must not hold SOA, NS at the apex, or
	// DNSSEC records (DNSKEY, RRSIG, NSEC, NSEC3, NSEC3PARAM, DS).
	Records []string
	// Bogus lists RRsets as "owner TYPE", e.g.
	// "_25._tcp.mx.secure.test. TLSA", whose signatures are corrupted
	// after signing, so a validating resolver answers SERVFAIL for
	// them only. Only a signed zone can have bogus RRsets, and each one
	// must exist.
	Bogus []string
}

// Server is a running pair of servers: a validating resolver and the
// authoritative server behind it.
type Server struct {
	// Addr is the validating resolver (Unbound), "127.0.0.1:port", for
	// UDP and TCP. Its answers carry a real AD bit.
	Addr string
	// AuthAddr is the authoritative server (NSD) for "test." and every
	// Zone, "127.0.0.1:port", for UDP and TCP.
	AuthAddr string
}

// tools are the absolute paths of the programs.
type tools struct {
	unbound, nsd, keygen, signzone string
}

// lookTool finds a program in PATH or, because unprivileged users often
// lack the sbin directories in their PATH, in /usr/sbin and /sbin.
func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p, err2 := exec.LookPath(filepath.Join(dir, name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

// findTools looks up every program Start runs.
func findTools() (tools, error) {
	var tl tools
	for _, p := range []struct {
		name string
		path *string
	}{
		{"unbound", &tl.unbound},
		{"nsd", &tl.nsd},
		{"ldns-keygen", &tl.keygen},
		{"ldns-signzone", &tl.signzone},
	} {
		path, err := lookTool(p.name)
		if err != nil {
			return tools{}, fmt.Errorf("dnstest: %s is not installed (Debian packages: unbound, nsd, ldnsutils): %w", p.name, err)
		}
		*p.path = path
	}
	return tl, nil
}

// Need skips t when unbound, nsd, ldns-keygen or ldns-signzone is not
// installed, or fails t instead when the environment variable CI is set.
// [Start] calls it too; calling it first skips a test before it does any
// other set-up.
func Need(t testing.TB) {
	t.Helper()
	if _, err := findTools(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("required in CI: %v", err)
		} else {
			t.Skip(err)
		}
	}
}

// Start builds and signs "test." and the given zones, starts NSD and a
// validating Unbound for them on free loopback ports, and returns when
// Unbound answers for "test." with the AD bit set. Everything is stopped
// and removed when t ends. Start fails t when a zone is invalid or a
// server cannot start.
func Start(t testing.TB, zones ...Zone) *Server {
	t.Helper()
	Need(t)
	tl, err := findTools()
	if err != nil {
		t.Fatal(err)
	}
	zs, err := checkZones(zones)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Registered after TempDir and before the servers' own clean-ups,
	// so it runs once both servers have stopped and before the
	// directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs(dir))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	anchor, err := buildZones(ctx, tl, dir, zs)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	nsdProc, nsdPort, err := startWithRetry(ctx, dir, "nsd", func(port int) (*process, error) {
		if err := writeFile(filepath.Join(dir, "nsd.conf"), nsdConfig(dir, port, zs)); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(dir, "xfr"), 0o700); err != nil {
			return nil, err
		}
		return startProcess(dir, "nsd", tl.nsd, "-d", "-c", filepath.Join(dir, "nsd.conf"))
	}, func(ctx context.Context, addr string) error {
		return probe(ctx, addr, false)
	})
	if nsdProc != nil {
		t.Cleanup(nsdProc.stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.AuthAddr = loopback(nsdPort)

	ubProc, ubPort, err := startWithRetry(ctx, dir, "unbound", func(port int) (*process, error) {
		if err := writeFile(filepath.Join(dir, "unbound.conf"), unboundConfig(dir, port, nsdPort, anchor)); err != nil {
			return nil, err
		}
		return startProcess(dir, "unbound", tl.unbound, "-d", "-c", filepath.Join(dir, "unbound.conf"))
	}, func(ctx context.Context, addr string) error {
		return probe(ctx, addr, true)
	})
	if ubProc != nil {
		t.Cleanup(ubProc.stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = loopback(ubPort)
	return s
}

func loopback(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// zone is a checked Zone: canonical name, parsed records, parsed Bogus
// entries.
type zone struct {
	name    string
	signed  bool
	records []dns.RR
	bogus   []rrset
}

// rrset names one RRset: canonical owner name and type.
type rrset struct {
	owner string
	typ   uint16
}

func (r rrset) String() string { return r.owner + " " + dns.TypeToString[r.typ] }

// checkZones validates zones before anything is written or run.
func checkZones(zones []Zone) ([]zone, error) {
	out := make([]zone, 0, len(zones))
	for _, z := range zones {
		cz, err := checkZone(z)
		if err != nil {
			return nil, err
		}
		for _, o := range out {
			if dns.IsSubDomain(o.name, cz.name) || dns.IsSubDomain(cz.name, o.name) {
				return nil, fmt.Errorf("dnstest: zone %s overlaps zone %s (nested zones are not supported)", cz.name, o.name)
			}
		}
		out = append(out, cz)
	}
	return out, nil
}

// canonicalName lower-cases a domain name and makes it absolute. Names
// are ASCII (internationalized names in A-label form, RFC 5890 §2.3.2.1)
// without the characters zone files treat specially.
func canonicalName(s string) (string, error) {
	bad := s == ""
	for i := 0; i < len(s) && !bad; i++ {
		bad = s[i] <= ' ' || s[i] >= 0x7f || strings.IndexByte(`\;"()$@`, s[i]) >= 0
	}
	c := dns.CanonicalName(s)
	if _, ok := dns.IsDomainName(c); bad || !ok {
		return "", fmt.Errorf("dnstest: %q is not a valid domain name", s)
	}
	return c, nil
}

func checkZone(z Zone) (zone, error) {
	name, err := canonicalName(z.Name)
	if err != nil {
		return zone{}, err
	}
	if name == Parent || !dns.IsSubDomain(Parent, name) {
		return zone{}, fmt.Errorf("dnstest: zone %s is not below %s", name, Parent)
	}
	if len(z.Records) > maxRecords {
		return zone{}, fmt.Errorf("dnstest: zone %s has %d records, more than %d", name, len(z.Records), maxRecords)
	}
	cz := zone{name: name, signed: z.Signed}
	for _, line := range z.Records {
		rr, err := checkRecord(name, line)
		if err != nil {
			return zone{}, err
		}
		cz.records = append(cz.records, rr)
	}
	if len(z.Bogus) > 0 && !z.Signed {
		return zone{}, fmt.Errorf("dnstest: zone %s is not signed, so it cannot have bogus RRsets", name)
	}
	for _, b := range z.Bogus {
		r, err := parseRRset(b)
		if err != nil {
			return zone{}, err
		}
		if !dns.IsSubDomain(name, r.owner) {
			return zone{}, fmt.Errorf("dnstest: bogus RRset %s is not in zone %s", r, name)
		}
		cz.bogus = append(cz.bogus, r)
	}
	return cz, nil
}

// checkRecord parses one zone-file line of zone and refuses what Start
// adds itself or what would break signing.
func checkRecord(zone, line string) (dns.RR, error) {
	if strings.ContainsAny(line, "\r\n") {
		return nil, fmt.Errorf("dnstest: zone %s: record %q: one record per line", zone, line)
	}
	rr, err := dns.NewRR(line)
	if err != nil {
		return nil, fmt.Errorf("dnstest: zone %s: record %q: %w", zone, line, err)
	}
	if rr == nil {
		return nil, fmt.Errorf("dnstest: zone %s: record %q is empty", zone, line)
	}
	// The zone file gets the record as miekg/dns writes it; refuse what
	// does not read back, such as a record without data.
	if back, err := dns.NewRR(rr.String()); err != nil || back == nil {
		return nil, fmt.Errorf("dnstest: zone %s: record %q does not survive a round trip: %v", zone, line, err)
	}
	h := rr.Header()
	h.Name = dns.CanonicalName(h.Name)
	if h.Class != dns.ClassINET {
		return nil, fmt.Errorf("dnstest: zone %s: record %q is not of class IN", zone, line)
	}
	if !dns.IsSubDomain(zone, h.Name) {
		return nil, fmt.Errorf("dnstest: zone %s: record %q lies outside the zone", zone, line)
	}
	switch h.Rrtype {
	case dns.TypeSOA, dns.TypeDNSKEY, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeNSEC3PARAM, dns.TypeDS:
		return nil, fmt.Errorf("dnstest: zone %s: record %q: %s records are made by Start", zone, line, dns.TypeToString[h.Rrtype])
	case dns.TypeNS:
		if h.Name == zone {
			return nil, fmt.Errorf("dnstest: zone %s: record %q: the apex NS record is made by Start", zone, line)
		}
	}
	return rr, nil
}

// parseRRset parses an "owner TYPE" entry of Zone.Bogus.
func parseRRset(s string) (rrset, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return rrset{}, fmt.Errorf("dnstest: bogus RRset %q is not \"owner TYPE\"", s)
	}
	owner, err := canonicalName(f[0])
	if err != nil {
		return rrset{}, fmt.Errorf("dnstest: bogus RRset %q: %w", s, err)
	}
	typ, ok := dns.StringToType[strings.ToUpper(f[1])]
	if !ok {
		return rrset{}, fmt.Errorf("dnstest: bogus RRset %q: unknown type %q", s, f[1])
	}
	if typ == dns.TypeRRSIG {
		return rrset{}, fmt.Errorf("dnstest: bogus RRset %q: RRSIG records are not signed", s)
	}
	return rrset{owner: owner, typ: typ}, nil
}

// nsName is the name server of a zone, with address 127.0.0.1.
func nsName(zone string) string { return "ns." + zone }

// soaLine is the SOA record of a zone Start builds.
func soaLine(zone string) string {
	return fmt.Sprintf("%s %d IN SOA %s hostmaster.%s 1 3600 600 86400 %d", zone, ttl, nsName(zone), zone, ttl)
}

// buildZones writes and signs every child zone and then the parent, and
// returns the path of the trust anchor file (the parent's DS record).
func buildZones(ctx context.Context, tl tools, dir string, zs []zone) (string, error) {
	var parent bytes.Buffer
	fmt.Fprintln(&parent, soaLine(Parent))
	fmt.Fprintf(&parent, "%s %d IN NS %s\n", Parent, ttl, nsName(Parent))
	fmt.Fprintf(&parent, "%s %d IN A 127.0.0.1\n", nsName(Parent), ttl)
	for _, z := range zs {
		var b bytes.Buffer
		fmt.Fprintln(&b, soaLine(z.name))
		fmt.Fprintf(&b, "%s %d IN NS %s\n", z.name, ttl, nsName(z.name))
		fmt.Fprintf(&b, "%s %d IN A 127.0.0.1\n", nsName(z.name), ttl)
		for _, rr := range z.records {
			fmt.Fprintln(&b, rr.String())
		}
		file := filepath.Join(dir, zoneFile(z.name))
		if err := writeFile(file, b.String()); err != nil {
			return "", err
		}
		// The delegation: NS and glue (RFC 1034 §4.2.1).
		fmt.Fprintf(&parent, "%s %d IN NS %s\n", z.name, ttl, nsName(z.name))
		fmt.Fprintf(&parent, "%s %d IN A 127.0.0.1\n", nsName(z.name), ttl)
		if !z.signed {
			continue
		}
		ds, err := signZone(ctx, tl, dir, z.name, z.bogus)
		if err != nil {
			return "", err
		}
		// The DS record makes the delegation secure (RFC 4035 §2.4).
		parent.WriteString(ds)
	}
	if err := writeFile(filepath.Join(dir, zoneFile(Parent)), parent.String()); err != nil {
		return "", err
	}
	ds, err := signZone(ctx, tl, dir, Parent, nil)
	if err != nil {
		return "", err
	}
	anchor := filepath.Join(dir, "trust-anchor.ds")
	if err := writeFile(anchor, ds); err != nil {
		return "", err
	}
	return anchor, nil
}

// zoneFile is the name of a zone's unsigned file; NSD serves signed zones
// from the same name with ".signed" appended.
func zoneFile(zone string) string { return strings.TrimSuffix(zone, ".") + ".zone" }

// servedFile is the file NSD serves for a zone.
func servedFile(z zone) string {
	if z.signed {
		return zoneFile(z.name) + ".signed"
	}
	return zoneFile(z.name)
}

// signZone makes a combined signing key for zone, signs its file with
// NSEC, corrupts the signatures of the bogus RRsets and returns the DS
// record (SHA-256 digest) of the key.
func signZone(ctx context.Context, tl tools, dir, zone string, bogus []rrset) (string, error) {
	// ECDSA P-256 (algorithm 13, RFC 6605) is quick to make and to
	// check; flags 257 (-k) make it usable as the zone's only key.
	out, err := run(ctx, dir, tl.keygen, "-a", "ECDSAP256SHA256", "-k", zone)
	if err != nil {
		return "", err
	}
	base := strings.TrimSpace(out)
	if base == "" || strings.ContainsAny(base, "/\n") {
		return "", fmt.Errorf("dnstest: ldns-keygen for %s printed %q", zone, out)
	}
	ds, err := os.ReadFile(filepath.Join(dir, base+".ds"))
	if err != nil {
		return "", fmt.Errorf("dnstest: DS record of %s: %w", zone, err)
	}
	now := time.Now()
	// An inception an hour back tolerates clock steps; thirty days are
	// more than any test runs.
	inception := strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)
	expiration := strconv.FormatInt(now.Add(30*24*time.Hour).Unix(), 10)
	file := zoneFile(zone)
	if _, err := run(ctx, dir, tl.signzone, "-i", inception, "-e", expiration, "-o", zone, file, base); err != nil {
		return "", err
	}
	if len(bogus) > 0 {
		if err := corrupt(filepath.Join(dir, file+".signed"), zone, bogus); err != nil {
			return "", err
		}
	}
	return string(ds), nil
}

// corrupt flips bits in the signatures of the given RRsets of a signed
// zone file and writes it back. Every RRset must have a signature.
func corrupt(file, zone string, bogus []rrset) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	hit := make(map[rrset]bool, len(bogus))
	for _, b := range bogus {
		hit[b] = false
	}
	var out bytes.Buffer
	zp := dns.NewZoneParser(bytes.NewReader(data), zone, file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if sig, isSig := rr.(*dns.RRSIG); isSig {
			key := rrset{owner: dns.CanonicalName(sig.Hdr.Name), typ: sig.TypeCovered}
			if _, want := hit[key]; want {
				raw, err := base64.StdEncoding.DecodeString(sig.Signature)
				if err != nil || len(raw) == 0 {
					return fmt.Errorf("dnstest: signature of %s in %s: %v", key, file, err)
				}
				// Any change invalidates the signature (RFC 4035
				// §5.3.3); flip the first and last byte.
				raw[0] ^= 0xff
				raw[len(raw)-1] ^= 0xff
				sig.Signature = base64.StdEncoding.EncodeToString(raw)
				hit[key] = true
			}
		}
		out.WriteString(rr.String())
		out.WriteByte('\n')
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnstest: reading %s: %w", file, err)
	}
	for _, b := range bogus {
		if !hit[b] {
			return fmt.Errorf("dnstest: bogus RRset %s does not exist in zone %s", b, zone)
		}
	}
	return writeFile(file, out.String())
}

// nsdConfig serves every zone from dir on 127.0.0.1:port, without
// chroot, privilege drop, database or control socket.
func nsdConfig(dir string, port int, zs []zone) string {
	var b strings.Builder
	fmt.Fprintf(&b, `server:
	ip-address: 127.0.0.1@%d
	port: %d
	do-ip4: yes
	do-ip6: no
	reuseport: no
	server-count: 1
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	logfile: %q
	verbosity: 1
	refuse-any: no
remote-control:
	control-enable: no
`, port, port, dir,
		filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"),
		filepath.Join(dir, "xfr"), filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"))
	fmt.Fprintf(&b, "zone:\n\tname: %q\n\tzonefile: %q\n", Parent, zoneFile(Parent)+".signed")
	for _, z := range zs {
		fmt.Fprintf(&b, "zone:\n\tname: %q\n\tzonefile: %q\n", z.name, servedFile(z))
	}
	return b.String()
}

// unboundConfig validates everything below "test." against anchor and
// asks NSD for it.
func unboundConfig(dir string, port, nsdPort int, anchor string) string {
	return fmt.Sprintf(`server:
	interface: 127.0.0.1
	port: %d
	do-ip4: yes
	do-ip6: no
	do-udp: yes
	do-tcp: yes
	outgoing-interface: 127.0.0.1
	num-threads: 1
	so-reuseport: no
	username: ""
	chroot: ""
	directory: %q
	pidfile: %q
	logfile: %q
	use-syslog: no
	use-systemd: no
	verbosity: 1
	log-servfail: yes
	val-log-level: 2
	trust-anchor-signaling: no
	do-not-query-localhost: no
	module-config: "validator iterator"
	local-zone: %q nodefault
	trust-anchor-file: %q
	msg-cache-size: 1m
	rrset-cache-size: 1m
	key-cache-size: 1m
	neg-cache-size: 1m
stub-zone:
	name: %q
	stub-addr: 127.0.0.1@%d
remote-control:
	control-enable: no
`, port, dir, filepath.Join(dir, "unbound.pid"), filepath.Join(dir, "unbound.log"),
		Parent, anchor, Parent, nsdPort)
}

// startWithRetry picks a free port, starts a server on it and waits until
// ready succeeds; when the server exits first (another process took the
// port), it tries again on another port. The returned process, if not
// nil, must be stopped even when err is not nil.
func startWithRetry(ctx context.Context, dir, name string, start func(port int) (*process, error), ready func(ctx context.Context, addr string) error) (*process, int, error) {
	var lastErr error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			return nil, 0, err
		}
		p, err := start(port)
		if err != nil {
			return nil, 0, fmt.Errorf("dnstest: starting %s: %w", name, err)
		}
		err = p.waitReady(ctx, loopback(port), ready)
		if err == nil {
			return p, port, nil
		}
		if !errors.Is(err, errExited) {
			return p, 0, fmt.Errorf("dnstest: %s on port %d: %w", name, port, err)
		}
		p.stop()
		lastErr = fmt.Errorf("dnstest: %s on port %d: %w\n%s", name, port, err, logs(dir))
	}
	return nil, 0, lastErr
}

// freePort returns a loopback port that is free for both UDP and TCP at
// the time of the call.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp4", loopback(port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("dnstest: no loopback port is free for both UDP and TCP")
}

// Errors that end waiting for a server.
var (
	// errExited reports that a server exited before it was ready.
	errExited = errors.New("server exited before it was ready")
	// errUnauthenticated reports that the resolver answered without AD,
	// which waiting will not change.
	errUnauthenticated = errors.New("answer is not authenticated: the chain of trust is broken")
)

// process is a server started in its own process group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // the exit status, set before done is closed
}

// startProcess starts a program in dir with its standard output and
// error appended to dir/<name>.out.
func startProcess(dir, name, path string, args ...string) (*process, error) {
	out, err := os.OpenFile(filepath.Join(dir, name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that stop reaches NSD's child
	// processes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls ready until it succeeds, the process exits or ctx ends.
func (p *process) waitReady(ctx context.Context, addr string, ready func(context.Context, string) error) error {
	var err error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%w: %v", errExited, p.err)
		default:
		}
		attempt, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err = ready(attempt, addr)
		cancel()
		if err == nil || errors.Is(err, errUnauthenticated) {
			return err
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w: %v", errExited, p.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last probe: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to the process group, then SIGKILL when it has not
// exited within stopTimeout, and waits for the exit.
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Child processes (NSD's servers) may outlive the leader briefly.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// probe asks addr for the SOA record of "test.". For the resolver
// (validating), the answer must be authenticated, which proves the
// whole chain: trust anchor, NSD, signatures.
func probe(ctx context.Context, addr string, validating bool) error {
	m := new(dns.Msg)
	m.SetQuestion(Parent, dns.TypeSOA)
	m.SetEdns0(dns.DefaultMsgSize, true)
	m.AuthenticatedData = true
	m.RecursionDesired = validating
	c := &dns.Client{Net: "udp"}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return fmt.Errorf("SOA %s: %s with %d answers", Parent, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	if validating && !r.AuthenticatedData {
		return fmt.Errorf("SOA %s: %w", Parent, errUnauthenticated)
	}
	if !validating && !r.Authoritative {
		return fmt.Errorf("SOA %s: answer is not authoritative", Parent)
	}
	return nil
}

// run runs a program in dir and returns its standard output.
func run(ctx context.Context, dir, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("dnstest: %s %s: %w\n%s%s", filepath.Base(path), strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String(), nil
}

func writeFile(name, data string) error {
	return os.WriteFile(name, []byte(data), 0o600)
}

// logs returns the servers' logs and outputs in dir, each cut to its last
// lines.
func logs(dir string) string {
	var b strings.Builder
	for _, f := range []string{"nsd.log", "nsd.out", "unbound.log", "unbound.out"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s\n%s", f, tail(data, 200))
	}
	if b.Len() == 0 {
		return "dnstest: no server logs in " + dir
	}
	return b.String()
}

// tail returns the last n lines of data.
func tail(data []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
