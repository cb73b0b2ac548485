package version

import (
	"runtime/debug"
	"testing"
)

// TestFromBuildInfo: a go build in a checkout says its commit (+dirty), a
// go install of a release its version, anything else nothing (so "dev").
func TestFromBuildInfo(t *testing.T) {
	const rev = "49cff41e0b5a3c2d9e8f7a6b5c4d3e2f1a0b9c8d"
	for _, c := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"clean checkout", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}}, "49cff41"},
		{"dirty checkout", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}}, "49cff41-dirty"},
		{"release", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"go test, -buildvcs=false", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, ""},
		{"no main module", debug.BuildInfo{}, ""},
	} {
		if got := FromBuildInfo(&c.bi); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
