package service

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/kafka"
)

func TestSecurityFlags(t *testing.T) {
	def := Defaults{Topic: "t", Group: "g", Budget: 1}
	t.Setenv("SLUICE_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("SLUICE_TLS_CA", "/etc/ca.pem")
	t.Setenv(PasswordEnv, "env-Secret-1")
	c, err := ParseFlags("x", []string{"--brokers", "b:9093", "--sasl-username", "app", "--security-protocol", "sasl_ssl"}, def, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := kafka.Security{Protocol: "sasl_ssl", Mechanism: "SCRAM-SHA-512", Username: "app", Password: "env-Secret-1", CAFile: "/etc/ca.pem"}
	if c.Security != want {
		t.Fatalf("Security %+v, want %+v", c.Security, want)
	}

	// The password file, with its trailing newline trimmed; not together with the variable.
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("file-Secret-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFlags("x", []string{"--brokers", "b:9093", "--sasl-password-file", file}, def, io.Discard, nil); err == nil || !strings.Contains(err.Error(), PasswordEnv+" and --sasl-password-file are both set") {
		t.Fatalf("both password sources: %v", err)
	}
	os.Unsetenv(PasswordEnv)
	c, err = ParseFlags("x", []string{"--brokers", "b:9093", "--sasl-password-file", file, "--tls-cert", "c.pem", "--tls-key", "k.pem"}, def, io.Discard, nil)
	if err != nil || c.Security.Password != "file-Secret-2" || c.Security.CertFile != "c.pem" || c.Security.KeyFile != "k.pem" {
		t.Fatalf("password file: %+v %v", c, err)
	}

	// No flag takes the password itself, and the help does not offer one.
	var help bytes.Buffer
	if _, err := ParseFlags("x", []string{"--brokers", "b:9093", "--sasl-password", "x"}, def, &help, nil); err == nil || !strings.Contains(help.String(), "flag provided but not defined: -sasl-password") {
		t.Fatalf("--sasl-password accepted: %v\n%s", err, help.String())
	}
	for _, f := range []string{"-security-protocol", "-sasl-mechanism", "-sasl-username", "-sasl-password-file", "-tls-ca", "-tls-cert", "-tls-key"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("help lacks %s", f)
		}
	}

	// The embedded broker is plaintext: security settings without --brokers are an error.
	if _, err := ParseFlags("x", nil, def, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "need --brokers") {
		t.Fatalf("security with the embedded broker: %v", err)
	}
}
