// Package kafkatest runs an embedded Kafka-protocol broker for tests,
// examples and benchmarks. It wraps github.com/twmb/franz-go/pkg/kfake, which
// listens on 127.0.0.1 only and is reached by real clients, librdkafka
// (confluent-kafka-go) included, over loopback TCP.
//
//	c := kafkatest.StartT(t, kafkatest.Topic("events", 4))
//	p, _ := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": c.Addr()})
//
// StartProcess runs the same broker as a child process (the
// internal/cmd/kfakebroker command), so benchmarks can keep the broker's
// memory and CPU out of the measured process; Trim, and the command's
// --trim-interval, keep long runs from growing the broker's memory.
//
// # librdkafka against kfake
//
// Verified with librdkafka 2.11.1 (confluent-kafka-go v2.11.1) by this
// package's tests:
//
//   - No special client settings are needed. api.version.request (default
//     true) works: kfake answers ApiVersions with its full key table, so
//     broker.version.fallback is irrelevant. Brokers advertise 127.0.0.1, so
//     metadata never redirects clients to an unreachable host.
//   - The idempotent producer (enable.idempotence=true, acks=all) and the
//     transactional producer work; a read_committed consumer sees committed
//     records only.
//   - Consumer groups work with the classic protocol (range, roundrobin,
//     cooperative-sticky) and with KIP-848 group.protocol=consumer, for which
//     librdkafka 2.11.1 logs a warning that it is in "Preview". With
//     group.protocol=consumer librdkafka rejects session.timeout.ms,
//     heartbeat.interval.ms and partition.assignment.strategy (use
//     group.remote.assignor); the broker decides those.
//   - Static membership (group.instance.id): a member restarted within the
//     session timeout with the same subscription gets its partitions back and
//     nobody else rebalances, as with Kafka. kfake alone rebalances the group when the rejoin's
//     protocol metadata differs from the old member's, which it always does
//     for cooperative-sticky (the metadata carries the owned partitions);
//     Start installs a JoinGroup observer that gives kfake the member's
//     previous metadata on such a rejoin (static.go).
//   - A lone member's first join is immediate: kfake has no
//     group.initial.rebalance.delay.ms.
//   - Rebalances when members join or leave are paced by heartbeats. Classic:
//     librdkafka's heartbeat.interval.ms (default 3000) makes each rebalance
//     take ~3 s (~6 s for cooperative-sticky's two rounds); set it to 100 in
//     tests. KIP-848: the broker's group.consumer.heartbeat.interval.ms
//     (Kafka default 5000, ~10 s per rebalance); Start sets it to
//     DefaultConsumerHeartbeatMillis (100 ms).
//   - Topic auto-creation is off (kfake's default; Kafka's is on). A
//     librdkafka producer writing to a missing topic gets no error until
//     message.timeout.ms (default 300 s!) expires with "Local: Message timed
//     out"; a consumer subscribed to one gets non-fatal "Subscribed topic not
//     available: ... Unknown topic or partition" error events. Create topics
//     with Topic or CreateTopic, or pass
//     KfakeOption(kfake.AllowAutoTopicCreation()), which creates topics with
//     10 partitions (kfake.DefaultNumPartitions changes that). librdkafka
//     consumers never auto-create (allow.auto.create.topics=false).
//   - The broker handles one request per connection at a time, as Kafka does.
//     A consuming consumer's fetch long-polls for fetch.wait.max.ms (default
//     500 ms), so QueryWatermarkOffsets or other requests through that
//     consumer to the same broker take ~500 ms each. Query watermarks through
//     a producer or another handle, or lower fetch.wait.max.ms.
//   - librdkafka's KIP-714 telemetry works against kfake; at the default
//     log_level 6 each client logs a "Telemetry client instance id changed"
//     line. log_level=5 (or enable.metrics.push=false) silences it.
//   - After Trim, a consumer positioned below the new low watermark gets
//     OFFSET_OUT_OF_RANGE and resets according to auto.offset.reset, as with
//     Kafka's DeleteRecords: the trimmed records are skipped.
//   - Close clients before the cluster (StartT before creating clients gets
//     this order from t.Cleanup), or librdkafka logs connection errors.
//   - With DataDir, records and committed offsets survive Close and Start,
//     but random ports do not: clients that outlive a restart need Ports.
//
// librdkafka's threads are C threads, so go.uber.org/goleak does not see
// them; confluent-kafka-go's own goroutines end on Close.
package kafkatest
