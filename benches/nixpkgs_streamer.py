"""The CI-loop benchmark's baseline streamer: writes a docker-archive the way
nixpkgs' stream_layered_image.py does, so that the baseline costs what our
users' pipeline costs. As nixpkgs does it: Python's tarfile, and each store
layer written twice, once into a SHA-256 sink to learn its checksum and size
(a tar member's header needs them first), then again through a pipe, from a
second thread, into the outer archive.

The image is the one in REFERENCE, a docker-archive nixoci wrote for the same
spec: it gives the layer plan (its history comments), the customisation layer
and the config. Every layer's checksum must equal the reference's diff_id, or
this fails: the baseline pushes the same image as nixoci.

usage: nixpkgs_streamer.py REFERENCE.tar OUT.tar
"""

import ast
import hashlib
import io
import json
import os
import sys
import tarfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))
from tarfile_store_layer import write_layer  # noqa: E402

MTIME, UID, GID, UNAME, GNAME = 1, 0, 0, "root", "root"  # nixoci's defaults


class Checksum:
    """A sink that keeps only the SHA-256 and the size of what it is given."""

    def __init__(self):
        self.sha, self.size = hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)


def add_store_layer(out, paths):
    first = Checksum()
    write_layer(first, paths, MTIME, UID, GID, UNAME, GNAME)
    checksum = first.sha.hexdigest()
    info = tarfile.TarInfo(f"{checksum}/layer.tar")
    info.size, info.mtime = first.size, MTIME
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as read, open(write_fd, "wb") as write:

        def produce():
            write_layer(write, paths, MTIME, UID, GID, UNAME, GNAME)
            write.close()

        threading.Thread(target=produce).start()
        out.addfile(info, read)
    return checksum


def add_bytes(out, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), MTIME
    out.addfile(info, io.BytesIO(data))


def main():
    reference, out_path = sys.argv[1:]
    with tarfile.open(reference) as ref:
        manifest_bytes = ref.extractfile("manifest.json").read()
        manifest = json.loads(manifest_bytes)[0]
        config_bytes = ref.extractfile(manifest["Config"]).read()
        config = json.loads(config_bytes)
        custom_name = manifest["Layers"][-1]
        custom = ref.extractfile(custom_name).read()
    plan = [
        ast.literal_eval(entry["comment"].removeprefix("store paths: "))
        for entry in config["history"][:-1]
    ]
    checksums = []
    with tarfile.open(out_path, mode="w|") as out:
        for paths in plan:
            checksums.append(add_store_layer(out, paths))
        add_bytes(out, custom_name, custom)
        checksums.append(custom_name.split("/")[0])
        add_bytes(out, manifest["Config"], config_bytes)
        add_bytes(out, "manifest.json", manifest_bytes)
    expected = [d.removeprefix("sha256:") for d in config["rootfs"]["diff_ids"]]
    if checksums != expected:
        sys.exit(f"the streamed layers differ from the reference image: {checksums} != {expected}")


if __name__ == "__main__":
    main()
