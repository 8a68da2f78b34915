"""Every test runs against a real broker. When SHAREDSTORE_SOCKET is not set (pytest run by hand), the session uses a
socket in a temporary directory and lets the library start a broker there (SHAREDSTORE_START_BROKER=1), and stops
that broker at the end. The variables are set before the library first runs, which is when it reads them."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

_started = None
if not os.environ.get("SHAREDSTORE_SOCKET"):
    _dir = tempfile.mkdtemp(prefix="sharedstore-pytest-")
    os.environ["SHAREDSTORE_SOCKET"] = os.path.join(_dir, "broker.sock")
    os.environ["SHAREDSTORE_START_BROKER"] = "1"
    _started = os.environ["SHAREDSTORE_SOCKET"]


def pytest_sessionfinish(session, exitstatus):
    """Stops the broker this session started (SIGTERM, waiting up to 10 s for it to go) and removes its directory."""
    if not _started:
        return
    pid = 0
    if os.path.exists(_started + ".pid"):
        with open(_started + ".pid") as f:
            pid = int(f.read().strip() or 0)
    if pid > 0:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(os.path.dirname(_started), ignore_errors=True)


@pytest.fixture
def client():
    import sharedstore
    return sharedstore.Client()


@pytest.fixture
def name(request):
    """A container name unique to the test (tests share one broker)."""
    return "py-%d-%s" % (os.getpid(), request.node.name[:150])


def run_python(code, *args, timeout=60):
    """Runs `code` in another Python process (same interpreter, same environment); returns its stdout."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, "child failed (%d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    return r.stdout


def wait_for(predicate, timeout=30.0, what="condition"):
    """Polls `predicate` every 10 ms until true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %s s" % (what, timeout))
        time.sleep(0.01)
