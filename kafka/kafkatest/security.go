package kafkatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// A secured cluster: SASL turns on authentication for every connection, ACLs turn on
// authorization for every request, TLS encrypts the listeners. The superuser given to SASL is
// the cluster's own identity: Cluster.ClientConfig and the admin client behind Topics use it,
// and it bypasses ACLs. Pass ClientConfig's properties to the package's client helpers
// (CommittedWith, ProduceWith, ReadMessagesWith) on a secured cluster; the helpers that take
// only a bootstrap list connect in plaintext without credentials.

// SASL enables SASL authentication with user as the superuser, authenticating with mechanism
// ("PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512") and password. Default: no SASL (kfake's
// default superuser admin/admin applies only when SASL is enabled without any user).
func SASL(mechanism, user, password string) Option {
	return func(c *config) {
		c.sasl = &saslUser{mechanism, user, password}
		c.kfakeOpts = append(c.kfakeOpts, kfake.EnableSASL(), kfake.Superuser(mechanism, user, password))
	}
}

// User adds a SASL user subject to ACLs, with the ACLs it is granted (ACL.Principal is
// ignored: it is "User:"+user). Use it with SASL and ACLs.
func User(mechanism, user, password string, acls ...kfake.ACL) Option {
	return func(c *config) { c.kfakeOpts = append(c.kfakeOpts, kfake.User(mechanism, user, password, acls...)) }
}

// ACLs enables ACL checks: every request of a user that is not the superuser is refused
// unless an ACL allows it. Default: no checks.
func ACLs() Option {
	return func(c *config) { c.kfakeOpts = append(c.kfakeOpts, kfake.EnableACLs()) }
}

// TLS makes the brokers listen with TLS using server; caFile is the PEM file of the CA that
// signed its certificate, which ClientConfig gives clients as ssl.ca.location. NewCerts makes
// both. Default: plaintext listeners.
func TLS(server *tls.Config, caFile string) Option {
	return func(c *config) {
		c.tls, c.caFile = server, caFile
		c.kfakeOpts = append(c.kfakeOpts, kfake.TLS(server))
	}
}

type saslUser struct{ mechanism, user, password string }

// ClientConfig returns the librdkafka properties that connect to the cluster as its
// superuser: bootstrap.servers, and security.protocol, sasl.* and ssl.ca.location as the
// cluster's SASL and TLS options require. A new map each call.
func (c *Cluster) ClientConfig() map[string]any {
	cm := map[string]any{"bootstrap.servers": c.Addr()}
	proto := "plaintext"
	if c.cfg.tls != nil {
		proto = "ssl"
		cm["ssl.ca.location"] = c.cfg.caFile
	}
	if s := c.cfg.sasl; s != nil {
		proto = "sasl_" + proto
		cm["sasl.mechanisms"], cm["sasl.username"], cm["sasl.password"] = s.mechanism, s.user, s.password
	}
	cm["security.protocol"] = proto
	return cm
}

// kgoSecurity returns the admin client's options for the cluster's SASL and TLS.
func (cfg *config) kgoSecurity() []kgo.Opt {
	var opts []kgo.Opt
	if cfg.tls != nil {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(cfg.caFile); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	if s := cfg.sasl; s != nil {
		var m sasl.Mechanism
		switch strings.ToUpper(s.mechanism) {
		case "PLAIN":
			m = plain.Auth{User: s.user, Pass: s.password}.AsMechanism()
		case "SCRAM-SHA-512":
			m = scram.Auth{User: s.user, Pass: s.password}.AsSha512Mechanism()
		default:
			m = scram.Auth{User: s.user, Pass: s.password}.AsSha256Mechanism()
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}

// Certs is a self-signed CA and a certificate it signed for 127.0.0.1 and localhost, as PEM
// files, for TLS tests. The same certificate serves as the brokers' (Server) and as a client
// certificate for mutual TLS (CertFile, KeyFile).
type Certs struct {
	CAFile, CertFile, KeyFile string
	Server                    *tls.Config
}

// NewCerts generates a CA and a certificate (ECDSA P-256, valid for a day) and writes them in
// dir as ca.pem, cert.pem and key.pem.
func NewCerts(dir string) (*Certs, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kafkatest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &Certs{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	for path, block := range map[string]*pem.Block{c.CAFile: {Type: "CERTIFICATE", Bytes: caDER},
		c.CertFile: {Type: "CERTIFICATE", Bytes: der}, c.KeyFile: {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, fmt.Errorf("kafkatest: writing %s: %w", path, err)
		}
	}
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return nil, err
	}
	c.Server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return c, nil
}
