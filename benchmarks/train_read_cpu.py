"""The train program with the process CPU seconds of its reading phase (every call of
``load_training_micrograph``: the one read of each movie and the training data built from it)
printed at the end (stderr, ``READ_CPU``); the rest is the optimisation and start-up. Run from a
project folder with train's own arguments, under ``/usr/bin/time`` for the whole process::

    /usr/bin/time -f "user %U sys %S maxrss_kb %M" python benchmarks/train_read_cpu.py \\
        --particles ... --method evidence --threads 1 --out Train/t1
"""
import sys
import time

from polishplugin.programs import train

READ = [0.0]
_load = train.load_training_micrograph


def _timed(*a, **k):
    c = time.process_time()
    try:
        return _load(*a, **k)
    finally:
        READ[0] += time.process_time() - c


if __name__ == "__main__":
    train.load_training_micrograph = _timed
    rc = train.main(sys.argv[1:])
    print("READ_CPU %.2f" % READ[0], file=sys.stderr)
    sys.exit(rc)
