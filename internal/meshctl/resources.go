package meshctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// source is where a decoded object came from, for error messages.
type source struct {
	file  string
	index int
	line  int
	item  int // in a List, 1-based; 0 otherwise
}

func (s source) String() string {
	w := fmt.Sprintf("%s: document %d (line %d)", s.file, s.index, s.line)
	if s.item > 0 {
		w += fmt.Sprintf(" item %d", s.item)
	}
	return w
}

// addNamespaceFlag is every command's -n: one namespace, "default" unless
// given.
func addNamespaceFlag(g *globals, cmd *cobra.Command, ns *string, what string) {
	cmd.Flags().StringVarP(ns, "namespace", "n", api.DefaultNamespace, what)
	_ = cmd.RegisterFlagCompletionFunc("namespace", g.completeNamespaces)
}

// addFileFlag is -f FILE|DIR|- (repeatable).
func addFileFlag(cmd *cobra.Command, files *[]string) {
	cmd.Flags().StringSliceVarP(files, "filename", "f", nil, "file, directory (*.yaml, *.yml, *.json) or - for stdin; repeatable")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
}

func newApplyCmd(g *globals) *cobra.Command {
	var (
		files  []string
		dryRun bool
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [--dry-run] [--wait[=TIMEOUT]]",
		Short: "Create or replace resources from YAML or JSON, all or nothing",
		Long: `Create or replace resources from YAML or JSON, all or nothing, under one new
revision. Reads what get -o yaml|json prints (a List too); status and the
server's metadata (revision, updateTime) are ignored, as kubectl does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f is required")
			}
			objs, where, err := readObjects(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			req := &meshv1.ApplyRequest{DryRun: dryRun}
			for _, o := range objs {
				req.Resources = append(req.Resources, api.ToProto(o))
			}
			return g.adminFor(wait, func(ctx context.Context, c meshv1.AdminServiceClient) error {
				cctx, cancel := context.WithTimeout(ctx, g.timeout)
				resp, err := c.Apply(cctx, req)
				cancel()
				if err != nil {
					return locate(err, where)
				}
				if wait > 0 && !dryRun {
					if err := g.waitRevision(ctx, c, resp.GetRevision(), wait); err != nil {
						return err
					}
				}
				var names []string
				for _, r := range resp.GetResults() {
					names = append(names, resourceName(api.Kind(r.GetKind()), r.GetName()))
				}
				return g.show(view{doc: resp, names: names, table: func(bool) error {
					suffix := ""
					if dryRun {
						suffix = " (dry run)"
					}
					for _, r := range resp.GetResults() {
						printf(g.io.Out, "%s/%s/%s %s%s\n", strings.ToLower(r.GetKind()), r.GetNamespace(), r.GetName(), r.GetAction(), suffix)
					}
					printf(g.io.Out, "revision %d\n", resp.GetRevision())
					return nil
				}})
			})
		},
	}
	addFileFlag(cmd, &files)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate on meshd and show what would change, changing nothing")
	addWaitFlag(cmd.Flags(), &wait, "every connected proxy ACKed or NACKed the new revision (a NACK fails, naming the proxy and reason)")
	return outputs(cmd, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
}

// readObjects decodes every document of every input, strictly. The
// server's fields (metadata.revision, updateTime) are dropped.
func readObjects(inputs []string, stdin io.Reader) ([]api.Object, map[string]source, error) {
	var paths []string
	for _, in := range inputs {
		if in == "-" {
			paths = append(paths, in)
			continue
		}
		fi, err := os.Stat(in)
		if err != nil {
			return nil, nil, err
		}
		if !fi.IsDir() {
			paths = append(paths, in)
			continue
		}
		entries, err := os.ReadDir(in)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					paths = append(paths, filepath.Join(in, e.Name()))
				}
			}
		}
	}
	sort.SliceStable(paths, func(i, j int) bool { return paths[i] != "-" && paths[j] != "-" && paths[i] < paths[j] })
	var objs []api.Object
	where := map[string]source{}
	for _, p := range paths {
		var r io.Reader = stdin
		name := "<stdin>"
		if p != "-" {
			f, err := os.Open(p)
			if err != nil {
				return nil, nil, err
			}
			defer f.Close()
			r, name = f, p
		}
		docs, err := api.Decode(name, r)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range docs {
			m := d.Object.Meta()
			m.Revision, m.UpdateTime = 0, time.Time{} // meshd's, as kubectl drops resourceVersion
			objs = append(objs, d.Object)
			where[api.KeyOf(d.Object).String()] = source{file: name, index: d.Index, line: d.Line, item: d.Item}
		}
	}
	if len(objs) == 0 {
		return nil, nil, fmt.Errorf("no resources in %s", strings.Join(inputs, ", "))
	}
	return objs, where, nil
}

// locate adds the file and document of each object an error names.
func locate(err error, where map[string]source) error {
	msg := err.Error()
	var locs []string
	for key, src := range where {
		if strings.Contains(msg, key) {
			locs = append(locs, fmt.Sprintf("%s: %s", src, key))
		}
	}
	if len(locs) == 0 {
		return err
	}
	sort.Strings(locs)
	return fmt.Errorf("%w\n  in %s", err, strings.Join(locs, "\n  in "))
}

func newGetCmd(g *globals) *cobra.Command {
	var (
		namespace string
		all       bool
	)
	cmd := &cobra.Command{
		Use:   "get KIND|all [NAME] [-n NAMESPACE | -A] [-o table|wide|name|json|yaml|jsonpath=TEMPLATE]",
		Short: "Show resources: a table per kind, or the documents apply reads",
		Long: `Show resources. KIND is a kind, its plural or its short name: service (svc),
route (rt), ratelimit (rl), accesslog (al), authorizationpolicy (ap),
configfile (cf); all is every kind. With NAME, one object; without, a List.
-o yaml|json print what apply -f reads back.`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: g.completeKindAndName(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &meshv1.GetResourcesRequest{Namespace: namespace}
			if all {
				if cmd.Flags().Changed("namespace") {
					return errors.New("-A (all namespaces) and -n NAMESPACE: give one")
				}
				if len(args) == 2 {
					return errors.New("-A with a NAME: give the namespace with -n")
				}
				req.Namespace = ""
			}
			if args[0] != "all" {
				k, err := parseKind(args[0])
				if err != nil {
					return err
				}
				req.Kind = string(k)
			} else if len(args) == 2 {
				return errors.New("get all takes no NAME: give a kind")
			}
			if len(args) == 2 {
				req.Name = args[1]
			}
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.GetResources(ctx, req)
				if err != nil {
					return err
				}
				var objs []api.Object
				for _, r := range resp.GetResources() {
					o, err := api.FromProto(r)
					if err != nil {
						return err
					}
					objs = append(objs, o)
				}
				sort.SliceStable(objs, func(i, j int) bool { return kindOrder(objs[i].Kind()) < kindOrder(objs[j].Kind()) })
				var doc any = objectList{revision: resp.GetRevision(), items: objs}
				if req.Name != "" && len(objs) == 1 {
					doc = objs[0]
				}
				names := make([]string, len(objs))
				for i, o := range objs {
					names[i] = resourceName(o.Kind(), o.Meta().Name)
				}
				return g.show(view{doc: doc, names: names, table: func(wide bool) error {
					if len(objs) == 0 {
						if req.Namespace == "" {
							printf(g.io.Err, "No resources found\n")
						} else {
							printf(g.io.Err, "No resources found in namespace %s.\n", req.Namespace)
						}
						return nil
					}
					return g.objectTables(objs, req.Kind == "", req.Namespace == "", wide)
				}})
			})
		},
	}
	addNamespaceFlag(g, cmd, &namespace, "namespace")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	return outputs(cmd, formatTable, formatWide, formatName, formatJSON, formatYAML, formatJSONPath)
}

// objectTables prints objects (sorted by kind) as a table per kind, with
// the kind's columns; with prefix, names are kind/name (get all), with
// namespaces, a NAMESPACE column (-A).
func (g *globals) objectTables(objs []api.Object, prefix, namespaces, wide bool) error {
	now := time.Now()
	for i := 0; i < len(objs); {
		k := objs[i].Kind()
		j := i
		for j < len(objs) && objs[j].Kind() == k {
			j++
		}
		if i > 0 {
			printf(g.io.Out, "\n")
		}
		col := columns[k]
		header := "NAME\t" + col.header
		if wide {
			header += col.wide
		}
		header += "\tAGE"
		if wide {
			header += "\tREVISION"
		}
		if namespaces {
			header = "NAMESPACE\t" + header
		}
		w := g.newTable(header)
		for _, o := range objs[i:j] {
			m := o.Meta()
			name := m.Name
			if prefix {
				name = resourceName(k, name)
			}
			cells := []string{name}
			if namespaces {
				cells = append([]string{m.Namespace}, cells...)
			}
			cells = append(cells, col.cells(o, now, wide)...)
			cells = append(cells, age(now.Sub(m.UpdateTime)))
			if wide {
				cells = append(cells, fmt.Sprint(m.Revision))
			}
			row(w, cells...)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// deleted is delete's document.
type deleted struct {
	Revision uint64       `json:"revision"`
	Deleted  []deletedKey `json:"deleted"`
	NotFound []deletedKey `json:"notFound,omitempty"`
}

type deletedKey struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func newDeleteCmd(g *globals) *cobra.Command {
	var (
		namespace      string
		files          []string
		ignoreNotFound bool
		wait           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME [-n NAMESPACE] | -f FILE|DIR|-) [--wait[=TIMEOUT]]",
		Short: "Delete resources, named or in files (refused while others refer to them)",
		Long: `Delete a resource by kind and name, or every resource in files (-f): those
that refer to others first, Services last. A resource others refer to is
refused. One missing is an error unless --ignore-not-found; the others are
deleted all the same.`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(files) > 0 && len(args) > 0:
				return errors.New("delete: -f or KIND NAME, not both")
			case len(files) == 0 && len(args) != 2:
				return fmt.Errorf("delete: want KIND NAME or -f FILE, got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: g.completeKindAndName(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			var keys []api.Key
			if len(files) > 0 {
				if cmd.Flags().Changed("namespace") {
					return errors.New("delete -f: the namespaces are the files'; -n is for KIND NAME")
				}
				objs, _, err := readObjects(files, cmd.InOrStdin())
				if err != nil {
					return err
				}
				for _, o := range objs {
					keys = append(keys, api.KeyOf(o))
				}
				// Those that refer to others before what they refer to.
				sort.SliceStable(keys, func(i, j int) bool { return kindOrder(keys[i].Kind) > kindOrder(keys[j].Kind) })
			} else {
				k, err := parseKind(args[0])
				if err != nil {
					return err
				}
				keys = []api.Key{{Kind: k, Namespace: namespace, Name: args[1]}}
			}
			return g.adminFor(wait, func(ctx context.Context, c meshv1.AdminServiceClient) error {
				var (
					doc   deleted
					names []string
					errs  []error
				)
				for _, k := range keys {
					cctx, cancel := context.WithTimeout(ctx, g.timeout)
					resp, err := c.DeleteResource(cctx, &meshv1.DeleteResourceRequest{Kind: string(k.Kind), Namespace: k.Namespace, Name: k.Name})
					cancel()
					dk := deletedKey{Kind: string(k.Kind), Namespace: k.Namespace, Name: k.Name}
					switch {
					case status.Code(err) == codes.NotFound && ignoreNotFound:
						doc.NotFound = append(doc.NotFound, dk)
						continue
					case err != nil && len(keys) > 1:
						errs = append(errs, fmt.Errorf("%s: %w", k, err))
						continue
					case err != nil:
						return err
					}
					doc.Revision = resp.GetRevision()
					doc.Deleted = append(doc.Deleted, dk)
					names = append(names, resourceName(k.Kind, k.Name))
				}
				if wait > 0 && len(doc.Deleted) > 0 {
					if err := g.waitRevision(ctx, c, doc.Revision, wait); err != nil {
						return err
					}
				}
				err := g.show(view{doc: doc, names: names, table: func(bool) error {
					for _, d := range doc.Deleted {
						printf(g.io.Out, "%s/%s/%s deleted\n", strings.ToLower(d.Kind), d.Namespace, d.Name)
					}
					if len(doc.Deleted) > 0 {
						printf(g.io.Out, "revision %d\n", doc.Revision)
					}
					return nil
				}})
				return errors.Join(append(errs, err)...)
			})
		},
	}
	addNamespaceFlag(g, cmd, &namespace, "namespace of NAME")
	addFileFlag(cmd, &files)
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "a resource that does not exist is not an error")
	addWaitFlag(cmd.Flags(), &wait, "every connected proxy ACKed or NACKed the new revision (a NACK fails, naming the proxy and reason)")
	return outputs(cmd, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
}

// row writes one table row, each cell escaped.
func row(w io.Writer, cells ...string) {
	args := make([]any, len(cells))
	for i, c := range cells {
		args[i] = c
	}
	printf(w, strings.TrimSuffix(strings.Repeat("%s\t", len(cells)), "\t")+"\n", args...)
}

// sortedKinds is every kind's name, plural and short name, for errors
// and completion.
func sortedKinds() []string {
	var out []string
	for _, k := range api.Kinds() {
		out = append(out, strings.ToLower(string(k)))
	}
	for s := range shortNames {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}
