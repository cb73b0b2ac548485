// Command crdgen writes deploy/k8s/crds/: one CustomResourceDefinition per
// kind of api.Kinds() (group minimesh.io, version v1alpha1, namespaced,
// the status subresource on) and a kustomization.yaml listing them, and
// checks that they are current. Run from the repository's root:
//
//	go run ./internal/crdgen            # make crds: rewrite deploy/k8s/crds
//	go run ./internal/crdgen -check     # make crds-check: exit 1 when stale
//
// The schemas come from the same definitions the strict YAML decoder
// (api.Decode) reads: each kind's spec message as compiled into the
// binaries, field by field under its protojson name; durations are
// strings (Go durations, "1.5s", or protojson's "1.500s"), enums the
// strings the decoder accepts, oneofs at most one member set. The
// descriptions are proto/mesh/v1/resources.proto's comments.
//
// Files it does not write (validating-webhook.yaml) are left alone; the
// kustomization lists them after the CRDs.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

func main() {
	root := flag.String("root", ".", "the repository's root")
	check := flag.Bool("check", false, "do not write: exit 1 when a file differs from what would be written")
	flag.Parse()
	if err := run(*root, *check); err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}

// OutDir is where the CRDs go, relative to the repository's root.
const OutDir = "deploy/k8s/crds"

// ProtoFile is resources.proto, relative to the repository's root.
const ProtoFile = "proto/mesh/v1/resources.proto"

func run(root string, check bool) error {
	src, err := os.ReadFile(filepath.Join(root, ProtoFile))
	if err != nil {
		return err
	}
	files, err := Generate(src)
	if err != nil {
		return err
	}
	dir := filepath.Join(root, OutDir)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var stale []string
	for _, n := range names {
		path := filepath.Join(dir, n)
		if check {
			have, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(have, files[n]) {
				stale = append(stale, filepath.Join(OutDir, n))
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, files[n], 0o644); err != nil {
			return err
		}
	}
	if check {
		// A CRD file of a kind that is gone is stale too.
		have, _ := filepath.Glob(filepath.Join(dir, "*.minimesh.io.yaml"))
		for _, h := range have {
			if _, ok := files[filepath.Base(h)]; !ok {
				stale = append(stale, filepath.Join(OutDir, filepath.Base(h))+" (no such kind)")
			}
		}
	}
	if len(stale) > 0 {
		return fmt.Errorf("stale: %v: run make crds and commit", stale)
	}
	return nil
}
