package filesync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxProcs bounds the /proc entries scanned for a signal reload.
const maxProcs = 1 << 16

// reload tells the app, by HTTP and/or signal, as configured.
func (s *Syncer) reload() error {
	var errs []error
	if s.cfg.Reload.URL != "" {
		err := s.reloadHTTP()
		s.count("http", err)
		errs = append(errs, err)
	}
	if s.cfg.Reload.Process != "" {
		err := Signal(s.cfg.ProcDir, s.cfg.Reload.Process, s.cfg.Reload.Signal)
		s.count("signal", err)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		s.cfg.Logger.Warn("filesync: reload failed", "err", err)
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return nil
}

func (s *Syncer) count(method string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.m.reloads.WithLabelValues(method, result).Inc()
}

func (s *Syncer) reloadHTTP() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Reload.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Reload.URL, http.NoBody)
	if err != nil {
		return fmt.Errorf("filesync: reload URL: %w", err)
	}
	req.Header.Set("User-Agent", "minimesh-filesync")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("filesync: reload POST: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("filesync: reload POST %s: %s: %q", s.cfg.Reload.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Process is a process found by name under /proc.
type Process struct {
	PID int
	UID int // real user ID, -1 if unknown
}

// FindProcesses returns the processes under procDir (normally /proc) whose
// comm, or the base name of whose argv[0], equals name; this process is
// left out. comm holds at most 15 bytes, so longer names match argv[0].
func FindProcesses(procDir, name string) ([]Process, error) {
	d, err := os.Open(procDir)
	if err != nil {
		return nil, fmt.Errorf("filesync: %w", err)
	}
	defer d.Close()
	ents, err := d.ReadDir(maxProcs)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("filesync: %w", err)
	}
	self := os.Getpid()
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		dir := filepath.Join(procDir, e.Name())
		if !matches(dir, name) {
			continue
		}
		out = append(out, Process{PID: pid, UID: procUID(dir)})
	}
	return out, nil
}

func matches(dir, name string) bool {
	if comm, err := readSmall(filepath.Join(dir, "comm"), 64); err == nil && strings.TrimSuffix(string(comm), "\n") == name {
		return true
	}
	cmd, err := readSmall(filepath.Join(dir, "cmdline"), 4096)
	if err != nil || len(cmd) == 0 {
		return false // a kernel thread, or gone
	}
	argv0, _, _ := bytes.Cut(cmd, []byte{0})
	return filepath.Base(string(argv0)) == name
}

func procUID(dir string) int {
	f, err := os.Open(filepath.Join(dir, "status"))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			if fields := strings.Fields(rest); len(fields) > 0 {
				if uid, err := strconv.Atoi(fields[0]); err == nil {
					return uid
				}
			}
		}
	}
	return -1
}

func readSmall(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// Signal sends sig to every process FindProcesses finds for name. It fails
// with ErrProcessNotFound when there is none. When the kernel refuses
// (EPERM) to signal a process of another user, the error says that
// CAP_KILL is needed.
func Signal(procDir, name string, sig syscall.Signal) error {
	procs, err := FindProcesses(procDir, name)
	if err != nil {
		return err
	}
	if len(procs) == 0 {
		return fmt.Errorf("%w: no process named %q in %s (is the PID namespace shared with the app?)", ErrProcessNotFound, name, procDir)
	}
	var errs []error
	for _, p := range procs {
		// A process that exited since the scan needs no reload.
		if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, signalError(name, p, sig, err, os.Geteuid()))
		}
	}
	return errors.Join(errs...)
}

func signalError(name string, p Process, sig syscall.Signal, err error, euid int) error {
	if errors.Is(err, syscall.EPERM) && p.UID != euid {
		return fmt.Errorf("filesync: signal %v to %q (pid %d, uid %d) as uid %d: %w: signalling a process of another user needs CAP_KILL (add it to the sidecar's capabilities, or run the sidecar as uid %d)",
			sig, name, p.PID, p.UID, euid, err, p.UID)
	}
	return fmt.Errorf("filesync: signal %v to %q (pid %d): %w", sig, name, p.PID, err)
}

// ParseSignal parses a signal name for Reload.Signal: "HUP", "SIGHUP",
// "usr1", or a number ("1"). Only signals an app may sensibly reload on are
// accepted, never SIGKILL or SIGSTOP.
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	for sig, n := range reloadSignals {
		if n == name || strconv.Itoa(int(sig)) == name {
			return sig, nil
		}
	}
	return 0, fmt.Errorf("%w: signal %q: want one of HUP, USR1, USR2, INT, TERM, QUIT, WINCH", ErrInvalidConfig, s)
}

var reloadSignals = map[syscall.Signal]string{
	syscall.SIGHUP: "HUP", syscall.SIGUSR1: "USR1", syscall.SIGUSR2: "USR2", syscall.SIGINT: "INT",
	syscall.SIGTERM: "TERM", syscall.SIGQUIT: "QUIT", syscall.SIGWINCH: "WINCH",
}
