package logadapter

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// StateFile is the offsets' file in the proxy's state dir.
const StateFile = "logadapter-offsets.json"

// maxStateFiles bounds the offsets kept (the files open at once, and
// those whose reading is not finished).
const maxStateFiles = 4096

// fileState is one file's persisted position: where to resume reading and
// how (committed offset and the skip flags valid there).
type fileState struct {
	Dev      uint64 `json:"dev"`
	Ino      uint64 `json:"ino"`
	Gen      uint64 `json:"gen,omitempty"`
	Offset   int64  `json:"offset"`
	SkipLine bool   `json:"skip_line,omitempty"`
	SkipCont bool   `json:"skip_cont,omitempty"`
	Path     string `json:"path"`
	// Head is the CRC-32 (IEEE) of the file's first HeadLen bytes.
	Head    uint32 `json:"head,omitempty"`
	HeadLen int    `json:"head_len,omitempty"`
}

type stateDoc struct {
	Version int         `json:"version"`
	Files   []fileState `json:"files"`
}

// loadState reads the offsets; a missing file is an empty state, a
// corrupt one is an error (the caller starts afresh and says so).
func loadState(dir string) (map[fileKey]fileState, error) {
	out := map[fileKey]fileState{}
	if dir == "" {
		return out, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return out, fmt.Errorf("%s: %w", StateFile, err)
	}
	for i, f := range doc.Files {
		if i >= maxStateFiles || f.Offset < 0 || f.HeadLen < 0 || f.HeadLen > headBytes {
			continue
		}
		out[fileKey{f.Dev, f.Ino}] = f
	}
	return out, nil
}

// saveState writes the offsets atomically: a temporary file, fsynced,
// renamed over the old one, the directory fsynced.
func saveState(dir string, files []fileState) error {
	b, err := json.Marshal(stateDoc{Version: 1, Files: files})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, StateFile+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, StateFile)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
