package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate with its private key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// pki is every certificate and key of a local cluster, written under dir.
type pki struct {
	dir string

	caCert, caKey string // cluster CA
	// front-proxy CA and the apiserver's client cert for the aggregation
	// layer; without them the delegated authentication of the controller
	// manager and scheduler logs errors about a missing requestheader CA.
	frontProxyCA                    string
	frontProxyClient, frontProxyKey string
	serving                         string // apiserver serving cert, key in servingKey
	servingKey                      string
	saKey, saPub                    string // service-account signing key (RSA) and its public half
	clients                         map[string][2]string
	ca                              *keyPair // signs issueClient's certificates
}

// client identities, by name: common name and organisations.
var clientIdentities = map[string]struct {
	cn   string
	orgs []string
}{
	"admin":                   {"stsroller-e2e-admin", []string{"system:masters"}},
	"kube-controller-manager": {"system:kube-controller-manager", nil},
	"kube-scheduler":          {"system:kube-scheduler", nil},
	// kwok plays the kubelet of every node and writes pods/status, nodes and
	// leases for all of them; the node authorizer would only let one node act.
	"kwok": {"kwok", []string{"system:masters"}},
	// stsroller's own identity: a user in no group, with no rights until a
	// test binds it to a role.
	ControllerIdentity: {ControllerUser, nil},
}

// ControllerIdentity names stsroller's client identity (its kubeconfig is
// Cluster.ControllerKubeconfig), and ControllerUser is its user name, as the
// API server and its audit log see it.
const (
	ControllerIdentity = "stsroller"
	ControllerUser     = "stsroller-e2e-controller"
)

// newPKI generates a CA, the apiserver's serving certificate, client
// certificates for the admin and every component, and the service-account
// signing key, and writes them as PEM files under dir. The serving
// certificate is also valid for extraIPs.
func newPKI(dir string, serviceIP net.IP, extraIPs ...net.IP) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{dir: dir, clients: map[string][2]string{}}
	now := time.Now()

	ca, err := newCert(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "stsroller-e2e-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	})
	if err != nil {
		return nil, err
	}
	if p.caCert, p.caKey, err = p.write("ca", ca); err != nil {
		return nil, err
	}
	p.ca = ca

	frontProxyCA, err := newCert(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "stsroller-e2e-front-proxy-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	})
	if err != nil {
		return nil, err
	}
	if p.frontProxyCA, _, err = p.write("front-proxy-ca", frontProxyCA); err != nil {
		return nil, err
	}
	frontProxyClient, err := newCert(frontProxyCA, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "front-proxy-client"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(10 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	if p.frontProxyClient, p.frontProxyKey, err = p.write("front-proxy-client", frontProxyClient); err != nil {
		return nil, err
	}

	serving, err := newCert(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(10 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, serviceIP}, extraIPs...),
	})
	if err != nil {
		return nil, err
	}
	if p.serving, p.servingKey, err = p.write("apiserver", serving); err != nil {
		return nil, err
	}

	for name, id := range clientIdentities {
		c, err := newCert(ca, &x509.Certificate{
			Subject:     pkix.Name{CommonName: id.cn, Organization: id.orgs},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.Add(10 * 24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return nil, err
		}
		cert, key, err := p.write("client-"+name, c)
		if err != nil {
			return nil, err
		}
		p.clients[name] = [2]string{cert, key}
	}

	// Service-account tokens are signed with RS256, the default the
	// apiserver's issuer advertises.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p.saKey = filepath.Join(dir, "sa.key")
	p.saPub = filepath.Join(dir, "sa.pub")
	if err := writePEM(p.saKey, "PRIVATE KEY", keyDER); err != nil {
		return nil, err
	}
	if err := writePEM(p.saPub, "PUBLIC KEY", pubDER); err != nil {
		return nil, err
	}
	return p, nil
}

// newCert makes a P-256 key and a certificate for it from tmpl, signed by
// parent, or self-signed when parent is nil.
func newCert(parent *keyPair, tmpl *x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

// write stores kp as <name>.crt and <name>.key and returns both paths.
func (p *pki) write(name string, kp *keyPair) (certPath, keyPath string, err error) {
	certPath = filepath.Join(p.dir, name+".crt")
	keyPath = filepath.Join(p.dir, name+".key")
	keyDER, err := x509.MarshalPKCS8PrivateKey(kp.key)
	if err != nil {
		return "", "", err
	}
	if err := writePEM(certPath, "CERTIFICATE", kp.cert.Raw); err != nil {
		return "", "", err
	}
	if err := writePEM(keyPath, "PRIVATE KEY", keyDER); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// issueClient makes a client certificate of the cluster CA for cn in org
// (none if empty), written as client-<name>.
func (p *pki) issueClient(name, cn, org string) (certPath, keyPath string, err error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(10 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if org != "" {
		tmpl.Subject.Organization = []string{org}
	}
	kp, err := newCert(p.ca, tmpl)
	if err != nil {
		return "", "", err
	}
	return p.write("client-"+name, kp)
}
