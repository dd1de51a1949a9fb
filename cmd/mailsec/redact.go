package main

import (
	"bytes"
	"encoding/base64"
	"io"
	"regexp"
	"slices"
)

// keyNotShown stands in the output for an outbox key given on the command
// line.
const keyNotShown = "(an outbox key, not shown: keys are read from " + outboxKeyEnv + " only)"

// keyBase64 matches the form of an outbox key: the padded base64 of 32
// octets (what Key.Base64 writes and ParseKeys wants), found also inside
// a longer run of base64 ("-kKEY", "/tmp/KEY"). A message ID (base32,
// unpadded, 26 characters) or a shorter token does not match.
var keyBase64 = regexp.MustCompile(`[A-Za-z0-9+/]{43}=`)

// secretsIn returns what of args, and of the key variable's value, may be
// an outbox key, wherever it is in an argument ("K1,K2", "-x=K",
// "MAILSEC_OUTBOX_KEY=K"): each one padded, then without its padding (the
// flag package cuts a name at '=').
func secretsIn(args []string, envKeys string) [][]byte {
	var padded, bare [][]byte
	for _, s := range append(slices.Clip(args), envKeys) {
		for _, m := range keyBase64.FindAllString(s, -1) {
			if b, err := base64.StdEncoding.DecodeString(m); err == nil && len(b) == 32 {
				padded = append(padded, []byte(m))
				bare = append(bare, []byte(m[:len(m)-1]))
			}
		}
	}
	return append(padded, bare...)
}

// redacting returns w, writing keyNotShown in place of each of secrets.
// The command line is the only place a key comes from that is not the
// environment; a command that echoes an argument (a stray one, an unknown
// subcommand, a file that does not open, a flag's bad value) or a
// message that quotes the key variable must not put the key in standard
// error, which ends up in cron mail, journald and CI logs. Each write is
// redacted whole: the commands write a message, a line or a log record at
// a time.
func redacting(w io.Writer, secrets [][]byte) io.Writer {
	if len(secrets) == 0 {
		return w
	}
	return &redactWriter{w: w, secrets: secrets}
}

type redactWriter struct {
	w       io.Writer
	secrets [][]byte
}

func (r *redactWriter) Write(p []byte) (int, error) {
	out := p
	for _, s := range r.secrets {
		if bytes.Contains(out, s) {
			out = bytes.ReplaceAll(out, s, []byte(keyNotShown))
		}
	}
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
