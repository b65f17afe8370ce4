package main

import (
	"context"
	"strings"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// watermillRouter is watermill-kafka (v3, on sarama) as watermill's getting-started guide
// writes a consumer: a kafka.Subscriber in the consumer group with
// DefaultSaramaSubscriberConfig (plus Consumer.Offsets.Initial = OffsetOldest, as that
// config's documentation shows, so records produced before the group joined are read), and a
// message.Router whose handler calls the downstream and returns nil (the router then acks,
// and the subscriber marks the offset for sarama's auto-commit, every 1 s). The router runs
// each message's handler in its own goroutine; the subscriber hands a partition's next
// message out only after the previous one is acked. channelBuffer > 0 sets sarama's
// ChannelBufferSize (default 256 messages per partition).
func watermillRouter(ctx context.Context, cfg config, ds *downstream, channelBuffer int) error {
	logger := watermill.NopLogger{}
	sc := kafka.DefaultSaramaSubscriberConfig()
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	if channelBuffer > 0 {
		sc.ChannelBufferSize = channelBuffer
	}
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               strings.Split(cfg.brokers, ","),
		Unmarshaler:           kafka.DefaultMarshaler{},
		OverwriteSaramaConfig: sc,
		ConsumerGroup:         cfg.group,
	}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	router.AddConsumerHandler("downstream", cfg.topic, sub, func(msg *message.Message) error {
		p, _ := kafka.MessagePartitionFromCtx(msg.Context())
		off, _ := kafka.MessagePartitionOffsetFromCtx(msg.Context())
		ds.process(p, off, msg.Payload)
		return nil
	})
	// Run returns once ctx is done and the router has closed (waiting up to its default 30 s
	// CloseTimeout for running handlers).
	return router.Run(ctx)
}
