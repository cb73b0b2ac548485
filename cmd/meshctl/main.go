// Command meshctl is the minimesh operator CLI.
package main

import (
	"fmt"
	"os"

	"google.golang.org/grpc/status"

	"minimesh/internal/meshctl"
)

func main() {
	root := meshctl.NewRoot(meshctl.IO{Out: os.Stdout, Err: os.Stderr})
	if err := root.Execute(); err != nil {
		if st, ok := status.FromError(err); ok {
			fmt.Fprintf(os.Stderr, "meshctl: %s: %s\n", st.Code(), st.Message())
		} else {
			fmt.Fprintln(os.Stderr, "meshctl:", err)
		}
		os.Exit(1)
	}
}
