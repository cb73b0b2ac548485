package meshctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	yamlv2 "go.yaml.in/yaml/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// meshctl diff compares the objects of files with meshd's, field by
// field, as kubectl diff does: exit 0 when they are the same, 1 when they
// differ (printed as - meshd's, + the file's), 2 on an error. Only the
// files' objects are compared; meshd's other objects are not listed (apply
// does not delete them either). The server's fields (metadata.revision,
// updateTime) are not compared.

func newDiffCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR|-",
		Short: "Show what apply -f would change, field by field; exit 1 when something would",
		Long: `Compare the resources in files with meshd's, field by field: for each that
differs, a header (--- meshd's, +++ the file's) and - and + lines per field
(path: value, values as JSON). A resource meshd does not have is all +.
Exits 0 when nothing differs, 1 when something does, 2 on an error (as
kubectl diff).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := g.diff(cmd, files)
			if err != nil && !errors.Is(err, errDiffers) {
				return &ExitError{Code: 2, Err: err}
			}
			return err
		},
	}
	addFileFlag(cmd, &files)
	return cmd
}

func (g *globals) diff(cmd *cobra.Command, files []string) error {
	if len(files) == 0 {
		return errors.New("-f is required")
	}
	objs, where, err := readObjects(files, cmd.InOrStdin())
	if err != nil {
		return err
	}
	differs := false
	err = g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
		for _, o := range objs {
			k := api.KeyOf(o)
			resp, err := c.GetResources(ctx, &meshv1.GetResourcesRequest{Kind: string(k.Kind), Namespace: k.Namespace, Name: k.Name})
			var live api.Object
			switch {
			case status.Code(err) == codes.NotFound:
			case err != nil:
				return err
			case len(resp.GetResources()) != 1:
				return fmt.Errorf("%s: meshd answered %d objects", k, len(resp.GetResources()))
			default:
				if live, err = api.FromProto(resp.GetResources()[0]); err != nil {
					return err
				}
			}
			lines, err := diffObjects(live, o)
			if err != nil {
				return err
			}
			if len(lines) == 0 {
				continue
			}
			differs = true
			name := fmt.Sprintf("%s/%s/%s", strings.ToLower(string(k.Kind)), k.Namespace, k.Name)
			if live == nil {
				printf(g.io.Out, "--- meshd %s (none)\n", name)
			} else {
				printf(g.io.Out, "--- meshd %s (revision %d)\n", name, live.Meta().Revision)
			}
			printf(g.io.Out, "+++ %s %s\n", where[k.String()], name)
			for _, l := range lines {
				printf(g.io.Out, "%s\n", l)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if differs {
		return errDiffers
	}
	return nil
}

// diffObjects returns the field lines that differ between live (nil:
// none) and want: "-path: old" and "+path: new", in want's field order,
// then the fields only live has.
func diffObjects(live, want api.Object) ([]string, error) {
	w, err := flatten(want)
	if err != nil {
		return nil, err
	}
	var l []field
	if live != nil {
		if l, err = flatten(live); err != nil {
			return nil, err
		}
	}
	old := map[string]string{}
	for _, f := range l {
		old[f.path] = f.value
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range w {
		seen[f.path] = true
		v, ok := old[f.path]
		switch {
		case ok && v == f.value:
		case ok:
			out = append(out, "-"+f.path+": "+v, "+"+f.path+": "+f.value)
		default:
			out = append(out, "+"+f.path+": "+f.value)
		}
	}
	for _, f := range l {
		if !seen[f.path] {
			out = append(out, "-"+f.path+": "+f.value)
		}
	}
	return out, nil
}

type field struct{ path, value string }

// flatten lists an object's leaves (without the server's metadata) as
// path and JSON value: spec.backends[0].service "api".
func flatten(o api.Object) ([]field, error) {
	c := api.Clone(o)
	m := c.Meta()
	m.Revision, m.UpdateTime = 0, time.Time{}
	tree, err := objectTree(c)
	if err != nil {
		return nil, err
	}
	var out []field
	var walk func(path string, v any) error
	walk = func(path string, v any) error {
		switch t := v.(type) {
		case yamlv2.MapSlice:
			if len(t) == 0 {
				out = append(out, field{path, "{}"})
			}
			for _, it := range t {
				p := fmt.Sprint(it.Key)
				if path != "" {
					p = path + "." + p
				}
				if err := walk(p, it.Value); err != nil {
					return err
				}
			}
		case []any:
			if len(t) == 0 {
				out = append(out, field{path, "[]"})
			}
			for i, e := range t {
				if err := walk(path+"["+strconv.Itoa(i)+"]", e); err != nil {
					return err
				}
			}
		default:
			b, err := json.Marshal(t)
			if err != nil {
				return err
			}
			out = append(out, field{path, string(b)})
		}
		return nil
	}
	return out, walk("", tree)
}
