"""Exceptions mirroring SharedStore's ErrorCode: a C call's negative return -N raises the class of code N."""


class SharedStoreError(Exception):
    """The root of every SharedStore error. ``code`` is the ErrorCode (positive); ``return_value`` the C return value (-code)."""

    code = 0

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def return_value(self):
        return -self.code


class NotFound(SharedStoreError, LookupError):
    code = 1


class AlreadyExists(SharedStoreError):
    code = 2


class PermissionDenied(SharedStoreError):
    code = 3


class NoResources(SharedStoreError):
    code = 4


class Timeout(SharedStoreError):
    code = 5


class Destroyed(SharedStoreError):
    code = 6


class InvalidArgument(SharedStoreError, ValueError):
    code = 7


class BrokerUnavailable(SharedStoreError):
    code = 8


class VersionMismatch(SharedStoreError):
    code = 9


class Canceled(SharedStoreError):
    code = 10


class WouldDeadlock(SharedStoreError):
    code = 11


class Internal(SharedStoreError):
    code = 12


class Busy(SharedStoreError):
    code = 13


BY_CODE = {cls.code: cls for cls in (NotFound, AlreadyExists, PermissionDenied, NoResources, Timeout, Destroyed,
                                     InvalidArgument, BrokerUnavailable, VersionMismatch, Canceled, WouldDeadlock,
                                     Internal, Busy)}


def error_for(rc, message):
    """The exception for a C return value rc < 0."""
    cls = BY_CODE.get(-rc, SharedStoreError)
    return cls(message, -rc)
