//go:build !unix

package fsguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrUntrusted is wrapped by every refusal.
var ErrUntrusted = errors.New("untrusted")

// Dir is unsupported off Unix: ownership cannot be checked there.
type Dir struct{ path string }

func unsupported(path string) error {
	return fmt.Errorf("fsguard: %s: ownership checks need a Unix system: %w", path, errors.ErrUnsupported)
}

func OpenDir(path string, create bool) (*Dir, error)          { return nil, unsupported(path) }
func (d *Dir) Path() string                                   { return d.path }
func (d *Dir) Mode() fs.FileMode                              { return 0 }
func (d *Dir) Close() error                                   { return nil }
func (d *Dir) OpenDir(name string, create bool) (*Dir, error) { return nil, unsupported(name) }
func (d *Dir) Check(name string, secret bool) (bool, error)   { return false, unsupported(name) }
func (d *Dir) ReadFile(name string, secret bool, max int64) ([]byte, error) {
	return nil, unsupported(name)
}
func (d *Dir) WriteFile(name string, data []byte, perm fs.FileMode) error { return unsupported(name) }
func (d *Dir) Remove(name string) error                                   { return unsupported(name) }
func CheckFile(f *os.File, secret bool) error                             { return unsupported(f.Name()) }
func OpenAppend(path string, perm fs.FileMode) (*os.File, error)          { return nil, unsupported(path) }
func CheckMounted(f *os.File, secret bool) error                          { return unsupported(f.Name()) }
func ReadMounted(path string, secret bool, max int64) ([]byte, error)     { return nil, unsupported(path) }
