#!/usr/bin/env python
"""Parallel-run benchmark: speedup on CPU-bound jobs and per-run overhead of every mode.

Four parts, each measurement ("cell") in its own subprocess:

  (a) speedup   200 runs of a ~20 ms pure-Python CPU-bound job (calibrated on this machine),
                serial vs pool + QUEUE on 2 cores (pool + LOCK and a ProcessPoolExecutor
                shown for information). Targets: pool + QUEUE >= 1.7x faster (issue 4);
                pool + QUEUE and pool + LOCK >= 1.8x (issue 17).
  (b) overhead  trivial jobs (no work, one float result) at n = 500 and n = 2,000 in every
                mode: serial; pool x {QUEUE, LOCK, NONE (pickle backend)} with and without
                freeze_input; no pool (a process per run) x {QUEUE, LOCK, NONE (pickle)};
                concurrent.futures.ProcessPoolExecutor (with and without freeze_input); dask
                LocalCluster(2 worker processes).get_executor() when dask.distributed is
                installed; and, as the floor, a bare multiprocessing.Pool(2).map of a
                trivial function (its pool start shown apart). Per-run cost = time inside
                env.run / n (the job does nothing, so it is all overhead); the marginal cost
                per run = the slope from 500 to 2,000 runs. Targets: <= 1 ms per run in every
                mode, no growth with n; pool + QUEUE and pool + LOCK (with and without
                freeze_input) <= 0.05 ms marginal per run (issue 17).
  (d) reads     a job that reads an explored parameter (traj.seed) in a loop, 20 runs of
                100,000 reads: microseconds per read in serial mode and in each worker mode.
                Target (issue 17): workers read as fast as serial (<= 1.5x).
  (c) vs pypet  the shared harness's multiproc_queue / multiproc_lock workloads (~1 ms of numpy
                per run, ncores=2, pool) for pypet 0.7 (Python 3.12 venv; PYPET_PYTHON
                overrides) and the bare multiprocessing.Pool baseline, beside minipypet
                running the same job in the same modes.

Storage is HDF5 (minipypet's default) unless a mode says pickle; Environment(add_time=False,
log_config=None, filename=..., overwrite_file=True, report_progress=False), ncores=2.
Every cell loads its file back afterwards (not timed) and checks that all n results are there.

  python benchmarks/bench_parallel.py            # ~2-3 min on 2 cores
  python benchmarks/bench_parallel.py --quick    # fewer modes and runs, ~1 min
  python benchmarks/bench_parallel.py --parts b --modes serial,pool-queue --json out.json
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common as C  # noqa: E402

NCORES = 2

# mode id -> (label, Environment keywords, backend, executor kind)
MODES = {
    'serial': ('serial', {}, 'hdf5', None),
    'pool-queue': ('pool + QUEUE', dict(use_pool=True, wrap_mode='QUEUE'), 'hdf5', None),
    'pool-lock': ('pool + LOCK', dict(use_pool=True, wrap_mode='LOCK'), 'hdf5', None),
    'pool-none': ('pool + NONE (pickle)', dict(use_pool=True, wrap_mode='NONE'), 'pickle',
                  None),
    'pool-queue-freeze': ('pool + QUEUE + freeze_input',
                          dict(use_pool=True, wrap_mode='QUEUE', freeze_input=True), 'hdf5',
                          None),
    'pool-lock-freeze': ('pool + LOCK + freeze_input',
                         dict(use_pool=True, wrap_mode='LOCK', freeze_input=True), 'hdf5',
                         None),
    'pool-none-freeze': ('pool + NONE + freeze_input (pickle)',
                         dict(use_pool=True, wrap_mode='NONE', freeze_input=True), 'pickle',
                         None),
    'nopool-queue': ('no pool + QUEUE', dict(use_pool=False, wrap_mode='QUEUE'), 'hdf5', None),
    'nopool-lock': ('no pool + LOCK', dict(use_pool=False, wrap_mode='LOCK'), 'hdf5', None),
    'nopool-none': ('no pool + NONE (pickle)', dict(use_pool=False, wrap_mode='NONE'),
                    'pickle', None),
    'ppe': ('ProcessPoolExecutor(2)', {}, 'hdf5', 'ppe'),
    'ppe-freeze': ('ProcessPoolExecutor(2) + freeze_input', dict(freeze_input=True), 'hdf5',
                   'ppe'),
    'dask': ('dask LocalCluster(2 procs) executor', {}, 'hdf5', 'dask'),
    'bare-pool': ('bare multiprocessing.Pool(2).map', {}, None, 'bare'),
}
QUICK_MODES = ['serial', 'pool-queue', 'pool-lock', 'pool-none', 'pool-queue-freeze',
               'nopool-queue', 'ppe', 'dask', 'bare-pool']
READ_MODES = ['serial', 'pool-queue', 'pool-lock', 'pool-queue-freeze', 'nopool-queue', 'ppe']
READS = 100000
ISSUE17_MODES = ('pool-queue', 'pool-lock', 'pool-queue-freeze', 'pool-lock-freeze')


# ============================================================================================
# a cell: one mode, one job, one n (in a subprocess)
# ============================================================================================
def _cpu_all():
    """CPU seconds of this process and of its reaped children (pool workers, the Manager,
    the queue writer, per-run processes): the total work a mode costs, which a busy machine
    does not inflate as much as wall time."""
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bare_cell(n):
    """multiprocessing.Pool(2).map(noop, range(n)): the floor of any pool."""
    import multiprocessing
    import _jobs
    c0, t0 = _cpu_all(), time.perf_counter()
    with multiprocessing.Pool(NCORES) as pool:
        pool.map(_jobs.noop, range(NCORES))  # (started: every worker answered once)
        t1 = time.perf_counter()
        values = pool.map(_jobs.noop, range(n))
        t2 = time.perf_counter()
    return dict(mode='bare-pool', label=MODES['bare-pool'][0], job='trivial', n=n,
                run_s=t2 - t1, per_run_ms=(t2 - t1) / n * 1000.0, startup_s=t1 - t0,
                cpu_per_run_ms=(_cpu_all() - c0) / n * 1000.0, peak_rss_mb=C.peak_rss_mb(),
                peak_rss_children_mb=C.children_rss_mb(), n_results=len(values),
                checksum=C.checksum(values), file_bytes=0, ok=len(values) == n)


def cell(mode, jobkind, n, out, k):
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [HERE, os.environ.get('MINIPYPET_ROOT') or C.ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    if mode == 'bare-pool':
        return bare_cell(n)
    mp, _ = C.import_minipypet()
    import _jobs
    label, kw, backend, executor_kind = MODES[mode]
    kw = dict(kw)
    path = os.path.join(out, 'par_%s_%s_n%d.%s' % (mode, jobkind, n,
                                                   'hdf5' if backend == 'hdf5' else 'pkl'))
    if backend == 'pickle':
        kw['storage_service'] = mp.PickleStorageService
    if mode != 'serial' and executor_kind is None:
        kw.update(multiproc=True, ncores=NCORES)
    executor, cluster, client, startup = None, None, None, 0.0
    t0 = time.perf_counter()
    if executor_kind == 'ppe':
        import concurrent.futures
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=NCORES)
    elif executor_kind == 'dask':
        import logging
        logging.getLogger('distributed').setLevel(logging.ERROR)
        from dask.distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=NCORES, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        executor = client.get_executor()
    startup = time.perf_counter() - t0
    if executor is not None:
        kw['executor'] = executor
    xs, ys = C.grid(n)
    try:
        env = mp.Environment(trajectory='par_%s_n%d' % (jobkind, n), add_time=False,
                             log_config=None, filename=path, overwrite_file=True,
                             report_progress=False, **kw)
        traj = env.trajectory
        if jobkind == 'reads':
            traj.f_add_parameter('seed', 0.0)
            traj.f_explore({'seed': [float(i) for i in range(n)]})
        else:
            traj.f_add_parameter('x', 0.0)
            traj.f_add_parameter('y', 0.0)
            traj.f_explore(mp.cartesian_product({'x': xs, 'y': ys}))
        job = {'trivial': _jobs.job_trivial, 'cpu': _jobs.job_cpu, 'busy': _jobs.job_busy,
               'reads': _jobs.job_reads}[jobkind]
        extra = (k,) if jobkind in ('cpu', 'reads') else ()
        cpu1 = _cpu_all()
        t1 = time.perf_counter()
        returned = env.run(job, *extra)
        t2 = time.perf_counter()
        env.disable_logging()
    finally:
        if executor_kind == 'ppe' and executor is not None:
            executor.shutdown()
        if client is not None:
            client.close()
            cluster.close()
    cpu2 = _cpu_all()  # after the executors are shut down: their processes are reaped
    rss, rss_children = C.peak_rss_mb(), C.children_rss_mb()
    loaded = mp.load_trajectory(name='par_%s_n%d' % (jobkind, n), filename=path,
                                load_results=2)
    values = list(loaded.f_get_from_runs('z', fast_access=True).values())
    size = sum(os.path.getsize(p) for p in (path, path + '.journal') if os.path.exists(p))
    return dict(mode=mode, label=label, job=jobkind, n=n, run_s=t2 - t1,
                per_run_ms=(t2 - t1) / n * 1000.0, startup_s=startup,
                cpu_per_run_ms=(cpu2 - cpu1) / n * 1000.0, peak_rss_mb=rss,
                peak_rss_children_mb=rss_children, n_results=len(values),
                checksum=C.checksum(values), file_bytes=size, ok=len(values) == n,
                loop_s=sum(r[1] for r in returned) if jobkind == 'reads' else None)


def fork_floor(n=200):
    """What one process per run costs at least here: mp.Process(noop) start + join, in a
    process that has minipypet, numpy and PyTables loaded (as a sweep's parent has)."""
    C.import_minipypet()
    for module in ('numpy', 'tables'):
        C.have(module)
    import multiprocessing
    ctx = multiprocessing.get_context()
    c0, t0 = _cpu_all(), time.perf_counter()
    for _ in range(n):
        here, there = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_noop, args=(there,))
        p.daemon = True
        p.start()
        there.close()
        here.recv()
        p.join()
    return dict(ok=True, per_run_ms=(time.perf_counter() - t0) / n * 1000.0,
                cpu_per_run_ms=(_cpu_all() - c0) / n * 1000.0, rss_mb=C.peak_rss_mb(),
                start_method=ctx.get_start_method())


def _noop(conn):
    conn.send(1)
    conn.close()


def measure(mode, jobkind, n, out, k, repeats, timeout):
    runs = []
    for _ in range(repeats):
        r = C.run_cell(os.path.abspath(__file__), [mode, jobkind, n, out, k], timeout)
        if not r.get('ok'):
            r.update(mode=mode, label=MODES[mode][0], job=jobkind, n=n)
            return r
        runs.append(r)
    return C.median_record(runs, ['run_s', 'per_run_ms', 'cpu_per_run_ms', 'startup_s',
                                  'peak_rss_mb', 'peak_rss_children_mb'] +
                           (['loop_s'] if jobkind == 'reads' else []))


def fail_text(r):
    return r.get('skipped') or 'FAILED: %s' % (r.get('error') or '?')[:70]


# ============================================================================================
# parts
# ============================================================================================
def part_a(args, out, verdicts):
    import _jobs
    k = _jobs.calibrate(0.020)
    t0 = time.perf_counter()
    _jobs.spin(k)
    probe = time.perf_counter() - t0
    n = args.cpu_n
    print('\n## (a) %d runs of a ~20 ms pure-Python job (spin(%d) = %.1f ms here), %d cores\n'
          % (n, k, probe * 1000, NCORES))
    modes = ['serial', 'pool-queue'] + ([] if args.quick else ['pool-lock', 'ppe'])
    recs = []
    for mode in modes:
        print('  (a) %s ...' % mode, file=sys.stderr, flush=True)
        recs.append(measure(mode, 'cpu', n, out, k, args.repeats, args.timeout))
    serial = recs[0] if recs[0].get('ok') else None
    rows = []
    for r in recs:
        if not r.get('ok'):
            rows.append([r['label'], fail_text(r), '', '', ''])
            continue
        speed = serial['run_s'] / r['run_s'] if serial else None
        rows.append([r['label'], C.fmt_num(r['run_s']), C.fmt_num(r['per_run_ms']),
                     C.fmt_num(speed) + 'x' if speed else '-', 'ok (%d)' % r['n_results']])
    print(C.table(['mode', 'run s', 'ms/run', 'speedup vs serial', 'stored'], rows))
    for mode in ('pool-queue', 'pool-lock'):
        q = next((r for r in recs if r['mode'] == mode and r.get('ok')), None)
        if serial and q:
            s = serial['run_s'] / q['run_s']
            verdicts.append(('%d x 20 ms, %s >= 1.8x faster than serial' % (n, MODES[mode][0]),
                             s >= 1.8, '%.2fx (serial %.2f s, %s %.2f s)' % (
                                 s, serial['run_s'], MODES[mode][0], q['run_s'])))
    return recs


def part_b(args, out, verdicts):
    modes = [m for m in (args.modes.split(',') if args.modes else
                         (QUICK_MODES if args.quick else list(MODES)))]
    if 'dask' in modes and not C.have('distributed'):
        modes.remove('dask')
        print('(dask.distributed not installed: dask mode skipped)')
    ns = sorted(int(v) for v in args.trivial_n.split(','))
    print('\n## (b) trivial jobs (no work, one float result): per-run cost = time in env.run '
          '/ n\n')
    recs = []
    for mode in modes:
        for n in ns:
            print('  (b) %s n=%d ...' % (mode, n), file=sys.stderr, flush=True)
            recs.append(measure(mode, 'trivial', n, out, 0, args.repeats, args.timeout))
    rows, worst, growth_bad, slopes = [], [], [], {}
    n_lo, n_hi = ns[0], ns[-1]
    for mode in modes:
        by_n = {r['n']: r for r in recs if r['mode'] == mode}
        lo, hi = by_n.get(n_lo), by_n.get(n_hi)
        if not (lo and hi and lo.get('ok') and hi.get('ok')):
            bad = next(r for r in (lo, hi) if r and not r.get('ok'))
            rows.append([MODES[mode][0], fail_text(bad)] + [''] * (len(ns) + 7))
            worst.append((mode, None))
            continue
        slope = (hi['run_s'] - lo['run_s']) / (n_hi - n_lo) * 1000.0 if n_hi > n_lo else None
        slopes[mode] = slope
        growth = hi['per_run_ms'] / lo['per_run_ms']
        if mode != 'bare-pool':
            worst.append((mode, hi['per_run_ms']))
        if len(ns) > 1 and growth > 1.2 and mode != 'bare-pool':
            growth_bad.append('%s %.2fx' % (mode, growth))
        cpu_slope = (hi['cpu_per_run_ms'] * n_hi - lo['cpu_per_run_ms'] * n_lo) / \
            (n_hi - n_lo) if n_hi > n_lo else None
        rows.append([MODES[mode][0]] + [C.fmt_num(by_n[n]['per_run_ms']) if by_n[n].get('ok')
                                        else 'fail' for n in ns] +
                    [C.fmt_num(growth) + 'x', C.fmt_num(slope), C.fmt_num(cpu_slope),
                     C.fmt_num(hi.get('cpu_per_run_ms')),
                     C.fmt_num(hi['startup_s']) if hi['startup_s'] > 0.01 else '-',
                     C.fmt_num(hi['peak_rss_mb']), C.fmt_num(hi['peak_rss_children_mb']),
                     'ok' if hi['ok'] and lo['ok'] else 'MISSING'])
    print(C.table(['mode'] + ['ms/run n=%d' % n for n in ns] +
                  ['growth %d/%d' % (n_hi, n_lo), 'marginal ms/run', 'marginal CPU ms/run',
                   'CPU ms/run n=%d (all procs)' % n_hi, 'executor startup s',
                   'RSS MB', 'children RSS MB', 'all stored'], rows))
    print('\n"marginal ms/run" = (run_s(n=%d) - run_s(n=%d)) / %d: the cost of one more run '
          'with the fixed start-up (pool, Manager, writer, final store) removed. "CPU ms/run" '
          '= CPU time of this process and all reaped children (workers, Manager, writer) / n: '
          'the work a mode costs, less sensitive to a busy machine than wall time; "marginal '
          'CPU" is its slope.' % (n_hi, n_lo, n_hi - n_lo))
    if any(m.startswith('nopool') for m in modes):
        fl = C.run_cell(os.path.abspath(__file__), ['floor'], args.timeout)
        if fl.get('ok'):
            print('floor of "a process per run" on this machine: mp.Process(noop) start + join '
                  '(%s, parent with minipypet/numpy/tables loaded, %.0f MB): %.2f ms wall, '
                  '%.2f ms CPU each, one at a time' % (fl['start_method'], fl['rss_mb'],
                                                       fl['per_run_ms'], fl['cpu_per_run_ms']))
    over = [(m, v) for m, v in worst if v is None or v > 1.0]
    verdicts.append(('trivial jobs, %d runs: <= 1 ms per run in every mode' % n_hi, not over,
                     'all <= 1 ms (max %.3f ms, %s)' % max((v, m) for m, v in worst if v)
                     if not over else 'over 1 ms: ' + ', '.join(
                         '%s %s' % (m, 'failed' if v is None else '%.2f ms' % v)
                         for m, v in over)))
    if len(ns) > 1:
        verdicts.append(('trivial jobs: no growth of per-run cost from n=%d to n=%d'
                         % (n_lo, n_hi), not growth_bad,
                         'per-run cost at %d <= 1.2x that at %d in every mode' % (n_hi, n_lo)
                         if not growth_bad else 'grew: ' + ', '.join(growth_bad)))
        measured = [(m, slopes.get(m)) for m in ISSUE17_MODES if m in modes]
        if measured:
            bare = slopes.get('bare-pool')
            verdicts.append((
                'pool + QUEUE / LOCK (+ freeze_input): <= 0.05 ms marginal per run',
                all(v is not None and v <= 0.05 for _, v in measured),
                ', '.join('%s %s' % (m, 'failed' if v is None else '%.3f' % v)
                          for m, v in measured) +
                ('; bare Pool.map %.4f' % bare if bare is not None else '')))
    return recs


def part_d(args, out, verdicts):
    modes = [m for m in READ_MODES if not args.quick or m in ('serial', 'pool-queue', 'ppe')]
    n = 20
    print('\n## (d) a job that reads traj.seed (explored) %d times in a loop, %d runs\n'
          % (READS, n))
    recs = []
    for mode in modes:
        print('  (d) %s ...' % mode, file=sys.stderr, flush=True)
        recs.append(measure(mode, 'reads', n, out, READS, args.repeats, args.timeout))
    us = {}
    rows = []
    for r in recs:
        if not r.get('ok'):
            rows.append([r['label'], fail_text(r), '', '', ''])
            continue
        per_read = r['loop_s'] / (n * READS) * 1e6  # (the jobs time their own loops)
        us[r['mode']] = per_read
        rows.append([r['label'], C.fmt_num(r['run_s']), C.fmt_num(per_read),
                     C.fmt_num(per_read / us['serial']) + 'x' if 'serial' in us else '-',
                     'ok (%d)' % r['n_results']])
    print(C.table(['mode', 'run s', 'us per read', 'vs serial', 'stored'], rows))
    if 'serial' in us and len(us) > 1:
        worst = max((v, m) for m, v in us.items() if m != 'serial')
        verdicts.append(('parameter reads in workers <= 1.5x serial (%.3f us)' % us['serial'],
                         worst[0] <= 1.5 * us['serial'],
                         'slowest %s: %.3f us per read' % (worst[1], worst[0])))
    return recs


def part_c(args, out, verdicts):
    n = args.pypet_n
    print('\n## (c) the shared harness\'s multiproc workloads (~1 ms numpy per run, pool, '
          '2 cores), n=%d\n' % n)
    recs = []
    for mode in ('pool-queue', 'pool-lock'):
        print('  (c) minipypet %s ...' % mode, file=sys.stderr, flush=True)
        r = measure(mode, 'busy', n, out, 0, args.repeats, args.timeout)
        r['impl'] = 'minipypet'
        recs.append(r)
    pypet_py = None if args.no_pypet else C.pypet_python()
    for wl, mode in (('multiproc_queue', 'pool-queue'), ('multiproc_lock', 'pool-lock')):
        if pypet_py is None:
            recs.append(dict(impl='pypet', mode=mode, label=MODES[mode][0], n=n, ok=False,
                             skipped='not run (--no-pypet)' if args.no_pypet
                             else 'not installed'))
            continue
        print('  (c) pypet %s (slow) ...' % wl, file=sys.stderr, flush=True)
        r = C.run_harness(pypet_py, 'pypet', wl, n, out, args.timeout)
        recs.append(dict(r, impl='pypet', mode=mode, label=MODES[mode][0], n=n,
                         peak_rss_children_mb=r.get('peak_rss_children_mb'),
                         peak_rss_mb=r.get('peak_rss_mb')))
    print('  (c) bare multiprocessing.Pool ...', file=sys.stderr, flush=True)
    r = C.run_harness(sys.executable, 'bare', 'multiproc_queue', n, out, args.timeout)
    recs.append(dict(r, impl='bare', mode='Pool.map', label='multiprocessing.Pool(2).map', n=n))
    rows = []
    for r in recs:
        if not r.get('ok'):
            rows.append([r['impl'], r['label'], fail_text(r), '', '', '', ''])
            continue
        rows.append([r['impl'], r['label'], C.fmt_num(r['per_run_ms']), C.fmt_num(r['run_s']),
                     C.fmt_bytes(r.get('file_bytes')), C.fmt_num(r.get('peak_rss_mb')),
                     C.fmt_num(r.get('peak_rss_children_mb'))])
    print(C.table(['impl', 'mode', 'ms/run', 'run s', 'file', 'RSS MB', 'children RSS MB'],
                  rows))
    ok = [r for r in recs if r.get('ok')]
    if len({round(r['checksum'], 6) for r in ok}) > 1:
        print('\nchecksums DIFFER: %s' % {(r['impl'], r['mode']): r['checksum'] for r in ok})
    elif ok:
        print('\nchecksums: identical across implementations')
    for mode in ('pool-queue', 'pool-lock'):
        m = next((r for r in ok if r['impl'] == 'minipypet' and r['mode'] == mode), None)
        p = next((r for r in ok if r['impl'] == 'pypet' and r['mode'] == mode), None)
        if m and p:
            print('%s: pypet %.2f ms/run, minipypet %.3f ms/run -> %.0fx' % (
                MODES[mode][0], p['per_run_ms'], m['per_run_ms'],
                p['per_run_ms'] / m['per_run_ms']))
    return recs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ['--cell', 'floor']:
        print(json.dumps(fork_floor()), flush=True)
        return 0
    if argv and argv[0] == '--cell':
        mode, jobkind, n, out, k = argv[1:]
        print(json.dumps(cell(mode, jobkind, int(n), out, int(k))), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--parts', default='a,b,c,d', help='which parts to run (default a,b,c,d)')
    ap.add_argument('--quick', action='store_true',
                    help='fewer modes; trivial n=200,500; pypet n=200')
    ap.add_argument('--modes', help='comma-separated mode ids for part (b): ' + ', '.join(MODES))
    ap.add_argument('--cpu-n', type=int, default=200, help='runs of the 20 ms job (200)')
    ap.add_argument('--trivial-n', help='comma-separated n for part (b) (default 500,2000)')
    ap.add_argument('--pypet-n', type=int, help='n for part (c) (default 1000; --quick 200)')
    ap.add_argument('--no-pypet', action='store_true')
    C.add_common_args(ap, timeout=600)
    args = C.parse_args(ap, argv)
    args.trivial_n = args.trivial_n or ('200,500' if args.quick else '500,2000')
    args.pypet_n = args.pypet_n or (200 if args.quick else 1000)
    out = args.out or tempfile.mkdtemp(prefix='minipypet_bench_parallel_')
    os.makedirs(out, exist_ok=True)
    mp, _ = C.import_minipypet()
    import multiprocessing
    print('# minipypet parallel benchmark')
    print('minipypet %s (%s), Python %s, %d CPUs, start method %s; pypet: %s; dask: %s' % (
        getattr(mp, '__version__', '?'), mp.__file__, sys.version.split()[0], os.cpu_count() or 0,
        multiprocessing.get_start_method(), C.pypet_python() or 'not installed',
        'installed' if C.have('distributed') else 'not installed'))
    print(C.machine_line() + ' at the start')
    verdicts, records = [], {}
    t_start = time.time()
    try:
        parts = args.parts.split(',')
        if 'a' in parts:
            records['a'] = part_a(args, out, verdicts)
        if 'b' in parts:
            records['b'] = part_b(args, out, verdicts)
        if 'c' in parts:
            records['c'] = part_c(args, out, verdicts)
        if 'd' in parts:
            records['d'] = part_d(args, out, verdicts)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    C.report('targets (issues 4 and 17)', verdicts, records, args.json, t_start)
    return 0


if __name__ == '__main__':
    sys.exit(main())
