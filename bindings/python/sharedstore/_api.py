"""The Python API over libsharedstore.so (see the package docstring)."""

import ctypes
import enum
import os
import threading

from . import _native
from .errors import SharedStoreError, error_for

_lib = None
_lib_path = None
_lib_gate = threading.Lock()

# PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags): a memoryview over memory Python does not own,
# which is exactly a lease: numpy.frombuffer(view) then reads the shared mapping itself.
_PyBUF_READ = 0x100
_PyBUF_WRITE = 0x200
_memview = ctypes.pythonapi.PyMemoryView_FromMemory
_memview.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_memview.restype = ctypes.py_object

INFINITE = -1

# Buffers of asynchronous reads whose Operation was dropped while the read may still run: the library writes into
# them until the read ends, so they stay referenced here until object_opstatus says it ended (pruned on each new
# asynchronous call).
_orphans = []
_orphans_gate = threading.Lock()


def _prune_orphans():
    with _orphans_gate:
        _orphans[:] = [(op, keep) for op, keep in _orphans if library().object_opstatus(op) == 1]


def library():
    """The loaded libsharedstore.so (loaded on first use)."""
    global _lib, _lib_path
    if _lib is None:
        with _lib_gate:
            if _lib is None:
                _lib, _lib_path = _native.load()
    return _lib


def library_path():
    library()
    return _lib_path


def _ms(timeout):
    """Seconds (None = forever) to the C convention: milliseconds, negative = forever."""
    if timeout is None:
        return INFINITE
    if timeout < 0:
        raise ValueError("timeout must be None or >= 0 seconds")
    return min(int(timeout * 1000), 2**31 - 1)


def _check(rc, what):
    if rc < 0:
        lib = library()
        detail = lib.sharedstore_last_error() or b""
        raise error_for(rc, "%s: %s (%s)" % (what, lib.sharedstore_strerror(rc).decode(), detail.decode(errors="replace")))
    return rc


def _name(name):
    if isinstance(name, str):
        return name.encode()
    if isinstance(name, bytes):
        return name
    raise TypeError("a name is str or bytes")


def _buffer_address(data, writable):
    """(address, length, keepalive) of a bytes-like object, without copying it."""
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("the buffer must be C-contiguous")
    n = view.nbytes
    if n == 0:
        return None, 0, view
    if view.readonly:
        if writable:
            raise TypeError("aread needs a writable buffer")
        # A read-only buffer (bytes): ctypes.c_char_p gives its address without a copy for bytes; other read-only
        # exporters are copied once.
        if isinstance(data, bytes):
            return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value, n, data
        copy = bytearray(view.cast("B"))
        arr = (ctypes.c_char * n).from_buffer(copy)
        return ctypes.addressof(arr), n, (copy, arr)
    arr = (ctypes.c_char * n).from_buffer(view.cast("B"))
    return ctypes.addressof(arr), n, (view, arr)


class WritePolicy(enum.IntEnum):
    ALL_MEMBERS = 0
    CREATOR_ONLY = 1


class OpStatus(enum.IntEnum):
    """object_opstatus as an enum: COMPLETED is the seed's 0."""

    COMPLETED = 0
    IN_PROGRESS = 1
    CANCELED = 2
    FAILED = 3


class Client:
    """The process's use of SharedStore. The library connects lazily, on the first create or join, to
    $SHAREDSTORE_SOCKET or the per-user default socket; SHAREDSTORE_START_BROKER=1 starts a broker if none runs.
    (Environment variables are read by the library when it first runs.) Every method is thread-safe."""

    def __init__(self):
        self._lib = library()

    @property
    def library_path(self):
        return library_path()

    def create_container(self, name, group_id=None, *, write_policy=WritePolicy.ALL_MEMBERS, block_size=0,
                         durable_path=None, max_members=0):
        """container_create: a new container shared with Unix group ``group_id`` (default: this process's group).
        ``max_members``: member processes admitted at once, 0 (63) or 1 to 4095."""
        gid = os.getgid() if group_id is None else group_id
        if write_policy == WritePolicy.ALL_MEMBERS and block_size == 0 and durable_path is None and max_members == 0:
            rc = self._lib.container_create(_name(name), gid)
        else:
            opts = _native.ContainerOptions(int(write_policy), block_size,
                                            None if durable_path is None else os.fsencode(durable_path), max_members)
            rc = self._lib.container_create_ex(_name(name), gid, ctypes.byref(opts))
        return Container(_check(rc, "container_create(%r)" % (name,)), name)

    def join_container(self, name, timeout=0):
        """container_join. With ``timeout`` (seconds, None = forever) waits until the container is created."""
        if timeout == 0:
            rc = self._lib.container_join(_name(name))
        else:
            rc = self._lib.container_join_timed(_name(name), _ms(timeout))
        return Container(_check(rc, "container_join(%r)" % (name,)), name)


class Container:
    """A joined container (the seed's container id). ``with`` leaves it on exit (unless it was destroyed)."""

    def __init__(self, cid, name):
        self.id = cid
        self.name = name
        self._closed = False

    def __repr__(self):
        return "<sharedstore.Container %r id=%d%s>" % (self.name, self.id, " closed" if self._closed else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.leave()
        return False

    def create_object(self, name, size):
        """object_create: ``size`` bytes, zeroed, reserved before this returns."""
        if size <= 0:
            raise ValueError("an object has at least 1 byte")
        rc = library().object_create(self.id, _name(name), size)
        return Object(_check(rc, "object_create(%r, %d)" % (name, size)), name)

    def join_object(self, name):
        """object_join."""
        return Object(_check(library().object_join(self.id, _name(name)), "object_join(%r)" % (name,)), name)

    def wait_for_object(self, name, timeout=None):
        """object_join_wait: joins the object as soon as another member creates it (the broker pushes the news; nothing
        polls), waiting up to ``timeout`` seconds (None: for ever)."""
        rc = library().object_join_wait(self.id, _name(name), _ms(timeout))
        return Object(_check(rc, "object_join_wait(%r)" % (name,)), name)

    def flush(self, timeout=None):
        """container_flush: returns once every completed write is on disk (durable containers)."""
        _check(library().container_flush_timed(self.id, _ms(timeout)), "container_flush")

    def destroy(self, timeout=None):
        """container_destroy: waits (up to ``timeout`` seconds) until the other members left, then frees it."""
        _check(library().container_destroy_timed(self.id, _ms(timeout)), "container_destroy")
        self._closed = True

    def leave(self):
        """container_leave (idempotent). Busy while a lease or asynchronous read of its objects is outstanding."""
        if not self._closed:
            _check(library().container_leave(self.id), "container_leave")
            self._closed = True


class Object:
    """A joined object (the seed's object id). ``with`` leaves it on exit (unless it was destroyed)."""

    def __init__(self, oid, name):
        self.id = oid
        self.name = name
        self._closed = False
        info = _native.ObjectInfo()
        _check(library().object_getinfo(oid, ctypes.byref(info)), "object_getinfo")
        self.size = info.size
        self.block_size = info.block_size
        self.writable = bool(info.writable)
        self.address = info.data

    def __repr__(self):
        return "<sharedstore.Object %r id=%d size=%d>" % (self.name, self.id, self.size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.leave()
        return False

    def write(self, offset, data, timeout=None):
        """object_write: copies ``data`` (any bytes-like object) to ``offset`` under the blocks' write locks."""
        addr, n, keep = _buffer_address(data, writable=False)
        _check(library().object_write_timed(self.id, offset, addr, n, _ms(timeout)), "object_write")
        del keep

    @property
    def version(self):
        """object_version: 0 when created, one more for every completed write (one load, no system call)."""
        return _check(library().object_version(self.id), "object_version")

    def wait_for_change(self, version, timeout=None):
        """object_wait: sleeps until the object's version is no longer ``version`` and returns the new one (at once
        when it already differs); ``timeout`` in seconds (None: for ever) raises the TIMEOUT error when it ends."""
        return _check(library().object_wait(self.id, version, _ms(timeout)), "object_wait")

    def get(self, offset=0, size=None, timeout=None):
        """object_get: a :class:`Lease`; ``with obj.get(off, n) as view`` gives a memoryview over the shared memory
        itself (read-only for a read-only member). The view must not be used after the ``with`` block."""
        if size is None:
            size = self.size - offset
        ptr = ctypes.c_void_p()
        op = _check(library().object_get_timed(self.id, offset, size, ctypes.byref(ptr), _ms(timeout)), "object_get")
        return Lease(op, ptr.value or 0, size, self.writable)

    def awrite(self, offset, data):
        """object_awrite: returns an :class:`Operation` once ``data`` is copied into shared memory. A write of more
        than 84 bytes over free blocks, with nothing of this process pending, is applied by the call itself and its
        operation is already completed; otherwise the broker applies it later, in submission order."""
        addr, n, keep = _buffer_address(data, writable=False)
        op = _check(library().object_awrite(self.id, offset, addr, n), "object_awrite")
        del keep
        return Operation(op, None)

    def aread(self, offset, buffer):
        """object_aread into ``buffer`` (writable bytes-like: bytearray, numpy array, ...), which the operation keeps
        alive until it ended."""
        _prune_orphans()
        addr, n, keep = _buffer_address(buffer, writable=True)
        op = _check(library().object_aread(self.id, offset, addr, n), "object_aread")
        return Operation(op, keep)

    def destroy(self, timeout=None):
        """object_destroy: waits (up to ``timeout`` seconds) while other members use it, then frees it."""
        _check(library().object_destroy_timed(self.id, _ms(timeout)), "object_destroy")
        self._closed = True

    def leave(self):
        """object_leave (idempotent). Busy while a lease or asynchronous read is outstanding."""
        if not self._closed:
            _check(library().object_leave(self.id), "object_leave")
            self._closed = True


class Lease:
    """An object_get: ``view`` is a memoryview over the shared memory; :meth:`put` (or the end of ``with``) is
    object_put. After the put the memory may change under any reference still held (a numpy array, say)."""

    def __init__(self, op, address, size, writable):
        self.id = op
        self.address = address
        self.size = size
        self.view = _memview(address, size, _PyBUF_WRITE if writable else _PyBUF_READ) if size else memoryview(b"")
        self._put = False

    def __enter__(self):
        return self.view

    def __exit__(self, *exc):
        self.put()
        return False

    def put(self):
        """object_put (idempotent here; the C call refuses a second put)."""
        if self._put:
            return
        try:
            self.view.release()  # fails with BufferError while e.g. a numpy array still exports it: put anyway
        except BufferError:
            pass
        self._put = True
        _check(library().object_put(self.id), "object_put")

    def __del__(self):
        if not getattr(self, "_put", True):
            try:
                self.put()
            except Exception:  # noqa: BLE001 - nothing can be reported from a finalizer (e.g. at interpreter exit)
                pass


class Operation:
    """An asynchronous operation (awrite or aread): ``status``, ``cancel()``, ``wait(timeout)``, ``result()``."""

    def __init__(self, op, keepalive):
        self.id = op
        self._keep = keepalive
        self._final = None  # (OpStatus, bytes or exception) once object_return ended the id
        self._gate = threading.Lock()

    def __repr__(self):
        return "<sharedstore.Operation %d %s>" % (self.id, self.status.name)

    def __del__(self):
        keep = getattr(self, "_keep", None)
        if keep is not None and getattr(self, "_final", None) is None:
            with _orphans_gate:
                _orphans.append((self.id, keep))

    @property
    def status(self):
        """object_opstatus as an :class:`OpStatus`. FAILED: :attr:`error` (or :meth:`result`) gives the exception.
        An id the library no longer knows (its object was left) reads FAILED too: the operation's outcome is lost."""
        if self._final is not None:
            return self._final[0]
        rc = library().object_opstatus(self.id)
        if rc in (0, 1, 2):
            return OpStatus(rc)
        return OpStatus.FAILED

    @property
    def error(self):
        """The exception of a FAILED or CANCELED operation, else None (also while it runs)."""
        if self.status in (OpStatus.FAILED, OpStatus.CANCELED):
            return self._finish()[1]
        return None

    def cancel(self):
        """object_opcancel: True if the operation will never apply; False if it is applying or done (whole)."""
        if self._final is not None:
            return self._final[0] == OpStatus.CANCELED
        rc = library().object_opcancel(self.id)
        return rc == 0

    def wait(self, timeout=None):
        """Waits up to ``timeout`` seconds (None: forever) for the end; True when it has ended."""
        if self._final is not None:
            return True
        rc = library().object_opwait(self.id, _ms(timeout))
        return rc not in (1, -5)  # INPROGRESS, or TIMEOUT (an asynchronous operation never fails with Timeout)

    def result(self, timeout=None):
        """Waits for the end, then object_return: the byte count; raises the operation's error if it failed,
        :class:`sharedstore.Canceled` if it was canceled, :class:`sharedstore.Timeout` if it did not end in time."""
        if not self.wait(timeout):
            raise error_for(-5, "operation %d did not finish within %s s" % (self.id, timeout))
        status, value = self._finish()
        if isinstance(value, BaseException):
            raise value
        return value

    def _finish(self):
        with self._gate:
            if self._final is None:
                st = library().object_opstatus(self.id)
                rc = library().object_return(self.id)
                if rc >= 0:
                    self._final = (OpStatus.COMPLETED, rc)
                elif rc == -10 and st == 2:
                    self._final = (OpStatus.CANCELED, error_for(rc, "operation %d was canceled" % self.id))
                else:
                    detail = (library().sharedstore_last_error() or b"").decode(errors="replace")
                    self._final = (OpStatus.FAILED, error_for(rc, "operation %d failed: %s" % (self.id, detail)))
                self._keep = None
            return self._final
