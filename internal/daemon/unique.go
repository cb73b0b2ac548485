package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
)

// CheckUnique wraps h so that every record whose line would carry a key
// twice (an attribute of logger.With and the same key again in the call,
// or twice in one call) is reported, with the record's message and the
// key, before h handles it. Tests wrap the daemons' handlers with it: JSON
// with a repeated key is ambiguous (most readers keep the last value).
func CheckUnique(h slog.Handler, report func(msg, key string)) slog.Handler {
	return &uniqueHandler{h: h, report: report}
}

type uniqueHandler struct {
	h      slog.Handler
	report func(msg, key string)
	prefix string          // the open groups, "a.b."
	keys   map[string]bool // keys of With attributes, with their groups
	dups   []string        // keys With repeated
}

func (u *uniqueHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return u.h.Enabled(ctx, l)
}

func (u *uniqueHandler) Handle(ctx context.Context, r slog.Record) error {
	seen := make(map[string]bool, len(u.keys)+r.NumAttrs())
	for k := range u.keys {
		seen[k] = true
	}
	for _, k := range u.dups {
		u.report(r.Message, k)
	}
	var dups []string
	r.Attrs(func(a slog.Attr) bool {
		dups = addKeys(seen, u.prefix, a, dups)
		return true
	})
	for _, k := range dups {
		u.report(r.Message, k)
	}
	return u.h.Handle(ctx, r)
}

func (u *uniqueHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &uniqueHandler{h: u.h.WithAttrs(attrs), report: u.report, prefix: u.prefix, keys: make(map[string]bool, len(u.keys)+len(attrs)), dups: u.dups}
	for k := range u.keys {
		n.keys[k] = true
	}
	for _, a := range attrs {
		n.dups = addKeys(n.keys, u.prefix, a, n.dups)
	}
	return n
}

func (u *uniqueHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return u
	}
	n := *u
	n.h = u.h.WithGroup(name)
	n.prefix = u.prefix + name + "."
	// The group's attributes are new keys under it; the outer ones stay.
	n.keys = make(map[string]bool, len(u.keys)+1)
	for k := range u.keys {
		n.keys[k] = true
	}
	n.dups = append([]string(nil), u.dups...)
	n.dups = addKey(n.keys, strings.TrimSuffix(n.prefix, "."), n.dups)
	return &n
}

// addKeys records a's key(s) under prefix in seen, appending to dups the
// ones already there. Empty attributes are dropped by handlers; a group
// with an empty key is inlined.
func addKeys(seen map[string]bool, prefix string, a slog.Attr, dups []string) []string {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return dups
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		if len(g) == 0 {
			return dups
		}
		p := prefix
		if a.Key != "" {
			dups = addKey(seen, prefix+a.Key, dups)
			p = prefix + a.Key + "."
		}
		for _, ga := range g {
			dups = addKeys(seen, p, ga, dups)
		}
		return dups
	}
	return addKey(seen, prefix+a.Key, dups)
}

func addKey(seen map[string]bool, k string, dups []string) []string {
	if seen[k] {
		return append(dups, k)
	}
	seen[k] = true
	return dups
}

// DuplicateKeys returns the keys that one JSON log line (an object, maybe
// nested) holds twice at the same level, as "outer.key": what a test reads
// from a daemon's stderr, where CheckUnique cannot be put.
func DuplicateKeys(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var dups []string
	var object func(prefix string) error
	var value func(prefix string) error
	value = func(prefix string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			return object(prefix)
		case json.Delim('['):
			for dec.More() {
				if err := value(prefix); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ]
			return err
		}
		return nil
	}
	object = func(prefix string) error {
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			k, _ := tok.(string)
			if seen[k] {
				dups = append(dups, prefix+k)
			}
			seen[k] = true
			if err := value(prefix + k + "."); err != nil {
				return err
			}
		}
		_, err := dec.Token() // }
		return err
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %.80q", line)
	}
	if err := object(""); err != nil {
		return nil, err
	}
	return dups, nil
}
