package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// The secured cluster of these tests: SASL/SCRAM-SHA-256 over TLS with ACLs; "admin" is the
// superuser (the test's own clients), "app" the pipeline's principal, granted per test.
const (
	secMech   = "SCRAM-SHA-256"
	secAdmin  = "admin"
	secAppPwd = "app-Pa55word-7f3e"
)

type securedCluster struct {
	*kafkatest.Cluster
	certs *kafkatest.Certs
}

func startSecured(t *testing.T, acls ...kfake.ACL) *securedCluster {
	t.Helper()
	certs, err := kafkatest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cl := startCluster(t, kafkatest.SASL(secMech, secAdmin, "admin-Pa55word"), kafkatest.TLS(certs.Server, certs.CAFile),
		kafkatest.ACLs(), kafkatest.User(secMech, "app", secAppPwd, acls...),
		kafkatest.Topic("in", 1), kafkatest.Topic("out", 2), kafkatest.Topic("dlq", 1))
	return &securedCluster{cl, certs}
}

// security is the app principal's Security with password pwd (protocol derived: sasl_ssl).
func (s *securedCluster) security(pwd string) kafka.Security {
	return kafka.Security{Mechanism: secMech, Username: "app", Password: pwd, CAFile: s.certs.CAFile}
}

func (s *securedCluster) config(group string, pwd string) kafka.Config {
	cfg := sourceConfig(s.Addr(), group, "in")
	cfg.Security = s.security(pwd)
	return cfg
}

func (s *securedCluster) produce(t *testing.T, values ...string) {
	t.Helper()
	if err := kafkatest.ProduceWith(s.ClientConfig(), "in", values...); err != nil {
		t.Fatal(err)
	}
}

// committedSum is the group's committed offset of "in" (one partition; 0 when none).
func (s *securedCluster) committedSum(t *testing.T, group string) int64 {
	t.Helper()
	n, err := kafkatest.CommittedSumWith(s.ClientConfig(), group, "in", 1)
	var ke ckafka.Error
	if errors.As(err, &ke) && ke.Code() == ckafka.ErrGroupIDNotFound { // kfake: a group that never joined
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func allow(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
	return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
}

func readTopic(topic string) kfake.ACL {
	return allow(kmsg.ACLResourceTypeTopic, topic, kmsg.ACLOperationRead)
}
func writeTopic(topic string) kfake.ACL {
	return allow(kmsg.ACLResourceTypeTopic, topic, kmsg.ACLOperationWrite)
}
func useGroup(group string) kfake.ACL {
	return allow(kmsg.ACLResourceTypeGroup, group, kmsg.ACLOperationRead)
}

// runError waits up to d for Run to return on its own and returns its error.
func runError(t *testing.T, r *running, d time.Duration) error {
	t.Helper()
	returned := false
	r.once.Do(func() {
		select {
		case r.err = <-r.done:
			returned = true
		case <-time.After(d):
			r.cancel()
			<-r.done
		}
	})
	if !returned {
		t.Fatalf("Run did not return within %v: a refusal must stop it, not be retried", d)
	}
	return r.err
}

func inputs(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// toRecords is the pipeline of these tests: each input becomes one record for "out"; an input
// "POISON" fails the stage.
func toRecords(b *pipeline.Builder, prod *kafka.Producer) {
	recs := pipeline.Then(b.Source(), stage.Map("to-record", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		if string(ev.Value) == "POISON" {
			return kafka.Record{}, errors.New("cannot decode")
		}
		return kafka.Record{Key: ev.Key, Value: append([]byte("out-"), ev.Value...)}, nil
	}))
	pipeline.To(recs, prod.Sink("produce"))
}

// TestSecuredEndToEnd: SCRAM-SHA-256 over TLS with ACLs granting exactly what the pipeline
// needs: consume, produce, commit, and the producer inherits the source's Security.
func TestSecuredEndToEnd(t *testing.T) {
	const n = 50
	s := startSecured(t, readTopic("in"), useGroup("g-sec"), writeTopic("out"))
	s.produce(t, inputs(n, "v")...)
	src := newSource(t, s.config("g-sec", secAppPwd))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	r := start(t, src, func(b *pipeline.Builder) { toRecords(b, prod) })
	kafkatest.WaitFor(t, 60*time.Second, "every record to complete", func() bool { return r.p.Stats().Completed >= n })
	kafkatest.WaitFor(t, 30*time.Second, "the commit of every record", func() bool { return s.committedSum(t, "g-sec") == n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	msgs, err := kafkatest.ReadMessagesWith(s.ClientConfig(), "out", n, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range msgs {
		got[string(m.Value)] = true
	}
	for _, v := range inputs(n, "v") {
		if !got["out-"+v] {
			t.Fatalf("out lacks %q (read %d records)", "out-"+v, len(msgs))
		}
	}
	if len(msgs) != n || r.p.Stats().Failed != 0 {
		t.Fatalf("read %d records from out, want %d; failed %d", len(msgs), n, r.p.Stats().Failed)
	}
}

// requireDenied checks that err is the refusal: ErrAccessDenied, a librdkafka error with one
// of codes, and the words a reader needs.
func requireDenied(t *testing.T, err error, codes []ckafka.ErrorCode, words ...string) {
	t.Helper()
	var ke ckafka.Error
	if !errors.Is(err, kafka.ErrAccessDenied) || !errors.As(err, &ke) || !slices.Contains(codes, ke.Code()) {
		t.Fatalf("error %v: want ErrAccessDenied wrapping librdkafka's %v", err, codes)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
	t.Logf("error: %v", err)
}

// TestFaultWrongPassword: the source's SASL authentication fails: Run returns an error naming
// the authentication failure instead of retrying for ever, and nothing is committed.
func TestFaultWrongPassword(t *testing.T) {
	s := startSecured(t, readTopic("in"), useGroup("g-pwd"), writeTopic("out"))
	s.produce(t, inputs(5, "v")...)
	start0 := time.Now()
	r := start(t, newSource(t, s.config("g-pwd", "not-the-password")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("drop", func(context.Context, *stage.Event) error { return nil }))
	})
	err := runError(t, r, 30*time.Second)
	// A real broker answers SASL_AUTHENTICATION_FAILED (librdkafka: ErrAuthentication); kfake
	// closes the connection (librdkafka: ErrTransport "SASL authentication error").
	requireDenied(t, err, []ckafka.ErrorCode{ckafka.ErrAuthentication, ckafka.ErrTransport}, "authentication failed", "g-pwd")
	t.Logf("Run returned after %v", time.Since(start0))
	if strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("the error shows the password: %v", err)
	}
	if c := s.committedSum(t, "g-pwd"); c != 0 {
		t.Fatalf("committed %d, want nothing", c)
	}
}

// TestFaultNoReadAccess: a principal without read access to the topic, or without access to
// its consumer group: Run returns an error naming the authorization that failed; nothing is
// committed and nothing is processed.
func TestFaultNoReadAccess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acls  []kfake.ACL
		code  ckafka.ErrorCode
		words []string
	}{
		{"topic", []kfake.ACL{useGroup("g-acl"), writeTopic("out")}, ckafka.ErrTopicAuthorizationFailed, []string{"topic authorization failed", "[in]"}},
		{"topic-read", []kfake.ACL{allow(kmsg.ACLResourceTypeTopic, "in", kmsg.ACLOperationDescribe), useGroup("g-acl"), writeTopic("out")}, ckafka.ErrTopicAuthorizationFailed, []string{"topic authorization failed", "[in]"}},
		{"group", []kfake.ACL{readTopic("in"), writeTopic("out")}, ckafka.ErrGroupAuthorizationFailed, []string{"group authorization failed", `"g-acl"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSecured(t, tc.acls...)
			s.produce(t, inputs(5, "v")...)
			var processed seen
			r := start(t, newSource(t, s.config("g-acl", secAppPwd)), func(b *pipeline.Builder) {
				pipeline.To(b.Source(), processed.sink("collect", nil))
			})
			requireDenied(t, runError(t, r, 30*time.Second), []ckafka.ErrorCode{tc.code}, tc.words...)
			if c, p := s.committedSum(t, "g-acl"), len(processed.all()); c != 0 || p != 0 {
				t.Fatalf("committed %d, processed %d: want none", c, p)
			}
		})
	}
}

// TestFaultNoWriteAccess: the principal may consume but not write the output topic (then a
// dead-letter handler does not take the failures: every record would follow), or not write
// the dead-letter topic: the delivery fails with the topic's authorization error, Run stops
// with it, and no offset is committed past an input whose output was not written.
func TestFaultNoWriteAccess(t *testing.T) {
	t.Run("output", func(t *testing.T) {
		s := startSecured(t, readTopic("in"), useGroup("g-w"), writeTopic("dlq"))
		s.produce(t, inputs(5, "v")...)
		src := newSource(t, s.config("g-w", secAppPwd))
		prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close(context.Background())
		r := start(t, src, func(b *pipeline.Builder) { toRecords(b, prod) }, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
		err = runError(t, r, 30*time.Second)
		requireDenied(t, err, []ckafka.ErrorCode{ckafka.ErrTopicAuthorizationFailed}, "topic authorization failed", "out")
		if !errors.Is(err, stage.ErrNotDelivered) {
			t.Fatalf("error %v does not wrap stage.ErrNotDelivered", err)
		}
		if c, dl := s.committedSum(t, "g-w"), prod.Stats().DeadLetters; c != 0 || dl != 0 {
			t.Fatalf("committed %d, dead-lettered %d: want none", c, dl)
		}
	})
	t.Run("dead-letter", func(t *testing.T) {
		const poisonAt = 3
		s := startSecured(t, readTopic("in"), useGroup("g-d"), writeTopic("out"))
		vals := inputs(8, "v")
		vals[poisonAt] = "POISON"
		s.produce(t, vals...)
		src := newSource(t, s.config("g-d", secAppPwd))
		prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close(context.Background())
		r := start(t, src, func(b *pipeline.Builder) { toRecords(b, prod) }, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
		requireDenied(t, runError(t, r, 30*time.Second), []ckafka.ErrorCode{ckafka.ErrTopicAuthorizationFailed}, "topic authorization failed", "dead letter to dlq", "in[0]@3")
		if c := s.committedSum(t, "g-d"); c > poisonAt {
			t.Fatalf("committed offset %d passes the record at %d that was neither processed nor dead-lettered", c, poisonAt)
		}
	})
}

// TestFaultProducerWrongPassword: a standalone producer whose authentication fails: its
// records fail with the refusal within seconds (not after message.timeout.ms, 5 minutes by
// default), Run stops with it, and no input is committed.
func TestFaultProducerWrongPassword(t *testing.T) {
	s := startSecured(t, readTopic("in"), useGroup("g-pp"), writeTopic("out"))
	s.produce(t, inputs(5, "v")...)
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: s.Addr(), Topic: "out", Security: s.security("Wrong-Pa55"), Logger: kafkatest.Logger(), Budget: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	r := start(t, newSource(t, s.config("g-pp", secAppPwd)), func(b *pipeline.Builder) { toRecords(b, prod) })
	err = runError(t, r, 30*time.Second)
	requireDenied(t, err, []ckafka.ErrorCode{ckafka.ErrAuthentication, ckafka.ErrTransport}, "authentication failed", "kafka: producer")
	if !errors.Is(err, stage.ErrNotDelivered) {
		t.Fatalf("error %v does not wrap stage.ErrNotDelivered", err)
	}
	if c := s.committedSum(t, "g-pp"); c != 0 {
		t.Fatalf("committed %d, want nothing", c)
	}
}

// TestFaultUntrustedBroker: the brokers' certificate is not signed by the CA the client
// trusts: Run returns an error naming the TLS failure instead of reconnecting for ever.
func TestFaultUntrustedBroker(t *testing.T) {
	s := startSecured(t, readTopic("in"), useGroup("g-ca"))
	other, err := kafkatest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.config("g-ca", secAppPwd)
	cfg.Security.CAFile = other.CAFile
	r := start(t, newSource(t, cfg), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("drop", func(context.Context, *stage.Event) error { return nil }))
	})
	requireDenied(t, runError(t, r, 30*time.Second), []ckafka.ErrorCode{ckafka.ErrSsl}, "TLS handshake failed", "CAFile")
}
