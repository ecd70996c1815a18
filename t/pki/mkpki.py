#!/usr/bin/python3
"""Make the test PKI: a root CA, a delegated OCSP signer, a rogue CA with its
own signer, and one leaf per test scenario whose AIA points at the test
responder (http://127.0.0.1:PORT/<name>).

usage: mkpki.py OUTDIR PORT [N]
With N, the leaves are s0000 .. s(N-1), all "good" (the scale test).
Writes <name>.crt/<name>.key per leaf, ca.crt, chain files, and leaves.json
(name -> serial, initial responder mode). Idempotent for the same port.
"""
import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, AuthorityInformationAccessOID

# name -> initial responder mode. The f-* leaves start in a fault so the
# tests can see "no good response yet"; see t/ocsp_responder.py for modes.
FAULTS = ["unauthorized", "trylater", "internalerror", "malformedrequest", "garbage",
          "truncated", "empty", "http500", "close", "hang", "wrongcert", "badsig",
          "wrongsigner", "unknown", "expired", "notyetvalid", "nonextupdate",
          "wrongtype", "refused",
          # hostile responders
          "huge", "trickle", "clmore", "clless", "chunked", "redirect", "noread"]
LEAVES = {
    "good": "good",          # the everyday certificate
    "muststaple": "good",    # carries the TLS feature status_request
    "noaia": None,           # no OCSP URL at all: served unstapled
    "forceurl": "good",      # AIA points nowhere; ResilientStaplingForceURL fixes it
    "revoked": "revoked",
    "renew": "good",         # short-lived responses (VALIDITY)
    "count": "good",         # counts fetches across children (VALIDITY)
    "slow": "slow",          # answers within the deadline, slowly
    "latency": "good",       # handshake latency while the responder hangs (VALIDITY)
    "off": "good",           # in a vhost with ResilientStapling off
    "restart": "good",       # restarts with the responder down
    "swap-a": "good",        # the certificate of vhost "swap"...
    "swap-b": "good",        # ...replaced by this one at a reload
    "shared": "good",        # one certificate in two vhosts
    "dual-ec": "good",       # one vhost with an ECDSA...
    "dual-rsa": "good",      # ...and an RSA certificate
    "status": "good",        # walks through the states of the status page (VALIDITY)
    "status-none": "unauthorized",  # never gets a good response
    "coexist-ssl": "good",   # a vhost that also has mod_ssl's SSLUseStapling on
    "coexist-md": "good",    # an MDomain with MDStapling on and ResilientStapling on...
    "coexist-mdoff": "good", # ...and one with ResilientStapling off: mod_md staples it
    # t/23_first.t (its own server and responder): a certificate new to its
    # responder, GET/POST answering differently, rotations at reloads
    "first-new": "good",
    "first-hang": "good",
    "m-getonly": "good",
    "m-postonly": "good",
    "rot-0": "good", "rot-1": "good", "rot-2": "good", "rot-3": "good", "rot-4": "good",
    "rot-5": "good",
}
RSA = {"dual-rsa"}
# A second CA with its own responder address (PORT+3): its "hang" leaves
# must not hold up the first CA's fetches.
CA2_LEAVES = {"ca2-hang%d" % i: "hang" for i in range(1, 6)}
CA2_LEAVES["ca2-good"] = "good"
LEAVES.update(CA2_LEAVES)
for f in FAULTS:
    LEAVES["f-" + f] = f
# seconds of validity of the responder's answers from the start (default 3600),
# for the leaves whose tests watch renewals happen
VALIDITY = {"renew": 8, "count": 6, "latency": 6, "status": 8}
# Where a leaf's AIA points when it is not PORT/<name>
SPECIAL_URL = {
    "f-refused": "http://127.0.0.1:{p1}/f-refused",
    "f-noread": "http://127.0.0.1:{p4}/f-noread",
    "unresolvable": "http://ocsp.nonexistent.invalid/unresolvable",
    "ipv6": "http://[::1]:{p5}/ipv6",
}
LEAVES["unresolvable"] = "good"
LEAVES["ipv6"] = "good"

NOW = datetime.datetime.utcnow().replace(microsecond=0)
LONG_AGO = NOW - datetime.timedelta(days=1)
FAR = NOW + datetime.timedelta(days=365)


def key(rsa_key=False):
    if rsa_key:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RS Test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca_cert(cn, k):
    return (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(LONG_AGO).not_valid_after(FAR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()),
                           critical=False)
            .sign(k, hashes.SHA256()))


def issue(cn, k, issuer, issuer_key, exts):
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer.subject)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(LONG_AGO).not_valid_after(FAR))
    for ext, critical in exts:
        b = b.add_extension(ext, critical=critical)
    return b.sign(issuer_key, hashes.SHA256())


def signer_exts():
    return [(x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
            (x509.OCSPNoCheck(), False)]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def pem(c):
    return c.public_bytes(serialization.Encoding.PEM)


def keypem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def main():
    out, port = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        SPECIAL_URL.clear()
        LEAVES.clear()
        CA2_LEAVES.clear()
        VALIDITY.clear()
        LEAVES.update({"s%04d" % i: "good" for i in range(int(sys.argv[3]))})
    stamp = os.path.join(out, "leaves.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f).get("port") == port and os.path.getmtime(stamp) >= os.path.getmtime(__file__):
                return
    os.makedirs(out, exist_ok=True)
    ca_key, rogue_key = key(), key()
    ca = ca_cert("RS Test Root CA", ca_key)
    rogue = ca_cert("RS Rogue CA", rogue_key)
    signer_key, rogue_signer_key = key(), key()
    signer = issue("RS Test OCSP Signer", signer_key, ca, ca_key, signer_exts())
    rogue_signer = issue("RS Rogue OCSP Signer", rogue_signer_key, rogue, rogue_key,
                         signer_exts())
    ca2_key, signer2_key = key(), key()
    ca2 = ca_cert("RS Test CA 2", ca2_key)
    signer2 = issue("RS Test CA 2 OCSP Signer", signer2_key, ca2, ca2_key, signer_exts())
    for n, c, k in (("ca", ca, ca_key), ("signer", signer, signer_key),
                    ("rogue", rogue, rogue_key), ("rogue-signer", rogue_signer,
                                                  rogue_signer_key),
                    ("ca2", ca2, ca2_key), ("signer2", signer2, signer2_key)):
        write(os.path.join(out, n + ".crt"), pem(c))
        write(os.path.join(out, n + ".key"), keypem(k))

    leaves = {}
    for leaf, mode in LEAVES.items():
        dns = leaf + ".rs.test"
        exts = [(x509.BasicConstraints(ca=False, path_length=None), True),
                (x509.SubjectAlternativeName([x509.DNSName(dns)]), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]
        in_ca2 = leaf in CA2_LEAVES
        url = "http://127.0.0.1:%d/%s" % (port + 3 if in_ca2 else port, leaf)
        if leaf in SPECIAL_URL:
            url = SPECIAL_URL[leaf].format(p1=port + 1, p4=port + 4, p5=port + 5)
        if leaf == "forceurl":
            url = "http://127.0.0.1:9/nowhere"  # discard port: nothing answers
        if mode is not None:
            exts.append((x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))]),
                False))
        if leaf == "muststaple":
            exts.append((x509.TLSFeature([x509.TLSFeatureType.status_request]), False))
        k = key(leaf in RSA)
        c = issue(dns, k, ca2 if in_ca2 else ca, ca2_key if in_ca2 else ca_key, exts)
        write(os.path.join(out, leaf + ".crt"), pem(c))
        write(os.path.join(out, leaf + ".key"), keypem(k))
        leaves[leaf] = {"ca": "ca2" if in_ca2 else "ca", "serial": format(c.serial_number, "X"), "mode": mode or "good", "dns": dns,
                        "validity": VALIDITY.get(leaf, 3600)}
    with open(stamp, "w") as f:
        json.dump({"port": port, "leaves": leaves}, f, indent=1)


if __name__ == "__main__":
    main()
