package kafkatest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Option configures a Cluster started with Start, StartT or the kfakebroker
// command.
type Option func(*config)

type topicSpec struct {
	name       string
	partitions int
}

type config struct {
	brokers   int // 0 means "not set"
	topics    []topicSpec
	ports     []int
	dataDir   string
	kfakeOpts []kfake.Opt
	errs      []error

	sasl   *saslUser   // SASL's superuser (nil: no SASL)
	tls    *tls.Config // TLS's server config (nil: plaintext)
	caFile string      // TLS's CA file, for clients
}

// Brokers sets the number of broker nodes in the cluster. The default is 1
// (kfake's own default is 3). n must be at least 1. If Ports is also given,
// n must equal the number of ports.
func Brokers(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("kafkatest: Brokers(%d): need at least 1 broker", n))
			return
		}
		c.brokers = n
	}
}

// Topic creates the topic name with the given number of partitions when the
// cluster starts. It may be given more than once; by default no topic exists.
// partitions must be at least 1. The replication factor is kfake's default.
// If the topic already exists (for example because DataDir reloaded it), it
// is kept as long as its partition count matches.
func Topic(name string, partitions int) Option {
	return func(c *config) {
		if name == "" || partitions < 1 {
			c.errs = append(c.errs, fmt.Errorf("kafkatest: Topic(%q, %d): need a name and at least 1 partition", name, partitions))
			return
		}
		c.topics = append(c.topics, topicSpec{name, partitions})
	}
}

// Ports sets fixed ports, one per broker, all on 127.0.0.1. The default is a
// random free loopback port per broker. Without Brokers, the number of ports
// sets the number of brokers.
func Ports(ports ...int) Option {
	return func(c *config) { c.ports = append([]int(nil), ports...) }
}

// DataDir makes kfake persist its state (topics, records, group offsets,
// producer IDs) in dir and reload it on start, so a test can Close a cluster
// and Start another on the same dir to simulate a broker restart. The default
// is no persistence: everything lives in memory and is lost on Close. Note
// that random ports change across restarts; use Ports to keep them.
func DataDir(dir string) Option {
	return func(c *config) { c.dataDir = dir }
}

// KfakeOption passes o through to kfake.NewCluster, for fault injection and
// other kfake features this package does not wrap (for example
// kfake.AllowAutoTopicCreation, kfake.BrokerConfigs, kfake.WithLogger). By
// default no extra kfake options are used. Kfake options are applied after
// the ones this package derives from Brokers, Ports and DataDir, so they win.
func KfakeOption(o kfake.Opt) Option {
	return func(c *config) { c.kfakeOpts = append(c.kfakeOpts, o) }
}

// Cluster is a running kfake cluster reachable over loopback TCP. It is safe
// for concurrent use.
type Cluster struct {
	kc    *kfake.Cluster
	addrs []string
	cfg   config

	mu     sync.RWMutex // write-held by Close; read-held by calls into kc
	closed bool
	admin  *kgo.Client // lazily created by Topics
}

// DefaultConsumerHeartbeatMillis is the broker config
// group.consumer.heartbeat.interval.ms that Start sets: the heartbeat
// interval the broker hands to KIP-848 (group.protocol=consumer) members.
// Kafka and kfake default to 5000, which makes every KIP-848 rebalance take
// about 10 s; override it with
// KfakeOption(kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "5000"})).
const DefaultConsumerHeartbeatMillis = 100

// Start starts a kfake cluster listening on 127.0.0.1 only, creates the
// topics given with Topic and returns once every broker accepts connections.
// Defaults: one broker, random ports, no topics, in-memory storage, no
// topic auto-creation, and group.consumer.heartbeat.interval.ms set to
// DefaultConsumerHeartbeatMillis; every other broker config has kfake's
// (Kafka's) default. A static member's restart rebalances nothing, as with
// Kafka (see the package doc).
func Start(opts ...Option) (*Cluster, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if err := errors.Join(cfg.errs...); err != nil {
		return nil, err
	}
	n := cfg.brokers
	switch {
	case len(cfg.ports) > 0 && n != 0 && n != len(cfg.ports):
		return nil, fmt.Errorf("kafkatest: Brokers(%d) does not match %d Ports", n, len(cfg.ports))
	case len(cfg.ports) > 0:
		n = len(cfg.ports)
	case n == 0:
		n = 1
	}

	kopts := []kfake.Opt{
		kfake.NumBrokers(n),
		kfake.BrokerConfigs(map[string]string{
			"group.consumer.heartbeat.interval.ms": strconv.Itoa(DefaultConsumerHeartbeatMillis),
		}),
	}
	if len(cfg.ports) > 0 {
		kopts = append(kopts, kfake.Ports(cfg.ports...))
	}
	if cfg.dataDir != "" {
		kopts = append(kopts, kfake.DataDir(cfg.dataDir))
	}
	kopts = append(kopts, cfg.kfakeOpts...)

	kc, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: starting kfake: %w", err)
	}
	installStaticRejoin(kc)
	c := &Cluster{kc: kc, addrs: kc.ListenAddrs(), cfg: cfg}
	for _, a := range c.addrs {
		if !isLoopback(a) {
			c.Close()
			return nil, fmt.Errorf("kafkatest: broker listens on %s, not loopback", a)
		}
	}
	for _, t := range cfg.topics {
		if err := c.CreateTopic(context.Background(), t.name, t.partitions); err != nil {
			if !errors.Is(err, kerr.TopicAlreadyExists) {
				c.Close()
				return nil, err
			}
			if got := len(kc.PartitionInfos(t.name)); got != t.partitions {
				c.Close()
				return nil, fmt.Errorf("kafkatest: topic %q exists with %d partitions, want %d", t.name, got, t.partitions)
			}
		}
	}
	return c, nil
}

// StartT is Start for tests and benchmarks: it calls t.Fatal if the cluster
// cannot start and registers Close with t.Cleanup.
func StartT(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	c, err := Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func isLoopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Addr returns the bootstrap list, comma separated, as librdkafka's
// bootstrap.servers expects: "127.0.0.1:p1,127.0.0.1:p2". It lists the
// brokers present at Start; nodes added later through Kfake are not included.
func (c *Cluster) Addr() string { return strings.Join(c.addrs, ",") }

// Kfake returns the underlying kfake cluster, for fault injection (ControlKey,
// Fault, MoveTopicPartition, ...). Do not call its methods after Close: most
// of them block forever on a closed kfake cluster.
func (c *Cluster) Kfake() *kfake.Cluster { return c.kc }

var errClosed = errors.New("kafkatest: cluster is closed")

// CreateTopic creates topic name with the given number of partitions (at
// least 1) and kfake's default replication factor. It returns an error
// wrapping kerr.TopicAlreadyExists if the topic exists. ctx is checked before
// the call; the creation itself is not interruptible (it is an in-memory
// operation).
func (c *Cluster) CreateTopic(ctx context.Context, name string, partitions int) error {
	if partitions < 1 {
		return fmt.Errorf("kafkatest: CreateTopic(%q, %d): need at least 1 partition", name, partitions)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.kc.CreateTopic(name, int32(partitions), nil); err != nil {
		return fmt.Errorf("kafkatest: creating topic %q: %w", name, err)
	}
	return nil
}

// Trim deletes every record below the high watermark of every partition of
// topic, as a DeleteRecords request to offset -1 would, so long runs do not
// grow the broker's memory. Afterwards each partition's log start offset
// (low watermark) equals its high watermark; committed group offsets are
// untouched. Records produced concurrently may or may not be trimmed.
//
// Trim goes straight to kfake's admin API, not through the request path, so
// faults and controls installed through Kfake do not affect it. It returns an
// error wrapping kerr.UnknownTopicOrPartition if topic does not exist. ctx is
// checked between partitions.
func (c *Cluster) Trim(ctx context.Context, topic string) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	parts := c.kc.PartitionInfos(topic)
	if parts == nil {
		return fmt.Errorf("kafkatest: trimming %q: %w", topic, kerr.UnknownTopicOrPartition)
	}
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := c.kc.DeleteRecords(topic, p.Partition, -1)
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			continue // deleted concurrently
		}
		if err != nil {
			return fmt.Errorf("kafkatest: trimming %s[%d]: %w", topic, p.Partition, err)
		}
	}
	return nil
}

// Topics lists the non-internal topics in the cluster, including those created
// by clients. It asks the cluster with a Metadata request over loopback, so
// unlike Trim it is subject to faults and controls installed through Kfake.
func (c *Cluster) Topics(ctx context.Context) ([]string, error) {
	cl, err := c.adminClient()
	if err != nil {
		return nil, err
	}
	req := kmsg.NewPtrMetadataRequest() // nil Topics: all topics
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: listing topics: %w", err)
	}
	var names []string
	for _, t := range resp.Topics {
		if t.Topic == nil || t.IsInternal {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return nil, fmt.Errorf("kafkatest: listing topic %q: %w", *t.Topic, err)
		}
		names = append(names, *t.Topic)
	}
	return names, nil
}

// TrimAll runs Trim on every topic reported by Topics. Topics deleted while it
// runs are skipped.
func (c *Cluster) TrimAll(ctx context.Context) error {
	topics, err := c.Topics(ctx)
	if err != nil {
		return err
	}
	for _, t := range topics {
		if err := c.Trim(ctx, t); err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return err
		}
	}
	return nil
}

func (c *Cluster) adminClient() (*kgo.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	if c.admin == nil {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.addrs...)}, c.cfg.kgoSecurity()...)...)
		if err != nil {
			return nil, fmt.Errorf("kafkatest: admin client: %w", err)
		}
		c.admin = cl
	}
	return c.admin, nil
}

// Close stops the cluster: it closes the listeners and, with DataDir, saves
// the state to disk. Clients still connected see their connections fail.
// Close is idempotent; after it, CreateTopic, Trim and Topics return errors.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.admin != nil {
		c.admin.Close()
	}
	c.kc.Close()
}
