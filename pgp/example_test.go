package pgp_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message/textproto"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// Encrypt every message to the recipients' keys; a recipient without a
// usable key receives nothing.
func ExampleNew() {
	// In an application the keys come from a file (pgp.LoadKeyRing) or
	// from WKD; here a test key is made on the spot.
	ann, err := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	armored, _ := mailsectest.ArmorPublic(ann)
	keys, err := pgp.ReadKeyRing(strings.NewReader(armored))
	if err != nil {
		log.Fatal(err)
	}
	p, err := pgp.New(keys, nil)
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p},
	})
	if err != nil {
		log.Fatal(err)
	}
	rec, err := s.Send(context.Background(), &mailsec.Message{
		From: "lab@example.com", To: []string{"ann@example.org", "bob@example.org"},
		Subject: "Your results", Text: "They are fine.",
	})
	for _, r := range rec.Recipients {
		if r.Protection != nil {
			fmt.Println(r.Address, r.Protection.Method, r.Protection.Fingerprint == pgp.Fingerprint(ann))
		} else {
			fmt.Println(r.Address, "not sent")
		}
	}
	fmt.Println(err != nil, strings.Contains(string(rt.Deliveries()[0].Data), "They are fine"))
	// Output:
	// ann@example.org pgp true
	// bob@example.org not sent
	// true false
}

// Sign with the sender's key (exported with gpg --armor
// --export-secret-keys), then encrypt, also to the sender's own key.
func ExampleReadSigningKey() {
	lab, err := mailsectest.NewPGPKey("Lab", "lab@example.com", mailsectest.PGPKeyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	secret, _ := mailsectest.ArmorPrivate(lab, []byte("correct horse"))

	signer, err := pgp.ReadSigningKey(strings.NewReader(secret), []byte("correct horse"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = pgp.New(pgp.NewKeyRing(), &pgp.Options{Signer: signer, EncryptToSelf: true, Autocrypt: true})
	fmt.Println(err)
	_, err = pgp.ReadSigningKey(strings.NewReader(secret), []byte("wrong"))
	fmt.Println(err != nil)
	// Output:
	// <nil>
	// true
}

// Keys from a file with one or more armored blocks, or binary packets.
func ExampleLoadKeyRing() {
	keys, err := pgp.LoadKeyRing("recipients.asc")
	if err != nil {
		fmt.Println("no key file")
		return
	}
	_ = keys
	// Output: no key file
}

func ExampleReadKeyRing() {
	_, err := pgp.ReadKeyRing(strings.NewReader("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbroken\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	fmt.Println(err != nil)
	// Output: true
}

// Look keys up in the recipient domain's Web Key Directory.
func ExampleWKD() {
	wkd := &pgp.WKD{} // system roots, 10 s, 256 KiB, cached for an hour
	p, err := pgp.New(wkd, nil)
	fmt.Println(p != nil, err)
	// Output: true <nil>
}

func ExampleWKDHash() {
	fmt.Println(pgp.WKDHash("rcpt"))
	// Output: 9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6
}

func ExampleWKDURLs() {
	u, _ := pgp.WKDURLs("rcpt@example.org")
	fmt.Println(u[1])
	// Output: https://example.org/.well-known/openpgpkey/hu/9fbnk5ct9jhruf8nx9ezzkd5jot6ugu6?l=rcpt
}

func ExampleFingerprint() {
	e, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	fmt.Println(len(pgp.Fingerprint(e)))
	// Output: 40
}

func ExampleParseWKDResponse() {
	_, err := pgp.ParseWKDResponse([]byte("<html>"), "ann@example.org")
	fmt.Println(err != nil)
	// Output: true
}

func ExampleNewKeyRing() {
	ann, _ := mailsectest.NewPGPKey("Ann", "Ann@Example.org", mailsectest.PGPKeyOptions{})
	keys := pgp.NewKeyRing(ann)
	es, err := keys.Lookup(context.Background(), "ann@example.org")
	fmt.Println(len(es), err)
	// Output: 1 <nil>
}

// Protect is what the Sender calls; it can be called directly to see the
// protected entity.
func ExampleProtector_Protect() {
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	p, _ := pgp.New(pgp.NewKeyRing(ann), nil)
	var h textproto.Header
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Subject", "Your results")
	h.Set("To", "ann@example.org")
	h.Set("From", "lab@example.com")
	out, err := p.Protect(context.Background(), &mailsec.Entity{Header: h, Body: strBody("They are fine.\r\n")},
		[]string{"ann@example.org"})
	if err != nil {
		log.Fatal(err)
	}
	ct, params, _ := mime.ParseMediaType(out.Entity.Header.Get("Content-Type"))
	fmt.Println(ct, params["protocol"])
	fmt.Println(out.Entity.Header.Get("Subject"), p.Method())
	// Output:
	// multipart/encrypted application/pgp-encrypted
	// ... pgp
}

// An upload handler: the key a user uploads is checked for their address
// with the Options the Protector uses, and refused with the library's
// verdict, or kept in the KeyRing the Protector reads (the next Send to
// them uses it).
func ExampleCheckKey() {
	opts := &pgp.Options{ExpiryWarning: 30 * 24 * time.Hour}
	ring := pgp.NewKeyRing()
	if _, err := pgp.New(ring, opts); err != nil { // the Protector the Sender uses
		log.Fatal(err)
	}
	upload := func(addr string, body io.Reader) string {
		ck, err := pgp.CheckKey(context.Background(), body, addr, opts)
		if ke, ok := errors.AsType[*pgp.KeyError](err); ok {
			switch ke.Code {
			case pgp.KeyExpired:
				return "422: this key has expired; extend it (gpg --quick-set-expire) and upload it again"
			case pgp.KeyWrongAddress:
				return "422: this key is not for " + addr
			case pgp.KeySecret:
				return "422: that is your secret key: upload the public key (gpg --armor --export)"
			default:
				return "422: " + ke.Reason
			}
		} else if err != nil {
			return "500"
		}
		ring.Replace(addr, ck.Entity)
		return fmt.Sprintf("200: stored, warnings %q", ck.Warnings)
	}

	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	expired, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{Expired: true})
	weak, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{Algorithm: mailsectest.PGPRSA1024})
	public := func(e *openpgp.Entity) io.Reader { a, _ := mailsectest.ArmorPublic(e); return strings.NewReader(a) }
	secret, _ := mailsectest.ArmorPrivate(ann, nil)

	fmt.Println(upload("ann@example.org", public(expired)))
	fmt.Println(upload("ann@example.org", public(weak)))
	fmt.Println(upload("bob@example.org", public(ann)))
	fmt.Println(upload("ann@example.org", strings.NewReader(secret)))
	fmt.Println(upload("ann@example.org", public(ann)))
	fmt.Println(ring.Len())
	// Output:
	// 422: this key has expired; extend it (gpg --quick-set-expire) and upload it again
	// 422: weak algorithm: RSA-1024
	// 422: this key is not for bob@example.org
	// 422: that is your secret key: upload the public key (gpg --armor --export)
	// 200: stored, warnings []
	// 1
}

// The key to keep, as text: what a KeySource backed by a database stores.
func ExampleCheckedKey_Armor() {
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	a, _ := mailsectest.ArmorPublic(ann)
	ck, err := pgp.CheckKey(context.Background(), strings.NewReader(a), "ann@example.org", nil)
	if err != nil {
		log.Fatal(err)
	}
	stored, err := ck.Armor()
	if err != nil {
		log.Fatal(err)
	}
	back, err := pgp.ReadKeyRing(bytes.NewReader(stored))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.HasPrefix(string(stored), "-----BEGIN PGP PUBLIC KEY BLOCK-----"),
		pgp.Fingerprint(back.Entities()[0]) == ck.Fingerprint)
	// Output: true true
}

// Keys added while the application runs are found by the next Lookup
// (and so by the next Send).
func ExampleKeyRing_Add() {
	ring := pgp.NewKeyRing()
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	ring.Add(ann)
	es, err := ring.Lookup(context.Background(), "Ann@Example.org")
	fmt.Println(len(es), err)
	// Output: 1 <nil>
}

// A user replaces their key: the old one is gone, the next Send uses the
// new one.
func ExampleKeyRing_Replace() {
	old, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	fresh, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	ring := pgp.NewKeyRing(old)
	ring.Replace("ann@example.org", fresh)
	es, _ := ring.Lookup(context.Background(), "ann@example.org")
	fmt.Println(len(es), pgp.Fingerprint(es[0]) == pgp.Fingerprint(fresh))
	// Output: 1 true
}

// A user deletes their key: mail that requires protection stops.
func ExampleKeyRing_Remove() {
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	ring := pgp.NewKeyRing(ann)
	fmt.Println(ring.Remove(pgp.Fingerprint(ann)), ring.Len())
	_, err := ring.Lookup(context.Background(), "ann@example.org")
	fmt.Println(errors.Is(err, pgp.ErrKeyNotFound))
	// Output:
	// true 0
	// true
}

// sqlKeys is a KeySource over the application's own database: one row per
// key, the armored key that CheckKey accepted, indexed by address.
type sqlKeys struct{ db *sql.DB }

func (s sqlKeys) Lookup(ctx context.Context, addr string) ([]*openpgp.Entity, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT armored FROM pgp_keys WHERE address = ?`, strings.ToLower(addr))
	if err != nil {
		return nil, err // not ErrKeyNotFound: the recipient fails temporarily, never goes out in clear
	}
	defer rows.Close()
	var all bytes.Buffer
	for rows.Next() {
		var armored []byte
		if err := rows.Scan(&armored); err != nil {
			return nil, err
		}
		all.Write(armored)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if all.Len() == 0 {
		return nil, pgp.ErrKeyNotFound
	}
	kr, err := pgp.ReadKeyRing(&all)
	if err != nil {
		return nil, err
	}
	return kr.Entities(), nil
}

// A KeySource backed by database/sql: the upload handler stores what
// CheckKey accepted, the Protector looks keys up per Send.
func ExampleKeySource() {
	db, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection: one in-memory database
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE pgp_keys (address TEXT NOT NULL, fingerprint TEXT PRIMARY KEY, expires INTEGER, armored BLOB NOT NULL);
		CREATE INDEX pgp_keys_address ON pgp_keys (address)`); err != nil {
		log.Fatal(err)
	}

	// At upload.
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	a, _ := mailsectest.ArmorPublic(ann)
	ck, err := pgp.CheckKey(ctx, strings.NewReader(a), "ann@example.org", nil)
	if err != nil {
		log.Fatal(err) // in a handler: tell the user why (see ExampleCheckKey)
	}
	armored, _ := ck.Armor()
	var expires *int64
	if !ck.Expires.IsZero() {
		u := ck.Expires.Unix()
		expires = &u
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM pgp_keys WHERE address = ?`, "ann@example.org"); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO pgp_keys VALUES (?, ?, ?, ?)`, "ann@example.org", ck.Fingerprint, expires, armored); err != nil {
		log.Fatal(err)
	}

	// At start-up: the Protector reads the table on every Send.
	p, err := pgp.New(sqlKeys{db}, nil)
	if err != nil {
		log.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	s, err := mailsec.NewSender(rt, &mailsec.Options{
		Policy:     mailsec.RequireProtection(mailsec.DefaultPolicy()),
		Protectors: []mailsec.Protector{p},
	})
	if err != nil {
		log.Fatal(err)
	}
	rec, err := s.Send(ctx, &mailsec.Message{From: "lab@example.com", To: []string{"ann@example.org"},
		Subject: "Your results", Text: "They are fine."})
	if err != nil {
		log.Fatal(err)
	}
	pr := rec.Recipients[0].Protection
	fmt.Println(pr.Method, pr.Fingerprint == ck.Fingerprint, pr.Cipher)
	// Output: pgp true aes256-cfb
}

// Stored keys re-checked, every night say: a key that expires within
// the window is accepted with a warning, time to ask the user for a new
// one before mail to them stops.
func ExampleCheckEntity() {
	now := time.Now()
	ann, _ := mailsectest.NewPGPKey("Ann", "ann@example.org", mailsectest.PGPKeyOptions{})
	bob, _ := mailsectest.NewPGPKey("Bob", "bob@example.org", mailsectest.PGPKeyOptions{Expired: true})
	stored := map[string]*openpgp.Entity{"ann@example.org": ann, "bob@example.org": bob}
	// Ten years from now, then; Ann's key never expires.
	opts := &pgp.Options{Now: func() time.Time { return now.AddDate(10, 0, 0) }}
	for _, addr := range []string{"ann@example.org", "bob@example.org"} {
		ck, err := pgp.CheckEntity(stored[addr], addr, opts)
		if ke, ok := errors.AsType[*pgp.KeyError](err); ok {
			fmt.Println(addr, "refused:", ke.Code)
			continue
		}
		fmt.Println(addr, "ok, warnings:", len(ck.Warnings))
	}
	// Output:
	// ann@example.org ok, warnings: 0
	// bob@example.org refused: expired
}
