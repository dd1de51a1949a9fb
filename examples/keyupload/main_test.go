package main

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/mailsec/mailsec/mailsectest"
)

type testApp struct {
	*App
	rt *mailsectest.RecordingTransport
	ca *mailsectest.CA
}

func newTestApp(t *testing.T) *testApp {
	t.Helper()
	db, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1) // one connection: one in-memory database
	t.Cleanup(func() { db.Close() })
	ca, err := mailsectest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	rt := &mailsectest.RecordingTransport{}
	app, err := Open(t.Context(), db, rt, ca.Pool(), "lab@example.com", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &testApp{App: app, rt: rt, ca: ca}
}

func (a *testApp) do(t *testing.T, path, contentType, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	a.routes().ServeHTTP(rec, req)
	t.Logf("POST %s: %d %s", path, rec.Code, rec.Body)
	return rec
}

func (a *testApp) upload(t *testing.T, addr, key string) *httptest.ResponseRecorder {
	t.Helper()
	return a.do(t, "/users/"+addr+"/key", "application/octet-stream", key)
}

func (a *testApp) send(t *testing.T, addr, text string) *httptest.ResponseRecorder {
	t.Helper()
	return a.do(t, "/users/"+addr+"/send", "application/x-www-form-urlencoded", url.Values{"text": {text}}.Encode())
}

// rows returns the stored (address, kind, fingerprint) rows.
func (a *testApp) rows(t *testing.T) []string {
	t.Helper()
	rs, err := a.DB.QueryContext(context.Background(), `SELECT address, kind, fingerprint, data FROM user_keys ORDER BY address, kind`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var addr, kind, fpr, data string
		if err := rs.Scan(&addr, &kind, &fpr, &data); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(data, "PRIVATE") {
			t.Errorf("secret key material stored for %s", addr)
		}
		out = append(out, addr+" "+kind+" "+fpr)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func pgpKey(t *testing.T, addr string, o mailsectest.PGPKeyOptions) (*openpgp.Entity, string) {
	t.Helper()
	k, err := mailsectest.NewPGPKey("User", addr, o)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := mailsectest.ArmorPublic(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

func wantStatus(t *testing.T, rec *httptest.ResponseRecorder, code int, body string) {
	t.Helper()
	if rec.Code != code || !strings.Contains(rec.Body.String(), body) {
		t.Fatalf("status %d, body %q; want %d and %q", rec.Code, rec.Body, code, body)
	}
}

// Bad uploads are refused with the library's verdict and stored nowhere;
// nothing is sent to a user without a stored key.
func TestUploadRefusesBadKeys(t *testing.T) {
	a := newTestApp(t)
	ann, _ := pgpKey(t, "ann@example.org", mailsectest.PGPKeyOptions{})
	_, expired := pgpKey(t, "ann@example.org", mailsectest.PGPKeyOptions{Expired: true})
	_, bobs := pgpKey(t, "bob@example.org", mailsectest.PGPKeyOptions{})
	secret, err := mailsectest.ArmorPrivate(ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, a.upload(t, "ann@example.org", expired), http.StatusUnprocessableEntity, "key refused: expired")
	wantStatus(t, a.upload(t, "ann@example.org", bobs), http.StatusUnprocessableEntity, "key refused: no user ID for this address")
	wantStatus(t, a.upload(t, "ann@example.org", secret), http.StatusUnprocessableEntity, "key refused: the upload holds a secret key")
	wantStatus(t, a.upload(t, "ann@example.org", "hello"), http.StatusUnprocessableEntity, "key refused: not an OpenPGP public key")

	// An S/MIME certificate for another address, an expired one, and a
	// good one uploaded with its private key.
	issue := func(o mailsectest.SMIMEOptions) (chain, key string) {
		c, err := a.ca.IssueSMIME(o)
		if err != nil {
			t.Fatal(err)
		}
		ch, k, err := mailsectest.PEM(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(ch), string(k)
	}
	other, _ := issue(mailsectest.SMIMEOptions{Email: "bob@example.org"})
	wantStatus(t, a.upload(t, "ann@example.org", other), http.StatusUnprocessableEntity, "certificate refused: no rfc822Name SAN for this address")
	old, _ := issue(mailsectest.SMIMEOptions{Email: "ann@example.org",
		NotBefore: mustTime(t, "2020-01-01T00:00:00Z"), NotAfter: mustTime(t, "2021-01-01T00:00:00Z")})
	wantStatus(t, a.upload(t, "ann@example.org", old), http.StatusUnprocessableEntity, "certificate refused: expired")
	good, key := issue(mailsectest.SMIMEOptions{Email: "ann@example.org"})
	wantStatus(t, a.upload(t, "ann@example.org", good+key), http.StatusUnprocessableEntity, "certificate refused: the upload holds a private key")

	if rows := a.rows(t); len(rows) != 0 {
		t.Fatalf("stored %q", rows)
	}
	wantStatus(t, a.send(t, "ann@example.org", "secret result"), http.StatusConflict, "not sent")
	if ds := a.rt.Deliveries(); len(ds) != 0 {
		t.Fatalf("sent %d messages without a key", len(ds))
	}
}

// A good key is stored with its fingerprint, the next Send encrypts to
// it, and a replacement is used by the Send after it.
func TestUploadedKeyIsUsed(t *testing.T) {
	a := newTestApp(t)
	ann, pub := pgpKey(t, "ann@example.org", mailsectest.PGPKeyOptions{})
	fpr := strings.ToUpper(ann.PrimaryKey.KeyIdString())
	wantStatus(t, a.upload(t, "Ann@Example.org", pub), http.StatusCreated, "stored pgp ")
	rows := a.rows(t)
	if len(rows) != 1 || !strings.HasPrefix(rows[0], "ann@example.org pgp ") || !strings.HasSuffix(rows[0], fpr) {
		t.Fatalf("rows %q, want ann's key ending in %s", rows, fpr)
	}

	wantStatus(t, a.send(t, "ann@example.org", "first result"), http.StatusOK, "sent, encrypted with pgp to ")
	openPGP(t, a.rt, 0, ann, "first result")

	// Ann replaces her key: the next Send uses the new one only.
	ann2, pub2 := pgpKey(t, "ann@example.org", mailsectest.PGPKeyOptions{})
	wantStatus(t, a.upload(t, "ann@example.org", pub2), http.StatusCreated, "stored pgp ")
	if rows := a.rows(t); len(rows) != 1 {
		t.Fatalf("rows %q, want one", rows)
	}
	wantStatus(t, a.send(t, "ann@example.org", "second result"), http.StatusOK, "sent, encrypted with pgp")
	openPGP(t, a.rt, 1, ann2, "second result")
	if _, err := mailsectest.OpenPGP(a.rt.Deliveries()[1].Data, ann); err == nil {
		t.Fatal("the replaced key still decrypts the message sent after the replacement")
	}

	// An S/MIME certificate with its chain, for Carl.
	c, err := a.ca.IssueSMIME(mailsectest.SMIMEOptions{Email: "carl@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := mailsectest.PEM(c)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, a.upload(t, "carl@example.org", string(chain)), http.StatusCreated, "stored smime ")
	wantStatus(t, a.send(t, "carl@example.org", "carl's result"), http.StatusOK, "sent, encrypted with smime")
	o, err := mailsectest.OpenSMIME(a.rt.Deliveries()[2].Data, c, a.ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	checkText(t, o, "carl's result")
}

func openPGP(t *testing.T, rt *mailsectest.RecordingTransport, i int, key *openpgp.Entity, want string) {
	t.Helper()
	ds := rt.Deliveries()
	if len(ds) != i+1 {
		t.Fatalf("%d deliveries, want %d", len(ds), i+1)
	}
	o, err := mailsectest.OpenPGP(ds[i].Data, key)
	if err != nil {
		t.Fatal(err)
	}
	checkText(t, o, want)
}

func checkText(t *testing.T, o *mailsectest.Opened, want string) {
	t.Helper()
	text, err := o.Text()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(text) != want {
		t.Fatalf("decrypted text %q, want %q", text, want)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
