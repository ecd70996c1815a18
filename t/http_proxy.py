#!/usr/bin/python3
"""A minimal forward HTTP proxy for the suite (ResilientStaplingProxy):
accepts absolute-URI POSTs, forwards them to 127.0.0.1 targets only, and logs
each URL.  usage: http_proxy.py PORT     GET /_proxy/log -> JSON list of URLs
"""
import http.client
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG, LOCK = [], threading.Lock()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_proxy/log":
            with LOCK:
                return self.send(200, json.dumps(LOG).encode(), "application/json")
        return self.send(404, b"", "text/plain")

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        if u.scheme != "http" or u.hostname != "127.0.0.1":
            return self.send(403, b"only http://127.0.0.1 targets", "text/plain")
        with LOCK:
            LOG.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection("127.0.0.1", u.port or 80, timeout=10)
        try:
            conn.request("POST", u.path or "/", body,
                         {"Content-Type": self.headers.get("Content-Type", "")})
            r = conn.getresponse()
            data = r.read()
            self.send(r.status, data, r.getheader("Content-Type", ""))
        except OSError:
            self.send(502, b"bad gateway", "text/plain")
        finally:
            conn.close()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Proxy).serve_forever()
