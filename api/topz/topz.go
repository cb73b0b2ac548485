package topz

import "time"

// Table is one snapshot of a pod's processes (the answer to a topz query).
type Table struct {
	Time time.Time `json:"time"`
	// CPUWindowSeconds is the window CPU % was measured over; 0 means
	// since each process started.
	CPUWindowSeconds float64 `json:"cpu_window_seconds"`
	Processes        []Row   `json:"processes"`
	// Truncated is set when more processes were seen than the proxy lists.
	Truncated bool `json:"truncated,omitempty"`
}

// Row is one process. CPUPercent is of one CPU, as in top: a process busy
// on two cores shows 200. FDs is -1 when the process's fd directory is not
// readable (another user's process without CAP_SYS_PTRACE).
type Row struct {
	PID        int       `json:"pid"`
	PPID       int       `json:"ppid"`
	UID        int       `json:"uid"`
	User       string    `json:"user"`
	Command    string    `json:"command"` // the kernel's comm, at most 15 bytes
	Args       string    `json:"args"`    // the command line, capped at 512 bytes
	State      string    `json:"state"`   // R, S, D, Z, …
	CPUPercent float64   `json:"cpu_percent"`
	RSSBytes   int64     `json:"rss_bytes"`
	Threads    int       `json:"threads"`
	FDs        int       `json:"fds"`
	Started    time.Time `json:"started"`
}

// Process is one process in detail (the answer to a procz query): its Row
// (CPU % since it started), its open sockets and its other open files,
// each list capped by the proxy.
type Process struct {
	Row
	Sockets []Socket   `json:"sockets"`
	Files   []OpenFile `json:"files"`
	// Truncated is set when a list was cut.
	Truncated bool `json:"truncated,omitempty"`
	// FDError says why the open files could not be listed, if they could
	// not (another user's process needs CAP_SYS_PTRACE or the same uid).
	FDError string `json:"fd_error,omitempty"`
}

// Socket is one open socket of a process. Local and Remote are host:port
// for tcp and udp, the path (or "@name" for an abstract socket) for unix.
// Proto is tcp, tcp6, udp, udp6 or unix; a socket of another kind (netlink,
// raw, …) or one not found in the tables has Proto "other".
type Socket struct {
	FD     int    `json:"fd"`
	Inode  uint64 `json:"inode"`
	Proto  string `json:"proto"`
	Type   string `json:"type,omitempty"` // unix: stream, dgram, seqpacket
	Local  string `json:"local,omitempty"`
	Remote string `json:"remote,omitempty"`
	State  string `json:"state,omitempty"`
}

// OpenFile is an open file descriptor that is not a socket: a path, or the
// kernel's name for a pipe or anonymous inode ("pipe:[123]").
type OpenFile struct {
	FD   int    `json:"fd"`
	Path string `json:"path"`
}
