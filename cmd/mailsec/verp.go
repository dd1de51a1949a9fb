package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/bounce"
)

// verpOptions are the -verp and -verp-secret-file flags, which send,
// queue run and bounce ingest share: the signed VERP return paths
// (bounce.VERP) deliveries are sent from and bounces are matched by.
type verpOptions struct {
	addr       string // LOCAL@DOMAIN
	secretFile string
}

// maxVERPLocal is the longest -verp local part the commands accept: the
// tag of an outbox message (its 26-character ID) must fit in the 64
// octets of a local part with the '+', the '.' and the 16 characters of
// the MAC. A generated ENVID (24 characters) fits then as well.
const maxVERPLocal = 64 - 26 - 2 - 16

// maxVERPSecret bounds the secret file read, so that a -verp-secret-file
// naming a device or a large file by mistake is refused, not read.
const maxVERPSecret = 4096

func (o *verpOptions) register(fs *flag.FlagSet, use string) {
	fs.StringVar(&o.addr, "verp", "", use+" signed VERP return paths, LOCAL+<tag>@DOMAIN, `LOCAL@DOMAIN` such as bounces@example.com (the local part at most "+fmt.Sprint(maxVERPLocal)+" characters); needs -verp-secret-file")
	fs.StringVar(&o.secretFile, "verp-secret-file", "", "the `FILE` holding the secret that signs and checks the -verp tags: at least 32 random bytes (head -c 32 /dev/urandom | base64 > FILE; a final line end is not part of it), the same file wherever mail is sent or bounces are read; never printed")
}

// verpFlagNames are the names of the flags verpOptions registers.
func verpFlagNames() []string { return []string{"verp", "verp-secret-file"} }

// check reports what makes the parsed flags unusable, before any file
// is read.
func (o *verpOptions) check() error {
	switch {
	case o.addr == "" && o.secretFile == "":
		return nil
	case o.addr == "":
		return usagef("-verp-secret-file goes with -verp LOCAL@DOMAIN")
	case o.secretFile == "":
		return usagef("-verp %s needs -verp-secret-file FILE: the secret that signs the tags", o.addr)
	}
	local, domain, ok := strings.Cut(o.addr, "@")
	v := &bounce.VERP{Local: local, Domain: domain, Secret: make([]byte, 32)}
	if !ok || strings.Contains(domain, "@") {
		return usagef("-verp %q: must be LOCAL@DOMAIN, such as bounces@example.com", o.addr)
	}
	if err := v.Check(); err != nil {
		var ce *mailsec.ConfigError
		if errors.As(err, &ce) && ce.Field == "bounce.VERP.Domain" {
			return usagef("-verp %q: the domain must be a domain name, in A-labels", o.addr)
		}
		return usagef("-verp %q: the local part must be a plain one, without '+', '@', quotes or spaces, of at most %d characters", o.addr, maxVERPLocal)
	}
	if len(local) > maxVERPLocal {
		return usagef("-verp %q: the local part must be at most %d characters, so that the tag fits in the 64 octets of an address's local part", o.addr, maxVERPLocal)
	}
	return nil
}

// verp reads the secret file and returns the VERP the flags describe, or
// nil without -verp. A secret file its group or others may read draws a
// warning on warn: anyone who reads it can forge bounces that the outbox
// takes for real ones.
func (o *verpOptions) verp(warn io.Writer) (*bounce.VERP, error) {
	if o.addr == "" {
		return nil, nil
	}
	f, err := os.Open(o.secretFile)
	if err != nil {
		return nil, usagef("-verp-secret-file: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, usagef("-verp-secret-file: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, usagef("-verp-secret-file %s: not a regular file", o.secretFile)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(warn, "mailsec: warning: the VERP secret %s is readable by others than its owner (mode %04o): anyone who reads it can forge bounces for your mail; chmod 600 %s\n",
			printable(o.secretFile), fi.Mode().Perm(), printable(o.secretFile))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxVERPSecret+1))
	if err != nil {
		return nil, usagef("-verp-secret-file: %v", err)
	}
	if len(data) > maxVERPSecret {
		return nil, usagef("-verp-secret-file %s: larger than %d bytes: not a secret", o.secretFile, maxVERPSecret)
	}
	// A line end an editor adds is not part of the secret.
	secret := bytes.TrimRight(data, "\r\n")
	if len(secret) < 32 {
		return nil, usagef("-verp-secret-file %s: %d bytes, the secret must be at least 32 random bytes (head -c 32 /dev/urandom | base64 > FILE)", o.secretFile, len(secret))
	}
	local, domain, _ := strings.Cut(o.addr, "@")
	v := &bounce.VERP{Local: local, Domain: domain, Secret: secret}
	if err := v.Check(); err != nil {
		return nil, usagef("-verp %s: %v", o.addr, err)
	}
	return v, nil
}
