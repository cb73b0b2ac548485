// Package meshctl is the operator CLI's commands (cobra). cmd/meshctl only
// calls Execute; tests run the same commands in-process against a real meshd.
//
//	root := meshctl.NewRoot(meshctl.IO{Out: os.Stdout, Err: os.Stderr})
//	root.SetArgs([]string{"token", "create", "--ns", "default", "--sa", "web"})
//	err := root.Execute()
package meshctl
