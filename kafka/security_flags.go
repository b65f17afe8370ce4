package kafka

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// SecurityFlags defines a service's security flags on fs and returns the function that builds
// the Security once fs is parsed: --security-protocol, --sasl-mechanism, --sasl-username,
// --sasl-password-file, --tls-ca, --tls-cert and --tls-key (the examples also read each from its
// SLUICE_<NAME> variable, with pipeline/process.EnvFlags).
//
// The password has no flag: a flag's value shows in the process list (ps, /proc/PID/cmdline)
// and in shell history. It comes from the variable passwordEnv or from the file
// --sasl-password-file names (a mounted secret); both at once is an error. Errors name the flag
// or variable, never the password. The returned Security is checked by NewSource and
// NewProducer like any other.
func SecurityFlags(fs *flag.FlagSet, passwordEnv string) func() (Security, error) {
	var sec Security
	var pwFile string
	fs.StringVar(&sec.Protocol, "security-protocol", "", "Kafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl (default: derived from the SASL and TLS flags)")
	fs.StringVar(&sec.Mechanism, "sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default: no SASL)")
	fs.StringVar(&sec.Username, "sasl-username", "", "SASL username")
	fs.StringVar(&pwFile, "sasl-password-file", "", "file holding the SASL password (else the "+passwordEnv+" variable; there is no password flag)")
	fs.StringVar(&sec.CAFile, "tls-ca", "", "PEM file of the CA certificates that verify the brokers (default: the system's)")
	fs.StringVar(&sec.CertFile, "tls-cert", "", "PEM client certificate for mutual TLS (with --tls-key)")
	fs.StringVar(&sec.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	return func() (Security, error) {
		env, inEnv := os.LookupEnv(passwordEnv)
		switch {
		case inEnv && pwFile != "":
			return Security{}, fmt.Errorf("%s and --sasl-password-file are both set: give the password one way", passwordEnv)
		case inEnv:
			sec.Password = env
		case pwFile != "":
			b, err := os.ReadFile(pwFile)
			if err != nil {
				return Security{}, fmt.Errorf("--sasl-password-file: %w", err)
			}
			sec.Password = strings.TrimRight(string(b), "\r\n")
			if sec.Password == "" {
				return Security{}, errors.New("--sasl-password-file: the file is empty")
			}
		}
		return sec, nil
	}
}
