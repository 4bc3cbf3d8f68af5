// Command goselinux relabels a tree the way podman (and CRI-O, docker)
// relabel a volume mounted with `:Z` or `:z`, for the relabel bench
// (server/benches/relabel.rs builds it with Debian's golang-go and
// golang-github-opencontainers-selinux-dev, offline, in GOPATH mode).
//
//	goselinux Z|z LABEL PATH
//
// It prints how long the relabel took, in nanoseconds, so that the bench
// compares the walk alone, as podman runs it inside its own process, not
// this program's start.
//
// podman's path, for `-v PATH:/dst:Z` (libpod, Container.relabel):
//
//	c.relabel(src, c.MountLabel(), label.IsShared(o))
//	  if !selinux.GetEnabled() || mountLabel == "" { return nil }
//	  [on a container past its first start only: selinux.FileLabel(src), and
//	   return if it equals mountLabel]
//	  label.Relabel(src, mountLabel, shared)          (go-selinux/label)
//	    if !selinux.GetEnabled() || fileLabel == "" { return nil }
//	    [go-selinux 1.10.0 only: refuse /, /usr, $HOME and other system dirs]
//	    if shared { c := selinux.NewContext(fileLabel); c["level"] = "s0"; fileLabel = c.Get() }
//	    selinux.Chcon(path, fileLabel, true)
//	      chcon: refuse a path under /usr (badPrefix), then rchcon(path, label):
//	        pwalkdir.Walk(path, func(p, _, _) { e := lSetFileLabel(p, label); ignore ENOENT })
//
// SELinux is disabled where the bench runs, so label.Relabel would return at
// its GetEnabled() check without walking. This program therefore does what
// label.Relabel does after that check (the `:z` level) and then rchcon's
// body itself, with the exported pwalkdir.Walk and selinux.LsetFileLabel:
// rchcon is unexported. What is skipped is all done once per volume, not
// per entry, so it costs nothing measurable against a walk of 100k entries:
// GetEnabled() (a sync.Once that reads /proc/self/mountinfo for selinuxfs),
// ensureState and at most one getxattr on the root in podman, a map lookup
// of the path in label.Relabel, and badPrefix's strings.HasPrefix in chcon.
//
// Why not call selinux.Chcon itself (which does not check GetEnabled):
// Debian's go-selinux is 1.10.0, whose rchcon calls setFileLabel, i.e.
// setxattr, which follows symlinks (opencontainers/selinux issue 172): on
// the bench tree it would relabel /etc/passwd through a symlink. Upstream
// fixed that in 1.10.1 by calling lSetFileLabel, and that is what podman
// vendors today, so this program reproduces the fixed rchcon.
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/opencontainers/selinux/go-selinux"
	"github.com/opencontainers/selinux/pkg/pwalkdir"
)

func main() {
	if len(os.Args) != 4 || (os.Args[1] != "Z" && os.Args[1] != "z") {
		fmt.Fprintln(os.Stderr, "usage: goselinux Z|z LABEL PATH")
		os.Exit(2)
	}
	shared, fileLabel, path := os.Args[1] == "z", os.Args[2], os.Args[3]
	started := time.Now()
	// label.Relabel after its GetEnabled() check.
	if shared {
		c, err := selinux.NewContext(fileLabel)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goselinux:", err)
			os.Exit(1)
		}
		c["level"] = "s0"
		fileLabel = c.Get()
	}
	// selinux.Chcon(path, fileLabel, true) → chcon → rchcon (go-selinux >= 1.10.1).
	err := pwalkdir.Walk(path, func(p string, _ fs.DirEntry, _ error) error {
		e := selinux.LsetFileLabel(p, fileLabel)
		// Walk a file tree can race with removal, so ignore ENOENT.
		if errors.Is(e, os.ErrNotExist) {
			return nil
		}
		return e
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "goselinux:", err)
		os.Exit(1)
	}
	fmt.Println(time.Since(started).Nanoseconds())
}
