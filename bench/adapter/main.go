// Command adapter runs the log adapter's Go benchmarks
// (dataplane/logadapter BenchmarkAdapter*: a file of N records read,
// split, assembled, encoded and offered to a sink, in one goroutine) and
// prints a Markdown table: records and lines per second, and the
// process's CPU time per 100k records (user+system, GC included).
//
//	go run ./bench/adapter                    # make bench-adapter
//	go run ./bench/adapter -records 1000000
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-adapter:", err)
		os.Exit(1)
	}
}

var (
	lineRE   = regexp.MustCompile(`^BenchmarkAdapter(\w+)-\d+\s+\d+\s+(.*)$`)
	metricRE = regexp.MustCompile(`([\d.]+) ([\w/-]+)`)
)

func run() error {
	records := flag.Int("records", 300000, "records per benchmark (-benchtime Nx)")
	flag.Parse()
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkAdapter", "-benchmem", "-count", "1",
		"-benchtime", fmt.Sprintf("%dx", *records), "./dataplane/logadapter"}
	cmd := exec.Command("go", args...)
	var buf bytes.Buffer
	cmd.Stdout = io.MultiWriter(os.Stdout, &buf)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	fmt.Printf("\n%d records per row, %s, %d CPUs, %s\n\n", *records, runtime.GOARCH, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Println("| format | records/s | lines/s | MB/s | CPU per 100k records | allocs/record |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, l := range strings.Split(buf.String(), "\n") {
		m := lineRE.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		v := map[string]string{}
		for _, mm := range metricRE.FindAllStringSubmatch(m[2], -1) {
			v[mm[2]] = mm[1]
		}
		fmt.Printf("| %s | %s | %s | %s | %s ms | %s |\n", name(m[1]), round(v["records/s"]), round(v["lines/s"]), v["MB/s"], v["cpu-ms/100k"], v["allocs/op"])
	}
	return nil
}

func name(s string) string {
	switch s {
	case "MultiLine":
		return "text, multi-line (5-line stack traces)"
	case "JSON":
		return "json"
	}
	return strings.ToLower(s)
}

func round(s string) string {
	var f float64
	if _, err := fmt.Sscan(s, &f); err != nil {
		return s
	}
	return fmt.Sprintf("%.0f", f)
}
