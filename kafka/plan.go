package kafka

import "github.com/sluicehq/sluice/pipeline"

// Memory is how a budget is split between the pipeline, the source's held-back messages and
// librdkafka, and what else the source's data can take. All values in bytes.
//
// The split, for a budget B and a largest message M (MaxMessageBytes):
//
//	InFlight            = B/2        events in flight, as pipeline.EventSize counts them (Go heap)
//	Held                = B/16       messages the source holds back: received, not yet emitted (Go heap)
//	Prefetch            = 3B/16      queued.max.messages.kbytes = Prefetch/1024 (librdkafka)
//	FetchMaxBytes       = clamp(B/8, M, 50 MiB)                        fetch.max.bytes
//	PartitionFetchBytes = min(1 MiB, FetchMaxBytes)                    max.partition.fetch.bytes
//	ProducerQueue       = B/4        queue.buffering.max.kbytes = ProducerQueue/1024 (librdkafka)
//
// InFlight + Held + Prefetch + ProducerQueue = B. Held bytes are counted as pipeline.EventSize
// counts an event (key, value, headers, overhead), whatever size function the pipeline uses.
// Once they reach Held the source pauses every partition, and resumes none until they are below
// Held again, so the held-back messages and the polled burst being handed over never pass
//
//	HeldMax      = Held + 256 KiB + M + pipeline.EventOverhead        (one burst and one message over Held)
//
// Per assigned partition the source keeps the offset tracker and, under OrderKey, the table of
// keys in flight, each at most MaxInFlightPerPartition entries (the span from the oldest
// unfinished offset to the newest received one):
//
//	PerPartition = MaxInFlightPerPartition × (36 B tracker + 64 B key table under OrderKey)
//
// With commit metadata on, a partition let go without a commit confirming all it finished also
// leaves at most 3/4 × CommitMetadataMaxBytes + 100 B (Source.keep) until it is assigned here
// again: at most one such set per partition of the topics.
//
// The live Go heap (after a GC) the source's data takes is then at most GoHeap(partitions):
// (InFlight + HeldMax) × 5/4 (the allocator's size classes: a buffer just over 32 KiB takes the
// next 8 KiB page) + partitions × PerPartition; the process adds what it held before Run.
// librdkafka's consumer side is bounded by Prefetch + FetchMaxBytes × brokers (it may exceed
// queued.max.messages.kbytes by one fetch response per broker), the producer's by
// ProducerQueue. The process's RSS is then about GoHeap × (1 + GOGC/100, or less under
// GOMEMLIMIT) + Prefetch + FetchMaxBytes × brokers + ProducerQueue + a fixed 30–60 MiB
// (runtime, librdkafka threads, binary). Records above M, and memory a stage allocates for its
// own outputs, are outside the formula.
type Memory struct {
	Budget              int64
	InFlight            int64
	Held                int64
	HeldMax             int64
	Prefetch            int64
	FetchMaxBytes       int64
	PartitionFetchBytes int64
	ProducerQueue       int64
	PerPartition        int64
}

// Per-partition bookkeeping on the Go heap, per entry (see Memory.PerPartition): a tracker entry
// is an 8-byte offset and a 1-byte flag, up to four times that for its slices' growth and lazy
// compaction; under OrderKey the tracker also keeps each entry's gate key (a 24-byte slice
// header, times four likewise) and the gate's key table a string header and a count in a Go map
// at its lowest load after doubling (the key's bytes are the event's, counted in flight).
const (
	trackerEntryBytes = 36
	trackerKeyBytes   = 96
	keySlotBytes      = 64
)

// GoHeap returns the formula's bound on the live Go heap (after a GC) the source's data takes
// with partitions assigned partitions: (InFlight + HeldMax) × 5/4 + partitions × PerPartition.
// The process's own heap (what it holds before Run) comes on top.
func (m Memory) GoHeap(partitions int) int64 {
	return (m.InFlight+m.HeldMax)*5/4 + int64(partitions)*m.PerPartition
}

// Plan splits budget by the formula of Memory, for the default MaxInFlightPerPartition and
// OrderKey (Source.Memory reports the source's own).
func Plan(budget, maxMessage int64) Memory {
	m := Memory{Budget: budget, InFlight: budget / 2, Held: budget / 16, ProducerQueue: budget / 4}
	m.Prefetch = budget/4 - m.Held
	m.HeldMax = m.Held + maxBurstBytes + maxMessage + pipeline.EventOverhead
	m.FetchMaxBytes = min(max(budget/8, maxMessage), 50<<20)
	m.PartitionFetchBytes = min(1<<20, m.FetchMaxBytes)
	m.PerPartition = perPartition(DefaultMaxInFlightPerPartition, OrderKey)
	return m
}

func perPartition(maxInFlight int, o Ordering) int64 {
	per := int64(trackerEntryBytes)
	if o == OrderKey {
		per += trackerKeyBytes + keySlotBytes
	}
	return int64(maxInFlight) * per
}

// Memory returns the effective split of the budget (overrides included).
func (s *Source) Memory() Memory { return s.mem }

// PipelineOptions returns the pipeline options that match the source: the in-flight budget
// (Memory().InFlight) and the largest event. pipeline.New applies them itself, before the
// options it is given.
func (s *Source) PipelineOptions() []pipeline.Option {
	return []pipeline.Option{pipeline.WithBudget(s.mem.InFlight), pipeline.WithMaxEventBytes(s.cfg.MaxMessageBytes)}
}
