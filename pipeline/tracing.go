package pipeline

import (
	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/internal/flow"
)

// The tracing option is reached only through internal/ext (kafka/kotel's Tracing.Option): it
// is not part of pipeline's API, so the core does not depend on a tracing library.
func init() {
	ext.WithTracer = func(t flow.Tracer) any {
		return Option(func(c *config) { c.tracer = t })
	}
}
