//go:build sluicedebug

package pool

func init() { debugMode.Store(true) }
