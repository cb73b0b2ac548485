package topz

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"minimesh/internal/termsafe"
)

// esc escapes a value for a table cell: the tables are printed by meshctl
// from what a proxy answered, and a hostile one could answer anything.
var esc = termsafe.String

// WriteTable writes tab as an aligned plain-text table, every string
// escaped (termsafe).
func WriteTable(w io.Writer, tab Table) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	window := "since start"
	if tab.CPUWindowSeconds > 0 {
		window = fmt.Sprintf("over %.2fs", tab.CPUWindowSeconds)
	}
	fmt.Fprintf(tw, "# %d processes at %s, CPU %% %s\n", len(tab.Processes), tab.Time.UTC().Format("2006-01-02T15:04:05Z"), window)
	fmt.Fprintln(tw, "PID\tUSER\tCPU%\tRSS\tTHR\tFDS\tS\tCOMMAND")
	for _, p := range tab.Processes {
		fmt.Fprintf(tw, "%d\t%s\t%.1f\t%s\t%d\t%s\t%s\t%s\n", p.PID, esc(p.User), p.CPUPercent, bytesString(p.RSSBytes), p.Threads, fdsString(p.FDs), esc(p.State), esc(command(p)))
	}
	if tab.Truncated {
		fmt.Fprintln(tw, "# truncated")
	}
	_ = tw.Flush()
}

// WriteProcess writes p as plain text: its row, its sockets, its files,
// every string escaped (termsafe).
func WriteProcess(w io.Writer, p Process) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "pid %d  user %s  cpu %.1f%% (since start)  rss %s  threads %d  fds %s  state %s\n",
		p.PID, esc(p.User), p.CPUPercent, bytesString(p.RSSBytes), p.Threads, fdsString(p.FDs), esc(p.State))
	fmt.Fprintf(tw, "command: %s\n\n", esc(command(p.Row)))
	fmt.Fprintf(tw, "SOCKETS (%d)\n", len(p.Sockets))
	fmt.Fprintln(tw, "FD\tPROTO\tLOCAL\tREMOTE\tSTATE")
	for _, s := range p.Sockets {
		proto := s.Proto
		if s.Type != "" {
			proto += "/" + s.Type
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", s.FD, esc(proto), esc(dash(s.Local)), esc(dash(s.Remote)), esc(dash(s.State)))
	}
	fmt.Fprintf(tw, "\nFILES (%d)\n", len(p.Files))
	fmt.Fprintln(tw, "FD\tPATH")
	for _, f := range p.Files {
		fmt.Fprintf(tw, "%d\t%s\n", f.FD, esc(f.Path))
	}
	if p.FDError != "" {
		fmt.Fprintf(tw, "\n# %s\n", esc(p.FDError))
	}
	if p.Truncated {
		fmt.Fprintln(tw, "# truncated")
	}
	_ = tw.Flush()
}

func command(p Row) string {
	if p.Args != "" {
		return p.Args
	}
	return "[" + p.Command + "]" // kernel threads have no command line
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fdsString(n int) string {
	if n < 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, suffix := float64(n), []string{"K", "M", "G", "T"}
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f%s", v, suffix[i])
}
