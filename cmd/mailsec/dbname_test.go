package main

import (
	"strings"
	"testing"
)

// A database URL whose scheme is not exactly postgres or postgresql (a
// leading space from a configuration file, a typo, another driver's
// scheme) is taken for a SQLite path; no command prints its password all
// the same, nor in the library's errors that quote the path.
func TestDBPasswordNotShownNearMissScheme(t *testing.T) {
	t.Parallel()
	environ, _ := queueEnv(t)
	const secret = "s3cretUserinfoPW"
	for _, db := range []string{
		" postgres://app:" + secret + "@127.0.0.1:1/mail",
		"postgress://app:" + secret + "@127.0.0.1:1/mail",
		"pgsql://app:" + secret + "@127.0.0.1:1/mail",
	} {
		for _, args := range [][]string{
			{"queue", "list", "-db", db},
			{"queue", "run", "-db", db, "-once", "-server", "127.0.0.1:1"},
			{"bounce", "ingest", "-db", db},
		} {
			r := runCmd(t, "", environ, args...)
			if strings.Contains(r.stderr, secret) || strings.Contains(r.stdout, secret) {
				t.Errorf("mailsec %v -db %q prints the database password:\n%s", args[:2], db, r.stderr)
			}
		}
	}
}
