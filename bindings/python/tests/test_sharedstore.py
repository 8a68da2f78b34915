"""The Python package against a real broker: the API, zero-copy reads with numpy, errors, asynchronous operations,
another Python process on the other side, and threads."""

import os
import subprocess
import sys
import threading

import numpy
import pytest

import sharedstore
from conftest import run_python, wait_for


def test_container_and_object_roundtrip(client, name):
    # Contract: what write puts in the object, a get of the same range shows, through every join of it.
    with client.create_container(name) as con:
        with con.create_object("A", 3 << 20) as obj:
            assert obj.size == 3 << 20
            assert obj.writable
            obj.write(5, b"hello world")
            with con.join_object("A") as again:  # a second id of the same object
                with again.get(0, 16) as view:
                    assert bytes(view[5:16]) == b"hello world"
                    assert not view.readonly
            obj.destroy()


def test_numpy_view_is_the_shared_memory_itself(client, name):
    # Contract: numpy.frombuffer over a lease's view makes no copy: the array's data address lies inside the lease's
    # range of the mapping, and its contents are the object's.
    n = 8 << 20
    with client.create_container(name) as con:
        obj = con.create_object("A", n)
        src = numpy.arange(n // 8, dtype=numpy.uint64)
        obj.write(0, src)
        lease = obj.get(1 << 20, 4 << 20)
        with lease as view:
            arr = numpy.frombuffer(view, dtype=numpy.uint64)
            addr = arr.__array_interface__["data"][0]
            assert lease.address <= addr < lease.address + lease.size
            assert addr == obj.address + (1 << 20)
            assert arr.size == (4 << 20) // 8
            assert int(arr[0]) == (1 << 20) // 8
            assert int(arr.sum()) == int(src[(1 << 20) // 8:(5 << 20) // 8].sum())
            del arr
        obj.destroy()


def test_another_process_writes_this_one_reads(client, name):
    # Contract: a 16 MiB array written by one Python process is read in place by another, bit for bit.
    with client.create_container(name) as con:
        out = run_python(
            "import sys, numpy, sharedstore\n"
            "c = sharedstore.Client().join_container(sys.argv[1])\n"
            "o = c.create_object('A', 16 << 20)\n"
            "a = numpy.random.default_rng(7).integers(0, 2**63, (16 << 20) // 8, dtype=numpy.uint64)\n"
            "o.write(0, a)\n"
            "print(int(a.sum(dtype=numpy.uint64)))\n"
            "o.leave(); c.leave()\n", name)
        expected = int(out.strip())
        obj = con.join_object("A")
        with obj.get() as view:
            assert int(numpy.frombuffer(view, dtype=numpy.uint64).sum(dtype=numpy.uint64)) == expected
        obj.destroy()


def test_errors_mirror_error_codes(client, name):
    # Contract: each failure raises the ErrorCode's class, and nothing is left held.
    with pytest.raises(sharedstore.NotFound):
        client.join_container(name + "-missing")
    with pytest.raises(sharedstore.Timeout):
        client.join_container(name + "-missing", timeout=0.05)
    with client.create_container(name) as con:
        with pytest.raises(sharedstore.AlreadyExists):
            client.create_container(name)
        obj = con.create_object("A", 1 << 20)
        with pytest.raises(sharedstore.AlreadyExists):
            con.create_object("A", 10)
        with pytest.raises(sharedstore.NotFound):
            con.join_object("B")
        with pytest.raises(sharedstore.InvalidArgument):
            obj.get(1 << 20, 1)
        with pytest.raises(sharedstore.InvalidArgument):
            obj.write((1 << 20) - 2, b"abc")
        lease = obj.get(0, 10)
        with pytest.raises(sharedstore.WouldDeadlock):
            obj.write(0, b"x")
        with pytest.raises(sharedstore.Busy):
            obj.leave()
        with pytest.raises(sharedstore.Busy):
            con.leave()
        lease.put()
        obj.write(0, b"x")  # nothing was left held by the failures
        obj.destroy()
    assert issubclass(sharedstore.NotFound, LookupError)
    assert issubclass(sharedstore.InvalidArgument, ValueError)
    assert sharedstore.Timeout("t", 5).return_value == -5


def test_destroy_waits_for_another_member_and_times_out(client, name):
    # Contract: destroy blocks while another process is a member; a timeout restores the container.
    with client.create_container(name) as con:
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, sharedstore\n"
             "c = sharedstore.Client().join_container(sys.argv[1])\n"
             "print('joined', flush=True)\n"
             "sys.stdin.readline()\n"
             "c.leave()\n", name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "joined"
            with pytest.raises(sharedstore.Timeout):
                con.destroy(timeout=0.2)
            child.stdin.write("go\n")
            child.stdin.flush()
            con.destroy(timeout=30)
            assert child.wait(30) == 0
        finally:
            child.kill()
            child.wait()


def test_awrite_aread_status_cancel_result(client, name):
    # Contract: awrite returns an operation whose result is the byte count once applied; aread fills a numpy array;
    # a finished operation cannot be canceled; result() ends the id and is remembered.
    with client.create_container(name) as con:
        obj = con.create_object("A", 2 << 20)
        data = numpy.arange(1 << 17, dtype=numpy.uint64)  # 1 MiB
        op = obj.awrite(4096, data)
        assert op.status in (sharedstore.OpStatus.IN_PROGRESS, sharedstore.OpStatus.COMPLETED)
        assert op.wait(30)
        assert op.status == sharedstore.OpStatus.COMPLETED
        assert op.cancel() is False
        assert op.result() == data.nbytes
        assert op.result() == data.nbytes
        assert op.error is None
        out = numpy.zeros(1 << 17, dtype=numpy.uint64)
        rd = obj.aread(4096, out)
        assert rd.result(timeout=30) == out.nbytes
        assert numpy.array_equal(out, data)
        with pytest.raises(sharedstore.InvalidArgument):
            obj.awrite(2 << 20, b"x")
        with pytest.raises(TypeError):
            obj.aread(0, b"read-only")
        obj.destroy()


def test_threads_get_and_put_one_object(client, name):
    # Contract: threads of one process may get and put one object concurrently while another process writes it:
    # every get sees a whole write, never half of one. (A write from this very process would be refused with
    # WouldDeadlock while its threads hold leases: holds are per process.)
    with client.create_container(name) as con:
        obj = con.create_object("A", 1 << 20)
        errors = []
        gets = [0] * 4
        stop = threading.Event()

        def reader(k):
            try:
                while not stop.is_set():
                    with obj.get(0, 4096) as view:
                        a = numpy.frombuffer(view, dtype=numpy.uint64)
                        if not (a == a[0]).all():
                            errors.append("torn read: %r" % a[:4])
                        del a
                    gets[k] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            run_python(
                "import sys, numpy, sharedstore\n"
                "c = sharedstore.Client().join_container(sys.argv[1]); o = c.join_object('A')\n"
                "for i in range(1, 301):\n"
                "    o.write(0, numpy.full(512, i, dtype=numpy.uint64), timeout=30)\n"
                "o.leave(); c.leave()\n", name)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert all(g > 0 for g in gets)
        with obj.get(0, 8) as view:
            assert int(numpy.frombuffer(view, dtype=numpy.uint64)[0]) == 300
        obj.destroy()


def test_max_members_is_chosen_at_create_and_the_next_process_is_refused(client, name):
    # Contract (issue 16): create_container(max_members=N) admits N member processes at once; the next join gets
    # NoResources; a value outside 0-4095 is InvalidArgument and creates nothing.
    with pytest.raises(sharedstore.InvalidArgument):
        client.create_container(name, max_members=4096)
    with client.create_container(name, max_members=2) as con:  # this process is member 1
        refused = run_python(
            "import sys, subprocess, sharedstore\n"
            "holder = subprocess.Popen([sys.executable, '-c', 'import sys, sharedstore; "
            "c = sharedstore.Client().join_container(sys.argv[1]); print(\"in\", flush=True); sys.stdin.read()', "
            "sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
            "assert holder.stdout.readline().strip() == 'in'\n"
            "try:\n"
            "    sharedstore.Client().join_container(sys.argv[1])\n"
            "    print('joined')\n"
            "except sharedstore.NoResources:\n"
            "    print('NoResources')\n"
            "holder.stdin.close(); holder.wait(timeout=30)\n", name)
        assert refused.split() == ["NoResources"]
