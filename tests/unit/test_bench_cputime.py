"""The benchmarks' CPU accounting (tests/benchmarks/cputime.py) on real processes."""
import os
import subprocess
import sys
import time

from tests.benchmarks import cputime

BURN = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass\n"
# A child starts a grandchild that burns CPU and, once it has used 0.5 s, exits without waiting for it: the
# grandchild goes on under init, out of the tree, and nobody in the tree reaps it (as a Python worker whose
# daemon Spark replaced). Its time then leaves a one-look count; the sampler keeps what it saw.
ORPHANING = f"""import os, subprocess, sys, time
burner = subprocess.Popen([sys.executable, '-c', {BURN!r}])
while True:
    fields = open(f'/proc/{{burner.pid}}/stat').read().rsplit(')', 1)[1].split()
    if int(fields[11]) + int(fields[12]) >= 0.5 * os.sysconf('SC_CLK_TCK'):
        break
    time.sleep(0.01)
"""


def test_the_sampler_keeps_the_time_of_a_process_that_left_the_tree():
    meter = cputime.TreeCpu(os.getpid())
    meter.sample()
    start_meter, start_tree = meter.seconds(), cputime.tree_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", ORPHANING])
    while child.poll() is None:
        meter.sample()
        time.sleep(0.05)
    meter.sample()
    counted, one_look = meter.seconds() - start_meter, cputime.tree_cpu_seconds() - start_tree
    assert counted >= 0.4                 # the grandchild's 0.5 s in the tree, as last sampled
    assert one_look < counted - 0.25      # the child's start-up only: the grandchild's time went with it
    time.sleep(1.0)                       # the grandchild finishes, out of the tree
    meter.sample()
    # Nothing lost; what the grandchild burned out of the tree (~0.8 s) is not the tree's.
    assert counted <= meter.seconds() - start_meter < counted + 0.3


def test_the_tree_is_a_process_and_its_descendants_only():
    table = {1: cputime.Process(0, "init", 0, 0, 0, 0), 10: cputime.Process(1, "a", 0, 5, 0, 1),
             11: cputime.Process(10, "b", 0, 7, 0, 2), 12: cputime.Process(11, "c", 0, 1, 0, 3),
             20: cputime.Process(1, "other", 0, 100, 0, 4)}
    assert cputime.tree(table, 10) == {10, 11, 12}
    meter = cputime.TreeCpu(10)
    meter.sample(table)
    assert meter.seconds() == 13 / cputime.TICK
    # 12 exits (gone from /proc): its ticks stay counted; a new process reusing pid 11 counts apart.
    del table[12]
    table[11] = cputime.Process(10, "b2", 0, 2, 0, 9)
    meter.sample(table)
    assert meter.seconds() == (5 + 7 + 1 + 2) / cputime.TICK
