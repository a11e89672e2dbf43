"""Test proxy in front of a registry: forwards every request, counts blob
bytes uploaded, and injects faults or zot-like answers from a plan file.

usage: fault_proxy.py PORT UPSTREAM_PORT PLAN.json STATS.json

PLAN.json (re-read on every request, so tests can change it):
  {"faults": [{"method": "PUT", "path_contains": "/blobs/uploads/",
               "action": "500" | "drop" | "429" | "trickle" | "blackhole" | "throttle",
               "retry_after": 1, "times": 1, "message": "registry error text"}],
   # a fault fires `times` times (default 1), counted per distinct fault;
   # trickle: headers promising 1 MB, then a byte a second (for at most 30 s);
   # blackhole: never reads the request body nor answers (for at most 30 s);
   # throttle: reads the request body at "rate" bytes a second, then goes on.
   "immutable_tags": true,     # zot create-only: PUT of an existing tag -> 403
   "hide_tags": true,          # HEAD/GET of manifests by tag -> 404 (403 on PUT still applies)
   "refuse_monolithic": true,  # PUT of an upload with a body -> 400
   "location_to": "HOST:PORT", # upload Locations point at another host
   "location_raw": "TEXT",     # upload Locations are replaced by TEXT as is
   "wrong_manifest_digest": true,  # manifest PUTs answer another Docker-Content-Digest
   "tamper_blob_gets": true,  # blob GETs answer with their last byte changed (a string:
                              # only those whose path contains it)
   "oci_subject": true,       # manifest PUTs with a subject answer OCI-Subject (zot)
   "referrers_api": true,     # GET /v2/NAME/referrers/DIGEST answered, as zot does, with
                              # an index of the manifests PUT through this proxy whose
                              # subject is DIGEST (without it, the registry's 404 passes)
   "referrers_alias": {"sha256:B": "sha256:A"},  # ...listing A's referrers when asked for B's
   "tamper_manifest_gets": "TEXT"}  # manifest GETs whose path holds TEXT answer with their
                                    # last byte changed
STATS.json: {"blob_bytes": N, "pulled_bytes": N, "requests": ["METHOD path status", ...],
             "authorized": ["METHOD path", ...]}  (requests that carried Authorization;
             pulled_bytes: the bodies of blob GETs answered 200)
"""

import hashlib
import http.client
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, upstream_port, plan_file, stats_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
UPSTREAM = f"127.0.0.1:{upstream_port}"
PROXY = f"127.0.0.1:{port}"
lock = threading.Lock()
stats = {"blob_bytes": 0, "pulled_bytes": 0, "requests": [], "authorized": [], "max_uploads_at_once": 0}
uploads_now = 0
used = {}
referrers = {}  # (repository, subject digest) -> descriptors of the manifests PUT with it


def plan():
    try:
        with open(plan_file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def record(line, body_bytes=0):
    with lock:
        stats["requests"].append(line)
        stats["blob_bytes"] += body_bytes
        with open(stats_file + ".tmp", "w") as f:
            json.dump(stats, f)
        import os
        os.replace(stats_file + ".tmp", stats_file)


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def fault(self, p):
        for f in p.get("faults", []):
            if f.get("method", self.command) != self.command or f.get("path_contains", "") not in self.path:
                continue
            # Counted per fault, so that a new plan's faults fire afresh.
            key = json.dumps(f, sort_keys=True)
            with lock:
                if used.get(key, 0) >= f.get("times", 1):
                    continue
                used[key] = used.get(key, 0) + 1
            return f
        return None

    def reply(self, status, headers=None, body=b""):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        p = plan()
        if self.headers.get("Authorization"):
            with lock:
                stats["authorized"].append(f"{self.command} {self.path.split('?')[0]}")
        length = int(self.headers.get("Content-Length") or 0)
        is_upload = "/blobs/uploads/" in self.path and self.command in ("PUT", "PATCH")
        fault = self.fault(p)
        if fault and fault["action"] == "drop":
            # Read part of the body, then cut the connection without an answer.
            self.rfile.read(min(length, 1024))
            record(f"{self.command} {self.path.split('?')[0]} DROPPED", min(length, 1024) if is_upload else 0)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if fault and fault["action"] == "blackhole":
            record(f"{self.command} {self.path.split('?')[0]} BLACKHOLE")
            time.sleep(30)
            self.close_connection = True
            return
        if fault and fault["action"] == "throttle":
            # Takes the body in at `rate` bytes a second, then forwards it.
            record(f"{self.command} {self.path.split('?')[0]} THROTTLE")
            step = max(1, fault.get("rate", 65536) // 10)
            parts = []
            left = length
            while left > 0:
                part = self.rfile.read(min(step, left))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
                time.sleep(0.1)
            body = b"".join(parts)
        else:
            body = self.rfile.read(length) if length else b""
        if fault and fault["action"] == "trickle":
            record(f"{self.command} {self.path.split('?')[0]} TRICKLE")
            self.send_response(202)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
            self.close_connection = True
            return
        if fault:
            status = int(fault["action"])
            headers = {"Retry-After": str(fault.get("retry_after", 1))} if status == 429 else {}
            record(f"{self.command} {self.path.split('?')[0]} {status} (injected)")
            message = fault.get("message", "injected fault")
            body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": message}]}).encode()
            return self.reply(status, headers, body)
        if p.get("referrers_api") and self.command == "GET" and "/referrers/" in self.path:
            repository, subject = self.path.split("?")[0][len("/v2/"):].split("/referrers/", 1)
            subject = p.get("referrers_alias", {}).get(subject, subject)
            with lock:
                listed = list(referrers.get((repository, subject), []))
            record(f"GET {self.path.split('?')[0]} 200 (referrers API)")
            index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": listed}
            return self.reply(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, json.dumps(index).encode())
        is_tag = "/manifests/" in self.path and not self.path.rsplit("/", 1)[-1].startswith("sha256:")
        if p.get("hide_tags") and is_tag and self.command in ("HEAD", "GET"):
            record(f"{self.command} {self.path} 404 (hidden)")
            return self.reply(404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"hidden"}]}')
        if p.get("immutable_tags") and is_tag and self.command == "PUT":
            check = http.client.HTTPConnection(UPSTREAM)
            check.request("HEAD", self.path, headers={"Accept": self.headers.get("Content-Type", "")})
            exists = check.getresponse().status == 200
            check.close()
            if exists:
                record(f"PUT {self.path} 403 (immutable)")
                return self.reply(403, {}, b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}')
        if p.get("refuse_monolithic") and self.command == "PUT" and "/blobs/uploads/" in self.path and length > 0:
            record(f"PUT {self.path.split('?')[0]} 400 (monolithic refused)", length)
            return self.reply(400, {}, b'{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"use chunks"}]}')
        if is_upload:
            # How many blob uploads are in flight at once; `upload_delay`
            # holds each one open so that overlapping ones are seen.
            global uploads_now
            with lock:
                uploads_now += 1
                stats["max_uploads_at_once"] = max(stats["max_uploads_at_once"], uploads_now)
            time.sleep(p.get("upload_delay", 0))
            with lock:
                uploads_now -= 1
        upstream = http.client.HTTPConnection(UPSTREAM)
        # Repeated headers (skopeo sends one Accept per media type) are joined, not dropped.
        headers = {}
        for k, v in self.headers.items():
            if k.lower() not in ("host", "connection"):
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
        upstream.request(self.command, self.path, body=body if body or self.command in ("PUT", "PATCH", "POST") else None, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        if self.command == "GET" and "/blobs/" in self.path and response.status == 200:
            tamper = p.get("tamper_blob_gets")
            if data and (tamper is True or (isinstance(tamper, str) and tamper in self.path)):
                data = data[:-1] + bytes([data[-1] ^ 1])
            with lock:
                stats["pulled_bytes"] += len(data)
        tamper = p.get("tamper_manifest_gets")
        if self.command == "GET" and "/manifests/" in self.path and tamper and tamper in self.path and data:
            data = data[:-1] + bytes([data[-1] ^ 1])
        out = {}
        for k, v in response.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "location":
                if p.get("location_raw") is not None:
                    v = p["location_raw"]
                else:
                    v = v.replace(UPSTREAM, p.get("location_to") or PROXY)
                    if v.startswith("/") and p.get("location_to"):
                        v = "http://" + p["location_to"] + v
            if k.lower() == "docker-content-digest" and p.get("wrong_manifest_digest") and self.command == "PUT" and "/manifests/" in self.path:
                v = "sha256:" + "0" * 64
            out[k] = v
        # A registry with the referrers API (zot) names the subject of a
        # manifest that has one.
        if self.command == "PUT" and "/manifests/" in self.path and response.status == 201:
            manifest = json.loads(body or b"{}")
            subject = manifest.get("subject")
            if subject and p.get("oci_subject"):
                out["OCI-Subject"] = subject["digest"]
            if subject:
                descriptor = {"mediaType": manifest.get("mediaType"), "size": len(body),
                              "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                              "artifactType": manifest.get("artifactType") or manifest.get("config", {}).get("mediaType")}
                repository = self.path[len("/v2/"):].split("/manifests/", 1)[0]
                with lock:
                    referrers.setdefault((repository, subject["digest"]), []).append(descriptor)
        record(f"{self.command} {self.path.split('?')[0]} {response.status}", len(body) if is_upload else 0)
        self.send_response(response.status)
        for k, v in out.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(int(response.getheader("Content-Length") or len(data))) if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()
