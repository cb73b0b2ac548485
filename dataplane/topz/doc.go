// Package topz shows the processes the sidecar can see — in Kubernetes,
// the pod's shared PID namespace — from /proc alone: no ptrace, no cgo.
//
// Snapshot lists every process: pid, user (resolved through /etc/passwd,
// else the number), command, CPU %, RSS, threads and open file
// descriptors. CPU % is measured between two reads of /proc,
// Config.SampleInterval apart (200ms by default; a negative interval gives
// the average since each process started), and is a percentage of one CPU
// as in top. Inspect describes one process: its open sockets, found by
// matching the socket inodes in /proc/<pid>/fd against
// /proc/<pid>/net/{tcp,tcp6,udp,udp6,unix} (local and remote address,
// state), and its other open files. Every list is capped (MaxProcesses,
// MaxEntries) and marked Truncated when cut. Listing another user's open
// files needs the same uid or CAP_SYS_PTRACE; without it FDs is -1 and
// Process.FDError says so.
//
// The results are plain JSON-marshalable structs, so meshd can ask for
// them over the proxy's stream; their types and text form are api/topz's,
// the wire contract meshctl decodes and prints with. The HTTP handlers
// serve them on the admin port:
//
//	GET /topz          a plain aligned table; JSON with ?format=json or
//	                   Accept: application/json; ?sort=cpu|rss
//	GET /procz/{pid}   one process's sockets and files, same formats
//
// LoopbackOnly wraps the handlers for an admin port that listens beyond
// loopback (as in Kubernetes, for the kubelet's probes): command lines and
// sockets are then shown only to kubectl port-forward and exec.
//
// Usage:
//
//	c, err := topz.New(topz.Config{})
//	if err != nil {
//		return err
//	}
//	c.Register(adminServer) // anything with Handle(pattern, handler)
//	tab, err := c.Snapshot(ctx)
//	p, err := c.Inspect(ctx, pid)
package topz
