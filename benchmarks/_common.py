"""Helpers shared by the benchmark scripts (stdlib only).

Every measurement ("cell") runs in its own subprocess so that peak RSS
(``resource.getrusage(...).ru_maxrss``) and caches belong to that cell alone.
A cell prints exactly one JSON line on stdout.
"""

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # the repository: minipypet.py lives here


def import_minipypet():
    """Import the minipypet of this checkout (the module beside benchmarks/), or the one in
    the folder MINIPYPET_ROOT names (to compare a modified copy, A/B)."""
    root = os.environ.get('MINIPYPET_ROOT') or ROOT
    if root not in sys.path:
        sys.path.insert(0, root)
    t0 = time.perf_counter()
    import minipypet
    return minipypet, time.perf_counter() - t0


def have(module):
    try:
        __import__(module)
        return True
    except Exception:
        return False


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def children_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1)


def tree_bytes(path):
    """Bytes of a file, or of every file below a folder."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path)
                   for f in fs if os.path.isfile(os.path.join(d, f)))
    return os.path.getsize(path) if os.path.isfile(path) else 0


def storage_bytes(path):
    """What a data file occupies with whatever its storage engine keeps beside it: every
    file or folder in its folder whose name starts with the file's name (journal, .cnt,
    side files), plus folders named like the file without its extension (`stem`, `stem.*`,
    `stem_*`, `stem-*`). Returns (total bytes, data file bytes, sorted names of the extra
    entries)."""
    folder, base = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(base)[0]
    total, extra = 0, []
    for entry in os.listdir(folder):
        full = os.path.join(folder, entry)
        if entry.startswith(base) or (os.path.isdir(full) and (
                entry == stem or entry.startswith((stem + '.', stem + '_', stem + '-')))):
            total += tree_bytes(full)
            if entry != base:
                extra.append(entry + ('/' if os.path.isdir(full) else ''))
    return total, tree_bytes(path), sorted(extra)


def checksum(values):
    """math.fsum over all results (an array counts as its sum): independent of run order,
    and equal to the shared harness's checksum."""
    return math.fsum(float(v.sum()) if hasattr(v, 'sum') else
                     float(sum(v)) if hasattr(v, '__len__') else float(v) for v in values)


# --------------------------------------------------------------------------------------------
# the parameter space of ../shared/bench/workloads.py: x, y floats, cartesian product, n runs
# --------------------------------------------------------------------------------------------
def grid(n):
    if n >= 10 and n % 10 == 0:
        nx, ny = n // 10, 10
    else:
        nx, ny = n, 1
    return [float(i) for i in range(nx)], [float(j) for j in range(ny)]


# --------------------------------------------------------------------------------------------
# pypet 0.7 (a separate Python 3.12 venv) and the shared harness
# --------------------------------------------------------------------------------------------
def _existing(variable, *places):
    """The path in environment variable `variable` if set (None if it does not exist), else
    the first of `places` (relative to the project's parent folder, or absolute) that exists."""
    cand = os.environ.get(variable)
    if cand:
        return cand if os.path.exists(cand) else None
    for path in places:
        path = os.path.join(os.path.dirname(ROOT), path)
        if os.path.exists(path):
            return path
    return None


def pypet_python():
    """The interpreter that has pypet 0.7, or None. PYPET_PYTHON overrides the default."""
    return _existing('PYPET_PYTHON', os.path.join('pypet312', 'bin', 'python'),
                     '/work/pypet312/bin/python')


def harness():
    """The shared workloads.py (MINIPYPET_BENCH_HARNESS overrides), or None."""
    return _existing('MINIPYPET_BENCH_HARNESS', os.path.join('shared', 'bench', 'workloads.py'),
                     '/work/shared/bench/workloads.py')


def run_harness(python, impl, workload, n, out, timeout):
    """One JSON line from the shared harness, or a dict with ok=False and the reason."""
    script = harness()
    if script is None:
        return {'ok': False, 'error': 'shared harness workloads.py not found'}
    cmd = [python, script, '--impl', impl, '--workload', workload, '--n', str(n),
           '--out', out]
    env = cell_env()  # (pypet measured as minipypet is)
    env.pop('PYTHONPATH', None)  # the 3.12 venv must not see our 3.x site-packages
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {'ok': False, 'error': 'timeout after %ds' % timeout}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if not lines:
        return {'ok': False, 'error': (proc.stderr.strip().splitlines() or ['no output'])[-1]}
    return json.loads(lines[-1])


def cell_env():
    """The environment of a measuring subprocess: one BLAS thread. numpy's OpenBLAS starts a
    thread per core that spins for a while after the import, which counts as CPU time of
    the measured run without doing any of its work (no workload here calls BLAS)."""
    env = dict(os.environ)
    for key in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        env.setdefault(key, '1')
    return env


def run_cell(script, args, timeout, python=None):
    """Run `python script --cell ...` and return its JSON line (or ok=False). `python`: another
    interpreter (e.g. pypet_python()); it then does not see our PYTHONPATH."""
    cmd = [python or sys.executable, script, '--cell'] + [str(a) for a in args]
    env = cell_env()
    if python:
        env.pop('PYTHONPATH', None)  # the 3.12 venv must not see our 3.x site-packages
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {'ok': False, 'error': 'timeout after %ds' % timeout}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        return {'ok': False, 'error': tail[-1] if tail else 'exit code %d' % proc.returncode,
                'stderr': proc.stderr[-3000:]}
    return json.loads(lines[-1])


def median_record(records, keys):
    """The first record with `keys` replaced by medians over the repeats."""
    good = [r for r in records if r.get('ok')]
    if not good:
        return records[-1]
    out = dict(good[0])
    for key in keys:
        vals = [r[key] for r in good if r.get(key) is not None]
        if vals:
            out[key] = statistics.median(vals)
    out['repeats'] = len(good)
    return out


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------
def fmt_bytes(b):
    if b is None:
        return '-'
    b = float(b)
    for unit in ('B', 'KB', 'MB', 'GB'):
        if abs(b) < 1024 or unit == 'GB':
            return ('%.0f %s' % (b, unit)) if unit == 'B' else ('%.1f %s' % (b, unit))
        b /= 1024.0


def fmt_num(v, digits=3):
    if v is None:
        return '-'
    if isinstance(v, str):
        return v
    if v == 0:
        return '0'
    if abs(v) >= 100:
        return '%.0f' % v
    return '%.*g' % (digits, v)


def table(headers, rows):
    """A plain-text table (also valid GitHub markdown)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = lambda r: '| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |'  # noqa
    out = [line(headers), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += [line(r) for r in cells]
    return '\n'.join(out)


def verdict(ok):
    return 'MET' if ok else 'MISSED'


def loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return None


def reference_ms():
    """The machine's speed right now: a fixed pure-Python workload (objects, attributes,
    string formatting, dict inserts and removals; best of 3). A virtual machine slowed by its
    host shows no load average, but this grows with it."""
    class Node:
        pass
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        index = {}
        for i in range(20000):
            node = Node()
            node.name, node.value = 'run_%08d' % i, i * 0.5
            index[node.name] = node
            if i >= 8:
                del index['run_%08d' % (i - 8)]
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best * 1e3


def machine_line():
    la = loadavg()
    text = 'load average %s' % ('/'.join('%.2f' % v for v in la) if la else 'unknown')
    if la and la[0] > 0.5 * (os.cpu_count() or 1):
        text += ' -- WARNING: the machine is busy; timings (speedups above all) are inflated'
    return text + '; reference loop %.1f ms (see benchmarks/README.md)' % reference_ms()


def wait_idle(max_wait_s, threshold=None):
    """Wait (at most max_wait_s) until the 1-minute load average drops below threshold
    (default: a third of the CPUs); return the load average when done."""
    threshold = threshold if threshold is not None else (os.cpu_count() or 1) / 3.0
    deadline = time.time() + max_wait_s
    while time.time() < deadline:
        la = loadavg()
        if la is None or la[0] < threshold:
            break
        time.sleep(5)
    return loadavg()


def add_common_args(ap, timeout):
    """The options both benchmarks share."""
    ap.add_argument('--repeats', type=int, default=1, help='median over this many repeats')
    ap.add_argument('--timeout', type=int, default=timeout, help='seconds per cell')
    ap.add_argument('--out', help='scratch directory (default: a temporary one, removed)')
    ap.add_argument('--json', metavar='FILE', help='also write all records as JSON')
    ap.add_argument('--wait-idle', type=int, default=0, metavar='S',
                    help='first wait up to S seconds for the load average to drop')


def parse_args(ap, argv):
    """Parse, then wait for a quieter machine if asked to."""
    args = ap.parse_args(argv)
    if args.wait_idle:
        wait_idle(args.wait_idle)
    return args


def report(title, verdicts, records, json_path, t_start):
    """Print the targets table and the closing line; write records and verdicts as JSON."""
    print('\n## %s\n' % title)
    print(table(['target', 'verdict', 'measured'],
                [[t, 'n/a' if ok is None else verdict(ok), info] for t, ok, info in verdicts]))
    print('\n(total %.0f s; %s at the end)' % (time.time() - t_start, machine_line()))
    if json_path:
        with open(json_path, 'w') as f:
            json.dump({'records': records, 'targets': [dict(target=t, met=ok, measured=i)
                                                       for t, ok, i in verdicts]},
                      f, indent=1, default=str)
