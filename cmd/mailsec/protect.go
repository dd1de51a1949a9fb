package main

import (
	"context"
	"flag"
	"net/url"
	"os"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/pgp"
	"github.com/mailsec/mailsec/smime"
)

// pgpPassphraseEnv names the environment variable that holds the
// passphrase of the -pgp-sign key.
const pgpPassphraseEnv = "MAILSEC_PGP_PASSPHRASE"

// protectOptions holds the end-to-end protection flags of mailsec send.
type protectOptions struct {
	pgpKeys       string
	pgpSign       string
	smimeCerts    string
	smimeRoots    string
	smimeSignCert string
	smimeSignKey  string
	outerSubject  string
	noticeURL     string
	prefer        bool
}

func (o *protectOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.pgpKeys, "pgp-keys", "", "encrypt with PGP/MIME to the recipients' OpenPGP public keys in `FILE` (armored); every recipient must have a usable key")
	fs.StringVar(&o.pgpSign, "pgp-sign", "", "sign with the armored OpenPGP secret key in `FILE`; its passphrase is read from $"+pgpPassphraseEnv)
	fs.StringVar(&o.smimeCerts, "smime-certs", "", "encrypt with S/MIME to the recipients' certificates in PEM `FILE` (with any intermediate CA certificates); every recipient must have a usable certificate")
	fs.StringVar(&o.smimeRoots, "smime-roots", "", "PEM `FILE` of the roots S/MIME certificates must chain to (default: the system's)")
	fs.StringVar(&o.smimeSignCert, "smime-sign-cert", "", "sign with S/MIME using the certificate chain in PEM `FILE` (with -smime-sign-key)")
	fs.StringVar(&o.smimeSignKey, "smime-sign-key", "", "the private key in PEM `FILE` for -smime-sign-cert")
	fs.StringVar(&o.outerSubject, "outer-subject", "", "the Subject `TEXT` shown outside encrypted mail (default \"...\"); the real one is inside")
	fs.StringVar(&o.noticeURL, "notice-url", "", "send recipients without a usable key a link-only notice pointing to https `URL` instead of the message")
	fs.BoolVar(&o.prefer, "prefer-protection", false, "encrypt for recipients with a usable key, send the others the message unencrypted (over verified TLS)")
}

// check reports conflicting or incomplete protection flags.
func (o *protectOptions) check() error {
	switch {
	case o.pgpSign != "" && o.pgpKeys == "":
		return usagef("-pgp-sign needs -pgp-keys: mailsec signs only what it also encrypts")
	case (o.smimeSignCert == "") != (o.smimeSignKey == ""):
		return usagef("-smime-sign-cert and -smime-sign-key go together")
	case o.smimeSignCert != "" && o.smimeCerts == "":
		return usagef("-smime-sign-cert needs -smime-certs: mailsec signs only what it also encrypts")
	case o.smimeRoots != "" && o.smimeCerts == "":
		return usagef("-smime-roots needs -smime-certs")
	case o.outerSubject != "" && !o.encrypts():
		return usagef("-outer-subject needs -pgp-keys or -smime-certs")
	case o.noticeURL != "" && !o.encrypts():
		return usagef("-notice-url needs -pgp-keys or -smime-certs")
	case o.prefer && !o.encrypts():
		return usagef("-prefer-protection needs -pgp-keys or -smime-certs")
	case o.prefer && o.noticeURL != "":
		return usagef("-prefer-protection and -notice-url exclude each other: recipients without a key get either the message or the notice")
	}
	if o.noticeURL != "" {
		u, err := url.Parse(o.noticeURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || strings.ContainsAny(o.noticeURL, "\r\n\x00 ") {
			return usagef("-notice-url %q: must be an https:// URL", o.noticeURL)
		}
	}
	return nil
}

func (o *protectOptions) encrypts() bool { return o.pgpKeys != "" || o.smimeCerts != "" }

// policy is the Policy the flags ask for.
func (o *protectOptions) policy() mailsec.Policy {
	switch {
	case !o.encrypts():
		return mailsec.DefaultPolicy()
	case o.prefer:
		return mailsec.PreferProtection(mailsec.DefaultPolicy())
	case o.noticeURL != "":
		return mailsec.NoticeWhenNoKey(mailsec.RequireProtection(mailsec.DefaultPolicy()))
	}
	return mailsec.RequireProtection(mailsec.DefaultPolicy())
}

// notice is the -notice-url notice: the link, and who the message is
// from, nothing of the message itself.
func (o *protectOptions) notice() mailsec.NoticeFunc {
	if o.noticeURL == "" {
		return nil
	}
	return func(_ context.Context, m *mailsec.Message, _ mailsec.Recipient) (*mailsec.Notice, error) {
		return &mailsec.Notice{Text: "You have a new message from " + m.From + ". Read it here:\n\n" + o.noticeURL + "\n"}, nil
	}
}

// protectors builds the Protectors the flags ask for: PGP first, then
// S/MIME, which is the order a recipient with both is served in.
func (o *protectOptions) protectors(getenv func(string) string) ([]mailsec.Protector, error) {
	var out []mailsec.Protector
	if o.pgpKeys != "" {
		keys, err := pgp.LoadKeyRing(o.pgpKeys)
		if err != nil {
			return nil, usagef("-pgp-keys: %v", err)
		}
		opts := &pgp.Options{OuterSubject: o.outerSubject}
		if o.pgpSign != "" {
			f, err := os.Open(o.pgpSign)
			if err != nil {
				return nil, usagef("-pgp-sign: %v", err)
			}
			defer f.Close()
			signer, err := pgp.ReadSigningKey(f, []byte(getenv(pgpPassphraseEnv)))
			if err != nil {
				return nil, usagef("-pgp-sign %s: %v", o.pgpSign, err)
			}
			opts.Signer = signer
		}
		p, err := pgp.New(keys, opts)
		if err != nil {
			return nil, usagef("%v", err)
		}
		out = append(out, p)
	}
	if o.smimeCerts != "" {
		certs, err := smime.LoadCertificates(o.smimeCerts)
		if err != nil {
			return nil, usagef("-smime-certs: %v", err)
		}
		opts := &smime.Options{OuterSubject: o.outerSubject}
		if o.smimeRoots != "" {
			roots, err := smime.LoadRoots(o.smimeRoots)
			if err != nil {
				return nil, usagef("-smime-roots: %v", err)
			}
			opts.Roots = roots // nil: the system's roots
		}
		if o.smimeSignCert != "" {
			signer, err := smime.LoadSigner(o.smimeSignCert, o.smimeSignKey)
			if err != nil {
				return nil, usagef("-smime-sign-cert: %v", err)
			}
			opts.Signer = signer
		}
		p, err := smime.New(certs, opts)
		if err != nil {
			return nil, usagef("%v", err)
		}
		out = append(out, p)
	}
	return out, nil
}
