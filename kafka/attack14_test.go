package kafka_test

// Adversarial tests of the production kit's security handling (issue 14), public API only.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/kafka"
)

const a14Secret = "hunter2-a14-s3cret"

// TestAttack14SecretNotPrinted: "Password and KeyPassword never leave the process through
// sluice": the Security and Config print forms, and the sluice objects built from them (the
// Source and the Producer, which a service may well log as "source", src), must not show
// the password, in fmt's verbs or slog's text and JSON handlers (nested in a group too).
func TestAttack14SecretNotPrinted(t *testing.T) {
	sec := kafka.Security{Protocol: "sasl_plaintext", Mechanism: "SCRAM-SHA-512", Username: "orders", Password: a14Secret}
	cfg := kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Security: sec}
	src, err := kafka.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())

	type wrapper struct {
		Name string
		Cfg  kafka.Config
		Ptr  *kafka.Security
	}
	values := map[string]any{"security": sec, "*security": &sec, "config": cfg, "*config": &cfg,
		"wrapper": wrapper{"w", cfg, &sec}, "[]security": []kafka.Security{sec}, "map": map[string]kafka.Config{"c": cfg},
		"source": src, "producer": prod}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			if s := fmt.Sprintf(verb, v); strings.Contains(s, a14Secret) || strings.Contains(s, fmt.Sprintf("%x", a14Secret)) {
				t.Errorf("fmt %s of %s shows the password: %.300s", verb, name, s)
			}
		}
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("m", name, v)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", slog.Group("kafka", slog.Group("inner", name, v)))
		slog.New(slog.NewJSONHandler(&buf, nil)).WithGroup("g").Info("m", name, v)
		if strings.Contains(buf.String(), a14Secret) {
			t.Errorf("slog of %s shows the password: %.400s", name, buf.String())
		}
		if b, err := json.Marshal(v); err == nil && bytes.Contains(b, []byte(a14Secret)) {
			t.Errorf("json of %s shows the password: %s", name, b)
		}
	}
}

// TestAttack14PasswordFile: a mounted secret written on Windows (CRLF) or by echo (LF) gives
// the password without its line ending; a bad setting never echoes the password in an error.
func TestAttack14PasswordFile(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		a14Secret + "\r\n": a14Secret, a14Secret + "\n": a14Secret, a14Secret: a14Secret, a14Secret + "\n\n": a14Secret,
	} {
		file := filepath.Join(dir, "pw")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("svc", flag.ContinueOnError)
		build := kafka.SecurityFlags(fs, "A14_NO_SUCH_PASSWORD_VAR")
		if err := fs.Parse([]string{"--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "u", "--sasl-password-file", file}); err != nil {
			t.Fatal(err)
		}
		sec, err := build()
		if err != nil {
			t.Fatal(err)
		}
		if sec.Password != want {
			t.Errorf("file %q: password %q, want %q", content, sec.Password, want)
		}
	}
	// Errors from NewSource with the secret in every other field must not echo the secret
	// where it stands for the password (the password field itself).
	bad := []kafka.Security{
		{Mechanism: "SCRAM-SHA-256", Password: a14Secret},                               // no username
		{Mechanism: "GSSAPI", Username: "u", Password: a14Secret},                       // unknown mechanism
		{Protocol: "plaintext", Mechanism: "PLAIN", Username: "u", Password: a14Secret}, // mechanism without sasl
		{Password: a14Secret},    // no mechanism
		{KeyPassword: a14Secret}, // no key file
		{Protocol: "ssl", CAFile: "/nonexistent/ca.pem", KeyPassword: a14Secret}, // unreadable file
	}
	for _, sec := range bad {
		src, err := kafka.NewSource(kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Security: sec})
		if err == nil {
			src.Close(context.Background())
			t.Errorf("%v accepted", sec)
			continue
		}
		if strings.Contains(err.Error(), a14Secret) {
			t.Errorf("NewSource error shows the password: %v", err)
		}
	}
}
