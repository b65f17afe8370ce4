package process

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// Real mountinfo lines: the root file system, a tmpfs for /sys/fs/cgroup (v1 and hybrid),
// and the cgroup mounts each fixture adds.
const (
	miRoot   = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
	miTmpfs  = "31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
	miV2     = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
	miV1Mem  = "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory\n"
	miV1CPU  = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct\n"
	miHybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
	v1None   = "9223372036854771712\n" // cgroup v1's "no limit": 2^63-1 rounded down to a page
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func tree(cgroup, mountinfo string, files map[string]string) fstest.MapFS {
	m := fstest.MapFS{"proc/self/cgroup": file(cgroup), "proc/self/mountinfo": file(miRoot + mountinfo)}
	for name, data := range files {
		m[name] = file(data)
	}
	return m
}

func TestMemoryLimitLayouts(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name string
		fsys fstest.MapFS
		want int64
	}{
		{"v2 own namespace", tree("0::/\n", miV2, map[string]string{
			"sys/fs/cgroup/memory.max": "536870912\n"}), 512 * mib},
		{"v2 no namespace, limit on the container", tree("0::/kubepods/pod123/ctr\n", miV2, map[string]string{
			"sys/fs/cgroup/kubepods/memory.max":            "max\n",
			"sys/fs/cgroup/kubepods/pod123/memory.max":     "max\n",
			"sys/fs/cgroup/kubepods/pod123/ctr/memory.max": "805306368\n"}), 768 * mib},
		{"v2 no namespace, nearest ancestor with a limit", tree("0::/kubepods/pod123/ctr\n", miV2, map[string]string{
			"sys/fs/cgroup/kubepods/memory.max":            "max\n",
			"sys/fs/cgroup/kubepods/pod123/memory.max":     "1073741824\n",
			"sys/fs/cgroup/kubepods/pod123/ctr/memory.max": "max\n"}), 1024 * mib},
		{"v2 nested: the smallest along the path", tree("0::/kubepods/pod123/ctr\n", miV2, map[string]string{
			"sys/fs/cgroup/kubepods/memory.max":            "4294967296\n",
			"sys/fs/cgroup/kubepods/pod123/memory.max":     "1073741824\n",
			"sys/fs/cgroup/kubepods/pod123/ctr/memory.max": "2147483648\n"}), 1024 * mib},
		{"v2 unlimited everywhere", tree("0::/a/b\n", miV2, map[string]string{
			"sys/fs/cgroup/a/memory.max":   "max\n",
			"sys/fs/cgroup/a/b/memory.max": "max\n"}), 0},
		// The measured failure: the root file says unlimited, the process's cgroup has 2 GB.
		{"v1 container, limit below the root", tree("11:pids:/docker/abc\n4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
			miTmpfs+miV1CPU+miV1Mem, map[string]string{
				"sys/fs/cgroup/memory/memory.limit_in_bytes":            v1None,
				"sys/fs/cgroup/memory/docker/memory.limit_in_bytes":     v1None,
				"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "2000000000\n"}), 2000000000},
		{"v1 container, mount rooted at its cgroup", tree("4:memory:/docker/abc\n",
			miTmpfs+strings.Replace(miV1Mem, " / /sys", " /docker/abc /sys", 1), map[string]string{
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n"}), 256 * mib},
		{"v1 cgroup outside the mount's root: the mount point", tree("4:memory:/elsewhere\n",
			miTmpfs+strings.Replace(miV1Mem, " / /sys", " /docker/abc /sys", 1), map[string]string{
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n"}), 256 * mib},
		{"v1 unlimited (2^62 and the page-rounded maximum)", tree("4:memory:/a/b\n", miTmpfs+miV1Mem, map[string]string{
			"sys/fs/cgroup/memory/memory.limit_in_bytes":     v1None,
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes":   "4611686018427387904\n",
			"sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": v1None}), 0},
		// Hybrid: v1 controllers plus an empty unified hierarchy; the memory controller is
		// v1's (a decoy memory.max in the unified tree must be ignored).
		{"hybrid", tree("12:memory:/user.slice/app\n1:name=systemd:/user.slice/app\n0::/user.slice/app\n",
			miTmpfs+miV1Mem+miHybrid, map[string]string{
				"sys/fs/cgroup/memory/user.slice/app/memory.limit_in_bytes": "134217728\n",
				"sys/fs/cgroup/unified/user.slice/app/memory.max":           "1048576\n"}), 128 * mib},
		{"v1 without a memory controller", tree("3:cpu,cpuacct:/a\n", miTmpfs+miV1CPU, nil), 0},
		{"no cgroup mounts", tree("0::/\n", "", nil), 0},
		{"escaped mount point", tree("0::/x\n", strings.Replace(miV2, "/sys/fs/cgroup", `/my\040cgroup`, 1), map[string]string{
			"my cgroup/x/memory.max": "1048576\n"}), 1 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := memoryLimit(tc.fsys)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("memoryLimit = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMemoryLimitErrors(t *testing.T) {
	if _, err := memoryLimit(fstest.MapFS{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no /proc: err = %v, want fs.ErrNotExist", err)
	}
	bad := tree("0::/\n", miV2, map[string]string{"sys/fs/cgroup/memory.max": "lots\n"})
	if n, err := memoryLimit(bad); err == nil || n != 0 || !strings.Contains(err.Error(), "sys/fs/cgroup/memory.max") {
		t.Fatalf("garbage limit: %d, %v; want 0 and an error naming the file", n, err)
	}
	if _, err := memoryLimit(tree("not a cgroup line\n", miV2, nil)); err == nil || !strings.Contains(err.Error(), "/proc/self/cgroup") {
		t.Fatalf("bad /proc/self/cgroup: err = %v", err)
	}
	if _, err := memoryLimit(tree("0::/\n", "1 2 3\n", nil)); err == nil || !strings.Contains(err.Error(), "/proc/self/mountinfo") {
		t.Fatalf("bad /proc/self/mountinfo: err = %v", err)
	}
}

// TestMemoryLimitHere reads this machine's cgroup: whatever the layout, it must parse.
func TestMemoryLimitHere(t *testing.T) {
	n, err := MemoryLimit()
	if err != nil {
		t.Fatal(err)
	}
	if n < 0 {
		t.Fatalf("MemoryLimit = %d", n)
	}
	t.Logf("cgroup memory limit here: %d", n)
}
