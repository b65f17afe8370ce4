package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoPool is franz-go as its documentation's simplest concurrent pattern writes it: a
// PollFetches loop hands each fetch's records to a hand-written pool of cfg.slots workers,
// waits for the batch, marks it (AutoCommitMarks commits marked records every 5 s and on
// revoke) and allows rebalancing again (BlockRebalanceOnPoll: no rebalance while a batch is
// processed). Everything else is kgo's default.
func kgoPool(ctx context.Context, cfg config, ds *downstream) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(cfg.brokers, ",")...),
		kgo.ConsumerGroup(cfg.group),
		kgo.ConsumeTopics(cfg.topic),
		kgo.AutoCommitMarks(),
		kgo.BlockRebalanceOnPoll(),
	)
	if err != nil {
		return err
	}
	// CloseAllowingRebalance leaves the group; the default OnPartitionsRevoked commits the
	// marked offsets first.
	defer cl.CloseAllowingRebalance()

	jobs := make(chan *kgo.Record)
	var batch sync.WaitGroup
	var workers sync.WaitGroup
	for range cfg.slots {
		workers.Go(func() {
			for r := range jobs {
				ds.process(r.Partition, r.Offset, r.Value)
				batch.Done()
			}
		})
	}
	defer workers.Wait()
	defer close(jobs)

	for {
		fetches := cl.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			fmt.Fprintf(os.Stderr, "fetch %s[%d]: %v\n", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			batch.Add(1)
			jobs <- r
		})
		batch.Wait()
		cl.MarkCommitRecords(fetches.Records()...)
		cl.AllowRebalance()
	}
}

// kgoPerPartition is franz-go's own example "goroutine_per_partition_consuming"
// (autocommit_marks): a goroutine per assigned partition, fed whole partition fetches over a
// channel of 5, processes its records one after another and marks them; AutoCommitMarks
// commits marked records every 5 s, and the revoke callback commits them before a partition
// goes. Polling uses PollRecords(10000) as the example does.
func kgoPerPartition(ctx context.Context, cfg config, ds *downstream) error {
	s := &splitConsume{consumers: map[topicPartition]*pconsumer{}, ds: ds}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(cfg.brokers, ",")...),
		kgo.ConsumerGroup(cfg.group),
		kgo.ConsumeTopics(cfg.topic),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
		kgo.AutoCommitMarks(),
		kgo.BlockRebalanceOnPoll(),
	)
	if err != nil {
		return err
	}
	// Leaving the group revokes every partition: s.revoked stops the partition goroutines
	// and commits what they marked.
	defer cl.CloseAllowingRebalance()
	for {
		fetches := cl.PollRecords(ctx, 10000)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			fmt.Fprintf(os.Stderr, "fetch %s[%d]: %v\n", t, p, err)
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			// BlockRebalanceOnPoll: the partition's consumer exists until AllowRebalance.
			select {
			case s.consumers[topicPartition{p.Topic, p.Partition}].recs <- p:
			case <-ctx.Done(): // shutting down: an unsent fetch is not marked, so it is read again
			}
		})
		cl.AllowRebalance()
	}
}

type topicPartition struct {
	t string
	p int32
}

// splitConsume owns the partition goroutines. Its map is touched only by the poll loop and
// the rebalance callbacks, which BlockRebalanceOnPoll keeps apart.
type splitConsume struct {
	consumers map[topicPartition]*pconsumer
	ds        *downstream
}

type pconsumer struct {
	cl   *kgo.Client
	ds   *downstream
	quit chan struct{}
	done chan struct{}
	recs chan kgo.FetchTopicPartition
}

func (pc *pconsumer) consume() {
	defer close(pc.done)
	for {
		select {
		case <-pc.quit:
			return
		case p := <-pc.recs:
			for _, r := range p.Records {
				pc.ds.process(r.Partition, r.Offset, r.Value)
			}
			pc.cl.MarkCommitRecords(p.Records...)
		}
	}
}

func (s *splitConsume) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	for topic, partitions := range assigned {
		for _, partition := range partitions {
			pc := &pconsumer{cl: cl, ds: s.ds, quit: make(chan struct{}), done: make(chan struct{}),
				recs: make(chan kgo.FetchTopicPartition, 5)}
			s.consumers[topicPartition{topic, partition}] = pc
			go pc.consume()
		}
	}
}

func (s *splitConsume) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.killConsumers(revoked)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "revoke commit: %v\n", err)
	}
}

func (s *splitConsume) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.killConsumers(lost) // a lost partition cannot be committed
}

// killConsumers stops the partitions' goroutines and waits for the batch each is processing.
func (s *splitConsume) killConsumers(gone map[string][]int32) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for topic, partitions := range gone {
		for _, partition := range partitions {
			tp := topicPartition{topic, partition}
			pc := s.consumers[tp]
			if pc == nil {
				continue
			}
			delete(s.consumers, tp)
			close(pc.quit)
			wg.Go(func() { <-pc.done })
		}
	}
}
