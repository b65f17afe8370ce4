package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/internal/handover"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Source is a consumer-group source for a pipeline: one librdkafka consumer, polled by one
// goroutine (the pipeline's source task). Build it with NewSource, pass it to pipeline.New
// (which applies its PipelineOptions itself), and let the pipeline run and close it.
//
// Backpressure: a message that cannot be emitted now (budget or first edge full, per-partition
// limit, key or partition already in flight) is held and its partition paused; Poll keeps
// running (max.poll.interval.ms never expires, rebalances are served); the partition resumes
// once its held messages are emitted, the budget is below half and all held messages together
// are below Memory.Held (at Held every partition is paused). librdkafka drops a paused
// partition's prefetched messages and refetches from the position after the last message it
// returned, which the held messages cover: nothing is lost.
//
// Hand-over: the messages Poll returns back to back are handed to the pipeline in bursts (up to
// 32 messages or 256 KiB, see handover.go) when the first stage reads its input from
// one goroutine: one lock, one budget acquisition and one edge slot per burst; a one-worker sink
// with fast calls then finishes the burst's events together (CompleteMany). A burst is flushed as
// soon as Poll has nothing ready, so it adds no waiting.
//
// Offsets: each partition's tracker commits the highest contiguous finished offset + 1, on
// CommitInterval, on revoke and on close. Completions are matched by the event's Origin, never
// by fields a stage may change. A completion from an earlier assignment or offset sequence of
// a partition (its epoch differs) releases its ordering slot and is never committed. The span
// from a partition's oldest unfinished offset to its newest received one is bounded by
// MaxInFlightPerPartition (window.go).
type Source struct {
	cfg  Config
	c    *ckafka.Consumer
	mem  Memory
	log  *slog.Logger
	logs chan ckafka.LogEvent

	// mu guards parts, byEpoch, gates and every partState's shared fields. parts and
	// partState.revoking are written only by the polling goroutine (in the rebalance
	// callbacks), which therefore reads them without mu; every other goroutine takes mu.
	mu         sync.Mutex
	parts      map[tpKey]*partState
	byEpoch    map[uint64]*partState // by epoch, for Complete: assigned, and retired ones with events in flight
	gates      map[tpKey]*gate       // ordering gates of assigned partitions and of those with events in flight
	revokeWake chan struct{}         // capacity 1: a revoking partition's last in-flight event finished
	// capacity 1: an event completed (exactly once only: barrierWait, txn_wait.go)
	barrierWake chan struct{}

	// Owned by the polling goroutine (Run, then Close):
	emit       handover.Emitter
	runCtx     context.Context // Run's context, for the flush at a rebalance
	held       int             // held messages over all partitions
	heldBytes  int64           // their bytes, counted by msgSize (as pipeline.EventSize counts)
	retrySeq   uint64          // doneSeq when the held messages were last retried
	spanSeq    uint64          // doneSeq when the spans at the bound were last re-read
	last       *partState      // the partition of the previous message (nil after a rebalance)
	burst      []burstMsg      // messages polled and not yet admitted or held: see flush
	burstOut   []*stage.Event  // flush's admitted events (kept for the capacity)
	burstGated []int           // flush's gated messages, as indices into burst
	burstBytes int             // bytes of the burst, counted by msgSize
	events     flow.Cache
	polls      uint32 // Poll calls, to run the periodic work every housekeepEvery
	lastCommit time.Time
	lastPoll   time.Time // the last Poll call (exactly once: barrierWait)
	coop       bool      // cooperative protocol (Incremental(Un)Assign); set on each assign
	closing    bool      // Close is closing the consumer: its revoke neither waits nor commits
	fatal      error     // the fatal error the consumer raised (a ckafka.Error; nil: none): it is never closed (static.go)
	closeOnce  sync.Once
	closeErr   error

	handshakes handshakes // failed SASL and TLS handshakes (security.go); reset on assign

	inCommit    *commitCall // the outstanding commit (nil: none); polling goroutine, then Close. See commit.go
	rebalancing bool        // the last commit answered was refused with REBALANCE_IN_PROGRESS (commitFinal tries again)

	// Commit metadata (meta.go): the largest binary form (0: off), the offset range that
	// keeps it within the cap (window.go), and the buffer commits encode into (reused; at
	// most metaLimit plus one run). Polling goroutine, then Close.
	metaLimit int
	metaRange int64
	metaBuf   []byte
	// kept: per partition let go without a commit confirming all it finished (a lost
	// assignment, a failed or unanswered revoke commit), what it finished (finished.go);
	// taken when the partition is assigned to this member again. At most one entry per
	// partition, each within metaLimit bytes.
	kept map[tpKey]*finishedSet

	txn *txnState // exactly once (Config.ExactlyOnce; txn.go), nil otherwise

	st sourceCounters
}

// NewSource validates cfg and creates the consumer (it connects in the background; it
// subscribes when the pipeline runs). A configuration error names the field or librdkafka key
// and nothing is started. Close it if the pipeline never runs.
func NewSource(cfg Config) (*Source, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var logs chan ckafka.LogEvent // nil: librdkafka logs to stderr (see ForwardLogs)
	if cfg.ForwardLogs {
		logs = make(chan ckafka.LogEvent, 1024)
	}
	cm, mem, err := cfg.consumerConfig(logs)
	if err != nil {
		return nil, err
	}
	c, err := ckafka.NewConsumer(&cm)
	if err != nil {
		return nil, fmt.Errorf("kafka: new consumer: %w: %w", err, ErrConfig)
	}
	s := &Source{cfg: cfg, c: c, mem: mem, log: cfg.Logger, logs: logs, parts: map[tpKey]*partState{}, byEpoch: map[uint64]*partState{}, gates: map[tpKey]*gate{}, revokeWake: make(chan struct{}, 1),
		metaLimit: metaLimit(cfg.CommitMetadataMaxBytes), metaRange: metaRange(cfg.CommitMetadataMaxBytes)}
	if cfg.ExactlyOnce {
		s.txn = &txnState{}
		s.barrierWake = make(chan struct{}, 1)
	}
	return s, nil
}

// Consumer returns the underlying consumer, for metadata queries. Do not poll, assign, pause
// or commit through it.
func (s *Source) Consumer() *ckafka.Consumer { return s.c }

// Run implements pipeline.Source: it subscribes and polls until ctx is done.
func (s *Source) Run(ctx context.Context, emit *pipeline.Emitter) error {
	s.emit, s.runCtx = handover.Of(emit), ctx
	if lim := s.emit.Limit(); lim != s.mem.InFlight {
		s.log.Warn("sluice/kafka: the pipeline budget differs from the source's plan (an explicit pipeline.WithBudget overrides it)", "pipeline_budget", lim, "planned_in_flight", s.mem.InFlight)
	}
	if s.txn != nil { // before subscribing: fence an older instance first
		if err := s.txnStart(ctx); err != nil {
			s.txn.fatal = err
			return err
		}
	}
	if err := s.c.SubscribeTopics(s.cfg.Topics, s.rebalance); err != nil {
		return fmt.Errorf("kafka: subscribe %v: %w", s.cfg.Topics, err)
	}
	s.lastCommit = time.Now()
	defer s.dropBurst()
	for ctx.Err() == nil {
		timeout := int(pollInterval / time.Millisecond)
		if s.held > 0 || s.st.paused.Load() > 0 {
			timeout = 10 // held messages and paused partitions wait for room: look again soon
		}
		if s.txn != nil && (s.txn.draining || s.txn.stopping || !s.txn.began) {
			timeout = 1 // at a barrier: look at the events in flight again soon
		}
		if len(s.burst) > 0 {
			timeout = 0 // the burst goes out as soon as Poll has nothing ready
		}
		s.polls++
		idle := true        // anything but a message: do the periodic work now
		var ev ckafka.Event // nil: barrierWait waited for completions instead of polling
		if !s.barrierWait(ctx) {
			ev = s.c.Poll(timeout)
			if s.txn != nil && s.txn.draining { // the clock only at a barrier: see housekeepEvery
				s.lastPoll = time.Now()
			}
		}
		switch e := ev.(type) {
		case *ckafka.Message:
			idle = false
			if err := e.TopicPartition.Error; err != nil {
				ke, ok := err.(ckafka.Error)
				if !ok {
					ke = ckafka.NewError(ckafka.ErrUnknown, err.Error(), false)
				}
				if err := s.onError(ke); err != nil {
					return err
				}
				continue
			}
			s.onMessage(ctx, e)
		case ckafka.Error:
			if err := s.onError(e); err != nil {
				return err
			}
		case *ckafka.Stats:
			str := e.String()
			s.st.statsJSON.Store(&str)
		}
		if idle {
			s.flush(ctx)
		}
		housekeep := idle || s.held > 0 || s.polls%housekeepEvery == 0
		if housekeep {
			s.drainLogs()
			if s.txn == nil && time.Since(s.lastCommit) >= s.cfg.CommitInterval {
				s.commit()
			}
		}
		if s.txn != nil && (housekeep || s.txn.draining || s.txn.stopping) {
			if err := s.txnTick(ctx); err != nil {
				s.txn.fatal = err // Close then leaves the transaction to the coordinator
				return err
			}
		}
		if seq := s.st.doneSeq.Load(); s.st.paused.Load() > 0 && seq != s.spanSeq && (idle || s.polls%housekeepEvery == 0) {
			s.spanSeq = seq
			s.refreshSpans()
		}
		// Retry held messages only when something finished (a key or slot freed, budget
		// returned) or the pipeline may have room again: never a scan per polled message.
		if seq := s.st.doneSeq.Load(); s.held > 0 && (seq != s.retrySeq || s.st.paused.Load() > 0) {
			s.retrySeq = seq
			s.flush(ctx)
			s.retryHeld(ctx)
		}
		s.resumeIfRoom()
		if idle && (s.held > 0 || s.st.paused.Load() > 0 || (s.txn != nil && s.txn.draining)) { // blocked: at most once per poll
			s.emit.Stalled() // a batch without Linger may hold what the held messages wait for
		}
	}
	return nil
}

// housekeepEvery is how many consecutive messages the polling loop handles between its
// periodic work (log forwarding, the commit-interval check), which also runs whenever Poll
// returns no message or messages are held (the loop is then waiting for room anyway). Reading
// the clock for every message was a measurable share of the loop at a million messages a
// second; a message emitted without being held takes at most emitWait, so the commit interval
// stretches by at most housekeepEvery × emitWait when the first stage is saturated.
const housekeepEvery = 16

// onError handles an error librdkafka reports on the consumer. A fatal one, or a refusal by
// the cluster (authentication or authorization: librdkafka would retry it for ever, and a
// retry cannot succeed until credentials or ACLs change), stops Run. Others are logged and
// librdkafka recovers from them itself.
func (s *Source) onError(e ckafka.Error) error {
	s.st.errors.Add(1)
	if e.IsFatal() {
		return s.onFatal(e)
	}
	if accessDenied(e) {
		return fmt.Errorf("kafka: consumer of %v in group %q: %w: %s: %w", s.cfg.Topics, s.cfg.GroupID, ErrAccessDenied, deniedHint(e.Code()), e)
	}
	if hint, ok := s.handshakes.refused(e); ok {
		return fmt.Errorf("kafka: consumer of %v in group %q: %w: %s: %w", s.cfg.Topics, s.cfg.GroupID, ErrAccessDenied, hint, e)
	}
	s.log.Warn("sluice/kafka: consumer error", "code", e.Code().String(), "err", e.Error())
	return nil
}

func (s *Source) onMessage(ctx context.Context, m *ckafka.Message) {
	// parts and revoking change only on this goroutine: no lock to find the partition, and
	// bursts of messages from one partition skip the map.
	ps := s.last
	if ps == nil || ps.tp.partition != m.TopicPartition.Partition || ps.tp.topic != *m.TopicPartition.Topic {
		ps = s.parts[tpKey{*m.TopicPartition.Topic, m.TopicPartition.Partition}]
		s.last = ps
	}
	if ps == nil || ps.revoking {
		s.st.stale.Add(1) // fetched before a revoke: the next owner consumes it
		return
	}
	if off := int64(m.TopicPartition.Offset); off <= ps.lastRecv {
		s.flush(ctx) // the old sequence's messages go to the old tracker first
		if s.rewindTo(ps, m) {
			return
		}
		s.restartSeq(ps, m)
	}
	ps.lastRecv = int64(m.TopicPartition.Offset)
	if ps.txnBase < 0 {
		ps.txnBase = ps.lastRecv // exactly once: where a rewind goes back to if nothing is committed
	}
	if (ps.skip != nil || ps.kept != nil) && s.skipFinished(ctx, ps, m) {
		return
	}
	if len(ps.held) > 0 { // the burst holds none of ps's messages: they would precede these
		s.mu.Lock()
		ps.tr.received(int64(m.TopicPartition.Offset), s.gateKey(m))
		ps.span, ps.low = ps.tr.pending(), ps.tr.low()
		s.mu.Unlock()
		s.hold(ps, m, false)
		if !ps.full && s.atBound(ps) {
			s.pauseFull(ps)
		}
		return
	}
	if s.collect(ps, m) {
		s.flush(ctx)
	}
}

// leaveGroup unsubscribes and polls (dropping messages: nothing more is emitted) until the
// revoke has run and nothing is assigned, or ctx ends. Closing a consumer in the middle of a
// cooperative rebalance can hang librdkafka (confluentinc/librdkafka#4527, seen here with
// 2.11.1 inside Close's revoke callback); leaving the group first, outside Close, does not.
func (s *Source) leaveGroup(ctx context.Context) {
	if err := s.c.Unsubscribe(); err != nil {
		s.log.Warn("sluice/kafka: unsubscribe", "err", err)
		return
	}
	for ctx.Err() == nil {
		if parts, err := s.c.Assignment(); err != nil || len(parts) == 0 {
			return
		}
		s.c.Poll(50)
	}
}

// Close commits what finished (with the commit metadata: meta.go; a commit refused with
// REBALANCE_IN_PROGRESS is tried again within ctx: commitFinal) and closes the consumer,
// leaving the group if the source is a dynamic member; a static member (GroupInstanceID) stays
// in the group, keeping its partitions for its restart within the session timeout (static.go).
// A consumer that raised a fatal error (a static member fenced by another member with its
// instance id) is neither committed nor closed: Close returns at once with an error saying so
// (static.go). The pipeline calls it after the drain; call it yourself only if the pipeline
// never ran. Idempotent.
//
// Blocking: at most ctx's time. The final commit, leaving the group and waiting for the
// rebalance are bounded by ctx. One thing is not in sluice's hands: librdkafka's consumer close
// waits for every commit the group coordinator has not answered, and retries such a commit for
// as long as the coordinator cannot be found (confluentinc/librdkafka#3740). When a commit is
// still unanswered as ctx ends, Close returns an error saying so and the consumer finishes
// closing on a goroutine of its own as soon as the coordinator answers (that goroutine is the
// one exception to "no goroutine outlives Run"): a shutdown during a coordinator outage never
// hangs. What finished after the last answered commit is consumed again by the next owner.
// See commit.go.
func (s *Source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		if s.txn != nil {
			s.txnClose() // no commit of CommitOffsets is outstanding in this mode
		} else if s.fatal == nil { // a consumer that raised a fatal error cannot commit
			s.commitFinal(ctx, s.assignedStates())
		}
		if !s.awaitCommit(ctx) {
			s.closeErr = fmt.Errorf("kafka: close: the group coordinator did not answer a commit (%v) within the close timeout: the consumer finishes closing in the background once it does (librdkafka waits for it, confluentinc/librdkafka#3740); what finished since the last answered commit is consumed again: %w", offList(s.inCommit.offs), context.Cause(ctx))
			s.log.Error("sluice/kafka: closing the consumer in the background: a commit is unanswered", "err", s.closeErr)
			go s.closeConsumer(ctx)
			return
		}
		s.closeConsumer(ctx)
	})
	return s.closeErr
}

// closeConsumer leaves the group (a dynamic member), waits for the outstanding commit (if any)
// and closes the consumer (bounded by ctx for a static member: static.go). It leaves first: a member that waits for a commit before leaving keeps its
// partitions and stalls the group's next rebalance (the coordinator waits for every member to
// rejoin), while the commit itself may wait behind that rebalance on the coordinator's
// connection. Leaving is bounded by ctx, or, once Close's time is up (the background close),
// by RevokeTimeout. Errors after Close returned are logged.
func (s *Source) closeConsumer(ctx context.Context) {
	s.closing = true
	if s.fatal != nil {
		s.abandon()
		return
	}
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), s.cfg.RevokeTimeout)
		defer cancel()
	}
	if s.cfg.GroupInstanceID == "" {
		s.leaveGroup(ctx)
	}
	s.endCommit()
	if err := s.closeClient(ctx); err != nil {
		err = fmt.Errorf("kafka: close consumer: %w", err)
		if s.closeErr == nil {
			s.closeErr = err
		} else {
			s.log.Error("sluice/kafka: background close", "err", err)
		}
	}
	s.drainLogs()
}
