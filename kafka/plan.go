package kafka

import "github.com/sluicehq/sluice/pipeline"

// Memory is how a budget is split between the pipeline, the source's held-back messages and
// librdkafka, and what else the source's data can take. All values in bytes.
//
// The split, for a budget B and a largest message M (MaxMessageBytes):
//
//	InFlight            = B/2        events in flight, as pipeline.EventSize counts them (Go heap)
//	Held                = B/16       messages the source holds back: received, not yet emitted (Go heap)
//	FetchMaxBytes       = min(max(min(B/8, 4 MiB), M), 50 MiB)        fetch.max.bytes
//	Prefetch            = min(3B/16, 3 × FetchMaxBytes / 2)            queued.max.messages.kbytes = Prefetch/1024 (librdkafka)
//	PartitionFetchBytes = min(1 MiB, FetchMaxBytes)                    max.partition.fetch.bytes
//	ProducerQueue       = B/4        queue.buffering.max.kbytes = min(ProducerQueue, 6 × message.max.bytes)/1024 (librdkafka)
//
// InFlight + Held + Prefetch + ProducerQueue ≤ B: librdkafka's consumer side does not grow with
// the budget beyond what the consumer can use. One fetch response (FetchMaxBytes) per round trip
// to a broker is what the consumer can read at most, so FetchMaxBytes is the throughput's
// ceiling; bench sweep found that ceiling reached at 4 MiB (a 32 MiB budget) for 1 KiB and 40
// KiB records, and a slow pipeline keeps the whole prefetch (Prefetch + one response) resident,
// so more only costs memory. Prefetch is 1.5 responses: librdkafka postpones a partition's next
// fetch (fetch.queue.backoff.ms) whenever its queue is at Prefetch when a response arrives, so
// a prefetch of one response or less would stall a fast consumer. The pipeline's in-flight share
// is a cap too: the pipeline admits events up to an in-flight window that grows only when its
// stages are starved (pipeline.WithInitialWindow). Held bytes are counted as pipeline.EventSize
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

// fetchCeiling is the largest fetch.max.bytes Plan derives from a budget: bench sweep (40 KiB
// and 1 KiB records, Source → no-op sink, one CPU) stopped gaining throughput there (a 32 MiB
// budget), while a slow pipeline keeps the whole prefetch resident. A record larger than it
// still raises fetch.max.bytes to MaxMessageBytes.
const fetchCeiling = 4 << 20

// Plan splits budget by the formula of Memory, for the default MaxInFlightPerPartition and
// OrderKey (Source.Memory reports the source's own).
func Plan(budget, maxMessage int64) Memory {
	m := Memory{Budget: budget, InFlight: budget / 2, Held: budget / 16, ProducerQueue: budget / 4}
	m.HeldMax = m.Held + maxBurstBytes + maxMessage + pipeline.EventOverhead
	m.FetchMaxBytes = min(max(min(budget/8, fetchCeiling), maxMessage), 50<<20)
	m.Prefetch = min(3*budget/16, 3*m.FetchMaxBytes/2)
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
