"""A Docker token service for tests: CNCF Distribution's `auth.token` flow, for real.

Issues RS256 JWTs (signed with `openssl dgst -sha256 -sign`, no Python crypto packages needed)
carrying the certificate in `x5c`, for clients that present the Basic credentials given on the
command line; grants exactly the actions the scope asks for. Prints `listening <port>` when
ready.

usage: token_server.py KEY_PEM CERT_PEM ISSUER USER PASSWORD
"""

import base64
import json
import subprocess
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY, CERT, ISSUER, USER, PASSWORD = sys.argv[1:6]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der_b64():
    pem = open(CERT).read()
    body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
    return body


def sign(message):
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY], input=message, capture_output=True, check=True).stdout


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                kind, name, actions = one.split(":", 2) if one.count(":") >= 2 else (one, "", "")
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [cert_der_b64()]}
        claims = {"iss": ISSUER, "sub": USER, "aud": q.get("service", [""])[0], "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": str(now) + str(id(self)), "access": access}
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
        token = signing_input.decode() + "." + b64url(sign(signing_input))
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = HTTPServer(("127.0.0.1", 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
