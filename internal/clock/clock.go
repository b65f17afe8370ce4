// Package clock reads the runtime's monotonic clock without the wall-clock read that
// time.Now adds; stages time every call of user code with it.
package clock

import _ "unsafe" // for go:linkname

// Nanotime returns monotonic nanoseconds since an arbitrary origin.
//
//go:linkname Nanotime runtime.nanotime
func Nanotime() int64
