"""Run pypet's own examples under pypet and through minipypet's alias; compare what they store.

    /work/pypet312/bin/python tools/pypet_examples.py FOLDER            # every example
    /work/pypet312/bin/python tools/pypet_examples.py FOLDER 01 14      # names containing these

FOLDER holds pypet's examples (`examples/` of a pypet checkout; they are pypet's code, so
they are not shipped here). The interpreter must have pypet installed (it runs the pypet side)
and what the examples import. Examples that need brian2, deap, scoop, saga or matplotlib
(when it is not installed) are skipped. (05, 06, 10, 13 and 17 need matplotlib: to keep
pypet's interpreter as it is, `pip install --target DIR --no-deps matplotlib contourpy
cycler fonttools kiwisolver pillow pyparsing` and run with PYTHONPATH=DIR.)

Each example runs twice, each time unchanged in a fresh temporary folder with a time limit:
`python example.py` (pypet) and `python -m minipypet run example.py` (minipypet; nothing of
pypet is imported then). An example that is a folder (13, 17) is copied into the
temporary folder and its scripts run there one after the other (`FOLDER_SCRIPTS`).
numpy's global random generator is seeded the same in both (a `sitecustomize`), so
examples that draw unseeded random numbers (09) compare too. Then every HDF5 file both
runs wrote is read with minipypet (it reads pypet 0.7 files too), and the parameters
(values and explored ranges), derived parameters and results of each trajectory are
compared value by value. Config, run times and environment entries differ by nature and
are left out. When both runs stop at the same error (pypet's examples call matplotlib and
pandas API that newer versions dropped), what they stored up to there is compared all
the same.
"""
import argparse
import glob
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS = ('brian', 'deap', 'scoop', 'saga')  # (in the example's name or its imports)
# the scripts of a folder example, run in order in one copy of it (a list: a run)
FOLDER_SCRIPTS = {
    'example_13_post_processing': [['main.py', 'analysis.py'], ['pipeline.py']],
    'example_17_wrapping_an_existing_project': [['original.py', 'pypetwrap.py']],
    # (pypet's tutorial, its code blocks put in order into two scripts of one's own)
    'example_tutorial': [['main.py', 'analysis.py']],
}
SEED = ('try:\n    import numpy\n    numpy.random.seed(42)\n'
        'except ImportError:\n    pass\n')


def skip_reason(path):
    """Why this example (a script or a folder of them) cannot run here (None: can)."""
    paths = sorted(glob.glob(os.path.join(path, '*.py'))) if os.path.isdir(path) \
        else [path]
    text = ''
    for one in paths:
        with open(one, encoding='utf-8') as f:
            text += f.read()
    for need in NEEDS:
        if need in os.path.basename(path).lower() or 'import ' + need in text or \
                'from ' + need in text:
            return 'needs ' + need
    if 'use_dask' in text:
        return "needs pypet's dask support (use_dask: after pypet 0.7)"
    for module in ('matplotlib', 'scipy', 'pandas', 'dill', 'sumatra'):
        if ('import ' + module in text or 'from ' + module in text) and \
                importlib.util.find_spec(module) is None:
            return 'needs %s (not installed)' % module
    return None


def run(cmd, cwd, timeout):
    """(exit code or 'timeout', last lines of the output)."""
    site = os.path.join(cwd, '.site')
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, 'sitecustomize.py'), 'w') as f:
        f.write(SEED)
    path = os.pathsep.join([site, HERE, os.environ.get('PYTHONPATH', '')])
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONDONTWRITEBYTECODE='1',
               PYTHONPATH=path)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        return 'timeout', ''
    return proc.returncode, '\n'.join(proc.stdout.strip().splitlines()[-6:])


def stored_values(folder):
    """{(file, trajectory index, node): value} of what the HDF5 files below folder hold."""
    sys.path.insert(0, HERE)
    import minipypet as mp
    out = {}
    found = glob.glob(os.path.join(folder, '**', '*.hdf5*'), recursive=True)
    # (minipypet's journal holds what was stored since the last checkpoint: a file may be
    # only that so far; its segments beside the main file are part of it)
    paths = {p[:-len('.journal')] if p.endswith('.journal') else p for p in found
             if p.endswith(('.hdf5', '.hdf5.journal')) and '.segments' + os.sep not in p}
    for path in sorted(paths):
        # (names with a trajectory's creation time, as pypet's backup_<name>.hdf5: the
        # times of the two runs differ)
        rel = re.sub(r'\d{4}_\d\d_\d\d_\d\dh\d\dm\d\ds', 'TIME',
                     os.path.relpath(path, folder))
        names = mp._make_service(None, path, mode='load').list_trajectories()
        for i, name in enumerate(names):  # (by position: the names hold creation times)
            traj = load(mp, name, path)
            for leaf in traj.f_iter_leaves():
                full = leaf.v_full_name
                if full.startswith('config.'):
                    continue
                if isinstance(leaf, mp.BaseParameter):
                    value = (leaf.f_get(), leaf.f_get_range() if leaf.f_has_range() else None)
                else:
                    value = leaf.f_to_dict()
                out[rel, i, full] = value
    return out


def load(mp, name, path):
    """The trajectory, its leaves of the example's own classes (05's FunctionParameter)
    read as stand-ins of the class they are named like: the values are compared."""
    stand_ins = {}
    while True:
        try:
            # (allow_pickle: the files are the two runs' own; pandas pickles object
            # columns in pypet's)
            return mp.load_trajectory(name=name, filename=path, load_all=2,
                                      dynamic_imports=list(stand_ins.values()),
                                      allow_pickle=True)
        except mp.StorageError as exc:
            match = re.search(r"leaf class '(?:[\w.]+:)?([\w.]+)'", str(exc))
            if match is None or match.group(1) in stand_ins:
                raise
            bare = match.group(1).rpartition('.')[2]
            base = mp.Result if 'Result' in bare else mp.Parameter
            stand_ins[match.group(1)] = type(bare, (base,), {})


def same(a, b):
    """Equal as stored numbers: numpy arrays elementwise, floats to 1e-12 (relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a).__module__.startswith('pandas') and type(b).__module__ == type(a).__module__:
        return same(list(a.index), list(b.index)) and \
            same(list(getattr(a, 'columns', ())), list(getattr(b, 'columns', ()))) and \
            same(a.values, b.values)
    if hasattr(a, 'shape') or hasattr(b, 'shape'):
        import numpy as np
        try:
            return np.array_equal(np.asarray(a), np.asarray(b))
        except (TypeError, ValueError):
            return False
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def run_all(example, scripts, cwd, timeout, mini):
    """Run the scripts of one example in cwd: (the first failure's exit code or 0,
    its output)."""
    if os.path.isdir(example):
        for name in os.listdir(example):
            if name.endswith('.py'):
                shutil.copy(os.path.join(example, name), cwd)
    for script in scripts:
        path = os.path.join(cwd, script) if os.path.isdir(example) else example
        cmd = [sys.executable] + (['-m', 'minipypet', 'run'] if mini else []) + [path]
        rc, out = run(cmd, cwd, timeout)
        if rc != 0:
            return rc, '%s: %s' % (script, out)
    return 0, ''


def compare(example, timeout, scripts=(None,)):
    """'same', or what differed, for one example."""
    with tempfile.TemporaryDirectory(prefix='pypet_ex_') as p_dir, \
            tempfile.TemporaryDirectory(prefix='mini_ex_') as m_dir:
        p_rc, p_out = run_all(example, scripts, p_dir, timeout, False)
        m_rc, m_out = run_all(example, scripts, m_dir, timeout, True)
        both = ''
        if m_rc != 0 and p_rc != 0 and \
                m_out.splitlines()[-1:] == p_out.splitlines()[-1:]:
            both = '; both stopped at %s' % m_out.splitlines()[-1:]
        elif m_rc != 0:
            return 'minipypet run failed (%s):\n%s' % (m_rc, m_out)
        elif p_rc != 0:
            return 'pypet run failed (%s), nothing to compare with:\n%s' % (p_rc, p_out)
        theirs, ours = stored_values(p_dir), stored_values(m_dir)
        if not theirs and not ours:
            return 'same (nothing stored%s)' % both
        missing = sorted(set(theirs) - set(ours))
        extra = sorted(set(ours) - set(theirs))
        differ = sorted(k for k in set(theirs) & set(ours) if not same(theirs[k], ours[k]))
        if not (missing or extra or differ):
            return 'same (%d values%s)' % (len(theirs), both)
        lines = ['%d of %d values differ, %d missing, %d more%s' % (
            len(differ), len(theirs), len(missing), len(extra), both)]
        lines += ['  missing %s' % (k,) for k in missing[:5]]
        lines += ['  more    %s' % (k,) for k in extra[:5]]
        lines += ['  differ  %s: pypet %r, minipypet %r' % (k, theirs[k], ours[k])
                  for k in differ[:5]]
        return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folder', help="pypet's examples folder")
    parser.add_argument('match', nargs='*', help='only examples whose name contains this')
    parser.add_argument('--timeout', type=float, default=300, help='seconds a run may take')
    args = parser.parse_args(argv)
    folder = os.path.abspath(args.folder)
    examples = sorted(p for p in glob.glob(os.path.join(folder, 'example_*'))
                      if p.endswith('.py') or os.path.isdir(p))
    counts = {'same': 0, 'differ': 0, 'skipped': 0}
    for example in examples:
        name = os.path.basename(example)
        if args.match and not any(m in name for m in args.match):
            continue
        reason = skip_reason(example)
        runs = FOLDER_SCRIPTS.get(name, [['main.py']]) if os.path.isdir(example) \
            else [[None]]
        for scripts in runs:
            label = name if scripts == [None] else '%s/%s' % (name, '+'.join(scripts))
            if reason is not None:
                counts['skipped'] += 1
                print('%-45s skipped: %s' % (label, reason), flush=True)
                continue
            verdict = compare(example, args.timeout, scripts)
            counts['same' if verdict.startswith('same') else 'differ'] += 1
            print('%-45s %s' % (label, verdict), flush=True)
    print('\n%(same)d the same, %(differ)d not, %(skipped)d skipped' % counts)
    return 0 if not counts['differ'] else 1


if __name__ == '__main__':
    sys.exit(main())
