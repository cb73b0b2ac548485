// Package logadapter is the proxy's log adapter: it follows the app's own
// log files in the pod's shared directory (the LogAdapter resources of the
// proxy's service, applied live from snapshots) and turns them into JSON
// records, one per line of output, each offered to a logrecord.Sink.
//
// Files. Each glob of spec.files is matched relative to --shared-dir, one
// directory at a time; every path is opened beneath the shared directory
// without following a symbolic link (openat2 with RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS, or O_NOFOLLOW on every component where the kernel
// lacks openat2), with O_NONBLOCK, and must be a regular file both before
// the open (fstatat without following) and after it (fstat): a symbolic
// link (to the proxy's SVID key, say), a FIFO, a device or a socket is
// never read, only counted (minimesh_proxy_logadapter_skipped_total
// {reason="not_regular"}). A glob that matches nothing waits. At most
// Config.MaxOpenFiles files are followed at once.
//
// Rotation. Files are known by device and inode. A file renamed away
// (app.log to app.log.1) is read to its end, before the new file, and
// closed once it is idle; a file whose size falls below the offset
// (copytruncate) is read again from 0, as is a file whose first 64 bytes
// no longer match the CRC kept with its offset (another file on a reused
// inode). A file no longer matched keeps its offset, so a LogAdapter
// removed and applied again does not read it twice.
//
// Offsets. Where each file's next unemitted byte is (a record being
// assembled is not emitted yet) goes to StateFile in the state dir,
// written atomically (temporary file, fsync, rename) at most every
// Config.PersistEvery. When Run's context ends (SIGTERM) the adapter goes
// on for at most Config.ShutdownWait (1s) while records are pending, so
// the app's last lines (it stops too) are emitted after flushAfter as
// usual; then the files are read to their end and the offsets written. A
// record still growing then is not emitted: the offset persisted is its
// start, and the next run reads it whole. A restart neither loses nor
// repeats a record, nor splits a stack trace in two. After a SIGKILL,
// the records emitted since the last write (at most PersistEvery, plus
// what the output had not written yet) are emitted again, with the same
// record_id, and none is lost: with Config.Progress (Output.Progress)
// offsets are written only once the output has written every record
// before them, so a record still queued for stdout is never covered.
//
// Records. spec.recordStart (an RE2 pattern matched at the start of a
// line) makes the lines that do not match part of the record before them
// (stack traces); a record is emitted when the next one starts, or when
// its file has had no new bytes for spec.flushAfter (also a last line
// without its newline). A record longer than spec.maxRecordBytes (its raw
// text) is cut there, emitted at once with "truncated":true, and the rest
// of it discarded: memory is bounded whatever the app writes (huge lines,
// no newlines, many files). Formats: json (an object's fields are kept; a
// line that is not an object becomes "message"), logfmt, regex (the named
// groups of spec.pattern) and text ("message"). A json or regex record
// is parsed whole (a pattern with (?s) can take a stack trace into a
// group), else by its first line, the lines after it kept as
// "continuation"; logfmt parses the first line. Each record is
//
//	{"source":"app","record_id":"<inode>-<gen>-<offset>","service":"api","identity":"spiffe://…","pod":"api-7f…","file":"logs/app.log","time":"…",<the app's fields>}
//
// record_id is stable: the file's inode, how many times the adapter saw
// that file truncated (gen, 0 at first; persisted with the offsets) and
// the byte offset of the record's first byte. The same record read twice
// (after a SIGKILL) has the same ID, so a consumer can drop repeats. An
// app's field named like one of the adapter's (source, record_id,
// service, identity, pod, file, truncated) is kept as "app_<name>"; the
// adapter's "time" (when it read the record) is added only when the app's
// record has none.
//
// Output. Output is the default Sink: a bounded queue (bytes and
// records) written to stdout or the access-log file by its own
// goroutine. Offer never waits; when the output does not keep up,
// records are dropped and counted (minimesh_proxy_log_output_dropped_total).
// The sidecar offers each record to logrecord.Sinks{output, more...}:
// sidecar.Config.LogSinks are the other consumers (the log shipper).
//
//	out, _ := logadapter.NewOutput(logadapter.OutputConfig{Writer: os.Stdout, Registerer: reg})
//	a, _ := logadapter.New(logadapter.Config{SharedDir: shared, StateDir: state, Sink: out, Service: "api"})
//	sp, err := logadapter.Compile(la) // a validated *api.LogAdapter
//	a.Set([]*logadapter.Spec{sp})
//	go out.Run(outCtx) // ended after a.Run returns, so the last records are written
//	err = a.Run(ctx)
package logadapter
