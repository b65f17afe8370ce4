//go:build !race

package flow

// poisonRecycled is off outside the race detector; pool.SetDebug turns the check on: see Poisoning.
const poisonRecycled = false
