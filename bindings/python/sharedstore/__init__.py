"""SharedStore from Python: ctypes over libsharedstore.so (no compiled extension).

    import sharedstore, numpy
    client = sharedstore.Client()
    with client.create_container("con", group_id) as con:          # or client.join_container("con")
        obj = con.create_object("A", 64 << 20)                      # or con.join_object("A")
        obj.write(0, payload)
        with obj.get(0, obj.size) as view:                          # memoryview over the shared memory itself
            total = numpy.frombuffer(view, dtype=numpy.uint64).sum()  # no copy
        op = obj.awrite(0, b"record")                               # Operation: status, cancel(), wait(), result()
        op.result()

Errors raise subclasses of :class:`SharedStoreError` named after SharedStore's ErrorCode (NotFound, AlreadyExists,
PermissionDenied, NoResources, Timeout, Destroyed, InvalidArgument, BrokerUnavailable, VersionMismatch, Canceled,
WouldDeadlock, Internal, Busy). The library is found through $SHAREDSTORE_LIBRARY, beside this package, or in the
repository's artifacts/native.
"""

from ._api import Client, Container, Lease, Object, Operation, OpStatus, WritePolicy, library_path
from .errors import (AlreadyExists, BrokerUnavailable, Busy, Canceled, Destroyed, Internal, InvalidArgument,
                     NoResources, NotFound, PermissionDenied, SharedStoreError, Timeout, VersionMismatch,
                     WouldDeadlock)

__version__ = "0.1.0"

__all__ = [
    "Client", "Container", "Object", "Lease", "Operation", "OpStatus", "WritePolicy", "library_path",
    "SharedStoreError", "NotFound", "AlreadyExists", "PermissionDenied", "NoResources", "Timeout", "Destroyed",
    "InvalidArgument", "BrokerUnavailable", "VersionMismatch", "Canceled", "WouldDeadlock", "Internal", "Busy",
]
