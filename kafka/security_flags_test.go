package kafka_test

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline/process"
)

// parseSecurity parses args (with the SLUICE_* variables as the examples read them) and
// returns the Security the flags built.
func parseSecurity(args []string, out io.Writer) (kafka.Security, error) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(out)
	security := kafka.SecurityFlags(fs, "SLUICE_SASL_PASSWORD")
	if err := fs.Parse(args); err != nil {
		return kafka.Security{}, err
	}
	if err := process.EnvFlags(fs, "SLUICE_"); err != nil {
		return kafka.Security{}, err
	}
	return security()
}

func TestSecurityFlags(t *testing.T) {
	t.Setenv("SLUICE_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("SLUICE_TLS_CA", "/etc/ca.pem")
	t.Setenv("SLUICE_SASL_PASSWORD", "env-Secret-1")
	sec, err := parseSecurity([]string{"--sasl-username", "app", "--security-protocol", "sasl_ssl"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := kafka.Security{Protocol: "sasl_ssl", Mechanism: "SCRAM-SHA-512", Username: "app", Password: "env-Secret-1", CAFile: "/etc/ca.pem"}
	if sec != want {
		t.Fatalf("Security %+v, want %+v", sec, want)
	}

	// The password file, with its trailing newline trimmed; not together with the variable.
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("file-Secret-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseSecurity([]string{"--sasl-password-file", file}, io.Discard); err == nil || !strings.Contains(err.Error(), "SLUICE_SASL_PASSWORD and --sasl-password-file are both set") {
		t.Fatalf("both password sources: %v", err)
	}
	os.Unsetenv("SLUICE_SASL_PASSWORD")
	sec, err = parseSecurity([]string{"--sasl-password-file", file, "--tls-cert", "c.pem", "--tls-key", "k.pem"}, io.Discard)
	if err != nil || sec.Password != "file-Secret-2" || sec.CertFile != "c.pem" || sec.KeyFile != "k.pem" {
		t.Fatalf("password file: %v %v", sec, err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseSecurity([]string{"--sasl-password-file", empty}, io.Discard); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty password file: %v", err)
	}

	// No flag takes the password itself, and the help does not offer one.
	var help bytes.Buffer
	if _, err := parseSecurity([]string{"--sasl-password", "x"}, &help); err == nil || !strings.Contains(help.String(), "flag provided but not defined: -sasl-password") {
		t.Fatalf("--sasl-password accepted: %v\n%s", err, help.String())
	}
	for _, f := range []string{"-security-protocol", "-sasl-mechanism", "-sasl-username", "-sasl-password-file", "-tls-ca", "-tls-cert", "-tls-key"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("help lacks %s", f)
		}
	}
}
