"""Test oracle: writes a store-path layer with Python's tarfile, following the
format nixpkgs' stream_layered_image.py documents (PAX mode, /nix and
/nix/store first at 0755, each path then everything under it sorted as
pathlib paths, hard links stored as regular files, fixed owner and mtime).

usage: tarfile_store_layer.py MTIME UID GID UNAME GNAME PATH... > layer.tar
"""

import pathlib
import sys
import tarfile


def write_layer(stream, paths, mtime, uid, gid, uname, gname):
    """Writes the store-path layer of `paths` as a tar to `stream`."""

    def owned(info):
        info.mtime, info.uid, info.gid = mtime, uid, gid
        info.uname, info.gname = uname, gname
        return info

    with tarfile.open(fileobj=stream, mode="w|") as tar:
        for top in ("/nix", "/nix/store"):
            info = tarfile.TarInfo(top)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(owned(info))
        for path in map(pathlib.Path, paths):
            members = [path] if path.is_symlink() else [path, *path.rglob("*")]
            for member in sorted(members):
                info = tar.gettarinfo(member)
                info.name = "/" + info.name
                if info.islnk():
                    info.type = tarfile.REGTYPE
                    info.linkname = ""
                    info.size = member.stat().st_size
                owned(info)
                if info.isfile():
                    with open(member, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)


def main():
    mtime, uid, gid = (int(x) for x in sys.argv[1:4])
    write_layer(sys.stdout.buffer, sys.argv[6:], mtime, uid, gid, *sys.argv[4:6])


if __name__ == "__main__":
    main()
