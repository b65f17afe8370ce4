package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// DefaultFlushTimeout bounds the producer's flush at close.
const DefaultFlushTimeout = 10 * time.Second

// eventsChannelSize is the capacity of the producer's Events() channel (delivery reports and
// errors): 64 KiB of Go heap instead of confluent-kafka-go's 16 MiB. When it is full,
// confluent-kafka-go's poller waits for the report reader; the reports wait in librdkafka,
// whose queue the budget bounds.
const eventsChannelSize = 4096

// ProducerConfig configures a Producer. Zero values take the documented defaults; for a
// producer made by Source.NewProducer, Brokers, Security, Budget, MaxMessageBytes and Logger
// default to the source's instead.
type ProducerConfig struct {
	// Brokers is the bootstrap list (bootstrap.servers). Required (Source.NewProducer: the
	// source's).
	Brokers string
	// Topic is where records that name no topic go. Optional.
	Topic string
	// Security is SASL authentication and TLS, as Config.Security. Default none
	// (Source.NewProducer: the source's, and setting another one is an error). At run time a
	// failed authentication stops the producer's records: a produce fails at once and queued
	// records fail instead of waiting for message.timeout.ms; a missing authorization (no ACL
	// to write the topic) fails the record's delivery. Either failure wraps ErrAccessDenied
	// and stage.ErrNotDelivered and stops the pipeline whatever its error policy (a dead-letter
	// handler does not take it: every record would follow); its input is not committed.
	Security Security
	// Budget is the same whole budget as the Source's; the producer queue gets its share
	// (queue.buffering.max.kbytes = Plan(Budget).ProducerQueue/1024 — never librdkafka's 1 GiB
	// default), capped at what keeps one broker busy: 6 × message.max.bytes (five requests
	// awaiting their response and one being filled; 6.4 MiB for the default MaxMessageBytes).
	// An output whose partitions lead on several brokers that are each slower than the input can
	// use more: set queue.buffering.max.kbytes in Overrides. Default 64 MiB (Source.NewProducer:
	// the source's, and setting another one is an error).
	Budget int64
	// MaxMessageBytes is the largest record (message.max.bytes is set above it). Default 1 MiB
	// (Source.NewProducer: the source's, and setting another one is an error).
	MaxMessageBytes int64
	// FlushTimeout bounds the flush at Close; what is not delivered by then is purged and its
	// events are not committed. Default 10s.
	FlushTimeout time.Duration
	// Overrides sets other librdkafka properties. acks must stay "all" and enable.idempotence
	// true.
	Overrides map[string]any
	// Logger receives delivery errors, and librdkafka's log lines when ForwardLogs is set.
	// Default slog.Default() (Source.NewProducer: the source's Logger).
	Logger *slog.Logger
	// ForwardLogs sends librdkafka's log lines to Logger; default false (librdkafka writes
	// them to stderr). When set, one more goroutine waits inside librdkafka for up to 100 ms at
	// a time holding a Go P: see Config.ForwardLogs for what that costs on one CPU.
	ForwardLogs bool
}

// maxProduceRequests is librdkafka's max.in.flight.requests.per.connection for an idempotent
// producer (its default and its upper limit there): produce requests awaiting their response.
const maxProduceRequests = 5

// producerQueue is the producer's queue (queue.buffering.max.kbytes): the plan's share, but no
// more than the broker can be kept busy with, maxProduceRequests requests of at most
// messageMax bytes awaiting their response plus one being filled. librdkafka's queue counts a
// record until its delivery report, in flight included; a larger queue only makes records
// wait longer for a broker that cannot keep up, each one's input event in flight with it (a
// sink's event completes on delivery): in the seed scenario with a Kafka downstream (40 KiB
// records, an output taking 500/s) the plan's 16 MiB stayed full the whole run, and 6 MiB
// copied as much with 60 MiB less RSS.
func producerQueue(mem Memory, messageMax int64) int64 {
	return min(mem.ProducerQueue, (maxProduceRequests+1)*messageMax)
}

// NewProducer validates cfg and starts a standalone producer (its own budget and largest
// message; Source.NewProducer makes one that shares the source's). A configuration error wraps
// ErrConfig and names the key. It connects in the background. The caller owns the producer:
// close it (Close) once nothing produces through it any more, after the pipeline's Run for a
// pipeline's sink or dead-letter handler.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if _, ok := cfg.Overrides["transactional.id"]; ok {
		return nil, configErr("transactional.id", "a transactional producer is made by Source.NewProducer of a source with ExactlyOnce (Config.TransactionalID), bound to that source")
	}
	return newProducer(cfg, nil)
}

// newProducer is NewProducer, and for a transactional producer (tx not nil) its source's
// NewProducer.
func newProducer(cfg ProducerConfig, tx *txnSide) (*Producer, error) {
	if cfg.Budget == 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.FlushTimeout == 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	errs := checkClient(cfg.Brokers, cfg.Budget, cfg.MaxMessageBytes)
	for _, key := range []string{"acks", "request.required.acks"} { // request.required.acks is librdkafka's alias
		if v, ok := cfg.Overrides[key]; ok && strings.ToLower(fmt.Sprint(v)) != "all" && fmt.Sprint(v) != "-1" {
			errs = append(errs, configErr(key, "must be all (at-least-once), got %v", v))
		}
	}
	if v, ok := cfg.Overrides["enable.idempotence"]; ok && !isTrue(v) {
		errs = append(errs, configErr("enable.idempotence", "must be true, got %v", v))
	}
	errs = append(errs, cfg.Security.validate("ProducerConfig.Security", cfg.Overrides)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var logs chan ckafka.LogEvent // nil: librdkafka logs to stderr (see ForwardLogs)
	if cfg.ForwardLogs {
		logs = make(chan ckafka.LogEvent, 1024)
	}
	cm, err := producerConfigMap(cfg, logs)
	if err != nil {
		return nil, err
	}
	p, err := ckafka.NewProducer(&cm)
	if err != nil {
		return nil, fmt.Errorf("kafka: new producer: %w: %w", err, ErrConfig)
	}
	pr := &Producer{cfg: cfg, p: p, log: cfg.Logger, logs: logs, delivered: make(chan struct{}, 1), tx: tx}
	pr.reader.Add(1)
	go pr.readReports()
	return pr, nil
}

// producerConfigMap builds the librdkafka configuration of a producer (cfg has its defaults).
func producerConfigMap(cfg ProducerConfig, logs chan ckafka.LogEvent) (ckafka.ConfigMap, error) {
	messageMax := max(cfg.MaxMessageBytes+64<<10, 1000000)
	cm := ckafka.ConfigMap{
		"bootstrap.servers":          cfg.Brokers,
		"enable.idempotence":         true,
		"acks":                       "all",
		"queue.buffering.max.kbytes": int(max(producerQueue(Plan(cfg.Budget, cfg.MaxMessageBytes), messageMax)/1024, 1)),
		"message.max.bytes":          int(messageMax),
		"linger.ms":                  5,
		"go.delivery.report.fields":  "none",
		// confluent-kafka-go allocates its channels on the Go heap at creation: Events() at 16 B
		// and ProduceChannel() at 8 B a slot, a million slots each by default (23 MiB, counted
		// by the GC's heap goal from the start, and Events()' ring buffer becomes resident as
		// reports pass through it). The report reader only hands each report on (it never
		// blocks), so a few thousand slots keep up; ProduceChannel is not used.
		"go.events.channel.size":  eventsChannelSize,
		"go.produce.channel.size": 0,
		"log_level":               5,
	}
	if logs != nil {
		cm["go.logs.channel.enable"], cm["go.logs.channel"] = true, logs
	}
	cfg.Security.apply(cm)
	for k, v := range cfg.Overrides {
		if err := cm.SetKey(k, v); err != nil {
			return nil, configErr(k, "%v", err)
		}
	}
	return cm, nil
}

// NewProducer starts a producer for the pipelines this source feeds, so that the cluster, the
// budget and the largest message are stated once, on the source's Config: Brokers, Security,
// Budget, MaxMessageBytes and Logger are the source's where cfg leaves them zero, and the
// producer's queue is the source plan's share (Memory().ProducerQueue). A Brokers, Security,
// Budget or MaxMessageBytes that cfg sets to another value than the source's is an error
// wrapping ErrConfig and naming the field (a producer for another cluster, other credentials
// or another budget is a standalone kafka.NewProducer). Otherwise as kafka.NewProducer: the caller owns the producer and closes
// it after the pipeline's Run; the source does not close it, and it may outlive the source.
func (s *Source) NewProducer(cfg ProducerConfig) (*Producer, error) {
	var errs []error
	if cfg.Brokers == "" {
		cfg.Brokers = s.cfg.Brokers
	} else if cfg.Brokers != s.cfg.Brokers {
		errs = append(errs, configErr("ProducerConfig.Brokers", "set it on the source's Config only (it is %q there), got %q", s.cfg.Brokers, cfg.Brokers))
	}
	if cfg.Security.IsZero() {
		cfg.Security = s.cfg.Security
	} else if cfg.Security != s.cfg.Security {
		errs = append(errs, configErr("ProducerConfig.Security", "set it on the source's Config only (it differs from the source's Security); a producer with other credentials is a standalone kafka.NewProducer"))
	}
	for _, f := range []struct {
		name       string
		v          *int64
		src        int64
		sourceName string
	}{
		{"ProducerConfig.Budget", &cfg.Budget, s.cfg.Budget, "Budget"},
		{"ProducerConfig.MaxMessageBytes", &cfg.MaxMessageBytes, s.cfg.MaxMessageBytes, "MaxMessageBytes"},
	} {
		if *f.v == 0 {
			*f.v = f.src
		} else if *f.v != f.src {
			errs = append(errs, configErr(f.name, "set it on the source's Config only (its %s is %s there), got %s", f.sourceName, byteSize(f.src), byteSize(*f.v)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = s.cfg.Logger
	}
	if s.txn != nil {
		return s.newTxnProducer(cfg)
	}
	return NewProducer(cfg)
}

// byteSize spells n in MiB or KiB when it is a whole number of them, else in bytes.
func byteSize(n int64) string {
	switch {
	case n != 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n != 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
