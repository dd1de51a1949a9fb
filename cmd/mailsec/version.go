package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

const versionSynopsis = `usage: mailsec version
`

func versionUsage(w io.Writer) {
	fmt.Fprint(w, versionSynopsis, `
Version prints the module mailsec was built from and its version, the Go
version it was built with, and the source revision when the build recorded
one: the line to paste into a bug report.

Example:
  $ mailsec version
  mailsec github.com/mailsec/mailsec v1.4.0 built with go1.26.1 (linux/amd64)

Exit status:
  0  the version was printed
  1  the binary carries no build information
  2  bad usage: a flag or an argument
`)
}

func runVersion(_ context.Context, e *env, args []string) int {
	const name = "version"
	fs := flag.NewFlagSet("mailsec version", flag.ContinueOnError)
	if code, ok := parseFlags(e, name, fs, versionUsage, args); !ok {
		return code
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(e.stderr, "mailsec version: the binary carries no build information")
		return exitFail
	}
	fmt.Fprintln(e.stdout, versionLine(info))
	return exitOK
}

// versionLine describes the build in one line: module, version, Go
// version and platform, and the source revision if the build recorded it.
func versionLine(info *debug.BuildInfo) string {
	path, version := info.Main.Path, info.Main.Version
	if path == "" {
		path = "github.com/mailsec/mailsec"
	}
	if version == "" {
		version = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mailsec %s %s built with %s", path, version, info.GoVersion)
	if goos, goarch := settings["GOOS"], settings["GOARCH"]; goos != "" && goarch != "" {
		fmt.Fprintf(&b, " (%s/%s)", goos, goarch)
	}
	if rev := settings["vcs.revision"]; rev != "" {
		b.WriteString(", revision " + rev)
		if t := settings["vcs.time"]; t != "" {
			b.WriteString(" of " + t)
		}
		if settings["vcs.modified"] == "true" {
			b.WriteString(", modified")
		}
	}
	return printable(b.String())
}
