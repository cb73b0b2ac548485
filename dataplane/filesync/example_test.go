package filesync_test

import (
	"errors"
	"fmt"
	"os"

	"minimesh/dataplane/filesync"
)

func Example() {
	dir, err := os.MkdirTemp("", "shared-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	s, err := filesync.New(filesync.Config{Dir: dir})
	if err != nil {
		panic(err)
	}
	res, err := s.Sync([]filesync.File{
		{Path: "app/config.yaml", Mode: 0o644, Content: []byte("debug: false\n")},
		{Path: "app/feature-flags", Content: []byte("beta=on\n")},
	})
	fmt.Println(res.Written, err)

	res, err = s.Sync([]filesync.File{
		{Path: "app/config.yaml", Mode: 0o644, Content: []byte("debug: true\n")},
	})
	fmt.Println(res.Written, res.Removed, err)

	_, err = s.Sync([]filesync.File{{Path: "../etc/passwd", Content: []byte("x")}})
	var pe *filesync.PathError
	fmt.Println(errors.As(err, &pe), pe.Path, errors.Is(err, filesync.ErrUnsafePath))
	// Output:
	// [app/config.yaml app/feature-flags] <nil>
	// [app/config.yaml] [app/feature-flags] <nil>
	// true ../etc/passwd true
}
