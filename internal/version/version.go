// Package version is the build's version, set with
// -ldflags "-X minimesh/internal/version.Version=...".
package version

// Version of this build.
var Version = "dev"
