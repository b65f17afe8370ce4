package service

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sluicehq/sluice/kafka"
)

// PasswordEnv holds the SASL password. The password has no flag: a flag's value shows in the
// process list (ps, /proc/PID/cmdline) and in shell history. It comes from this variable or
// from the file --sasl-password-file names (a mounted secret).
const PasswordEnv = EnvPrefix + "SASL_PASSWORD"

// securityFromFlags defines the security flags on fs (each falls back to its SLUICE_*
// variable, like every flag of ParseFlags) and returns the function that builds the
// kafka.Security once fs is parsed, reading the password from PasswordEnv or the password
// file. Errors name the flag or variable, never the password.
func securityFromFlags(fs *flag.FlagSet) func() (kafka.Security, error) {
	var sec kafka.Security
	var pwFile string
	fs.StringVar(&sec.Protocol, "security-protocol", "", "Kafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl (default: derived from the SASL and TLS flags)")
	fs.StringVar(&sec.Mechanism, "sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default: no SASL)")
	fs.StringVar(&sec.Username, "sasl-username", "", "SASL username")
	fs.StringVar(&pwFile, "sasl-password-file", "", "file holding the SASL password (else the "+PasswordEnv+" variable; there is no password flag)")
	fs.StringVar(&sec.CAFile, "tls-ca", "", "PEM file of the CA certificates that verify the brokers (default: the system's)")
	fs.StringVar(&sec.CertFile, "tls-cert", "", "PEM client certificate for mutual TLS (with --tls-key)")
	fs.StringVar(&sec.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	return func() (kafka.Security, error) {
		env, inEnv := os.LookupEnv(PasswordEnv)
		switch {
		case inEnv && pwFile != "":
			return kafka.Security{}, fmt.Errorf("%s and --sasl-password-file are both set: give the password one way", PasswordEnv)
		case inEnv:
			sec.Password = env
		case pwFile != "":
			b, err := os.ReadFile(pwFile)
			if err != nil {
				return kafka.Security{}, fmt.Errorf("--sasl-password-file: %w", err)
			}
			sec.Password = strings.TrimRight(string(b), "\r\n")
			if sec.Password == "" {
				return kafka.Security{}, errors.New("--sasl-password-file: the file is empty")
			}
		}
		return sec, nil
	}
}
