// Keyupload is a net/http application whose users upload their own
// OpenPGP public key or S/MIME certificate, so that the mail it sends them
// (lab results, say) is encrypted to it end to end.
//
// The upload handler checks the key with the library's own verdict for
// the user's address (pgp.CheckKey, smime's CheckCertificate: the checks
// a Send makes), so a key accepted here is one the next Send encrypts to.
// A bad key is refused with HTTP 422 and the verdict in words ("expired",
// "no user ID for this address", "the upload holds a secret key"...); a
// good one is stored with its fingerprint and expiry in the app's own
// database (database/sql, SQLite here), replacing the user's previous
// one. A pgp.KeySource and a smime.CertSource read that table on every
// Send, so the next Send uses the key just uploaded.
//
// Run it against a real smarthost:
//
//	SMTP_ADDR=smtp.example.com:465 SMTP_USER=app SMTP_PASSWORD=... go run ./examples/keyupload
//	gpg --armor --export ann@example.org | curl --data-binary @- http://localhost:8080/users/ann@example.org/key
//	curl -d text='Your results are in.' http://localhost:8080/users/ann@example.org/send
//
// Authentication is left out: a real application takes the address from
// the logged-in user's account, never from the request.
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
	"github.com/mailsec/mailsec/transport"
)

// schema is the table of uploaded keys: one OpenPGP key and one S/MIME
// certificate (with its chain) per address at most.
const schema = `CREATE TABLE IF NOT EXISTS user_keys (
	address     TEXT    NOT NULL,
	kind        TEXT    NOT NULL CHECK (kind IN ('pgp', 'smime')),
	fingerprint TEXT    NOT NULL,
	expires     INTEGER,          -- Unix seconds; NULL: never
	data        BLOB    NOT NULL, -- armored public key, or PEM chain
	uploaded    INTEGER NOT NULL,
	PRIMARY KEY (address, kind)
)`

// maxUpload bounds an upload; the libraries refuse more than 1 MiB.
const maxUpload = 1 << 20

// App holds what the handlers share; each is safe for concurrent use.
type App struct {
	DB     *sql.DB
	Sender *mailsec.Sender
	Logger *slog.Logger
	// PGPOptions are the options of the Sender's pgp.Protector, and
	// SMIME is its smime.Protector: uploads are checked with them, so
	// that the upload check and the Send decide alike.
	PGPOptions *pgp.Options
	SMIME      *smime.Protector
	From       string
}

// Open creates the table and the Protectors that read it, and a Sender
// that requires protection for every recipient through tr.
func Open(ctx context.Context, db *sql.DB, tr mailsec.Transport, roots *x509.CertPool, from string, logger *slog.Logger) (*App, error) {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("creating user_keys: %w", err)
	}
	a := &App{DB: db, Logger: logger, PGPOptions: &pgp.Options{}, From: from}
	pp, err := pgp.New(dbKeys{db}, a.PGPOptions)
	if err != nil {
		return nil, err
	}
	sp, err := smime.New(dbCerts{db}, &smime.Options{Roots: roots})
	if err != nil {
		return nil, err
	}
	a.SMIME = sp
	a.Sender, err = mailsec.NewSender(tr, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{pp, sp},
		Logger:     logger,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /users/{address}/key", a.handleUpload)
	mux.HandleFunc("POST /users/{address}/send", a.handleSend)
	return mux
}

// normalize is how this app keys addresses in its table; the Sender looks
// recipients up with the same function (dbKeys, dbCerts).
func normalize(addr string) string { return strings.ToLower(addr) }

// handleUpload checks and stores a user's OpenPGP public key or S/MIME
// certificate.
func (a *App) handleUpload(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("address")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxUpload))
	if err != nil {
		http.Error(w, "the upload is larger than 1 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	var row keyRow
	if isPGP(body) {
		row, err = a.checkPGP(r.Context(), body, addr)
	} else {
		row, err = a.checkSMIME(r.Context(), body, addr)
	}
	var ke *pgp.KeyError
	var ce *smime.CertificateError
	switch {
	case errors.As(err, &ke):
		// The verdict's words, without the fingerprint and address the
		// user just gave.
		http.Error(w, "key refused: "+ke.Reason, http.StatusUnprocessableEntity)
		return
	case errors.As(err, &ce):
		http.Error(w, "certificate refused: "+ce.Reason, http.StatusUnprocessableEntity)
		return
	case errors.Is(err, errPrivateKey):
		http.Error(w, "certificate refused: "+err.Error(), http.StatusUnprocessableEntity)
		return
	case err != nil:
		a.Logger.ErrorContext(r.Context(), "checking an upload", "err", err)
		http.Error(w, "could not check the key; try again later", http.StatusServiceUnavailable)
		return
	}
	if err := a.store(r.Context(), row); err != nil {
		a.Logger.ErrorContext(r.Context(), "storing a key", "err", err)
		http.Error(w, "could not store the key; try again later", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "stored %s %s for %s", row.kind, row.fingerprint, addr)
	if row.expires.IsZero() {
		fmt.Fprintf(w, ", never expires\n")
	} else {
		fmt.Fprintf(w, ", expires %s\n", row.expires.UTC().Format(time.DateOnly))
	}
	for _, n := range row.warnings {
		fmt.Fprintf(w, "warning: %s\n", n)
	}
}

// isPGP tells an OpenPGP key from a certificate: armor, or binary
// OpenPGP packets rather than DER (an ASN.1 SEQUENCE).
func isPGP(b []byte) bool {
	if bytes.Contains(b, []byte("-----BEGIN PGP")) {
		return true
	}
	return !bytes.Contains(b, []byte("-----BEGIN ")) && (len(b) == 0 || b[0] != 0x30)
}

// keyRow is an accepted upload.
type keyRow struct {
	address, kind, fingerprint string
	expires                    time.Time
	data                       []byte
	warnings                   []string
}

func (a *App) checkPGP(ctx context.Context, body []byte, addr string) (keyRow, error) {
	// CheckKey refuses secret keys (KeySecret) and drops them.
	ck, err := pgp.CheckKey(ctx, bytes.NewReader(body), addr, a.PGPOptions)
	if err != nil {
		return keyRow{}, err
	}
	armored, err := ck.Armor()
	if err != nil {
		return keyRow{}, err
	}
	return keyRow{address: normalize(addr), kind: "pgp", fingerprint: ck.Fingerprint,
		expires: ck.Expires, data: armored, warnings: ck.Warnings}, nil
}

// errPrivateKey refuses a certificate upload with a private key in it.
var errPrivateKey = errors.New("the upload holds a private key; upload the certificate only")

func (a *App) checkSMIME(ctx context.Context, body []byte, addr string) (keyRow, error) {
	// CheckCertificate reads the CERTIFICATE and PKCS7 blocks of a PEM
	// upload; a private key next to them must not reach the database, so
	// the whole upload is refused.
	if bytes.Contains(body, []byte("PRIVATE KEY-----")) {
		return keyRow{}, errPrivateKey
	}
	chk, err := a.SMIME.CheckCertificate(ctx, body, addr)
	if err != nil {
		return keyRow{}, err
	}
	var chain bytes.Buffer
	for _, c := range chk.Chain {
		if err := pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return keyRow{}, err
		}
	}
	return keyRow{address: normalize(addr), kind: "smime", fingerprint: chk.Fingerprint,
		expires: chk.Expires, data: chain.Bytes(), warnings: chk.Notes}, nil
}

// store inserts the row, replacing the address's key of the same kind.
func (a *App) store(ctx context.Context, k keyRow) error {
	var expires *int64
	if !k.expires.IsZero() {
		u := k.expires.Unix()
		expires = &u
	}
	_, err := a.DB.ExecContext(ctx, `INSERT INTO user_keys (address, kind, fingerprint, expires, data, uploaded)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (address, kind) DO UPDATE SET fingerprint = excluded.fingerprint,
			expires = excluded.expires, data = excluded.data, uploaded = excluded.uploaded`,
		k.address, k.kind, k.fingerprint, expires, k.data, time.Now().Unix())
	return err
}

// handleSend sends the form's text to the user, encrypted to their key.
func (a *App) handleSend(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("address")
	rec, err := a.Sender.Send(r.Context(), &mailsec.Message{From: a.From, To: []string{addr},
		Subject: "A message from the app", Text: r.FormValue("text")})
	if err != nil {
		// Without a usable key nothing is sent (RequireProtection).
		a.Logger.WarnContext(r.Context(), "send failed", "err", err)
		http.Error(w, "not sent: "+err.Error(), http.StatusConflict)
		return
	}
	pr := rec.Recipients[0].Protection
	fmt.Fprintf(w, "sent, encrypted with %s to %s\n", pr.Method, pr.Fingerprint)
}

// dbKeys is a pgp.KeySource on user_keys.
type dbKeys struct{ db *sql.DB }

// Lookup returns the address's uploaded key. A missing row is "no key";
// a failing query is an error, which the Sender reports as temporary
// instead of sending without encryption.
func (k dbKeys) Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error) {
	var data []byte
	err := k.db.QueryRowContext(ctx, `SELECT data FROM user_keys WHERE address = ? AND kind = 'pgp'`, normalize(addr)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the key of %s: %w", addr, err)
	}
	kr, err := pgp.ReadKeyRing(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("stored key of %s: %w", addr, err)
	}
	return kr.Entities(), nil
}

// dbCerts is a smime.CertSource on user_keys.
type dbCerts struct{ db *sql.DB }

// Lookup returns the address's uploaded certificate and its CA
// certificates.
func (c dbCerts) Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error) {
	var data []byte
	err := c.db.QueryRowContext(ctx, `SELECT data FROM user_keys WHERE address = ? AND kind = 'smime'`, normalize(addr)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the certificate of %s: %w", addr, err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs, nil
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("stored certificate of %s: %w", addr, err)
		}
		certs = append(certs, cert)
	}
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx := context.Background()
	dbPath := os.Getenv("KEYUPLOAD_DB")
	if dbPath == "" {
		dbPath = "keyupload.db"
	}
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tr := &transport.Submission{Addr: os.Getenv("SMTP_ADDR"), Logger: logger}
	if u := os.Getenv("SMTP_USER"); u != "" {
		tr.Auth = &transport.Auth{Username: u, Password: os.Getenv("SMTP_PASSWORD")}
	}
	defer tr.Close()
	// Nil roots: S/MIME certificates must chain to the system's roots.
	app, err := Open(ctx, db, tr, nil, "lab@example.com", logger)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe("localhost:8080", app.routes()))
}
