// Package version is the build's version: what -ldflags
// "-X minimesh/internal/version.Version=..." set (make build sets
// `git describe --always --dirty`), else the commit the go command stamped
// into the binary (go build and go run in a git checkout: vcs.revision,
// "-dirty" when the tree had changes), else the module's version (go
// install minimesh/cmd/meshd@v1.2.3), else "dev" (test binaries, a build
// outside a checkout or with -buildvcs=false).
package version

import (
	"runtime/debug"
	"strings"
)

// unset is Version when no -ldflags set it.
const unset = "dev"

// Version of this build.
var Version = unset

func init() {
	if Version != unset && Version != "" { // set by -ldflags
		return
	}
	Version = unset // -X ...=  (no git at make build)
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := FromBuildInfo(bi); v != "" {
			Version = v
		}
	}
}

// FromBuildInfo is the version the go command stamped into a binary: the
// commit's short hash (as git describe --always writes it, 7 hex digits)
// with "-dirty" when the checkout had uncommitted changes, else the main
// module's version when it is a release, else "".
func FromBuildInfo(bi *debug.BuildInfo) string {
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" {
		if len(rev) > 7 && isHex(rev) {
			rev = rev[:7]
		}
		if dirty {
			rev += "-dirty"
		}
		return rev
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	return ""
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}
