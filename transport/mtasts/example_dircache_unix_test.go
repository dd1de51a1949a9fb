//go:build unix

package mtasts_test

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/mailsec/mailsec/transport/mtasts"
)

// Check, at start-up, refuses a cache directory that someone other than
// the current user could write a policy into.
func ExampleDirCache_Check() {
	dir, err := os.MkdirTemp("", "mta-sts")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cache := mtasts.DirCache(filepath.Join(dir, "policies"))

	err = cache.Check()
	fmt.Println("missing:", errors.Is(err, fs.ErrNotExist))

	if err := os.Mkdir(string(cache), 0o700); err != nil {
		log.Fatal(err)
	}
	fmt.Println("owner only:", cache.Check())

	if err := os.Chmod(string(cache), 0o777); err != nil {
		log.Fatal(err)
	}
	err = cache.Check()
	fmt.Println("world-writable:", errors.Is(err, mtasts.ErrUnsafeCache))
	// Output:
	// missing: true
	// owner only: <nil>
	// world-writable: true
}
