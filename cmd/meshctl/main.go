// Command meshctl is the minimesh operator CLI.
package main

import (
	"fmt"
	"os"

	"minimesh/internal/meshctl"
)

func main() {
	root := meshctl.NewRoot(meshctl.IO{Out: os.Stdout, Err: os.Stderr})
	if err := root.Execute(); err != nil {
		// Escaped: meshd's messages may quote a workload's strings.
		fmt.Fprintln(os.Stderr, "meshctl:", meshctl.ErrorText(err))
		os.Exit(1)
	}
}
