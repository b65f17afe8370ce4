package kafka

import "sort"

// tracker records the offsets of one partition received from the broker and not yet
// committable, and which of them finished. Events may finish in any order; the committable
// offset is the highest contiguous finished offset + 1. Its memory is the window between the
// oldest unfinished offset and the newest received one, bounded by the partition's in-flight
// limit plus the messages held back.
//
// Not safe for concurrent use: the Source's mutex guards it.
type tracker struct {
	offs []int64 // received offsets, strictly increasing
	done []bool  // done[i] reports whether offs[i] finished
	head int     // offs[:head] are finished and folded into next
	next int64   // committable offset (last contiguous finished + 1); -1 when none yet
}

func newTracker() *tracker { return &tracker{next: -1} }

// received records an offset handed out by the consumer. Offsets must increase.
func (t *tracker) received(off int64) {
	t.offs = append(t.offs, off)
	t.done = append(t.done, false)
}

// pending returns how many received offsets are not yet folded into the committable offset.
func (t *tracker) pending() int { return len(t.offs) - t.head }

// finished marks off as finished and advances the committable offset. It reports false when
// off was not received (a late completion from an earlier assignment).
func (t *tracker) finished(off int64) bool {
	win := t.offs[t.head:]
	i := 0 // completions mostly arrive in order: the oldest pending offset first
	if len(win) == 0 || win[0] != off {
		i = sort.Search(len(win), func(i int) bool { return win[i] >= off })
	}
	if i == len(win) || win[i] != off {
		return false
	}
	t.done[t.head+i] = true
	for t.head < len(t.offs) && t.done[t.head] {
		t.next = t.offs[t.head] + 1
		t.head++
	}
	if t.head > 1024 && t.head*2 > len(t.offs) { // compact: keep memory to the window
		n := copy(t.offs, t.offs[t.head:])
		copy(t.done, t.done[t.head:])
		t.offs, t.done, t.head = t.offs[:n], t.done[:n], 0
	}
	if t.head == len(t.offs) {
		t.offs, t.done, t.head = t.offs[:0], t.done[:0], 0
	}
	return true
}

// committable returns the offset to commit (-1 when nothing finished yet).
func (t *tracker) committable() int64 { return t.next }
