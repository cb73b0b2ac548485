// Package daemon is what meshd and mesh-proxy share around their work: the
// --log-level and --log-format flags, the logger they build (durations as
// strings such as "1.5s", in JSON too), and the run loop that logs when
// shutdown starts and when it ends.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// Log formats.
const (
	FormatJSON = "json"
	FormatText = "text"
)

// LogFlags are --log-level and --log-format.
type LogFlags struct {
	Level  slog.Level
	Format format
}

type format string

func (f *format) String() string { return string(*f) }
func (f *format) Type() string   { return "json|text" }
func (f *format) Set(s string) error {
	switch s {
	case FormatJSON, FormatText:
		*f = format(s)
		return nil
	}
	return fmt.Errorf("must be %s or %s, got %q", FormatJSON, FormatText, s)
}

type level slog.Level

func (l *level) String() string     { return strings.ToLower((*slog.Level)(l).String()) }
func (l *level) Type() string       { return "level" }
func (l *level) Set(s string) error { return (*slog.Level)(l).UnmarshalText([]byte(s)) }

// Register adds --log-level (default info) and --log-format (default json)
// to fs.
func (l *LogFlags) Register(fs *pflag.FlagSet) {
	l.Level = slog.LevelInfo
	l.Format = FormatJSON
	fs.Var((*level)(&l.Level), "log-level", "log level: debug, info, warn or error")
	fs.Var(&l.Format, "log-format", "log format: json (one object a line) or text (key=value)")
}

// Logger writes to w in the chosen format and level.
func (l *LogFlags) Logger(w io.Writer) *slog.Logger {
	if l.Format == "" {
		l.Format = FormatJSON
	}
	return NewLogger(w, string(l.Format), l.Level)
}

// NewLogger is a logger writing to w in format (json, else text) at level,
// with durations written as strings ("1.5s", not 1500000000).
func NewLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: ReplaceAttr}
	if format == FormatText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ReplaceAttr writes a time.Duration as its String ("1.5s", "250ms"):
// slog's JSON handler would write nanoseconds.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// ErrLogged is returned (wrapped) for a failure already logged: main exits
// 1 without printing it again.
var ErrLogged = errors.New("logged")

// Failed logs err as a start-up or run failure (one line in the log's
// format, like every other) and returns it wrapped in ErrLogged.
func Failed(log *slog.Logger, name string, err error) error {
	log.Error(name+" failed", "error", err.Error())
	return fmt.Errorf("%w: %w", ErrLogged, err)
}

// Run runs run until it returns or SIGTERM/SIGINT arrives, logging one line
// when shutdown starts (the signal) and one when it ends (how long it took,
// and the error if any). An error is logged and returned wrapped in
// ErrLogged.
func Run(ctx context.Context, log *slog.Logger, name string, run func(context.Context) error) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return RunUntil(ctx, log, name, run)
}

// RunUntil is Run with the end decided by ctx alone (tests).
func RunUntil(ctx context.Context, log *slog.Logger, name string, run func(context.Context) error) error {
	var stopAt time.Time
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			stopAt = time.Now()
			log.Info(name+" shutting down", "reason", reason(ctx))
			cancel()
		case <-runCtx.Done():
		}
	}()
	err := run(runCtx)
	cancel()
	<-watched
	attrs := []any{}
	if !stopAt.IsZero() {
		attrs = append(attrs, "took", time.Since(stopAt))
	}
	if err != nil {
		return Failed(log.With(attrs...), name, err)
	}
	log.Info(name+" stopped", attrs...)
	return nil
}

// reason names why ctx ended: signal.NotifyContext's cause is
// "interrupt signal received" / "terminated signal received".
func reason(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil {
		return c.Error()
	}
	return "stopped"
}
