"""Loading libsharedstore.so and declaring its C signatures (include/sharedstore.h)."""

import ctypes
import os
import pathlib

LIBRARY_ENV = "SHAREDSTORE_LIBRARY"
_NAME = "libsharedstore.so"


class ObjectInfo(ctypes.Structure):
    """struct object_info."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("block_size", ctypes.c_size_t),
        ("writable", ctypes.c_int),
    ]


class ContainerOptions(ctypes.Structure):
    """struct container_options."""

    _fields_ = [
        ("write_policy", ctypes.c_int),
        ("block_size", ctypes.c_size_t),
        ("durable_path", ctypes.c_char_p),
        ("max_members", ctypes.c_int),
    ]


def candidates():
    """Where the library is looked for, in order: $SHAREDSTORE_LIBRARY (the file, or a directory holding it),
    beside this package (a wheel built after `dotnet publish` bundles it), and the repository's artifacts/native
    when the package runs from a source checkout."""
    here = pathlib.Path(__file__).resolve().parent
    env = os.environ.get(LIBRARY_ENV)
    if env:
        p = pathlib.Path(env)
        yield p / _NAME if p.is_dir() else p
        return
    yield here / _NAME
    yield here.parents[2] / "artifacts" / "native" / _NAME


def load():
    tried = []
    for path in candidates():
        tried.append(str(path))
        if path.is_file():
            return _declare(ctypes.CDLL(str(path))), str(path)
    raise OSError(
        "libsharedstore.so not found (tried: %s); build it with "
        "`dotnet publish src/SharedStore.Native -c Release -r linux-x64 -o artifacts/native` "
        "and set %s" % (", ".join(tried), LIBRARY_ENV))


def _declare(lib):
    i, s, p, c = ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
    pp = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "container_create": [p, i],
        "container_create_ex": [p, i, ctypes.POINTER(ContainerOptions)],
        "container_join": [p],
        "container_join_timed": [p, i],
        "container_join_wait": [p, i],
        "container_leave": [i],
        "container_destroy": [i],
        "container_destroy_timed": [i, i],
        "container_flush": [i],
        "container_flush_timed": [i, i],
        "object_create": [i, p, s],
        "object_join": [i, p],
        "object_join_wait": [i, p, i],
        "object_leave": [i],
        "object_destroy": [i],
        "object_destroy_timed": [i, i],
        "object_getinfo": [i, ctypes.POINTER(ObjectInfo)],
        "object_write": [i, s, c, s],
        "object_write_timed": [i, s, c, s, i],
        "object_awrite": [i, s, c, s],
        "object_aread": [i, s, c, s],
        "object_opstatus": [i],
        "object_opwait": [i, i],
        "object_opcancel": [i],
        "object_return": [i],
        "object_get": [i, s, s, pp],
        "object_get_timed": [i, s, s, pp, i],
        "object_put": [i],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = i
    lib.object_version.argtypes = [i]
    lib.object_version.restype = ctypes.c_int64
    lib.object_wait.argtypes = [i, ctypes.c_int64, i]
    lib.object_wait.restype = ctypes.c_int64
    lib.sharedstore_strerror.argtypes = [i]
    lib.sharedstore_strerror.restype = p
    lib.sharedstore_last_error.argtypes = []
    lib.sharedstore_last_error.restype = p
    return lib
