#!/usr/bin/python3
"""The project's test OCSP responder: answers for the leaves of t/pki/mkpki.py,
each in a mode switchable at run time, and logs every request.

usage: ocsp_responder.py PKIDIR PORT
  also: PORT+1 (f-refused, closed in mode "refused"), PORT+3 (the second CA),
  PORT+4 (accepts and never reads), [::1]:PORT+5 (the IPv6 leaf)
  POST /<leaf>                    OCSP request for that leaf, answered per its mode
  GET  /<leaf>/<base64 request>   the same by RFC 5019 GET (URL-encoded base64 DER)
  GET  /_ctl/set?name=L&mode=M[&validity=S][&thisupdate=EPOCH][&method=get|post][&delay=S]
                                  switch a leaf (name=* for all); thisupdate
                                  pins thisUpdate (0: the current second);
                                  delay: seconds every answer waits first;
                                  with method, only requests by that method
                                  answer in mode M (without: both, as before)
  GET  /_ctl/log?name=L           JSON list of {"t": epoch, "mode": M, "method": GET|POST}
                                  per request (name=*: one object, leaf -> that list)
  GET  /_ctl/ping
Modes: good revoked unknown unauthorized trylater internalerror malformedrequest
garbage truncated empty http500 close hang slow wrongcert badsig wrongsigner
expired notyetvalid nonextupdate wrongtype refused huge trickle clmore clless
chunked redirect large (a valid good response of ~40 KB: the signer certificate
repeated, more than a small shared cache holds).
"refused" closes the second listener on PORT+1 (used by the f-refused leaf), so
connecting is refused for real.
Listens on 127.0.0.1 only.
"""
import base64
import datetime
import json
import os
import select
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

PKI, PORT = sys.argv[1], int(sys.argv[2])
LOCK = threading.Lock()


def load_cert(n):
    with open(os.path.join(PKI, n + ".crt"), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def load_key(n):
    with open(os.path.join(PKI, n + ".key"), "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


with open(os.path.join(PKI, "leaves.json")) as f:
    META = json.load(f)["leaves"]
CA, CA_KEY = load_cert("ca"), load_key("ca")
SIGNER, SIGNER_KEY = load_cert("signer"), load_key("signer")
CA2, SIGNER2, SIGNER2_KEY = load_cert("ca2"), load_cert("signer2"), load_key("signer2")
ROGUE_SIGNER, ROGUE_SIGNER_KEY = load_cert("rogue-signer"), load_key("rogue-signer")
CERTS = {n: load_cert(n) for n in META}
STATE = {n: {"mode": m["mode"], "validity": m.get("validity", 3600), "this": 0,
             "get": None, "post": None, "delay": 0.0}
         for n, m in META.items()}
LOG = {n: [] for n in META}
UNSUCCESSFUL = {
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
    "trylater": ocsp.OCSPResponseStatus.TRY_LATER,
    "internalerror": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "malformedrequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
}
HANG_RELEASE = threading.Event()


def mode_of(leaf, method=None):
    """The mode a request by this method (GET/POST) is answered in."""
    with LOCK:
        st = STATE[leaf]
        return (st.get(method.lower()) if method else None) or st["mode"]


def build(leaf, mode, validity):
    now = datetime.datetime.utcnow().replace(microsecond=0)
    if STATE[leaf]["this"]:
        now = datetime.datetime.utcfromtimestamp(STATE[leaf]["this"])
    this, nxt = now, now + datetime.timedelta(seconds=validity)
    status, rev_time, rev_reason = ocsp.OCSPCertStatus.GOOD, None, None
    cert, key, signer, certs = CERTS[leaf], SIGNER_KEY, SIGNER, [SIGNER]
    issuer = CA
    if META[leaf].get("ca") == "ca2":
        issuer, key, signer, certs = CA2, SIGNER2_KEY, SIGNER2, [SIGNER2]
    if mode == "revoked":
        status = ocsp.OCSPCertStatus.REVOKED
        rev_time, rev_reason = now - datetime.timedelta(hours=1), x509.ReasonFlags.key_compromise
    elif mode == "unknown":
        status = ocsp.OCSPCertStatus.UNKNOWN
    elif mode == "expired":
        this, nxt = now - datetime.timedelta(seconds=2 * validity), now - datetime.timedelta(seconds=validity)
    elif mode == "notyetvalid":
        this, nxt = now + datetime.timedelta(days=1), now + datetime.timedelta(days=2)
    elif mode == "nonextupdate":
        nxt = None
    elif mode == "wrongcert":
        cert = CERTS["noaia"]  # same CA, properly signed, other serial
    elif mode == "wrongsigner":
        key, signer, certs = ROGUE_SIGNER_KEY, ROGUE_SIGNER, [ROGUE_SIGNER]
    elif mode == "badsig":
        key, signer, certs = CA_KEY, CA, []
    elif mode == "large":
        certs = certs * 80
    b = (ocsp.OCSPResponseBuilder()
         .add_response(cert=cert, issuer=issuer, algorithm=hashes.SHA1(), cert_status=status,
                       this_update=this, next_update=nxt, revocation_time=rev_time,
                       revocation_reason=rev_reason)
         .responder_id(ocsp.OCSPResponderEncoding.HASH, signer))
    if certs:
        b = b.certificates(certs)
    der = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    if mode == "badsig":
        # no certificates follow, so the last byte is inside the signature
        der = der[:-1] + bytes([der[-1] ^ 0x01])
    return der


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def start_body(self, length=None, chunked=False):
        """Status line and headers of a 200 OCSP answer whose body the caller
        then writes itself (slowly, partly, lying about its length, ...)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def stream(self, length, pieces, delay=0.0):
        """Announce length bytes, then send pieces, delay seconds apart, until
        done or the client hangs up (the modes a size cap or deadline must cut)."""
        self.start_body(length)
        try:
            for piece in pieces:
                self.wfile.write(piece)
                if delay:
                    self.wfile.flush()
                    time.sleep(delay)
        except OSError:
            pass
        self.close_connection = True

    def reply(self, code, body, ctype="application/ocsp-response", length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/_ctl/ping":
            return self.reply(200, b"pong", "text/plain")
        if u.path == "/_ctl/set":
            names = list(META) if q.get("name") == "*" else [q.get("name")]
            with LOCK:
                for n in names:
                    if n not in STATE:
                        return self.reply(404, b"no such leaf", "text/plain")
                    if "mode" in q and q.get("method") in ("get", "post"):
                        STATE[n][q["method"]] = q["mode"]
                    elif "mode" in q:
                        STATE[n]["mode"] = q["mode"]
                        STATE[n]["get"] = STATE[n]["post"] = None
                    if "validity" in q:
                        STATE[n]["validity"] = int(q["validity"])
                    if "delay" in q:
                        STATE[n]["delay"] = float(q["delay"])
                    if "thisupdate" in q:
                        STATE[n]["this"] = int(q["thisupdate"])
                HANG_RELEASE.set()  # requests hanging in an old mode give up
                HANG_RELEASE.clear()
            update_refused_listener()
            return self.reply(200, b"ok", "text/plain")
        if u.path == "/_ctl/log":
            with LOCK:
                if q.get("name") == "*":
                    body = json.dumps({n: v for n, v in LOG.items() if v}).encode()
                else:
                    body = json.dumps(LOG.get(q.get("name"), [])).encode()
            return self.reply(200, body, "application/json")
        # RFC 5019 / RFC 6960 A.1: GET /<leaf>/<url-encoded base64 of the DER>
        parts = u.path.strip("/").split("/", 1)
        if len(parts) == 2 and parts[0] in STATE:
            try:
                req_der = base64.b64decode(urllib.parse.unquote(parts[1]), validate=True)
            except Exception:
                req_der = b""
            return self.ocsp(parts[0], req_der, "GET")
        return self.reply(404, b"not found", "text/plain")

    def do_POST(self):
        leaf = urllib.parse.urlparse(self.path).path.strip("/")
        n = int(self.headers.get("Content-Length") or 0)
        req_der = self.rfile.read(n) if 0 < n < 65536 else b""
        if leaf not in STATE:
            return self.reply(404, b"unknown leaf", "text/plain")
        return self.ocsp(leaf, req_der, "POST")

    def ocsp(self, leaf, req_der, method):
        mode = mode_of(leaf, method)
        entry = {"t": time.time(), "mode": mode, "method": method}
        with LOCK:
            validity, delay = STATE[leaf]["validity"], STATE[leaf]["delay"]
            LOG[leaf].append(entry)
        if delay:
            time.sleep(delay)
        try:
            self.answer(leaf, mode, validity, req_der)
        finally:
            entry["end"] = time.time()  # lets tests count requests in flight

    def wait_client_gone(self, seconds, release=None):
        """Until the client hangs up (or release is set): the request's end
        in the log is then when the client gave up."""
        deadline = time.time() + seconds
        while time.time() < deadline and not (release and release.is_set()):
            r, _, _ = select.select([self.connection], [], [], 0.05)
            try:
                if r and not self.connection.recv(1, socket.MSG_PEEK):
                    break
            except OSError:
                break

    def answer(self, leaf, mode, validity, req_der):
        try:
            ocsp.load_der_ocsp_request(req_der)
        except Exception:
            return self.reply(200, ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(serialization.Encoding.DER))
        if mode in UNSUCCESSFUL:
            return self.reply(200, ocsp.OCSPResponseBuilder.build_unsuccessful(
                UNSUCCESSFUL[mode]).public_bytes(serialization.Encoding.DER))
        if mode == "garbage":
            return self.reply(200, b"<html>this is not an OCSP response</html>")
        if mode == "empty":
            return self.reply(200, b"")
        if mode == "http500":
            return self.reply(500, b"oops", "text/plain")
        if mode == "wrongtype":
            return self.reply(200, build(leaf, "good", validity), "text/html")
        if mode == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "hang":
            # hold the request until released, or until the client gives up
            # (so the request log shows how long the client really waited)
            self.wait_client_gone(120, HANG_RELEASE)
            self.close_connection = True
            return
        if mode == "slow":
            time.sleep(1.0)
        der = build(leaf, mode if mode not in ("slow", "refused") else "good", validity)
        if mode == "huge":
            # 100 MB announced and sent (while the client reads): the size cap must cut it
            chunk = b"0" * 65536
            self.stream(100 * 1024 * 1024, (chunk for _ in range(1600)))
            return
        if mode == "trickle":
            # a good response at 1 byte/s: the total deadline must hold
            body = build(leaf, "good", validity)
            self.stream(len(body), (bytes([b]) for b in body), delay=1)
            return
        if mode == "clmore":
            # Content-Length says more than is sent, then the connection stays open
            body = build(leaf, "good", validity)
            self.start_body(len(body) + 100)
            self.wfile.write(body)
            self.wfile.flush()
            self.wait_client_gone(30)
            self.close_connection = True
            return
        if mode == "clless":
            # Content-Length says less than the DER that follows
            body = build(leaf, "good", validity)
            return self.reply(200, body, length=len(body) - 10)
        if mode == "chunked":
            body = build(leaf, "good", validity)
            self.start_body(chunked=True)
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            self.close_connection = True
            return
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:%d/good" % PORT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "truncated":
            # a correct Content-Length for a body cut in half: framing is fine,
            # the DER is not
            return self.reply(200, der[:len(der) // 2])
        return self.reply(200, der)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


REFUSED = {"server": None}


def update_refused_listener():
    """f-refused is reached on PORT+1; in mode "refused" nothing listens there."""
    if "f-refused" not in STATE:
        return
    want = STATE["f-refused"]["mode"] != "refused"
    srv = REFUSED["server"]
    if want and srv is None:
        srv = Server(("127.0.0.1", PORT + 1), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        REFUSED["server"] = srv
    elif not want and srv is not None:
        srv.shutdown()
        srv.server_close()
        REFUSED["server"] = None


class Server6(Server):
    address_family = socket.AF_INET6


class NeverReadHandler(Handler):
    """PORT+4: while f-noread is in mode "noread", accept and never read or
    answer (until the client gives up); otherwise a normal responder."""

    def handle(self):
        if mode_of("f-noread") != "noread":
            return Handler.handle(self)
        entry = {"t": time.time(), "mode": "noread"}
        with LOCK:
            LOG["f-noread"].append(entry)
        poller = select.poll()
        poller.register(self.connection, select.POLLRDHUP)
        poller.poll(30000)
        entry["end"] = time.time()  # the client gave up


def main():
    srv = Server(("127.0.0.1", PORT), Handler)
    srv4 = Server(("127.0.0.1", PORT + 4), NeverReadHandler)
    threading.Thread(target=srv4.serve_forever, daemon=True).start()
    try:  # the IPv6 literal URL leaf, on [::1]:PORT+5
        srv6 = Server6(("::1", PORT + 5), Handler)
        threading.Thread(target=srv6.serve_forever, daemon=True).start()
    except OSError:
        pass
    # the second CA's responder: another address, same leaves table
    srv2 = Server(("127.0.0.1", PORT + 3), Handler)
    threading.Thread(target=srv2.serve_forever, daemon=True).start()
    update_refused_listener()
    srv.serve_forever()


if __name__ == "__main__":
    main()
