package logadapter

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// Spec is one LogAdapter compiled: Compile checks and builds it, the
// Adapter runs it (Adapter.Set).
type Spec struct {
	name       string
	globs      []string
	start      *regexp.Regexp // nil: every line is a record
	maxBytes   int
	flushAfter time.Duration
	format     meshv1.LogFormat
	pattern    *regexp.Regexp
	groups     []string // pattern's subexpression names
	fields     [4]bool  // service, identity, pod, file
}

// Compile compiles a validated LogAdapter (api.LogAdapter.Validate is run
// again here: a snapshot's resource is never trusted).
func Compile(o *api.LogAdapter) (*Spec, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	s := o.Spec
	sp := &Spec{name: o.Metadata.Name, globs: slices.Clone(s.GetFiles()), format: s.GetFormat(),
		maxBytes: int(s.GetMaxRecordBytes()), flushAfter: s.GetFlushAfter().AsDuration()}
	if sp.maxBytes == 0 {
		sp.maxBytes = api.DefaultMaxRecordBytes
	}
	if s.GetFlushAfter() == nil || sp.flushAfter <= 0 {
		sp.flushAfter = api.DefaultFlushAfter
	}
	if sp.format == meshv1.LogFormat_LOG_FORMAT_UNSPECIFIED {
		sp.format = meshv1.LogFormat_LOG_FORMAT_TEXT
	}
	var err error
	if r := s.GetRecordStart(); r != "" {
		// Matched against the start of each line.
		if sp.start, err = regexp.Compile(`^(?:` + r + `)`); err != nil {
			return nil, fmt.Errorf("logadapter %s: spec.recordStart: %w", sp.name, err)
		}
	}
	if p := s.GetPattern(); p != "" {
		if sp.pattern, err = regexp.Compile(p); err != nil {
			return nil, fmt.Errorf("logadapter %s: spec.pattern: %w", sp.name, err)
		}
		sp.groups = sp.pattern.SubexpNames()
	}
	fields := s.GetFields()
	if len(fields) == 0 {
		fields = api.LogAdapterFields()
	}
	for _, f := range fields {
		if i := slices.Index(api.LogAdapterFields(), f); i >= 0 && i < len(sp.fields) {
			sp.fields[i] = true
		}
	}
	return sp, nil
}

// Name is the LogAdapter's name.
func (s *Spec) Name() string { return s.name }
