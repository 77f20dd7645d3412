"""Run pypet's own examples under pypet and through minipypet's alias; compare what they store.

    /work/pypet312/bin/python tools/pypet_examples.py FOLDER            # every example
    /work/pypet312/bin/python tools/pypet_examples.py FOLDER 01 14      # names containing these

FOLDER holds pypet's examples (`examples/` of a pypet checkout; they are pypet's code, so
they are not shipped here). The interpreter must have pypet installed (it runs the pypet side)
and what the examples import. Examples that need brian2, deap, scoop, saga or matplotlib
(when it is not installed) are skipped.

Each example runs twice, each time unchanged in a fresh temporary folder with a time limit:
`python example.py` (pypet) and `python -m minipypet run example.py` (minipypet; nothing of
pypet is imported then). Then every HDF5 file both runs wrote is read with minipypet (it
reads pypet 0.7 files too), and the parameters (values and explored ranges), derived
parameters and results of each trajectory are compared value by value. Config, run times
and environment entries differ by nature and are left out.
"""
import argparse
import glob
import importlib.util
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS = ('brian', 'deap', 'scoop', 'saga')  # (in the example's name or its imports)


def skip_reason(path):
    """Why this example cannot run here (None: it can)."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    for need in NEEDS:
        if need in os.path.basename(path).lower() or 'import ' + need in text or \
                'from ' + need in text:
            return 'needs ' + need
    for module in ('matplotlib', 'scipy', 'pandas', 'dill', 'sumatra'):
        if ('import ' + module in text or 'from ' + module in text) and \
                importlib.util.find_spec(module) is None:
            return 'needs %s (not installed)' % module
    return None


def run(cmd, cwd, timeout):
    """(exit code or 'timeout', last lines of the output)."""
    env = dict(os.environ, MPLBACKEND='Agg', PYTHONDONTWRITEBYTECODE='1',
               PYTHONPATH=HERE + os.pathsep + os.environ.get('PYTHONPATH', ''))
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
        rel = os.path.relpath(path, folder)
        names = mp._make_service(True, path, mode='load').list_trajectories()
        for i, name in enumerate(names):  # (by position: the names hold creation times)
            traj = mp.load_trajectory(name=name, filename=path, load_all=2)
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


def same(a, b):
    """Equal as stored numbers: numpy arrays elementwise, floats to 1e-12 (relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
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


def compare(example, timeout):
    """'same', or what differed, for one example."""
    with tempfile.TemporaryDirectory(prefix='pypet_ex_') as p_dir, \
            tempfile.TemporaryDirectory(prefix='mini_ex_') as m_dir:
        p_rc, p_out = run([sys.executable, example], p_dir, timeout)
        m_rc, m_out = run([sys.executable, '-m', 'minipypet', 'run', example], m_dir, timeout)
        if m_rc != 0:
            return 'minipypet run failed (%s):\n%s' % (m_rc, m_out)
        if p_rc != 0:
            return 'pypet run failed (%s), nothing to compare with:\n%s' % (p_rc, p_out)
        theirs, ours = stored_values(p_dir), stored_values(m_dir)
        if not theirs and not ours:
            return 'same (nothing stored)'
        missing = sorted(set(theirs) - set(ours))
        extra = sorted(set(ours) - set(theirs))
        differ = sorted(k for k in set(theirs) & set(ours) if not same(theirs[k], ours[k]))
        if not (missing or extra or differ):
            return 'same (%d values)' % len(theirs)
        lines = ['%d of %d values differ, %d missing, %d more' % (
            len(differ), len(theirs), len(missing), len(extra))]
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
    examples = sorted(glob.glob(os.path.join(os.path.abspath(args.folder), 'example_*.py')))
    counts = {'same': 0, 'differ': 0, 'skipped': 0}
    for example in examples:
        name = os.path.basename(example)
        if args.match and not any(m in name for m in args.match):
            continue
        reason = skip_reason(example)
        if reason is not None:
            counts['skipped'] += 1
            print('%-45s skipped: %s' % (name, reason), flush=True)
            continue
        verdict = compare(example, args.timeout)
        counts['same' if verdict.startswith('same') else 'differ'] += 1
        print('%-45s %s' % (name, verdict), flush=True)
    print('\n%(same)d the same, %(differ)d not, %(skipped)d skipped' % counts)
    return 0 if not counts['differ'] else 1


if __name__ == '__main__':
    sys.exit(main())
