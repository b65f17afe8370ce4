package kafka

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

type sourceCounters struct {
	assigned, paused                                          atomic.Int64
	pauses, commits, commitErrors, rebalances, revokeTimeouts atomic.Uint64
	late, stale, unfinished, errors, logs, bursts, burstMsgs  atomic.Uint64
	rewinds, assigns, revokes, revokeNanos                    atomic.Uint64
	skipped, metaTruncated, metaIgnored                       atomic.Uint64
	txnCommits, txnAborts, txnBarriers                        atomic.Uint64
	statsJSON                                                 atomic.Pointer[string]
	doneSeq                                                   atomic.Uint64 // completions, for retrying held messages
}

// SourceStats is a snapshot of a Source's counters and of librdkafka's latest statistics.
type SourceStats struct {
	Assigned        int64            // partitions assigned now
	Paused          int64            // partitions paused now (backpressure)
	Pauses          uint64           // pauses since start
	Commits         uint64           // successful commit requests
	CommitErrors    uint64           // failed commits (retried at the next commit)
	Rebalances      uint64           // assign and revoke callbacks (Assigns + Revokes)
	Assigns         uint64           // assign callbacks (each assigns one or more partitions)
	Revokes         uint64           // revoke callbacks, lost assignments included
	RevokeTimeouts  uint64           // revokes that let go with events in flight
	RevokeTime      time.Duration    // time spent in revokes (waiting for in-flight events, committing), all together; with Revokes, the mean
	LateCompletions uint64           // completions for partitions let go, or of an old offset sequence (never committed)
	Stale           uint64           // messages dropped because their partition was being revoked
	Unfinished      uint64           // events completed not ok (not committed)
	Rewinds         uint64           // offsets that moved backwards on an assignment (log truncated, topic re-created)
	Errors          uint64           // librdkafka errors
	Logs            uint64           // librdkafka log lines forwarded to slog
	Bursts          uint64           // bursts of polled messages handed over (in one piece if the first stage takes them whole)
	BurstMessages   uint64           // messages in those bursts (BurstMessages/Bursts: the mean burst)
	SkippedFinished uint64           // messages not emitted: a previous owner (commit metadata) or this member on an earlier assignment finished them
	MetaIgnored     uint64           // commit metadata values ignored on assignment (unknown version, corrupt, unreadable)
	MetaTruncated   uint64           // commits whose metadata left finished offsets out to fit CommitMetadataMaxBytes
	TxnCommits      uint64           // exactly once: transactions committed (each also counts in Commits)
	TxnAborts       uint64           // exactly once: transactions aborted (their inputs consumed again)
	Connections     int              // broker connections up (librdkafka statistics)
	RxBytes         int64            // bytes received from brokers
	TxBytes         int64            // bytes sent to brokers
	Lag             map[string]int64 // consumer lag per "topic/partition" (librdkafka statistics)
	Raw             string           // the latest librdkafka statistics JSON

	// Partitions are the partitions assigned now, ordered by topic and partition, with
	// their pause state and lag; for per-partition metrics without parsing Lag's keys.
	Partitions []PartitionStats
}

// PartitionStats is one assigned partition in SourceStats.Partitions.
type PartitionStats struct {
	Topic     string
	Partition int32
	// Paused: the source paused the partition (backpressure, held messages, or its
	// in-flight span at MaxInFlightPerPartition); librdkafka fetches none of it meanwhile.
	Paused bool
	// Lag is the consumer lag from librdkafka's latest statistics: the high watermark last
	// fetched (not refreshed while the partition is paused) minus the committed offset; -1
	// when unknown (statistics off with a negative Config.StatsInterval, none yet, or
	// nothing committed on the partition yet).
	Lag int64
}

// librdkafka statistics, the fields sluice reads.
type rdStats struct {
	RxBytes int64 `json:"rx_bytes"`
	TxBytes int64 `json:"tx_bytes"`
	Brokers map[string]struct {
		State  string `json:"state"`
		NodeID int    `json:"nodeid"`
	} `json:"brokers"`
	Topics map[string]struct {
		Partitions map[string]struct {
			Partition   int32 `json:"partition"`
			ConsumerLag int64 `json:"consumer_lag"`
		} `json:"partitions"`
	} `json:"topics"`
}

// parseStats fills st from librdkafka's statistics and returns the lag per partition.
func parseStats(raw string, st *SourceStats) map[tpKey]int64 {
	var r rdStats
	if json.Unmarshal([]byte(raw), &r) != nil {
		return nil
	}
	st.RxBytes, st.TxBytes, st.Raw = r.RxBytes, r.TxBytes, raw
	for _, b := range r.Brokers {
		if b.State == "UP" {
			st.Connections++
		}
	}
	st.Lag = map[string]int64{}
	lag := map[tpKey]int64{}
	for topic, t := range r.Topics {
		for _, p := range t.Partitions {
			if p.Partition >= 0 && p.ConsumerLag >= 0 {
				st.Lag[topic+"/"+strconv.Itoa(int(p.Partition))] = p.ConsumerLag
				lag[tpKey{topic, p.Partition}] = p.ConsumerLag
			}
		}
	}
	return lag
}

// Stats returns a snapshot. Safe to call concurrently with Run.
func (s *Source) Stats() SourceStats {
	st := SourceStats{
		Assigned: s.st.assigned.Load(), Paused: s.st.paused.Load(), Pauses: s.st.pauses.Load(),
		Commits: s.st.commits.Load(), CommitErrors: s.st.commitErrors.Load(),
		Rebalances: s.st.rebalances.Load(), Assigns: s.st.assigns.Load(), Revokes: s.st.revokes.Load(), RevokeTime: time.Duration(s.st.revokeNanos.Load()),
		RevokeTimeouts:  s.st.revokeTimeouts.Load(),
		LateCompletions: s.st.late.Load(), Stale: s.st.stale.Load(), Unfinished: s.st.unfinished.Load(),
		Rewinds: s.st.rewinds.Load(),
		Errors:  s.st.errors.Load(), Logs: s.st.logs.Load(),
		Bursts: s.st.bursts.Load(), BurstMessages: s.st.burstMsgs.Load(),
		SkippedFinished: s.st.skipped.Load(), MetaIgnored: s.st.metaIgnored.Load(), MetaTruncated: s.st.metaTruncated.Load(),
		TxnCommits: s.st.txnCommits.Load(), TxnAborts: s.st.txnAborts.Load(),
	}
	var lag map[tpKey]int64
	if raw := s.st.statsJSON.Load(); raw != nil {
		lag = parseStats(*raw, &st)
	}
	s.mu.Lock() // parts changes under mu; pausedNow is atomic
	st.Partitions = make([]PartitionStats, 0, len(s.parts))
	for k, ps := range s.parts {
		l, ok := lag[k]
		if !ok {
			l = -1
		}
		st.Partitions = append(st.Partitions, PartitionStats{Topic: k.topic, Partition: k.partition, Paused: ps.pausedNow.Load(), Lag: l})
	}
	s.mu.Unlock()
	slices.SortFunc(st.Partitions, func(a, b PartitionStats) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return st
}
