package flow

import (
	"context"
	"time"
)

// Policy values of Config.Policy (stage.ErrorPolicy has the same).
const (
	PolicyHandle = iota
	PolicyFail
)

// Config is a stage's configuration, set by package stage's options and validated there.
type Config struct {
	Concurrency int
	Capacity    int
	Unordered   bool
	Timeout     time.Duration // per attempt; 0: none
	Retries     int           // retries after the first attempt
	Backoff     time.Duration // before the first retry, doubling up to MaxBackoff
	MaxBackoff  time.Duration
	Policy      int
	// Close, when set, runs after the stage's workers exited (sinks): an async sink's must end
	// every outstanding Done before it returns.
	Close func(ctx context.Context) error
}

// backoffFor returns the wait before retry number attempt (1: the first retry).
func (c *Config) backoffFor(attempt int) time.Duration {
	d := c.Backoff
	for i := 1; i < attempt && d < c.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.MaxBackoff)
}
