package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"

	memdb "github.com/hashicorp/go-memdb"
)

// The backup format, the same on every backend:
//
//	"MMBACKUP" | version uint32 BE (1)
//	then entries, each: length uint32 BE | JSON object:
//	  a record:         {"t": table, "k": key, "r": the record's JSON}
//	  a metadata value: {"k": key, "s": "UTF-8 text"} or {"k": key, "b": "base64"}
//	and last {"end": true, "n": number of entries before it}
//
// Records keep their stored JSON encoding, so a backup restores into either
// backend exactly; the CA state is a metadata value, sealed under
// --ca-key-file when meshd runs with one. A file that does not end with
// its end entry is truncated and refused.
const (
	backupMagic      = "MMBACKUP"
	backupVersion    = 1
	maxBackupEntry   = 32 << 20
	restoreMarkerKey = "restore_in_progress"
)

type backupEntry struct {
	Table  string          `json:"t,omitempty"`
	Key    string          `json:"k,omitempty"`
	Record json.RawMessage `json:"r,omitempty"`
	Text   *string         `json:"s,omitempty"`
	Bytes  []byte          `json:"b,omitempty"`
	End    bool            `json:"end,omitempty"`
	N      int             `json:"n,omitempty"`
}

func metaBackupEntry(key string, v []byte) backupEntry {
	if utf8.Valid(v) {
		s := string(v)
		return backupEntry{Key: key, Text: &s}
	}
	return backupEntry{Key: key, Bytes: v}
}

func (e *backupEntry) value() []byte {
	switch {
	case e.Table != "":
		return []byte(e.Record)
	case e.Text != nil:
		return []byte(*e.Text)
	}
	return e.Bytes
}

// Contents is a store's records and metadata: table → key → encoded value,
// with the metadata values under the table "".
type Contents map[string]map[string][]byte

func writeBackup(w io.Writer, mtx *memdb.Txn) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(w, 64<<10)}
	var hdr [12]byte
	copy(hdr[:], backupMagic)
	binary.BigEndian.PutUint32(hdr[8:], backupVersion)
	if _, err := cw.Write(hdr[:]); err != nil {
		return cw.n, err
	}
	n := 0
	put := func(e backupEntry) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		if _, err := cw.Write(l[:]); err != nil {
			return err
		}
		_, err = cw.Write(b)
		n++
		return err
	}
	names := make([]string, 0, len(tables))
	for name := range tables {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		it, err := mtx.Get(name, "id")
		if err != nil {
			return cw.n, err
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			b, err := json.Marshal(raw)
			if err != nil {
				return cw.n, err
			}
			if err := put(backupEntry{Table: name, Key: raw.(Record).Key(), Record: b}); err != nil {
				return cw.n, err
			}
		}
	}
	it, err := mtx.Get(tableMeta, "id")
	if err != nil {
		return cw.n, err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		m := raw.(*metaEntry)
		if err := put(metaBackupEntry(m.Key, m.Value)); err != nil {
			return cw.n, err
		}
	}
	if err := put(backupEntry{End: true, N: n}); err != nil {
		return cw.n, err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// IsBackup reports whether head (a file's first bytes) is this format.
func IsBackup(head []byte) bool { return bytes.HasPrefix(head, []byte(backupMagic)) }

// IsBoltFile reports whether head (a file's first bytes, at least 24) is a
// bbolt file: the raw data-file copies older meshd wrote as backups.
func IsBoltFile(head []byte) bool {
	return len(head) >= pageHeaderSize+4 && binary.LittleEndian.Uint32(head[pageHeaderSize:]) == boltMagic
}

// ReadBackup reads a backup in this format, checking every record decodes.
func ReadBackup(r io.Reader) (Contents, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("store: backup: header: %w", err)
	}
	if !IsBackup(hdr[:]) {
		return nil, errors.New("store: backup: not a minimesh backup (no MMBACKUP header)")
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != backupVersion {
		return nil, fmt.Errorf("store: backup: format version %d; this meshd reads %d", v, backupVersion)
	}
	out := Contents{"": {}}
	for name := range tables {
		out[name] = map[string][]byte{}
	}
	mem, err := newMem()
	if err != nil {
		return nil, err
	}
	mtx := mem.Txn(true)
	defer mtx.Abort()
	for n := 0; ; n++ {
		var l [4]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return nil, fmt.Errorf("store: backup: truncated after %d entries (no end entry): %w", n, err)
		}
		size := binary.BigEndian.Uint32(l[:])
		if size > maxBackupEntry {
			return nil, fmt.Errorf("store: backup: entry %d is %d bytes, over the %d byte limit", n, size, maxBackupEntry)
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("store: backup: truncated in entry %d: %w", n, err)
		}
		var e backupEntry
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("store: backup: entry %d: %w", n, err)
		}
		if e.End {
			if e.N != n {
				return nil, fmt.Errorf("store: backup: end entry counts %d entries, the file has %d", e.N, n)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return nil, errors.New("store: backup: data after the end entry")
			}
			return out, nil
		}
		if e.Key == "" {
			return nil, fmt.Errorf("store: backup: entry %d has no key", n)
		}
		if e.Table != "" {
			if err := loadRecord(mtx, e.Table, e.Key, e.value()); err != nil {
				return nil, fmt.Errorf("store: backup: entry %d: %w", n, err)
			}
		}
		m := out[e.Table]
		if m == nil {
			return nil, fmt.Errorf("store: backup: entry %d: unknown table %q", n, e.Table)
		}
		if _, dup := m[e.Key]; dup {
			return nil, fmt.Errorf("store: backup: %s/%s appears twice", e.Table, e.Key)
		}
		m[e.Key] = e.value()
	}
}

// Contents returns every record and metadata value of the cache.
func (s *Store) Contents() (Contents, error) {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	out := Contents{"": {}}
	for name := range tables {
		m := map[string][]byte{}
		out[name] = m
		it, err := mtx.Get(name, "id")
		if err != nil {
			return nil, err
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			b, err := json.Marshal(raw)
			if err != nil {
				return nil, err
			}
			m[raw.(Record).Key()] = b
		}
	}
	it, err := mtx.Get(tableMeta, "id")
	if err != nil {
		return nil, err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		m := raw.(*metaEntry)
		out[""][m.Key] = m.Value
	}
	return out, nil
}

// Empty reports whether the store holds no record and no metadata value.
func (s *Store) Empty() bool {
	c, err := s.Contents()
	if err != nil {
		return false
	}
	for _, m := range c {
		if len(m) > 0 {
			return false
		}
	}
	return true
}

// Import writes c into an empty store, in transactions of at most
// MaxWrites records; it refuses (ErrNotEmpty) a store holding anything. A
// marker set first and cleared last makes an interrupted import visible:
// Open refuses a store that still has it.
func (s *Store) Import(c Contents) error {
	if !s.Empty() {
		return fmt.Errorf("%w: %s holds records already; restore into an empty one (nothing was changed)", ErrNotEmpty, s.Path())
	}
	if err := s.Update(func(tx *Txn) error { return tx.SetMeta(restoreMarkerKey, []byte("1")) }); err != nil {
		return err
	}
	var batch []write
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.Update(func(tx *Txn) error {
			for _, w := range batch {
				if err := tx.raw(w); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	max := min(s.MaxWrites()-1, 100)
	for tbl, m := range c {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if tbl == "" && k == restoreMarkerKey {
				continue
			}
			batch = append(batch, write{tbl: tbl, key: k, val: m[k]})
			if len(batch) >= max {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return s.Update(func(tx *Txn) error { return tx.raw(write{key: restoreMarkerKey}) })
}
