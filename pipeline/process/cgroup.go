package process

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// unlimitedFrom is the smallest limit value read as "no limit": cgroup v1 reports its
// default as 2^63-1 rounded down to a page (9223372036854771712), never a real size.
const unlimitedFrom = 1 << 62

// MemoryLimit returns the cgroup memory limit of this process in bytes, or 0 when it has
// none (no memory controller, "max" or a v1 value of 2^62 or more at every level).
//
// It finds the process's own cgroup as the kernel shows it in /proc/self/cgroup and maps it
// onto the mounted cgroup file system through /proc/self/mountinfo, so it works in a cgroup
// v1 container, on cgroup v2 with or without a cgroup namespace (a nested path such as
// /kubepods/pod123/ctr), and on hybrid hosts (the v1 memory controller wins there: the
// unified hierarchy carries no memory limits). The kernel enforces every ancestor's limit,
// so the result is the smallest limit from the process's cgroup up to the mount's root.
//
// An error means /proc/self/cgroup or /proc/self/mountinfo could not be read or parsed (it
// wraps fs.ErrNotExist off Linux), or a limit file held something other than a number or
// "max"; the limit is then 0.
func MemoryLimit() (int64, error) { return memoryLimit(os.DirFS("/")) }

// memoryLimit is MemoryLimit over a file system rooted at "/" (paths without the leading
// slash), so tests give it fixture trees.
func memoryLimit(fsys fs.FS) (int64, error) {
	groups, err := readCgroups(fsys)
	if err != nil {
		return 0, err
	}
	mounts, err := readMounts(fsys)
	if err != nil {
		return 0, err
	}
	// v1 (and hybrid): the line naming the memory controller, on a "cgroup" mount with the
	// memory option.
	for _, g := range groups {
		if g.id == 0 || !slices.Contains(g.controllers, "memory") {
			continue
		}
		for _, m := range mounts {
			if m.fstype == "cgroup" && slices.Contains(m.superOpts, "memory") {
				return walkLimit(fsys, m, g.path, "memory.limit_in_bytes")
			}
		}
	}
	// v2: hierarchy 0, on a "cgroup2" mount.
	for _, g := range groups {
		if g.id != 0 {
			continue
		}
		for _, m := range mounts {
			if m.fstype == "cgroup2" {
				return walkLimit(fsys, m, g.path, "memory.max")
			}
		}
	}
	return 0, nil
}

// walkLimit reads file in the cgroup directory of cgPath under mount m and in each of its
// ancestors up to the mount point, and returns the smallest limit (0: none). A cgroup path
// outside the mount's root (the process sits above the namespace's or bind mount's root) is
// read at the mount point only.
func walkLimit(fsys fs.FS, m mount, cgPath, file string) (int64, error) {
	root, cg := path.Clean(m.root), path.Clean(cgPath)
	rel := "/"
	switch {
	case root == "/":
		rel = cg
	case strings.HasPrefix(cg, root+"/"):
		rel = cg[len(root):]
	}
	top := path.Clean(m.point)
	var limit int64
	for dir := path.Join(top, rel); ; dir = path.Dir(dir) {
		n, err := readLimit(fsys, path.Join(fsName(dir), file))
		if err != nil {
			return 0, err
		}
		if n > 0 && (limit == 0 || n < limit) {
			limit = n
		}
		if dir == top || dir == "/" {
			return limit, nil
		}
	}
}

// fsName turns an absolute path into an fs.FS name.
func fsName(p string) string {
	if p = strings.TrimPrefix(p, "/"); p == "" {
		return "."
	}
	return p
}

// readLimit reads one limit file: 0 when it is absent (the root cgroup has none) or
// unreadable (an ancestor outside the container's permissions), "max", or a value of
// unlimitedFrom or more.
func readLimit(fsys fs.FS, name string) (int64, error) {
	b, err := fs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("process: cgroup memory limit: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process: cgroup memory limit: /%s: %q is neither a number nor \"max\"", name, s)
	}
	if n == 0 || n >= unlimitedFrom {
		return 0, nil
	}
	return int64(n), nil
}

// cgroup is one line of /proc/self/cgroup: "id:controller,list:/path" (v2: "0::/path").
type cgroup struct {
	id          int
	controllers []string
	path        string
}

func readCgroups(fsys fs.FS) ([]cgroup, error) {
	var out []cgroup
	err := eachLine(fsys, "proc/self/cgroup", func(line string) error {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			return fmt.Errorf("bad line %q", line)
		}
		id, err := strconv.Atoi(f[0])
		if err != nil {
			return fmt.Errorf("bad hierarchy id in %q", line)
		}
		out = append(out, cgroup{id: id, controllers: strings.Split(f[1], ","), path: f[2]})
		return nil
	})
	return out, err
}

// mount is the part of a /proc/self/mountinfo line MemoryLimit needs: "36 25 0:31 /root
// /mount/point opts [optional fields...] - fstype source superopts".
type mount struct {
	root, point, fstype string
	superOpts           []string
}

func readMounts(fsys fs.FS) ([]mount, error) {
	var out []mount
	err := eachLine(fsys, "proc/self/mountinfo", func(line string) error {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+4 {
			return fmt.Errorf("bad line %q", line)
		}
		if t := f[sep+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, mount{root: unescape(f[3]), point: unescape(f[4]), fstype: t, superOpts: strings.Split(f[sep+3], ",")})
		}
		return nil
	})
	return out, err
}

// unescape decodes mountinfo's octal escapes (\040 for a space, \011, \012, \134).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func eachLine(fsys fs.FS, name string, fn func(string) error) error {
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("process: cgroup memory limit: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			if err := fn(line); err != nil {
				return fmt.Errorf("process: cgroup memory limit: /%s: %w", name, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("process: cgroup memory limit: /%s: %w", name, err)
	}
	return nil
}
