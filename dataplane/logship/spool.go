package logship

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"minimesh/internal/fsguard"
)

// The spool's files, all in one 0700 directory of the proxy's own:
//
//	open-<first>.jsonl               the open batch: one record a line
//	<first>-<last>.jsonl.gz          a closed batch, waiting for its upload;
//	                                 the gzip header's Name is its object key
//	next                             the offset of the next record
//
// Offsets are 20 decimal digits, so names sort in offset order.
const (
	openPrefix   = "open-"
	openSuffix   = ".jsonl"
	sealedSuffix = ".jsonl.gz"
	nextFile     = "next"
	offsetDigits = 20
)

// batch is a closed batch in the spool.
type batch struct {
	first, last uint64
	size        int64 // bytes on disk (compressed)
}

func (b batch) name() string { return fmtOffset(b.first) + "-" + fmtOffset(b.last) + sealedSuffix }

// records is how many records the batch holds.
func (b batch) records() uint64 { return b.last - b.first + 1 }

func fmtOffset(o uint64) string {
	s := strconv.FormatUint(o, 10)
	return strings.Repeat("0", offsetDigits-len(s)) + s
}

// spool is the on-disk queue of batches. The writer appends to the open
// batch and seals it; the uploader takes the oldest sealed batch and
// removes it once uploaded; drop removes the oldest when the spool is over
// its bound. Safe for concurrent use.
type spool struct {
	dir string // absolute, checked by fsguard

	mu       sync.Mutex
	next     uint64  // offset of the next record
	sealed   []batch // oldest first
	inflight uint64  // first offset of the batch being uploaded; 0: none (offsets start at 1)
	openF    *os.File
	openW    *bufio.Writer
	openFrom uint64    // first offset of the open batch (when openF != nil)
	openN    uint64    // records in it
	openSize int64     // bytes in it
	openAt   time.Time // when its first record came (or it was recovered)
	closed   bool
}

var errSpoolClosed = errors.New("logship: spool closed")

// openSpool opens (creating with 0700) dir, which must be a directory of
// this process's user that others cannot write, reached through no
// symbolic link, and recovers what it holds: closed batches, the open
// batch (a torn last line, from a crash, is cut off), and the next offset.
func openSpool(dir string, now time.Time, first uint64, key func(first, last uint64) string) (*spool, error) {
	d, err := fsguard.OpenDir(dir, true)
	if err != nil {
		return nil, fmt.Errorf("logship: --spool-dir: %w", err)
	}
	abs := d.Path()
	_ = d.Close()
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("logship: --spool-dir: %w", err)
	}
	s := &spool{dir: abs, next: 1}
	fresh := false
	if b, err := os.ReadFile(filepath.Join(abs, nextFile)); err == nil {
		n, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil || n == 0 {
			return nil, fmt.Errorf("logship: spool %s: file %s holds %q, not an offset", abs, nextFile, bytes.TrimSpace(b))
		}
		s.next = n
	} else if errors.Is(err, fs.ErrNotExist) {
		fresh = true
	} else {
		return nil, fmt.Errorf("logship: spool: %w", err)
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return nil, fmt.Errorf("logship: spool: %w", err)
	}
	var opens []uint64
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-"):
			_ = os.Remove(filepath.Join(abs, name)) // a seal cut short
		case strings.HasSuffix(name, sealedSuffix) && e.Type().IsRegular():
			b, ok := parseSealed(name)
			if !ok {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				return nil, fmt.Errorf("logship: spool: %w", err)
			}
			b.size = fi.Size()
			s.sealed = append(s.sealed, b)
			s.next = max(s.next, b.last+1)
		case strings.HasPrefix(name, openPrefix) && strings.HasSuffix(name, openSuffix) && e.Type().IsRegular():
			o, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, openPrefix), openSuffix), 10, 64)
			if err == nil && o > 0 {
				opens = append(opens, o)
			}
		}
	}
	slices.SortFunc(s.sealed, func(a, b batch) int { return cmpU(a.first, b.first) })
	slices.Sort(opens)
	for _, o := range opens {
		name := filepath.Join(abs, openPrefix+fmtOffset(o)+openSuffix)
		if slices.ContainsFunc(s.sealed, func(b batch) bool { return b.first == o }) {
			_ = os.Remove(name) // sealed already: the seal stopped before removing it
			continue
		}
		if s.openF != nil { // never two open batches; should one be left, seal the older
			if _, _, err := s.seal(key); err != nil {
				return nil, err
			}
		}
		if err := s.recoverOpen(name, o, now); err != nil {
			return nil, err
		}
	}
	if fresh && len(s.sealed) == 0 && s.openF == nil {
		// A new spool (a new pod, or this one's spool wiped) starts its
		// offsets at first, by default the time in microseconds: past
		// any offset an earlier spool of this pod and instance reached,
		// so its objects are never overwritten.
		s.next = max(first, 1)
		if err := fsguardWrite(abs, nextFile, []byte(strconv.FormatUint(s.next, 10)+"\n")); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func parseSealed(name string) (batch, bool) {
	a, b, ok := strings.Cut(strings.TrimSuffix(name, sealedSuffix), "-")
	if !ok {
		return batch{}, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || first == 0 || last < first {
		return batch{}, false
	}
	return batch{first: first, last: last}, true
}

// recoverOpen reopens the open batch first..: its complete lines are its
// records; a torn last line (a crash mid-write) is cut off.
func (s *spool) recoverOpen(name string, first uint64, now time.Time) error {
	f, err := os.OpenFile(name, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("logship: spool: %w", err)
	}
	good, n, err := completeLines(f)
	if err == nil {
		err = f.Truncate(good)
	}
	if err == nil && n > 0 {
		_, err = f.Seek(good, io.SeekStart)
	}
	if err != nil || n == 0 {
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("logship: spool: %w", err)
		}
		return os.Remove(name)
	}
	s.openF, s.openW = f, bufio.NewWriterSize(f, 64<<10)
	s.openFrom, s.openN, s.openSize, s.openAt = first, n, good, now
	s.next = max(s.next, first+n)
	return nil
}

// completeLines returns the length of f's part that ends with its last
// '\n', and how many lines that part holds.
func completeLines(f *os.File) (int64, uint64, error) {
	end, err := lastNewline(f)
	if err != nil {
		return 0, 0, err
	}
	var n uint64
	buf := make([]byte, 64<<10)
	for off := int64(0); off < end; {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if k == 0 && err != nil {
			return 0, 0, err
		}
		n += uint64(bytes.Count(buf[:k], []byte{'\n'}))
		off += int64(k)
	}
	return end, n, nil
}

// lastNewline returns the offset just past f's last '\n' (0: none).
func lastNewline(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for end := fi.Size(); end > 0; {
		start := max(0, end-int64(len(buf)))
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// append adds one record (no newline in it) to the open batch, opening
// one when there is none.
func (s *spool) append(rec []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSpoolClosed
	}
	if s.openF == nil {
		name := filepath.Join(s.dir, openPrefix+fmtOffset(s.next)+openSuffix)
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("logship: spool: %w", err)
		}
		s.openF, s.openW = f, bufio.NewWriterSize(f, 64<<10)
		s.openFrom, s.openN, s.openSize, s.openAt = s.next, 0, 0, now
	}
	if _, err := s.openW.Write(rec); err != nil {
		return fmt.Errorf("logship: spool: %w", err)
	}
	if err := s.openW.WriteByte('\n'); err != nil {
		return fmt.Errorf("logship: spool: %w", err)
	}
	s.openN++
	s.next++
	s.openSize += int64(len(rec)) + 1
	return nil
}

// flush writes the open batch's buffer to its file (the page cache: a
// killed process loses nothing written).
func (s *spool) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openW == nil {
		return nil
	}
	return s.openW.Flush()
}

// openState is the open batch's size and age origin (zero time: none).
func (s *spool) openState() (size int64, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openF == nil {
		return 0, time.Time{}
	}
	return s.openSize, s.openAt
}

// seal closes the open batch: gzip into a temp file, fsync, rename to
// <first>-<last>.jsonl.gz with the object key in the gzip header, record
// the next offset, then remove the open file. It reports the sealed batch
// (ok false: there was no open batch).
func (s *spool) seal(key func(first, last uint64) string) (batch, bool, error) {
	// Only the writer appends, closes and seals: the open batch cannot
	// change while it is compressed without the lock (the uploader and
	// the metrics wait for nothing).
	s.mu.Lock()
	if s.openF == nil {
		s.mu.Unlock()
		return batch{}, false, nil
	}
	if err := s.openW.Flush(); err != nil {
		s.mu.Unlock()
		return batch{}, false, fmt.Errorf("logship: spool: %w", err)
	}
	b := batch{first: s.openFrom, last: s.openFrom + s.openN - 1}
	openName := s.openF.Name()
	s.mu.Unlock()

	size, err := s.compress(openName, b, key(b.first, b.last))
	if err != nil {
		return batch{}, false, err
	}
	b.size = size
	if err := fsguardWrite(s.dir, nextFile, []byte(strconv.FormatUint(b.last+1, 10)+"\n")); err != nil {
		_ = os.Remove(filepath.Join(s.dir, b.name()))
		return batch{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.openF.Close()
	s.openF, s.openW, s.openN, s.openSize = nil, nil, 0, 0
	s.sealed = append(s.sealed, b)
	if err := os.Remove(openName); err != nil {
		return b, true, fmt.Errorf("logship: spool: %w", err)
	}
	return b, true, nil
}

func (s *spool) compress(openName string, b batch, key string) (int64, error) {
	src, err := os.Open(openName)
	if err != nil {
		return 0, fmt.Errorf("logship: spool: %w", err)
	}
	defer src.Close()
	tmp := filepath.Join(s.dir, "."+b.name()+".tmp-seal")
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("logship: spool: %w", err)
	}
	fail := func(err error) (int64, error) {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("logship: seal %s: %w", b.name(), err)
	}
	bw := bufio.NewWriterSize(dst, 64<<10)
	zw, _ := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	zw.Name = key
	if _, err := io.Copy(zw, src); err != nil {
		return fail(err)
	}
	if err := zw.Close(); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	fi, err := dst.Stat()
	if err != nil {
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, b.name())); err != nil {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("logship: seal %s: %w", b.name(), err)
	}
	syncDir(s.dir)
	return fi.Size(), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// fsguardWrite replaces dir/name atomically (temp file, fsync, rename).
func fsguardWrite(dir, name string, data []byte) error {
	d, err := fsguard.OpenDir(dir, false)
	if err != nil {
		return fmt.Errorf("logship: spool: %w", err)
	}
	defer d.Close()
	if err := d.WriteFile(name, data, 0o600); err != nil {
		return fmt.Errorf("logship: spool: %w", err)
	}
	return nil
}

// oldest returns the oldest sealed batch and marks it in flight.
func (s *spool) oldest() (batch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 {
		return batch{}, false
	}
	s.inflight = s.sealed[0].first
	return s.sealed[0], true
}

// done ends b's upload: removed from the spool when uploaded.
func (s *spool) done(b batch, uploaded bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight = 0
	if !uploaded {
		return nil
	}
	i := slices.IndexFunc(s.sealed, func(x batch) bool { return x.first == b.first })
	if i < 0 {
		return nil // dropped meanwhile
	}
	s.sealed = slices.Delete(s.sealed, i, i+1)
	if err := os.Remove(filepath.Join(s.dir, b.name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("logship: spool: %w", err)
	}
	return nil
}

// open returns the sealed batch's file for reading.
func (s *spool) openBatch(b batch) (*os.File, error) {
	return os.OpenFile(filepath.Join(s.dir, b.name()), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// bytes is what the spool holds on disk.
func (s *spool) bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytesLocked()
}

func (s *spool) bytesLocked() int64 {
	n := s.openSize
	for _, b := range s.sealed {
		n += b.size
	}
	return n
}

// trim drops the oldest sealed batches while the spool holds more than
// limit bytes, sparing the one in flight while others can go; it returns
// what it dropped.
func (s *spool) trim(limit int64) []batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	var dropped []batch
	for s.bytesLocked() > limit && len(s.sealed) > 0 {
		i := 0
		if s.sealed[0].first == s.inflight && len(s.sealed) > 1 {
			i = 1
		}
		b := s.sealed[i]
		s.sealed = slices.Delete(s.sealed, i, i+1)
		_ = os.Remove(filepath.Join(s.dir, b.name()))
		dropped = append(dropped, b)
	}
	return dropped
}

// close flushes and closes the open batch's file; it stays in the spool.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.openF == nil {
		return nil
	}
	err := s.openW.Flush()
	if e := s.openF.Close(); err == nil {
		err = e
	}
	s.openF, s.openW = nil, nil
	s.openSize, s.openN = 0, 0
	return err
}

// batchInfo reads the object key that seal put in a batch file's gzip
// header, and the file's MD5 and SHA-256; f is left at its start.
func batchInfo(f *os.File) (key string, sums checksums, size int64, err error) {
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", sums, 0, err
	}
	key = zr.Name
	_ = zr.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", sums, 0, err
	}
	m, h := md5.New(), sha256.New()
	n, err := io.Copy(io.MultiWriter(m, h), f)
	if err != nil {
		return "", sums, 0, err
	}
	copy(sums.md5[:], m.Sum(nil))
	copy(sums.sha256[:], h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", sums, 0, err
	}
	return key, sums, n, nil
}

// checksums are a batch file's digests.
type checksums struct {
	md5    [md5.Size]byte
	sha256 [sha256.Size]byte
}
