package pgp_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/mailsectest"
	"github.com/mailsec/mailsec/pgp"
)

// expiringKey makes a Curve25519 key for addr, created at created, whose
// primary key and subkey expire after life.
func expiringKey(t testing.TB, addr string, created time.Time, life time.Duration, aead bool) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{
		Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519,
		DefaultHash: crypto.SHA256, DefaultCipher: packet.CipherAES256,
		KeyLifetimeSecs: uint32(life / time.Second),
		Time:            func() time.Time { return created },
	}
	if aead {
		cfg.AEADConfig = &packet.AEADConfig{DefaultMode: packet.AEADModeOCB}
	}
	e, err := openpgp.NewEntity("Key", "", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return roundTrip(t, e)
}

// roundTrip returns e as read back from its armored public key.
func roundTrip(t testing.TB, e *openpgp.Entity) *openpgp.Entity {
	t.Helper()
	var buf bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&buf, nil); err != nil {
		t.Fatal(err)
	}
	el, err := openpgp.ReadKeyRing(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return el[0]
}

func armorPublic(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	a, err := mailsectest.ArmorPublic(e)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(a)
}

// keyCase is an uploaded public key and the verdict expected for addr.
type keyCase struct {
	name   string
	public []byte
	want   pgp.KeyCode // "" means accepted
	opts   *pgp.Options
}

const rcpt = "bad@example.org"

// goCryptoCases are keys made with mailsectest and go-crypto.
func goCryptoCases(t *testing.T, now time.Time) []keyCase {
	k := testKeys(t)
	b := bad(t)
	good, err := mailsectest.NewPGPKey("Bad", rcpt, mailsectest.PGPKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := mailsectest.NewPGPKey("Bad", rcpt, mailsectest.PGPKeyOptions{Algorithm: mailsectest.PGPRSA2048})
	if err != nil {
		t.Fatal(err)
	}
	return []keyCase{
		{name: "curve25519", public: armorPublic(t, good)},
		{name: "rsa2048", public: armorPublic(t, rsa2048)},
		{name: "expiring in 10 days", public: armorPublic(t, expiringKey(t, rcpt, now.Add(-24*time.Hour), 11*24*time.Hour, false))},
		{name: "expired", public: armorPublic(t, b["expired"]), want: pgp.KeyExpired},
		{name: "expired yesterday", public: armorPublic(t, expiringKey(t, rcpt, now.Add(-11*24*time.Hour), 10*24*time.Hour, false)), want: pgp.KeyExpired},
		{name: "revoked", public: armorPublic(t, b["revoked"]), want: pgp.KeyRevoked},
		{name: "revoked subkey", public: armorPublic(t, b["no valid encryption subkey"]), want: pgp.KeyNoEncryptionSubkey},
		{name: "sign-only", public: armorPublic(t, b["sign-only"]), want: pgp.KeyNoEncryptionSubkey},
		{name: "rsa1024", public: armorPublic(t, b["weak algorithm: RSA-1024"]), want: pgp.KeyWeak},
		{name: "v6", public: armorPublic(t, b["version 6 key"]), want: pgp.KeyUnsupportedVersion},
		{name: "v6 allowed", public: armorPublic(t, b["version 6 key"]), opts: &pgp.Options{AllowV6Keys: true}},
		{name: "wrong address", public: armorPublic(t, k["carl@example.org"]), want: pgp.KeyWrongAddress},
	}
}

// gpgCases are keys made by gpg 2.2.
func gpgCases(t *testing.T) []keyCase {
	home := gpgHome(t)
	export := func(uid string) []byte { return []byte(mustGPG(t, home, nil, "--armor", "--export", uid)) }
	var cs []keyCase
	cs = append(cs, keyCase{name: "gpg ed25519", public: gpgKey(t, home, "A <a-"+rcpt+">", "ed25519", "cv25519")})
	cs = append(cs, keyCase{name: "gpg rsa2048", public: gpgKey(t, home, "B <b-"+rcpt+">", "rsa2048", "rsa2048")})
	cs = append(cs, keyCase{name: "gpg rsa1024", public: gpgKey(t, home, "C <c-"+rcpt+">", "rsa1024", "rsa1024"), want: pgp.KeyWeak})
	cs = append(cs, keyCase{name: "gpg dsa2048", public: gpgKey(t, home, "D <d-"+rcpt+">", "dsa2048", "cv25519"), want: pgp.KeyWeak})
	cs = append(cs, keyCase{name: "gpg sign-only", public: gpgKey(t, home, "E <e-"+rcpt+">", "ed25519", ""), want: pgp.KeyNoEncryptionSubkey})

	// Expiring in 10 days: accepted (with a warning).
	mustGPG(t, home, nil, "--passphrase", "", "--quick-gen-key", "F <f-"+rcpt+">", "ed25519", "sign", "10d")
	mustGPG(t, home, nil, "--passphrase", "", "--quick-add-key", fprOf(t, home, "f-"+rcpt), "cv25519", "encr", "10d")
	cs = append(cs, keyCase{name: "gpg expiring", public: export("f-" + rcpt)})

	// Made 20 days ago, valid for 5. gpg's faked clock runs on from the
	// time given, so the key may be dated a second or more after it: the
	// subkey is added a minute later, lest gpg find the key made in its
	// future.
	past := time.Now().Add(-20 * 24 * time.Hour)
	mustGPG(t, home, nil, "--faked-system-time", fmt.Sprint(past.Unix()), "--passphrase", "", "--quick-gen-key", "G <g-"+rcpt+">", "ed25519", "sign", "5d")
	mustGPG(t, home, nil, "--faked-system-time", fmt.Sprint(past.Add(time.Minute).Unix()), "--passphrase", "", "--quick-add-key", fprOf(t, home, "g-"+rcpt), "cv25519", "encr", "5d")
	cs = append(cs, keyCase{name: "gpg expired", public: export("g-" + rcpt), want: pgp.KeyExpired})

	// Revoked with the revocation certificate gpg stored when it made the key.
	gpgKey(t, home, "H <h-"+rcpt+">", "ed25519", "cv25519")
	fpr := fprOf(t, home, "h-"+rcpt)
	rev, err := os.ReadFile(filepath.Join(home, "openpgp-revocs.d", fpr+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	mustGPG(t, home, bytes.Replace(rev, []byte(":-----BEGIN"), []byte("-----BEGIN"), 1), "--import")
	cs = append(cs, keyCase{name: "gpg revoked", public: export("h-" + rcpt), want: pgp.KeyRevoked})

	// A second user ID for the address, revoked.
	gpgKey(t, home, "I <other@example.org>", "ed25519", "cv25519")
	mustGPG(t, home, nil, "--quick-add-uid", "other@example.org", "I <i-"+rcpt+">")
	mustGPG(t, home, nil, "--quick-revoke-uid", "other@example.org", "I <i-"+rcpt+">")
	cs = append(cs, keyCase{name: "gpg revoked user ID", public: export("other@example.org"), want: pgp.KeyUserIDRevoked})
	return cs
}

// addrOf is the address a case's key is checked for: gpg's keys each have
// their own.
func addrOf(c keyCase) string {
	if strings.HasPrefix(c.name, "gpg ") {
		letter := map[string]string{"gpg ed25519": "a", "gpg rsa2048": "b", "gpg rsa1024": "c", "gpg dsa2048": "d",
			"gpg sign-only": "e", "gpg expiring": "f", "gpg expired": "g", "gpg revoked": "h", "gpg revoked user ID": "i"}[c.name]
		return letter + "-" + rcpt
	}
	return rcpt
}

// CheckKey refuses a key exactly when Protect refuses it, with the same
// code, and for an accepted key reports the fingerprint and expiry that
// Protect uses and reports.
func TestCheckKeyAgreesWithProtect(t *testing.T) {
	now := time.Now()
	cases := append(goCryptoCases(t, now), gpgCases(t)...)
	// Checked a little later than gpg made its keys: gpg dates a
	// signature made in the same second as the one it supersedes a
	// second ahead.
	now = time.Now().Add(5 * time.Second)
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			addr := addrOf(c)
			o := &pgp.Options{Now: func() time.Time { return now }}
			if c.opts != nil {
				o.AllowV6Keys = c.opts.AllowV6Keys
			}
			ck, cerr := pgp.CheckKey(context.Background(), bytes.NewReader(c.public), addr, o)

			// The application's own KeySource returns the uploaded key
			// for the address it was uploaded for.
			kr, err := pgp.ReadKeyRing(bytes.NewReader(c.public))
			if err != nil {
				t.Fatal(err)
			}
			p, err := pgp.New(mapSource{addr: kr.Entities()}, o)
			if err != nil {
				t.Fatal(err)
			}
			out, perr := p.Protect(context.Background(), &mailsec.Entity{Header: headerFor(addr), Body: strBody(canary)}, []string{addr})
			if perr == nil {
				// Accepted keys must also encrypt.
				if _, err := out.Entity.WriteTo(&bytes.Buffer{}); err != nil {
					t.Fatalf("writing: %v", err)
				}
			}

			if (cerr == nil) != (perr == nil) {
				t.Fatalf("CheckKey: %v; Protect: %v", cerr, perr)
			}
			// A stored key re-checked gets the same verdict.
			ek, eerr := pgp.CheckEntity(kr.Entities()[0], addr, o)
			if (eerr == nil) != (cerr == nil) || (eerr != nil && eerr.Error() != cerr.Error()) ||
				(ek != nil && (ek.Fingerprint != ck.Fingerprint || !ek.Expires.Equal(ck.Expires))) {
				t.Fatalf("CheckEntity: %v %v; CheckKey: %v %v", ek, eerr, ck, cerr)
			}
			if c.want == "" {
				if cerr != nil {
					t.Fatalf("CheckKey refused a good key: %v", cerr)
				}
				if ck.Fingerprint != out.Fingerprints[addr] || ck.Fingerprint != pgp.Fingerprint(ck.Entity) || ck.Address != addr {
					t.Fatalf("CheckKey %+v, Protect used %s", ck, out.Fingerprints[addr])
				}
				if !ck.Expires.Equal(out.Keys[addr].Expires) {
					t.Fatalf("CheckKey expiry %v, Protect %v", ck.Expires, out.Keys[addr].Expires)
				}
				if ck.Entity.PrivateKey != nil {
					t.Fatal("checked key carries a private key")
				}
				return
			}
			var cke, pke *pgp.KeyError
			if !errors.As(cerr, &cke) || !errors.As(perr, &pke) {
				t.Fatalf("CheckKey: %T %v; Protect: %T %v", cerr, cerr, perr, perr)
			}
			if cke.Code != c.want || pke.Code != c.want || cke.Reason != pke.Reason {
				t.Fatalf("codes: CheckKey %q (%s), Protect %q (%s), want %q", cke.Code, cke.Reason, pke.Code, pke.Reason, c.want)
			}
			if ck != nil || !errors.Is(cerr, mailsec.ErrNoKey) || errors.Is(cerr, mailsec.ErrInvalid) || mailsec.IsTemporary(cerr) {
				t.Fatalf("CheckKey returned %v with %v", ck, cerr)
			}
			if msg := cerr.Error(); !strings.Contains(msg, addr) || !strings.Contains(msg, cke.Fingerprint) || !strings.Contains(msg, cke.Reason) {
				t.Fatalf("message %q does not name address, key and reason", msg)
			}
		})
	}
}

// What is not one public key is refused as invalid input, naming the
// address; a secret key is not returned.
func TestCheckKeyUploadShape(t *testing.T) {
	k := testKeys(t)
	ann := k["ann@example.org"]
	secret, err := mailsectest.ArmorPrivate(ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	var binSecret bytes.Buffer
	if err := ann.SerializePrivateWithoutSigning(&binSecret, nil); err != nil {
		t.Fatal(err)
	}
	var binPublic bytes.Buffer
	if err := ann.Serialize(&binPublic); err != nil {
		t.Fatal(err)
	}
	two := append(armorPublic(t, ann), armorPublic(t, k["bob@example.org"])...)
	for name, c := range map[string]struct {
		data []byte
		want pgp.KeyCode
	}{
		"armored secret":  {[]byte(secret), pgp.KeySecret},
		"binary secret":   {binSecret.Bytes(), pgp.KeySecret},
		"two keys":        {two, pgp.KeyMultiple},
		"garbage":         {[]byte("hello, this is not a key"), pgp.KeyUnreadable},
		"empty":           {nil, pgp.KeyUnreadable},
		"signature block": {[]byte("-----BEGIN PGP SIGNATURE-----\n\nwsBc\n-----END PGP SIGNATURE-----\n"), pgp.KeyUnreadable},
		"binary public":   {binPublic.Bytes(), ""},
	} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			ck, err := pgp.CheckKey(context.Background(), bytes.NewReader(c.data), "ann@example.org", nil)
			if c.want == "" {
				if err != nil || ck.Fingerprint != pgp.Fingerprint(ann) {
					t.Fatalf("CheckKey: %v %v", ck, err)
				}
				return
			}
			var ke *pgp.KeyError
			if ck != nil || !errors.As(err, &ke) || ke.Code != c.want {
				t.Fatalf("CheckKey: %v, %v; want code %q", ck, err, c.want)
			}
			if !errors.Is(err, mailsec.ErrInvalid) || !errors.Is(err, mailsec.ErrNoKey) || mailsec.IsTemporary(err) ||
				!strings.Contains(err.Error(), "ann@example.org") {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// A key expiring within the window is accepted with a warning that says
// when; the window is Options.ExpiryWarning; a cancelled context stops.
func TestCheckKeyExpiryWarning(t *testing.T) {
	now := time.Now().Truncate(time.Second) // keys made by testKeys must exist by then
	e := expiringKey(t, "ann@example.org", now.Add(-time.Hour), 12*24*time.Hour+2*time.Hour, false)
	pub := armorPublic(t, e)
	at := func() time.Time { return now }
	ck, err := pgp.CheckKey(context.Background(), bytes.NewReader(pub), "ANN@example.org", &pgp.Options{Now: at})
	if err != nil {
		t.Fatal(err)
	}
	wantExp := now.Add(-time.Hour).Add(12*24*time.Hour + 2*time.Hour)
	if !ck.Expires.Equal(wantExp) || len(ck.Warnings) != 1 || ck.Warnings[0] != "key expires in 12 days ("+wantExp.UTC().Format(time.DateOnly)+")" {
		t.Fatalf("expires %v, warnings %q", ck.Expires, ck.Warnings)
	}
	ck, err = pgp.CheckKey(context.Background(), bytes.NewReader(pub), "ann@example.org", &pgp.Options{Now: at, ExpiryWarning: 7 * 24 * time.Hour})
	if err != nil || len(ck.Warnings) != 0 {
		t.Fatalf("7-day window: %v %q", err, ck.Warnings)
	}
	ck, err = pgp.CheckKey(context.Background(), bytes.NewReader(armorPublic(t, testKeys(t)["ann@example.org"])), "ann@example.org", &pgp.Options{Now: at})
	if err != nil || len(ck.Warnings) != 0 || !ck.Expires.IsZero() {
		t.Fatalf("key without expiry: %v %+v", err, ck)
	}
	armored, err := ck.Armor()
	if err != nil {
		t.Fatal(err)
	}
	back, err := pgp.CheckKey(context.Background(), bytes.NewReader(armored), "ann@example.org", nil)
	if err != nil || back.Fingerprint != ck.Fingerprint {
		t.Fatalf("Armor does not read back: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pgp.CheckKey(ctx, bytes.NewReader(pub), "ann@example.org", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
