#!/usr/bin/env python
"""Serial storage benchmark: minipypet (HDF5, pickle) beside a bare loop and pypet 0.7.

Workloads (the parameter space of ../shared/bench/workloads.py: floats x, y explored with
cartesian_product, n runs, one result 'z' per run):

  scalar  each run stores one float          z = x*y + 0.25*x
  array   each run stores 1,000 float64      z = linspace(0, 1, 1000)*x + y

Implementations, each cell in its own subprocess:

  minipypet/hdf5    Environment(..., add_time=False, log_config=None, filename=...,
  minipypet/pickle  overwrite_file=True, report_progress=False); pickle: storage_service=
                    PickleStorageService
  bare/pickle       a plain loop into a dict, one pickle.dump at the end
  bare/pytables     a plain loop into one (n,) or (n, 1000) numpy array, written once as a
                    CArray with minipypet's default filters (zlib, complevel 9, shuffle)
  pypet/hdf5        pypet 0.7 through the shared harness (--impl pypet) with the Python 3.12
                    venv (PYPET_PYTHON overrides); only for n <= --pypet-max-n (default 4000)

Measured: ms per run (time inside env.run / n; bare: loop + final write), file bytes and bytes
per stored result beyond the raw data (8 B per float, 8,000 B per array), peak RSS of the
writing process, and the time to load all results back in a fresh process
(load_trajectory(..., load_results=2) + f_get_from_runs('z', fast_access=True)).

Serial scaling (issue 17, skipped with --no-scale): minipypet/hdf5 scalar at 10,000, 100,000
and 1,000,000 runs (--scale-n), ms/run and CPU ms/run, beside the floor of a durable journal
measured in the same run: one 60-byte os.write per run to an O_APPEND file plus an fsync at
most every second. Target: <= 0.015 ms/run at every n.

  python benchmarks/bench_storage.py              # full matrix, ~4-6 min on 2 cores
  python benchmarks/bench_storage.py --quick      # ~1 min
  python benchmarks/bench_storage.py --n 1000,10000 --array-n 1000 --json out.json
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

RAW = {'scalar': 8, 'array': 8000}
ARRAY_LEN = 1000
TRAJ = 'bench_%s_n%d'


# ============================================================================================
# cells (run in subprocesses)
# ============================================================================================
def job_scalar(traj):
    traj.f_add_result('z', traj.x * traj.y + 0.25 * traj.x)


def job_array(traj):
    import numpy as np
    traj.f_add_result('z', np.linspace(0.0, 1.0, ARRAY_LEN) * traj.x + traj.y)


def _mini_path(out, workload, backend, n):
    return os.path.join(out, 'mini_%s_%s_n%d.%s' % (workload, backend, n,
                                                     'hdf5' if backend == 'hdf5' else 'pkl'))


def cell_mini_run(workload, backend, n, out):
    mp, t_import = C.import_minipypet()
    path = _mini_path(out, workload, backend, n)
    kw = {}
    if backend == 'pickle':
        kw['storage_service'] = mp.PickleStorageService
    xs, ys = C.grid(n)
    t0 = time.perf_counter()
    env = mp.Environment(trajectory=TRAJ % (workload, n), add_time=False, log_config=None,
                         filename=path, overwrite_file=True, report_progress=False, **kw)
    traj = env.trajectory
    traj.f_add_parameter('x', 0.0, comment='first dimension')
    traj.f_add_parameter('y', 0.0, comment='second dimension')
    traj.f_explore(mp.cartesian_product({'x': xs, 'y': ys}))
    t1, c1 = time.perf_counter(), time.process_time()
    env.run(job_scalar if workload == 'scalar' else job_array)
    t2, c2 = time.perf_counter(), time.process_time()
    env.disable_logging()
    t3 = time.perf_counter()
    return dict(run_s=t2 - t1, run_cpu_s=c2 - c1, setup_s=t1 - t0, wall_s=t3 - t0,
                import_s=t_import,
                file_bytes=C.storage_bytes(path)[0], peak_rss_mb=C.peak_rss_mb(),
                version=getattr(mp, '__version__', '?'))


def cell_mini_load(workload, backend, n, out):
    mp, _ = C.import_minipypet()
    path = _mini_path(out, workload, backend, n)
    # numpy and PyTables are imported already in a real session (pypet imports them with
    # itself): do not time their import as part of the load
    C.have('numpy'), C.have('tables')
    rss0 = C.peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    traj = mp.load_trajectory(name=TRAJ % (workload, n), filename=path, load_results=2)
    values = traj.f_get_from_runs('z', fast_access=True)
    t1, c1 = time.perf_counter(), time.process_time()
    vals = list(values.values())
    return dict(load_s=t1 - t0, load_cpu_s=c1 - c0, n_results=len(vals), checksum=C.checksum(vals),
                load_rss_mb=C.peak_rss_mb(), rss_before_load_mb=rss0)


def _bare_path(out, workload, kind, n):
    return os.path.join(out, 'bare_%s_%s_n%d.%s' % (workload, kind, n,
                                                     'h5' if kind == 'pytables' else 'pkl'))


def cell_bare_run(workload, kind, n, out):
    import itertools
    import pickle
    path = _bare_path(out, workload, kind, n)
    xs, ys = C.grid(n)
    if workload == 'array' or kind == 'pytables':
        import numpy as np
    if kind == 'pytables':
        import tables
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == 'pickle':
        results = {}
        if workload == 'scalar':
            for i, (x, y) in enumerate(itertools.product(xs, ys)):
                results[i] = x * y + 0.25 * x
        else:
            for i, (x, y) in enumerate(itertools.product(xs, ys)):
                results[i] = np.linspace(0.0, 1.0, ARRAY_LEN) * x + y
        with open(path, 'wb') as f:
            pickle.dump(results, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        shape = (n,) if workload == 'scalar' else (n, ARRAY_LEN)
        arr = np.empty(shape, dtype=np.float64)
        if workload == 'scalar':
            for i, (x, y) in enumerate(itertools.product(xs, ys)):
                arr[i] = x * y + 0.25 * x
        else:
            for i, (x, y) in enumerate(itertools.product(xs, ys)):
                arr[i] = np.linspace(0.0, 1.0, ARRAY_LEN) * x + y
        filters = tables.Filters(complevel=9, complib='zlib', shuffle=True)
        with tables.open_file(path, 'w') as f:
            f.create_carray(f.root, 'z', obj=arr, filters=filters)
    t1, c1 = time.perf_counter(), time.process_time()
    return dict(run_s=t1 - t0, run_cpu_s=c1 - c0, setup_s=0.0, wall_s=t1 - t0, file_bytes=os.path.getsize(path),
                peak_rss_mb=C.peak_rss_mb(), version='bare')


def cell_bare_load(workload, kind, n, out):
    import pickle
    path = _bare_path(out, workload, kind, n)
    if kind == 'pytables':
        import tables
    rss0 = C.peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == 'pickle':
        with open(path, 'rb') as f:
            vals = list(pickle.load(f).values())
    else:
        with tables.open_file(path, 'r') as f:
            vals = list(f.root.z[:])
    t1, c1 = time.perf_counter(), time.process_time()
    return dict(load_s=t1 - t0, load_cpu_s=c1 - c0, n_results=len(vals), checksum=C.checksum(vals),
                load_rss_mb=C.peak_rss_mb(), rss_before_load_mb=rss0)


def cell_floor(n, out):
    """The floor of a durable run: a 60-byte record appended per run, fsync every second."""
    path = os.path.join(out, 'floor_n%d.journal' % n)
    record = b'r' * 60
    t0, c0 = time.perf_counter(), time.process_time()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        last = time.monotonic()
        for _ in range(n):
            os.write(fd, record)
            now = time.monotonic()
            if now - last >= 1.0:
                os.fsync(fd)
                last = now
        os.fsync(fd)
    finally:
        os.close(fd)
    t1, c1 = time.perf_counter(), time.process_time()
    os.remove(path)
    return dict(run_s=t1 - t0, run_cpu_s=c1 - c0)


def cell_main(argv):
    what, impl, workload, backend, n, out = argv
    n = int(n)
    if what == 'floor':
        res = cell_floor(n, out)
        res['ok'] = True
        print(json.dumps(res), flush=True)
        return
    func = {('run', 'mini'): cell_mini_run, ('load', 'mini'): cell_mini_load,
            ('run', 'bare'): cell_bare_run, ('load', 'bare'): cell_bare_load}[(what, impl)]
    res = func(workload, backend, n, out)
    res['ok'] = True
    print(json.dumps(res), flush=True)


# ============================================================================================
# orchestration
# ============================================================================================
def measure(impl, workload, backend, n, out, repeats, timeout):
    """Run + load cells for one implementation; a merged record."""
    script = os.path.abspath(__file__)
    rec = dict(impl=impl, workload=workload, backend=backend, n=n)
    runs = []
    for _ in range(repeats):
        r = C.run_cell(script, ['run', impl, workload, backend, n, out], timeout)
        if not r.get('ok'):
            rec.update(ok=False, error=r.get('error'), stderr=r.get('stderr'))
            return rec
        runs.append(r)
    r = C.median_record(runs, ['run_s', 'run_cpu_s', 'wall_s', 'setup_s', 'peak_rss_mb'])
    rec.update(r)
    loads = []
    for _ in range(repeats):
        lo = C.run_cell(script, ['load', impl, workload, backend, n, out], timeout)
        if not lo.get('ok'):
            rec.update(ok=False, error='load: %s' % lo.get('error'), stderr=lo.get('stderr'))
            return rec
        loads.append(lo)
    rec.update(C.median_record(loads, ['load_s', 'load_cpu_s', 'load_rss_mb']))
    rec['ok'] = rec.get('n_results') == n
    return rec


def measure_pypet(workload, n, out, timeout):
    rec = dict(impl='pypet', workload=workload, backend='hdf5', n=n)
    python = C.pypet_python()
    if python is None:
        rec.update(ok=False, skipped='not installed')
        return rec
    r = C.run_harness(python, 'pypet', workload, n, out, timeout)
    if not r.get('ok'):
        rec.update(ok=False, error=r.get('error', 'failed'))
        return rec
    rec.update(run_s=r['run_s'], setup_s=r.get('setup_s'), wall_s=r['wall_s'],
               file_bytes=r['file_bytes'], peak_rss_mb=r['peak_rss_mb'],
               load_s=r.get('verify_s'), load_rss_mb=None, n_results=r['n_results'],
               checksum=r['checksum'], version=r.get('version'), ok=True,
               note='load in the writing process (harness verify_s); RSS incl. the load')
    return rec


def derive(rec):
    if rec.get('ok'):
        n = rec['n']
        rec['per_run_ms'] = rec['run_s'] / n * 1000.0
        if rec.get('run_cpu_s') is not None:
            rec['per_run_cpu_ms'] = rec['run_cpu_s'] / n * 1000.0
        rec['bytes_per_result_beyond_raw'] = (rec['file_bytes'] - n * RAW[rec['workload']]) / n
    return rec


def print_tables(records):
    for workload in ('scalar', 'array'):
        rows = []
        for r in records:
            if r['workload'] != workload:
                continue
            name = '%s/%s' % (r['impl'], r['backend'])
            if not r.get('ok'):
                why = r.get('skipped') or ('FAILED: %s' % r.get('error'))
                rows.append([r['n'], name, why] + [''] * 9)
                continue
            rows.append([r['n'], name, C.fmt_num(r['per_run_ms'], 3),
                         C.fmt_num(r.get('per_run_cpu_ms'), 3),
                         C.fmt_num(r['run_s'], 3), C.fmt_bytes(r['file_bytes']),
                         C.fmt_num(r['bytes_per_result_beyond_raw'], 3),
                         C.fmt_num(r['peak_rss_mb'], 3), C.fmt_num(r.get('load_s'), 3),
                         C.fmt_num(r.get('load_cpu_s'), 3),
                         C.fmt_num(r.get('load_rss_mb'), 3),
                         'ok' if r.get('checksum') is not None else '-'])
        if not rows:
            continue
        print('\n## %s workload (serial; raw data %d B per result)\n' % (workload,
                                                                          RAW[workload]))
        print(C.table(['n', 'impl/backend', 'ms/run', 'cpu ms/run', 'run s', 'file',
                       'B/result beyond raw', 'peak RSS MB', 'load all s', 'load cpu s',
                       'load RSS MB', 'n ok'], rows))
        # checksums must agree across implementations
        by_n = {}
        for r in records:
            if r['workload'] == workload and r.get('ok'):
                by_n.setdefault(r['n'], set()).add(round(r['checksum'], 3))
        bad = {n: s for n, s in by_n.items() if len(s) > 1}
        print('\nchecksums: %s' % ('identical across implementations for every n' if not bad
                                   else 'DIFFER: %s' % bad))
    # marginal bytes per result (fixed costs removed)
    rows = []
    for impl_b in sorted({(r['impl'], r['backend'], r['workload']) for r in records}):
        pts = sorted((r['n'], r['file_bytes']) for r in records if r.get('ok') and
                     (r['impl'], r['backend'], r['workload']) == impl_b)
        if len(pts) >= 2:
            (n1, b1), (n2, b2) = pts[0], pts[-1]
            rows.append(['%s/%s' % impl_b[:2], impl_b[2], '%d -> %d' % (n1, n2),
                         C.fmt_num((b2 - b1) / (n2 - n1) - RAW[impl_b[2]], 3)])
    if rows:
        print('\n## marginal file bytes per extra result beyond raw ((size2-size1)/(n2-n1) - raw)'
              '\n')
        print(C.table(['impl/backend', 'workload', 'n', 'B/result'], rows))


def targets(records, extra=None):
    """The targets of issue 3 (and issue 17's `extra`), evaluated on what was measured."""
    def get(impl, workload, backend, n):
        for r in records:
            if (r['impl'], r['workload'], r['backend'], r['n']) == (impl, workload, backend,
                                                                   n) and r.get('ok'):
                return r
        return None

    out = []
    m = get('mini', 'scalar', 'hdf5', 1000)
    p = get('pypet', 'scalar', 'hdf5', 1000)
    if m:
        out.append(('scalar 1,000 runs HDF5 <= 0.05 ms/run', m['per_run_ms'] <= 0.05,
                    '%.4f ms/run' % m['per_run_ms']))
        if p:
            ratio = p['per_run_ms'] / m['per_run_ms']
            out.append(('scalar 1,000 runs HDF5 >= 100x faster than pypet 0.7', ratio >= 100,
                        'pypet %.2f ms/run -> %.0fx' % (p['per_run_ms'], ratio)))
        else:
            out.append(('scalar 1,000 runs HDF5 >= 100x faster than pypet 0.7', None,
                        'pypet not measured'))
    for backend in ('hdf5', 'pickle'):
        ns = sorted(r['n'] for r in records if r.get('ok') and r['impl'] == 'mini' and
                    r['workload'] == 'scalar' and r['backend'] == backend)
        if 1000 in ns and ns[-1] > 1000:
            a, b = get('mini', 'scalar', backend, 1000), get('mini', 'scalar', backend, ns[-1])
            ratio = b['per_run_ms'] / a['per_run_ms']
            out.append(('flat: ms/run at %d <= 1.5x at 1,000 (%s)' % (ns[-1], backend),
                        ratio <= 1.5 if ns[-1] >= 100000 else None,
                        '%.4f / %.4f = %.2fx%s' % (b['per_run_ms'], a['per_run_ms'], ratio,
                                                  '' if ns[-1] >= 100000 else
                                                  ' (target is stated at 100,000)')))
        if ns:
            big = get('mini', 'scalar', backend, ns[-1])
            out.append(('<= 200 B per stored scalar beyond raw (%s, n=%d)' % (backend, ns[-1]),
                        big['bytes_per_result_beyond_raw'] <= 200,
                        '%.1f B' % big['bytes_per_result_beyond_raw']))
            out.append(('load all results of 100,000 runs < 2 s (%s)' % backend,
                        big['load_s'] < 2.0 if ns[-1] >= 100000 else None,
                        '%.3f s at n=%d' % (big['load_s'], ns[-1])))
    for n in sorted({r['n'] for r in records if r['workload'] == 'array'}):
        m, b = get('mini', 'array', 'hdf5', n), get('bare', 'array', 'pytables', n)
        if m and b:
            ratio = m['run_s'] / b['run_s']
            out.append(('array n=%d HDF5 within 2x of bare PyTables' % n, ratio <= 2.0,
                        '%.3f ms/run vs %.3f = %.2fx' % (m['per_run_ms'], b['per_run_ms'],
                                                         ratio)))
    if extra is not None:
        out.append(extra)
    print('\n## targets (issues 3 and 17)\n')
    print(C.table(['target', 'verdict', 'measured'],
                  [[t, 'n/a' if ok is None else C.verdict(ok), info] for t, ok, info in out]))
    return [dict(target=t, met=ok, measured=info) for t, ok, info in out]


def scaling(args, out):
    """Serial scalar HDF5 ms/run at 10k..1M beside the write+fsync floor (issue 17)."""
    script = os.path.abspath(__file__)
    rows, verdict, recs = [], [], []
    for n in [int(v) for v in args.scale_n.split(',') if v]:
        print('  scaling: floor and minipypet/hdf5 scalar n=%d ...' % n, file=sys.stderr,
              flush=True)
        floors = [C.run_cell(script, ['floor', 'floor', 'scalar', 'none', n, out],
                             args.timeout) for _ in range(args.repeats)]
        runs = [C.run_cell(script, ['run', 'mini', 'scalar', 'hdf5', n, out], args.timeout)
                for _ in range(args.repeats)]
        floor = C.median_record(floors, ['run_s', 'run_cpu_s'])
        run = C.median_record(runs, ['run_s', 'run_cpu_s'])
        for f in os.listdir(out):  # (1M runs leave ~100 MB of segments behind)
            path = os.path.join(out, f)
            if os.path.isfile(path):
                os.remove(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        recs.append(dict(n=n, floor=floor, run=run))
        if not (floor.get('ok') and run.get('ok')):
            rows.append([n, 'FAILED: %s' % (run.get('error') or floor.get('error')), '', '',
                         ''])
            verdict.append((n, None))
            continue
        ms, cpu = run['run_s'] / n * 1e3, run['run_cpu_s'] / n * 1e3
        fl = floor['run_s'] / n * 1e3
        rows.append([n, C.fmt_num(ms, 3), C.fmt_num(cpu, 3), C.fmt_num(fl, 3),
                     C.fmt_num(ms / fl, 3) + 'x' if fl > 0 else '-'])
        verdict.append((n, ms))
    print('\n## serial scaling: scalar workload, minipypet/hdf5, beside the floor of a '
          'durable journal\n')
    print(C.table(['n', 'ms/run', 'cpu ms/run', 'floor ms/run (60 B write + fsync/s)',
                   'x floor'], rows))
    ok = all(v is not None and v <= 0.015 for _, v in verdict)
    target = ('serial scalar HDF5 <= 0.015 ms/run at %s runs' % ', '.join(
        '{:,}'.format(n) for n, _ in verdict), ok, ', '.join(
        '%s: %s' % ('{:,}'.format(n), 'failed' if v is None else '%.4f' % v)
        for n, v in verdict))
    return recs, target


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == '--cell':
        return cell_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--n', help='comma-separated n for the scalar workload '
                                '(default 1000,10000,100000; --quick: 1000,10000)')
    ap.add_argument('--array-n', help='comma-separated n for the array workload '
                                      '(default 1000,10000; --quick: 1000)')
    ap.add_argument('--quick', action='store_true', help='small n only (about a minute)')
    ap.add_argument('--workloads', default='scalar,array')
    ap.add_argument('--backends', default='hdf5,pickle')
    ap.add_argument('--no-pypet', action='store_true', help='do not run pypet 0.7')
    ap.add_argument('--no-bare', action='store_true', help='do not run the bare baselines')
    ap.add_argument('--no-scale', action='store_true',
                    help='skip the serial scaling section (10k, 100k, 1M runs)')
    ap.add_argument('--scale-n', default='10000,100000,1000000',
                    help='n of the serial scaling section (default 10000,100000,1000000)')
    ap.add_argument('--pypet-max-n', type=int, default=4000,
                    help='skip pypet above this n (it takes ~10-25 ms per run; default 4000)')
    C.add_common_args(ap, timeout=900)
    args = C.parse_args(ap, argv)

    def ns(text, default, quick):
        if text:
            return [int(v) for v in text.split(',') if v]
        return quick if args.quick else default
    plan_n = {'scalar': ns(args.n, [1000, 10000, 100000], [1000, 10000]),
              'array': ns(args.array_n, [1000, 10000], [1000])}
    if args.n and not args.array_n:  # --n alone: the array workload takes n <= 10,000
        plan_n['array'] = [n for n in plan_n['scalar'] if n <= 10000] or plan_n['scalar'][:1]
    workloads = [w for w in args.workloads.split(',') if w]
    backends = [b for b in args.backends.split(',') if b]
    out = args.out or tempfile.mkdtemp(prefix='minipypet_bench_storage_')
    os.makedirs(out, exist_ok=True)
    pypet_py = None if args.no_pypet else C.pypet_python()
    mp, _ = C.import_minipypet()
    print('# minipypet storage benchmark')
    print('minipypet %s (%s), Python %s, %d CPUs; pypet: %s; scratch %s' % (
        getattr(mp, '__version__', '?'), mp.__file__,
        sys.version.split()[0], os.cpu_count() or 0,
        pypet_py or ('not run (--no-pypet)' if args.no_pypet else 'not installed'), out))
    print(C.machine_line() + ' at the start')
    records = []
    t_start = time.time()
    scale, scale_target = None, None
    try:
        if not args.no_scale:
            scale, scale_target = scaling(args, out)
        for workload in workloads:
            for n in plan_n[workload]:
                plan = [('mini', b) for b in backends]
                if not args.no_bare:
                    plan += [('bare', 'pickle'), ('bare', 'pytables')]
                for impl, backend in plan:
                    print('  running %s %s/%s n=%d ...' % (workload, impl, backend, n),
                          file=sys.stderr, flush=True)
                    records.append(derive(measure(impl, workload, backend, n, out,
                                                  args.repeats, args.timeout)))
                if not args.no_pypet:
                    if pypet_py is None:
                        records.append(dict(impl='pypet', workload=workload, backend='hdf5',
                                            n=n, ok=False, skipped='not installed'))
                    elif n > args.pypet_max_n:
                        records.append(dict(impl='pypet', workload=workload, backend='hdf5',
                                            n=n, ok=False,
                                            skipped='skipped (n > %d)' % args.pypet_max_n))
                    else:
                        print('  running %s pypet n=%d (slow) ...' % (workload, n),
                              file=sys.stderr, flush=True)
                        records.append(derive(measure_pypet(workload, n, out, args.timeout)))
                for f in os.listdir(out):  # keep the scratch space small
                    path = os.path.join(out, f)
                    if os.path.isfile(path):
                        os.remove(path)
                    else:
                        shutil.rmtree(path, ignore_errors=True)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print_tables(records)
    verdicts = targets(records, scale_target)
    print('\n(total %.0f s; %s at the end)' % (time.time() - t_start, C.machine_line()))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'records': records, 'scaling': scale, 'targets': verdicts}, f,
                      indent=1, default=str)
    return 0


if __name__ == '__main__':
    sys.exit(main())
