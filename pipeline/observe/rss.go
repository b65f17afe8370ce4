package observe

import (
	"os"
	"strconv"
	"strings"
)

// rss returns the resident set size of this process from /proc/self/statm, or 0 where that
// file is missing (not Linux) or unreadable.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
