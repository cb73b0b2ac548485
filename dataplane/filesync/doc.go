// Package filesync keeps a shared directory holding exactly a desired set
// of files, for an unmodified app that reads its configuration from disk.
//
// Each new or changed file is written to a temporary file beside it,
// fsynced, and renamed over the old one, so the app reads the old content
// or the new, never a part. Paths are relative; a set naming a path that
// would leave the directory ("..", an absolute path, a symlink on the way)
// is refused whole with a *PathError before anything is written — the error
// a config push NACKs with. The Syncer remembers the files it wrote in a
// manifest (ManifestName) in the directory and removes only those when a
// later set no longer names them; it never removes a file it did not write.
// Directories it created for a file stay when the file goes.
//
// After a change it can tell the app: an HTTP POST to a reload URL (bounded
// by a timeout), or a signal to the processes with a given name found in
// /proc (the pod's shared PID namespace). Signalling a process of another
// user needs CAP_KILL, and the error says so.
//
//	s, err := filesync.New(filesync.Config{
//		Dir:    "/shared",
//		Reload: filesync.Reload{Process: "nginx", Signal: syscall.SIGHUP},
//	})
//	if err != nil {
//		return err
//	}
//	res, err := s.Sync([]filesync.File{
//		{Path: "nginx/conf.d/site.conf", Mode: 0o644, Content: conf},
//	})
//	var pe *filesync.PathError
//	if errors.As(err, &pe) {
//		// NACK: pe.Path, pe.Reason
//	}
//	fmt.Println(res.Written, res.Removed, res.At)
//
// Status reports the owned files, when each was written, and the last
// error, for proxy-status.
package filesync
