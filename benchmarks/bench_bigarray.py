#!/usr/bin/env python
"""Big arrays, a million scalar runs and loading them back: minipypet beside bare PyTables and
pypet 0.7.

Three parts, each measurement ("cell") in its own subprocess:

  1 big arrays  n runs (default 100; --quick 20) of a serial sweep over one int parameter
                'seed' = range(n); each run stores one 4 MB float64 array
                np.random.default_rng(seed).random(500_000) as result 'arr'; then three times
                traj.f_expand({'seed': 5 more}) + env.f_run(job) again. Timed: the first sweep,
                each expansion (f_expand + f_run), peak RSS after the first sweep and at the
                end, the file size (minipypet: the data file plus everything its engine keeps
                beside it). Beside it: pypet 0.7 (the same script through its API, Python 3.12
                venv; PYPET_PYTHON overrides) and bare PyTables (one EArray (0, 500000)
                float64, zlib 9 + shuffle, chunkshape one row: n rows, then three appends of 5
                rows, each reopening the file in 'a' mode).
  2 scalars     a serial sweep of one float result 'z' per run (the shared harness's x, y
                space) at n = 1,000 / 100,000 / 1,000,000 (--quick: 1,000 / 100,000): ms/run
                (time inside env.f_run / n), the time spent before the first run and after
                the last one (the job stamps the time it starts; "after" = end of f_run - start
                of the last job), peak RSS, file size.
  3 loading     for every file of part 2, in a fresh process: load_trajectory(filename=...,
                index=-1, load_results=1) + f_get_from_runs('z', fast_access=True); the same
                with load_results=2; plain h5py reading the column (found by its path, or by a
                search; skipped with a note when the layout has no such column). Time, CPU,
                peak RSS, and whether floats came back (checksum against the expected one).

minipypet: Environment(trajectory=..., filename=..., add_time=False, log_config=None,
overwrite_file=True, report_progress=False), everything else default.

  python benchmarks/bench_bigarray.py               # ~4 min on 2 cores (old engine, pypet incl.)
  python benchmarks/bench_bigarray.py --quick       # ~1 min
  python benchmarks/bench_bigarray.py --parts 2,3 --scalar-n 1000,100000 --json out.json
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ARRAY_LEN = 500_000          # 4 MB of float64 per run
EXPANSIONS = (5, 5, 5)       # runs added by each f_expand
BIG_TRAJ = 'bigarray'
SCALAR_TRAJ = 'scalars_n%d'


# ============================================================================================
# cells (run in subprocesses)
# ============================================================================================
def job_big(traj):
    import numpy as np
    traj.f_add_result('arr', np.random.default_rng(traj.seed).random(ARRAY_LEN))


_STAMPS = [None, None]  # perf_counter at the start of the first and of the latest job


def job_scalar(traj):
    t = time.perf_counter()
    if _STAMPS[0] is None:
        _STAMPS[0] = t
    _STAMPS[1] = t
    traj.f_add_result('z', traj.x * traj.y + 0.25 * traj.x)


def _cell_dir(out, name):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    return folder


def _sweep_api(impl, path, n):
    """The big-array sweep through the pypet API (minipypet or pypet 0.7): timings and RSS,
    then (not timed) the array checksum of a reload."""
    if impl == 'mini':
        pypet, _ = C.import_minipypet()
        env = pypet.Environment(trajectory=BIG_TRAJ, filename=path, add_time=False,
                                log_config=None, overwrite_file=True, report_progress=False)
        run = env.f_run
    else:
        import pypet
        env = pypet.Environment(trajectory=BIG_TRAJ, filename=path, add_time=False,
                                log_config=None, overwrite_file=True,
                                comment='bench_bigarray')
        run = getattr(env, 'run', None) or env.f_run
    C.have('numpy')  # imported by the job anyway: not part of the first run's time
    traj = env.trajectory
    traj.f_add_parameter('seed', 0, comment='rng seed = run index')
    traj.f_explore({'seed': list(range(n))})
    t0, c0 = time.perf_counter(), time.process_time()
    res = run(job_big)
    first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_first = C.peak_rss_mb()
    exp_s, exp_runs = [], []
    for k in EXPANSIONS:
        m = len(traj)
        t0 = time.perf_counter()
        traj.f_expand({'seed': list(range(m, m + k))})
        res = run(job_big)
        exp_s.append(time.perf_counter() - t0)
        exp_runs.append(len(res) if res is not None else None)
    rss_end = C.peak_rss_mb()
    if hasattr(env, 'disable_logging'):
        env.disable_logging()
    total = n + sum(EXPANSIONS)
    if impl == 'mini':
        size, data, extra = C.storage_bytes(path)
    else:
        size, data, extra = os.path.getsize(path), os.path.getsize(path), []
    # check (not timed, after the RSS figures): every array is there with the right values
    t0 = time.perf_counter()
    if impl == 'mini':
        loaded = pypet.load_trajectory(name=BIG_TRAJ, filename=path, load_results=2)
    else:
        loaded = pypet.Trajectory(BIG_TRAJ, filename=path, add_time=False)
        loaded.f_load(load_parameters=2, load_results=2)
    arrays = list(loaded.f_get_from_runs('arr', fast_access=True).values())
    ok = len(arrays) == total and all(getattr(a, 'shape', None) == (ARRAY_LEN,)
                                      for a in arrays)
    return dict(first_s=first_s, first_cpu_s=first_cpu, exp_s=exp_s, exp_runs=exp_runs,
                rss_first_mb=rss_first, peak_rss_mb=rss_end, file_bytes=size,
                data_file_bytes=data, extra_files=extra, n_results=len(arrays),
                checksum=C.checksum(arrays) if ok else None, check_s=time.perf_counter() - t0,
                version=getattr(pypet, '__version__', '?'), ok=ok)


def cell_big(impl, n, out):
    n = int(n)
    folder = _cell_dir(out, 'big_%s_n%d' % (impl, n))
    if impl in ('mini', 'pypet'):
        return _sweep_api(impl, os.path.join(folder, 'bigarray.hdf5'), n)
    # bare PyTables: one EArray, a row per run
    import numpy as np
    import tables
    path = os.path.join(folder, 'bare.h5')
    filters = tables.Filters(complevel=9, complib='zlib', shuffle=True)

    def rows(start, count, earray):
        for idx in range(start, start + count):
            earray.append(np.random.default_rng(idx).random(ARRAY_LEN)[None, :])

    t0, c0 = time.perf_counter(), time.process_time()
    with tables.open_file(path, 'w') as f:
        earray = f.create_earray(f.root, 'arr', atom=tables.Float64Atom(),
                                 shape=(0, ARRAY_LEN), filters=filters,
                                 chunkshape=(1, ARRAY_LEN), expectedrows=n)
        rows(0, n, earray)
    first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_first = C.peak_rss_mb()
    exp_s, m = [], n
    for k in EXPANSIONS:
        t0 = time.perf_counter()
        with tables.open_file(path, 'a') as f:
            rows(m, k, f.root.arr)
        exp_s.append(time.perf_counter() - t0)
        m += k
    rss_end = C.peak_rss_mb()
    t0 = time.perf_counter()
    with tables.open_file(path, 'r') as f:
        earray = f.root.arr
        sums = [float(earray[i].sum()) for i in range(earray.nrows)]
    return dict(first_s=first_s, first_cpu_s=first_cpu, exp_s=exp_s, exp_runs=list(EXPANSIONS),
                rss_first_mb=rss_first, peak_rss_mb=rss_end, file_bytes=os.path.getsize(path),
                data_file_bytes=os.path.getsize(path), extra_files=[], n_results=len(sums),
                checksum=math.fsum(sums), check_s=time.perf_counter() - t0,
                version='tables %s' % tables.__version__, ok=len(sums) == m)


def _scalar_path(out, n):
    return os.path.join(out, 'scalar_n%d' % n, 'scalars.hdf5')


def cell_scalar(n, out):
    n = int(n)
    mp, _ = C.import_minipypet()
    _cell_dir(out, 'scalar_n%d' % n)
    path = _scalar_path(out, n)
    xs, ys = C.grid(n)
    env = mp.Environment(trajectory=SCALAR_TRAJ % n, filename=path, add_time=False,
                         log_config=None, overwrite_file=True, report_progress=False)
    traj = env.trajectory
    traj.f_add_parameter('x', 0.0, comment='first dimension')
    traj.f_add_parameter('y', 0.0, comment='second dimension')
    traj.f_explore(mp.cartesian_product({'x': xs, 'y': ys}))
    rss_setup = C.peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    env.f_run(job_scalar)
    t1, c1 = time.perf_counter(), time.process_time()
    env.disable_logging()
    size, data, extra = C.storage_bytes(path)
    return dict(run_s=t1 - t0, run_cpu_s=c1 - c0, before_first_s=_STAMPS[0] - t0,
                after_last_s=t1 - _STAMPS[1], loop_s=_STAMPS[1] - _STAMPS[0],
                rss_setup_mb=rss_setup,
                peak_rss_mb=C.peak_rss_mb(), file_bytes=size, data_file_bytes=data,
                extra_files=extra, version=getattr(mp, '__version__', '?'), ok=True)


def _values(got):
    """The values f_get_from_runs returned (a dict by run name, or a sequence)."""
    if hasattr(got, 'values') and callable(got.values):
        return list(got.values())
    return list(got)


def _h5py_column(f, n):
    """The dataset that holds the n values of 'z': the known layout first
    (/<traj>/results/runs/z/z), then a bounded search for a 1-d dataset of n numbers whose
    name is z (or that sits in a group named z). Returns (path, how) or (None, reason)."""
    import h5py
    for name in list(f.keys()):
        for cand in ('%s/results/runs/z/z' % name, '%s/results/runs/z' % name):
            obj = f.get(cand)
            if isinstance(obj, h5py.Dataset) and obj.shape[:1] == (n,):
                return cand, 'known path'
    found, seen = [], [0]

    def visit(path, obj):
        seen[0] += 1
        if seen[0] > 100000:
            return True  # stop: a layout with that many nodes has no column to read
        if isinstance(obj, h5py.Dataset) and obj.ndim == 1 and obj.shape[0] == n and \
                obj.dtype.kind == 'f' and 'z' in path.split('/')[-2:]:
            found.append(path)
            return True
        return None
    f.visititems(visit)
    if found:
        return found[0], 'found by search'
    return None, ('no 1-d dataset of %d values named z (searched %d nodes)' % (n, seen[0]))


def cell_load(mode, n, out):
    n = int(n)
    path = _scalar_path(out, n)
    # numpy and PyTables are imported already in a real session (and pypet imports them with
    # itself): their import is not part of the load time
    C.have('numpy'), C.have('tables')
    if mode == 'h5py':
        if not C.have('h5py'):
            return dict(ok=True, skipped='h5py not installed')
        import h5py
        import numpy as np
        with h5py.File(path, 'r') as f:
            segmented = [k for k in f.keys() if k + '/segments' in f]
        if segmented:  # format 3: the column is split over the segments (external links)
            rss0 = C.peak_rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            with h5py.File(path, 'r') as f:
                links = '%s/segments/' % segmented[-1]
                names = sorted(f[links])
                arr = np.concatenate([f[links + k + '/results/runs/z/z'][()] for k in names])
            t1, c1 = time.perf_counter(), time.process_time()
            return dict(load_s=t1 - t0, load_cpu_s=c1 - c0, load_rss_mb=C.peak_rss_mb(),
                        rss_before_load_mb=rss0, n_results=int(arr.shape[0]), floats=True,
                        checksum=math.fsum(arr.tolist()), note='through %d segment link(s)'
                        % len(names), ok=True)
        try:
            with h5py.File(path, 'r') as f:  # locate the column first (not timed)
                column, how = _h5py_column(f, n)
        except (OSError, KeyError, ValueError) as exc:
            return dict(ok=True, skipped='h5py cannot read %s: %s' % (os.path.basename(path),
                                                                      exc))
        if column is None:
            return dict(ok=True, skipped=how)
        rss0 = C.peak_rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        with h5py.File(path, 'r') as f:
            arr = f[column][()]
        t1, c1 = time.perf_counter(), time.process_time()
        return dict(load_s=t1 - t0, load_cpu_s=c1 - c0, load_rss_mb=C.peak_rss_mb(),
                    rss_before_load_mb=rss0, n_results=int(arr.shape[0]), floats=True,
                    checksum=math.fsum(arr.tolist()), note='%s: /%s' % (how, column), ok=True)
    mp, _ = C.import_minipypet()
    load_results = {'lr1': 1, 'lr1s': 1, 'lr2': 2, 'lr0a': 0, 'lr1a': 1}[mode]
    auto = {'auto_load': True} if mode.endswith('a') else {}
    rss0 = C.peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    traj = mp.load_trajectory(filename=path, index=-1, load_results=load_results)
    got = None if mode == 'lr1s' else traj.f_get_from_runs('z', fast_access=True,
                                                           **auto)
    t1, c1 = time.perf_counter(), time.process_time()
    rss1 = C.peak_rss_mb()
    if got is None:  # (the load alone: its runs, counted, not made)
        runs = traj.f_get('results.runs').f_children()
        return dict(load_s=t1 - t0, load_cpu_s=c1 - c0, load_rss_mb=rss1,
                    rss_before_load_mb=rss0, n_results=runs, floats=False,
                    checksum=None, ok=True,
                    note='no values asked for; %d runs in results.runs' % runs)
    vals = _values(got)
    import numbers
    floats = sum(1 for v in vals if isinstance(v, numbers.Real))
    kinds = sorted({type(v).__name__ for v in vals if not isinstance(v, numbers.Real)})
    return dict(load_s=t1 - t0, load_cpu_s=c1 - c0, load_rss_mb=rss1, rss_before_load_mb=rss0,
                n_results=len(vals), floats=floats == len(vals) and len(vals) > 0,
                checksum=math.fsum(float(v) for v in vals) if floats == len(vals) else None,
                note='' if not kinds else '%d of %d are %s, not values' % (
                    len(vals) - floats, len(vals), '/'.join(kinds)), ok=True)


def cell_main(argv):
    kind, rest = argv[0], argv[1:]
    func = {'big': cell_big, 'scalar': cell_scalar, 'load': cell_load}[kind]
    res = func(*rest)
    res.setdefault('ok', True)
    print(json.dumps(res), flush=True)


# ============================================================================================
# orchestration
# ============================================================================================
def _median_list(records, key):
    lists = [r[key] for r in records if r.get(key)]
    return [sorted(col)[len(col) // 2] for col in zip(*lists)] if lists else None


def measure(args_list, repeats, timeout, keys, python=None, list_keys=()):
    script = os.path.abspath(__file__)
    runs = []
    for _ in range(repeats):
        r = C.run_cell(script, args_list, timeout, python=python)
        if not r.get('ok'):
            return r
        runs.append(r)
    rec = C.median_record(runs, keys)
    for key in list_keys:
        rec[key] = _median_list(runs, key)
    return rec


def _clean(out, name, keep):
    if not keep:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)


def part_big(args, out, verdicts):
    n = args.big_n
    print('\n## 1. big arrays: %d runs x 4 MB (float64 x 500,000), then 3 expansions of 5 runs'
          % n)
    plan = [('mini', 'minipypet', None), ('bare', 'bare PyTables EArray', None)]
    pypet_py = None if args.no_pypet else C.pypet_python()
    if not args.no_pypet:
        plan.append(('pypet', 'pypet 0.7', pypet_py or 'not installed'))
    recs = []
    for impl, label, py in plan:
        if impl == 'pypet' and pypet_py is None:
            recs.append(dict(impl=impl, label=label, ok=False, skipped='not installed'))
            continue
        print('  1. %s n=%d ...' % (label, n), file=sys.stderr, flush=True)
        r = measure(['big', impl, n, out], args.repeats, args.timeout,
                    ['first_s', 'first_cpu_s', 'rss_first_mb', 'peak_rss_mb'],
                    python=pypet_py if impl == 'pypet' else None, list_keys=['exp_s'])
        _clean(out, 'big_%s_n%d' % (impl, n), args.out)
        recs.append(dict(r, impl=impl, label=label, n=n))
    rows = []
    for r in recs:
        if not r.get('ok'):
            rows.append([r['label'], r.get('skipped') or 'FAILED: %s' % r.get('error')] +
                        [''] * 10)
            continue
        e = r['exp_s']
        rows.append([r['label'], C.fmt_num(r['first_s']),
                     C.fmt_num(r['first_s'] / n * 1e3), C.fmt_num(e[0]), C.fmt_num(e[1]),
                     C.fmt_num(e[2]), '%.2fx' % (e[-1] / e[0]), C.fmt_num(r['rss_first_mb']),
                     C.fmt_num(r['peak_rss_mb']), C.fmt_bytes(r['file_bytes']),
                     ', '.join(r.get('extra_files') or []) or '-',
                     '%d ok' % r['n_results'] if r.get('checksum') is not None else 'BAD'])
    print()
    print(C.table(['impl', 'first sweep s', 'ms/run', 'expand 1 s', 'expand 2 s',
                   'expand 3 s', 'last/first', 'RSS after sweep MB', 'peak RSS MB',
                   'file (total)', 'beside the data file', 'arrays'], rows))
    sums = {r['impl']: round(r['checksum'], 3) for r in recs
            if r.get('ok') and r.get('checksum') is not None}
    print('\nchecksums: %s' % ('identical across implementations' if len(set(sums.values()))
                               <= 1 else 'DIFFER: %s' % sums))
    get = {r['impl']: r for r in recs if r.get('ok')}
    m, b, p = get.get('mini'), get.get('bare'), get.get('pypet')
    at = '' if n == 100 else ' (n=%d; the target is stated at 100)' % n
    if m and b:
        ratio = m['first_s'] / b['first_s']
        verdicts.append(('1. big-array first sweep <= 1.3x bare PyTables', ratio <= 1.3,
                         '%.2f s vs %.2f s = %.2fx%s' % (m['first_s'], b['first_s'], ratio, at)))
    if m:
        if p:
            verdicts.append(('1. big-array first sweep no slower than pypet 0.7',
                             m['first_s'] <= p['first_s'],
                             '%.2f s vs pypet %.2f s' % (m['first_s'], p['first_s'])))
        else:
            verdicts.append(('1. big-array first sweep no slower than pypet 0.7', None,
                             'pypet not measured'))
    if m and b:
        ratios = [x / y for x, y in zip(m['exp_s'], b['exp_s'])]
        verdicts.append(('1. each 5-run expansion <= 1.5x bare PyTables',
                         max(ratios) <= 1.5,
                         ' / '.join('%.2fx' % q for q in ratios) +
                         ' (%s s vs bare %s s)' % ('/'.join('%.2f' % x for x in m['exp_s']),
                                                   '/'.join('%.2f' % x for x in b['exp_s']))))
    if m:
        growth = m['exp_s'][-1] / m['exp_s'][0]
        verdicts.append(('1. expansions flat: last <= 1.3x first', growth <= 1.3,
                         '%.2f s / %.2f s = %.2fx' % (m['exp_s'][-1], m['exp_s'][0], growth)))
        verdicts.append(('1. peak RSS of the %d x 4 MB sweep <= 300 MB' % n,
                         m['rss_first_mb'] <= 300,
                         '%.0f MB (%.0f MB after the expansions)%s' % (
                             m['rss_first_mb'], m['peak_rss_mb'], at)))
    return recs


def expected_scalar_checksum(n):
    xs, ys = C.grid(n)
    return math.fsum(x * y + 0.25 * x for x in xs for y in ys)


def part_scalar(args, out, verdicts):
    print('\n## 2. scalar sweeps: one float per run, serial, HDF5')
    recs = []
    for n in args.scalar_n:
        print('  2. scalar n=%d ...' % n, file=sys.stderr, flush=True)
        # a small n takes ~0.1 s, where one hiccup of a busy machine shows: median of 3 at least
        r = measure(['scalar', n, out], max(args.repeats, 3 if n <= 10000 else 1), args.timeout,
                    ['run_s', 'run_cpu_s', 'before_first_s', 'after_last_s', 'loop_s',
                     'peak_rss_mb'])
        r.update(n=n)
        if r.get('ok'):
            r['per_run_ms'] = r['run_s'] / n * 1e3
            r['per_run_cpu_ms'] = r['run_cpu_s'] / n * 1e3
            r['loop_per_run_ms'] = r['loop_s'] / max(n - 1, 1) * 1e3
            r['after_share'] = r['after_last_s'] / r['run_s']
            r['before_share'] = r['before_first_s'] / r['run_s']
        recs.append(r)
    rows = []
    for r in recs:
        if not r.get('ok'):
            rows.append([r['n'], 'FAILED: %s' % r.get('error')] + [''] * 9)
            continue
        rows.append([r['n'], C.fmt_num(r['per_run_ms'], 3), C.fmt_num(r['per_run_cpu_ms'], 3),
                     C.fmt_num(r['loop_per_run_ms'], 3),
                     C.fmt_num(r['run_s']), '%s (%.0f%%)' % (C.fmt_num(r['before_first_s']),
                                                             100 * r['before_share']),
                     '%s (%.0f%%)' % (C.fmt_num(r['after_last_s']), 100 * r['after_share']),
                     C.fmt_num(r['peak_rss_mb']), C.fmt_bytes(r['file_bytes']),
                     C.fmt_num((r['file_bytes'] - 8 * r['n']) / r['n']),
                     ', '.join(r.get('extra_files') or []) or '-'])
    print()
    print(C.table(['n', 'ms/run', 'cpu ms/run', 'loop ms/run', 'f_run s', 'before 1st run s',
                   'after last run s', 'peak RSS MB', 'file (total)', 'B/run beyond raw',
                   'beside the data file'], rows))
    print('\n(ms/run = f_run time / n; the job stamps the time it starts: "loop ms/run" = '
          '(last start - first start) / (n-1), "before 1st run" = first start - f_run start, '
          '"after last run" = f_run end - last start, i.e. the end-of-sweep write)')
    ok = {r['n']: r for r in recs if r.get('ok')}
    big = max(ok) if ok else None
    at = '' if big == 1000000 else ' (n=%s; the target is stated at 1,000,000)' % (
        '{:,}'.format(big) if big else '-')
    if 1000 in ok and big and big > 1000:
        ratio = ok[big]['per_run_ms'] / ok[1000]['per_run_ms']
        verdicts.append(('2. per-run cost flat: n=%s <= 1.3x n=1,000' % '{:,}'.format(big),
                         ratio <= 1.3, '%.4f / %.4f ms/run = %.2fx%s' % (
                             ok[big]['per_run_ms'], ok[1000]['per_run_ms'], ratio, at)))
    if big:
        r = ok[big]
        verdicts.append(('2. end-of-sweep write <= 15%% of the sweep (n=%s)' % '{:,}'.format(big),
                         r['after_share'] <= 0.15, '%.2f s of %.2f s = %.1f%%%s' % (
                             r['after_last_s'], r['run_s'], 100 * r['after_share'], at)))
        verdicts.append(('2. peak RSS of the %s-run sweep <= 300 MB' % '{:,}'.format(big),
                         r['peak_rss_mb'] <= 300, '%.0f MB%s' % (r['peak_rss_mb'], at)))
    return recs


LOAD_MODES = [('lr0a', 'load_results=0 + f_get_from_runs(auto_load=True)'),
              ('lr1a', 'load_results=1 + f_get_from_runs(auto_load=True)'),
              ('lr1s', 'load_results=1 (the default skeleton load) alone'),
              ('lr1', 'load_results=1 + f_get_from_runs'),
              ('lr2', 'load_results=2 + f_get_from_runs'),
              ('h5py', 'h5py: read the column')]


def part_load(args, out, verdicts, scalar_recs):
    print('\n## 3. loading all z in a fresh process (numpy and PyTables imported first)')
    recs = []
    written = {r['n'] for r in scalar_recs if r.get('ok')}
    for n in args.scalar_n:
        if n not in written:
            continue
        expect = round(expected_scalar_checksum(n), 3)
        for mode, label in LOAD_MODES:
            print('  3. load %s n=%d ...' % (mode, n), file=sys.stderr, flush=True)
            r = measure(['load', mode, n, out], args.repeats, args.timeout,
                        ['load_s', 'load_cpu_s', 'load_rss_mb'])
            r.update(n=n, mode=mode, label=label)
            if r.get('ok') and not r.get('skipped'):
                r['checksum_ok'] = r.get('checksum') is not None and \
                    round(r['checksum'], 3) == expect and r['n_results'] == n
            recs.append(r)
    rows = []
    for r in recs:
        if not r.get('ok') or r.get('skipped'):
            rows.append([r['n'], r['label'], r.get('skipped') and 'skipped: %s' % r['skipped']
                         or 'FAILED: %s' % r.get('error')] + [''] * 5)
            continue
        rows.append([r['n'], r['label'], C.fmt_num(r['load_s']), C.fmt_num(r['load_cpu_s']),
                     C.fmt_num(r['load_rss_mb']), C.fmt_num(r['rss_before_load_mb']),
                     'yes (%d, checksum %s)' % (r['n_results'],
                                                'ok' if r['checksum_ok'] else 'WRONG')
                     if r['floats'] else 'NO', r.get('note') or ''])
    if rows:
        print()
        print(C.table(['n', 'path', 's', 'cpu s', 'peak RSS MB', 'RSS before MB',
                       'floats back', 'note'], rows))
    get = {(r['n'], r['mode']): r for r in recs if r.get('ok') and not r.get('skipped')}
    for n, limit_s, limit_mb in ((100000, 0.1, None), (1000000, 0.5, 200)):
        r = get.get((n, 'lr0a'))  # (a column at a time: no node per run is made)
        name = '3. load_results=0 + f_get_from_runs(auto_load) at %s runs <= %s s%s' % (
            '{:,}'.format(n), limit_s, ' and <= %d MB' % limit_mb if limit_mb else '')
        if r is None:
            verdicts.append((name, None, 'not measured'))
            continue
        met = r['load_s'] <= limit_s and (limit_mb is None or r['load_rss_mb'] <= limit_mb) \
            and r['floats'] and r['checksum_ok']
        verdicts.append((name, met, '%.3f s, %.0f MB%s' % (
            r['load_s'], r['load_rss_mb'], '' if r['floats'] else
            '; the values did not come back (%s)' % r.get('note'))))
    # (issue 14 item 3: the loads a pypet user types make no node per run)
    for mode, what in (('lr1s', 'skeleton load'),
                       ('lr2', 'load_results=2 + f_get_from_runs')):
        for n, limit_s, limit_mb in ((100000, 0.2, None), (1000000, 1.0, 300)):
            r = get.get((n, mode))
            name = '3. %s at %s runs <= %s s%s' % (
                what, '{:,}'.format(n), limit_s,
                ' and <= %d MB' % limit_mb if limit_mb else '')
            if r is None:
                verdicts.append((name, None, 'not measured'))
                continue
            back = r['n_results'] == n if mode == 'lr1s' else \
                r['floats'] and r['checksum_ok']
            met = r['load_s'] <= limit_s and back and (
                limit_mb is None or r['load_rss_mb'] <= limit_mb)
            verdicts.append((name, met, '%.3f s, %.0f MB' % (r['load_s'],
                                                            r['load_rss_mb'])))
    return recs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == '--cell':
        return cell_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--parts', default='1,2,3', help='which parts to run (default 1,2,3; '
                                                     'part 3 loads the files of part 2)')
    ap.add_argument('--quick', action='store_true',
                    help='big arrays n=20; scalar n=1000,100000 (about a minute)')
    ap.add_argument('--big-n', type=int, help='runs of the first big-array sweep '
                                              '(default 100; --quick 20)')
    ap.add_argument('--scalar-n', help='comma-separated n of part 2 (default '
                                       '1000,100000,1000000; --quick 1000,100000)')
    ap.add_argument('--no-pypet', action='store_true', help='do not run pypet 0.7')
    C.add_common_args(ap, timeout=1800)
    args = C.parse_args(ap, argv)
    args.big_n = args.big_n or (20 if args.quick else 100)
    args.scalar_n = sorted(int(v) for v in (args.scalar_n or (
        '1000,100000' if args.quick else '1000,100000,1000000')).split(',') if v)
    parts = [p for p in args.parts.split(',') if p]
    out = args.out or tempfile.mkdtemp(prefix='minipypet_bench_bigarray_')
    os.makedirs(out, exist_ok=True)
    mp, _ = C.import_minipypet()
    pypet_py = None if args.no_pypet else C.pypet_python()
    print('# minipypet big-array / million-run / loading benchmark')
    print('minipypet %s (%s), Python %s, %d CPUs; pypet: %s; scratch %s' % (
        getattr(mp, '__version__', '?'), mp.__file__, sys.version.split()[0],
        os.cpu_count() or 0,
        pypet_py or ('not run (--no-pypet)' if args.no_pypet else 'not installed'), out))
    print(C.machine_line() + ' at the start')
    verdicts, records = [], {}
    t_start = time.time()
    try:
        if '1' in parts:
            records['big'] = part_big(args, out, verdicts)
        if '2' in parts or '3' in parts:
            records['scalar'] = part_scalar(args, out, verdicts if '2' in parts else [])
        if '3' in parts:
            records['load'] = part_load(args, out, verdicts, records['scalar'])
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    C.report('targets', verdicts, records, args.json, t_start)
    return 0


if __name__ == '__main__':
    sys.exit(main())
