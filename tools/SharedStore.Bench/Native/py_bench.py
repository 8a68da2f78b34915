"""The bench's Python side (Scenarios/NativeScenarios.cs runs it with Debian's python3 and numpy).

  py_bench.py write CONTAINER          writes the 64 MiB array (numpy, seed 3) into object "big" of CONTAINER and exits:
                                       the "other process" of py-get-64mib-xproc.
  py_bench.py xproc CONTAINER ROUNDS   py-get-64mib-xproc: µs for this process to get, sum with numpy and put the
                                       64 MiB object "big" that another process (the bench) wrote; baseline
                                       py-pipe-64mib: a child process sends the same 64 MiB array through a
                                       multiprocessing Pipe (send_bytes, the pipe's fastest path) and this process
                                       receives it into a buffer and sums it the same way. Rounds alternate; the first
                                       is a warm-up; medians. A second row times get + put alone.
Prints JSON rows in the bench's format, one per line."""

import json
import multiprocessing
import sys
import time

import numpy

import sharedstore

SIZE = 64 << 20


def payload():
    return numpy.random.default_rng(3).integers(0, 2**63, SIZE // 8, dtype=numpy.uint64)


def sender(conn, rounds):
    data = payload()
    for _ in range(rounds):
        conn.recv_bytes()  # "go"
        conn.send_bytes(memoryview(data).cast("B"))
    conn.close()


def row(scenario, metric, unit, value, baseline, baseline_value):
    print(json.dumps({"scenario": scenario, "metric": metric, "unit": unit, "value": round(value, 4),
                      "baseline": baseline, "baseline_value": round(baseline_value, 4)}), flush=True)


def main():
    if sys.argv[1] == "write":
        with sharedstore.Client().join_container(sys.argv[2]) as con:
            con.join_object("big").write(0, payload())
        return
    container, rounds = sys.argv[2], int(sys.argv[3])
    obj = sharedstore.Client().join_container(container).join_object("big")
    parent, child = multiprocessing.Pipe()
    p = multiprocessing.Process(target=sender, args=(child, rounds))
    p.start()
    buf = bytearray(SIZE)
    shm, shm_getput, pipe = [], [], []
    checks = set()
    for _ in range(rounds):
        t0 = time.perf_counter()
        with obj.get(0, SIZE) as view:
            total = int(numpy.frombuffer(view, dtype=numpy.uint64).sum(dtype=numpy.uint64))
        shm.append((time.perf_counter() - t0) * 1e6)
        checks.add(total)

        t0 = time.perf_counter()
        with obj.get(0, SIZE) as view:
            pass
        shm_getput.append((time.perf_counter() - t0) * 1e6)

        t0 = time.perf_counter()
        parent.send_bytes(b"go")
        n = parent.recv_bytes_into(buf)
        total_pipe = int(numpy.frombuffer(buf, dtype=numpy.uint64, count=n // 8).sum(dtype=numpy.uint64))
        pipe.append((time.perf_counter() - t0) * 1e6)
    p.join(30)
    if len(checks) != 1 or total_pipe != total:
        print("the two paths summed different data: %r %r" % (checks, total_pipe), file=sys.stderr)
        sys.exit(1)
    med = lambda xs: float(numpy.median(xs[1:]))  # noqa: E731 - the first round warms up
    row("py-get-64mib-xproc", "median", "us", med(shm), "py-pipe-64mib", med(pipe))
    row("py-get-64mib-xproc", "get-put-only", "us", med(shm_getput), "py-pipe-64mib", med(pipe))


if __name__ == "__main__":
    main()
