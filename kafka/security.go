package kafka

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Security is how a client authenticates to the cluster and encrypts its connections: SASL
// (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and TLS. The zero value is a plaintext connection with
// no authentication (librdkafka's default). Config.Security and ProducerConfig.Security take
// it; Source.NewProducer inherits the source's.
//
// Each field maps to one librdkafka property, set only when the field is. A field that is set
// may not also be given in Overrides (a configuration error names both). Mechanisms this type
// does not cover (GSSAPI, OAUTHBEARER) go through Overrides with Security left zero.
//
// Secrets: Password and KeyPassword never leave the process through sluice. Security's String,
// Format (every fmt verb, %v, %+v and %#v included, also as a field of Config), LogValue (slog)
// and MarshalJSON print "[redacted]" in their place (an empty secret prints as ""), so logging
// or printing a Config does not reveal them; librdkafka redacts them in its own logs too.
type Security struct {
	// Protocol is security.protocol: "plaintext", "ssl", "sasl_plaintext" or "sasl_ssl" (any
	// case). Default: derived from the other fields: "sasl_ssl" when Mechanism and a TLS file
	// are set, "sasl_plaintext" with Mechanism alone, "ssl" with TLS files alone, else
	// "plaintext". Set it to "sasl_ssl" or "ssl" to use TLS with the system's CA store (no
	// CAFile).
	Protocol string
	// Mechanism is sasl.mechanisms: "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512". Default none
	// (no SASL). Requires Username and Password, and a sasl_* Protocol. PLAIN sends the
	// password as is: use it only over TLS (sasl_ssl).
	Mechanism string
	// Username is sasl.username. Required with Mechanism.
	Username string
	// Password is sasl.password. Required with Mechanism. Redacted wherever Security is
	// printed, logged or marshalled.
	Password string
	// CAFile is ssl.ca.location: a PEM file of the CA certificates that verify the brokers.
	// Default: the system's CA store. It must be a readable file (checked at construction).
	CAFile string
	// CertFile and KeyFile are ssl.certificate.location and ssl.key.location: the client's
	// PEM certificate and private key for mutual TLS. Set both or neither; both must be
	// readable files.
	CertFile, KeyFile string
	// KeyPassword is ssl.key.password, for an encrypted KeyFile. Redacted like Password.
	KeyPassword string
}

// redacted replaces a secret wherever Security is shown.
const redacted = "[redacted]"

func secret(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// IsZero reports whether no field is set (plaintext, no authentication).
func (s Security) IsZero() bool { return s == Security{} }

// String shows every field, with the secrets redacted.
func (s Security) String() string {
	return fmt.Sprintf("{Protocol:%s Mechanism:%s Username:%s Password:%s CAFile:%s CertFile:%s KeyFile:%s KeyPassword:%s}",
		s.Protocol, s.Mechanism, s.Username, secret(s.Password), s.CAFile, s.CertFile, s.KeyFile, secret(s.KeyPassword))
}

// Format prints String for every verb (%v, %+v, %#v, %s, %q, %x...), so no verb reaches the
// secrets through fmt's default struct printing.
func (s Security) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	fmt.Fprint(f, s.String())
}

// LogValue is Security for log/slog, with the secrets redacted.
func (s Security) LogValue() slog.Value {
	return slog.GroupValue(slog.String("protocol", s.Protocol), slog.String("mechanism", s.Mechanism),
		slog.String("username", s.Username), slog.String("password", secret(s.Password)),
		slog.String("ca_file", s.CAFile), slog.String("cert_file", s.CertFile), slog.String("key_file", s.KeyFile),
		slog.String("key_password", secret(s.KeyPassword)))
}

// MarshalJSON is Security in JSON (slog's JSONHandler, a config dump), with the secrets
// redacted.
func (s Security) MarshalJSON() ([]byte, error) {
	type plain Security // no methods: no recursion
	p := plain(s)
	p.Password, p.KeyPassword = secret(s.Password), secret(s.KeyPassword)
	return json.Marshal(p)
}

// Protocols and mechanisms Security accepts (lower-case protocols, as librdkafka spells them).
var (
	protocols  = []string{"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"}
	mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
)

// securityKeys are the librdkafka properties Security sets, by the field that sets them.
var securityKeys = map[string]string{
	"security.protocol":        "Security.Protocol",
	"sasl.mechanisms":          "Security.Mechanism",
	"sasl.mechanism":           "Security.Mechanism", // librdkafka's alias
	"sasl.username":            "Security.Username",
	"sasl.password":            "Security.Password",
	"ssl.ca.location":          "Security.CAFile",
	"ssl.certificate.location": "Security.CertFile",
	"ssl.key.location":         "Security.KeyFile",
	"ssl.key.password":         "Security.KeyPassword",
}

// protocol returns the effective security.protocol (lower case).
func (s Security) protocol() string {
	if s.Protocol != "" {
		return strings.ToLower(s.Protocol)
	}
	tls := s.CAFile != "" || s.CertFile != "" || s.KeyFile != ""
	switch {
	case s.Mechanism != "" && tls:
		return "sasl_ssl"
	case s.Mechanism != "":
		return "sasl_plaintext"
	case tls:
		return "ssl"
	}
	return "plaintext"
}

// validate checks the fields against each other and the files on disk; prefix names the
// struct ("Security" or "ProducerConfig.Security"). No error shows a secret.
func (s Security) validate(prefix string, overrides map[string]any) []error {
	var errs []error
	field := func(f string) string { return prefix + "." + f }
	proto := s.protocol()
	if !contains(protocols, proto) {
		errs = append(errs, configErr(field("Protocol")+" (security.protocol)", "unknown protocol %q, want one of %s", s.Protocol, strings.Join(protocols, ", ")))
	}
	sasl := strings.HasPrefix(proto, "sasl_")
	switch {
	case s.Mechanism != "" && !contains(mechanisms, strings.ToUpper(s.Mechanism)):
		errs = append(errs, configErr(field("Mechanism")+" (sasl.mechanisms)", "unknown mechanism %q, want one of %s (others through Overrides, with Security zero)", s.Mechanism, strings.Join(mechanisms, ", ")))
	case s.Mechanism != "" && !sasl && contains(protocols, proto):
		errs = append(errs, configErr(field("Mechanism")+" (sasl.mechanisms)", "is set but Protocol is %q: use sasl_ssl or sasl_plaintext", proto))
	case s.Mechanism == "" && sasl:
		errs = append(errs, configErr(field("Mechanism")+" (sasl.mechanisms)", "is required with Protocol %q", proto))
	}
	if s.Mechanism != "" {
		if s.Username == "" {
			errs = append(errs, configErr(field("Username")+" (sasl.username)", "is required with Mechanism %s", s.Mechanism))
		}
		if s.Password == "" {
			errs = append(errs, configErr(field("Password")+" (sasl.password)", "is required with Mechanism %s", s.Mechanism))
		}
	} else if s.Username != "" || s.Password != "" {
		errs = append(errs, configErr(field("Username/Password"), "set without Mechanism: say which SASL mechanism they are for"))
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		errs = append(errs, configErr(field("CertFile/KeyFile"), "set both (mutual TLS) or neither"))
	}
	if s.KeyPassword != "" && s.KeyFile == "" {
		errs = append(errs, configErr(field("KeyPassword")+" (ssl.key.password)", "is set without KeyFile"))
	}
	tlsFiles := s.CAFile != "" || s.CertFile != "" || s.KeyFile != ""
	if tlsFiles && (proto == "plaintext" || proto == "sasl_plaintext") {
		errs = append(errs, configErr(field("Protocol")+" (security.protocol)", "is %q but TLS files are set: use ssl or sasl_ssl", proto))
	}
	for _, f := range []struct{ name, path string }{{"CAFile", s.CAFile}, {"CertFile", s.CertFile}, {"KeyFile", s.KeyFile}} {
		if f.path == "" {
			continue
		}
		if fh, err := os.Open(f.path); err != nil {
			errs = append(errs, configErr(field(f.name), "cannot be read: %v", err))
		} else {
			fh.Close()
		}
	}
	if !s.IsZero() {
		for key := range overrides {
			if f, ok := securityKeys[key]; ok {
				errs = append(errs, configErr(key, "set it with %s, not Overrides (Security is set)", strings.Replace(f, "Security", prefix, 1)))
			}
		}
	}
	for _, key := range []string{"sasl.password", "ssl.key.password"} {
		if _, ok := overrides[key]; ok && s.IsZero() {
			errs = append(errs, configErr(key, "set it with %s, which keeps it out of logs, not Overrides", strings.Replace(securityKeys[key], "Security", prefix, 1)))
		}
	}
	return errs
}

// apply sets the librdkafka properties of the fields that are set.
func (s Security) apply(cm ckafka.ConfigMap) {
	if s.IsZero() {
		return
	}
	cm["security.protocol"] = s.protocol()
	for key, v := range map[string]string{
		"sasl.mechanisms": strings.ToUpper(s.Mechanism), "sasl.username": s.Username, "sasl.password": s.Password,
		"ssl.ca.location": s.CAFile, "ssl.certificate.location": s.CertFile, "ssl.key.location": s.KeyFile,
		"ssl.key.password": s.KeyPassword,
	} {
		if v != "" {
			cm[key] = v
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ErrAccessDenied is wrapped by the error that stops a Source, a Sink or a dead-letter handler
// when the cluster refuses the client: a failed authentication (wrong password, unknown user,
// a TLS handshake the broker or the client rejects) or a missing authorization (no ACL to read
// the topic, to use the group, to write the output or dead-letter topic). Retrying cannot help
// until someone changes the credentials or the ACLs, so sluice stops instead of retrying
// silently; the librdkafka error (a ckafka.Error) is wrapped too and names the cause.
var ErrAccessDenied = errors.New("kafka: access denied")

// accessDenied reports whether err is an authentication or authorization failure.
func accessDenied(err error) bool {
	var ke ckafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke.Code() {
	case ckafka.ErrAuthentication, ckafka.ErrSaslAuthenticationFailed, ckafka.ErrTopicAuthorizationFailed,
		ckafka.ErrGroupAuthorizationFailed, ckafka.ErrClusterAuthorizationFailed,
		ckafka.ErrTransactionalIDAuthorizationFailed, ckafka.ErrDelegationTokenAuthorizationFailed,
		ckafka.ErrIllegalSaslState, ckafka.ErrUnsupportedSaslMechanism:
		return true
	}
	return false
}

// deniedHint says in words what a refusal means, for the error that stops the client.
func deniedHint(code ckafka.ErrorCode) string {
	switch code {
	case ckafka.ErrAuthentication, ckafka.ErrSaslAuthenticationFailed, ckafka.ErrIllegalSaslState, ckafka.ErrUnsupportedSaslMechanism:
		return "authentication failed (check Security: mechanism, username, password, TLS)"
	case ckafka.ErrTopicAuthorizationFailed:
		return "topic authorization failed (the principal lacks an ACL on the topic)"
	case ckafka.ErrGroupAuthorizationFailed:
		return "group authorization failed (the principal lacks an ACL on the consumer group)"
	case ckafka.ErrClusterAuthorizationFailed:
		return "cluster authorization failed (the principal lacks an ACL on the cluster, e.g. IdempotentWrite)"
	}
	return "authorization failed"
}

// A broker that refuses SASL credentials answers SaslAuthenticate with
// SASL_AUTHENTICATION_FAILED, which librdkafka reports as ErrAuthentication. Some close the
// connection instead (Kafka before 1.0, some proxies, the embedded kfake broker), which
// librdkafka reports as a transport failure "SASL authentication error: SaslAuthenticateRequest
// failed". A TLS handshake that fails (an untrusted or expired certificate, a broker that does
// not speak TLS) is ErrSsl. librdkafka retries both for ever. One such failure may be a broker
// going down; handshakeLimit of them within handshakeWindow (librdkafka reconnects after 0.1,
// 1 and 3 s or so) are a refusal.
const (
	handshakeLimit  = 3
	handshakeWindow = 30 * time.Second
)

// handshakes counts the connections that failed in their SASL or TLS handshake. Owned by one
// goroutine (the source's polling one, the producer's report reader).
type handshakes struct {
	sasl, tls counter
}

type counter struct {
	n     int
	first time.Time
}

// add counts one failure and reports whether the limit is reached within the window.
func (c *counter) add() bool {
	if now := time.Now(); c.n == 0 || now.Sub(c.first) > handshakeWindow {
		c.n, c.first = 0, now
	}
	c.n++
	return c.n >= handshakeLimit
}

// refused counts e if it is a failed handshake and, once the limit is reached, returns what
// the failure means.
func (h *handshakes) refused(e ckafka.Error) (hint string, ok bool) {
	switch {
	case e.Code() == ckafka.ErrTransport && strings.Contains(e.Error(), "SASL authentication error"):
		return "authentication failed: the broker closed the connection in answer to SASL authentication, 3 times in a row (check Security: Mechanism, Username, Password)", h.sasl.add()
	case e.Code() == ckafka.ErrSsl:
		return "TLS handshake failed 3 times in a row (check Security: CAFile, CertFile, KeyFile, Protocol)", h.tls.add()
	}
	return "", false
}

// reset forgets the failures counted (the client connected since).
func (h *handshakes) reset() { *h = handshakes{} }
