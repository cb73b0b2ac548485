package meshctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// source is where a decoded object came from, for error messages.
type source struct {
	file  string
	index int
	line  int
}

func newApplyCmd(g *globals) *cobra.Command {
	var (
		files  []string
		dryRun bool
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [--dry-run]",
		Short: "Create or replace resources from YAML, all or nothing",
		Args:  cobra.NoArgs,
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
				if g.output != "table" {
					return g.print(resp)
				}
				suffix := ""
				if dryRun {
					suffix = " (dry run)"
				}
				for _, r := range resp.GetResults() {
					printf(g.io.Out, "%s/%s/%s %s%s\n", strings.ToLower(r.GetKind()), r.GetNamespace(), r.GetName(), r.GetAction(), suffix)
				}
				printf(g.io.Out, "revision %d\n", resp.GetRevision())
				return nil
			})
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory (*.yaml, *.yml, *.json) or - for stdin; repeatable")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate on meshd and show what would change, changing nothing")
	addWaitFlag(cmd.Flags(), &wait, "every connected proxy ACKed or NACKed the new revision (a NACK fails, naming the proxy and reason)")
	return cmd
}

// readObjects decodes every document of every input, strictly.
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
			objs = append(objs, d.Object)
			where[api.KeyOf(d.Object).String()] = source{file: name, index: d.Index, line: d.Line}
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
			locs = append(locs, fmt.Sprintf("%s: document %d (line %d): %s", src.file, src.index, src.line, key))
		}
	}
	if len(locs) == 0 {
		return err
	}
	sort.Strings(locs)
	return fmt.Errorf("%w\n  in %s", err, strings.Join(locs, "\n  in "))
}

func newGetCmd(g *globals) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "get KIND|all [NAME] [-n NAMESPACE] [-o table|yaml|json]",
		Short: "Show resources",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(_ *cobra.Command, args []string) error {
			req := &meshv1.GetResourcesRequest{Namespace: namespace}
			if args[0] != "all" {
				k, err := api.ParseKind(args[0])
				if err != nil {
					return err
				}
				req.Kind = string(k)
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
				switch g.output {
				case "yaml":
					return api.Encode(g.io.Out, objs...)
				case "json":
					return g.printJSON(resp)
				}
				w := tabwriter.NewWriter(g.io.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "KIND\tNAMESPACE\tNAME\tSERVICE\tREVISION\tAGE")
				for _, o := range objs {
					m := o.Meta()
					printf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", o.Kind(), m.Namespace, m.Name, o.ServiceName(), m.Revision, time.Since(m.UpdateTime).Round(time.Second))
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default: all; \"default\" when NAME is given)")
	return cmd
}

func newDeleteCmd(g *globals) *cobra.Command {
	var (
		namespace string
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "delete KIND NAME [-n NAMESPACE]",
		Short: "Delete a resource (refused while others refer to it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			k, err := api.ParseKind(args[0])
			if err != nil {
				return err
			}
			return g.adminFor(wait, func(ctx context.Context, c meshv1.AdminServiceClient) error {
				cctx, cancel := context.WithTimeout(ctx, g.timeout)
				resp, err := c.DeleteResource(cctx, &meshv1.DeleteResourceRequest{Kind: string(k), Namespace: namespace, Name: args[1]})
				cancel()
				if err != nil {
					return err
				}
				if wait > 0 {
					if err := g.waitRevision(ctx, c, resp.GetRevision(), wait); err != nil {
						return err
					}
				}
				if g.output != "table" {
					return g.print(resp)
				}
				printf(g.io.Out, "%s/%s/%s deleted\nrevision %d\n", strings.ToLower(string(k)), namespace, args[1], resp.GetRevision())
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace")
	addWaitFlag(cmd.Flags(), &wait, "every connected proxy ACKed or NACKed the new revision (a NACK fails, naming the proxy and reason)")
	return cmd
}
