"""A PEP 517 build backend in the standard library alone, so `pip install ./bindings/python` works without a package
index (pip's isolated build environment installs the backend's requirements, and here there are none).

It writes a wheel: the `sharedstore` package, plus libsharedstore.so and broker/ from the published library when
they are found ($SHAREDSTORE_LIBRARY, else the repository's artifacts/native); a wheel with the library is tagged
for linux_x86_64, one without it is pure Python."""

import base64
import hashlib
import io
import os
import pathlib
import re
import zipfile

try:
    import tomllib
except ImportError:  # Python < 3.11: the few keys used here, read line by line
    tomllib = None

HERE = pathlib.Path(__file__).resolve().parent.parent  # bindings/python
PACKAGE = "sharedstore"


def _meta():
    if tomllib is not None:
        with open(HERE / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]
    text = (HERE / "pyproject.toml").read_text()
    section = text[text.index("[project]"):]
    return dict(re.findall(r'^([a-z-]+) = "([^"]*)"$', section, re.M))


def _native_dir():
    env = os.environ.get("SHAREDSTORE_LIBRARY")
    if env:
        p = pathlib.Path(env)
        return p if p.is_dir() else p.parent
    return HERE.parent.parent / "artifacts" / "native"


def _files():
    """(path in wheel, bytes) of every file to ship."""
    out = []
    for p in sorted((HERE / PACKAGE).rglob("*.py")):
        out.append((p.relative_to(HERE).as_posix(), p.read_bytes()))
    native = _native_dir()
    lib = native / "libsharedstore.so"
    if lib.is_file():
        out.append((PACKAGE + "/libsharedstore.so", lib.read_bytes()))
        broker = native / "broker"
        if broker.is_dir():
            for p in sorted(broker.rglob("*")):
                if p.is_file() and p.suffix not in (".pdb", ".xml"):
                    out.append((PACKAGE + "/broker/" + p.relative_to(broker).as_posix(), p.read_bytes()))
    return out


def _metadata_text(meta):
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\nRequires-Python: %s\n"
            % (meta["name"], meta["version"], meta.get("description", ""), meta.get("requires-python", "")))


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    meta = _meta()
    dist_info = "%s-%s.dist-info" % (meta["name"], meta["version"])
    d = pathlib.Path(metadata_directory) / dist_info
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text(_metadata_text(meta))
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    meta = _meta()
    files = _files()
    native = any(p.endswith(".so") for p, _ in files)
    tag = "py3-none-linux_x86_64" if native else "py3-none-any"
    dist_info = "%s-%s.dist-info" % (meta["name"], meta["version"])
    name = "%s-%s-%s.whl" % (meta["name"], meta["version"], tag)
    wheel = ("Wheel-Version: 1.0\nGenerator: sharedstore_build\nRoot-Is-Purelib: %s\nTag: %s\n"
             % ("false" if native else "true", tag))
    files += [(dist_info + "/METADATA", _metadata_text(meta).encode()),
              (dist_info + "/WHEEL", wheel.encode()),
              (dist_info + "/top_level.txt", (PACKAGE + "\n").encode())]
    record = [_record_line(p, data) for p, data in files] + [dist_info + "/RECORD,,"]
    files.append((dist_info + "/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files:
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return name


def build_sdist(sdist_directory, config_settings=None):
    import tarfile
    meta = _meta()
    base = "%s-%s" % (meta["name"], meta["version"])
    name = base + ".tar.gz"
    with tarfile.open(pathlib.Path(sdist_directory) / name, "w:gz") as t:
        for p in ["pyproject.toml", "_build/sharedstore_build.py"] + [
                q.relative_to(HERE).as_posix() for q in sorted((HERE / PACKAGE).rglob("*.py"))]:
            t.add(HERE / p, arcname=base + "/" + p)
        data = _metadata_text(meta).encode()
        info = tarfile.TarInfo(base + "/PKG-INFO")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name
