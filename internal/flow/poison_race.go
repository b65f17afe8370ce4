//go:build race

package flow

// poisonRecycled turns the aliasing check on under the race detector (go test -race): see Poisoning.
const poisonRecycled = true
