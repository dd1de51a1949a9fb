//go:build !unix

package mtasts

import (
	"io/fs"
	"os"
)

// openCacheFile opens name for reading. Outside Unix there is no
// O_NOFOLLOW; Get checks the file it opened is a regular one.
func openCacheFile(name string) (*os.File, error) { return os.Open(name) }

// checkPrivate accepts every file outside Unix, whose permission bits do
// not say who may write: protect the directory with the system's access
// control lists.
func checkPrivate(fs.FileInfo) error { return nil }
