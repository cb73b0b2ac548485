package topz_test

import (
	"os"
	"time"

	"minimesh/dataplane/topz"
)

func ExampleWriteTable() {
	topz.WriteTable(os.Stdout, topz.Table{
		Time:             time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		CPUWindowSeconds: 0.2,
		Processes: []topz.Row{
			{PID: 1, User: "root", Command: "pause", Args: "/pause", State: "S", RSSBytes: 512 << 10, Threads: 1, FDs: 3},
			{PID: 7, User: "nginx", Command: "nginx", Args: "nginx: worker process", State: "S", CPUPercent: 12.5, RSSBytes: 24 << 20, Threads: 1, FDs: 18},
			{PID: 9, User: "1000", Command: "mesh-proxy", Args: "mesh-proxy --service web", State: "S", CPUPercent: 3, RSSBytes: 40 << 20, Threads: 9, FDs: -1},
		},
	})
	// Output:
	// # 3 processes at 2030-01-02T03:04:05Z, CPU % over 0.20s
	// PID  USER   CPU%  RSS     THR  FDS  S  COMMAND
	// 1    root   0.0   512.0K  1    3    S  /pause
	// 7    nginx  12.5  24.0M   1    18   S  nginx: worker process
	// 9    1000   3.0   40.0M   9    ?    S  mesh-proxy --service web
}
