"""Certificates for TLS tests and benchmarks, made with `cryptography`: a CA, broker
certificates for 127.0.0.1/localhost, client certificates (valid, expired, from another CA)."""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name, org="Riptide Tests"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path, key):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(path, common_name, issuer_cert, issuer_key, *, server=False, ca=False, days=(-1, 30),
           client_too=False, names=("localhost", "127.0.0.1")):
    """A certificate (and key) at path.{crt,key}, signed by issuer (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = _name(common_name)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=days[0]))
               .not_valid_after(now + datetime.timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        usages = [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if client_too or not server:
            usages.append(x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in names]),
                                        critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    crt, keyfile = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(keyfile, key)
    return cert, key, crt, keyfile


def _san(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class Pki:
    """A CA, the broker's certificate, client certificates (good, expired, from another CA)."""

    def __init__(self, directory):
        self.dir = directory
        self.ca_cert, self.ca_key, self.ca, _ = _issue(directory / "ca", "riptide-test-ca", None, None, ca=True)
        other_cert, other_key, self.other_ca, _ = _issue(directory / "other-ca", "other-ca", None, None, ca=True)
        _, _, self.server_crt, self.server_key = self.server_certificate("broker-1")
        _, _, self.client_crt, self.client_key = _issue(directory / "client", "alice-client",
                                                        self.ca_cert, self.ca_key)
        _, _, self.expired_crt, self.expired_key = _issue(directory / "expired", "old-client",
                                                          self.ca_cert, self.ca_key, days=(-30, -1))
        _, _, self.stranger_crt, self.stranger_key = _issue(directory / "stranger", "stranger",
                                                            other_cert, other_key)

    def client_certificate(self, common_name):
        return _issue(self.dir / f"client-{common_name}", common_name, self.ca_cert, self.ca_key)

    def server_certificate(self, common_name):
        return _issue(self.dir / f"server-{common_name}", common_name, self.ca_cert, self.ca_key, server=True)

    def broker_certificate(self, common_name, names=("localhost", "127.0.0.1")):
        """A certificate brokers serve and also present to each other (server and client
        usage), naming `names`."""
        stem = "broker-" + "-".join([common_name, *names]).replace(".", "_")
        return _issue(self.dir / stem, common_name, self.ca_cert, self.ca_key,
                      server=True, client_too=True, names=names)
