"""Work split over MPI ranks (mpi4py) when the program runs under ``mpirun``; a single process
otherwise; worker processes forked over the items of one process (:func:`for_each_in_processes`),
threads (:func:`read_ahead`), shared arrays filled in a forked process (:func:`fill_in_process`).
MPI lives here and only here (DESIGN: programs own the parallelism over micrographs)."""
import contextlib
import logging
import os

log = logging.getLogger(__name__)


class _Serial:
    rank, size = 0, 1

    def barrier(self):
        pass

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]


def _under_mpirun():
    return any(v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                         "MPI_LOCALNRANKS", "SLURM_PMIX_MAPPING_SERV"))


def get_comm():
    """mpi4py's COMM_WORLD when started by an MPI launcher and mpi4py is installed, else a
    one-process stand-in with the same few methods (rank, size, barrier, bcast, gather,
    allgather)."""
    if not _under_mpirun():
        return _Serial()
    try:
        from mpi4py import MPI
    except ImportError:
        log.warning("started under an MPI launcher but mpi4py is not installed: every rank "
                    "would do all the work, so only rank 0 will run")
        if int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", 0))) != 0:
            raise SystemExit(0)
        return _Serial()
    return MPI.COMM_WORLD


def pending(items, done, comm):
    """The ``items`` not ``done(item)`` (an output file exists), as rank 0 sees them before any
    rank starts: the same list on every rank. Each rank testing for itself races in a resumed
    job: a rank that starts late finds outputs the others have written meanwhile, the
    round-robin split shifts, and items no rank then does are reported as not processed."""
    flags = comm.bcast([not done(m) for m in items] if comm.rank == 0 else None, root=0)
    return [m for m, todo in zip(items, flags) if todo]


def my_share(items, comm):
    """Round-robin share of ``items`` for this rank (micrographs are similar in cost)."""
    return items[comm.rank::comm.size]


def balanced_share(items, costs, comm):
    """This rank's share of ``items`` with similar total ``costs`` per rank: largest first, each
    to the rank with the least so far (deterministic, the same on every rank)."""
    load = [0.0] * comm.size
    owner = {}
    for i in sorted(range(len(items)), key=lambda i: (-costs[i], i)):
        r = min(range(comm.size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return [items[i] for i in range(len(items)) if owner[i] == comm.rank]


def set_blas_threads(threads):
    """Threads of numpy's OpenBLAS (the library already loaded: its openblas_set_num_threads),
    for programs that split the work over their own threads: BLAS threads inside those threads
    oversubscribe the cores (polish --threads 2 on 2 cores: CC maps 1.11 s with 2 BLAS threads
    per thread, 0.56 s with 1), and ``--threads 1`` then means one thread. Returns whether a
    library listened (False without OpenBLAS, e.g. MKL or Accelerate)."""
    import ctypes
    import numpy  # noqa: F401  (loads its BLAS)
    done = False
    with open("/proc/self/maps") as fh:
        libs = {line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line}
    for path in sorted(libs):
        lib = ctypes.CDLL(path)
        for name in ("openblas_set_num_threads64_", "openblas_set_num_threads",
                     "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads"):
            func = getattr(lib, name, None)
            if func is not None:
                func(ctypes.c_int(max(1, int(threads))))
                done = True
                break
    return done


def set_threads(threads):
    """Threads for numba's parallel kernels (and numpy's BLAS where it listens)."""
    if threads and threads > 0:
        try:
            import numba
            numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
        except ImportError:  # pragma: no cover - numba is a dependency
            pass



def set_torch_threads(threads):
    """Threads of torch's CPU kernels (the U-Net denoiser): at most ``threads``; torch's own
    default is every core, whatever --threads says."""
    if threads and threads > 0:
        import torch
        torch.set_num_threads(int(threads))

class RefineSplit:
    """The refinement's work over the ranks of ``comm`` (the interface of
    :class:`polishplugin.core.refine.loop.Serial`). With an even number of ranks half-set 1's
    particles go to the even ranks and half-set 2's to the odd ones (each rank projects one
    reference only); with an odd number every rank takes a share of both half-sets (an even load).
    Sums are reduced on rank 0 and broadcast (every rank gets the same bits, so all take the same
    decisions); half-set 1's map update (denoiser included) runs on rank 0, half-set 2's on rank 1,
    at the same time. A rank that waits for the others sleeps (:meth:`_wait`) instead of spinning
    in the MPI library, which would take CPU from the ranks still working on a shared machine."""

    POLL_S = 0.002

    def __init__(self, comm):
        self.comm = comm

    def _wait(self):
        """Barrier that polls with sleeps (before every collective of this class)."""
        import time
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(self.POLL_S)

    def mine(self, idx, half):
        import numpy as np
        size, rank = self.comm.size, self.comm.rank
        if size % 2:
            return np.array_split(idx, size)[rank]
        if rank % 2 != half - 1:
            return idx[:0]
        return np.array_split(idx, size // 2)[rank // 2]

    def sum(self, array):
        import numpy as np
        from mpi4py import MPI
        array = np.ascontiguousarray(array)
        out = np.empty_like(array)
        self._wait()
        self.comm.Reduce(array, out, op=MPI.SUM, root=0)
        self.comm.Bcast(out, root=0)
        return out

    def _owner(self, half):
        return (half - 1) % self.comm.size

    def owns(self, half):
        return self.comm.rank == self._owner(half)

    def share(self, value, half):
        self._wait()
        return self.comm.bcast(value, root=self._owner(half))


def read_ahead(items, depth=2):
    """Yield the items of the iterator ``items``, produced in a background thread up to
    ``depth`` ahead: reading and decoding the next movie frame (zlib and numpy release the GIL)
    overlaps the work on the current one. An exception of the producer is raised here; closing
    this generator early stops the producer."""
    import queue
    import threading
    q = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:   # handed to the consumer
            q.put((done, exc))

    t = threading.Thread(target=produce, name="read_ahead", daemon=True)
    t.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():       # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()


def numba_threads_started():
    """Whether numba's threading layer has been launched in this process (numba.set_num_threads,
    a parallel kernel compiled or run): a process forked after that is killed by numba's GNU
    OpenMP layer at its first parallel kernel ("fork() called from a process already using GNU
    OpenMP"), so :func:`for_each_in_processes` must fork before."""
    try:
        from numba.np.ufunc import parallel
    except ImportError:          # pragma: no cover - numba is a dependency
        return False
    return bool(getattr(parallel, "_is_initialized", False))


@contextlib.contextmanager
def setup_without_gc():
    """Python's cyclic garbage collector off for a program's setup (imports, inputs,
    projectors), until :func:`freeze_setup` inside or the end of the block: numba's compiler
    and typing registries make ~10^5 objects that each full collection walks again (polish: 2
    full and 24 middle collections, 0.3 s before the first micrograph; BENCHMARKS.md, wt-fork)."""
    import gc
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def freeze_setup():
    """End of the setup: collect its garbage cycles once, move every object alive to the
    collector's permanent generation (``gc.freeze``) and turn the collector back on. Later
    collections, the final ones at exit included (0.25-0.3 s with numba loaded), no longer
    walk the setup's objects, and forked workers no longer write to the pages that hold them
    (copy-on-write; the recipe of the ``gc.freeze`` documentation). Frozen objects that later
    become unreachable cycles are not collected: call it once, at the end of the setup."""
    import gc
    gc.collect()
    gc.freeze()
    gc.enable()


def release_heap():
    """Give the free pages inside glibc's heap back to the system (malloc_trim). Before forking
    workers: the heap freed by a setup that ran beside another thread is fragmented, its free
    pages stay resident and each worker that reuses them copies them (polish, 2 workers: peak
    482 MB with, 478-540 MB without). No-op without glibc."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _die_with_parent(parent):
    """Linux: this (forked) process gets SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG),
    so that a killed job leaves no worker writing into its folder."""
    import ctypes
    import signal
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
    if os.getppid() != parent:     # the parent ended before the line above
        os._exit(1)


def fill_in_process(specs, fill):
    """Arrays in anonymous shared memory (``specs``: (shape, dtype) each, zeros) filled by
    ``fill(arrays)`` in a process forked now, while this one goes on (work that needs no more
    than what this process holds, e.g. the projectors' transforms beside other setup work).
    Returns a function that waits for that process and returns the arrays once it ended without
    error, else raises RuntimeError (half-filled arrays are never returned). The process dies
    with this one and takes none of its threads: fork before numba's threads start
    (:func:`numba_threads_started`), and call the returned function before forking others."""
    import mmap
    import numpy as np
    arrays = []
    for shape, dtype in specs:
        dtype, count = np.dtype(dtype), int(np.prod(shape))
        buf = mmap.mmap(-1, max(1, count * dtype.itemsize))    # MAP_SHARED | MAP_ANONYMOUS
        arrays.append(np.frombuffer(buf, dtype, count).reshape(shape))
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:                    # the child: fill, then leave without Python's clean-up
        code = 1
        try:
            _die_with_parent(parent)
            fill(arrays)
            code = 0
        except BaseException:      # noqa: BLE001 - told to the parent by the exit status
            log.exception("process %d filling shared arrays for %d failed", os.getpid(), parent)
        finally:
            os._exit(code)

    def wait():
        _, status = os.waitpid(pid, 0)
        if status:
            raise RuntimeError("the process filling shared arrays (pid %d) %s" % (pid, (
                "was killed by signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else
                "ended with exit status %d (see the log)" % os.WEXITSTATUS(status))))
        return arrays
    return wait


def for_each_in_processes(count, work, processes, after_fork=None, before_work=None):
    """Call ``work(i)`` for i in 0 .. count-1 over ``processes`` processes: this one and
    processes - 1 children forked now (sharing, copy-on-write, what this one has built: inputs,
    projectors), each taking the next i from a shared counter when done with the previous one
    (items of unequal cost balance themselves). ``work`` handles its own errors (an exception
    that escapes it ends its process; this one's is raised after the children are stopped).
    ``after_fork()`` runs first in each child (set its threads, drop inherited locks),
    ``before_work()`` in this process once the children are started; a child dies with this
    process. Fork before numba's threads start (:func:`numba_threads_started`).
    Returns {i: reason} for the items a child took but did not finish (killed, out of memory,
    an escaped exception), for the caller to record."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    lock = ctx.Lock()
    state = ctx.Array("i", [0] * (count + 1), lock=False)   # [next, owner of each item]
    finished = ctx.Array("b", count, lock=False)
    parent = os.getpid()

    def take(me):
        with lock:
            i = state[0]
            if i < count:
                state[0] = i + 1
                state[1 + i] = me + 1
        return i

    def serve(me):
        while True:
            i = take(me)
            if i >= count:
                return
            work(i)
            finished[i] = 1

    def child(me):
        _die_with_parent(parent)
        if after_fork is not None:
            after_fork()
        serve(me)

    kids = [ctx.Process(target=child, args=(k,), name="worker-%d" % k, daemon=True)
            for k in range(1, processes)]
    release_heap()
    for k in kids:
        k.start()
    try:
        if before_work is not None:
            before_work()
        serve(0)
    except BaseException:
        for k in kids:
            k.kill()
        for k in kids:
            k.join()
        raise
    for k in kids:
        k.join()
    lost = {}
    for i in range(count):
        owner = state[1 + i]
        if owner > 1 and not finished[i]:
            code = kids[owner - 2].exitcode
            lost[i] = "its worker process %s" % (
                "was killed by signal %d" % -code if code is not None and code < 0 else
                "ended with exit status %s" % code)
    for k in kids:
        if k.exitcode:
            log.error("worker process %s ended with exit status %s", k.name, k.exitcode)
    return lost
