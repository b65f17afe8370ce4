package kafka

import "sort"

// tracker records the offsets of one partition's sequence received from the broker and not
// yet committable, which of them finished, and the key each one holds in the partition's
// ordering gate while it is in flight. Events may finish in any order; the committable offset
// is the highest contiguous finished offset + 1. Its memory is the span between the oldest
// unfinished offset and the newest received one (pending), which the source keeps at most
// Config.MaxInFlightPerPartition.
//
// Not safe for concurrent use: the Source's mutex guards it.
type tracker struct {
	offs  []int64  // received offsets, strictly increasing
	done  []bool   // done[i] reports whether offs[i] finished
	keys  [][]byte // keys[i]: the key offs[i] counts in the gate (nil: none); nil until a key is kept
	head  int      // offs[:head] are finished and folded into next
	next  int64    // committable offset (last contiguous finished + 1); -1 when none yet
	first int64    // the first offset received (-1: none): [first, next) all finished
}

func newTracker() *tracker { return &tracker{next: -1, first: -1} }

// received records an offset handed out by the consumer, with the key its event will count
// in the ordering gate (nil: none). Offsets must increase (see Source.restartSeq). The key
// is kept, not copied: the caller must not modify its bytes.
func (t *tracker) received(off int64, key []byte) {
	if t.first < 0 {
		t.first = off
	}
	t.offs = append(t.offs, off)
	t.done = append(t.done, false)
	if key != nil && t.keys == nil {
		t.keys = make([][]byte, len(t.offs)-1, cap(t.offs))
	}
	if t.keys != nil {
		t.keys = append(t.keys, key)
	}
}

// pending returns how many received offsets are not yet folded into the committable offset:
// the span from the oldest unfinished offset to the newest received one, in records.
func (t *tracker) pending() int { return len(t.offs) - t.head }

// complete ends off's event: it returns the key the event counted in the gate (kept by
// received; it is forgotten) and, when ok, marks off finished and advances the committable
// offset. found is false when off is not pending (never received, or already folded).
func (t *tracker) complete(off int64, ok bool) (key []byte, found bool) {
	win := t.offs[t.head:]
	i := 0 // completions mostly arrive in order: the oldest pending offset first
	if len(win) == 0 || win[0] != off {
		i = sort.Search(len(win), func(i int) bool { return win[i] >= off })
	}
	if i == len(win) || win[i] != off {
		return nil, false
	}
	i += t.head
	if t.keys != nil {
		key, t.keys[i] = t.keys[i], nil
	}
	if !ok {
		return key, true
	}
	t.done[i] = true
	for t.head < len(t.offs) && t.done[t.head] {
		t.next = t.offs[t.head] + 1
		t.head++
	}
	if t.head > 1024 && t.head*2 > len(t.offs) { // compact: keep memory to the window
		n := copy(t.offs, t.offs[t.head:])
		copy(t.done, t.done[t.head:])
		if t.keys != nil {
			copy(t.keys, t.keys[t.head:])
			clear(t.keys[n:])
			t.keys = t.keys[:n]
		}
		t.offs, t.done, t.head = t.offs[:n], t.done[:n], 0
	}
	if t.head == len(t.offs) {
		t.offs, t.done, t.head = t.offs[:0], t.done[:0], 0
		if t.keys != nil {
			t.keys = t.keys[:0] // every entry was cleared by its completion
		}
	}
	return key, true
}

// finished marks off as finished (complete with ok) and reports whether it was pending.
func (t *tracker) finished(off int64) bool {
	_, found := t.complete(off, true)
	return found
}

// low returns the oldest pending offset (unfinished: the commit point's first record), or -1
// when none is pending.
func (t *tracker) low() int64 {
	if t.head < len(t.offs) {
		return t.offs[t.head]
	}
	return -1
}

// committable returns the offset to commit (-1 when nothing finished yet).
func (t *tracker) committable() int64 { return t.next }
