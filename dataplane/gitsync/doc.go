// Package gitsync keeps a checkout of a git repository current beside an
// unmodified app, and switches versions atomically, as kubernetes/git-sync
// does: a web server reading through the link never serves a mix of two
// commits.
//
// Every Interval the Syncer fetches Ref (a branch, tag or full commit hash)
// with the git binary (no shell, each command bounded by Timeout) into a
// bare repository under Root. A new commit is checked out completely into
// Root/.worktrees/<hash> (a git worktree); then a symlink to it is created
// under a temporary name and renamed over Root/<Link>, which is atomic; then
// the older checkouts are removed. The link is relative, so it resolves
// wherever the shared directory is mounted.
//
//	Root/
//	  current -> .worktrees/9fceb02…   (Link)
//	  .worktrees/9fceb02…/             (the live checkout)
//	  .git-repo/                       (bare repository)
//
// A reader that must see several files of one commit resolves the link
// once (opens the directory, or reads the link) and reads the files from
// there; a reader that resolves Root/<Link> per file may see two commits
// across a switch, as with any symlink swap. An old checkout is removed
// right after the switch; files already open stay readable.
//
// Root sits on a volume the app shares, and git runs what a repository
// names (hooks, filters, fsmonitor) as this process's user. So git runs in
// the bare repository only while Root and it are directories of this
// process's user that no one else can write, reached through no symbolic
// link, with a config file and hooks directory of ours that no one else
// can write (ErrUntrusted otherwise, a failed sync); and every git command
// runs with hooks and fsmonitor off.
//
// A failed fetch or checkout keeps the last good checkout live; Status
// reports the error, the live commit and the last success, Ready fails only
// until the first checkout, and the metrics count syncs by result and show
// the live commit's time:
//
//	minimesh_gitsync_syncs_total{result="changed|unchanged|error"}
//	minimesh_gitsync_commit_timestamp_seconds
//	minimesh_gitsync_last_success_timestamp_seconds
//
// Usage:
//
//	s, err := gitsync.New(gitsync.Config{
//		Repo: "https://example.com/site.git", Ref: "main",
//		Interval: time.Minute, Root: "/shared/site", Link: "current",
//		Registerer: reg,
//	})
//	if err != nil {
//		return err
//	}
//	return s.Run(ctx) // the app serves /shared/site/current
package gitsync
