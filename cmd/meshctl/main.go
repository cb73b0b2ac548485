// Command meshctl is the minimesh operator CLI.
package main

import (
	"fmt"
	"os"

	"minimesh/internal/meshctl"
)

func main() {
	root := meshctl.NewRoot(meshctl.IO{Out: os.Stdout, Err: os.Stderr})
	err := root.Execute()
	// authz explain's deny and diff's differences exit 1 in silence, as
	// kubectl auth can-i and kubectl diff do; diff's errors exit 2.
	code, show := meshctl.ExitCode(err)
	if show {
		// Escaped: meshd's messages may quote a workload's strings.
		fmt.Fprintln(os.Stderr, "meshctl:", meshctl.ErrorText(err))
	}
	os.Exit(code)
}
