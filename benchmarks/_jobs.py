"""Jobs of the parallel benchmark, in an importable module so that every start method and
every executor (dask workers unpickle by reference) can find them."""

import time


def spin(k):
    """Pure-Python CPU work: k loop iterations (holds the GIL, so only processes help)."""
    s = 0
    for i in range(k):
        s += i * i % 7
    return s


def calibrate(target_s=0.020):
    """Iterations of spin() that take ~target_s on this machine (median of 5 probes)."""
    k = 20000
    while True:
        t0 = time.perf_counter()
        spin(k)
        dt = time.perf_counter() - t0
        if dt > 0.005:
            break
        k *= 2
    k = int(k * target_s / dt)
    probes = []
    for _ in range(5):
        t0 = time.perf_counter()
        spin(k)
        probes.append(time.perf_counter() - t0)
    probes.sort()
    return max(1, int(k * target_s / probes[2]))


def job_trivial(traj):
    """No work, one float result."""
    traj.f_add_result('z', traj.x * traj.y + 0.25 * traj.x)


def job_cpu(traj, k):
    """~20 ms of pure-Python work, one float result."""
    traj.f_add_result('z', float(spin(k) % 1000) + traj.x * traj.y + 0.25 * traj.x)


def job_busy(traj):
    """The shared harness's multiproc job: ~1 ms of numpy (sin of 60,000 elements)."""
    import numpy as np
    v = np.linspace(0.0, 1.0, 60000) * (traj.x + 1.0) + traj.y
    traj.f_add_result('z', float(np.sin(v).sum()))


def job_reads(traj, k):
    """Reads the explored parameter traj.seed k times (a job's inner loop); returns the
    seconds the loop took."""
    s = 0.0
    t0 = time.perf_counter()
    for _ in range(k):
        s += traj.seed
    took = time.perf_counter() - t0
    traj.f_add_result('z', s)
    return took


def noop(i):
    """The bare Pool.map baseline's task."""
    return i * 0.5
