package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	kafka "github.com/segmentio/kafka-go"
)

// kafkaGoReaders is segmentio/kafka-go as its README writes a group consumer with explicit
// commits, run cfg.slots times: each of cfg.slots Readers in the group (ReaderConfig with
// Brokers, GroupID and Topic, everything else default) loops FetchMessage → downstream →
// CommitMessages (synchronous, CommitInterval 0). With 8 partitions, 8 Readers get one each
// and 2 stay idle.
func kafkaGoReaders(ctx context.Context, cfg config, ds *downstream) error {
	var wg sync.WaitGroup
	errs := make([]error, cfg.slots)
	for i := range cfg.slots {
		wg.Go(func() {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: strings.Split(cfg.brokers, ","),
				GroupID: cfg.group,
				Topic:   cfg.topic,
			})
			defer r.Close()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errs[i] = fmt.Errorf("reader %d: fetch: %w", i, err)
					}
					return
				}
				ds.process(int32(m.Partition), m.Offset, m.Value)
				// A canceled ctx fails the commit: the record is read again (a duplicate).
				if err := r.CommitMessages(ctx, m); err != nil && ctx.Err() == nil {
					errs[i] = fmt.Errorf("reader %d: commit %s[%d]@%d: %w", i, m.Topic, m.Partition, m.Offset, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
