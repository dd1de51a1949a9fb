// Package postfixtest starts private, throwaway Postfix instances for
// integration tests and stops them when the test ends.
//
// Each instance lives entirely in its own directory (configuration, queue,
// data directory, mail log, Cyrus sasldb, Maildir base) and listens on
// three free loopback ports: a submission port that requires STARTTLS
// before any mail transaction, a submissions port with implicit TLS, and an
// MX-style port that offers STARTTLS and takes mail for the instance's
// domain without AUTH, as a domain's MX host does on port 25. Submission
// clients must authenticate (Cyrus SASL, sasldb). Mail goes only to the
// instance's virtual mail domain, which the virtual(8) delivery agent stores in
// Maildirs that tests can inspect with [Instance.Messages]. Nothing is ever
// relayed: all other transports are error(8) transports. Several instances
// can run at the same time, so test packages may run in parallel.
//
// Postfix is started with "postfix -c DIR start" and needs root: the master
// daemon binds its ports and then runs its services as the mail_owner user
// (normally "postfix"). Root is also why no alternate_config_directories
// entry in /etc/postfix/main.cf is needed: Postfix only insists on that for
// unprivileged users of its set-gid commands. Nothing is written to
// /etc/postfix or /var/spool/postfix.
//
// All services run without chroot. A chrooted smtpd(8) would only see files
// below the queue directory, so the Cyrus SASL configuration and the sasldb
// in the instance directory would be out of its reach, and so would the TLS
// files, shared libraries, SASL plugins and name-service files that a
// chroot would need copies of. Unchrooted operation is also Postfix's
// upstream default. The isolation a chroot adds is worthless for a
// loopback-only test server that lives for the duration of one test.
//
// Start skips the test when Postfix (or saslpasswd2) is not installed or the
// test does not run as root, unless the environment variable CI is set:
// then it fails the test, because integration tests must never be skipped
// silently in CI.
//
// Requirements: Postfix 3.x (tested with Debian 12's 3.7), Cyrus SASL with
// the sasldb auxprop plugin and its saslpasswd2 tool (Debian: postfix,
// sasl2-bin, libsasl2-modules), root privileges, Linux.
package postfixtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Default values for [Config] fields left empty.
const (
	// DefaultHostname is used when Config.Hostname is empty.
	DefaultHostname = "localhost"
	// DefaultDomain is used when Config.Domain is empty.
	DefaultDomain = "example.test"
)

const (
	// startTimeout bounds the whole start-up: configuration, "postfix
	// start" and waiting for both ports to greet.
	startTimeout = 30 * time.Second
	// stopTimeout bounds "postfix stop" and waiting for its processes.
	stopTimeout = 15 * time.Second
	// messageSizeLimit is the instance's message_size_limit (50 MiB).
	messageSizeLimit = 50 << 20
	// portAttempts is how often Start picks new ports when another
	// process grabbed a port between choosing and binding it.
	portAttempts = 3
)

// Config describes a Postfix instance to start.
type Config struct {
	// CertPEM is the PEM-encoded server certificate chain (leaf first)
	// that smtpd presents. It should be valid for Hostname. Empty (with
	// KeyPEM empty too) means a fresh self-signed certificate for Hostname
	// and 127.0.0.1, which Instance.CertPEM holds for clients to trust.
	CertPEM []byte
	// KeyPEM is the PEM-encoded private key for CertPEM.
	KeyPEM []byte

	// Hostname is the instance's myhostname: the name in the SMTP
	// greeting and EHLO reply and the name the certificate should be
	// valid for. It is also the Cyrus SASL realm of all Users. Defaults
	// to DefaultHostname ("localhost").
	Hostname string

	// Domain is the virtual mail domain whose mail is delivered into
	// Maildirs, e.g. "example.test". Mail to any other domain is
	// refused. Defaults to DefaultDomain.
	Domain string

	// Mailboxes are the local parts (e.g. "alice") that get a Maildir
	// under Domain. Mail to other local parts of Domain is rejected at
	// RCPT time. Local parts are case-insensitive and stored in lower
	// case; they may contain ASCII letters, digits and ".", "_", "+", "-".
	Mailboxes []string

	// Users maps SASL user names (plain names like "alice", without a
	// realm) to their passwords. They are stored in the instance's
	// sasldb and can authenticate with PLAIN, LOGIN, CRAM-MD5 and
	// SCRAM-SHA-256. Passwords must not contain line breaks or NUL.
	Users map[string]string

	// MainCF are extra main.cf lines ("name = value"); each replaces the
	// instance's own line for the same parameter (Postfix would warn
	// about a repeated one in every process it starts): to route some mail to a
	// host that does not answer, or shorten the queue's lifetimes so
	// that Postfix sends its delay warnings and bounces within a test.
	// Lines must not contain line breaks.
	MainCF []string
}

// Instance is a running Postfix instance started by [Start]. Its methods are
// safe for concurrent use.
type Instance struct {
	// SubmissionAddr is the "127.0.0.1:PORT" address of the submission
	// service. It offers STARTTLS and requires it before any mail
	// transaction (smtpd_tls_security_level=encrypt); AUTH is offered
	// only after STARTTLS (smtpd_tls_auth_only=yes).
	SubmissionAddr string
	// SubmissionsAddr is the "127.0.0.1:PORT" address of the submissions
	// service, which speaks implicit TLS (smtpd_tls_wrappermode=yes).
	SubmissionsAddr string
	// SMTPAddr is the "127.0.0.1:PORT" address of an MX-style smtpd, as on
	// port 25: STARTTLS offered but not required, no AUTH, mail accepted
	// for Domain's mailboxes only.
	SMTPAddr string
	// LockstepAddr is the "127.0.0.1:PORT" address of a submission
	// service like SubmissionAddr that does not offer PIPELINING or
	// CHUNKING (smtpd_discard_ehlo_keywords): a client there waits for
	// each reply and sends the content with DATA.
	LockstepAddr string
	// Hostname is the instance's myhostname (Config.Hostname or
	// DefaultHostname).
	Hostname string
	// Domain is the virtual mail domain (Config.Domain or DefaultDomain,
	// in lower case).
	Domain string
	// Dir is the instance's root directory. It is removed on cleanup.
	Dir string
	// CertPEM is the certificate chain smtpd presents (Config.CertPEM or
	// the self-signed one made for the instance).
	CertPEM []byte

	confDir   string
	queueDir  string
	mailDir   string
	logFile   string
	mailboxes []string
}

// paths that Start needs from the installed Postfix.
type tools struct {
	postfix, postconf, saslpasswd2 string
}

// Start starts an instance and registers t.Cleanup to stop it and remove its
// directory. When postfix is not installed or the process is not root it
// calls t.Skip, except when the environment variable CI is non-empty: then it
// calls t.Fatal (integration tests must never silently skip in CI). Any other
// failure, including a start-up that takes longer than 30 seconds, fails the
// test with the instance's mail log in the message.
func Start(t testing.TB, cfg Config) *Instance {
	t.Helper()

	tl, err := findTools()
	if err != nil {
		skipOrFatal(t, "postfixtest: %v", err)
	}
	if os.Geteuid() != 0 {
		skipOrFatal(t, "postfixtest: Postfix test instances need root (euid is %d)", os.Geteuid())
	}

	cfg, mailboxes, err := normalize(cfg)
	if err != nil {
		t.Fatalf("postfixtest: invalid Config: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	owner, err := mailOwner(ctx, tl)
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}

	dir, err := makeInstanceDir()
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	inst := &Instance{
		CertPEM:   cfg.CertPEM,
		Hostname:  cfg.Hostname,
		Domain:    cfg.Domain,
		Dir:       dir,
		confDir:   filepath.Join(dir, "conf"),
		queueDir:  filepath.Join(dir, "queue"),
		mailDir:   filepath.Join(dir, "mail"),
		logFile:   filepath.Join(dir, "maillog"),
		mailboxes: mailboxes,
	}
	started := false
	t.Cleanup(func() {
		// Start failures report the log themselves; later test
		// failures get it here.
		if t.Failed() && started {
			t.Logf("postfixtest: mail log of the instance in %s:\n%s", inst.Dir, inst.Log())
		}
		if started {
			if err := inst.stop(tl); err != nil {
				t.Errorf("postfixtest: stopping instance: %v\nmail log:\n%s", err, inst.Log())
			}
		} else {
			// A failed or timed-out start may still have left a
			// master daemon behind; "postfix stop" checks that by
			// itself (via the pid file lock) and is a no-op otherwise.
			inst.stopIfRunning(tl)
		}
		if err := removeAll(inst.Dir); err != nil {
			t.Errorf("postfixtest: %v", err)
		}
	})

	if err := inst.prepare(ctx, tl, cfg, owner); err != nil {
		t.Fatalf("postfixtest: preparing instance in %s: %v", dir, err)
	}

	for attempt := 1; ; attempt++ {
		if err := inst.choosePorts(); err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		err := inst.start(ctx, tl)
		if err == nil {
			started = true
			break
		}
		// Another process may have taken one of the ports between
		// choosing and binding it; choose again.
		if attempt < portAttempts && strings.Contains(inst.Log(), "Address already in use") {
			continue
		}
		t.Fatalf("postfixtest: starting Postfix in %s: %v\nmail log:\n%s", dir, err, inst.Log())
	}

	for _, addr := range []struct {
		addr    string
		wrapped bool
	}{{inst.SubmissionAddr, false}, {inst.SubmissionsAddr, true}, {inst.SMTPAddr, false}, {inst.LockstepAddr, false}} {
		if err := waitGreeting(ctx, addr.addr, addr.wrapped, cfg.Hostname); err != nil {
			t.Fatalf("postfixtest: Postfix in %s does not answer on %s: %v\nmail log:\n%s",
				dir, addr.addr, err, inst.Log())
		}
	}
	return inst
}

// RootCAs returns a pool that trusts the instance's certificate chain.
func (i *Instance) RootCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(i.CertPEM)
	return pool
}

// selfSigned makes a self-signed ECDSA certificate for host and 127.0.0.1
// that can also serve as its own trust anchor.
func selfSigned(host string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// skipOrFatal skips the test, or fails it when running in CI.
func skipOrFatal(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (not skipping because CI is set)", args...)
	}
	t.Skipf(format, args...)
}

// findTools locates the Postfix and Cyrus SASL commands. /usr/sbin is tried
// too because it is often missing from the PATH of non-login shells.
func findTools() (tools, error) {
	find := func(name string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s is not installed (not in PATH or /usr/sbin)", name)
	}
	var tl tools
	var err error
	if tl.postfix, err = find("postfix"); err != nil {
		return tl, err
	}
	if tl.postconf, err = find("postconf"); err != nil {
		return tl, err
	}
	if tl.saslpasswd2, err = find("saslpasswd2"); err != nil {
		return tl, err
	}
	return tl, nil
}

// normalize applies defaults and validates cfg. It returns the lower-cased
// mailboxes, sorted and without duplicates.
func normalize(cfg Config) (Config, []string, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	switch {
	case len(cfg.CertPEM) == 0 && len(cfg.KeyPEM) == 0:
		var err error
		if cfg.CertPEM, cfg.KeyPEM, err = selfSigned(strings.ToLower(cfg.Hostname)); err != nil {
			return cfg, nil, err
		}
	case len(cfg.CertPEM) == 0 || len(cfg.KeyPEM) == 0:
		return cfg, nil, errors.New("CertPEM and KeyPEM go together")
	}
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	cfg.Hostname = strings.ToLower(cfg.Hostname)
	cfg.Domain = strings.ToLower(cfg.Domain)
	if !validName(cfg.Hostname, "-.") {
		return cfg, nil, fmt.Errorf("invalid Hostname %q", cfg.Hostname)
	}
	if !validName(cfg.Domain, "-.") || strings.HasPrefix(cfg.Domain, ".") {
		return cfg, nil, fmt.Errorf("invalid Domain %q", cfg.Domain)
	}
	var mailboxes []string
	for _, m := range cfg.Mailboxes {
		m = strings.ToLower(m)
		if !validName(m, "._+-") || strings.HasPrefix(m, ".") {
			return cfg, nil, fmt.Errorf("invalid mailbox local part %q", m)
		}
		mailboxes = append(mailboxes, m)
	}
	slices.Sort(mailboxes)
	mailboxes = slices.Compact(mailboxes)
	for u, p := range cfg.Users {
		if !validName(u, "._+-") {
			return cfg, nil, fmt.Errorf("invalid SASL user name %q (plain names only, no realm)", u)
		}
		if p == "" || strings.ContainsAny(p, "\r\n\x00") {
			return cfg, nil, fmt.Errorf("invalid password for SASL user %q: must be non-empty, without line breaks or NUL", u)
		}
	}
	return cfg, mailboxes, nil
}

// validName reports whether s is non-empty and consists of ASCII letters,
// digits and the characters in extra.
func validName(s, extra string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(extra, r):
		default:
			return false
		}
	}
	return true
}

// owner is the Postfix mail_owner account, which also owns the Maildirs
// and the sasldb.
type owner struct {
	name     string
	uid, gid int
}

// mailOwner looks up the account named by Postfix's default mail_owner.
func mailOwner(ctx context.Context, tl tools) (owner, error) {
	out, err := exec.CommandContext(ctx, tl.postconf, "-d", "-h", "mail_owner").Output()
	if err != nil {
		return owner{}, fmt.Errorf("postconf -d -h mail_owner: %v", err)
	}
	name := strings.TrimSpace(string(out))
	u, err := user.Lookup(name)
	if err != nil {
		return owner{}, fmt.Errorf("looking up Postfix mail_owner %q: %v", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return owner{}, fmt.Errorf("mail_owner %q has non-numeric uid/gid %q/%q", name, u.Uid, u.Gid)
	}
	if uid == 0 {
		return owner{}, fmt.Errorf("mail_owner %q is root", name)
	}
	return owner{name: name, uid: uid, gid: gid}, nil
}

// makeInstanceDir creates a fresh, root-owned instance directory with mode
// 0755 (the mail_owner must be able to traverse it). The path is kept short
// because Postfix creates UNIX-domain sockets below it, whose paths are
// limited to about 100 bytes.
func makeInstanceDir() (string, error) {
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pfx")
	if err != nil {
		return "", fmt.Errorf("creating instance directory: %v", err)
	}
	// Resolve symlinks: Postfix compares paths (maillog_file_prefixes)
	// and checks ownership of the real directories.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("chmod instance directory: %v", err)
	}
	return dir, nil
}

// prepare writes the configuration, TLS files, Maildir base, virtual
// mailbox table and sasldb.
func (i *Instance) prepare(ctx context.Context, tl tools, cfg Config, o owner) error {
	saslDir := filepath.Join(i.confDir, "sasl")
	for _, d := range []string{i.confDir, saslDir, i.queueDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	// Maildirs are written by virtual(8) with the mail_owner's uid/gid.
	if err := os.Mkdir(i.mailDir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(i.mailDir, o.uid, o.gid); err != nil {
		return err
	}

	certFile := filepath.Join(i.confDir, "cert.pem")
	keyFile := filepath.Join(i.confDir, "key.pem")
	sasldb := filepath.Join(i.Dir, "sasldb2")
	vmailbox := filepath.Join(i.confDir, "vmailbox")

	// smtpd reads certificate and key as root, before dropping privileges.
	if err := writeFile(certFile, cfg.CertPEM, 0o644); err != nil {
		return err
	}
	if err := writeFile(keyFile, cfg.KeyPEM, 0o600); err != nil {
		return err
	}

	var vm strings.Builder
	for _, m := range i.mailboxes {
		// The trailing slash selects Maildir format.
		fmt.Fprintf(&vm, "%s@%s %s/%s/\n", m, i.Domain, i.Domain, m)
	}
	if err := writeFile(vmailbox, []byte(vm.String()), 0o644); err != nil {
		return err
	}

	// Cyrus SASL application configuration for smtpd_sasl_path=smtpd.
	// Debian's Postfix ignores cyrus_sasl_config_path and always reads
	// $config_directory/sasl/smtpd.conf, so the file is put there and
	// cyrus_sasl_config_path points there too (for upstream builds).
	saslConf := fmt.Sprintf("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\n", sasldb)
	if err := writeFile(filepath.Join(saslDir, "smtpd.conf"), []byte(saslConf), 0o644); err != nil {
		return err
	}

	if err := i.createUsers(ctx, tl, cfg, sasldb, o); err != nil {
		return err
	}

	mainCF, err := withOverrides(mainConfig(i, certFile, keyFile, vmailbox, saslDir, o), cfg.MainCF)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(i.confDir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		return err
	}
	return nil
}

// createUsers stores cfg.Users in the sasldb. Users are stored in the realm
// cfg.Hostname, which is also smtpd_sasl_local_domain, so clients
// authenticate with plain names ("alice", stored as "alice@localhost").
// saslpasswd2 keeps the plaintext password (userPassword), which PLAIN,
// LOGIN, CRAM-MD5 and SCRAM all can verify against.
func (i *Instance) createUsers(ctx context.Context, tl tools, cfg Config, sasldb string, o owner) error {
	names := make([]string, 0, len(cfg.Users))
	for u := range cfg.Users {
		names = append(names, u)
	}
	slices.Sort(names)
	for _, u := range names {
		cmd := exec.CommandContext(ctx, tl.saslpasswd2, "-f", sasldb, "-p", "-c", "-u", cfg.Hostname, u)
		cmd.Stdin = strings.NewReader(cfg.Users[u] + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("saslpasswd2 for user %q: %v: %s", u, err, bytes.TrimSpace(out))
		}
	}
	if len(names) == 0 {
		return nil
	}
	// smtpd reads the sasldb after dropping privileges to mail_owner.
	if err := os.Chown(sasldb, o.uid, o.gid); err != nil {
		return err
	}
	return os.Chmod(sasldb, 0o600)
}

// mainConfig returns the instance's main.cf.
func mainConfig(i *Instance, certFile, keyFile, vmailbox, saslDir string, o owner) string {
	lines := []string{
		"# Generated by postfixtest for a throwaway test instance.",
		"compatibility_level = 3.6",
		"queue_directory = " + i.queueDir,
		"data_directory = " + filepath.Join(i.Dir, "data"),
		// Postfix refuses a maillog_file outside maillog_file_prefixes
		// (default "/var, /dev/stdout"); the postlog service in
		// master.cf writes it.
		"maillog_file = " + i.logFile,
		"maillog_file_prefixes = " + i.Dir,
		"",
		"myhostname = " + i.Hostname,
		"mydomain = " + i.Domain,
		"myorigin = $myhostname",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.1/32",
		"biff = no",
		"alias_maps =",
		"alias_database =",
		"",
		"# Never relay or deliver anywhere but the virtual Maildirs.",
		"mydestination =",
		"local_recipient_maps =",
		"relay_domains =",
		"relayhost =",
		"local_transport = error:5.1.1 local delivery is disabled in this test instance",
		"relay_transport = error:5.7.1 relaying is disabled in this test instance",
		"default_transport = error:5.7.1 outbound delivery is disabled in this test instance",
		"",
		"# Keep submitted messages as they were sent: no Date/Message-ID/From",
		"# added, no address rewriting for clients on 127.0.0.1.",
		"local_header_rewrite_clients =",
		"always_add_missing_headers = no",
		"",
		"smtputf8_enable = yes",
		fmt.Sprintf("message_size_limit = %d", messageSizeLimit),
		// virtual(8) refuses to start when its default limit
		// (51200000) is below message_size_limit.
		"virtual_mailbox_limit = 0",
		"mailbox_size_limit = 0",
		"in_flow_delay = 0s",
		"",
		"virtual_mailbox_domains = " + i.Domain,
		"virtual_mailbox_base = " + i.mailDir,
		"virtual_mailbox_maps = texthash:" + vmailbox,
		"virtual_alias_maps =",
		// virtual(8) refuses uids below virtual_minimum_uid (default
		// 100) and so never writes as root; the mail_owner is used.
		fmt.Sprintf("virtual_uid_maps = static:%d", o.uid),
		fmt.Sprintf("virtual_gid_maps = static:%d", o.gid),
		fmt.Sprintf("virtual_minimum_uid = %d", o.uid),
		"",
		"smtpd_tls_cert_file = " + certFile,
		"smtpd_tls_key_file = " + keyFile,
		"smtpd_tls_security_level = encrypt",
		"smtpd_tls_protocols = >=TLSv1.2",
		"smtpd_tls_mandatory_protocols = >=TLSv1.2",
		"smtpd_tls_auth_only = yes",
		"smtpd_tls_loglevel = 1",
		"smtpd_tls_session_cache_database =",
		"",
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = cyrus",
		"smtpd_sasl_path = smtpd",
		"cyrus_sasl_config_path = " + saslDir,
		"smtpd_sasl_local_domain = " + i.Hostname,
		"smtpd_sasl_security_options = noanonymous",
		"smtpd_sasl_tls_security_options = noanonymous",
		"broken_sasl_auth_clients = no",
		"",
		"smtpd_relay_restrictions = permit_sasl_authenticated, reject",
		"smtpd_recipient_restrictions = reject_unlisted_recipient, permit_sasl_authenticated, reject",
		"smtpd_reject_unlisted_recipient = yes",
		"",
	}
	return strings.Join(lines, "\n")
}

// withOverrides returns main.cf text with the lines of extra in place of
// its own for the same parameters, and after them.
func withOverrides(mainCF string, extra []string) (string, error) {
	name := func(l string) string {
		n, _, _ := strings.Cut(l, "=")
		return strings.TrimSpace(n)
	}
	replaced := map[string]bool{}
	for _, l := range extra {
		if strings.ContainsAny(l, "\r\n") || !strings.Contains(l, "=") {
			return "", fmt.Errorf("postfixtest: main.cf line %q is not one \"name = value\" line", l)
		}
		replaced[name(l)] = true
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(mainCF, "\n"), "\n") {
		if !strings.HasPrefix(l, "#") && strings.Contains(l, "=") && replaced[name(l)] {
			continue
		}
		b.WriteString(l + "\n")
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	return b.String(), nil
}

// masterConfig returns the instance's master.cf. Every service runs
// unchrooted (fifth column "n").
func masterConfig(submission, submissions, smtp, lockstep string) string {
	return fmt.Sprintf(`# Generated by postfixtest. service type private unpriv chroot wakeup maxproc command
%s inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
%s inet n - n - - smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
%s inet n - n - - smtpd
  -o syslog_name=postfix/smtp
  -o smtpd_tls_security_level=may
  -o smtpd_tls_auth_only=no
  -o smtpd_sasl_auth_enable=no
  -o smtpd_relay_restrictions=reject_unauth_destination
  -o smtpd_recipient_restrictions=reject_unlisted_recipient
%s inet n - n - - smtpd
  -o syslog_name=postfix/lockstep
  -o smtpd_tls_security_level=encrypt
  -o smtpd_discard_ehlo_keywords=pipelining,chunking
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
virtual    unix  - n n - - virtual
smtp       unix  - - n - - smtp
`, submission, submissions, smtp, lockstep)
}

// choosePorts picks four free loopback ports and writes master.cf for
// them. The listeners are held open until all ports are known so that they
// differ; there is an unavoidable window before Postfix binds them.
func (i *Instance) choosePorts() error {
	var addrs []string
	for range 4 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("choosing a free port: %v", err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	i.SubmissionAddr, i.SubmissionsAddr, i.SMTPAddr, i.LockstepAddr = addrs[0], addrs[1], addrs[2], addrs[3]
	return writeFile(filepath.Join(i.confDir, "master.cf"), []byte(masterConfig(addrs[0], addrs[1], addrs[2], addrs[3])), 0o644)
}

// start runs "postfix -c DIR start", which runs Postfix's integrity checks,
// creates the queue and data directories with the ownership and modes it
// wants (post-install create-missing), and waits until the master daemon
// has initialized ("master -w").
func (i *Instance) start(ctx context.Context, tl tools) error {
	// Output goes to a file, not a pipe: the daemonized master must not
	// inherit a pipe that exec would wait on.
	out, err := os.CreateTemp(i.Dir, "postfix-start-*.out")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, tl.postfix, "-c", i.confDir, "start")
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	if runErr == nil {
		return nil
	}
	text, _ := os.ReadFile(out.Name())
	return fmt.Errorf("postfix -c %s start: %v: %s", i.confDir, runErr, bytes.TrimSpace(text))
}

// masterPID returns the master daemon's pid from its pid file.
func (i *Instance) masterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(i.queueDir, "pid", "master.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("bad master.pid content %q", b)
	}
	return pid, nil
}

// stop runs "postfix -c DIR stop" and waits until every process of the
// instance is gone; processes that linger are killed. The master daemon
// leads its own process group (it calls setsid), and all Postfix daemons of
// the instance belong to that group.
func (i *Instance) stop(tl tools) error {
	pid, pidErr := i.masterPID()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, stopErr := exec.CommandContext(ctx, tl.postfix, "-c", i.confDir, "stop").CombinedOutput()
	if pidErr != nil {
		if stopErr != nil {
			return fmt.Errorf("postfix stop: %v: %s (and no master pid: %v)", stopErr, bytes.TrimSpace(out), pidErr)
		}
		return nil
	}
	if groupGone(ctx, pid) {
		return nil
	}
	// Lingering processes: kill the whole process group.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if !groupGone(ctx2, pid) {
		return fmt.Errorf("processes of group %d survive SIGKILL (postfix stop: %v: %s)", pid, stopErr, bytes.TrimSpace(out))
	}
	return nil
}

// stopIfRunning runs "postfix -c DIR stop" and ignores its result.
func (i *Instance) stopIfRunning(tl tools) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	_ = exec.CommandContext(ctx, tl.postfix, "-c", i.confDir, "stop").Run()
}

// groupGone polls until process group pgid has no members or ctx ends.
func groupGone(ctx context.Context, pgid int) bool {
	for {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// writeFile writes a file and backdates its modification time. Postfix
// treats configuration files and texthash tables modified within the last
// second or so as "hot" (possibly still being written) and re-reads them
// every 300 ms until they cool down, which would add about 2 seconds to every
// start and to the first connections.
func writeFile(name string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(name, data, perm); err != nil {
		return err
	}
	past := time.Now().Add(-time.Hour)
	return os.Chtimes(name, past, past)
}

// removeAll removes dir, retrying briefly in case an exiting daemon still
// writes into it.
func removeAll(dir string) error {
	var err error
	for range 10 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("removing instance directory: %v", err)
}

// waitGreeting connects to addr until it answers with a 220 greeting, over
// TLS if wrapped.
func waitGreeting(ctx context.Context, addr string, wrapped bool, serverName string) error {
	var lastErr error
	for {
		lastErr = greet(ctx, addr, wrapped, serverName)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v (last attempt: %v)", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// greet makes one connection attempt, reads the greeting and says QUIT.
func greet(ctx context.Context, addr string, wrapped bool, serverName string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	} = &net.Dialer{}
	if wrapped {
		d = &tls.Dialer{Config: &tls.Config{
			ServerName: serverName,
			MinVersion: tls.VersionTLS12,
			// Readiness probe only: the caller's certificate may
			// chain to a CA this package does not know.
			InsecureSkipVerify: true,
		}}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %v", err)
	}
	if id, err := tp.Cmd("QUIT"); err == nil {
		tp.StartResponse(id)
		_, _, _ = tp.ReadResponse(221)
		tp.EndResponse(id)
	}
	return nil
}

// Messages returns the raw bytes of every message delivered to mailbox (local
// part) so far (Maildir new/ and cur/), oldest first. The bytes are the
// Maildir file: the message with LF line endings, preceded by the headers
// Postfix adds on delivery (Return-Path, Delivered-To, X-Original-To,
// Received). It returns no messages and no error when nothing has been
// delivered yet, and an error for a mailbox not in Config.Mailboxes.
func (i *Instance) Messages(mailbox string) ([][]byte, error) {
	mailbox = strings.ToLower(mailbox)
	if _, ok := slices.BinarySearch(i.mailboxes, mailbox); !ok {
		return nil, fmt.Errorf("postfixtest: %q is not a configured mailbox of %s", mailbox, i.Domain)
	}
	type entry struct {
		path string
		name string
		mod  time.Time
	}
	var entries []entry
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(i.mailDir, i.Domain, mailbox, sub)
		des, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("postfixtest: %v", err)
		}
		for _, de := range des {
			if !de.Type().IsRegular() {
				continue
			}
			fi, err := de.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // moved between new/ and cur/ meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("postfixtest: %v", err)
			}
			entries = append(entries, entry{filepath.Join(dir, de.Name()), de.Name(), fi.ModTime()})
		}
	}
	// Delivery time order; Maildir names (which start with the delivery
	// time) break ties.
	slices.SortFunc(entries, func(a, b entry) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	msgs := make([][]byte, 0, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(e.path)
		if err != nil {
			return nil, fmt.Errorf("postfixtest: %v", err)
		}
		msgs = append(msgs, b)
	}
	return msgs, nil
}

// WaitMessages polls until mailbox holds at least n messages or ctx ends. It
// returns the messages like [Instance.Messages]; when ctx ends first it also
// returns the messages found so far, with an error that includes the tail of
// the mail log.
func (i *Instance) WaitMessages(ctx context.Context, mailbox string, n int) ([][]byte, error) {
	for {
		msgs, err := i.Messages(mailbox)
		if err != nil {
			return nil, err
		}
		if len(msgs) >= n {
			return msgs, nil
		}
		select {
		case <-ctx.Done():
			return msgs, fmt.Errorf("postfixtest: mailbox %q has %d of %d messages: %w\nmail log (tail):\n%s",
				mailbox, len(msgs), n, ctx.Err(), tail(i.Log(), 30))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Wait waits up to 20 seconds for mailbox to hold n messages and returns
// them, failing t with the instance's mail log otherwise.
func (i *Instance) Wait(t testing.TB, mailbox string, n int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := i.WaitMessages(ctx, mailbox, n)
	if err != nil {
		t.Fatalf("postfixtest: %s: %v\nmail log:\n%s", mailbox, err, i.Log())
	}
	return msgs
}

// Log returns the instance's mail log so far (for test failure messages).
func (i *Instance) Log() string {
	b, err := os.ReadFile(i.logFile)
	if err != nil {
		return fmt.Sprintf("(no mail log: %v)", err)
	}
	return string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
