package smime_test

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/smime"
)

// certTable is a CertSource over the application's own table of the
// certificates its users uploaded: one row per certificate of an
// accepted upload (CertificateCheck.Chain), in order.
type certTable struct{ db *sql.DB }

func (t certTable) Lookup(ctx context.Context, addr string) ([]*x509.Certificate, error) {
	rows, err := t.db.QueryContext(ctx, `SELECT der FROM smime_certs WHERE addr = ? ORDER BY pos`, strings.ToLower(addr))
	if err != nil {
		return nil, err // the recipient is not sent to; temporary when the cause is
	}
	defer rows.Close()
	var certs []*x509.Certificate
	for rows.Next() {
		var der []byte
		if err := rows.Scan(&der); err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, rows.Err()
}

// save replaces what addr had with the accepted upload, in one
// transaction: a Send sees the old certificate or the new one.
func (t certTable) save(ctx context.Context, chk *smime.CertificateCheck) error {
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	addr := strings.ToLower(chk.Address)
	if _, err := tx.ExecContext(ctx, `DELETE FROM smime_certs WHERE addr = ?`, addr); err != nil {
		return err
	}
	for i, c := range chk.Chain {
		if _, err := tx.ExecContext(ctx, `INSERT INTO smime_certs (addr, pos, der, fingerprint, expires) VALUES (?, ?, ?, ?, ?)`,
			addr, i, c.Raw, chk.Fingerprint, chk.Expires.Unix()); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// An application keeps its users' certificates in its own database. Its
// upload handler asks the Protector that sends for the verdict, stores
// what it accepted, and shows the user why it refused; the Protector
// reads the table at every Send, so the next one uses the new
// certificate.
func Example_certSourceDatabase() {
	ctx := context.Background()
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one in-memory database
	if _, err := db.Exec(`CREATE TABLE smime_certs (addr TEXT, pos INTEGER, der BLOB, fingerprint TEXT, expires INTEGER)`); err != nil {
		log.Fatal(err)
	}
	table := certTable{db}

	ca, _ := mailsectest.NewCA()
	p, err := smime.New(table, &smime.Options{Roots: ca.Pool()})
	if err != nil {
		log.Fatal(err)
	}

	// What the upload handler does with the file the user chose.
	upload := func(addr string, data []byte) {
		chk, err := p.CheckCertificate(ctx, data, addr)
		var ce *smime.CertificateError
		switch {
		case errors.As(err, &ce):
			fmt.Printf("refused (%s): %s\n", ce.Problem, ce.Reason) // a 422 with the reason
			return
		case err != nil:
			log.Fatal(err)
		}
		if err := table.save(ctx, chk); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("stored, %d notes\n", len(chk.Notes))
	}
	expired, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	upload("ann@example.org", mailsectest.LeafPEM(expired))
	good, _ := ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "ann@example.org", NotAfter: time.Now().AddDate(1, 0, 0)})
	upload("ann@example.org", mailsectest.LeafPEM(good))

	rt := &mailsectest.RecordingTransport{}
	s, _ := mailsec.NewSender(rt, &mailsec.Options{
		Policy: mailsec.RequireProtection(mailsec.DefaultPolicy()), Protectors: []mailsec.Protector{p}})
	rec, err := s.Send(ctx, &mailsec.Message{
		From: "lab@example.com", To: []string{"ann@example.org"}, Subject: "Your result", Text: "All clear."})
	if err != nil {
		log.Fatal(err)
	}
	var stored string
	_ = db.QueryRow(`SELECT fingerprint FROM smime_certs WHERE addr = ?`, "ann@example.org").Scan(&stored)
	fmt.Println("sent to the stored certificate:", rec.Recipients[0].Protection.Fingerprint == stored)
	// Output:
	// refused (expired): expired
	// stored, 0 notes
	// sent to the stored certificate: true
}
