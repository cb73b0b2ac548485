// Command docgen writes docs/reference.md, the mesh resources' reference,
// from proto/mesh/v1/resources.proto's comments and the examples in
// examples/, and checks that it is current. Run from the repository's root:
//
//	go run ./internal/docgen            # make docs: rewrite docs/reference.md
//	go run ./internal/docgen -check     # make docs-check: exit 1 when it is stale
//
// Its tests also keep the other docs honest: examples/ must validate, and
// every error message docs/troubleshooting.md quotes must still be in the
// code.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	root := flag.String("root", ".", "the repository's root")
	out := flag.String("o", "docs/reference.md", "the file to write, relative to -root")
	check := flag.Bool("check", false, "do not write: exit 1 when the file differs from what would be written")
	flag.Parse()
	if err := run(*root, *out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}

func run(root, out string, check bool) error {
	in, err := readInputs(root)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := Generate(&b, in); err != nil {
		return err
	}
	path := out
	if !filepath.IsAbs(out) {
		path = filepath.Join(root, out)
	}
	if check {
		have, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w (run make docs)", out, err)
		}
		if !bytes.Equal(have, b.Bytes()) {
			return fmt.Errorf("%s is stale: run make docs and commit it", out)
		}
		return nil
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func readInputs(root string) (Inputs, error) {
	var in Inputs
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{
		{"proto/mesh/v1/resources.proto", &in.Proto},
		{"examples/mesh.yaml", &in.Example},
		{"examples/roles.yaml", &in.Roles},
		{"examples/every-field.yaml", &in.EveryField},
	} {
		b, err := os.ReadFile(filepath.Join(root, f.path))
		if err != nil {
			return in, err
		}
		*f.dst = b
	}
	src, err := os.ReadFile(filepath.Join(root, "api/identity.go"))
	if err != nil {
		return in, err
	}
	in.IdentityDoc, err = TypeDoc(src, "IdentityPattern")
	return in, err
}
