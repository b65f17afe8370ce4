package kafka

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Commit metadata: the finished offsets above the committed one.
//
// Offsets finish out of order, but a commit covers only the contiguous prefix: without more,
// whatever finished above it is processed again by the next owner of the partition (after a
// rebalance or a restart). So every commit also stores, in the commit's metadata (a protocol
// string, kept printable: base64 without padding), which offsets above the committed offset C
// finished, and the next owner reads it back on assignment and completes those offsets at once,
// without emitting them (Source.skipFinished).
//
// Binary form, then base64 (RawStdEncoding):
//
//	byte 0   version (metaVersion)
//	byte 1   kind: metaRuns or metaBits
//	runs:    uvarints g0 f0 g1 f1 ...: starting at C+1, g not finished, then f finished, ...
//	bits:    uvarint skip, then a bitset: bit j (LSB first) set ⇔ offset C+1+skip+j finished
//
// Example: C = 100 and 102..104, 110 finished: runs 01 00 | 01 03 05 01 (6 bytes, "AQABAwUB"),
// bits 01 01 | 00 | 0e 02 (5 bytes, "AQEADgI"): the smaller is stored. The source writes the
// smaller of the two, and never more than Config.CommitMetadataMaxBytes once encoded: the
// bitset's size depends only on the offset range from the oldest unfinished offset to the
// newest received one, which the source bounds (metaBits, window.go) by pausing the partition.
// A value that is empty, of another version, or corrupt is ignored (with a warning for the
// last two): it only costs duplicates.
const (
	metaVersion = 1
	metaRuns    = 0
	metaBits    = 1
	metaHeader  = 2 + binary.MaxVarintLen64 // version, kind and the largest skip
)

// metaLimit returns the largest binary form whose base64 fits in maxBytes (3 bytes per 4
// characters), or 0 when commit metadata is off (maxBytes < 0).
func metaLimit(maxBytes int) int {
	if maxBytes <= 0 {
		return 0
	}
	return maxBytes * 3 / 4
}

// metaRange returns how far (in offsets) the newest received offset may be above the oldest
// unfinished one so that any set of finished offsets between them fits in maxBytes as a
// bitset; 0 when commit metadata is off.
func metaRange(maxBytes int) int64 {
	if l := metaLimit(maxBytes); l > metaHeader {
		return int64(l-metaHeader) * 8
	}
	return 0
}

// commitPoint returns the offset to commit and the binary form of the finished offsets above
// it, appended to buf[:0] (buf is reused: the result aliases it). off is -1 when there is
// nothing to commit. limit bounds the binary form (0: no metadata); truncated reports that
// finished offsets were left out to stay within it (the source's range bound prevents that
// unless offsets jump by more than the range, e.g. a compacted topic).
//
// Without a contiguous finished prefix (next is -1), the commit point is the oldest received
// offset when something above it finished: the position the assignment started from.
func (t *tracker) commitPoint(buf []byte, limit int) (off int64, meta []byte, truncated bool) {
	win := t.offs[t.head:]
	off = t.next
	if limit == 0 || len(win) < 2 {
		return off, buf[:0], false
	}
	if off < 0 {
		off = win[0]
	}
	// One pass writes the runs (up to limit) and finds the last finished offset.
	buf = append(buf[:0], metaVersion, metaRuns)
	pos, last := off+1, int64(-1) // pos: the first offset not yet covered by a run
	runsOver := false
	for i := 1; i < len(win); i++ {
		if !t.done[t.head+i] {
			continue
		}
		o := win[i]
		j := i
		for j+1 < len(win) && t.done[t.head+j+1] && win[j+1] == win[j]+1 {
			j++
		}
		if !runsOver {
			buf = binary.AppendUvarint(buf, uint64(o-pos))
			buf = binary.AppendUvarint(buf, uint64(win[j]-o+1))
			runsOver = len(buf) > limit
		}
		pos, last, i = win[j]+1, win[j], j
	}
	if last < 0 {
		return t.next, buf[:0], false
	}
	skip := win[0] - off // the oldest unfinished offset is win[0]: the bits start after it
	nbits := last - win[0]
	bitsLen := 2 + uvarintLen(uint64(skip)) + int((nbits+7)/8)
	if !runsOver && len(buf) <= bitsLen {
		return off, buf, false
	}
	if bitsLen > limit {
		truncated = true
		nbits = int64(limit-2-uvarintLen(uint64(skip))) * 8
	}
	buf = append(buf[:0], metaVersion, metaBits)
	buf = binary.AppendUvarint(buf, uint64(skip))
	start := len(buf)
	buf = append(buf, make([]byte, (nbits+7)/8)...) // no allocation once buf has grown to limit
	for i := 1; i < len(win); i++ {
		if b := win[i] - win[0] - 1; t.done[t.head+i] && b < nbits {
			buf[start+int(b/8)] |= 1 << (b % 8)
		}
	}
	return off, buf, truncated
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// errMeta is wrapped by decodeMeta's errors about a value that is not sluice's (or is damaged).
var errMeta = errors.New("not a sluice commit metadata value")

// finishedSet is the finished offsets read back from a commit's metadata, queried in increasing
// offset order (has) as the partition's messages arrive. It keeps the binary form (bounded by
// the metadata's size) and walks it, never a list of offsets. A set this member kept from an
// earlier assignment of the partition (keptSet) also covers the contiguous finished prefix
// [from, upto) below its commit point.
type finishedSet struct {
	kind byte
	body []byte // runs, or the bitset
	base int64  // bits: the offset of bit 0; runs: the next run's starting point
	lo   int64  // runs: the current finished run is [lo, hi)
	hi   int64
	pos  int   // runs: read position in body
	from int64 // every offset in [from, upto) finished (upto 0: none); upto < base
	upto int64
}

// encodeMeta is a commit's metadata as the protocol string carries it (decodeMeta reads it).
func encodeMeta(meta []byte) string { return base64.RawStdEncoding.EncodeToString(meta) }

// decodeMeta parses a commit's metadata for the committed offset off. An empty value gives
// nil, nil (nothing finished above it, or another client's commit).
func decodeMeta(s string, off int64) (*finishedSet, error) {
	if s == "" || off < 0 {
		return nil, nil
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %w", errMeta, err)
	}
	return decodeBinary(b, off)
}

// keptSet returns what a tracker knows finished (commitPoint's off and binary meta, and the
// tracker's first offset and committable offset next): [first, next) and meta's offsets above
// off. The source keeps it for the partition when it lets the partition go without a commit
// confirming as much (Source.keep); meta is copied.
func keptSet(first, next, off int64, meta []byte) *finishedSet {
	f := &finishedSet{kind: metaRuns, base: off + 1, lo: off + 1, hi: off + 1}
	if len(meta) > 0 {
		var err error
		if f, err = decodeBinary(append([]byte(nil), meta...), off); err != nil {
			return nil // cannot happen: commitPoint wrote it
		}
	}
	if first >= 0 && next > first {
		f.from, f.upto = first, next
	}
	return f
}

// decodeBinary parses the binary form b (meta.go's layout) for the committed offset off; f
// keeps b.
func decodeBinary(b []byte, off int64) (*finishedSet, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", errMeta, len(b))
	}
	if b[0] != metaVersion {
		return nil, fmt.Errorf("%w: unknown version %d", errMeta, b[0])
	}
	f := &finishedSet{kind: b[1], base: off + 1}
	switch b[1] {
	case metaRuns:
		f.body = b[2:]
		for rest := f.body; len(rest) > 0; { // validate once: has then trusts it
			for range 2 {
				v, n := binary.Uvarint(rest)
				if n <= 0 || v > 1<<62 {
					return nil, fmt.Errorf("%w: corrupt run", errMeta)
				}
				rest = rest[n:]
				if len(rest) == 0 {
					break
				}
			}
		}
		f.lo, f.hi = f.base, f.base
	case metaBits:
		skip, n := binary.Uvarint(b[2:])
		if n <= 0 || skip > 1<<62 {
			return nil, fmt.Errorf("%w: corrupt skip", errMeta)
		}
		f.base += int64(skip)
		f.body = b[2+n:]
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", errMeta, b[1])
	}
	return f, nil
}

// has reports whether off finished; offsets must be queried in increasing order. past reports
// that off is beyond the set's last offset: the set can be dropped.
func (f *finishedSet) has(off int64) (done, past bool) {
	if off >= f.from && off < f.upto {
		return true, false
	}
	if f.kind == metaBits {
		i := off - f.base
		if i >= int64(len(f.body))*8 {
			return false, true
		}
		return i >= 0 && f.body[i/8]&(1<<(i%8)) != 0, false
	}
	for off >= f.hi {
		if f.pos >= len(f.body) {
			return false, true
		}
		g, n := binary.Uvarint(f.body[f.pos:])
		f.pos += n
		r, n := binary.Uvarint(f.body[f.pos:])
		if n <= 0 { // a trailing gap without a run: nothing more finished
			f.pos = len(f.body)
			return false, true
		}
		f.pos += n
		f.lo = f.hi + int64(g)
		f.hi = f.lo + int64(r)
	}
	return off >= f.lo, false
}
