package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestSecurityValidation: each inconsistent Security is a configuration error naming the
// field, for the source and the producer, and none shows the password.
func TestSecurityValidation(t *testing.T) {
	const pwd = "Very-Secret-Pwd"
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		sec      kafka.Security
		override map[string]any
		want     string
	}{
		{kafka.Security{Mechanism: "SCRAM-SHA-256", Username: "u"}, nil, "Security.Password (sasl.password): is required"},
		{kafka.Security{Mechanism: "SCRAM-SHA-256", Password: pwd}, nil, "Security.Username (sasl.username): is required"},
		{kafka.Security{Mechanism: "GSSAPI", Username: "u", Password: pwd}, nil, `Security.Mechanism (sasl.mechanisms): unknown mechanism "GSSAPI"`},
		{kafka.Security{Username: "u", Password: pwd}, nil, "Security.Username/Password: set without Mechanism"},
		{kafka.Security{Protocol: "ssl", Mechanism: "PLAIN", Username: "u", Password: pwd}, nil, `Security.Mechanism (sasl.mechanisms): is set but Protocol is "ssl"`},
		{kafka.Security{Protocol: "sasl_ssl"}, nil, `Security.Mechanism (sasl.mechanisms): is required with Protocol "sasl_ssl"`},
		{kafka.Security{Protocol: "tls"}, nil, `Security.Protocol (security.protocol): unknown protocol "tls"`},
		{kafka.Security{CertFile: missing}, nil, "Security.CertFile/KeyFile: set both"},
		{kafka.Security{CAFile: missing}, nil, "Security.CAFile: cannot be read"},
		{kafka.Security{Protocol: "sasl_plaintext", Mechanism: "PLAIN", Username: "u", Password: pwd, CAFile: missing}, nil, `Security.Protocol (security.protocol): is "sasl_plaintext" but TLS files are set`},
		{kafka.Security{}, map[string]any{"sasl.password": pwd}, "sasl.password: set it with Security.Password"},
		{kafka.Security{Mechanism: "PLAIN", Username: "u", Password: pwd}, map[string]any{"security.protocol": "sasl_ssl"}, "security.protocol: set it with Security.Protocol, not Overrides"},
	} {
		cfg := kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Security: tc.sec, Overrides: tc.override}
		_, err := kafka.NewSource(cfg)
		if !errors.Is(err, kafka.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSource(%v): %v, want an ErrConfig containing %q", tc.sec, err, tc.want)
		}
		_, perr := kafka.NewProducer(kafka.ProducerConfig{Brokers: "127.0.0.1:1", Security: tc.sec, Overrides: tc.override})
		if want := strings.Replace(tc.want, "Security.", "ProducerConfig.Security.", 1); !errors.Is(perr, kafka.ErrConfig) || !strings.Contains(perr.Error(), want) {
			t.Errorf("NewProducer(%v): %v, want an ErrConfig containing %q", tc.sec, perr, want)
		}
		for _, e := range []error{err, perr} {
			if e != nil && strings.Contains(e.Error(), pwd) {
				t.Errorf("error shows the password: %v", e)
			}
		}
	}
}

// TestSecurityRedacted: printing, logging or marshalling a Config (or its Security) never
// shows the passwords, whatever the verb or handler.
func TestSecurityRedacted(t *testing.T) {
	const pwd, keyPwd = "Very-Secret-Pwd", "Key-Secret-Pwd"
	cfg := kafka.Config{Brokers: "b:9093", GroupID: "g", Topics: []string{"t"},
		Security: kafka.Security{Mechanism: "SCRAM-SHA-512", Username: "app", Password: pwd, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", KeyPassword: keyPwd}}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		fmt.Fprintf(&out, verb+"\n", cfg)
		fmt.Fprintf(&out, verb+"\n", cfg.Security)
		fmt.Fprintf(&out, verb+"\n", &cfg)
	}
	fmt.Fprintln(&out, cfg, cfg.Security)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "cfg", cfg, "sec", cfg.Security, "pcfg", kafka.ProducerConfig{Security: cfg.Security})
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "cfg", cfg, "sec", cfg.Security)
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	s := out.String()
	for _, secret := range []string{pwd, keyPwd, fmt.Sprintf("%x", pwd), fmt.Sprintf("%X", pwd)} {
		if strings.Contains(s, secret) {
			t.Fatalf("output shows a secret %q:\n%s", secret, s)
		}
	}
	for _, want := range []string{"Username:app", "[redacted]", `"username":"app"`, "sec.username=app", "CAFile:/ca.pem"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}

// TestSecurityInheritance: Source.NewProducer takes the source's Security; another one is an
// error naming the field.
func TestSecurityInheritance(t *testing.T) {
	sec := kafka.Security{Protocol: "sasl_plaintext", Mechanism: "PLAIN", Username: "app", Password: "pw-1"}
	src, err := kafka.NewSource(kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Security: sec, Logger: kafkatest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	other := sec
	other.Password = "pw-2"
	if _, err := src.NewProducer(kafka.ProducerConfig{Security: other}); !errors.Is(err, kafka.ErrConfig) || !strings.Contains(err.Error(), "ProducerConfig.Security: set it on the source's Config only") || strings.Contains(err.Error(), "pw-") {
		t.Fatalf("a producer with other credentials: %v", err)
	}
	for _, c := range []kafka.ProducerConfig{{}, {Security: sec}} {
		p, err := src.NewProducer(c)
		if err != nil {
			t.Fatalf("NewProducer(%v): %v", c.Security, err)
		}
		p.Close(context.Background())
	}
}

// lockedBuffer collects a logger's output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSecretsNotInLibrdkafkaLogs: with ForwardLogs and librdkafka's configuration, security
// and broker debug logs, the source and the producer log a run on the secured cluster, and a
// failed authentication, without ever showing the password.
func TestSecretsNotInLibrdkafkaLogs(t *testing.T) {
	s := startSecured(t, readTopic("in"), useGroup("g-log"), writeTopic("out"))
	s.produce(t, inputs(10, "v")...)
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	debug := map[string]any{"debug": "conf,security,broker,protocol", "log_level": 7}
	cfg := s.config("g-log", secAppPwd)
	cfg.Logger, cfg.ForwardLogs = log, true
	for k, v := range debug {
		cfg.Overrides[k] = v
	}
	src := newSource(t, cfg)
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out", ForwardLogs: true, Overrides: debug})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	r := start(t, src, func(b *pipeline.Builder) { toRecords(b, prod) })
	kafkatest.WaitFor(t, 60*time.Second, "every record to complete", func() bool { return r.p.Stats().Completed >= 10 })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	prod.Close(context.Background())

	// The same with a wrong password, whose failure is logged too.
	const wrong = "Wrong-Pa55word-9c1d"
	bad := s.config("g-log2", wrong)
	bad.Logger, bad.ForwardLogs = log, true
	for k, v := range debug {
		bad.Overrides[k] = v
	}
	rb := start(t, newSource(t, bad), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("drop", func(context.Context, *stage.Event) error { return nil }))
	})
	if err := runError(t, rb, 30*time.Second); !errors.Is(err, kafka.ErrAccessDenied) {
		t.Fatalf("wrong password: %v", err)
	}
	out := logs.String()
	if n := strings.Count(out, "librdkafka: "); n < 20 || !strings.Contains(out, "sasl.username") {
		t.Fatalf("only %d librdkafka lines forwarded, or no configuration dump: the test would see no leak:\n%.2000s", n, out)
	}
	for _, secret := range []string{secAppPwd, wrong} {
		if strings.Contains(out, secret) {
			i := strings.Index(out, secret)
			t.Fatalf("the logs show the password %q: ...%s...", secret, out[max(0, i-300):min(len(out), i+100)])
		}
	}
}
