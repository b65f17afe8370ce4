//go:build !race

package stage

// poisonRecycled is off outside the race detector; pool.SetDebug turns the check on: see Event.
const poisonRecycled = false
