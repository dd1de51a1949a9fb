package tooltest

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsec/mailsec/mailsectest"
)

// PKI is a root CA, an intermediate CA and S/MIME leaf certificates with
// revocation services on loopback, for tests of revocation checking:
// "openssl ocsp" answers for the intermediate's certificates from an
// "openssl ca" database (index.txt), and CRLs made with "openssl ca
// -gencrl" are served over HTTP. Leaves name the responder (AIA) and the
// intermediate's CRL (CDP); the intermediate names the root's CRL.
//
// The responder is reached through an HTTP proxy in the test process,
// which counts requests and lets a test replace what openssl answered
// (OCSPFilter), to replay or forge responses.
type PKI struct {
	Root         *mailsectest.CA
	Intermediate *mailsectest.CA
	// Responder is the delegated OCSP responder certificate, issued by
	// Intermediate with id-kp-OCSPSigning (unless the PKI was made with
	// SignWithIssuer, when openssl signs with Intermediate's key).
	Responder *mailsectest.CA

	// OCSPURL is the responder (the proxy in front of openssl), CRLURL
	// the intermediate's CRL and RootCRLURL the root's.
	OCSPURL, CRLURL, RootCRLURL string

	t      testing.TB
	dir    string
	leaves map[string]tls.Certificate

	mu         sync.Mutex
	crls       map[string][]byte // by path
	crlHits    int
	ocspHits   int
	filter     func(req, resp []byte) []byte
	opensslURL string
	cmd        *exec.Cmd
}

// PKILeaf describes one leaf certificate of a PKI.
type PKILeaf struct {
	Email string
	// Key is the subject key; nil generates RSA-2048.
	Key crypto.Signer
	// Revoked lists the certificate as revoked (keyCompromise) in the
	// intermediate's database, so in its OCSP answers and CRLs.
	Revoked bool
	// OCSPURL and CRLURL replace the PKI's responder and CRL in the
	// certificate; "-" leaves the extension out.
	OCSPURL, CRLURL string
}

// PKIOptions configures NewPKI.
type PKIOptions struct {
	Leaves []PKILeaf
	// RevokeIntermediate lists the intermediate as revoked in the root's
	// database.
	RevokeIntermediate bool
	// SignWithIssuer makes openssl sign OCSP responses with the
	// intermediate's own key instead of a delegated responder's.
	SignWithIssuer bool
}

// NewPKI makes the certificates, writes the databases, starts "openssl
// ocsp" (stopped when t ends) and serves CRLs made by "openssl ca
// -gencrl", valid for a day.
func NewPKI(t testing.TB, o PKIOptions) *PKI {
	t.Helper()
	Need(t, "openssl")
	p := &PKI{t: t, dir: t.TempDir(), leaves: map[string]tls.Certificate{}, crls: map[string][]byte{}}
	crlSrv := httptest.NewServer(http.HandlerFunc(p.serveCRL))
	t.Cleanup(crlSrv.Close)
	p.CRLURL, p.RootCRLURL = crlSrv.URL+"/inter.crl", crlSrv.URL+"/root.crl"
	ocspSrv := httptest.NewServer(http.HandlerFunc(p.proxyOCSP))
	t.Cleanup(ocspSrv.Close)
	p.OCSPURL = ocspSrv.URL + "/"

	var err error
	if p.Root, err = mailsectest.NewCA(); err != nil {
		t.Fatal(err)
	}
	p.Intermediate = p.ca(p.Root, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "mailsectest intermediate", Organization: []string{"mailsectest"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		CRLDistributionPoints: []string{p.RootCRLURL},
	}, 0x100)
	p.Responder = p.ca(p.Intermediate, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "mailsectest OCSP responder", Organization: []string{"mailsectest"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
	}, 0x200)
	status := func(c *x509.Certificate, revoked bool) string {
		line := "V\t" + c.NotAfter.UTC().Format("060102150405Z") + "\t\t"
		if revoked {
			line = "R\t" + c.NotAfter.UTC().Format("060102150405Z") + "\t" + time.Now().Add(-time.Minute).UTC().Format("060102150405Z") + ",keyCompromise\t"
		}
		return line + strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes())) + "\tunknown\t/CN=" + c.Subject.CommonName + "\n"
	}
	rootIndex := status(p.Intermediate.Certificate, o.RevokeIntermediate)
	var interIndex strings.Builder
	interIndex.WriteString(status(p.Responder.Certificate, false))
	for i, l := range o.Leaves {
		c := p.leaf(l, int64(0x1000+i))
		p.leaves[l.Email] = c
		interIndex.WriteString(status(c.Leaf, l.Revoked))
	}
	p.writeCADir("root", p.Root, rootIndex)
	p.writeCADir("inter", p.Intermediate, interIndex.String())
	p.ServeCRL(false, p.GenCRL(false))
	p.ServeCRL(true, p.GenCRL(true))

	signer := p.Responder
	if o.SignWithIssuer {
		signer = p.Intermediate
	}
	p.writeKeyPair("signer", signer)
	p.startOCSP()
	return p
}

// Leaf returns the leaf certificate for email, with its chain (leaf,
// intermediate) and key.
func (p *PKI) Leaf(email string) tls.Certificate {
	c, ok := p.leaves[email]
	if !ok {
		p.t.Fatalf("tooltest: PKI has no leaf for %s", email)
	}
	return c
}

// Pool returns a pool holding the intermediate, for building chains.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Intermediate.Certificate)
	return pool
}

// GenCRL makes a CRL of the root's database (root true) or of the
// intermediate's with "openssl ca -gencrl", passing args on (such as
// -crl_lastupdate and -crl_nextupdate), and returns its DER.
func (p *PKI) GenCRL(root bool, args ...string) []byte {
	p.t.Helper()
	name := "inter"
	if root {
		name = "root"
	}
	d := filepath.Join(p.dir, name)
	out := filepath.Join(d, "crl.pem")
	Must(p.t, nil, nil, "openssl", append([]string{"ca", "-batch", "-config", filepath.Join(d, "ca.cnf"), "-gencrl",
		"-keyfile", filepath.Join(d, "ca.key"), "-cert", filepath.Join(d, "ca.pem"), "-out", out}, args...)...)
	return []byte(Must(p.t, nil, nil, "openssl", "crl", "-in", out, "-outform", "DER"))
}

// GenCRLWith makes a CRL of the intermediate's database signed by ca,
// which claims the intermediate's name: a CRL by an impostor.
func (p *PKI) GenCRLWith(impostor *mailsectest.CA) []byte {
	p.t.Helper()
	d := filepath.Join(p.dir, "inter")
	cert, key := p.writeKeyPair("impostor", impostor)
	out := filepath.Join(p.dir, "impostor.crl")
	Must(p.t, nil, nil, "openssl", "ca", "-batch", "-config", filepath.Join(d, "ca.cnf"), "-gencrl",
		"-keyfile", key, "-cert", cert, "-out", out)
	return []byte(Must(p.t, nil, nil, "openssl", "crl", "-in", out, "-outform", "DER"))
}

// Impostor returns a CA with the intermediate's name and a key of its own.
func (p *PKI) Impostor() *mailsectest.CA {
	p.t.Helper()
	tmpl := *p.Intermediate.Certificate
	tmpl.CRLDistributionPoints = nil
	return p.ca(p.Root, &tmpl, 0x300)
}

// ServeCRL replaces the root's CRL (root true) or the intermediate's.
func (p *PKI) ServeCRL(root bool, der []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if root {
		p.crls["/root.crl"] = der
	} else {
		p.crls["/inter.crl"] = der
	}
}

// OCSPFilter, when set, replaces every response openssl gives (resp) to
// a request (req) by what it returns.
func (p *PKI) OCSPFilter(f func(req, resp []byte) []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.filter = f
}

// Hits returns the number of OCSP requests and CRL requests served.
func (p *PKI) Hits() (ocsp, crl int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ocspHits, p.crlHits
}

// StopOCSP stops openssl: the proxy then answers no OCSP request (it
// drops the connection).
func (p *PKI) StopOCSP() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// DeadURL returns an http URL on loopback where nothing listens.
func DeadURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String() + "/"
	l.Close()
	return u
}

func (p *PKI) serveCRL(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	der, ok := p.crls[r.URL.Path]
	p.crlHits++
	p.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

func (p *PKI) proxyOCSP(w http.ResponseWriter, r *http.Request) {
	req, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.ocspHits++
	target, filter := p.opensslURL, p.filter
	if p.cmd == nil {
		target = ""
	}
	p.mu.Unlock()
	drop := func() {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		http.Error(w, "responder down", http.StatusBadGateway)
	}
	if target == "" {
		drop()
		return
	}
	resp, err := http.Post(target, "application/ocsp-request", strings.NewReader(string(req)))
	if err != nil {
		drop()
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		drop()
		return
	}
	if filter != nil {
		body = filter(req, body)
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(body)
}

func (p *PKI) startOCSP() {
	d := filepath.Join(p.dir, "inter")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "openssl", "ocsp", "-index", filepath.Join(d, "index.txt"), "-CA", filepath.Join(d, "ca.pem"),
		"-rsigner", filepath.Join(p.dir, "signer.pem"), "-rkey", filepath.Join(p.dir, "signer.key"),
		"-port", "0", "-nmin", "60", "-ignore_err")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	p.t.Cleanup(func() { p.StopOCSP(); cancel() })
	// openssl prints "ACCEPT [::]:PORT PID=N" once it listens.
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "ACCEPT" {
				select {
				case found <- f[1]:
				default:
				}
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			p.t.Fatalf("openssl ocsp exited without listening: %s", stderr.String())
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			p.t.Fatalf("openssl ocsp: %q: %v", addr, err)
		}
		p.mu.Lock()
		p.opensslURL = "http://127.0.0.1:" + port + "/"
		p.mu.Unlock()
	case <-time.After(commandTimeout):
		p.t.Fatalf("openssl ocsp did not start: %s", stderr.String())
	}
}

// ca issues a CA (or responder) certificate from tmpl with a fresh
// ECDSA key, signed by parent.
func (p *PKI) ca(parent *mailsectest.CA, tmpl *x509.Certificate, serial int64) *mailsectest.CA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Certificate, key.Public(), parent.Key)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return &mailsectest.CA{Certificate: c, Key: key}
}

func (p *PKI) leaf(l PKILeaf, serial int64) tls.Certificate {
	key := l.Key
	if key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			p.t.Fatal(err)
		}
		key = k
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(serial),
		Subject:        pkix.Name{CommonName: l.Email, Organization: []string{"mailsectest"}},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{l.Email},
	}
	switch l.OCSPURL {
	case "":
		tmpl.OCSPServer = []string{p.OCSPURL}
	case "-":
	default:
		tmpl.OCSPServer = []string{l.OCSPURL}
	}
	switch l.CRLURL {
	case "":
		tmpl.CRLDistributionPoints = []string{p.CRLURL}
	case "-":
	default:
		tmpl.CRLDistributionPoints = []string{l.CRLURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Intermediate.Certificate, key.Public(), p.Intermediate.Key)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, p.Intermediate.Certificate.Raw}, PrivateKey: key, Leaf: c}
}

// writeCADir writes an "openssl ca" directory: configuration, database,
// certificate and key.
func (p *PKI) writeCADir(name string, ca *mailsectest.CA, index string) {
	d := filepath.Join(p.dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		p.t.Fatal(err)
	}
	cnf := fmt.Sprintf("[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = %s\ncrlnumber = %s\ndefault_md = sha256\ndefault_crl_days = 1\n",
		filepath.Join(d, "index.txt"), filepath.Join(d, "crlnumber"))
	files := map[string]string{"ca.cnf": cnf, "index.txt": index, "index.txt.attr": "unique_subject = no\n", "crlnumber": "1000\n"}
	for n, s := range files {
		if err := os.WriteFile(filepath.Join(d, n), []byte(s), 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	p.writeKeyPair(filepath.Join(name, "ca"), ca)
}

// writeKeyPair writes name.pem and name.key under the PKI's directory.
func (p *PKI) writeKeyPair(name string, ca *mailsectest.CA) (cert, key string) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, key = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	if err := os.WriteFile(cert, ca.CertPEM(), 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}
