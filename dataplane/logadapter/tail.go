package logadapter

import (
	"bytes"
	"hash/crc32"
	"os"
	"time"
)

type fileKey struct{ Dev, Ino uint64 }

// tailed is one followed file: its descriptor, read offset and the record
// being assembled. Only the Adapter's goroutine touches it.
type tailed struct {
	key  fileKey
	f    *os.File
	path string // relative to the shared dir, as last matched
	spec *Spec
	gen  uint64 // truncations seen
	off  int64  // next byte to read

	line      []byte // a line without its '\n' yet (at most spec.maxBytes)
	lineStart int64
	skipLine  bool // a cut line: discard up to its '\n'

	rec      []byte // the record being assembled (complete lines)
	recStart int64
	haveRec  bool
	skipCont bool // a cut record was emitted: discard lines up to the next record start

	lastData time.Time // when bytes last arrived (or the file was opened)
	matched  bool      // a glob matched it in the last poll
	failed   bool      // a read failed: closed at the next poll
	atEOF    bool      // the last read reached the size fstat gave

	// head is the CRC-32 of the file's first headLen bytes (at most
	// headBytes), persisted with the offset: a restart that finds another
	// file on the same inode (the old one deleted) starts it from 0.
	head    uint32
	headLen int
}

// committed is the offset of the first byte not yet emitted: a restart
// resumes there.
func (t *tailed) committed() int64 {
	switch {
	case t.haveRec:
		return t.recStart
	case len(t.line) > 0:
		return t.lineStart
	}
	return t.off
}

// emitFunc emits one record: the text, its first byte's offset, whether
// it was cut.
type emitFunc func(t *tailed, text []byte, start int64, truncated bool)

// feed processes data read at t.off.
func (t *tailed) feed(data []byte, emit emitFunc) {
	maxBytes := t.spec.maxBytes
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		seg := data
		if i >= 0 {
			seg = data[:i]
		}
		segStart := t.off
		if i >= 0 {
			data = data[i+1:]
			t.off += int64(i + 1)
		} else {
			data = nil
			t.off += int64(len(seg))
		}
		if t.skipLine {
			if i >= 0 {
				t.skipLine = false
			}
			continue
		}
		if len(t.line) == 0 {
			t.lineStart = segStart
		}
		room := max(0, maxBytes-len(t.line))
		if len(seg) > room {
			// The line is longer than a record may be: it ends here,
			// cut, and its rest is discarded.
			t.line = append(t.line, seg[:room]...)
			t.handleLine(t.line, t.lineStart, true, emit)
			t.line = t.line[:0]
			t.skipLine = i < 0
			continue
		}
		t.line = append(t.line, seg...)
		if i < 0 {
			return
		}
		t.handleLine(t.line, t.lineStart, false, emit)
		t.line = t.line[:0]
	}
}

// handleLine takes one complete (or cut) line.
func (t *tailed) handleLine(line []byte, start int64, cut bool, emit emitFunc) {
	sp := t.spec
	if sp.start == nil {
		emit(t, line, start, cut)
		return
	}
	if sp.start.Match(line) || (!t.haveRec && !t.skipCont) {
		t.flushRec(emit)
		t.skipCont = false
		t.rec = append(t.rec[:0], line...)
		t.recStart, t.haveRec = start, true
		if cut {
			t.cutRec(emit)
		}
		return
	}
	if t.skipCont || !t.haveRec {
		return
	}
	room := sp.maxBytes - len(t.rec) - 1
	if len(line) > room || cut {
		if room > 0 {
			t.rec = append(t.rec, '\n')
			t.rec = append(t.rec, line[:min(room, len(line))]...)
		}
		t.cutRec(emit)
		return
	}
	t.rec = append(t.rec, '\n')
	t.rec = append(t.rec, line...)
}

// cutRec emits the pending record marked truncated; its continuation
// lines are discarded.
func (t *tailed) cutRec(emit emitFunc) {
	emit(t, t.rec, t.recStart, true)
	t.rec, t.haveRec, t.skipCont = t.rec[:0], false, true
}

func (t *tailed) flushRec(emit emitFunc) {
	if t.haveRec {
		emit(t, t.rec, t.recStart, false)
		t.rec, t.haveRec = t.rec[:0], false
	}
}

// flush emits everything pending: a line without its '\n' (as a complete
// line) and the record being assembled.
func (t *tailed) flush(emit emitFunc) {
	if len(t.line) > 0 {
		t.handleLine(t.line, t.lineStart, false, emit)
		t.line = t.line[:0]
	}
	t.flushRec(emit)
	// Memory of a long record is not kept for an idle file.
	if cap(t.rec) > 64<<10 {
		t.rec = nil
	}
	if cap(t.line) > 64<<10 {
		t.line = nil
	}
}

// truncated restarts the file from 0 after its size fell below the offset.
func (t *tailed) truncated(emit emitFunc) {
	t.flush(emit)
	t.gen++
	t.off, t.skipLine, t.skipCont = 0, false, false
	t.head, t.headLen = 0, 0
}

// headBytes is how much of a file's start identifies it.
const headBytes = 64

// fingerprint records the CRC of the file's first bytes, once read.
func (t *tailed) fingerprint() {
	if t.headLen >= headBytes || t.off <= int64(t.headLen) {
		return
	}
	n := int(min(t.off, headBytes))
	if sum, ok := t.headSum(n); ok {
		t.head, t.headLen = sum, n
	}
}

func (t *tailed) headSum(n int) (uint32, bool) {
	var buf [headBytes]byte
	if got, _ := t.f.ReadAt(buf[:n], 0); got != n {
		return 0, false
	}
	return crc32.ChecksumIEEE(buf[:n]), true
}

// resume continues from a persisted position, or from 0 (a new
// generation) when the file is shorter than the offset (truncated) or its
// first bytes differ (another file on a reused inode).
func (t *tailed) resume(s fileState, size int64) {
	t.gen, t.off, t.skipLine, t.skipCont = s.Gen, s.Offset, s.SkipLine, s.SkipCont
	t.head, t.headLen = s.Head, s.HeadLen
	same := size >= s.Offset
	if same && s.HeadLen > 0 {
		sum, ok := t.headSum(min(s.HeadLen, headBytes))
		same = ok && sum == s.Head
	}
	if !same {
		t.gen, t.off, t.skipLine, t.skipCont = s.Gen+1, 0, false, false
		t.head, t.headLen = 0, 0
	}
	t.lineStart = t.off
}
