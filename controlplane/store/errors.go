package store

import "errors"

var (
	// ErrNotFound is returned when a record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrLocked is returned when another process holds the data file.
	ErrLocked = errors.New("store: data file is locked by another process (is another meshd running on this data dir?)")
	// ErrSchema is returned when the data file has a schema version this build does not know.
	ErrSchema = errors.New("store: unsupported schema version")
	// ErrCorrupt is returned when the data file cannot be read.
	ErrCorrupt = errors.New("store: data file is corrupt")
)
