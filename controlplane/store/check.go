package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk meta page, as of bbolt 1.x: a 16-byte page header, then
// magic, version, page size, flags (uint32 each), the root bucket (root
// page id, sequence), the freelist page id, the high-water page id, the
// transaction id and an FNV-64a checksum of everything before it.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSumLen     = 56 // bytes of meta covered by the checksum
	metaLen        = metaSumLen + 8
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// CheckFile checks that a data file is whole before bbolt maps it: bbolt
// trusts the file's meta pages, and a truncated file makes it fault on
// memory past the end of the file instead of returning an error. A file
// that does not exist is fine (it will be created).
func CheckFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%w: %s is empty", ErrCorrupt, path)
	}
	m0, err0 := readMeta(f, 0)
	var best *boltMeta
	if err0 == nil {
		best = m0
	}
	// The second meta page sits one page in; its size comes from the first
	// when that one is readable, else the common 4 KiB.
	pageSize := int64(4096)
	if m0 != nil {
		pageSize = int64(m0.pageSize)
	}
	m1, err1 := readMeta(f, pageSize)
	if err1 == nil && (best == nil || m1.txid > best.txid) {
		best = m1
	}
	if best == nil {
		return fmt.Errorf("%w: %s: no valid meta page (%v; %v)", ErrCorrupt, path, err0, err1)
	}
	need := int64(best.pgid) * int64(best.pageSize)
	if fi.Size() < need {
		return fmt.Errorf("%w: %s is truncated: %d bytes, its pages need %d", ErrCorrupt, path, fi.Size(), need)
	}
	if best.root >= best.pgid || (best.freelist >= best.pgid && best.freelist != ^uint64(0)) {
		return fmt.Errorf("%w: %s: meta page points past the end of the data", ErrCorrupt, path)
	}
	return nil
}

func readMeta(r io.ReaderAt, off int64) (*boltMeta, error) {
	buf := make([]byte, pageHeaderSize+metaLen)
	if _, err := r.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("meta at %d: %w", off, err)
	}
	m := buf[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return nil, fmt.Errorf("meta at %d: not a bbolt file", off)
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return nil, fmt.Errorf("meta at %d: version %d", off, v)
	}
	h := fnv.New64a()
	h.Write(m[:metaSumLen])
	if h.Sum64() != le.Uint64(m[metaSumLen:]) {
		return nil, fmt.Errorf("meta at %d: checksum mismatch", off)
	}
	out := &boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}
	if out.pageSize < 512 || out.pageSize > 1<<20 || out.pageSize&(out.pageSize-1) != 0 {
		return nil, fmt.Errorf("meta at %d: page size %d", off, out.pageSize)
	}
	return out, nil
}
