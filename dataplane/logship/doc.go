// Package logship sends the proxy's log records (its access log, the
// adapter's app records) to an S3-compatible object store, as a
// LogShipping resource says, exactly once across outages of the store and
// restarts of the proxy.
//
// A Shipper is a logrecord.Sink: Offer copies a record into a bounded
// in-memory queue and never blocks (full: dropped and counted). One writer
// goroutine appends the queue to the open batch in the spool directory
// (--spool-dir; 0700, ours, no symbolic link; files 0600), one JSON record
// a line, each record taking the next offset of a per-proxy sequence that
// the spool persists (a new spool starts it at the time in microseconds,
// so a wiped spool never reuses an earlier one's keys). A batch is closed when it holds batchBytes (before
// compression) or its first record is batchAge old: gzipped into
// <first>-<last>.jsonl.gz (temp file, fsync, rename), its object key
// <service>/<pod>/<instance>/<first>-<last>.jsonl.gz fixed then (in the
// gzip header), so a retried PUT overwrites itself. One uploader PUTs the
// oldest closed batch with Content-MD5 and x-amz-checksum-sha256
// (minio-go signs; the store checks the body against both) and removes it
// from the spool only after a 2xx whose x-amz-checksum-sha256 is the
// batch's (or, from a store that sends none, whose ETag is its MD5); a
// failure is retried with capped exponential backoff and jitter, each
// call bounded. Past spoolBytes the oldest closed batches
// are dropped, counted and logged. A restart resumes the spool: closed
// batches are uploaded, the open batch (a torn last line cut off) goes on.
// Credentials come from credentialsFile and are read again when it
// changes; they are never logged.
package logship
