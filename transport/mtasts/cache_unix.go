//go:build unix

package mtasts

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// openCacheFile opens name for reading without following a symbolic link
// in its last element (a link planted in the directory does not make
// another file the domain's policy) and without waiting (a FIFO planted
// there does not block Get; Get then refuses it as not a regular file).
func openCacheFile(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// checkPrivate reports why fi, a cache file or directory, may have been
// written by someone other than the current user: it belongs to another
// user, or its group or others may write to it. It returns nil for one
// only the current user can have written.
func checkPrivate(fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); int(st.Uid) != uid {
			return fmt.Errorf("owned by uid %d, not by the current user (uid %d)", st.Uid, uid)
		}
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("mode %#o: writable by group or others", perm)
	}
	return nil
}
