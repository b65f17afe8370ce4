package pipeline

import (
	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/internal/flow"
)

// watched is a node whose calls can be tracked (every linked stage: *flow.Stage has these).
type watched interface {
	Watch()
	RunningCalls(dst []flow.Call) []flow.Call
}

func init() {
	ext.Watch = func(v any) func([]flow.Call) []flow.Call {
		p, ok := v.(*Pipeline)
		if !ok || p == nil {
			return nil
		}
		var ws []watched
		for _, n := range p.nodes {
			if w, ok := n.(watched); ok {
				w.Watch()
				ws = append(ws, w)
			}
		}
		return func(dst []flow.Call) []flow.Call {
			for _, w := range ws {
				dst = w.RunningCalls(dst)
			}
			return dst
		}
	}
}
