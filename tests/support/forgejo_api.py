"""A stand-in for the part of Forgejo's API that the CI recipe's
pull-request comment uses: listing, posting and editing issue comments,
with token authentication. Every request is logged to LOG.json as
{"method", "path", "authorization", "body"}, and the comments are kept in it.

usage: forgejo_api.py PORT TOKEN LOG.json
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port, token, log_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
state = {"requests": [], "comments": []}


def save():
    with open(log_file + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(log_file + ".tmp", log_file)


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        with lock:
            state["requests"].append({"method": self.command, "path": url.path,
                                      "authorization": self.headers.get("Authorization"),
                                      "body": raw.decode(errors="replace")})
            save()
            if self.headers.get("Authorization") != f"token {token}":
                return self.answer(401, {"message": "token is required"})
            # /api/v1/repos/OWNER/NAME/issues/N/comments
            if len(parts) == 8 and parts[:3] == ["api", "v1", "repos"] and parts[5] == "issues" and parts[7] == "comments":
                issue = int(parts[6])
                if self.command == "GET":
                    query = parse_qs(url.query)
                    page, limit = int(query.get("page", ["1"])[0]), int(query.get("limit", ["50"])[0])
                    mine = [c for c in state["comments"] if c["issue"] == issue]
                    return self.answer(200, mine[(page - 1) * limit:page * limit])
                if self.command == "POST":
                    comment = {"id": 100 + len(state["comments"]), "issue": issue, "body": json.loads(raw)["body"]}
                    state["comments"].append(comment)
                    save()
                    return self.answer(201, comment)
            # /api/v1/repos/OWNER/NAME/issues/comments/ID
            if len(parts) == 8 and parts[5:7] == ["issues", "comments"] and self.command == "PATCH":
                for comment in state["comments"]:
                    if comment["id"] == int(parts[7]):
                        comment["body"] = json.loads(raw)["body"]
                        save()
                        return self.answer(200, comment)
            return self.answer(404, {"message": "not found"})

    do_GET = do_POST = do_PATCH = handle_any


ThreadingHTTPServer(("127.0.0.1", port), Api).serve_forever()
