"""Test token server for the CNCF registry's `token` auth: issues RS256 JWTs
signed with the openssl CLI (stdlib only). Anonymous callers get pull only.

usage: token_server.py PORT KEY.pem CERT.pem USER:PASSWORD
"""

import base64
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port, key, cert, user_pass = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
USER, PASSWORD = user_pass.split(":", 1)
DER = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                     capture_output=True, check=True).stdout


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims):
    header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(DER).decode()]}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                               input=signing_input.encode(), capture_output=True, check=True).stdout
    return f"{signing_input}.{b64url(signature)}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        who = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                self.send_response(401)
                self.end_headers()
                return
            who = user
        access = []
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                parts = item.split(":")
                if len(parts) < 3:
                    continue
                kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
                if who is None:
                    actions = [a for a in actions if a == "pull"]
                access.append({"type": kind, "name": name, "actions": actions})
        now = int(time.time())
        token = jwt({"iss": "nixoci-test-issuer", "sub": who or "", "aud": query.get("service", [""])[0],
                     "exp": now + 600, "nbf": now - 10, "iat": now, "jti": f"{now}-{id(self)}",
                     "access": access})
        body = json.dumps({"token": token, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
