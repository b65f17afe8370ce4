package kafka

import (
	"encoding/base64"
	"math/rand/v2"
	"testing"
)

// encodeFor runs commitPoint on a tracker that received offs and finished those in done,
// and returns the commit point and the base64 metadata.
func encodeFor(t *testing.T, offs []int64, done map[int64]bool, limit int) (int64, string, bool) {
	t.Helper()
	tr := newTracker()
	for _, o := range offs {
		tr.received(o, nil)
	}
	for _, o := range offs {
		if done[o] {
			tr.finished(o)
		}
	}
	off, meta, trunc := tr.commitPoint(nil, limit)
	return off, base64.RawStdEncoding.EncodeToString(meta), trunc
}

// TestCommitMetadataEncodingRoundTrip: random sets of finished offsets (with gaps in the
// received offsets) decode to exactly the finished offsets above the commit point, in the
// smaller of the two forms, within the cap.
func TestCommitMetadataEncodingRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 500 {
		var offs []int64
		o := int64(rng.IntN(1000))
		n := 1 + rng.IntN(3000)
		for range n {
			offs = append(offs, o)
			o += 1 + int64(rng.IntN(3)/2) // some gaps
		}
		done := map[int64]bool{}
		p := rng.Float64()
		for i, o := range offs {
			if i > 0 && rng.Float64() < p || i < rng.IntN(5) {
				done[o] = true
			}
		}
		const capBytes = 4096
		off, meta, trunc := encodeFor(t, offs, done, metaLimit(capBytes))
		if len(meta) > capBytes {
			t.Fatalf("iter %d: %d bytes, above the cap", iter, len(meta))
		}
		if trunc {
			t.Fatalf("iter %d: truncated within a range of %d offsets", iter, offs[len(offs)-1]-offs[0])
		}
		if off < 0 {
			continue
		}
		f, err := decodeMeta(meta, off)
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		for _, o := range offs {
			if o < off {
				continue
			}
			got := false
			if f != nil {
				got, _ = f.has(o)
			}
			if got != done[o] {
				t.Fatalf("iter %d: offset %d (commit point %d): decoded %v, want %v", iter, o, off, got, done[o])
			}
		}
	}
}

// TestCommitMetadataEncodingSize: the figures, and the smaller form wins.
func TestCommitMetadataEncodingSize(t *testing.T) {
	// 1,000 scattered: every other offset of 2,000 above an unfinished one.
	var offs []int64
	done := map[int64]bool{}
	for o := range int64(2001) {
		offs = append(offs, o)
		if o%2 == 1 {
			done[o] = true
		}
	}
	_, every2, _ := encodeFor(t, offs, done, metaLimit(4096))
	// 1,000 contiguous above the unfinished one: one run.
	done = map[int64]bool{}
	for o := int64(1); o <= 1000; o++ {
		done[o] = true
	}
	_, contig, _ := encodeFor(t, offs[:1001], done, metaLimit(4096))
	// 1,000 random of 4,000.
	rng := rand.New(rand.NewPCG(3, 4))
	done = map[int64]bool{}
	offs = offs[:0]
	for o := range int64(4001) {
		offs = append(offs, o)
	}
	for len(done) < 1000 {
		done[1+rng.Int64N(4000)] = true
	}
	_, random, _ := encodeFor(t, offs, done, metaLimit(4096))
	t.Logf("1,000 finished offsets: every other one %d bytes, contiguous %d bytes (%q), random in 4,000 %d bytes", len(every2), len(contig), contig, len(random))
	if len(every2) > 340 || len(contig) > 8 || len(random) > 700 {
		t.Fatalf("encodings larger than the bitset: %d, %d, %d", len(every2), len(contig), len(random))
	}
	// The documented example: C = 100, 102..104 and 110 finished.
	offs = offs[:0]
	for o := int64(100); o <= 110; o++ {
		offs = append(offs, o)
	}
	off, ex, _ := encodeFor(t, offs, map[int64]bool{102: true, 103: true, 104: true, 110: true, 101: false}, metaLimit(4096))
	if off != 100 || ex != "AQEADgI" {
		t.Fatalf("example: %d %q", off, ex)
	}
}

// TestCommitMetadataEncodingTruncated: a range beyond the cap (the source pauses before
// that, unless offsets jump) keeps the encoding within the cap, dropping the newest.
func TestCommitMetadataEncodingTruncated(t *testing.T) {
	var offs []int64
	done := map[int64]bool{}
	for o := range int64(5000) {
		offs = append(offs, o)
		done[o] = o%2 == 1
	}
	off, meta, trunc := encodeFor(t, offs, done, metaLimit(64))
	if !trunc || len(meta) > 64 {
		t.Fatalf("truncated %v, %d bytes (cap 64)", trunc, len(meta))
	}
	f, err := decodeMeta(meta, off)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := f.has(1); !got {
		t.Fatal("offset 1 lost")
	}
	if r := metaRange(64); r <= 0 || r > 8*48 {
		t.Fatalf("metaRange(64) = %d", r)
	}
}

// TestCommitMetadataDecodeRejects: other versions, other kinds and damaged values are errors,
// never a panic; an empty value is nothing.
func TestCommitMetadataDecodeRejects(t *testing.T) {
	if f, err := decodeMeta("", 5); f != nil || err != nil {
		t.Fatalf("empty: %v %v", f, err)
	}
	for _, bad := range []string{"!!!", "AA", "AgEB", "AQcB", "AQD_____________", "AQE", "not base64 at all", "AQCAgICAgICAgICAAQ"} {
		f, err := decodeMeta(bad, 5)
		if err == nil && f != nil {
			// A value that parses must still be safe to walk.
			for o := int64(5); o < 200; o++ {
				f.has(o)
			}
			continue
		}
		if err == nil {
			t.Fatalf("%q: no error and no set", bad)
		}
	}
}

// TestCommitMetadataKeptSet: what a member keeps for a partition it lets go (keptSet: the
// contiguous finished prefix from its first received offset, and the finished offsets above
// the commit point) answers exactly the offsets the tracker finished, and none below the first
// offset it received.
func TestCommitMetadataKeptSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range 500 {
		tr := newTracker()
		var offs []int64
		o := int64(rng.IntN(1000))
		for range 1 + rng.IntN(3000) {
			offs = append(offs, o)
			tr.received(o, nil)
			o += 1 + int64(rng.IntN(3)/2)
		}
		done := map[int64]bool{}
		prefix := rng.IntN(len(offs) + 1) // finished in order first, then at random
		p := rng.Float64()
		for i, o := range offs {
			if i < prefix || rng.Float64() < p {
				done[o] = true
				tr.finished(o)
			}
		}
		off, meta, trunc := tr.commitPoint(nil, metaLimit(4096))
		if trunc || off < 0 {
			continue // nothing finished, or (not expected here) left out of the cap
		}
		f := keptSet(tr.first, tr.next, off, meta)
		if f == nil {
			t.Fatalf("iter %d: no set", iter)
		}
		for q := offs[0] - 5; q < offs[0]; q++ {
			if got, _ := f.has(q); got {
				t.Fatalf("iter %d: offset %d below the first received (%d) reported finished", iter, q, offs[0])
			}
		}
		for _, o := range offs {
			if got, _ := f.has(o); got != done[o] {
				t.Fatalf("iter %d: offset %d (first %d, next %d, commit point %d): kept %v, want %v", iter, o, tr.first, tr.next, off, got, done[o])
			}
		}
	}
}
