// Package kafka connects sluice pipelines to Kafka through confluent-kafka-go (librdkafka):
// a consumer-group Source that pauses partitions instead of buffering when the pipeline's
// budget or a partition's in-flight limit is exhausted, and commits only the contiguous
// finished offsets; a Producer whose Sink completes an event only after its delivery report;
// and a dead-letter handler.
//
// The package works against any Kafka cluster; tests, examples and benchmarks use the embedded
// broker of kafka/kafkatest, which this package does not import.
package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/pipeline"
)

// Ordering says which events of a partition may be in flight at the same time.
type Ordering int

const (
	// OrderKey never has two events with the same key in flight; events with different keys
	// of one partition are processed in parallel (parallel-consumer's KEY mode). Events with
	// no key are unordered. The default.
	OrderKey Ordering = iota
	// OrderPartition has at most one event per partition in flight: strict partition order.
	OrderPartition
	// OrderNone lets any events be in flight together (bounded by the budget and the
	// per-partition limit). Offsets are still committed only when contiguous.
	OrderNone
)

func (o Ordering) String() string {
	switch o {
	case OrderKey:
		return "key"
	case OrderPartition:
		return "partition"
	case OrderNone:
		return "none"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

// Defaults of Config.
const (
	DefaultBudget                  = 64 << 20
	DefaultMaxMessageBytes         = 1 << 20
	DefaultMaxInFlightPerPartition = 4096
	DefaultCommitInterval          = 5 * time.Second
	DefaultTxnCommitInterval       = 100 * time.Millisecond // CommitInterval's default with ExactlyOnce
	DefaultRevokeTimeout           = 10 * time.Second
	DefaultStatsInterval           = 5 * time.Second
	DefaultCommitMetadataMaxBytes  = 4096 // Kafka's offset.metadata.max.bytes default
	minCommitMetadataMaxBytes      = 64
)

// pollInterval is how long the polling goroutine waits in Poll when nothing is held or
// collected: rebalances and stats are served within it, and Run's context is checked after it.
const pollInterval = 100 * time.Millisecond

// ErrConfig is wrapped by every configuration error of NewSource, NewProducer and
// Source.NewProducer. It wraps pipeline.ErrInvalid, so errors.Is(err, pipeline.ErrInvalid)
// holds for every construction error of sluice, Kafka's included.
var ErrConfig = fmt.Errorf("invalid kafka configuration: %w", pipeline.ErrInvalid)

// Config configures a Source. Zero values take the documented defaults.
type Config struct {
	// Brokers is the bootstrap list (librdkafka bootstrap.servers). Required.
	Brokers string
	// GroupID is the consumer group (group.id). Required.
	GroupID string
	// Topics are subscribed to. Required.
	Topics []string
	// Security is SASL authentication and TLS (security.protocol, sasl.*, ssl.*). Default
	// none: plaintext, no authentication. Checked at NewSource (each error names the field; a
	// certificate file that cannot be read is one); librdkafka checks the files' contents when
	// the consumer is created. At run time a failed authentication (wrong password, unknown
	// user), a TLS handshake that fails 3 times in a row (an untrusted or expired
	// certificate), or a missing authorization (no ACL to describe or read a topic, or to use
	// the group) stops Run with an error wrapping ErrAccessDenied and librdkafka's error,
	// instead of retrying for ever; nothing is committed that was not processed. Printing or
	// logging a Config never shows the password (see Security).
	Security Security
	// Budget is the whole memory budget for data, in bytes: the pipeline's in-flight budget,
	// the messages the source holds back and librdkafka's prefetch (and, for a Producer, its
	// queue). Default 64 MiB. It is a cap, not a working set: librdkafka's prefetch stops at
	// what the consumer can use (4 MiB fetch responses) and the pipeline admits events up to a
	// window that grows only when its stages are starved. See Memory for the split and the
	// whole formula.
	Budget int64
	// MaxMessageBytes is the largest record expected. Default 1 MiB. Budget must be at least
	// 4 × MaxMessageBytes (so in flight, at Budget/2, holds two of them).
	MaxMessageBytes int64
	// Ordering of events in flight per partition. Default OrderKey.
	Ordering Ordering
	// MaxInFlightPerPartition bounds each partition's span: the records from its oldest
	// unfinished offset to the newest one read (in flight, finished above an unfinished one,
	// and held back), which is what a restart reads again and what the offset tracker keeps.
	// It therefore also bounds the partition's events in flight. At the bound the partition
	// is paused, whatever one stuck event does (a blocked call, a long retry, a pending
	// delivery); it resumes once its span is down to half. Default 4096.
	MaxInFlightPerPartition int
	// CommitInterval is how often finished offsets are committed. Default 5s (with
	// ExactlyOnce: 100ms, each commit closing a transaction at a barrier; see txn.go). Offsets
	// are also committed on revoke and on close.
	CommitInterval time.Duration
	// ExactlyOnce turns on exactly-once processing (see txn.go): the outputs of the source's
	// events, written by its one transactional producer (Source.NewProducer), and the
	// offsets of those events commit in one Kafka transaction, or neither does. It needs
	// TransactionalID, isolation.level read_committed (the default; another value is an
	// error) and a pipeline whose sink is that producer's Sink. Default false: at-least-once.
	ExactlyOnce bool
	// TransactionalID is the transactional.id of the source's transactional producer: one per
	// process instance, stable across its restarts (a restarted instance fences its
	// predecessor's producer, which then stops with ErrFenced). Required with ExactlyOnce,
	// an error without it. At most 249 characters.
	TransactionalID string
	// RevokeTimeout bounds how long a revoke waits for the revoked partitions' in-flight
	// events before committing what finished and letting go. Default 10s. Events still in
	// flight then are never committed (the next owner processes them again) and keep their
	// ordering slots on this member until they finish: if the partition comes back, their
	// keys (OrderKey) or the partition (OrderPartition) stay busy until then.
	RevokeTimeout time.Duration
	// CommitMetadataMaxBytes caps the metadata each commit carries: the offsets that finished
	// above the committed one (out of order), so that the partition's next owner, after a
	// rebalance or a restart, completes them without processing them again. Set it to the
	// brokers' offset.metadata.max.bytes if that is lower than Kafka's default (a broker refuses
	// a larger value; the embedded broker does not check). The encoding's size grows with the
	// offset range from a partition's oldest unfinished offset to its newest received one: the
	// partition is paused while that range could need more (about 6 × CommitMetadataMaxBytes
	// offsets; 24,480 at the default, above the default MaxInFlightPerPartition) and resumes
	// once the commit catches up (the range is down to half). The same bounded encoding is
	// what a member keeps for a partition it lets go without a commit confirming everything it
	// finished (a lost assignment, a failed revoke commit), to skip it if the partition comes
	// back. Default (0) 4096, Kafka's default limit; at least 64; negative turns it off
	// (finished work above the commit is then processed again after a handover). If the cap
	// is above the brokers' limit, a partition whose metadata grows past that limit has its
	// commits refused (OFFSET_METADATA_TOO_LARGE: logged, counted in CommitErrors, retried at
	// the next commit) until the metadata is small again, and its next owner processes again
	// everything since its last accepted commit: set the cap to the brokers' limit.
	CommitMetadataMaxBytes int
	// GroupInstanceID makes the source a static member of the group (librdkafka
	// group.instance.id; Kafka's KIP-345): the group knows the member by this id across
	// restarts, so a member that restarts keeps its partitions and nothing is rebalanced, on
	// one condition: it must come back within the session timeout (session.timeout.ms, set it
	// in Overrides; librdkafka's default 45 s), after which the group gives its partitions
	// away. Give each process its own stable id (a Kubernetes pod name, from a flag or an
	// environment variable); of two live members with one id, the coordinator fences the older
	// one, whose Run stops with an error naming the id (see Source.Close). A static member
	// does not leave the group on Close (that would give its partitions away and rebalance);
	// its close is bounded by Close's context instead (see Source.Close). Empty (the default):
	// a dynamic member, which leaves the group on Close. At most 249 characters of
	// [a-zA-Z0-9._-].
	GroupInstanceID string
	// Eager selects the eager rebalance protocol (range assignor) instead of the default
	// cooperative-sticky one.
	Eager bool
	// StatsInterval is librdkafka's statistics.interval.ms (connections, bytes, lag).
	// Default 5s; negative disables.
	StatsInterval time.Duration
	// Overrides sets any other librdkafka property, or overrides a derived one
	// (queued.max.messages.kbytes, fetch.max.bytes, ...): the effective values are in
	// Source.Memory. enable.auto.commit and enable.auto.offset.store cannot be true: sluice
	// stores and commits offsets itself, only for finished work.
	Overrides map[string]any
	// Logger receives the source's logs and librdkafka's errors, and librdkafka's log lines
	// when ForwardLogs is set. Default slog.Default().
	Logger *slog.Logger
	// ForwardLogs sends librdkafka's log lines to Logger (confluent-kafka-go's log channel).
	// Default false: librdkafka writes them to stderr itself; its errors reach Logger either
	// way. Failure mode when set: confluent-kafka-go then runs a goroutine that waits inside
	// librdkafka for up to 100 ms at a time, holding a Go P; with GOMAXPROCS=1 (a one-CPU
	// container) the pipeline stalls until the runtime hands that P over, up to ~10 ms every
	// 100 ms: measured here, the consumer idled 5-8 % of the time on one CPU.
	ForwardLogs bool
}

func (c *Config) setDefaults() {
	if c.Budget == 0 {
		c.Budget = DefaultBudget
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxInFlightPerPartition == 0 {
		c.MaxInFlightPerPartition = DefaultMaxInFlightPerPartition
	}
	if c.CommitInterval == 0 && c.ExactlyOnce {
		c.CommitInterval = DefaultTxnCommitInterval
	} else if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.RevokeTimeout == 0 {
		c.RevokeTimeout = DefaultRevokeTimeout
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	if c.CommitMetadataMaxBytes == 0 {
		c.CommitMetadataMaxBytes = DefaultCommitMetadataMaxBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func configErr(key, format string, args ...any) error {
	return fmt.Errorf("kafka: %s: %s: %w", key, fmt.Sprintf(format, args...), ErrConfig)
}

// checkClient holds the checks the Source and the Producer share: brokers, and a budget that
// holds four of the largest message (in flight gets half of it).
func checkClient(brokers string, budget, maxMessage int64) []error {
	var errs []error
	if strings.TrimSpace(brokers) == "" {
		errs = append(errs, configErr("Brokers (bootstrap.servers)", "is required"))
	}
	if maxMessage < 1 {
		errs = append(errs, configErr("MaxMessageBytes", "must be positive, got %d", maxMessage))
	}
	if budget < 4*maxMessage {
		errs = append(errs, configErr("Budget", "must be at least 4 × MaxMessageBytes (%d), got %d", 4*maxMessage, budget))
	}
	return errs
}

func (c *Config) validate() error {
	errs := checkClient(c.Brokers, c.Budget, c.MaxMessageBytes)
	if c.GroupID == "" {
		errs = append(errs, configErr("GroupID (group.id)", "is required"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, configErr("Topics", "at least one topic is required"))
	}
	if c.Ordering < OrderKey || c.Ordering > OrderNone {
		errs = append(errs, configErr("Ordering", "unknown value %d", int(c.Ordering)))
	}
	if c.MaxInFlightPerPartition < 1 {
		errs = append(errs, configErr("MaxInFlightPerPartition", "must be at least 1, got %d", c.MaxInFlightPerPartition))
	}
	if c.CommitInterval < 0 || c.RevokeTimeout < 0 {
		errs = append(errs, configErr("CommitInterval/RevokeTimeout", "must not be negative"))
	}
	if id := c.GroupInstanceID; id != "" && (len(id) > 249 || strings.TrimLeft(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "") {
		errs = append(errs, configErr("GroupInstanceID (group.instance.id)", "must be at most 249 characters of [a-zA-Z0-9._-], got %q", id))
	}
	if c.CommitMetadataMaxBytes > 0 && c.CommitMetadataMaxBytes < minCommitMetadataMaxBytes {
		errs = append(errs, configErr("CommitMetadataMaxBytes", "must be at least %d (or negative: off), got %d", minCommitMetadataMaxBytes, c.CommitMetadataMaxBytes))
	}
	errs = append(errs, checkOverrides(c.Overrides)...)
	errs = append(errs, c.checkTxn()...)
	errs = append(errs, c.Security.validate("Security", c.Overrides)...)
	return errors.Join(errs...)
}

// checkOverrides rejects settings that would break at-least-once delivery.
func checkOverrides(o map[string]any) []error {
	var errs []error
	for _, key := range []string{"enable.auto.offset.store", "enable.auto.commit", "auto.commit.enable"} {
		if v, ok := o[key]; ok && isTrue(v) {
			errs = append(errs, configErr(key, "must not be true: sluice stores and commits offsets itself, only for finished events"))
		}
	}
	for _, key := range []string{"bootstrap.servers", "metadata.broker.list", "group.id", "group.instance.id"} {
		if _, ok := o[key]; ok {
			errs = append(errs, configErr(key, "set it with the Config field, not Overrides"))
		}
	}
	return errs
}

// consumerConfig builds the librdkafka configuration and reports the effective memory split
// (after overrides).
func (c *Config) consumerConfig(logs chan ckafka.LogEvent) (ckafka.ConfigMap, Memory, error) {
	mem := Plan(c.Budget, c.MaxMessageBytes)
	mem.PerPartition = perPartition(c.MaxInFlightPerPartition, c.Ordering)
	cm := ckafka.ConfigMap{
		"bootstrap.servers":          c.Brokers,
		"group.id":                   c.GroupID,
		"enable.auto.commit":         false,
		"enable.auto.offset.store":   false,
		"auto.offset.reset":          "earliest",
		"queued.max.messages.kbytes": int(max(mem.Prefetch/1024, 1)),
		"fetch.max.bytes":            int(mem.FetchMaxBytes),
		"max.partition.fetch.bytes":  int(mem.PartitionFetchBytes),
		"receive.message.max.bytes":  int(mem.FetchMaxBytes + 1<<20),
		// Prefetch is bounded by queued.max.messages.kbytes; when a partition's fetch queue
		// reaches it, librdkafka postpones that partition's next fetch by this much. Its
		// default (1000 ms) stalls a consumer whose prefetch is small but drained quickly:
		// measured against the embedded broker, 1 KiB records at a 64 MiB budget went from
		// 23 k to 535 k msgs/s with 10 ms.
		"fetch.queue.backoff.ms": 10,
		"log_level":              5,
	}
	if c.GroupInstanceID != "" {
		cm["group.instance.id"] = c.GroupInstanceID
	}
	if c.ExactlyOnce {
		cm["isolation.level"] = "read_committed" // librdkafka's default, stated: checkTxn rejects another
	}
	if logs != nil {
		cm["go.logs.channel.enable"], cm["go.logs.channel"] = true, logs
	}
	if mem.FetchMaxBytes < 1000000 {
		// librdkafka requires fetch.max.bytes >= message.max.bytes (default 1000000): a
		// budget below 8 MiB would otherwise be rejected by NewConsumer.
		cm["message.max.bytes"] = int(max(mem.FetchMaxBytes, 1000))
	}
	if c.Eager {
		cm["partition.assignment.strategy"] = "range"
	} else {
		cm["partition.assignment.strategy"] = "cooperative-sticky"
	}
	if c.StatsInterval > 0 {
		cm["statistics.interval.ms"] = int(c.StatsInterval / time.Millisecond)
	}
	c.Security.apply(cm)
	for k, v := range c.Overrides {
		if err := cm.SetKey(k, v); err != nil {
			return nil, mem, configErr(k, "%v", err)
		}
	}
	if _, ok := c.Overrides["group.protocol"]; ok && fmt.Sprint(c.Overrides["group.protocol"]) == "consumer" {
		delete(cm, "partition.assignment.strategy") // KIP-848: the broker assigns
	}
	// Report what librdkafka will use, overrides included.
	if v, ok := intKey(cm, "queued.max.messages.kbytes"); ok {
		mem.Prefetch = v * 1024
	}
	if v, ok := intKey(cm, "fetch.max.bytes"); ok {
		mem.FetchMaxBytes = v
	}
	if v, ok := intKey(cm, "max.partition.fetch.bytes"); ok {
		mem.PartitionFetchBytes = v
	}
	return cm, mem, nil
}

func intKey(cm ckafka.ConfigMap, key string) (int64, bool) {
	var n int64
	_, err := fmt.Sscan(fmt.Sprint(cm[key]), &n)
	return n, err == nil
}

// isTrue reports whether librdkafka parses v as a true boolean ("true", "t", "1", any case).
func isTrue(v any) bool {
	switch strings.ToLower(strings.TrimSpace(fmt.Sprint(v))) {
	case "true", "t", "1":
		return true
	}
	return false
}
