//go:build race

package stage

// poisonRecycled turns the aliasing check on under the race detector (go test -race): see Event.
const poisonRecycled = true
