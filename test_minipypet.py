"""Tests of minipypet, in the module's section order.

They use real parts: HDF5 files through PyTables, multiprocessing pools, Manager queues and
locks, git repositories in temporary folders, a dask LocalCluster, kill -9 of running sweeps.
Optional packages are skipped where missing (CI also runs the suite with the stdlib only).

The module under test is imported by the name in MINIPYPET_MODULE (default: minipypet), so a
vendored copy can be tested in place:
    MINIPYPET_MODULE=myproject._vendor.minipypet python -m pytest test_minipypet.py
"""
import collections
import contextlib
import copy
import csv
import datetime
import gc
import gzip
import hashlib
import importlib
import importlib.util
import inspect
import io
import json
import logging
import math
import multiprocessing
import os
import pickle
import platform
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
import warnings
import zlib

import pytest

mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))
# The signing key and trusted list of this test session (subprocesses inherit it): the user's
# own ~/.config/minipypet is never touched. A test plays another user by pointing it elsewhere.
os.environ['XDG_CONFIG_HOME'] = tempfile.mkdtemp(prefix='minipypet-test-config-')


# =============================================================================================
# Test helpers, shared by the sections below
# =============================================================================================
# Environments, backends and their markers, subprocess helpers, the job module that
# spawn/forkserver/executor workers import. Fixtures live beside the tests that use them.
MODULE_DIR = os.path.dirname(os.path.abspath(mp.__file__))
REPO_DIR = os.path.dirname(os.path.abspath(__file__))
CORE_TIME_RE = r'\d{4}_\d{2}_\d{2}_\d{2}h\d{2}m\d{2}s'


def lazy_env(name='traj', **kwargs):
    """An environment that stores nothing and keeps every run in memory."""
    kwargs.setdefault('add_time', False)
    return mp.Environment(trajectory=name, storage_service=mp.LazyStorageService,
                          log_config=None, **kwargs)


def file_env(tmp_path, name='traj', **kwargs):
    """An environment writing a pickle file (no PyTables needed)."""
    kwargs.setdefault('add_time', False)
    return mp.Environment(trajectory=name, storage_service=mp.PickleStorageService,
                          filename=str(tmp_path / (name + '.pkl')), log_config=None, **kwargs)


def xy_traj(traj):
    traj.f_add_parameter('x', 1.0, comment='first factor')
    traj.f_add_parameter('y', 1.0, comment='second factor')
    traj.f_explore(mp.cartesian_product({'x': [1.0, 2.0], 'y': [3.0, 4.0, 5.0]}))
    return traj


def multiply(traj):
    traj.f_add_result('z', traj.x * traj.y, comment='product')
    return traj.x * traj.y


def run_python(code, *flags, cwd=None):
    """Run `code` in a fresh interpreter that imports the module under test."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([MODULE_DIR, env.get('PYTHONPATH', '')])
    return subprocess.run([sys.executable, *flags, '-c', textwrap.dedent(code)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# Storage: backends, markers, file layouts
# ---------------------------------------------------------------------------------------------
# Real files, real PyTables, no mocks. The HDF5 parts skip when PyTables is missing, the numpy
# parts when numpy is missing; everything else runs with the standard library only.
# 
try:
    import numpy as np
except ImportError:  # the stdlib-only CI job
    np = None
try:
    import tables
except ImportError:
    tables = None
try:
    import h5py
except ImportError:
    h5py = None

needs_numpy = pytest.mark.skipif(np is None, reason='numpy is not installed')
needs_tables = pytest.mark.skipif(tables is None, reason='PyTables is not installed')
needs_h5py = pytest.mark.skipif(tables is None or h5py is None, reason='h5py/PyTables missing')
posix_only = pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')

# every registered backend runs the contract tests: a new one is a class and a registry line
CLASSES = dict(mp.STORAGE_SERVICES)
BACKENDS = [pytest.param(key, marks=needs_tables) if key == 'hdf5' else key for key in CLASSES]
FILE_BACKENDS = [b for b in BACKENDS
                 if issubclass(CLASSES[getattr(b, 'values', [b])[0]], mp._FileService)]
SUFFIX = {key: getattr(cls, 'SUFFIX', '') or '.' + key for key, cls in CLASSES.items()}
PICKLE_MAGIC = b'MINIPYPET-PICKLE\n'


def read_pickle_file(filename):
    """The content of a pickle-backend main file, read with the documented framing: the
    magic line, a line 'sha1 <hex of the rest>', the pickle."""
    with open(filename, 'rb') as f:
        assert f.read(len(PICKLE_MAGIC)) == PICKLE_MAGIC
        line = f.readline()
        payload = f.read()
    assert line.startswith(b'sha1 ') and line[5:-1].decode() == hashlib.sha1(payload).hexdigest()
    return pickle.loads(payload)
HDF5_MAGIC = b'\x89HDF\r\n\x1a\n'


def assert_stamped_hdf5(path):
    """An HDF5 file as minipypet writes it, checked with the documented layout: a 512-byte
    user block 'MINIPYPET-SHA1 <hex SHA-1 of the rest>\\n', then the HDF5 file."""
    with open(path, 'rb') as f:
        block = f.read(512)
        rest = f.read()
    assert rest.startswith(HDF5_MAGIC)
    assert block.startswith(b'MINIPYPET-SHA1 ' + hashlib.sha1(rest).hexdigest().encode() + b'\n')


def run_name(idx):
    return mp.pypetconstants.FORMATTED_RUN_NAME % idx


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FILE_BACKENDS)
def file_backend(request):
    return request.param


def path_for(backend, tmp_path, name='traj'):
    return str(tmp_path / (name + SUFFIX[backend]))


def service(backend, filename, **kwargs):
    if backend == 'lazy':
        return mp.LazyStorageService()
    return CLASSES[backend](filename, **kwargs)


def make_env(backend, filename, name='traj', as_class=True, **kwargs):
    """An Environment storing with `backend` (the class, or an instance with as_class=False)."""
    svc = CLASSES[backend] if as_class else service(backend, filename)
    kwargs.setdefault('report_progress', False)
    return mp.Environment(name, add_time=False, storage_service=svc, filename=filename,
                          log_config=None, **kwargs)


def sweep(backend, filename, job, n=4, name='traj', explore=None, **kwargs):
    env = make_env(backend, filename, name=name, **kwargs)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0, comment='the explored x')
    traj.f_add_parameter('y', 10, comment='a fixed y')
    traj.f_explore(explore or {'x': list(range(n))})
    env.f_run(job)
    return env, traj


def load(filename, **kwargs):
    return mp.load_trajectory(filename=filename, **kwargs)


def square_job(traj):
    traj.f_add_result('z', traj.x * traj.x + 0.5, comment='x squared')
    traj.f_add_derived_parameter('dz', traj.x * 2, comment='twice x')
    return traj.x


def assert_same(got, want, where='value'):
    """Equal and of the same type, recursively (nan equals nan, numpy dtypes must match)."""
    if np is not None and isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), '%s: %r is not an ndarray' % (where, got)
        assert got.dtype == want.dtype, '%s: dtype %s != %s' % (where, got.dtype, want.dtype)
        assert got.shape == want.shape, '%s: shape %s != %s' % (where, got.shape, want.shape)
        if want.dtype.names:
            assert got.tolist() == want.tolist(), where
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)
        return
    if np is not None and isinstance(want, np.generic):
        assert type(got) is type(want), '%s: %r is a %s, not %s' % (
            where, got, type(got), type(want))
        assert got.dtype == want.dtype, where
        assert got == want or (got != got and want != want), '%s: %r != %r' % (where, got, want)
        return
    assert type(got) is type(want), '%s: %r is a %s, expected %s %r' % (
        where, got, type(got).__name__, type(want).__name__, want)
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), where
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), '%s: %r != %r' % (where, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, '%s[%d]' % (where, i))
    elif isinstance(want, dict):
        assert sorted(map(repr, got)) == sorted(map(repr, want)), '%s: keys %r != %r' % (
            where, list(got), list(want))
        for key in want:
            assert_same(got[key], want[key], '%s[%r]' % (where, key))
    elif isinstance(want, (set, frozenset)):
        assert got == want, '%s: %r != %r' % (where, got, want)
    else:
        assert got == want, '%s: %r != %r' % (where, got, want)


class StoragePoint:
    """A user object that only a PickleResult/PickleParameter can hold."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is StoragePoint and (self.x, self.y) == (other.x, other.y)

    __hash__ = None


class Boom:
    """Unpickling this creates a file: a harmless stand-in for a payload that runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


# -- the values every backend must round-trip ------------------------------------------------
PLAIN = {
    'yes': True, 'no': False, 'small': -7, 'zero': 0, 'big': 2 ** 100, 'negbig': -(2 ** 80),
    'i64max': 2 ** 63 - 1, 'i64min': -(2 ** 63), 'f': 3.25, 'negzero': -0.0,
    'nan': float('nan'), 'inf': float('inf'), 'ninf': float('-inf'), 'c': complex(1.5, -2),
    'text': 'gr\u00fc\u00dfe \u2603 \u65e5\u672c\u8a9e \U0001f600', 'empty': '',
    'nul': 'a\x00b', 'raw': b'\x00\xffbytes', 'noraw': b'', 'trail': b'ab\x00',
    'lst': [1, 'two', 3.0, None, [4, (5, 6)], 2 ** 70], 'emptylist': [],
    'tup': (1, ('a', b'b'), None), 'emptytup': (),
    'nested': {'a': {1: 'one', (2, 3): [None, {'deep': frozenset({1, 2})}], 2.5: b'x',
                     None: 'none key', b'k': 'bytes key', -1: {}}},
    'sneaky': {'__t': 'tuple', 'v': [1, 2]},  # looks like an encoding tag; must stay a dict
    'strdict': {'a': 1, 'b': [True, None]},
    'set': {1, 'a', (2, 3)}, 'fset': frozenset({'x', 2.5}), 'none': None,
    'listofdicts': [{'a': 1}, {2: [None]}, {}],
    'surrogate': 'caf\udce9.dat',  # os.fsdecode of undecodable bytes: not UTF-8
}


def numpy_values():
    return {
        'i8': np.int8(-3), 'u16': np.uint16(65000), 'i64': np.int64(2 ** 62),
        'f32': np.float32(1.5), 'f64nan': np.float64('nan'), 'c64': np.complex64(1 - 1j),
        'bool_': np.bool_(True), 'a1': np.arange(5.0), 'a2': np.arange(12, dtype=np.int32)
        .reshape(3, 4), 'a3': np.ones((2, 2, 2), dtype=np.uint8),
        'structured': np.array([(1, 2.5, b'ab'), (2, -1.0, b'c')],
                               dtype=[('a', '<i4'), ('b', '<f8'), ('s', 'S2')]),
        'ustr': np.array(['\u03b1', 'bc']), 'bstr': np.array([b'x', b'yz']),
        'emptyarr': np.zeros((0, 3)), 'nanarr': np.array([np.nan, np.inf, -np.inf]),
        'fortran': np.asfortranarray(np.arange(6.0).reshape(2, 3)), 'zerod': np.array(5.0),
        'big_array': np.linspace(0.0, 1.0, 5000),  # above the compression threshold
        'npstr': np.str_('ab'), 'npstr0': np.str_(''), 'npbytes0': np.bytes_(b''),
    }


def all_values():
    values = dict(PLAIN)
    if np is not None:
        values.update(numpy_values())
    return values


def check_loaded_values(traj, prefix):
    for key, want in all_values().items():
        assert_same(traj.f_get(prefix + '.multi').f_get(key), want, 'multi.' + key)
        assert_same(traj.f_get(prefix + '.single.' + key).f_get(), want, 'single.' + key)


# ---------------------------------------------------------------------------------------------
# Parallel runs: start methods, the job module, subprocess sweeps
# ---------------------------------------------------------------------------------------------
# Jobs that must travel to spawn/forkserver/executor workers live in a small helper module written to a
# session temp folder and put on sys.path; crash scenarios run the sweep in a subprocess (its own
# session, so kill -9 reaches every process of the sweep) and resume it here.
# 
PAR_HAVE_TABLES = importlib.util.find_spec('tables') is not None
HAVE_DASK = importlib.util.find_spec('distributed') is not None
try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:  # CI's bare Python 3.9 job
    given = None

par_needs_tables = pytest.mark.skipif(not PAR_HAVE_TABLES, reason='PyTables (the hdf5 extra) missing')
PAR_START_METHODS = [m for m in ('fork', 'spawn', 'forkserver')
                 if m in multiprocessing.get_all_start_methods()]
# QUEUE and LOCK are tested with HDF5 where it exists; NONE (and the bare CI) with pickle.
LOCKED_BACKEND = 'hdf5' if PAR_HAVE_TABLES else 'pickle'
PAR_MODULE_DIR = os.path.dirname(os.path.abspath(mp.__file__))
XS, YS = [0, 1, 2, 3], [0.5, 1.5]
N = len(XS) * len(YS)
PARALLEL_EXPECTED = [(i, x * x + y) for i, (x, y) in enumerate((x, y) for x in XS for y in YS)]

JOBS_SRC = '''
"""Jobs for minipypet's parallel tests (importable by spawn/forkserver/executor workers)."""
import importlib
import os
import signal
import time

mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))


def note(path, idx):
    """Append the run index to an execution log (one O_APPEND write: atomic)."""
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b'%d\\n' % idx)
        finally:
            os.close(fd)


def die(how, idx):
    if how == 'killpg':        # kill -9 the whole sweep: parent, workers, manager, writer
        os.killpg(os.getpgid(0), signal.SIGKILL)
    elif how == 'exit':
        os._exit(3)
    elif how == 'sigkill':
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == 'raise':
        raise ValueError('boom in run %d' % idx)
    time.sleep(60)


def work(traj, log=None, sleep=0.0, slow=None, at=-1, how='', marker=None, blob=0,
         shared=None, lock=None, func=None):
    """z = x*x + y; optionally dies once at run `at`, sleeps, stores a big blob."""
    idx = traj.v_idx
    note(log, idx)
    if idx == at and (marker is None or not os.path.exists(marker)):
        if marker is not None:
            open(marker, 'w').close()
        if how == 'raise':  # (a failed run keeps what it added, in every mode)
            traj.f_add_result('partial', idx)
        die(how, idx)
    if sleep and (slow is None or os.path.exists(slow)):
        time.sleep(sleep)
    z = traj.x * traj.x + traj.y
    if func is not None:
        z = func(z)
    if lock is not None:
        with lock:
            pass
    traj.f_add_result('z', z, comment='x*x+y')
    if blob:
        traj.f_add_result('blob', bytes([idx % 256]) * blob)
    if shared is not None:
        shared.append((idx, z))
    return z


def negate(z):
    return -z


def meddle(traj, bag=None, how='set'):
    """Change the trajectory or an argument, and say what this run found first: a run
    without freeze_input must never see what an earlier run in its worker changed."""
    c = traj.f_get('parameters.c')
    seen = (c.f_get(), len(bag) if bag is not None else 0, 'results.extra' in traj,
            'x' in traj.__dict__, traj.x)
    if how == 'set':
        value = c.f_get()
        c.f_unlock()
        c.f_set(value + 1)
    elif how == 'bag':
        bag.append(traj.v_idx)
    elif how == 'add':
        traj.f_add_result('results.extra', 1)
    traj.f_add_result('z', traj.x * traj.x + traj.y)
    return seen


def echo(traj, names):
    """Store every explored value as a result and return them."""
    out = []
    for name in names:
        value = traj.f_get('parameters.' + name).f_get()
        traj.f_add_result('r_' + name, value)
        out.append(value)
    return tuple(out)


def make_env(filename, backend, name='t', xs=(0, 1, 2, 3), ys=(0.5, 1.5), **kwargs):
    service = {'hdf5': mp.HDF5StorageService, 'pickle': mp.PickleStorageService}[backend]
    env = mp.Environment(trajectory=name, filename=filename, storage_service=service,
                         add_time=False, log_config=None, report_progress=False, **kwargs)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0, comment='first')
    traj.f_add_parameter('y', 0.0, comment='second')
    traj.f_explore(mp.cartesian_product({'x': list(xs), 'y': list(ys)}))
    return env


def run_sweep(cfg):
    """What the subprocess runner does: build the env from cfg and run `work`."""
    env_kwargs = dict(cfg.get('env', {}))
    executor = None
    if env_kwargs.pop('executor', None):
        import concurrent.futures
        executor = env_kwargs['executor'] = concurrent.futures.ProcessPoolExecutor(2)
    try:
        env = make_env(cfg['filename'], cfg['backend'], **env_kwargs)
        return env.f_run(work, **cfg.get('kwargs', {}))
    except BaseException:  # when f_run gave up (an executor still finishes what it runs)
        import sys
        sys.stderr.write('STOPPED %r\\n' % time.time())
        raise
    finally:
        if executor is not None:
            executor.shutdown()
'''

RUNNER_SRC = '''
import json
import sys

if __name__ == '__main__':
    cfg = json.loads(sys.argv[1])
    sys.path[:0] = cfg['path']
    import t3par_jobs
    if cfg.get('resume'):
        env = t3par_jobs.mp.Environment(log_config=None, report_progress=False)
        result = env.f_continue_run(cfg['resume'])
    else:
        result = t3par_jobs.run_sweep(cfg)
    print('RESULT ' + json.dumps(result), flush=True)
'''


@pytest.fixture(scope='session')
def jobs_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('t3jobs')
    (folder / 't3par_jobs.py').write_text(JOBS_SRC)
    (folder / 't3par_runner.py').write_text(RUNNER_SRC)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))


@pytest.fixture
def J(jobs_dir):
    return importlib.import_module('t3par_jobs')


@pytest.fixture(autouse=True)
def _no_leaked_children():
    before = set(multiprocessing.active_children())
    yield
    # every process a sweep started (workers, Manager, queue writer) is gone afterwards;
    # the module-wide dask cluster's processes are not the sweep's
    def leaked():
        return [p for p in multiprocessing.active_children() if p not in before and
                'dask' not in p.name.lower() and 'nanny' not in p.name.lower()]
    deadline = time.time() + 5
    while leaked() and time.time() < deadline:
        time.sleep(0.05)
    left = leaked()
    for p in left:
        p.terminate()
    assert not left, 'processes left running after the sweep: %r' % left


# -- helpers ----------------------------------------------------------------------------------
def datafile(tmp_path, backend, name='t'):
    return str(tmp_path / (name + ('.hdf5' if backend == 'hdf5' else '.pkl')))


def executed(log, start=0):
    """Run indices the job started, in order (from byte offset `start` of the log)."""
    try:
        with open(log, 'rb') as f:
            f.seek(start)
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def stored(filename, name=None):
    """{idx: z} of the completed runs on disk (file + journal), and the loaded trajectory."""
    traj = mp.load_trajectory(name=name, filename=filename, load_results=2)
    info = traj.f_get_run_information()
    done = {i for i in range(len(traj)) if info[mp.pypetconstants.FORMATTED_RUN_NAME % i]
            ['completed']}
    z = traj.f_get_from_runs('z', fast_access=True, use_indices=True)
    return {i: z[i] for i in done}, traj


def journal_runs(filename):
    """{idx: number of completed run records} in the journal beside the data file."""
    _, records, _, _ = mp._Journal.read(filename + '.journal')
    counts = {}
    for rec in records:
        if rec[0] == 'run' and rec[3][2]:
            counts[rec[2]] = counts.get(rec[2], 0) + 1
    return counts


def assert_complete(filename, n=N, expected=PARALLEL_EXPECTED):
    values, traj = stored(filename)
    assert traj.f_is_completed(), 'not every run is completed on disk'
    runs = traj.f_get_from_runs('z', fast_access=True, use_indices=True)
    assert list(runs) == list(range(n)), 'each run must be stored exactly once'
    assert sorted(values.items()) == expected
    assert all(traj.f_get_run_information(i)['completed'] == 1 for i in range(n))
    assert not os.path.exists(filename + '.journal'), 'journal not folded into the file'
    return traj


@pytest.fixture
def count_stores(monkeypatch):
    """Count the run records folded into the file per run index (checkpoints in this
    process read every record any process journalled)."""
    counts = {}
    original = mp._Fold.record

    def spy(fold, record):
        if record[0] == 'run':
            counts[record[2]] = counts.get(record[2], 0) + 1
        return original(fold, record)
    monkeypatch.setattr(mp._Fold, 'record', spy)
    return counts


# ---------------------------------------------------------------------------------------------
# Provenance and the command line: subprocesses, git, markers
# ---------------------------------------------------------------------------------------------
# Everything is real: git repositories in temp folders (both
# GitPython and the `git` command), log files written by real worker processes, files of both
# backends, the command line run as a subprocess. Parts that need GitPython, PyTables or pandas
# skip without them; the stdlib-only paths (git CLI, pickle backend, no pandas) always run,
# also by blocking the optional packages in a subprocess.
# 
MOD = mp.__name__
# the folder that makes `import <MOD>` work in a subprocess (a vendored copy may be dotted)
ROOT = os.path.dirname(os.path.abspath(mp.__file__))
for _ in range(MOD.count('.')):
    ROOT = os.path.dirname(ROOT)

PROV_HAVE_TABLES = importlib.util.find_spec('tables') is not None
HAVE_PANDAS = importlib.util.find_spec('pandas') is not None
HAVE_GITPYTHON = importlib.util.find_spec('git') is not None
HAVE_NUMPY = importlib.util.find_spec('numpy') is not None
GIT = shutil.which('git')

prov_needs_tables = pytest.mark.skipif(not PROV_HAVE_TABLES, reason='PyTables (the hdf5 extra) missing')
needs_git_cli = pytest.mark.skipif(GIT is None, reason='the git command is not installed')
PROV_START_METHODS = multiprocessing.get_all_start_methods()
needs_spawn = pytest.mark.skipif('spawn' not in PROV_START_METHODS, reason='no spawn start method')
needs_fork = pytest.mark.skipif('fork' not in PROV_START_METHODS, reason='no fork start method')

PROV_BACKENDS = ['pickle', pytest.param('hdf5', marks=prov_needs_tables)]
PROV_SUFFIX = {'pickle': '.pkl', 'hdf5': '.hdf5'}
ENV_NAME_RE = re.compile(r'^environment_[0-9a-f]{7}_\d{4}_\d\d_\d\d_\d\dh\d\dm\d\ds$')
PROV_TIME_RE = re.compile(r'^\d{4}_\d\d_\d\d_\d\dh\d\dm\d\ds$')
ETA_RE = re.compile(r'remaining:? ~?\d+:\d\d:\d\d')

# Jobs and a pickle trap, importable by spawn workers and by subprocesses (PYTHONPATH).
HELPERS_SRC = '''
"""Jobs for minipypet's provenance tests."""
import importlib
import logging
import os

mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))


def log_job(traj):
    """Log one INFO and one WARNING line per run, store z = 10 x, return the worker pid."""
    log = logging.getLogger('t4job')
    log.debug('debug line of run %d', traj.v_idx)
    log.info('hello from run %d', traj.v_idx)
    log.warning('careful in run %d', traj.v_idx)
    traj.f_add_result('z', traj.x * 10, comment='ten times x')
    return os.getpid()


def times_ten(traj):
    traj.f_add_result('z', traj.x * 10, comment='ten times x')
    return traj.x * 10


def crash_if(traj, flag):
    """Fail on x == 4 while the file `flag` exists (a crash that a resume gets past)."""
    if traj.x == 4 and os.path.exists(flag):
        raise RuntimeError('simulated crash')
    return times_ten(traj)


def touch(path):
    """What unpickling a Trap does: create the file `path`."""
    with open(path, 'w') as f:
        f.write('unpickled!')
    return path


class Trap:
    """Pickles fine; unpickling it creates a file, so a reader that unpickles is caught."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (touch, (self.path,))
'''

# Import blocker for subprocesses: `sys.modules[name] = None` is the other documented way.
BLOCK = '''
import sys
class _Block:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in self.names:
            raise ImportError('blocked for this test: %s' % name)
        return None
sys.meta_path.insert(0, _Block(NAMES))
'''


def block(*names):
    """Code that makes importing `names` fail in a subprocess."""
    return 'import sys\n' + BLOCK.replace('NAMES', repr(list(names)))
IMPORT = "import importlib, os, sys\nmp = importlib.import_module(%r)\n" % MOD


@pytest.fixture(scope='module')
def helpers_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('t4_helpers')
    (folder / 't4_helpers.py').write_text(HELPERS_SRC)
    sys.path.insert(0, str(folder))
    yield str(folder)
    sys.path.remove(str(folder))
    sys.modules.pop('t4_helpers', None)


@pytest.fixture(scope='module')
def jobs(helpers_dir):
    return importlib.import_module('t4_helpers')


def sub_env(helpers_dir=None, path=None):
    env = dict(os.environ)
    parts = [ROOT] + ([helpers_dir] if helpers_dir else []) + \
        ([env['PYTHONPATH']] if env.get('PYTHONPATH') else [])
    env['PYTHONPATH'] = os.pathsep.join(parts)
    if path is not None:
        env['PATH'] = path
    return env


def prov_run_python(code, *args, helpers_dir=None, cwd=None, opts=(), path=None, timeout=120):
    """Run `code` in a fresh interpreter (minipypet imported as `mp`)."""
    return subprocess.run([sys.executable] + list(opts) + ['-c', code] + list(args),
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=sub_env(helpers_dir, path))


def cli(*args, helpers_dir=None, cwd=None):
    """`python -m minipypet ...` as a user types it: in this process through
    main(argv, out) (a Python start costs 1-6 s here), in a subprocess for `run` and
    `resume` (they run a sweep) or when a folder must be importable or current."""
    args = [str(a) for a in args]
    if helpers_dir is not None or cwd is not None or args[:1] in (['run'], ['resume']):
        return subprocess.run([sys.executable, '-m', MOD] + args, capture_output=True,
                              text=True, cwd=cwd, timeout=120, env=sub_env(helpers_dir))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = mp.main(args, out)
        except SystemExit as exc:  # (argparse: --help, --version, usage errors)
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def env_for(backend, tmp_path, name='traj', **kwargs):
    kwargs.setdefault('report_progress', False)
    kwargs.setdefault('log_config', None)
    return mp.Environment(name, add_time=False, storage_service=backend,
                          filename=str(tmp_path / (name + PROV_SUFFIX[backend])), **kwargs)


def cfg(traj, env_name, key):
    return traj.f_get('config.environment.%s.%s' % (env_name, key)).f_get()


def root_handlers():
    return list(logging.getLogger().handlers)


# ---------------------------------------------------------------------------------------------
# A user's first hour: README blocks
# ---------------------------------------------------------------------------------------------
HAVE_H5PY = importlib.util.find_spec('h5py') is not None
HAVE_MATPLOTLIB = importlib.util.find_spec('matplotlib') is not None
FIRST_HOUR_PRELUDE = (
    "import importlib, sys\n"
    "sys.modules['minipypet'] = importlib.import_module(%r)  # (a vendored copy: its name)\n"
    % MOD)


def readme_blocks():
    """[(language, code)] of the README's fenced code blocks, in order."""
    path = os.path.join(ROOT, 'README.md')
    if not os.path.exists(path):
        pytest.skip('no README next to the module (installed copy)')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    return re.findall(r'^```(\w*)\n(.*?)^```', text, flags=re.M | re.S)


# =============================================================================================
# Exceptions
# =============================================================================================
@pytest.mark.parametrize('name, builtin', [
    ('ConfigurationError', ValueError), ('InvalidNameError', ValueError),
    ('UnsupportedTypeError', TypeError), ('NoSuchNodeError', AttributeError),
    ('NoSuchNodeError', KeyError), ('NotUniqueNodeError', AttributeError),
    ('ParameterLockedError', TypeError), ('MissingDependencyError', ImportError),
])
def test_exceptions_share_one_root_and_mix_in_the_builtin(name, builtin):
    cls = getattr(mp, name)
    assert issubclass(cls, mp.PypetError)
    assert issubclass(cls, builtin)


def test_pypet_spelling_of_the_locked_exception():
    assert mp.ParameterLockedException is mp.ParameterLockedError


def test_pypetconstants_namespace():
    c = mp.pypetconstants
    assert (c.WRAP_MODE_QUEUE, c.WRAP_MODE_LOCK, c.WRAP_MODE_NONE) == ('QUEUE', 'LOCK', 'NONE')
    assert (c.LOAD_NOTHING, c.LOAD_SKELETON, c.LOAD_DATA, c.OVERWRITE_DATA) == (0, 1, 2, 3)
    assert (c.STORE_NOTHING, c.STORE_DATA_SKIPPING, c.STORE_DATA) == (0, 1, 2)
    assert c.FORMATTED_RUN_NAME % 7 == 'run_00000007'
    assert c.RUN_NAME_DUMMY == 'run_ALL'
    # the seed's spellings of the wrap modes
    assert c.MULTIPROC_MODE_QUEUE == 'QUEUE' and c.MULTIPROC_MODE_LOCK == 'LOCK'
    # the constants are what the Environment accepts
    for mode in (c.WRAP_MODE_QUEUE, c.WRAP_MODE_LOCK, c.WRAP_MODE_NONE):
        assert lazy_env('w' + mode, wrap_mode=mode).v_trajectory is not None


# =============================================================================================
# Plain data - the core needs nothing beyond the standard library
# =============================================================================================
def test_import_and_a_run_import_no_third_party_module():
    proc = run_python('''
        import sys, importlib
        mp = importlib.import_module(%r)
        env = mp.Environment(trajectory='t', storage_service=mp.LazyStorageService,
                             log_config=None)
        env.v_trajectory.f_add_parameter('x', 1)
        env.v_trajectory.f_explore({'x': [1, 2]})
        env.f_run(lambda traj: traj.x)
        print(sorted(m for m in ('numpy', 'tables', 'git', 'pandas', 'dask')
                     if m in sys.modules))
    ''' % mp.__name__)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]'


# =============================================================================================
# Tree and natural naming
# =============================================================================================
def test_a_group_made_on_its_own_finds_and_adds_nodes_and_brings_them_along(tmp_path):
    group = mp.ParameterGroup('g', comment='made alone')
    assert not hasattr(group, 'x') and 'x' not in group  # (hasattr and `in` keep working)
    with pytest.raises(mp.NoSuchNodeError, match="g has no node 'x'"):
        group.f_get('x')
    group.f_add_leaf('x', 1)
    group.f_add_group('sub').f_add_leaf('y', 2)
    group.sub.z = mp.Parameter('z', 3, comment='zed')
    group.f_add_link('lx', group.f_get('x'))
    group.f_add_link('ls', group.sub)
    assert (group.x, group.sub.y, group.y, group['sub.z'], group.lx) == (1, 2, 2, 3, 1)
    assert 'y' in group and group.ls is group.sub
    assert [n.v_full_name for n in group.f_iter_nodes()] == [
        'g.x', 'g.sub', 'g.sub.y', 'g.sub.z']
    with pytest.raises(mp.InvalidNameError, match='f_bad'):
        group.f_add_leaf('f_bad', 1)
    traj = mp.Trajectory('t', filename=str(tmp_path / 't.hdf5'))
    traj.f_add_parameter('p', 0)
    traj.par.g = group  # (the group itself, with its nodes)
    assert traj.par.g is group and traj.par.g.sub.f_get('y').v_full_name == 'parameters.g.sub.y'
    assert traj.f_get('parameters.g.sub.z').v_comment == 'zed'
    assert traj.par.g.v_comment == 'made alone'
    assert traj.par.g.ls is traj.par.g.sub and traj.par.g.lx == 1
    assert sorted(n.v_full_name for n in traj.par.g.f_iter_nodes()) == [
        'parameters.g.sub', 'parameters.g.sub.y', 'parameters.g.sub.z', 'parameters.g.x']
    dotted = mp.ParameterGroup('a.b')  # (a dotted name is kept while the group is alone)
    dotted.f_add_leaf('w', 4)
    traj.par.a = dotted
    assert traj.f_get('parameters.a.b.w', fast_access=True) == 4
    traj.f_store()  # (HDF5, or pickle without PyTables)
    loaded = mp.load_trajectory('t', filename=str(tmp_path / 't.hdf5'), load_all=2)
    assert loaded.par.g.sub.z == 3 and loaded.f_get('parameters.a.b.w').f_get() == 4


def test_four_branches_and_their_abbreviations():
    traj = mp.Trajectory('t')
    assert sorted(traj._children) == ['config', 'derived_parameters', 'parameters', 'results']
    for short, long in (('conf', 'config'), ('par', 'parameters'),
                        ('dpar', 'derived_parameters'), ('res', 'results')):
        assert getattr(traj, short) is getattr(traj, long)
        assert traj[short] is traj.f_get(long)
        assert getattr(traj, long).v_full_name == long
    traj.f_add_parameter('par.a', 1)
    traj.f_add_result('res.b', 2)
    assert traj.f_get('par.a').v_full_name == 'parameters.a'
    assert traj.f_get('res.b').v_full_name == 'results.b'
    assert traj.dpar.f_add_derived_parameter('c', 3).v_full_name == 'derived_parameters.c'
    assert traj.conf.f_add_config('d', 4).v_full_name == 'config.d'


def test_dotted_names_create_groups():
    traj = mp.Trajectory('t')
    leaf = traj.f_add_parameter('traffic.cars.ncars', 5)
    assert leaf.v_full_name == 'parameters.traffic.cars.ncars'
    traffic = traj.f_get('parameters.traffic')
    assert not traffic.v_is_leaf and traffic.v_full_name == 'parameters.traffic'
    assert traj.f_get('parameters.traffic.cars').f_get_children() == {'ncars': leaf}
    # a second leaf reuses the existing groups
    traj.f_add_parameter('traffic.cars.speed', 3.0)
    assert set(traj.parameters.traffic.cars.f_get_children()) == {'ncars', 'speed'}
    assert traj.parameters.traffic.cars.f_children() == 2    # pypet: a count
    # adding below a leaf is refused
    with pytest.raises(mp.InvalidNameError, match='ncars'):
        traj.f_add_parameter('traffic.cars.ncars.sub', 1)


def test_natural_naming_and_getitem():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('traffic.ncars', 42)
    assert traj.parameters.traffic.ncars == 42
    assert traj.par.traffic.ncars == 42
    assert traj['traffic.ncars'] == 42
    assert traj['parameters.traffic.ncars'] == 42
    assert traj.parameters['traffic.ncars'] == 42
    assert traj.parameters.traffic['ncars'] == 42


def test_fast_access_parameter_and_single_item_result():
    traj = mp.Trajectory('t')
    param = traj.f_add_parameter('x', 3)
    single = traj.f_add_result('z', 6, comment='one item named like the result')
    several = traj.f_add_result('zz', 1, other=2)
    other_name = traj.f_add_result('w', item=1)
    assert traj.x == 3 and traj.z == 6
    assert traj.zz is several                    # several items: the result itself
    assert traj.w is other_name                  # one item, named differently
    assert traj.f_get('x') is param              # f_get gives the node ...
    assert traj.f_get('z') is single
    assert traj.f_get('x', fast_access=True) == 3  # ... unless asked for the value
    assert traj.f_get('z', fast_access=True) == 6
    traj.v_fast_access = False
    assert traj.x is param and traj.z is single


def test_empty_parameter_is_returned_as_node_by_fast_access():
    traj = mp.Trajectory('t')
    empty = traj.f_add_parameter(mp.Parameter, 'e')
    assert empty.f_is_empty()
    assert traj.e is empty


def test_shortcuts_skip_groups_and_the_shallowest_match_wins():
    traj = mp.Trajectory('t')
    deep = traj.f_add_parameter('a.b.c.ncars', 1)
    assert traj.ncars == 1
    assert traj.parameters.ncars == 1
    assert traj.par.a.ncars == 1
    shallow = traj.f_add_parameter('g.ncars', 2)
    assert traj.ncars == 2                       # depth 3 beats depth 5
    assert traj.f_get('ncars') is shallow
    assert traj.f_get('c.ncars') is deep         # a partial path works as a shortcut too
    with pytest.raises(mp.NoSuchNodeError):
        traj.f_get('ncars', shortcuts=False)
    traj.v_shortcuts = False
    with pytest.raises(mp.NoSuchNodeError):
        traj.ncars


def test_ambiguous_shortcut_at_the_same_depth_raises_not_unique():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('traffic.ncars', 1)
    traj.f_add_parameter('other.ncars', 2)
    with pytest.raises(mp.NotUniqueNodeError) as info:
        traj.ncars
    message = str(info.value)
    assert 'parameters.traffic.ncars' in message and 'parameters.other.ncars' in message
    with pytest.raises(mp.NotUniqueNodeError):
        traj.f_get('ncars')
    assert not hasattr(traj, 'ncars')            # an AttributeError, so hasattr works
    assert traj.traffic.ncars == 1 and traj.other.ncars == 2


def test_missing_node_raises_no_such_node_with_a_hint():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('ncars', 1)
    with pytest.raises(mp.NoSuchNodeError, match='ncras') as info:
        traj.ncras
    assert 'ncars' in str(info.value)            # "did you mean ncars?"
    with pytest.raises(KeyError):
        traj['nothing_here']
    assert traj.f_get_default('nothing_here', 7) == 7


def test_f_contains_and_in():
    traj = mp.Trajectory('t')
    x = traj.f_add_parameter('grp.x', 1)
    r = traj.f_add_result('r', 1)
    assert traj.f_contains('parameters.grp.x')
    assert 'parameters.grp.x' in traj
    assert 'grp.x' in traj.par
    assert 'x' in traj.par.grp
    assert 'x' in traj and not traj.f_contains('x')  # `in` searches as natural naming does
    assert traj.f_contains('x', shortcuts=True)      # (pypet's), f_contains only if asked to
    traj.v_shortcuts = False
    assert 'x' not in traj
    traj.v_shortcuts = True
    assert 'nothing' not in traj
    assert traj.f_contains(x) and x in traj.parameters
    assert r not in traj.parameters and r in traj.results


def test_f_iter_nodes_is_breadth_first():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('a.b.deep', 1)
    traj.f_add_parameter('top', 2)
    names = [n.v_full_name for n in traj.parameters.f_iter_nodes()]
    assert names == ['parameters.a', 'parameters.top', 'parameters.a.b',
                     'parameters.a.b.deep']
    assert [n.v_name for n in traj.parameters.f_iter_nodes(recursive=False)] == ['a', 'top']
    leaves = [n.v_name for n in traj.f_iter_nodes(predicate=lambda n: n.v_is_leaf)]
    assert leaves == ['top', 'deep']


def test_f_iter_nodes_keeps_the_runs_a_tuple_of_indices_names():
    env = lazy_env()
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2, 3]})
    traj.f_add_result('summary', 1)
    env.f_run(lambda t: t.f_add_result('z', t.x))
    names = [n.v_full_name for n in traj.results.f_iter_nodes(predicate=(0, 'run_00000002'))]
    assert names == ['results.summary', 'results.runs', 'results.runs.run_00000000',
                     'results.runs.run_00000002', 'results.runs.run_00000000.z',
                     'results.runs.run_00000002.z']


def test_f_iter_leaves():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('a.p', 1)
    traj.f_add_result('b.r', 2)
    traj.f_add_config('c', 3)
    assert sorted(n.v_full_name for n in traj.f_iter_leaves()) == [
        'config.c', 'parameters.a.p', 'results.b.r']
    assert [n.v_full_name for n in traj.results.f_iter_leaves()] == ['results.b.r']


def test_f_to_dict_full_short_and_nested_names():
    traj = mp.Trajectory('t')
    p = traj.f_add_parameter('a.x', 1)
    traj.f_add_parameter('b.y', 2.0)
    assert traj.parameters.f_to_dict() == {'parameters.a.x': p,
                                           'parameters.b.y': traj.f_get('y')}
    assert traj.parameters.f_to_dict(fast_access=True) == {'parameters.a.x': 1,
                                                           'parameters.b.y': 2.0}
    assert traj.parameters.f_to_dict(fast_access=True, short_names=True) == {'x': 1, 'y': 2.0}
    nested = traj.parameters.f_to_dict(fast_access=True, nested=True)
    assert nested == {'a': {'x': 1}, 'b': {'y': 2.0}}   # nested below the group, as pypet's
    assert traj.f_to_dict(fast_access=True, nested=True)['parameters'] == nested
    with pytest.raises(ValueError, match='exclude'):
        traj.f_to_dict(short_names=True, nested=True)
    traj.f_add_parameter('c.x', 3)
    with pytest.raises(ValueError, match='x'):
        traj.parameters.f_to_dict(short_names=True)


def test_f_get_parameters_explored_parameters_and_results():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter('y', 2)
    traj.f_add_result('r', 3)
    traj.f_add_derived_parameter('d', 4)
    traj.f_explore({'x': [1, 6]})
    assert set(traj.f_get_parameters()) == {'parameters.x', 'parameters.y'}
    assert traj.f_get_parameters(fast_access=True) == {'parameters.x': 1, 'parameters.y': 2}
    assert list(traj.f_get_explored_parameters()) == ['parameters.x']
    assert traj.f_get_explored_parameters()['parameters.x'] is traj.f_get('x')
    assert traj.f_get_results(fast_access=True) == {'results.r': 3}
    assert traj.f_get_derived_parameters(fast_access=True) == {'derived_parameters.d': 4}


def test_generic_addition_with_the_same_or_an_empty_name():
    traj = mp.Trajectory('t')
    traj.par.x = mp.Parameter('x', 1, comment='named')
    traj.par.y = mp.Parameter('', 2.0, comment='named by the attribute')
    traj.res.z = mp.Result('', k=3)
    assert traj.f_get('x').v_full_name == 'parameters.x' and traj.x == 1
    assert traj.f_get('y').v_full_name == 'parameters.y' and traj.y == 2.0
    assert traj.f_get('y').v_comment == 'named by the attribute'
    assert traj.f_get('z').v_full_name == 'results.z' and traj.z.k == 3
    sub = mp.ParameterGroup('sub', comment='a group')
    traj.par.sub = sub
    assert traj.f_get('parameters.sub') is sub and sub.v_comment == 'a group'
    traj.mine = mp.NNGroupNode('', comment='outside the branches')
    assert traj.f_get('mine').v_comment == 'outside the branches'
    # pypet's rule: a branch's own group class below it, a plain NNGroupNode outside
    for where, group in (('par', mp.NNGroupNode('jj')), ('res', mp.ParameterGroup('jj')),
                         ('conf', mp.DerivedParameterGroup('jj')), ('', mp.ResultGroup('jj'))):
        with pytest.raises(mp.UnsupportedTypeError, match=r'cannot be added as .*jj.*assign'):
            setattr(traj.f_get(where) if where else traj, 'jj', group)
        assert 'jj' not in (traj.f_get(where) if where else traj)._children
    traj.conf.a = config = mp.ConfigGroup('a.g')
    assert traj.f_get('config.a.g', shortcuts=False) is config
    other = mp.Trajectory('other')  # (a node is in one trajectory at a time)
    other.spare = mp.NNGroupNode('spare')
    other.spare.f_add_leaf('x', 1)
    with pytest.raises(mp.InvalidNameError, match="spare belongs to trajectory 'other'.*"
                                                  "remove it there first"):
        traj.spare = other.spare
    assert 'spare' not in traj._children and other.f_get('spare.x').v_root is other
    moved = other.spare
    other.f_remove_child('spare', recursive=True)
    traj.spare = moved  # (removed there: it moves, with what it holds)
    assert traj.spare is moved and traj.f_get('spare.x').v_root is traj
    assert 'spare' not in other._children and not other.f_contains('x')


def test_group_instances_as_pypet_adds_them():
    """pypet's group classes: the groups minipypet makes are its branch's class; a group
    made on its own takes its branch's f_add_*; f_add_*_group takes an instance; a name
    taken already, or a link out of the group, is refused before anything changes."""
    traj = mp.Trajectory('t')
    traj.f_add_parameter('g.x', 1)
    traj.f_add_result('r.y', 2)
    assert type(traj.par.g) is mp.ParameterGroup and type(traj.parameters) is mp.ParameterGroup
    assert type(traj.res.r) is mp.ResultGroup and type(traj.f_get('config')) is mp.ConfigGroup
    alone = mp.ParameterGroup('h')
    assert alone.f_add_parameter('p', 3).v_full_name == 'h.p'
    assert isinstance(alone.f_add_leaf('q', 4), mp.Parameter)  # (as below parameters)
    with pytest.raises(mp.PypetError, match="results 'z' below h: it belongs below results"):
        alone.f_add_result('z', 1)
    assert traj.f_add_parameter_group(alone) is alone
    assert traj.f_get('parameters.h.p').v_root is traj and traj.h.q == 4
    assert traj.f_add_result_group(mp.ResultGroup('rg')).v_full_name == 'results.rg'
    assert traj.res.f_add_group(mp.ResultGroup('rg2')).v_full_name == 'results.rg2'
    assert traj.f_add_group(mp.NNGroupNode('mine')).v_full_name == 'mine'
    again = mp.ParameterGroup('g')
    again.f_add_parameter('new', 5)
    with pytest.raises(mp.InvalidNameError, match='parameters.g exists already'):
        traj.par.g = again
    assert traj.par.g is not again and 'new' not in traj.par.g._children
    linked = mp.NNGroupNode('linked')
    linked.f_add_leaf('a', 1)
    linked.f_add_link('inside', linked.f_get('a'))
    other = mp.Trajectory('other')
    other.f_add_result('far', 1)
    outside = mp.NNGroupNode('out')
    outside.__dict__['_links'] = {'far': other.f_get('results.far')}  # (as a removed one's)
    with pytest.raises(mp.ConfigurationError, match=r'its link out\.far points to results.far'):
        traj.out = outside
    assert 'out' not in traj._children
    traj.linked = linked
    assert traj.f_get('linked.inside') is traj.f_get('linked.a')


def group_in_a_run_job(traj):
    traj.res.g = mp.ResultGroup('g')  # (a new one each run: it goes into the run)
    traj.res.g.f_add_result('r', traj.x)
    traj.f_add_result_group(mp.ResultGroup('h')).f_add_result('s', -traj.x)


def test_group_instances_in_runs_and_refusals_that_change_nothing(tmp_path):
    """A group instance added in a run goes into the run (results.runs.run_X.g), as a
    leaf does (it went to results.g, and the next run was refused); a parameter group in
    a run, a group of this very trajectory and a branch prefix in an instance's name."""
    env = mp.Environment('t', filename=str(tmp_path / 't.pkl'), add_time=False,
                         log_config=None, report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [0, 1, 2]})
    env.f_run(group_in_a_run_job)
    got = load(str(tmp_path / 't.pkl'), load_data=2)
    for i in range(3):
        assert got.f_get('results.runs.%s.g.r' % run_name(i)).f_get() == i
        assert got.f_get('results.runs.%s.h.s' % run_name(i)).f_get() == -i
    assert 'g' not in got.results._children and 'h' not in got.results._children
    group = mp.ParameterGroup('late')
    group.f_add_parameter('p', 1)
    traj._start_run(0)
    try:
        before = set(traj._nodes)
        with pytest.raises(mp.ParameterLockedError, match='group parameters.late during run'):
            traj.f_add_parameter_group(group)
        with pytest.raises(mp.ParameterLockedError):
            traj.par.late = group
        assert set(traj._nodes) == before and list(group._children) == ['p']
    finally:
        traj._finish_run(traj._run_record(0, 0.0, 0.0, 1), True)
    other = mp.Trajectory('o')
    other.f_add_parameter('g.p', 1)
    with pytest.raises(mp.InvalidNameError, match='parameters.g is in this trajectory already'):
        other.f_add_parameter_group(other.par.g)
    assert other.f_get('parameters.g.p').v_full_name == 'parameters.g.p'
    assert sorted(other._nodes) == ['config', 'derived_parameters', 'parameters',
                                    'parameters.g', 'parameters.g.p', 'results']
    named = other.f_add_result_group(mp.ResultGroup('results.rg'))
    assert named.v_full_name == 'results.rg'


def test_generic_addition_with_a_dotted_name_creates_the_groups():
    # traj.par.g = Parameter('g.sub.x', 1) gives parameters.g.sub.x, not parameters.g.g.sub.x
    traj = mp.Trajectory('t')
    traj.par.g = mp.Parameter('g.sub.x', 1)
    assert traj.f_get('x').v_full_name == 'parameters.g.sub.x'
    assert traj.par.g.sub.x == 1


def test_generic_addition_at_the_root_keeps_a_parameter_in_parameters():
    traj = mp.Trajectory('t')
    traj.f = mp.Parameter('', 444)
    node = traj.f_get('f')
    assert isinstance(node, mp.Parameter)
    assert node.v_full_name == 'parameters.f'       # never a Parameter below results
    traj.f_explore({'f': [1, 2]})                   # so it can be explored
    assert len(traj) == 2


def test_assigning_a_value_through_natural_naming_sets_the_parameter():
    # pypet 0.7: traj.x = 45 sets the value of parameters.x (found by shortcut)
    traj = mp.Trajectory('t')
    traj.par.x = mp.Parameter('', 44)
    traj.par.x = 45
    assert traj.x == 45
    traj.f_get('x').f_unlock()
    traj.x = 46
    assert traj.parameters.f_get('x').f_get() == 46


def test_generic_addition_under_a_name_that_is_also_a_method_is_not_lost():
    # `get`, `contains`, `children` ... are pypet 0.7 aliases of f_ methods; assigning a node
    # under such a name must not silently become an instance attribute outside the tree
    traj = mp.Trajectory('t')
    try:
        traj.par.get = mp.Parameter('', 1)
    except mp.PypetError:
        pass                                      # refusing is fine ...
    else:
        assert traj['parameters.get'] == 1        # ... or it is in the tree, reachable by []
        assert traj.par.get('get', fast_access=True) == 1   # and the method still works
    assert 'get' not in vars(traj.parameters)      # never an instance attribute
    assert callable(traj.par.get)


def test_assigning_a_plain_value_to_a_new_name_is_refused_with_the_fix():
    traj = mp.Trajectory('t')
    with pytest.raises(mp.PypetError, match='f_add_parameter'):
        traj.par.new = 5


def test_f_add_parameter_three_call_forms():
    traj = mp.Trajectory('t')
    a = traj.f_add_parameter('a', 1, comment='by name')
    b = traj.f_add_parameter(mp.PickleParameter, 'b', {'k': 1}, comment='by class')
    c = traj.f_add_parameter(mp.Parameter('grp.c', 3.0, comment='an instance'))
    assert (type(a), a.v_full_name, a.f_get(), a.v_comment) == (
        mp.Parameter, 'parameters.a', 1, 'by name')
    assert (type(b), b.v_full_name, b.f_get(), b.v_comment) == (
        mp.PickleParameter, 'parameters.b', {'k': 1}, 'by class')
    assert (type(c), c.v_full_name, c.f_get(), c.v_comment) == (
        mp.Parameter, 'parameters.grp.c', 3.0, 'an instance')
    with pytest.raises(TypeError):
        traj.f_add_parameter(mp.Parameter('d', 1), 'extra')
    with pytest.raises(TypeError):
        traj.f_add_parameter(42)


def test_f_add_derived_parameter_result_and_config():
    traj = mp.Trajectory('t')
    d = traj.f_add_derived_parameter('sub.d', 1.5, comment='derived')
    r = traj.f_add_result('sub.r', 1, 2, comment='result')
    c = traj.f_add_config('sub.c', 'text', comment='config')
    assert (d.v_full_name, traj.d, d.v_comment) == ('derived_parameters.sub.d', 1.5, 'derived')
    assert (r.v_full_name, r.f_to_dict(), r.v_comment) == (
        'results.sub.r', {'r': 1, 'r_1': 2}, 'result')
    assert (c.v_full_name, traj.c, c.v_comment) == ('config.sub.c', 'text', 'config')
    pr = traj.f_add_result(mp.PickleResult, 'pr', obj=len)
    assert isinstance(pr, mp.PickleResult) and pr.obj is len


@pytest.mark.parametrize('method, branch', [
    ('f_add_parameter_group', 'parameters'), ('f_add_result_group', 'results'),
    ('f_add_derived_parameter_group', 'derived_parameters'), ('f_add_config_group', 'config'),
])
def test_f_add_group_methods(method, branch):
    traj = mp.Trajectory('t')
    group = getattr(traj, method)('outer.inner', comment='my group')
    assert group.v_full_name == branch + '.outer.inner'
    assert group.v_comment == 'my group' and not group.v_is_leaf
    assert traj.f_get(branch + '.outer').v_full_name == branch + '.outer'
    # from inside the branch the name is relative
    deeper = getattr(traj.f_get(branch + '.outer'), method)('more')
    assert deeper.v_full_name == branch + '.outer.more'
    assert traj.f_add_group(branch + '.generic').v_full_name == branch + '.generic'


def test_adding_to_the_wrong_branch_is_refused():
    traj = mp.Trajectory('t')
    with pytest.raises(mp.PypetError, match='parameters'):
        traj.results.f_add_parameter('x', 1)
    with pytest.raises(mp.PypetError, match='results'):
        traj.parameters.f_add_result('r', 1)


def test_adding_an_existing_leaf_again_fails_with_the_fix():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 1)
    with pytest.raises(mp.InvalidNameError, match='parameters.x') as info:
        traj.f_add_parameter('x', 2)
    assert 'f_set' in str(info.value) or 'remove' in str(info.value)


@pytest.mark.parametrize('name', ['runs', 'runs.run_00000000', 'runs.run_ALL'])
def test_the_runs_groups_names_are_refused_for_leaves(name):
    # (a sweep puts each run's results in results.runs.run_XXXXXXXX: a leaf there broke it)
    traj = mp.Trajectory('t')
    with pytest.raises(mp.InvalidNameError, match="results.%s is where the runs' groups go"
                       % name.replace('.', r'\.')):
        traj.f_add_result(name, 1)
    with pytest.raises(mp.InvalidNameError, match='derived_parameters.%s' % name):
        traj.f_add_derived_parameter(name, 1)
    traj.f_add_result_group(name)                    # as a group it is what it should be
    traj.f_add_result('runs.other', 2)
    traj.f_add_result('runs.run_00000001.z', 3)


def test_a_name_longer_than_4096_characters_is_refused():
    traj = mp.Trajectory('t')
    traj.f_add_result('a' * 4096, 1)
    with pytest.raises(mp.InvalidNameError, match='at most 4,096') as info:
        traj.f_add_result('g.' + 'b' * 4097, 1)
    assert len(str(info.value)) < 600                # the name is cut in the message
    assert 'g' not in traj.results


@pytest.mark.parametrize('comment, problem', [
    (8, 'must be a str, not int'), (b'bytes', 'must be a str, not bytes'),
    ('ab\x00', 'NUL'), ('from caf\udce9.dat', 'lone surrogate')])
def test_a_comment_every_backend_cannot_keep_is_refused_where_it_is_given(comment, problem):
    traj = mp.Trajectory('t')
    with pytest.raises(mp.UnsupportedTypeError, match=problem):
        traj.f_add_result('grp.r', 1.0, comment=comment)
    assert 'grp' not in traj.results
    with pytest.raises(mp.UnsupportedTypeError, match='^p: '):  # (named as given)
        traj.f_add_parameter('p', 1, comment=comment)
    with pytest.raises(mp.UnsupportedTypeError, match=problem):
        traj.f_add_result_group('g', comment=comment)
    group = traj.f_add_result_group('g2', comment='fine')
    with pytest.raises(mp.UnsupportedTypeError, match=problem):
        traj.f_add_result_group('g2', comment=comment)
    assert group.v_comment == 'fine'
    leaf = traj.f_add_result('ok', 1)
    with pytest.raises(mp.UnsupportedTypeError, match='results.ok'):
        leaf.v_comment = comment
    with pytest.raises(mp.UnsupportedTypeError, match=problem):
        mp.Trajectory('t2', comment=comment)
    assert mp.Trajectory('t3', comment=None).v_comment == ''  # None: no comment


def test_node_name_properties_and_comment():
    traj = mp.Trajectory('tname', comment='the trajectory')
    leaf = traj.f_add_parameter('group.sub.leaf', 1, comment='a leaf')
    assert (leaf.v_name, leaf.v_full_name, leaf.v_location) == (
        'leaf', 'parameters.group.sub.leaf', 'parameters.group.sub')
    group = traj.f_get('parameters.group')
    assert (group.v_name, group.v_full_name, group.v_location) == (
        'group', 'parameters.group', 'parameters')
    assert traj.v_name == 'tname' and traj.v_comment == 'the trajectory'
    assert leaf.v_comment == 'a leaf'
    leaf.v_comment = 'changed'
    group.v_comment = 'group comment'
    assert leaf.v_comment == 'changed' and group.v_comment == 'group comment'
    with pytest.raises(mp.UnsupportedTypeError, match='parameters.group.sub.leaf'):
        leaf.v_comment = 42


@pytest.mark.parametrize('bad', ['a b', 'f_x', 'v_y', 'x!', 'a..b', 'ü', 'grp.v_inner'])
def test_invalid_names_raise_invalid_name_error_with_a_helpful_message(bad):
    traj = mp.Trajectory('t')
    with pytest.raises(mp.InvalidNameError) as info:
        traj.f_add_parameter(bad, 1)
    message = str(info.value)
    assert repr(bad) in message or bad in message
    assert 'letters, digits' in message
    assert not traj.parameters.f_has_children()


@pytest.mark.parametrize('bad', ['__dict__', '__class__', '_g_copy', '_v_attrnames', '_f_close',
                                 '_c_x', '_i_hidden', '_p_x'])
@pytest.mark.parametrize('add, where', [('f_add_parameter', '{}'), ('f_add_result', 'grp.{}.leaf'),
                                        ('f_add_derived_parameter', 'g.{}')])
def test_names_pytables_reserves_are_refused_when_added_in_every_backend(bad, add, where):
    # stored into an HDF5 file, they broke every later store into it (issue 15)
    traj = mp.Trajectory('t')
    with pytest.raises(mp.InvalidNameError, match='reserved by PyTables') as info:
        getattr(traj, add)(where.format(bad), 1)
    assert repr(bad) in str(info.value)
    assert 'rename it' in str(info.value)
    assert not list(traj.f_iter_leaves())


def test_a_removed_subtree_is_detached_and_freed_without_the_garbage_collector(tmp_path):
    traj = mp.Trajectory('t')
    res = traj.f_add_result('grp.sub.r', 1.5)
    sub = traj.f_get('results.grp.sub')
    traj.results.f_remove_child('grp', recursive=True)
    assert res.v_full_name == 'results.grp.sub.r' and res.f_get() == 1.5  # still usable
    assert res.f_get_parent() is None and sub.f_get_parent() is None
    assert 'grp' not in traj.results._children and not traj.f_contains('grp', shortcuts=True)
    # A sweep's clean-up removes every run's results: none of them may wait for a cycle
    # collection (cycles of removed nodes once cost ~10 ms a 1,000-run sweep in GC time)
    gc.collect()
    gc.disable()
    try:
        env = mp.Environment(trajectory='gc', storage_service=mp.PickleStorageService,
                             filename=str(tmp_path / 'gc.pkl'), log_config=None,
                             report_progress=False)
        env.trajectory.f_add_parameter('x', 0)
        env.trajectory.f_explore({'x': list(range(200))})
        env.run(lambda t: t.f_add_result('z', t.x * 2, comment='c'))
        alive = sum(1 for o in gc.get_objects() if isinstance(o, (mp.Result, mp.NNGroupNode))
                    and o.v_name.startswith(('z', 'run_')))
    finally:
        gc.enable()
    assert alive == 0


def test_empty_name_and_invalid_trajectory_name():
    traj = mp.Trajectory('t')
    with pytest.raises(mp.InvalidNameError, match='name'):
        traj.f_add_parameter('', 1)
    with pytest.raises(mp.InvalidNameError, match='bad name'):
        mp.Trajectory('bad name')
    with pytest.raises(mp.InvalidNameError):
        mp.Trajectory('with.dot')


# -- pypet 0.7's tree behaviour, as pypet's own unit tests check it (issue 18) ---------------
def test_a_branch_group_is_listed_once_it_holds_something():
    # pypet makes a branch group when something is first added to it; minipypet has all four
    # from the start (so traj.results always works) and lists one only once it holds something
    traj = mp.Trajectory('t')
    assert [n.v_name for n in traj.f_iter_nodes()] == []
    assert traj.results.f_children() == 0
    traj.f_add_result('r', 1)
    traj.f_add_parameter('g.x', 1)
    assert [n.v_full_name for n in traj.f_iter_nodes(recursive=False)] == ['parameters',
                                                                           'results']
    traj.f_remove_child('results', recursive=True)   # a removed branch comes back empty
    assert traj.results.f_children() == 0 and 'r' not in traj
    assert traj.f_get('results') is traj._nodes['results'] is traj.res
    traj.f_add_result('again', 2)
    assert traj.again == 2


def test_annotations_as_pypet_reads_them():
    traj = mp.Trajectory('t')
    group = traj.f_add_parameter_group('g')
    ann = group.v_annotations
    with pytest.raises(AttributeError, match='no annotations'):
        ann.f_get()
    ann.f_set(10, 20, b='x', a=[1, 2])
    assert ann.f_get(0) == 10 and ann[1] == 20 and 0 in ann and 'annotation_1' in ann
    assert ann.f_get(0, 'b') == (10, 'x')
    with pytest.raises(ValueError, match='4 annotations'):
        ann.f_get()
    for missing in (lambda: ann.f_get('nope'), lambda: ann['nope'], lambda: ann.nope):
        with pytest.raises(AttributeError, match='nope'):
            missing()
    with pytest.raises(KeyError):
        ann['nope']
    # sorted by name, values as str() gives them, on groups and leaves alike
    assert str(ann) == group.f_ann_to_str() == \
        'a=[1, 2]; annotation=10; annotation_1=20; b=x'


def test_children_counts_and_dicts_as_pypet():
    traj = mp.Trajectory('t')
    x = traj.f_add_parameter('g.x', 1)
    traj.f_add_parameter_group('g.sub')
    traj.par.g.f_add_link('lx', x)
    g = traj.par.g
    assert (g.f_children(), g.f_groups(), g.f_leaves(), g.f_links()) == (2, 1, 1, 1)
    assert g.f_get_children() == {'x': x, 'sub': g.sub}
    assert g.f_get_groups() == {'sub': g.sub} and g.f_get_leaves() == {'x': x}
    assert g.f_get_links() == {'lx': x} and g.f_get_links(copy=False) is g._links
    assert sorted(g.f_dir_data()) == ['sub', 'x']
    tree = traj.f_debug()
    assert tree.parameters.g.x is x and tree.parameters.g.lx is x
    assert vars(tree.parameters.g.sub) == {}


def test_str_of_leaves_and_groups_as_pypet():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 444, comment='Hey')
    assert str(traj.f_get('x')) == 'Parameter parameters.x (`Hey`): 444'
    assert str(traj.f_add_result('r', a=1, b='s')) == "Result results.r: a=1, b='s'"
    few, many = traj.f_add_group('few'), traj.f_add_group('many')
    for i in range(6):
        many.f_add_group('g%d' % i)
        if i < 5:
            few.f_add_group('g%d' % i)
    assert not str(few).endswith('...') and str(many).endswith(', ...')
    assert str(few).startswith('NNGroupNode few: (g0: NNGroupNode), (g1')
    assert str(traj) == repr(traj)   # print(traj): the summary


def test_v_run_branch_names_the_run_a_node_hangs_below():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    traj.f_add_result('runs.run_00000001.z', 1)
    traj.f_add_result('runs.run_ALL.w', 1)
    assert traj.f_get('run_00000001.z').v_run_branch == 'run_00000001'
    assert traj.f_get('run_ALL.w').v_run_branch == 'run_ALL'
    assert traj.f_get('x').v_run_branch == 'trajectory'


def test_assigning_a_node_under_another_name_or_a_value_to_a_many_item_result_is_refused():
    traj = mp.Trajectory('t')
    traj.par.x = mp.Parameter('', 1)             # no name: it takes the attribute's
    traj.par.g = mp.Parameter('g.y', 2)          # a dotted name under the attribute's
    assert traj.f_get('parameters.g.y').f_get() == 2
    with pytest.raises(AttributeError, match='names differ') as info:
        traj.par.f = mp.Parameter('other', 3)
    assert isinstance(info.value, mp.InvalidNameError) and 'other' not in traj
    traj.res.one = mp.Result('one', 1)
    traj.res.one = 5                             # one item named as the result: set it
    assert traj.one == 5
    traj.res.two = mp.Result('', a=1, b=2)
    with pytest.raises(AttributeError, match="'a', 'b'"):
        traj.res.two = 3
    with pytest.raises(AttributeError, match='exists already'):   # pypet: AttributeError
        traj.f_add_parameter('x', 2)
    traj.v_no_clobber = True                     # pypet: then the existing leaf is kept
    assert traj.f_add_parameter('x', 2) is traj.f_get('x') and traj.x == 1


def test_links_are_found_by_name_and_v_with_links_false_stops_natural_naming():
    traj = mp.Trajectory('t')
    traj.f_add_parameter_group('test.test3')
    traj.f_add_parameter_group('test2')
    traj.test2.f_add_link(traj.test3)                   # same depth as the group itself
    with pytest.raises(mp.NotUniqueNodeError):
        traj.test3
    traj.test.f_add_link('circle', traj.test2)
    assert 'circle' in traj and traj.circle is traj.test2
    assert not traj.f_contains('circle', with_links=False, shortcuts=True)
    traj.v_with_links = False
    with pytest.raises(AttributeError):
        traj.test.circle
    assert 'circle' not in traj
    with pytest.raises(ValueError, match='node of this trajectory'):
        traj.f_add_link('foreign', mp.Result('r', 1))


def test_f_get_all_lets_a_dotted_name_skip_groups_and_f_contains_a_node_within_max_depth():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('peter.markus.yve', 6)
    traj.f_add_parameter('paul.yve', 1)
    assert [n.v_full_name for n in traj.f_get_all('peter.yve')] == \
        ['parameters.peter.markus.yve']
    assert len(traj.f_get_all('yve')) == 2 and traj.f_get_all('paul.markus') == []
    assert len(traj.peter.f_get_all('yve')) == 1
    assert traj.f_get_all('par.peter.yve', shortcuts=False) == []      # the exact path only
    assert len(traj.f_get_all('par.peter.markus.yve', shortcuts=False)) == 1
    yve = traj.f_get('peter.markus.yve')
    assert traj.par.f_contains(yve, max_depth=3) and not traj.par.f_contains(yve, max_depth=2)


def test_group_item_of_a_run_index_and_wildcard_misses_say_what_they_stood_for():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    traj.f_add_result('runs.run_00000001.z', 7)
    traj.f_add_result('runs.run_ALL.w', 8)
    assert traj.results.runs[1].z == 7 and traj.results.runs[-1].w == 8
    traj.v_idx = 0
    with pytest.raises(AttributeError, match=r'crun is run_00000000'):
        traj.par.crun.z
    traj.v_idx = -1
    with pytest.raises(AttributeError, match=r'\$ is run_ALL'):
        traj.f_get('par.$.z')


def test_nested_f_to_dict_is_below_the_group_and_branch_dicts_refuse_copy_false_values():
    traj = mp.Trajectory('t')
    traj.f_add_result('runs.$.r', 55)
    assert traj.res.f_to_dict(nested=True, fast_access=True) == \
        {'runs': {'run_ALL': {'r': 55}}}
    assert traj.res.runs.f_to_dict(nested=True, fast_access=True) == {'run_ALL': {'r': 55}}
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    for get in (traj.f_get_parameters, traj.f_get_config, traj.f_get_explored_parameters):
        with pytest.raises(ValueError, match='copy=True'):
            get(fast_access=True, copy=False)
    assert traj.f_get_explored_parameters(fast_access=True) == {'parameters.x': 1}


# ---------------------------------------------------------------------------------------------
# Links and annotations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_links_and_annotations_round_trip(tmp_path, backend):
    env = env_for(backend, tmp_path, 'linked')
    traj = env.v_trajectory
    x = traj.f_add_parameter('x', 1, comment='x')
    traj.f_add_parameter('group.y', 2.5)
    res = traj.f_add_result('summary.value', 42, comment='the answer')
    summary = traj.f_get('results.summary')
    summary.f_add_link('to_x', x)                              # f_add_link(name, node)
    summary.f_add_link('y_link', 'parameters.group.y')         # f_add_link(name, full name)
    traj.f_add_derived_parameter('dgroup.d', 7)
    traj.f_get('derived_parameters.dgroup').x_alias = traj.f_get('parameters.x')  # assignment
    assert traj.f_get('results.summary.to_x') is x
    x.v_annotations.unit = 'mV'
    x.v_annotations.f_set(source='test', scale=3)
    res.v_annotations.meta = {'a': [1, 2], 'b': None}
    traj.f_get('parameters.group').v_annotations.kind = 'a group'
    traj.parameters.v_annotations.branch = 'parameters'
    traj.f_explore({'x': [1, 2]})

    def job(t):
        t.f_add_result('z', t.x * 10).v_annotations.run = t.v_idx
        return t.x
    env.f_run(job)
    filename = str(tmp_path / ('linked' + PROV_SUFFIX[backend]))
    loaded = mp.load_trajectory(name='linked', filename=filename, load_all=2)
    lx = loaded.f_get('parameters.x')
    assert loaded.f_get('results.summary.to_x') is lx
    assert loaded.f_get('results.summary.y_link') is loaded.f_get('parameters.group.y')
    assert loaded.results.summary.y_link == 2.5  # natural naming with fast access
    assert loaded.f_get('derived_parameters.dgroup.x_alias') is lx
    assert lx.v_annotations.unit == 'mV'
    assert lx.v_annotations.f_to_dict() == {'unit': 'mV', 'source': 'test', 'scale': 3}
    assert loaded.f_get('results.summary.value').v_annotations.meta == {'a': [1, 2],
                                                                       'b': None}
    assert loaded.f_get('parameters.group').v_annotations.kind == 'a group'
    assert loaded.parameters.v_annotations.branch == 'parameters'
    assert loaded.f_get('results.runs.run_00000001.z').v_annotations.run == 1
    with pytest.raises(mp.PypetError):  # a link name that is taken
        loaded.f_get('results.summary').f_add_link('value', lx)
    out = cli('show', filename)
    assert out.returncode == 0
    assert 'results.summary.to_x -> parameters.x' in out.stdout
    assert 'derived_parameters.dgroup.x_alias -> parameters.x' in out.stdout


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_links_below_a_branch_and_at_the_root_round_trip(tmp_path, backend):
    """traj.results.f_add_link(...), traj.derived_parameters.alias = node and
    traj.f_add_link(...) are links like any other and must survive storing."""
    env = env_for(backend, tmp_path, 'toplinks')
    traj = env.v_trajectory
    x = traj.f_add_parameter('x', 1)
    traj.results.f_add_link('to_x', x)
    traj.derived_parameters.x_alias = x
    traj.f_add_link('root_x', x)
    traj.f_store()
    loaded = mp.load_trajectory(name='toplinks', filename=str(tmp_path / (
        'toplinks' + PROV_SUFFIX[backend])), load_all=2)
    lx = loaded.f_get('parameters.x')
    missing = [name for name in ('results.to_x', 'derived_parameters.x_alias', 'root_x')
               if loaded.f_get_default(name, None) is not lx]
    assert missing == [], 'links lost on the way through the file: %s' % missing


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_trajectory_annotations_round_trip(tmp_path, backend):
    env = env_for(backend, tmp_path, 'rootann')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.v_annotations.author = 'test engineer'
    traj.f_store()
    loaded = mp.load_trajectory(name='rootann', filename=str(tmp_path / (
        'rootann' + PROV_SUFFIX[backend])), load_all=2)
    assert loaded.v_annotations.f_to_dict() == {'author': 'test engineer'}


def without_long_traceback(what, func, *args):
    """Call func; report a failure in one line (a RecursionError's chained traceback takes
    pytest minutes to format)."""
    try:
        return func(*args)
    except Exception as exc:
        pytest.fail('%s: %s: %s' % (what, type(exc).__name__, str(exc)[:300]), pytrace=False)


def test_links_survive_pickling_the_trajectory():
    traj = mp.Trajectory('pk', add_time=False)
    x = traj.f_add_parameter('x', 1)
    traj.f_add_parameter('g.y', 2)
    traj.results.f_add_link('lx', x)
    traj.f_get('parameters.g').f_add_link('ly', 'parameters.g.y')
    copy = pickle.loads(pickle.dumps(traj))
    assert copy.f_get('results.lx') is copy.f_get('parameters.x')
    assert copy.f_get('parameters.g.ly') is copy.f_get('parameters.g.y')


def test_annotations_survive_pickling():
    """Trajectories travel to worker processes pickled, so annotated nodes must unpickle."""
    traj = mp.Trajectory('pk', add_time=False)
    x = traj.f_add_parameter('x', 1)
    x.v_annotations.unit = 'ms'
    traj.v_annotations.who = 'me'
    copy = without_long_traceback('unpickling an annotated trajectory', pickle.loads,
                                  pickle.dumps(traj))
    assert copy.f_get('parameters.x').v_annotations.unit == 'ms'
    assert copy.v_annotations.who == 'me'


@pytest.mark.timeout(60)
@needs_fork
def test_annotated_trajectory_runs_in_a_pool(tmp_path, jobs):
    env = env_for('pickle', tmp_path, 'annpool', multiproc=True, ncores=2,
                  start_method='fork')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1).v_annotations.unit = 'mV'
    traj.f_explore({'x': [1, 2]})
    results = without_long_traceback('a pool run of an annotated trajectory', env.f_run,
                                     jobs.times_ten)
    assert results == [(0, 10), (1, 20)]


# ---------------------------------------------------------------------------------------------
# Links through their targets; max_depth on dotted paths
# ---------------------------------------------------------------------------------------------
def test_links_are_searched_through_their_targets_and_nothing_is_added_below_one():
    traj = mp.Trajectory()
    traj.f_add_parameter_group('test.test3')
    traj.f_add_parameter_group('test2')
    traj.test.f_add_link('circle1', traj.test2)
    traj.test2.f_add_link('circle2', traj.test)
    assert traj.test2.test3 is traj.par.test.test3  # (test2 -> circle2 -> test -> test3)
    assert traj['test2.test3'] is traj.test3
    with pytest.raises(mp.NoSuchNodeError):
        traj.f_get('test2.test3', with_links=False)
    with pytest.raises(mp.InvalidNameError, match='circle1 is a link'):
        traj.f_add_parameter('test.circle1.testy', 33)
    with pytest.raises(mp.InvalidNameError, match="'overview' is reserved"):
        traj.f_add_link('overview', traj.test)
    with pytest.raises(mp.ConfigurationError, match='needs a target'):
        traj.f_add_link('v_crun')
    with pytest.raises(ValueError):  # (pypet raises ValueError; also a NoSuchNodeError)
        traj.test2.f_remove_link('nope')
    with pytest.raises(mp.NoSuchChildError, match="no child 'test3'"):
        traj.par.f_remove_child('test3')  # (a grandchild: only direct children)
    with pytest.raises(mp.GroupNotEmptyError):  # (a TypeError, as pypet's)
        traj.par.f_remove_child('test')
    traj.test.f_remove_link('circle1')
    with pytest.raises(mp.NoSuchNodeError):
        traj.test.circle1


def test_max_depth_limits_dotted_paths_too_but_not_a_way_through_a_link():
    traj = mp.Trajectory()
    traj.f_add_parameter('halo.this.is.a.depth.testrr')
    assert not traj.par.f_contains('halo.this', max_depth=1)
    assert traj.par.f_contains('halo.this', max_depth=2)
    assert not traj.f_contains('a.depth.testrr', max_depth=3)
    assert not traj.par.f_contains('testrr', max_depth=5)
    traj.par.mylink = traj.this
    assert traj.par.f_contains('is', shortcuts=True, max_depth=2)  # (par.mylink.is)


# =============================================================================================
# Parameters and results
# =============================================================================================
@pytest.mark.parametrize('value', [
    True, 3, 1.5, 1 + 2j, 'text', b'bytes', (1, 2, 3), [1.0, 2.0], ['a', 'b'], (True, False),
    [b'a', b'b'], (1j, 2j),
], ids=lambda v: type(v).__name__ + '-' + repr(v)[:12])
def test_parameter_supported_types(value):
    traj = mp.Trajectory('t')
    param = traj.f_add_parameter('p', value)
    assert param.f_get() == value and type(param.f_get()) is type(value)
    assert param.f_supports(value)
    assert traj.p == value


@pytest.mark.parametrize('value', [
    {'a': 1}, object(), [1, 'a'], [[1]], (1, 2.0), [], {1, 2}, Exception('e'),
], ids=lambda v: type(v).__name__)
def test_parameter_unsupported_types_name_the_node_and_the_type(value):
    traj = mp.Trajectory('t')
    with pytest.raises(mp.UnsupportedTypeError) as info:
        traj.f_add_parameter('grp.bad', value)
    message = str(info.value)
    assert 'grp.bad' in message
    assert type(value).__name__ in message
    assert 'PickleParameter' in message or 'empty' in message
    assert 'grp.bad' not in traj.parameters


def test_parameter_numpy_scalars_and_arrays():
    np = pytest.importorskip('numpy')
    traj = mp.Trajectory('t')
    for i, value in enumerate([np.int32(3), np.float64(2.5), np.complex128(1j), np.bool_(True),
                               np.int8(-1), np.uint16(7), np.array([1.0, 2.0]),
                               np.array([[1, 2], [3, 4]])]):
        param = traj.f_add_parameter('n%d' % i, value)
        assert type(param.f_get()) is type(value)
        assert np.array_equal(param.f_get(), value)
    for bad in (np.array([], dtype=float), np.array([object()], dtype=object)):
        with pytest.raises(mp.UnsupportedTypeError, match='ndarray'):
            mp.Parameter('bad', bad)


def test_f_get_locks_and_f_set_on_a_locked_parameter_says_how_to_unlock():
    traj = mp.Trajectory('t')
    param = traj.f_add_parameter('x', 1)
    param.f_set(2)                                # not read yet: fine
    assert not param.v_locked
    assert param.f_get() == 2
    assert param.v_locked
    with pytest.raises(mp.ParameterLockedError) as info:
        param.f_set(3)
    assert 'parameters.x' in str(info.value) and 'f_unlock()' in str(info.value)
    assert param.f_get() == 2
    param.f_unlock()
    param.f_set(3)
    assert param.f_get() == 3
    traj.f_get('x').f_lock()
    with pytest.raises(TypeError):                # pypet callers catch TypeError
        param.f_set(4)


def test_reading_a_parameter_during_a_run_locks_it():
    env = lazy_env()
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter('never_read', 1)

    def job(traj):
        value = traj.x
        with pytest.raises(mp.ParameterLockedError):
            traj.f_get('x').f_set(10)
        return value, traj.f_get('x').v_locked

    assert env.f_run(job) == [(0, (1, True))]
    assert traj.f_get('x').v_locked


def test_range_api_and_v_explored():
    traj = mp.Trajectory('t')
    param = traj.f_add_parameter('x', 1)
    assert not param.f_has_range() and not param.v_explored
    assert len(param) == param.f_get_range_length() == 1
    with pytest.raises(mp.PypetError, match='parameters.x'):
        param.f_get_range()
    traj.f_explore({'x': [4, 5, 6]})
    assert param.f_has_range() and param.v_explored
    assert param.f_get_range() == [4, 5, 6] and len(param) == 3
    copy = param.f_get_range()
    copy.append(99)
    assert param.f_get_range() == [4, 5, 6]      # a copy by default
    with pytest.raises(mp.ParameterLockedError, match='explored'):
        param.f_set(7)


def test_without_a_current_run_an_explored_parameter_reads_its_default():
    # pypet: exploring does not change the value; with v_idx == -1 you read the default,
    # the same before and after f_restore_default()
    traj = mp.Trajectory('t')
    param = traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [5, 6]})
    assert traj.v_idx == -1
    assert param.f_get_default() == 1
    before = traj.x
    traj.f_restore_default()
    assert before == traj.x == 1


def test_f_is_empty_and_f_empty():
    param = mp.Parameter('x', 1)
    assert not param.f_is_empty()
    param.f_empty()
    assert param.f_is_empty()
    with pytest.raises(mp.PypetError, match='empty'):
        param.f_get()
    param.f_set(2)
    assert param.f_get() == 2
    with pytest.raises(mp.ParameterLockedError):  # read, so locked: f_empty refuses
        param.f_empty()
    assert mp.Parameter('e').f_is_empty()


def test_exploring_a_float_parameter_with_numpy_floats():
    np = pytest.importorskip('numpy')
    env = lazy_env()
    traj = env.v_trajectory
    param = traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': np.arange(0.0, 1.0, 0.25)})
    assert param.f_get_range() == [0.0, 0.25, 0.5, 0.75]
    assert all(type(v) is float for v in param.f_get_range())
    assert env.f_run(lambda traj: traj.x * 2) == [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.5)]
    traj2 = mp.Trajectory('t2')
    ints = traj2.f_add_parameter('i', 0)
    traj2.f_explore({'i': np.arange(3)})
    assert [type(v) for v in ints.f_get_range()] == [int, int, int]


def test_array_parameter():
    param = mp.ArrayParameter('a', (1, 2, 3))
    assert param.f_get() == (1, 2, 3) and isinstance(param, mp.Parameter)
    np = pytest.importorskip('numpy')
    traj = mp.Trajectory('t')
    arr = traj.f_add_parameter(mp.ArrayParameter, 'arr', np.array([1, 2]))
    traj.f_explore({'arr': [np.array([1, 2]), np.array([3, 4, 5])]})
    assert [list(v) for v in arr.f_get_range()] == [[1, 2], [3, 4, 5]]


class Point:
    """Something only a PickleParameter can hold (module level, so it pickles)."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


def test_pickle_parameter_holds_anything_picklable(tmp_path):
    traj = mp.Trajectory('pp', storage_service=mp.PickleStorageService(
        str(tmp_path / 'pp.pkl')))
    param = traj.f_add_parameter(mp.PickleParameter, 'obj', Point(1), comment='a point')
    traj.f_explore({'obj': [Point(2), {'mixed': [1, 'a']}]})
    traj.v_idx = 1
    assert traj.obj == {'mixed': [1, 'a']}
    traj.f_restore_default()
    assert param.f_get_range() == [Point(2), {'mixed': [1, 'a']}]
    with pytest.raises(mp.UnsupportedTypeError, match='pickle'):
        mp.PickleParameter('bad', lambda: 1)
    traj.f_store()
    loaded = mp.load_trajectory(name='pp', filename=str(tmp_path / 'pp.pkl'), load_all=2)
    assert loaded.f_get('obj').f_get_range() == [Point(2), {'mixed': [1, 'a']}]
    assert loaded.f_get('obj').f_get_default() == Point(1)


class RangeParameter(mp.BaseParameter):
    """A user parameter following the documented contract: f_supports, _store, _load."""

    def __init__(self, full_name, data=None, comment='', unit='m'):
        self.__dict__['unit'] = unit
        super().__init__(full_name, data, comment)

    def f_supports(self, data):
        return isinstance(data, range)

    def _store(self):
        return {'start': self._default.start, 'stop': self._default.stop}

    def _load(self, data):
        self.f_set(range(data['start'], data['stop']))


def test_custom_parameter_round_trips_through_storage(tmp_path):
    filename = str(tmp_path / 'custom.pkl')
    traj = mp.Trajectory('custom', storage_service=mp.PickleStorageService(filename))
    traj.f_add_parameter(RangeParameter, 'steps', range(2, 5), comment='custom')
    assert traj.steps == range(2, 5)
    traj.f_store()
    loaded = mp.load_trajectory(name='custom', filename=filename, load_all=2,
                                dynamic_imports=[RangeParameter])
    node = loaded.f_get('steps')
    assert type(node) is RangeParameter
    assert node.f_get() == range(2, 5) and node.v_comment == 'custom'


def test_custom_parameter_f_supports_is_enforced_by_f_set():
    param = RangeParameter('steps', range(3))
    assert not param.f_supports('not a range')
    with pytest.raises(TypeError):
        param.f_set('not a range')
    with pytest.raises(TypeError):
        mp.Trajectory('t').f_add_parameter(RangeParameter, 'bad', 'not a range')


def test_custom_parameter_is_rebuilt_with_its_own_constructor(tmp_path):
    # pypet builds a loaded leaf with cls(full_name), so constructor defaults exist after load
    filename = str(tmp_path / 'ctor.pkl')
    traj = mp.Trajectory('ctor', storage_service=mp.PickleStorageService(filename))
    traj.f_add_parameter(RangeParameter, 'steps', range(2, 5))
    traj.f_store()
    loaded = mp.load_trajectory(name='ctor', filename=filename, load_all=2,
                                dynamic_imports=[RangeParameter])
    assert loaded.f_get('steps').unit == 'm'


def test_result_positional_items_are_named_name_name_1():
    res = mp.Result('res', 1, 2, 3, comment='c', extra='x')
    assert res.f_to_dict() == {'res': 1, 'res_1': 2, 'res_2': 3, 'extra': 'x'}
    assert res.v_comment == 'c' and len(res) == 4
    assert list(res) == ['res', 'res_1', 'res_2', 'extra']


def test_result_f_get_forms():
    res = mp.Result('res', 10, 11, named='n')
    assert res.f_get('named') == 'n'
    assert res.f_get(0) == 10 and res.f_get(1) == 11
    assert res.f_get('named', 0, 'res_1') == ['n', 10, 11]
    with pytest.raises(ValueError, match='res'):
        res.f_get()                                   # three items: which one?
    assert mp.Result('one', 5).f_get() == 5
    with pytest.raises(mp.NoSuchNodeError, match='missing'):
        res.f_get('missing')


def test_result_item_named_like_a_method_is_not_silently_lost():
    res = mp.Result('r')
    try:
        res.empty = 3                              # `empty` is the alias of f_empty
    except (mp.PypetError, AttributeError):
        pass
    else:
        assert res['empty'] == 3
    assert 'empty' not in vars(res)                # never an instance attribute
    res.f_set_single('empty', 4)
    assert res.f_get('empty') == 4 and res['empty'] == 4


def test_result_f_set_f_set_single_f_remove_f_to_dict():
    res = mp.Result('r')
    assert res.f_is_empty()
    res.f_set(1, 2, a='x')
    res.f_set_single('b', [1, 2])
    assert res.f_to_dict() == {'r': 1, 'r_1': 2, 'a': 'x', 'b': [1, 2]}
    res.f_set(9)                                      # overwrites the first item
    assert res.r == 9
    res.f_remove('a', 1)                              # by name and by position
    assert res.f_to_dict() == {'r': 9, 'b': [1, 2]}
    copy = res.f_to_dict()
    copy['new'] = 1
    assert 'new' not in res
    res.f_empty()
    assert res.f_is_empty() and res.f_to_dict() == {}
    with pytest.raises(mp.InvalidNameError):
        res.f_set_single('f_bad', 1)


def test_result_attribute_and_item_access():
    res = mp.Result('r', 1, k=2)
    assert res.k == 2 and res['k'] == 2 and res[0] == 1 and res['r'] == 1
    res.m = 3
    res['n'] = 4
    assert res.f_to_dict() == {'r': 1, 'k': 2, 'm': 3, 'n': 4}
    assert 'm' in res and 'zz' not in res
    del res.m
    assert 'm' not in res
    with pytest.raises(AttributeError, match='zz'):
        res.zz
    assert not hasattr(res, 'zz')


def test_f_remove_without_names_removes_the_result_from_the_tree():
    traj = mp.Trajectory('t')
    res = traj.f_add_result('gone', 1)
    res.f_remove()
    assert 'gone' not in traj.results


def test_pickle_result_holds_anything_picklable():
    res = mp.PickleResult('p', Point(1), fn=len)
    assert res.p == Point(1) and res.fn is len
    with pytest.raises(mp.UnsupportedTypeError, match='p'):
        res.f_set_single('bad', lambda: 1)


@pytest.mark.parametrize('item', [object(), Point(1), {'k': object()}, [1, object()]],
                         ids=['object', 'Point', 'dict-of-object', 'list-of-object'])
def test_unsupported_result_data_fails_at_add_time_naming_result_and_type(item):
    traj = mp.Trajectory('t')
    with pytest.raises(mp.UnsupportedTypeError) as info:
        traj.f_add_result('grp.bad', data=item)
    message = str(info.value)
    assert 'grp.bad' in message
    assert re.search(r'\b(object|Point)\b', message)
    assert 'PickleResult' in message
    assert 'grp.bad' not in traj.results
    res = traj.f_add_result('ok', 1)
    with pytest.raises(mp.UnsupportedTypeError, match='ok'):
        res.f_set_single('later', object())


# -- pypet 0.7's parameter and result behaviour, as pypet's own unit tests check it -----------
def test_exploring_locks_a_parameter_and_needs_a_default():
    param = mp.Parameter('x', 1)
    param._explore([1, 2, 3])
    assert param.v_locked and param.v_explored           # pypet: exploring locks
    for change in (lambda: param.f_set(4), lambda: param._expand([4]),
                   lambda: param._shrink(), lambda: param._explore([5])):
        with pytest.raises(mp.ParameterLockedError):      # (a TypeError, as pypet's)
            change()
    param.f_unlock()
    param._expand([4])
    assert param.f_get_range() == [1, 2, 3, 4] and param.v_locked
    param.f_unlock()
    with pytest.raises(TypeError, match='explored already'):
        param._explore([5])
    with pytest.raises(ValueError, match='no run index 9'):
        param._set_parameter_access(9)
    param._shrink()
    with pytest.raises(TypeError, match='not explored'):
        param._shrink()
    with pytest.raises(TypeError, match='not explored'):
        param._expand([1])
    with pytest.raises(TypeError, match='no default value'):
        mp.Parameter('empty')._explore([1, 2])
    traj = mp.Trajectory('t')                             # the trajectory unlocks for you
    traj.f_add_parameter('y', 1.0)
    traj.y
    traj.f_explore({'y': [1.0, 2.0]})
    traj.f_expand({'y': [3.0]})
    assert traj.f_get('y').f_get_range() == [1.0, 2.0, 3.0] and traj.f_get('y').v_locked
    traj.f_shrink()
    assert not traj.f_get('y').v_explored


@pytest.mark.parametrize('cls, value, same, other', [
    (mp.Parameter, 1, 2, 'a'),
    (mp.Parameter, (1, 2), (3, 4), (1.0, 2.0)),
    (mp.ArrayParameter, [1, 2], [3], ['a']),
    (mp.PickleParameter, {'a': 1}, {'b': 2}, [1]),
], ids=['int', 'tuple', 'array-list', 'pickle'])
def test_values_of_same_type_and_equal_values(cls, value, same, other):
    param = cls('p', value)
    assert param._values_of_same_type(value, same)
    assert not param._values_of_same_type(value, other)
    assert param._equal_values(value, value) and not param._equal_values(value, same)
    assert not param._equal_values(value, other)
    if cls is not mp.PickleParameter:  # it holds anything
        with pytest.raises(TypeError, match='neither'):
            param._values_of_same_type(object(), object())
        assert not param._values_of_same_type(value, object())


def test_numpy_values_of_same_type_need_the_same_dtype_and_shape():
    np = pytest.importorskip('numpy')
    param = mp.Parameter('a', np.zeros(3))
    assert param._values_of_same_type(np.zeros(3), np.ones(3))
    assert not param._values_of_same_type(np.zeros(3), np.zeros(4))
    assert not param._values_of_same_type(np.zeros(3), np.zeros(3, dtype=int))
    assert param._equal_values(np.arange(3.0), np.arange(3.0))
    empty = mp.ArrayParameter('e', np.array([], dtype=float))   # as pypet's ArrayParameter
    assert empty.f_get().size == 0
    with pytest.raises(mp.UnsupportedTypeError):
        mp.Parameter('e', np.array([], dtype=float))


def test_results_as_pypet_reads_them():
    res = mp.Result('res')
    with pytest.raises(AttributeError, match='res'):
        res.f_get()
    res[0] = 'Hi'
    res[777] = 777
    assert res.res == 'Hi' and res.f_get(0) == 'Hi' and res.res_777 == 777 and res[777] == 777
    assert 0 in res and 777 in res and 9 not in res
    assert 'res' in dir(res) and 'res_777' in dir(res)
    del res[0]
    assert 0 not in res
    long = mp.Result('long', a=1, text='x' * 100)
    assert mp.Result('short', a=1, b='x').f_val_to_str() == "a=1, b='x'"
    text = long.f_val_to_str()
    assert len(text) == 64 and text.startswith("a=1, text='xxx") and text.endswith('...')


# ---------------------------------------------------------------------------------------------
# Reprs and the tree printer
# ---------------------------------------------------------------------------------------------
def test_reprs_show_values(tmp_path):
    env = file_env(tmp_path, name='rep')
    traj = xy_traj(env.v_trajectory)
    assert repr(env).startswith('<Environment environment_')
    assert 'trajectory rep (6 runs), serial, PickleStorageService' in repr(env)
    assert repr(traj.f_get('x')) == '<Parameter parameters.x = 1.0 (explored: 6 values)>'
    assert repr(mp.Parameter('n')) == '<Parameter n (empty)>'
    res = mp.Result('r', 3.5, std=0.25, comment='c')
    assert repr(res) == '<Result r = r=3.5, std=0.25>'
    assert repr(mp.Result('z', 6.0)) == '<Result z = 6.0>'
    assert repr(traj) == ('<Trajectory rep: 6 runs (0 completed), explored: x, y, file %s>'
                          % traj.v_storage_service.filename)
    env.f_run(store_z)
    assert str(traj).startswith('<Trajectory rep: 6 runs (6 completed)')
    assert repr(traj.parameters) == '<ParameterGroup parameters: 2 children>'


@needs_numpy
def test_repr_of_an_array_result_shows_shape_and_dtype():
    res = mp.Result('a', np.zeros((3, 4)), n=2)
    assert repr(res) == '<Result a = a=ndarray float64 (3, 4), n=2>'


def test_tree_printer_and_html(tmp_path, capsys):
    env = file_env(tmp_path, name='tree')
    traj = xy_traj(env.v_trajectory)
    traj.f_add_parameter('road.ncars', 42, comment='cars on the road')
    env.f_run(store_z)
    loaded = mp.load_trajectory(filename=traj.v_storage_service.filename, load_all=2)
    text = loaded.f_tree(max_children=3)
    lines = text.splitlines()
    assert 'parameters/' in lines
    assert '  x = 1.0 (explored: 6 values)  [Parameter]  # first factor' in lines
    assert '    ncars = 42  [Parameter]  # cars on the road' in lines
    assert '      z = 3.0  [Result]' in lines
    assert '    ... 3 more' in lines
    assert not any(line.startswith('config') for line in lines)
    assert 'config/' in loaded.f_tree(config=True, max_depth=1).splitlines()
    assert loaded.f_tree(max_depth=1).splitlines() == ['parameters/', 'derived_parameters/',
                                                       'results/']
    loaded.parameters.f_print_tree()
    assert capsys.readouterr().out.startswith('x = 1.0 (explored: 6 values)')
    page = loaded._repr_html_()
    assert page.startswith('<p><b>&lt;Trajectory tree: 6 runs (6 completed)')
    assert '<pre>parameters/\n  x = 1.0' in page
    assert '<th>x</th><th>y</th>' in page and '<td>10.0</td>' in page


# -- the command line -------------------------------------------------------------------------


# =============================================================================================
# Trajectory
# =============================================================================================


def _state_writes(cls_node):
    """(function, attribute) of every write to the instance's own dict in a class:
    `self._x = ...`, `self.__dict__['_x'] = ...` and `d['_x'] = ...` after
    `d = self.__dict__`."""
    import ast
    for func in cls_node.body:
        if not isinstance(func, ast.FunctionDef):
            continue
        aliases = {sub.targets[0].id for sub in ast.walk(func)
                   if isinstance(sub, ast.Assign) and len(sub.targets) == 1 and
                   isinstance(sub.targets[0], ast.Name) and
                   ast.dump(sub.value) == ast.dump(ast.parse('self.__dict__').body[0].value)}
        for sub in ast.walk(func):
            targets = sub.targets if isinstance(sub, ast.Assign) else \
                [sub.target] if isinstance(sub, ast.AugAssign) else []
            for target in targets:
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                            and t.value.id == 'self':
                        yield func.name, t.attr
                    elif isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant):
                        owner = t.value
                        if isinstance(owner, ast.Name) and owner.id in aliases or \
                                ast.unparse(owner) == 'self.__dict__':
                            yield func.name, t.slice.value


@pytest.mark.skipif(sys.version_info < (3, 9), reason='ast.unparse')
def test_each_part_of_a_trajectorys_state_has_one_writer():
    """Trajectory is cut into parts (mixins): each attribute of its state is written by
    the part that owns it (Trajectory._STATE_OWNERS); the others call its methods."""
    import ast
    owners = mp.Trajectory._STATE_OWNERS
    owner_of = {attr: cls for cls, attrs in owners.items() for attr in attrs}
    with open(mp.__file__) as f:
        module = ast.parse(f.read())
    strays = ['%s.%s writes %s (its owner: %s)' % (cls.name, func, attr, owner_of[attr])
              for cls in module.body if isinstance(cls, ast.ClassDef) and cls.name in owners
              for func, attr in _state_writes(cls)
              if attr in owner_of and owner_of[attr] != cls.name and
              func not in mp.Trajectory._RESTORES]
    assert not strays, strays
    traj = mp.Trajectory('t', filename=None)
    state = set(vars(traj)) - set(vars(mp.NNGroupNode('g')))
    assert state <= set(owner_of), sorted(state - set(owner_of))


# ---------------------------------------------------------------------------------------------
# Exploration
# ---------------------------------------------------------------------------------------------
def test_explore_ranges_of_unequal_length_give_a_configuration_error():
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 1.0)
    traj.f_add_parameter('y', 1)
    with pytest.raises(mp.ConfigurationError) as info:
        traj.f_explore({'x': [1.0, 2.0], 'y': [1, 2, 3]})
    message = str(info.value)
    assert 'parameters.x' in message and 'parameters.y' in message
    assert '2' in message and '3' in message and 'cartesian_product' in message
    assert len(traj) == 1 and not traj.f_get('x').v_explored


def test_explore_something_that_is_not_a_parameter():
    traj = mp.Trajectory('t')
    traj.f_add_result('r', 1)
    traj.f_add_derived_parameter('d', 1)
    for name in ('r', 'd'):
        with pytest.raises(mp.ConfigurationError, match=name) as info:
            traj.f_explore({name: [1, 2]})
        assert 'f_add_parameter' in str(info.value)
    with pytest.raises(mp.NoSuchNodeError, match='nothing'):
        traj.f_explore({'nothing': [1, 2]})


def test_explore_values_of_the_wrong_type():
    traj = mp.Trajectory('t')
    x = traj.f_add_parameter('x', 1.0)
    traj.f_add_parameter('n', 1)
    with pytest.raises(mp.UnsupportedTypeError) as info:
        traj.f_explore({'x': [1.0, 2.0], 'n': [1, 'two']})
    message = str(info.value)
    assert 'parameters.n' in message and "'two'" in message and 'str' in message
    assert not x.v_explored and len(traj) == 1     # nothing half-explored
    with pytest.raises(mp.UnsupportedTypeError, match='float'):
        traj.f_explore({'n': [1.5, 2.5]})
    traj.f_explore({'x': [1, 2]})                  # ints are fine for a float parameter
    assert x.f_get_range() == [1.0, 2.0] and type(x.f_get_range()[0]) is float


@pytest.mark.parametrize('bad', [{}, {'x': 3.0}, {'x': 'abc'}, [('x', [1.0])]],
                         ids=['empty', 'scalar', 'string', 'not-a-dict'])
def test_explore_needs_a_dict_of_iterables(bad):
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 1.0)
    with pytest.raises(mp.ConfigurationError):
        traj.f_explore(bad)


def test_cartesian_product_last_key_varies_fastest():
    assert mp.cartesian_product({'x': [1, 2], 'y': ['a', 'b', 'c']}) == {
        'x': [1, 1, 1, 2, 2, 2], 'y': ['a', 'b', 'c', 'a', 'b', 'c']}
    assert mp.cartesian_product({'y': ['a', 'b'], 'x': [1, 2]}) == {
        'y': ['a', 'a', 'b', 'b'], 'x': [1, 2, 1, 2]}


def test_cartesian_product_zips_a_tuple_of_keys():
    expected = {'x': [1, 1, 2, 2], 'y': [3, 3, 4, 4], 'z': [7, 8, 7, 8]}
    assert mp.cartesian_product({'x': [1, 2], 'y': [3, 4], 'z': [7, 8]},
                                (('x', 'y'), 'z')) == expected
    assert mp.cartesian_product({('x', 'y'): [(1, 3), (2, 4)], 'z': [7, 8]}) == expected
    with pytest.raises(mp.ConfigurationError):
        mp.cartesian_product({'x': [1, 2], 'y': [3]}, (('x', 'y'),))
    if np is not None:  # rows of a 2-d array are pairs as well
        zipped = mp.cartesian_product({('x', 'y'): np.array([[1, 3], [2, 4]]), 'z': [7, 8]})
        assert {k: [int(v) for v in vs] for k, vs in zipped.items()} == expected


def test_cartesian_product_and_run_indices_refuse_plausible_mistakes_clearly():
    with pytest.raises(mp.ConfigurationError, match="'x' needs a list of the values"):
        mp.cartesian_product({'x': 1.0})
    with pytest.raises(mp.ConfigurationError, match="'x' needs a list"):
        mp.cartesian_product({'x': 'abc'})
    with pytest.raises(mp.ConfigurationError, match=r"must each be a tuple of 2.*\(3,\)"):
        mp.cartesian_product({('x', 'y'): [(1, 2), (3,)]})
    traj = mp.Trajectory('t')
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2]})
    for call in (lambda: setattr(traj, 'v_idx', 5), lambda: traj.f_set_crun(5),
                 lambda: traj.f_is_completed(5), lambda: traj.f_get_run_information(5),
                 lambda: list(traj.f_iter_runs(stop=5)), lambda: traj.f_set_crun('run_00000007')):
        with pytest.raises(mp.ConfigurationError, match='out of range.*2 runs: 0 to 1'):
            call()  # (a ConfigurationError is a ValueError too, as before)
    with pytest.raises(mp.ConfigurationError, match='not a run name'):
        traj.f_set_crun('first')
    with pytest.raises(mp.ConfigurationError, match='needs the name'):
        traj.f_get_from_runs(0)


def test_f_expand_adds_runs_and_only_those_run_next():
    env = lazy_env()
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter('y', 1)
    traj.f_explore({'x': [1, 2], 'y': [10, 20]})
    assert env.f_run(lambda t: t.x + t.y) == [(0, 11), (1, 22)]
    with pytest.raises(mp.PypetError, match='f_expand'):
        traj.f_explore({'x': [5], 'y': [5]})
    with pytest.raises(mp.ConfigurationError, match='parameters.y'):
        traj.f_expand({'x': [3]})
    traj.f_expand({'x': [3], 'y': [30]})
    assert len(traj) == 3 and traj.f_get('x').f_get_range() == [1, 2, 3]
    assert not traj.f_is_completed(2)
    assert env.f_run(lambda t: t.x + t.y) == [(2, 33)]
    assert traj.f_is_completed()


def test_an_explored_parameter_is_removable_until_the_trajectory_is_stored():
    traj = mp.Trajectory('t')                      # as pypet: the runs go with the last one
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter('y', 1)
    traj.f_explore({'x': [1, 2, 3], 'y': [4, 5, 6]})
    traj.parameters.f_remove_child('x')
    assert len(traj) == 3 and list(traj.f_get_explored_parameters()) == ['parameters.y']
    traj.parameters.f_remove_child('y')
    assert len(traj) == 1 and not traj.f_get_explored_parameters()


def test_f_copy_copies_the_tree_and_can_leave_the_links_out():
    traj = mp.Trajectory('t')
    x = traj.f_add_parameter('g.x', 1)
    traj.par.g.f_add_link('lx', x)
    twin = traj.f_copy()
    assert twin.f_get('x') is not x and twin.f_get('g.lx') is twin.f_get('x')
    bare = traj.f_copy(with_links=False)
    assert bare.par.g.f_links() == 0 and traj.par.g.f_links() == 1
    with pytest.raises(mp.NoSuchNodeError, match="no link 'nope'; it has"):
        bare.par.g.f_remove_link('nope')
    with pytest.raises(ValueError, match='copy_leaves=True'):
        traj.f_copy(copy_leaves=False)


def test_presetting_an_existing_node_and_importing_a_non_class_say_which_builtin():
    traj = mp.Trajectory('t')
    traj.f_add_config('c', 0)
    with pytest.raises(mp.PresettingError, match='config.c exists already'):
        traj.f_preset_config('c', 1)
    with pytest.raises(TypeError, match='int 44'):      # pypet: a TypeError
        traj.f_add_to_dynamic_imports(44)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
def test_len_v_idx_v_crun_f_set_crun_and_f_restore_default():
    traj = xy_traj(mp.Trajectory('t'))
    assert len(mp.Trajectory('fresh')) == 1
    assert len(traj) == 6
    assert traj.v_idx == -1 and traj.v_crun is None
    traj.f_set_crun(4)
    assert (traj.v_idx, traj.v_crun, traj.x, traj.y) == (4, 'run_00000004', 2.0, 4.0)
    traj.f_set_crun('run_00000002')
    assert (traj.v_idx, traj.x, traj.y) == (2, 1.0, 5.0)
    traj.v_idx = 5
    assert (traj.v_crun, traj.x, traj.y) == ('run_00000005', 2.0, 5.0)
    traj.f_restore_default()
    assert traj.v_idx == -1 and traj.v_crun is None and (traj.x, traj.y) == (1.0, 1.0)
    with pytest.raises(ValueError):
        traj.f_set_crun(6)
    with pytest.raises(ValueError):
        traj.f_set_crun('nonsense')


def test_f_iter_runs_and_f_get_run_names():
    traj = xy_traj(mp.Trajectory('t'))
    names = ['run_%08d' % i for i in range(6)]
    assert traj.f_get_run_names() == names
    assert list(traj.f_iter_runs()) == names
    seen = [(idx, traj.x, traj.y) for idx in traj.f_iter_runs(yields='idx')]
    assert seen == [(0, 1.0, 3.0), (1, 1.0, 4.0), (2, 1.0, 5.0), (3, 2.0, 3.0),
                    (4, 2.0, 4.0), (5, 2.0, 5.0)]
    assert traj.v_idx == -1                        # reset afterwards
    assert [t.v_idx for t in traj.f_iter_runs(start=1, stop=5, step=2, yields='self')] == [1, 3]


RUN_INFO_KEYS = {'idx', 'name', 'time', 'timestamp', 'finish_timestamp', 'runtime',
                 'completed', 'parameter_summary', 'short_environment_hexsha'}


def test_run_information_and_f_is_completed():
    env = lazy_env()
    traj = xy_traj(env.v_trajectory)
    before = traj.f_get_run_information(3)
    assert RUN_INFO_KEYS <= set(before) and before['completed'] == 0
    assert not traj.f_is_completed() and not traj.f_is_completed(3)
    env.f_run(multiply)
    info = traj.f_get_run_information('run_00000003')
    assert RUN_INFO_KEYS <= set(info)
    assert info['idx'] == 3 and info['name'] == 'run_00000003' and info['completed'] == 1
    assert re.fullmatch(CORE_TIME_RE, info['time'])
    assert info['timestamp'] <= info['finish_timestamp']
    assert re.fullmatch(r'\d+:\d\d:\d\d(\.\d+)?', info['runtime'])
    assert 'x: 2.0' in info['parameter_summary'] and 'y: 3.0' in info['parameter_summary']
    assert info['short_environment_hexsha'] == env.v_hexsha[:7]
    assert traj.f_is_completed() and traj.f_is_completed(0) and traj.f_is_completed('run_00000005')
    everything = traj.f_get_run_information()
    assert list(everything) == traj.f_get_run_names()


def test_inside_a_run_results_go_below_results_runs_run_x():
    env = lazy_env()
    traj = xy_traj(env.v_trajectory)

    def job(traj):
        res = traj.f_add_result('z', traj.x * traj.y)
        der = traj.f_add_derived_parameter('d', traj.x + 1)
        pinned = traj.f_add_result('mygroup.$.w', 1)
        return res.v_full_name, der.v_full_name, pinned.v_full_name

    results = env.f_run(job)
    assert results[1][1] == ('results.runs.run_00000001.z',
                             'derived_parameters.runs.run_00000001.d',
                             'results.mygroup.run_00000001.w')
    node = traj.f_get('results.runs.run_00000001.z')
    # the seed's spelling resolves to the same node
    assert traj.f_get('results.run_00000001.z') is node
    assert traj['results.run_00000001.z'] == 4.0
    assert traj.f_get('derived_parameters.run_00000001.d') is \
        traj.f_get('derived_parameters.runs.run_00000001.d')
    assert traj.results.run_00000001.z == 4.0


def test_run_wildcards():
    env = lazy_env()
    traj = xy_traj(env.v_trajectory)
    traj.f_add_result('$.before', 0)               # before the runs, $ means run_ALL
    # the seed's results.run_X spelling and pypet's results.runs.run_X are the same node
    assert traj.f_get('results.run_ALL.before').v_full_name == 'results.runs.run_ALL.before'
    assert traj.f_get('results.crun.before').v_full_name == 'results.runs.run_ALL.before'
    env.f_run(multiply)
    assert traj.results.runs.r_4.z == 8.0
    assert traj.results.runs.run_4.z == 8.0
    assert traj['results.runs.r_0.z'] == 3.0
    assert traj.results.r_A.before == 0 and traj.results.run_A.before == 0
    traj.v_idx = 2
    assert traj.results.runs.crun.z == 5.0
    assert traj.results.runs['$'].z == 5.0
    assert traj.f_get('results.runs.$.z', fast_access=True) == 5.0
    assert traj.z == 5.0                           # the shortcut only sees the current run
    traj.f_restore_default()


def test_f_get_from_runs_and_f_find_idx():
    env = lazy_env()
    traj = xy_traj(env.v_trajectory)
    env.f_run(multiply)
    by_name = traj.f_get_from_runs('z', fast_access=True)
    assert list(by_name.items()) == [('run_00000000', 3.0), ('run_00000001', 4.0),
                                     ('run_00000002', 5.0), ('run_00000003', 6.0),
                                     ('run_00000004', 8.0), ('run_00000005', 10.0)]
    nodes = traj.f_get_from_runs('z', use_indices=True)
    assert list(nodes) == list(range(6)) and isinstance(nodes[0], mp.Result)
    assert list(traj.f_find_idx(['x', 'y'], lambda x, y: x == 2.0 and y > 3.0)) == [4, 5]
    assert list(traj.f_find_idx('y', lambda y: y == 3.0)) == [0, 3]


# ---------------------------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------------------------
def make_part(folder, backend, name, xs, trials=None, comment=None):
    env = mp.Environment(name, add_time=False, storage_service=backend, log_config=None,
                         filename=os.path.join(str(folder), name + PROV_SUFFIX[backend]),
                         report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_add_parameter('trial', 0)
    explore = {'x': xs}
    if trials is not None:
        explore['trial'] = trials
    traj.f_explore(explore)
    if comment:
        traj.f_add_result('info', name, comment=comment)

    def job(t):
        t.f_add_result('z', t.x * 10 + t.trial, comment='z of %s' % name)
        return t.x
    env.f_run(job)
    return traj, env


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_two_with_overlapping_points(tmp_path, backend):
    a, env_a = make_part(tmp_path, backend, 'part_a', [0, 1, 2])
    b, env_b = make_part(tmp_path, backend, 'part_b', [1, 2, 3], comment='kept from b')
    merged = a.f_merge(b, remove_duplicates=True, backup=False)
    assert merged is a and len(a) == 4
    assert a.f_get('x').f_get_range() == [0, 1, 2, 3]
    loaded = mp.load_trajectory(name='part_a', filename=str(tmp_path / ('part_a' +
                                                                         PROV_SUFFIX[backend])),
                                load_all=2)
    assert len(loaded) == 4 and loaded.f_is_completed()
    assert dict(loaded.f_get_from_runs('z', fast_access=True, use_indices=True)) == \
        {0: 0, 1: 10, 2: 20, 3: 30}
    assert loaded.f_get('results.runs.run_00000000.z').v_comment == 'z of part_a'
    assert loaded.f_get('results.info').v_comment == 'kept from b'
    envs = loaded.f_get('config.environment').f_get_children()
    assert set(envs) == {env_a.v_name, env_b.v_name}
    assert [r['x'] for r in mp.runs_table(loaded)] == [0, 1, 2, 3]
    # b is untouched without move_data / delete_other_trajectory
    assert len(mp.runs_table(str(tmp_path / ('part_b' + PROV_SUFFIX[backend])))) == 3
    # The merged run (index 3) comes from b, and so must its comment: b's file holds it only
    # on b's run 0 (purge_duplicate_comments), which was a duplicate and was left out.
    assert loaded.f_get('results.runs.run_00000003.z').v_comment == 'z of part_b'


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_of_a_trajectory_whose_file_gained_runs_since_it_was_loaded_is_refused(
        tmp_path, backend):
    # (another process's sweep adds runs: merged, they would lack their parameters)
    a, _ = make_part(tmp_path, backend, 'part_a', [0, 1])
    b, _ = make_part(tmp_path, backend, 'part_b', [5, 6])
    filename = str(tmp_path / ('part_b' + PROV_SUFFIX[backend]))
    stale = mp.load_trajectory(name='part_b', filename=filename, load_all=1)
    env = mp.Environment(trajectory=mp.load_trajectory(name='part_b', filename=filename),
                         log_config=None, report_progress=False)
    env.v_trajectory.f_expand({'x': [7, 8]})
    env.f_run(lambda t: t.f_add_result('z', t.x * 10 + t.trial))
    target = str(tmp_path / ('part_a' + PROV_SUFFIX[backend]))
    before = os.path.getmtime(target)
    with pytest.raises(mp.PypetError, match='holds 4 runs now, 2 when it was loaded'):
        a.f_merge(stale, backup=False)
    assert os.path.getmtime(target) == before and len(mp.runs_table(target)) == 2
    a.f_merge(mp.load_trajectory(name='part_b', filename=filename, load_all=1), backup=False)
    assert [r['x'] for r in mp.runs_table(target)] == [0, 1, 5, 6, 7, 8]


def make_y_part(folder, backend, name, y):
    env = mp.Environment(name, add_time=False, storage_service=backend, log_config=None,
                         filename=os.path.join(str(folder), name + PROV_SUFFIX[backend]),
                         report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_add_parameter('y', y)                     # the same name, not explored, set apart
    traj.f_explore({'x': [1, 2]})
    env.f_run(multiply)
    return traj


@pytest.mark.parametrize('remove_duplicates', [False, True])
@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_explores_a_parameter_the_two_set_differently(tmp_path, backend,
                                                            remove_duplicates):
    # (as pypet: each merged run keeps the y it ran with; before, the runs of the other
    # claimed this one's y, and remove_duplicates dropped them as duplicates)
    a = make_y_part(tmp_path, backend, 'ya', 10)
    b = make_y_part(tmp_path, backend, 'yb', 20)
    a.f_merge(b, remove_duplicates=remove_duplicates, backup=False)
    loaded = mp.load_trajectory(name='ya', filename=str(tmp_path / ('ya' + PROV_SUFFIX[backend])),
                                load_all=2)
    rows = [(r['x'], r['y'], r['z']) for r in mp.runs_table(loaded)]
    assert rows == [(1, 10, 10), (2, 10, 20), (1, 20, 20), (2, 20, 40)]
    assert loaded.f_get('y').f_get_range() == [10, 10, 20, 20]


@needs_numpy
def test_points_of_big_arrays_are_compared_whole():
    # (repr() abbreviates arrays of over 1,000 items: two arrays differing in the middle
    # were one point, and merging with remove_duplicates dropped the other's run)
    a, b = np.zeros(2000), np.zeros(2000)
    b[1000] = 1.0
    traj = mp.Trajectory('t')
    traj.f_add_parameter(mp.ArrayParameter, 'init', np.zeros(2000))
    traj.f_explore({'init': [a, b, a.copy()]})
    assert [idx for _, idx in mp.find_unique_points([traj.f_get('init')])] == [[0, 2], [1]]


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_without_remove_duplicates_keeps_every_run(tmp_path, backend):
    a, _ = make_part(tmp_path, backend, 'dup_a', [0, 1])
    b, _ = make_part(tmp_path, backend, 'dup_b', [1, 2])
    a.f_merge(b, backup=False, move_data=True)
    rows = mp.runs_table(str(tmp_path / ('dup_a' + PROV_SUFFIX[backend])))
    assert [(r['x'], r['z'], r['completed']) for r in rows] == \
        [(0, 0, 1), (1, 10, 1), (1, 10, 1), (2, 20, 1)]
    with pytest.raises(mp.PypetError):  # move_data: the data lives in dup_a now
        mp.load_trajectory(name='dup_b', filename=str(tmp_path / ('dup_b' + PROV_SUFFIX[backend])))


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_trial_parameter_backup_and_delete_other(tmp_path, backend):
    a, _ = make_part(tmp_path, backend, 'tr_a', [5, 5], trials=[0, 1])
    b, _ = make_part(tmp_path, backend, 'tr_b', [5, 5], trials=[0, 1])
    before = set(os.listdir(str(tmp_path)))
    a.f_merge(b, trial_parameter='trial', remove_duplicates=True, backup=True,
              delete_other_trajectory=True)
    assert a.f_get('trial').f_get_range() == [0, 1, 2, 3]
    rows = mp.runs_table(str(tmp_path / ('tr_a' + PROV_SUFFIX[backend])))
    assert [(r['trial'], r['z']) for r in rows] == [(0, 50), (1, 51), (2, 50), (3, 51)]
    backups = sorted(f for f in set(os.listdir(str(tmp_path))) - before
                     if f.startswith('backup_') and not f.endswith(('.segments', '.journal')))
    # (as pypet's: each trajectory into backup_<name> beside its file)
    assert backups == ['backup_tr_a' + PROV_SUFFIX[backend],
                       'backup_tr_b' + PROV_SUFFIX[backend]]
    assert len(mp.runs_table(str(tmp_path / backups[0]))) == 2, 'the backup is the original'
    with pytest.raises(mp.PypetError):
        mp.load_trajectory(name='tr_b', filename=str(tmp_path / ('tr_b' + PROV_SUFFIX[backend])))


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_five_in_a_folder_with_overlapping_points(tmp_path, backend):
    parts = [[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 4, 5], [5, 6, 0]]
    names = []
    for k, xs in enumerate(parts):
        _, env = make_part(tmp_path, backend, 'job%d' % k, xs)
        names.append(env.v_name)
    merged = mp.merge_all_in_folder(str(tmp_path), ext=PROV_SUFFIX[backend],
                                    remove_duplicates=True, backup=False)
    assert merged.v_name == 'job0' and len(merged) == 7
    filename = str(tmp_path / ('job0' + PROV_SUFFIX[backend]))
    rows = mp.runs_table(filename)
    assert [r['x'] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert [r['z'] for r in rows] == [0, 10, 20, 30, 40, 50, 60]
    assert all(r['completed'] == 1 for r in rows)
    loaded = mp.load_trajectory(name='job0', filename=filename, load_all=2)
    assert set(loaded.f_get('config.environment').f_get_children()) == set(names)
    # the other files are left alone
    assert [len(mp.runs_table(str(tmp_path / ('job%d' % k + PROV_SUFFIX[backend]))))
            for k in range(1, 5)] == [3, 3, 3, 3]
    # the CLI agrees
    out = cli('list', filename)
    assert out.returncode == 0 and re.search(r'job0\s+7\s+7', out.stdout)


def test_merge_backups_are_never_overwritten(tmp_path):
    """Two merges within the same second must not overwrite the first backup: the first
    backup is the only copy of the original file."""
    a, _ = make_part(tmp_path, 'pickle', 'bk_a', [0, 1])
    b, _ = make_part(tmp_path, 'pickle', 'bk_b', [2, 3])
    c, _ = make_part(tmp_path, 'pickle', 'bk_c', [4, 5])
    a.f_merge(b, backup=True)
    a.f_merge(c, backup=True)
    backups = sorted(f for f in os.listdir(str(tmp_path)) if f.startswith('backup_bk_a') and
                     not f.endswith(('.journal', '.segments')))
    sizes = sorted(len(mp.runs_table(str(tmp_path / f))) for f in backups)
    assert sizes == [2, 4], 'backups: %s hold %s runs' % (backups, sizes)


# ---------------------------------------------------------------------------------------------
# Runs: f_add_result of a scalar takes a short path
# ---------------------------------------------------------------------------------------------
def sim_job(traj):
    traj.f_add_result('results.sim.crun.out', traj.x * 1.0)
    traj.f_add_result('results.tag_' + traj.v_crun, 1)  # (the run's name inside a name)


def test_clean_up_removes_what_a_run_added_and_keeps_what_was_there(file_backend,
                                                                      tmp_path):
    """A run's nodes outside the runs group go when it ends (as pypet); a node the user
    put below the run's name before the sweep stays, in memory and in the file."""
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [0, 1, 2]})
    traj.f_add_result('results.sim.run_00000001.init', 5)
    env.f_run(sim_job)
    assert traj.results.sim.run_00000001.init == 5
    assert 'results.sim.run_00000000' not in traj._nodes      # (the run's own: gone)
    loaded = load(filename, index=-1, load_data=2)
    assert loaded.results.sim.run_00000001.init == 5
    assert [loaded.results.sim['run_%08d' % i].out for i in range(3)] == [0.0, 1.0, 2.0]
    assert loaded.results.tag_run_00000002 == 1


class _OwnResult(mp.Result):
    """A user's result class (v_standard_result): f_add_result must still make one."""


def test_add_result_in_a_run_short_path_keeps_behaviour(tmp_path):
    """traj.f_add_result('z', scalar) in a run takes a short path: the leaf is where the
    general path puts it, visible during the run, stored, and v_standard_result and a
    preset still apply."""
    seen = []

    def job(traj):
        traj.f_add_result('z', traj.x * 2.0)
        leaf = traj.f_get('z')
        seen.append((leaf.v_full_name, traj.crun.z == leaf.z == traj.z, leaf.z,
                     type(leaf).__name__))

    path = str(tmp_path / 'f.pkl')
    env = mp.Environment(trajectory='t', filename=path, add_time=False,
                         storage_service=mp.PickleStorageService, log_config=None,
                         report_progress=False, continuable=False)
    traj = env.trajectory
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [1.0, 2.0, 3.0]})
    env.f_run(job)
    assert seen == [('results.runs.run_%08d.z' % i, True, 2.0 * x, 'Result')
                    for i, x in enumerate([1.0, 2.0, 3.0])]
    loaded = mp.load_trajectory(name='t', filename=path, load_results=2,
                                storage_service=mp.PickleStorageService)
    assert loaded.f_get_from_runs('z', fast_access=True) == {
        'run_%08d' % i: 2.0 * x for i, x in enumerate([1.0, 2.0, 3.0])}
    assert loaded.res.runs.run_00000002.z == 6.0
    # the general path's rules still hold where the short path does not apply
    del seen[:]
    traj2 = mp.Trajectory('u')
    traj2.v_standard_result = _OwnResult
    traj2.f_add_parameter('x', 1.0)
    traj2.f_explore({'x': [1.0, 2.0]})
    traj2.f_start_run(0)
    job(traj2)
    assert seen[-1][3] == '_OwnResult'


# ---------------------------------------------------------------------------------------------
# Merging: consecutive merges, backups, ignored data
# ---------------------------------------------------------------------------------------------
def two_in_one_file(filename, backend, points):
    """Trajectories named by `points` ({name: xs}) run into one file; z = x * 10."""
    trajs = []
    for name, xs in points.items():
        env = mp.Environment(name, add_time=False, storage_service=backend,
                             log_config=None, filename=filename, report_progress=False,
                             continuable=False)
        traj = env.v_trajectory
        traj.f_add_parameter('x', 0)
        traj.f_explore({'x': xs})
        env.f_run(lambda t: t.f_add_result('z', t.x * 10))
        trajs.append(traj)
    return trajs


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_backs_up_each_trajectory_beside_its_file(tmp_path, backend):
    """pypet's f_merge(backup=True) (0.7 also takes backup_filename=True) writes
    backup_<name> beside the file for both trajectories, each alone in its backup; a
    later merge's backup of the same trajectory gets a number instead of replacing it."""
    ext = PROV_SUFFIX[backend]
    filename = str(tmp_path / ('both' + ext))
    one, two, three = two_in_one_file(filename, backend,
                                      {'one': [0, 1], 'two': [1, 2], 'three': [5]})
    one.f_merge(two, remove_duplicates=True, backup_filename=True)
    backups = sorted(f for f in os.listdir(str(tmp_path)) if f.startswith('backup_') and
                     f.endswith(ext))
    assert backups == ['backup_one' + ext, 'backup_two' + ext]
    for name, xs in (('one', [0, 1]), ('two', [1, 2])):
        path = str(tmp_path / ('backup_%s%s' % (name, ext)))
        assert [r['x'] for r in mp.runs_table(path)] == xs
        got = mp.load_trajectory(index=-1, filename=path, load_all=2)
        assert got.v_name == name
    assert [r['z'] for r in mp.runs_table(filename, name='one')] == [0, 10, 20]
    one.f_merge(three, backup=True)
    path = str(tmp_path / ('backup_one_2' + ext))
    assert [r['x'] for r in mp.runs_table(path)] == [0, 1, 2]
    assert [r['x'] for r in mp.runs_table(str(tmp_path / ('backup_one' + ext)))] == [0, 1]


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_consecutive_merges_are_written_by_the_next_store_or_load(tmp_path, backend):
    # pypet's consecutive_merge=True: no write per merge (each write copies the file's other
    # trajectories, so merging many into a shared file grew quadratic); f_store writes
    a, _ = make_part(tmp_path, backend, 'part_a', [0, 1])
    others = [make_part(tmp_path, backend, 'part_%d' % x, [x])[0] for x in (2, 3, 4)]
    filename = str(tmp_path / ('part_a' + PROV_SUFFIX[backend]))
    before = open(filename, 'rb').read()
    for other in others[:2]:
        a.f_merge(other, backup=False, consecutive_merge=True)
    assert len(a) == 4 and a.f_get('x').f_get_range() == [0, 1, 2, 3]
    assert open(filename, 'rb').read() == before         # nothing written yet
    a.f_store()
    loaded = mp.load_trajectory(name='part_a', filename=filename, load_all=mp.LOAD_DATA)
    assert loaded.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 0, 1: 10, 2: 20, 3: 30}
    a.f_merge(others[2], backup=False, consecutive_merge=True)
    a.f_load(load_data=mp.LOAD_DATA)                     # a load writes them first
    assert len(a) == 5 and a.f_get_from_runs('z', fast_access=True, use_indices=True)[4] == 40
    assert len(mp.load_trajectory(name='part_4', filename=str(
        tmp_path / ('part_4' + PROV_SUFFIX[backend])))) == 1    # the other: untouched


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_what_reads_the_file_sees_the_consecutive_merges_waiting_in_memory(tmp_path,
                                                                           backend):
    a, _ = make_part(tmp_path, backend, 'part_a', [0, 1])
    b, _ = make_part(tmp_path, backend, 'part_b', [2, 3])
    a.f_merge(b, backup=False, consecutive_merge=True)
    twin = copy.deepcopy(a)               # (a copy does not carry the merge to write it twice)
    with pytest.raises(mp.PypetError, match='no storage service'):
        twin.f_store()
    # a column read, an item load and a backup read the file: they write the merge first
    assert a.f_get_from_runs('z', fast_access=True, auto_load=True, use_indices=True) == {
        0: 0, 1: 10, 2: 20, 3: 30}
    a.f_load_item('results.runs.%s.z' % mp._run_name(3))
    assert a.f_get('results.runs.%s.z' % mp._run_name(3)).z == 30
    assert len(mp.runs_table(a.f_backup(str(tmp_path / ('bk' + PROV_SUFFIX[backend]))))) == 4


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_merge_ignores_ignored_parameters_and_refuses_other_types(tmp_path, backend):
    a, _ = make_part(tmp_path, backend, 'part_a', [0, 1])
    b, _ = make_part(tmp_path, backend, 'part_b', [2])
    b.f_add_parameter('Ignore.Me', 42)
    b.f_store()
    a.f_add_parameter('Denied', 13)
    a.f_store()
    with pytest.raises(TypeError, match='the parameters differ'):   # (pypet's TypeError)
        a.f_merge(b, backup=False)
    b.f_add_parameter('Denied', 13.5)                  # (in memory, as pypet's test)
    with pytest.raises(TypeError, match='Denied is a int here and a float'):
        a.f_merge(b, backup=False, ignore_data=('parameters.Ignore.Me',))
    b.f_get('Denied').f_unlock()
    b.f_get('Denied').f_set(15)
    a.f_merge(b, backup=False, ignore_data=('parameters.Ignore.Me',))
    assert len(a) == 3 and 'Ignore' not in a.parameters
    # a name of ignore_data ignores that node and what is below it, not every name it
    # begins (x_scale is not ignored by 'parameters.x'; review)
    c, _ = make_part(tmp_path, backend, 'part_c', [5])
    c.f_add_parameter('x_scale', 2.5)
    c.f_store()
    d, _ = make_part(tmp_path, backend, 'part_d', [6])
    with pytest.raises(TypeError, match='the parameters differ'):
        c.f_merge(d, backup=False, ignore_data=('parameters.x',))


# ---------------------------------------------------------------------------------------------
# Runs: results held apart from the tree
# ---------------------------------------------------------------------------------------------
def held_job(traj):
    """Adds results the short way (held apart from the tree), reads them every way."""
    leaf = traj.f_add_result('z', traj.x * 2.0)
    traj.f_add_result('w', 1)
    before = traj.res.runs  # (a group taken before a held result is read through it)
    traj.f_add_result('v', 3)
    with pytest.raises(mp.InvalidNameError):
        traj.f_add_result('v', 4)           # a held name is taken
    seen = dict(z=traj.z, get=traj.f_get('z').z, crun=traj.crun.z,
                res=traj.res.runs.crun.z, parent=leaf.f_get_parent().v_name,
                name=leaf.v_full_name, v=before.crun.v,
                leaves=sorted(n.v_name for n in traj.res.runs.crun.f_iter_leaves()))
    traj.f_add_result('u', 5)               # (held again, after the tree was read)
    seen['u'] = traj.f_get('u', fast_access=True)
    traj.f_add_link('results.runs.crun.to_z', traj.f_get('z'))
    copy = pickle.loads(pickle.dumps(traj))
    seen['copy'] = copy.f_get('results.runs.%s.u' % traj.v_crun).u
    return seen


@pytest.mark.timeout(120)
def test_results_held_apart_in_a_run_are_seen_everywhere_and_stored(file_backend,
                                                                       tmp_path):
    """f_add_result('z', 1.5) in a run holds the result apart from the tree until
    something reads the tree: every way of reading finds it, in the run or after."""
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename, name='t')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [1.0, 2.0, 3.0]})
    results = env.f_run(held_job)
    for idx, (i, seen) in enumerate(results):
        x = idx + 1.0
        assert i == idx and seen == dict(
            z=2 * x, get=2 * x, crun=2 * x, res=2 * x, parent=run_name(idx),
            name='results.runs.%s.z' % run_name(idx), v=3, leaves=['v', 'w', 'z'], u=5,
            copy=5)
    assert '_held' not in vars(traj) and isinstance(traj._nodes, dict)
    assert 'results.runs.run_00000000' not in traj._nodes          # (cleaned up)
    loaded = load(filename, name='t', load_results=2)
    assert loaded.f_get_from_runs('z', fast_access=True) == {
        run_name(i): 2.0 * (i + 1) for i in range(3)}
    assert loaded.f_get_from_runs('u', fast_access=True) == {
        run_name(i): 5 for i in range(3)}
    assert loaded.res.runs.run_00000001.to_z == 4.0


def test_results_held_apart_are_kept_where_runs_stay_in_memory():
    """Where the runs stay in memory (LazyStorageService, clean_up_runs=False), the held
    results are put into the tree when the run ends."""
    env = lazy_env('t', report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [1.0, 2.0]})
    env.f_run(lambda traj: traj.f_add_result('z', traj.x) and None)
    assert traj.res.runs.run_00000001.z == 2.0
    assert traj.f_get_from_runs('z', fast_access=True) == {run_name(0): 1.0,
                                                           run_name(1): 2.0}
    assert 'run_00000000' in traj.f_tree()


@pytest.mark.timeout(120)
def test_a_run_that_fails_after_holding_results_leaves_the_tree_whole(tmp_path):
    """A job that raises after adding results the short way: the failed run is stored
    with them, the trajectory's tree is whole, and a second sweep stores the rest."""
    def job(traj):
        traj.f_add_result('z', traj.x)
        if traj.x == 1.0:
            raise ValueError('boom')

    env = file_env(tmp_path, 't', report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match='boom'):
        env.f_run(job)
    assert '_held' not in vars(traj) and '_hidden' not in vars(traj)
    assert isinstance(traj._nodes, dict) and 'results' in traj._children
    assert isinstance(traj.results._children, dict)
    assert traj.x == 0.0                                            # (default again)
    loaded = mp.load_trajectory(name='t', filename=str(tmp_path / 't.pkl'),
                                load_results=2, storage_service=mp.PickleStorageService)
    assert loaded.f_get_from_runs('z', fast_access=True) == {run_name(0): 0.0,
                                                             run_name(1): 1.0}
    assert list(loaded._runs.completed[:2]) == [1, 0]


def peeking_job(traj):
    """Adds a held result, then reads another run's value (pypet allows v_idx in a run),
    pickles the leaf it added and lists every z."""
    here = traj.v_idx
    leaf = traj.f_add_result('z', traj.x * 10)
    names = [n.v_full_name for n in traj.f_get_all('z')]
    copy.deepcopy(leaf)
    traj.v_idx = 0
    first = traj.parameters.x
    traj.v_idx = here
    return first, names


class ScaledParameter(mp.Parameter):
    """A user's parameter class that does more when a run's value is set."""

    def _set_parameter_access(self, idx):
        super()._set_parameter_access(idx)
        self.__dict__['_data'] = self.__dict__['_data'] * 100


@pytest.mark.parametrize('clean_up_runs', [True, False])
def test_held_results_go_to_their_own_run_whatever_the_job_reads(tmp_path, clean_up_runs):
    """(review) A held result is placed into the run that added it, also when the job set
    another run first; a held leaf pickles; f_get_all finds it."""
    backend = 'hdf5' if tables is not None else 'pickle'
    filename = path_for(backend, tmp_path)
    env = mp.Environment('t', add_time=False, log_config=None, report_progress=False,
                         filename=filename, clean_up_runs=clean_up_runs,
                         storage_service=backend)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter(ScaledParameter, 'y', 1)
    traj.f_explore({'x': [1, 2, 3], 'y': [1, 2, 3]})
    results = env.f_run(peeking_job)
    assert [r for _, r in results] == [  # (runs kept in memory: the earlier ones' too)
        (1, ['results.runs.%s.z' % mp._run_name(j)
             for j in ([i] if clean_up_runs else range(i + 1))]) for i in range(3)]
    got = mp.load_trajectory(name='t', filename=filename, load_all=mp.LOAD_DATA)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 10, 1: 20, 2: 30}
    traj.f_set_crun(1)
    assert traj.y == 200  # (the class's own _set_parameter_access runs)


def test_a_manual_run_holds_results_and_finalize_stores_them(tmp_path):
    """f_start_run / f_finalize_run (pypet's manual runs) hold results too."""
    traj = mp.Trajectory('t', filename=str(tmp_path / 't.pkl'),
                         storage_service=mp.PickleStorageService)
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [1.0, 2.0]})
    traj.f_store()
    for idx in range(2):
        traj.f_start_run(idx)
        traj.f_add_result('z', 10.0 * (idx + 1))   # (the first run learns the name)
        traj.f_add_result('q', 1)
        traj.f_finalize_run()
        assert '_held' not in vars(traj)
    loaded = mp.load_trajectory(name='t', filename=str(tmp_path / 't.pkl'),
                                load_results=2, storage_service=mp.PickleStorageService)
    assert loaded.f_get_from_runs('z', fast_access=True) == {run_name(0): 10.0,
                                                             run_name(1): 20.0}
    assert loaded.f_get_from_runs('q', fast_access=True) == {run_name(0): 1,
                                                             run_name(1): 1}


# =============================================================================================
# Storage services
# =============================================================================================
# One contract over every registered backend (STORAGE_SERVICES); real files, real
# PyTables. The HDF5 parts skip without PyTables, the numpy parts without numpy.


# ---------------------------------------------------------------------------------------------
# Round trips of every supported type
# ---------------------------------------------------------------------------------------------
def test_roundtrip_trajectory_level_results_and_parameters(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    traj = mp.Trajectory('traj', storage_service=service(backend, filename))
    values = all_values()
    traj.f_add_result('multi', comment='every type in one result', **values)
    for key, value in values.items():
        traj.f_add_result('single.' + key, value)
    params = {'pb': True, 'pi': 2 ** 40, 'pbig': 2 ** 90, 'pf': float('inf'), 'pc': 1j,
              'ps': '\u00e9t\u00e9', 'pbytes': b'\x00\x01', 'plist': [1, 2, 3],
              'ptup': ('a', 'b')}
    if np is not None:
        params.update(pnp=np.arange(4, dtype=np.int16), pscalar=np.float32(2.5))
    for key, value in params.items():
        traj.f_add_parameter(key, value)
    traj.f_add_parameter(mp.PickleParameter, 'ppickle', StoragePoint(1, [2, {3}]))
    traj.f_add_result(mp.PickleResult, 'pres', point=StoragePoint('a', None), fn=len,
                      comment='pickled things')
    traj.f_store()
    if backend == 'lazy':
        check_loaded_values(traj, 'results')
        with pytest.raises(mp.DataNotInStorageError):
            mp.Trajectory('traj', storage_service=mp.LazyStorageService()).f_load(load_data=2)
        return
    new = load(filename, name='traj', load_data=2)
    check_loaded_values(new, 'results')
    for key, value in params.items():
        assert_same(new.f_get('parameters.' + key).f_get(), value, key)
    assert new.f_get('parameters.ppickle').f_get() == StoragePoint(1, [2, {3}])
    assert new.f_get('results.pres').point == StoragePoint('a', None)
    assert new.f_get('results.pres').fn is len
    assert new.f_get('results.pres').v_comment == 'pickled things'
    assert isinstance(new.f_get('results.pres'), mp.PickleResult)
    assert isinstance(new.f_get('parameters.ppickle'), mp.PickleParameter)


RUN_VALUES = list(PLAIN.values())


def run_values():
    values = list(RUN_VALUES)
    if np is not None:
        values += list(numpy_values().values())
        values += [np.arange(3.0), np.arange(4.0), np.arange(6).reshape(2, 3)]  # ragged
    return values


def varying_job(traj):
    idx = traj.v_idx
    value = run_values()[idx]
    traj.f_add_result('mixed', value, comment='varies in type')
    traj.f_add_result('same', float(idx), comment='always a float')
    if idx % 2:
        traj.f_add_result('sometimes', odd=idx)
    else:
        traj.f_add_result('sometimes', even=str(idx), also=[idx])
    if idx % 3 == 0:
        traj.f_add_result(mp.PickleResult, 'kind', StoragePoint(idx, 'p'))
    else:
        traj.f_add_result('kind', idx)
    traj.f_add_derived_parameter('dp', value if type(value) in (int, float, str) else idx)


def test_roundtrip_per_run_results_varying_in_type(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    n = len(run_values())
    env, traj = sweep(backend, filename, varying_job, n=n)
    if backend == 'lazy':
        got = traj
    else:
        got = load(filename, name='traj', load_data=2)
    assert got.f_is_completed()
    for idx, want in enumerate(run_values()):
        rn = 'results.runs.' + run_name(idx)
        assert_same(got.f_get(rn + '.mixed').f_get(), want, '%s.mixed' % rn)
        assert got.f_get(rn + '.mixed').v_comment in ('varies in type', '')
        assert_same(got.f_get(rn + '.same').f_get(), float(idx), rn + '.same')
        sometimes = got.f_get(rn + '.sometimes').f_to_dict()
        assert sometimes == ({'odd': idx} if idx % 2 else {'even': str(idx), 'also': [idx]})
        kind = got.f_get(rn + '.kind')
        if idx % 3 == 0:
            assert isinstance(kind, mp.PickleResult) and kind.f_get() == StoragePoint(idx, 'p')
        else:
            assert type(kind) is mp.Result and kind.f_get() == idx
    assert got.f_get('results.runs.%s.mixed' % run_name(0)).v_comment == 'varies in type'


def named_like_runs_job(traj):
    traj.f_add_result('z.$', traj.x)           # pypet's wildcard as the leaf's own name
    traj.f_add_result('w', traj.x * 2)


def test_names_that_only_look_like_run_groups_are_plain_nodes(backend, tmp_path):
    # run_12 has too few digits, run_000000123 too many: neither is a run's group; and a
    # leaf named like a run is a leaf of its own, not one run's row of a column
    filename = path_for(backend, tmp_path)
    env = make_env(backend, filename)
    traj = env.v_trajectory
    traj.f_add_result('runs.run_12', 5, comment='short')
    traj.f_add_result('runs.run_000000123.z', 6)
    traj.f_add_result('runs.run_12x', 7)
    traj.f_add_result('ckpt.run_00000001', 8, comment='a checkpoint')
    traj.f_add_parameter('grid.run_00000002', 9)
    traj.f_add_derived_parameter('other.run_00000003', 10)
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2]})
    env.f_run(named_like_runs_job)
    got = traj if backend == 'lazy' else load(filename, name='traj', load_data=2)
    assert got.f_get('results.runs.run_12').f_get() == 5
    assert got.f_get('results.runs.run_12').v_comment == 'short'
    assert got.f_get('results.runs.run_000000123.z').f_get() == 6
    assert got.f_get('results.runs.run_12x').f_get() == 7
    assert got.f_get('results.ckpt.run_00000001').f_get() == 8
    assert got.f_get('results.ckpt.run_00000001').v_comment == 'a checkpoint'
    assert got.f_get('parameters.grid.run_00000002').f_get() == 9
    assert got.f_get('derived_parameters.other.run_00000003').f_get() == 10
    assert [got.f_get('results.z.' + run_name(i)).f_get() for i in range(2)] == [1, 2]
    assert got.f_get_from_runs('w', fast_access=True) == {run_name(0): 2, run_name(1): 4}


def zero_d_job(traj):
    traj.f_add_result('z', np.asarray(traj.x * 0.5))  # one 0-d array per run
    traj.f_add_result('i', np.int32(traj.x))


@needs_numpy
def test_zero_d_arrays_per_run_and_in_a_range_stay_arrays(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    env = make_env(backend, filename)
    traj = env.v_trajectory
    traj.f_add_parameter('x', np.array(0))
    traj.f_explore({'x': [np.array(1), np.array(2), np.array(3)]})
    env.f_run(zero_d_job)
    got = traj if backend == 'lazy' else load(filename, name='traj', load_data=2)
    for idx in range(3):
        assert_same(got.f_get('results.runs.%s.z' % run_name(idx)).f_get(),
                    np.asarray((idx + 1) * 0.5), 'z')
        assert_same(got.f_get('results.runs.%s.i' % run_name(idx)).f_get(),
                    np.int32(idx + 1), 'i')
    for idx, value in enumerate(got.f_get('parameters.x').f_get_range()):
        assert_same(value, np.array(idx + 1), 'x range')


def text_and_big_int_job(traj):
    traj.f_add_result('name', traj.label + '.dat', comment='from the run')
    traj.f_add_result('seed', traj.seed)


def test_a_sweep_over_undecodable_text_and_seeds_beyond_64_bits(file_backend, tmp_path):
    # (os.fsdecode of a non-UTF-8 file name holds a lone surrogate; SeedSequence entropy is
    # a 128-bit int: both broke the HDF5 write at the end of the sweep, and every later one)
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename)
    traj = env.v_trajectory
    labels, seeds = ['caf\udce9', 'plain'], [2 ** 127 + 5, -(2 ** 70)]
    traj.f_add_parameter('label', 'x')
    traj.f_add_parameter('seed', 0)
    traj.f_add_config('folder', 'd\udcff')
    traj.f_add_result('listing', ['caf\udce9.dat', 'b'])
    traj.f_explore({'label': labels, 'seed': seeds})
    env.f_run(text_and_big_int_job)
    got = load(filename, name='traj', load_data=2)
    assert got.f_get_from_runs('name', fast_access=True) == {
        run_name(0): 'caf\udce9.dat', run_name(1): 'plain.dat'}
    assert got.f_get_from_runs('seed', fast_access=True) == {
        run_name(0): seeds[0], run_name(1): seeds[1]}
    assert got.f_get('parameters.label').f_get_range() == labels
    assert got.f_get('config.folder').f_get() == 'd\udcff'
    assert got.f_get('results.listing').f_get() == ['caf\udce9.dat', 'b']
    other = mp.Trajectory('other', storage_service=service(file_backend, filename))
    other.f_add_result('a', 1)
    other.f_store()                                  # the file takes more, as before
    assert load(filename, name='other', load_data=2).f_get('results.a').f_get() == 1
    if file_backend == 'hdf5':
        with tables.open_file(filename) as h:        # overview rows: the values' text
            rows = h.get_node('/traj/overview/explored_parameters_runs').read()
            assert rows['seed'].tolist() == [str(v).encode() for v in seeds]
            assert rows['label'].tolist() == [b'caf\\udce9', b'plain']


def shape_job_v1(traj):
    traj.f_add_result('z', traj.x)
    if traj.v_idx == 1:
        raise ValueError('run 1 fails after adding z')


def shape_job_v2(traj):
    traj.f_add_result('z.mean', traj.x * 10)


def test_a_node_that_changed_from_leaf_to_group_between_stores(file_backend, tmp_path, caplog):
    # Stored, then changed in memory and stored again: the newest store's shape wins (a node
    # cannot be both; 0.2.0 kept both and the file did not load)
    filename = path_for(file_backend, tmp_path)
    mp._SAID.clear()  # (said once a process: the other backend's case said it already)
    env = make_env(file_backend, filename, record_failed_runs=True)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2]})
    traj.f_add_result('summary.mean', 1.0)
    traj.f_add_result('spread', 2.0)
    env.f_run(shape_job_v1)            # run 1 fails, and keeps its z
    env.f_run(shape_job_v2)            # the fixed job runs run 1 again: z is a group now
    traj.f_get('results').f_remove_child('summary', recursive=True)
    traj.f_add_result('summary', 3.0)
    traj.f_get('results').f_remove_child('spread')
    traj.f_add_result('spread.sd', 4.0)
    traj.f_store()
    assert 'the group results.summary stored before is dropped' in caplog.text
    assert 'the leaf results.spread stored before is dropped' in caplog.text
    # (run 1's z of the failed attempt was deleted before the retry: no conflict to warn of)
    assert 'results.runs.run_00000001.z stored before is dropped' not in caplog.text
    got = load(filename, name='traj', load_data=2)
    assert got.f_get('results.summary').f_get() == 3.0
    assert got.f_get('results.spread.sd').f_get() == 4.0
    assert got.f_get('results.runs.%s.z' % run_name(0)).f_get() == 1
    assert got.f_get('results.runs.%s.z.mean' % run_name(1)).f_get() == 20
    assert got.f_is_completed()
    traj.f_add_result('items.a', 1)                  # the same, item by item
    traj.f_store_item('items.a')
    traj.f_get('results').f_remove_child('items', recursive=True)
    traj.f_add_result('items', 2)
    traj.f_store_item('items')
    got = load(filename, name='traj', load_data=2)
    assert got.f_get('results.items').f_get() == 2 and 'items.a' not in got.results


@needs_tables
def test_a_file_of_0_2_0_with_a_leaf_and_nodes_below_it_loads(fixture_file, caplog):
    """minipypet 0.2.0 stored every shape change as it came, and could not load such a file
    (made by testdata/make_shape_fixture.py): what cannot go below a leaf is left out."""
    traj = load(fixture_file('minipypet_0.2.0_shape.hdf5'), name='shape', load_data=2)
    assert traj.f_get('results.summary').f_get() == 1.0
    assert traj.f_get_from_runs('z', fast_access=True) == {run_name(0): 1, run_name(1): 2}
    assert traj.f_get('parameters.x').f_get_range() == [1, 2]
    for below in ('results.summary.mean', 'results.runs.%s.z.mean' % run_name(0)):
        assert '%s: not loaded, as %s is a leaf' % (below, below.rpartition('.')[0]) \
            in caplog.text


REUSED = []


def reused_buffer_job(traj):
    REUSED[:] = [traj.x, traj.x * 2]  # one list for every run, changed in place
    traj.f_add_result('z', REUSED)


def test_a_buffer_reused_by_every_run_is_stored_per_run(file_backend, tmp_path):
    """A record is what the value was when its run finished, not what it became later."""
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, reused_buffer_job, n=5)
    got = load(filename, name='traj', load_data=2).f_get_from_runs('z', fast_access=True)
    assert list(got.values()) == [[x, x * 2] for x in range(5)]


# ---------------------------------------------------------------------------------------------
# Loading: modes, names and indices, as_new, items
# ---------------------------------------------------------------------------------------------
def rich_job(traj):
    traj.f_add_result('z', traj.x * 10, comment='z of run')
    traj.f_add_derived_parameter('dz', traj.x + 0.5)


def rich_sweep(backend, tmp_path, name='traj', n=3, **kwargs):
    filename = path_for(backend, tmp_path)
    env = make_env(backend, filename, name=name, **kwargs)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0, comment='explored')
    traj.f_add_parameter('y', 'fixed', comment='not explored')
    traj.f_add_config('cfg', 3.5)
    traj.f_add_derived_parameter('dt', [1, 2], comment='trajectory-level derived')
    traj.f_add_result('rt', 'trajectory result', comment='trajectory-level result')
    traj.f_add_result('multi', a=1, b='two', c=[3])
    traj.f_explore({'x': list(range(n))})
    env.f_run(rich_job)
    return filename, traj


def leaves_of(traj, branch):
    return {leaf.v_full_name: leaf for leaf in traj.f_iter_leaves()
            if leaf.v_full_name.startswith(branch + '.')}


STORAGE_EXPECTED = {
    'parameters': {'parameters.x', 'parameters.y'},
    'derived_parameters': {'derived_parameters.dt'} | {
        'derived_parameters.runs.%s.dz' % run_name(i) for i in range(3)},
    'results': {'results.rt', 'results.multi'} | {
        'results.runs.%s.z' % run_name(i) for i in range(3)},
}


@pytest.mark.parametrize('branch', ['parameters', 'derived_parameters', 'results'])
@pytest.mark.parametrize('mode', [0, 1, 2])
def test_load_modes(file_backend, tmp_path, branch, mode):
    filename, _ = rich_sweep(file_backend, tmp_path)
    modes = {'load_parameters': 0, 'load_derived_parameters': 0, 'load_results': 0}
    modes['load_' + branch] = mode
    traj = mp.Trajectory('traj', storage_service=service(file_backend, filename))
    traj.f_load(name='traj', **modes)
    for other in STORAGE_EXPECTED:
        if other != branch:
            assert leaves_of(traj, other) == {}, other
    leaves = leaves_of(traj, branch)
    if mode == 0:
        assert leaves == {}
        return
    assert set(leaves) == STORAGE_EXPECTED[branch]
    if mode == 1:
        assert all(leaf.f_is_empty() for leaf in leaves.values())
    else:
        assert not any(leaf.f_is_empty() for leaf in leaves.values())
        if branch == 'results':
            assert traj.f_get('results.runs.%s.z' % run_name(2)).f_get() == 20
            assert traj.f_get('results.rt').v_comment == 'trajectory-level result'
        elif branch == 'parameters':
            assert traj.f_get('parameters.x').f_get_range() == [0, 1, 2]
            assert traj.f_get('parameters.y').f_get() == 'fixed'
        else:
            assert traj.f_get('derived_parameters.runs.%s.dz' % run_name(1)).f_get() == 1.5


@pytest.mark.parametrize('load_data', [0, 1, 2])
def test_load_data_sets_every_branch(file_backend, tmp_path, load_data):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = load(filename, name='traj', load_data=load_data)
    for branch, names in STORAGE_EXPECTED.items():
        leaves = leaves_of(traj, branch)
        if load_data == 0:
            assert leaves == {}
        else:
            assert set(leaves) == names
            assert all(leaf.f_is_empty() == (load_data == 1) for leaf in leaves.values())
    config = leaves_of(traj, 'config')
    assert ('config.cfg' in config) == (load_data > 0)


def test_load_data_keeps_memory_and_overwrite_replaces_it(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = load(filename, name='traj', load_data=2)
    y = traj.f_get('parameters.y')
    y.f_unlock()
    y.f_set('changed')
    traj.f_get('results.rt').f_set_single('rt', 'changed too')
    traj.f_get('results.runs.%s.z' % run_name(1)).f_set_single('z', -1)
    traj.f_load(name='traj', load_parameters=2, load_results=2)
    assert traj.f_get('parameters.y').f_get() == 'changed'
    assert traj.f_get('results.rt').f_get() == 'changed too'
    assert traj.f_get('results.runs.%s.z' % run_name(1)).f_get() == -1
    traj.f_get('parameters.y').f_unlock()
    traj.f_load(name='traj', load_parameters=3, load_results=3)
    assert traj.f_get('parameters.y').f_get() == 'fixed'
    assert traj.f_get('results.rt').f_get() == 'trajectory result'
    assert traj.f_get('results.runs.%s.z' % run_name(1)).f_get() == 10


def test_bad_load_mode_is_refused(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    with pytest.raises(mp.ConfigurationError, match='load modes'):
        load(filename, name='traj', load_results=7)


def two_trajectories(backend, tmp_path):
    filename = path_for(backend, tmp_path, 'shared')
    for name, n in (('first', 2), ('second', 3)):
        env = make_env(backend, filename, name=name)
        traj = env.v_trajectory
        traj.f_add_parameter('x', 0)
        traj.f_add_result('owner', name)
        traj.f_explore({'x': list(range(n))})
        env.f_run(rich_job)
    return filename


def test_several_trajectories_in_one_file_by_name_and_index(file_backend, tmp_path):
    filename = two_trajectories(file_backend, tmp_path)
    newest = load(filename, index=-1, load_data=2)
    assert newest.v_name == 'second' and len(newest) == 3
    oldest = load(filename, index=0, load_data=2)
    assert oldest.v_name == 'first' and len(oldest) == 2
    assert oldest.f_get('results.owner').f_get() == 'first'
    assert oldest.f_get_from_runs('z', fast_access=True) == {
        run_name(0): 0, run_name(1): 10}
    by_name = load(filename, name='second', load_data=2)
    assert by_name.f_get('results.owner').f_get() == 'second'
    assert load(filename, load_data=2).v_name == 'second'  # no name, no index: newest
    with pytest.raises(mp.DataNotInStorageError, match='first'):
        load(filename, name='third')
    with pytest.raises(mp.DataNotInStorageError):
        load(filename, index=5)


def test_pypet_style_trajectory_with_filename_then_f_load(file_backend, tmp_path):
    filename = two_trajectories(file_backend, tmp_path)
    traj = mp.Trajectory('first', add_time=False, filename=filename)
    traj.f_load(load_parameters=2, load_results=2)
    assert traj.v_name == 'first' and len(traj) == 2
    assert traj.f_get('results.owner').f_get() == 'first'
    assert traj.f_get_from_runs('z', fast_access=True)[run_name(1)] == 10
    other = mp.Trajectory(filename=filename)
    other.f_load(index=-1, load_results=2)
    assert other.v_name == 'second'


def test_load_trajectory_function(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = mp.load_trajectory('traj', filename=filename, load_all=2)
    assert traj.f_get('results.multi').f_to_dict() == {'a': 1, 'b': 'two', 'c': [3]}
    assert traj.f_is_completed() and len(traj) == 3
    info = traj.f_get_run_information(2)
    assert info['completed'] == 1 and info['finish_timestamp'] >= info['timestamp'] > 0
    with pytest.raises(mp.ConfigurationError):
        mp.load_trajectory('traj')


def test_a_service_class_with_a_filename_uses_that_file(file_backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (the default ./hdf5/ folder must stay empty)
    cls = CLASSES[file_backend]
    mine = str(tmp_path / ('mine' + SUFFIX[file_backend]))
    traj = mp.Trajectory('t', storage_service=cls, filename=mine)
    traj.f_add_parameter('x', 1)
    traj.f_store()
    assert os.path.exists(mine) and not os.path.exists('hdf5')
    assert mp.load_trajectory(name='t', filename=mine, storage_service=cls).x == 1
    with pytest.raises(mp.DataNotInStorageError, match='other'):
        mp.load_trajectory(name='t', filename=str(tmp_path / 'other.bin'), storage_service=cls)
    other = mp.Trajectory('u')
    other.v_storage_service = cls                   # a class: built with the trajectory's name
    assert os.path.basename(other.v_storage_service.filename).startswith('u.')


def test_a_skeleton_of_explored_parameters_says_how_to_load_their_ranges(file_backend,
                                                                          tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = load(filename, name='traj', load_all=1)
    for call in (lambda: list(traj.f_iter_runs()), lambda: traj.f_set_crun(1),
                 lambda: traj.f_get('x').f_get_range()):
        with pytest.raises(mp.PypetError, match=r"parameters.x is explored, but was loaded "
                                                r"without its data.*f_load_item"):
            call()
    traj.f_add_result('late', 5)
    traj.f_store()                                   # the stored ranges stay
    again = load(filename, name='traj', load_data=2)
    assert again.f_get('x').f_get_range() == [0, 1, 2] and again.late == 5
    traj.f_load_item('parameters.x')
    assert [idx for idx in traj.f_iter_runs(yields='idx')] == [0, 1, 2]


def test_a_new_trajectory_never_stores_over_one_of_the_same_name(file_backend, tmp_path):
    # (as pypet: the script run again, or pypet's "load as new and run again", would have
    # replaced the stored trajectory and its runs without a word)
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, multiply_job, n=3)
    before = open(filename, 'rb').read()
    env = make_env(file_backend, filename)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [10, 20]})
    with pytest.raises(mp.StorageError, match="holds a trajectory 'traj' already.*"
                                              "overwrite_file=True"):
        env.f_run(multiply_job)
    assert open(filename, 'rb').read() == before and not os.path.exists(filename + '.journal')
    rerun = mp.load_trajectory(name='traj', filename=filename, as_new=True)
    assert rerun.v_name.startswith('my_trajectory_') and len(rerun) == 3  # pypet's naming
    rerun = mp.load_trajectory(name='traj', filename=filename, as_new=True, new_name='again',
                               add_time=False)
    assert rerun.v_name == 'again'
    env = make_env(file_backend, filename)
    with pytest.raises(mp.ConfigurationError, match="unknown arguments.*'load_reslts'"):
        mp.load_trajectory(name='traj', filename=filename, load_reslts=2)
    loaded = load(filename, name='traj', load_data=2)  # loaded, then stored: adds to it
    loaded.f_add_result('late', 1)
    loaded.f_store()
    again = load(filename, name='traj', load_data=2)
    assert len(again) == 3 and again.late == 1
    env = make_env(file_backend, filename, overwrite_file=True)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [10, 20]})
    env.f_run(multiply_job)                          # overwrite_file=True: a new file
    assert len(load(filename, name='traj')) == 2


def multiply_job(traj):
    traj.f_add_result('z', traj.x * 2)


def test_auto_load_loads_what_natural_naming_reaches(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, multiply_job, n=2)
    traj.f_add_result('summary', 42.0)
    traj.f_store()
    got = mp.Trajectory('traj', filename=filename, storage_service=CLASSES[file_backend])
    got.f_load(load_parameters=2, load_results=1)    # results as a skeleton
    assert got.f_get('results.summary').f_is_empty()
    got.v_auto_load = True
    got.v_idx = 1
    assert got.crun.z == 2 and got.res.summary == 42.0 and got['summary'] == 42.0
    for ask in (lambda: got.nothing_stored, lambda: got['nothing_stored'],
                lambda: hasattr(got, 'nothing_stored')):  # (in neither place: pypet's error)
        with pytest.raises(mp.DataNotInStorageError, match='nothing_stored is not stored'):
            ask()
    assert got.f_get_default('nothing_stored', 'd') == 'd' and 'nothing_stored' not in got
    got.v_auto_load = False
    assert not hasattr(got, 'nothing_stored') and getattr(got, 'nowhere', 'd') == 'd'


def elsewhere_job(traj):
    traj.f_add_result('sim.$.w', traj.x * 3)       # results.sim.run_XXXXXXXX.w
    traj.f_add_result('runs.$set.$.z', traj.x * 2)   # a run-set bucket...
    traj.f_add_result('y', traj.x)                   # ... beside the run's own group


def test_f_get_from_runs_finds_results_in_every_group_of_a_run(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    env, traj = sweep(backend, filename, elsewhere_job, n=2)
    got = traj if backend == 'lazy' else load(filename, name='traj', load_data=2)
    for name, factor in (('w', 3), ('z', 2), ('y', 1)):
        assert got.f_get_from_runs(name, fast_access=True, use_indices=True) == {
            0: 0, 1: factor}, name


def test_as_new_loads_parameters_only_and_no_completed_runs(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = load(filename, name='traj', as_new=True, load_data=2)
    assert len(traj) == 3
    assert traj.f_get('parameters.x').f_get_range() == [0, 1, 2]
    assert not any(traj.f_is_completed(i) for i in range(3))
    assert leaves_of(traj, 'results') == {}
    assert leaves_of(traj, 'derived_parameters') == {}
    # it can be run again, here with nothing written
    env = mp.Environment(traj, storage_service=mp.LazyStorageService(), log_config=None,
                         report_progress=False)
    traj.v_storage_service = mp.LazyStorageService()
    env.f_run(rich_job)
    assert traj.f_is_completed()


def test_load_items_with_load_only_and_reload_after_f_empty(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = load(filename, name='traj', load_data=1)
    multi = traj.f_get('results.multi')
    assert multi.f_is_empty()
    traj.f_load_item('results.multi', load_only=['a'])
    assert multi.f_to_dict() == {'a': 1}
    traj.f_load_item(multi, load_only='c')
    assert multi.f_to_dict() == {'a': 1, 'c': [3]}
    multi.f_empty()
    traj.f_load_item(multi, load_except=['a'])          # pypet's complement of load_only
    assert 'a' not in multi and multi.f_to_dict()['c'] == [3]
    with pytest.raises(ValueError, match='not both'):
        traj.f_load_item(multi, load_only=['a'], load_except=['c'])
    traj.f_load_items(['results.rt', 'derived_parameters.dt'])
    assert traj.f_get('results.rt').f_get() == 'trajectory result'
    assert traj.f_get('derived_parameters.dt').f_get() == [1, 2]
    traj.f_load_item('results.runs.%s' % run_name(2))  # a group: its subtree
    assert traj.f_get('results.runs.%s.z' % run_name(2)).f_get() == 20
    assert traj.f_get('results.runs.%s.z' % run_name(1)).f_is_empty()
    # f_empty, then reload
    rt = traj.f_get('results.rt')
    rt.f_empty()
    assert rt.f_is_empty()
    traj.f_load_item('results.rt')
    assert rt.f_get() == 'trajectory result'
    z2 = traj.f_get('results.runs.%s.z' % run_name(2))
    z2.f_empty()
    traj.f_load(name='traj', load_results=2)
    assert [traj.f_get('results.runs.%s.z' % run_name(i)).f_get() for i in range(3)] == \
        [0, 10, 20]
    with pytest.raises(mp.PypetError):
        traj.f_load_item('results.does_not_exist')


def store_then_free_job(traj, how='item'):
    big = traj.f_add_result('big', [traj.x] * 100)
    if how == 'item':       # pypet's way to free memory in a run: store now...
        traj.f_store_item(big)
    else:
        traj.f_store()      # (in a run: what the run added)
    big.f_empty()           # ... then empty it


@pytest.mark.parametrize('how', ['item', 'store'])
@pytest.mark.parametrize('settings', [{}, dict(multiproc=True, ncores=2)],
                         ids=['serial', 'pool'])
def test_a_result_stored_in_its_run_then_emptied_keeps_its_data(file_backend, tmp_path,
                                                                 settings, how):
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename, **settings)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [0, 1, 2]})
    env.f_run(store_then_free_job, how=how)
    got = load(filename, name='traj', load_data=2)
    assert got.f_get_from_runs('big', fast_access=True, use_indices=True) == {
        i: [i] * 100 for i in range(3)}


def test_store_items_after_first_store(backend, tmp_path):
    filename, traj = rich_sweep(backend, tmp_path)
    traj.f_add_result('late', 'added after the sweep', comment='late one')
    traj.f_store_item('late')
    traj.f_add_result('grp.a', 1)
    traj.f_add_result('grp.b', [2])
    traj.f_store_items([traj.f_get('results.grp')], recursive=True)
    traj.f_get('results.rt').f_set_single('extra', 'item')
    traj.f_store_item('results.rt', store_data=mp.pypetconstants.OVERWRITE_DATA)
    fresh = mp.Trajectory('fresh', storage_service=service(backend, filename))
    fresh.f_add_result('x', 1)
    with pytest.raises(mp.PypetError, match='f_store'):
        fresh.f_store_item('results.x')
    if backend == 'lazy':
        return
    new = load(filename, name='traj', load_data=2)
    assert new.f_get('results.late').f_get() == 'added after the sweep'
    assert new.f_get('results.late').v_comment == 'late one'
    assert new.f_get('results.grp.a').f_get() == 1
    assert new.f_get('results.grp.b').f_get() == [2]
    assert new.f_get('results.rt').f_to_dict() == {'rt': 'trajectory result',
                                                    'extra': 'item'}
    # a checkpoint folds the journal in and keeps the items
    traj.f_store()
    again = load(filename, name='traj', load_data=2)
    assert again.f_get('results.grp.b').f_get() == [2]
    assert again.f_get('results.rt').extra == 'item'


def test_delete_and_remove_items(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    traj = load(filename, name='traj', load_data=2)
    traj.f_delete_item('results.rt')
    assert 'results.rt' in leaves_of(traj, 'results')  # still in memory
    traj.f_delete_items(['results.runs.%s.z' % run_name(1)], remove_from_trajectory=True)
    assert 'results.runs.%s.z' % run_name(1) not in leaves_of(traj, 'results')
    traj.f_remove_item('results.multi')  # memory only
    assert 'results.multi' not in leaves_of(traj, 'results')
    new = load(filename, name='traj', load_data=2)
    names = set(leaves_of(new, 'results'))
    assert 'results.rt' not in names
    assert 'results.runs.%s.z' % run_name(1) not in names
    assert {'results.runs.%s.z' % run_name(i) for i in (0, 2)} <= names
    assert 'results.multi' in names
    with pytest.raises(mp.PypetError, match='explored'):
        traj.f_delete_item('parameters.x')
    # result.f_remove() with no names removes the result from the tree (memory only)
    new.f_get('results.multi').f_remove()
    assert 'results.multi' not in leaves_of(new, 'results')
    assert 'results.multi' in leaves_of(load(filename, name='traj', load_data=1), 'results')
    # deleting a group recursively, then a checkpoint: still gone
    new.f_delete_item('results.runs', recursive=True)
    assert not any(k.startswith('results.runs.') for k in
                   leaves_of(load(filename, name='traj', load_data=2), 'results'))
    new.f_remove_item('results.runs', recursive=True)
    new.f_store()
    reloaded = load(filename, name='traj', load_data=2)
    assert not any(k.startswith('results.runs.') for k in leaves_of(reloaded, 'results'))
    assert 'results.multi' in leaves_of(reloaded, 'results')


def two_results_job(traj):
    traj.f_add_result('z', traj.x)
    traj.f_add_result('w.a', traj.x * 2)


def test_deleting_one_runs_group_deletes_that_runs_results(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, two_results_job, n=3)
    traj = load(filename, name='traj', load_data=2)
    traj.f_delete_item('results.runs.%s' % run_name(1), recursive=True)
    traj.f_delete_item('results.runs.%s.w' % run_name(2), recursive=True)
    names = set(leaves_of(load(filename, name='traj', load_data=2), 'results'))
    assert names == {'results.runs.%s.%s' % (run_name(i), leaf)
                     for i, leaf in ((0, 'z'), (0, 'w.a'), (2, 'z'))}


def test_links_annotations_and_group_comments_round_trip(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    traj = mp.Trajectory('traj', storage_service=service(backend, filename))
    target = traj.f_add_result('grp.sub.target', 5, comment='linked to')
    group = traj.f_get('results.grp')
    group.v_comment = 'group comment'
    group.v_annotations.f_set(note='on a group')
    target.v_annotations.f_set(unit='m', scale=[1, 2])
    traj.f_get('results.grp').f_add_link('deep_link', target)
    traj.f_get('results').f_add_link('branch_link', target)
    traj.f_add_link('root_link', target)
    traj.f_store()
    got = traj if backend == 'lazy' else load(filename, name='traj', load_data=2)
    assert got.f_get('results.grp').v_comment == 'group comment'
    assert got.f_get('results.grp').v_annotations.f_get('note') == 'on a group'
    assert got.f_get('results.grp.sub.target').v_annotations.f_get('scale') == [1, 2]
    for name in ('results.grp.deep_link', 'results.branch_link', 'root_link'):
        node = got.f_get(name)
        assert node is got.f_get('results.grp.sub.target'), name
        assert node.f_get() == 5


def test_loading_an_item_by_a_name_with_abbreviations_and_wildcards(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('traj', filename=filename)
    traj.f_add_result('I.am.$.a.mean.resu', 42)
    traj.f_store()
    traj.f_remove_child('results', recursive=True)
    assert traj.f_get_default('res.I.am.crun.a.mean.resu', auto_load=True,
                              fast_access=True) == 42
    traj.f_remove_child('results', recursive=True)
    traj.f_load_item('res.I.am.$.a.mean.resu')
    assert traj.f_get('results.I.am.run_ALL.a.mean.resu').f_get() == 42


def test_loaded_links_are_found_by_name(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('traj', filename=filename)
    res = traj.f_add_result('kk', 42)
    traj.par.f_add_link('gg', res)
    traj.f_add_link('hh', res)
    traj.f_store()
    got = load(filename, name='traj', load_data=2)
    assert got.gg == got.hh == 42 and 'gg' in got


def test_group_annotations_load_data_keeps_memorys_and_overwrite_data_replaces(file_backend,
                                                                                tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('traj', filename=filename)
    traj.f_add_result('aaa.ccc.iii', 42)
    traj.ccc.v_annotations['gg'] = 4
    traj.f_store()
    other = load(filename, name='traj', load_data=2)
    traj.ccc.v_annotations['gg'] = 5
    traj.f_store(store_data=mp.OVERWRITE_DATA)          # (a full store takes them along)
    other.f_load(load_data=mp.LOAD_DATA)                # pypet: what memory has is kept
    assert other.ccc.v_annotations['gg'] == 4
    other.f_load(load_data=mp.OVERWRITE_DATA)           # and replaced when asked to
    assert other.ccc.v_annotations['gg'] == 5


def test_storing_an_item_stores_the_groups_on_its_way(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('traj', filename=filename)
    traj.f_store()
    traj.f_add_result('Im.stored.along.a.path', 43)
    traj.Im.stored.along.v_annotations['wtf'] = 4444
    traj.f_get('results.Im').v_comment = 'on the way'
    traj.res.f_store_child('Im.stored.along.a.path')
    got = load(filename, name='traj', load_data=2)
    assert got.f_get('results.Im.stored.along').v_annotations['wtf'] == 4444
    assert got.f_get('results.Im').v_comment == 'on the way' and got.path == 43
    group = traj.f_get('results.Im')          # a group stored again: as it is now
    group.v_comment = 'changed'
    group.v_annotations['a'] = 'c'
    traj.f_store_item(group, store_data=mp.OVERWRITE_DATA)
    got = load(filename, name='traj', load_data=2)
    assert got.f_get('results.Im').v_comment == 'changed'
    assert got.f_get('results.Im').v_annotations['a'] == 'c'


# ---------------------------------------------------------------------------------------------
# File names and file handling
# ---------------------------------------------------------------------------------------------
def test_default_filename_and_directory_only_filename(file_backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suffix = SUFFIX[file_backend]
    env = mp.Environment('deftraj', add_time=False, storage_service=CLASSES[file_backend],
                         log_config=None, report_progress=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.f_run(square_job)
    assert os.path.isfile(os.path.join('hdf5', 'deftraj' + suffix))
    assert load(os.path.join('hdf5', 'deftraj' + suffix), load_data=2).f_is_completed()
    env = mp.Environment('intofolder', add_time=False, storage_service=CLASSES[file_backend],
                         filename='./myfolder/', log_config=None, report_progress=False)
    env.v_trajectory.f_add_parameter('x', 2)
    env.f_run(square_job)
    assert os.path.isfile(os.path.join('myfolder', 'intofolder' + suffix))
    assert not os.path.exists(os.path.join('myfolder', suffix))


@needs_tables
def test_default_environment_writes_hdf5_under_hdf5_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = mp.Environment('plain', add_time=False, log_config=None, report_progress=False)
    env.v_trajectory.f_add_parameter('x', 3)
    env.f_run(square_job)
    path = os.path.join('hdf5', 'plain.hdf5')
    assert_stamped_hdf5(path)
    env = mp.Environment('dirtraj', add_time=False, filename='./myfolder/', log_config=None,
                         report_progress=False)
    env.v_trajectory.f_add_parameter('x', 3)
    env.f_run(square_job)
    assert os.path.isfile(os.path.join('myfolder', 'dirtraj.hdf5'))
    traj = mp.Trajectory('dirtraj', filename='./myfolder/')
    traj.f_load(load_results=2)
    assert traj.f_get('results.runs.%s.z' % run_name(0)).f_get() == 9.5


def test_overwrite_file(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    for name, overwrite in (('old', False), ('new', True)):
        env = make_env(file_backend, filename, name=name, overwrite_file=overwrite)
        env.v_trajectory.f_add_parameter('x', 1)
        env.f_run(square_job)
    assert load(filename, index=-1).v_name == 'new'
    with pytest.raises(mp.DataNotInStorageError):
        load(filename, name='old')


@pytest.mark.parametrize('overwrite', [False, True])
def test_a_write_protected_data_file_is_refused_not_replaced(file_backend, tmp_path, overwrite):
    # a 0444 file was replaced without complaint (issue 15); root may write it, but a user
    # who protected it expects a refusal
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename, name='old')
    env.v_trajectory.f_add_parameter('x', 1)
    env.f_run(square_job)
    os.chmod(filename, 0o444)
    with open(filename, 'rb') as f:
        before = f.read()
    env = make_env(file_backend, filename, name='new', overwrite_file=overwrite)
    env.v_trajectory.f_add_parameter('x', 1)
    with pytest.raises(mp.StorageError, match='write-protected.*chmod u\\+w') as info:
        env.f_run(square_job)
    assert filename in str(info.value)
    with open(filename, 'rb') as f:
        assert f.read() == before
    assert os.stat(filename).st_mode & 0o777 == 0o444
    assert not os.path.exists(filename + '.journal')
    assert load(filename).v_name == 'old'  # reading it is fine


def test_files_get_permissions_from_umask(file_backend, tmp_path):
    """A data file is as readable as any file the user creates (mkstemp makes 0600)."""
    filename, _ = rich_sweep(file_backend, tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    if os.name != 'posix':
        pytest.skip('POSIX permissions')
    assert os.stat(filename).st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------
# Pickles: allow_pickle=False, crafted payloads
# ---------------------------------------------------------------------------------------------
def boom_job(traj):
    traj.f_add_result(mp.PickleResult, 'evil_run', Boom(traj.marker_run))


def test_allow_pickle_false_refuses_and_names_the_node(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    marker = str(tmp_path / 'unpickled_result')
    marker_p = str(tmp_path / 'unpickled_parameter')
    marker_r = str(tmp_path / 'unpickled_run')
    env = make_env(file_backend, filename)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_add_parameter('marker_run', marker_r)
    traj.f_add_parameter(mp.PickleParameter, 'evil_param', Boom(marker_p))
    traj.f_add_result(mp.PickleResult, 'evil', Boom(marker))
    traj.f_add_result('harmless', 42)
    traj.f_explore({'x': [0, 1]})
    env.f_run(boom_job)
    marker_j = str(tmp_path / 'unpickled_from_journal')
    traj.f_add_result(mp.PickleResult, 'late_evil', Boom(marker_j))
    traj.f_store_item('late_evil')  # it is in the journal, not yet in the file
    assert os.path.exists(journal_path(filename))
    for path in (marker, marker_p, marker_r, marker_j):
        assert not os.path.exists(path)
    try:
        new = load(filename, name='traj', load_data=2, allow_pickle=False)
    except mp.PickleRefusedError as exc:
        assert 'evil' in str(exc)
    else:
        assert new.f_get('results.harmless').f_get() == 42
        with pytest.raises(mp.PypetError) as info:
            new.f_get('parameters.evil_param').f_get()
        assert 'parameters.evil_param' in str(info.value)
        assert 'allow_pickle' in str(info.value)
        with pytest.raises(mp.PypetError) as info:
            new.f_get('results.evil').f_get()
        assert 'results.evil' in str(info.value), 'the refusal should name the node'
        assert 'allow_pickle' in str(info.value)
    for path in (marker, marker_p, marker_r, marker_j):
        assert not os.path.exists(path), 'allow_pickle=False unpickled %s' % path
    traj.f_load_item('late_evil', allow_pickle=False)
    assert not os.path.exists(marker_j)
    # the same file with allow_pickle=True does run the payload: the test is meaningful
    load(filename, name='traj', load_data=2)
    for path in (marker, marker_p, marker_r, marker_j):
        assert os.path.exists(path)


def journal_path(filename):
    return filename + '.journal'


def frame(payload):
    return struct.pack('<II', len(payload), zlib.crc32(payload)) + payload


def test_crafted_pickle_in_journal_never_executes(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    marker = str(tmp_path / 'executed')
    with open(journal_path(filename), 'wb') as f:
        f.write(b'MPJOURNAL1\n' + b'0123456789abcdef\n')
        payload = pickle.dumps(('run', 'traj', 0, (0.0, 1.0, 1, '', ''), Boom(marker)))
        f.write(frame(payload))
    with pytest.raises(mp.PypetError):
        load(filename, name='traj', load_data=2)
    assert not os.path.exists(marker)
    with pytest.raises(mp.PypetError):
        mp.Trajectory('traj', storage_service=service(file_backend, filename)).f_load(
            name='traj', load_data=2, allow_pickle=True)
    assert not os.path.exists(marker)


def test_crafted_pickle_backend_file_never_executes(tmp_path):
    filename = str(tmp_path / 'evil.pkl')
    marker = str(tmp_path / 'executed')
    with open(filename, 'wb') as f:
        f.write(PICKLE_MAGIC)
        pickle.dump({'format': 1, 'order': ['traj'], 'folded': '',
                     'trajectories': {'traj': Boom(marker)}}, f)
    for attempt in (lambda: load(filename, load_data=2),
                    lambda: mp.Trajectory('traj', storage_service=mp.PickleStorageService(
                        filename)).f_load(name='traj', load_data=2)):
        with pytest.raises(mp.PypetError):
            attempt()
        assert not os.path.exists(marker)


# ---------------------------------------------------------------------------------------------
# Your own storage service and your own leaf classes
# ---------------------------------------------------------------------------------------------
class RecordingService:
    """The smallest service: store(msg, item, **kw) and load(msg, item, **kw)."""

    def __init__(self):
        self.calls = []

    def store(self, msg, item, *args, **kwargs):
        self.calls.append((msg, item, kwargs))

    def load(self, msg, item, *args, **kwargs):
        raise mp.DataNotInStorageError('RecordingService keeps nothing')


def fail_on_three(traj):
    if traj.x == 3:
        raise ValueError('three')
    traj.f_add_result('y', traj.x * 2)


def double_x(traj):
    traj.f_add_result('y', traj.x * 2)


def test_a_registered_backend_is_built_by_name_and_opens_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mp, 'STORAGE_SERVICES', dict(mp.STORAGE_SERVICES))

    class TaggedPickleService(mp.PickleStorageService):
        """A new file backend: one class, its name and its own magic bytes."""

        BACKEND = 'TaggedPickle'  # (names are matched in any case)
        MAGIC = b'MINIPYPET-TAGGED\n'
        SUFFIX = '.tagged'

    class SubclassedHDF5(mp.HDF5StorageService):  # (no BACKEND of its own: not registered)
        pass

    assert mp.STORAGE_SERVICES['taggedpickle'] is TaggedPickleService
    assert mp.STORAGE_SERVICES['hdf5'] is mp.HDF5StorageService
    filename = str(tmp_path / 'sweep.tagged')
    env = mp.Environment(trajectory='t', filename=filename, storage_service='TaggedPickle')
    traj = env.v_trajectory
    assert type(traj.v_storage_service) is TaggedPickleService
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2, 3]})
    env.f_run(lambda traj: traj.f_add_result('y', traj.x * 2))
    with open(filename, 'rb') as f:
        assert f.read(len(TaggedPickleService.MAGIC)) == TaggedPickleService.MAGIC
    loaded = mp.load_trajectory(filename=filename, load_all=mp.LOAD_DATA)
    assert type(loaded.v_storage_service) is TaggedPickleService
    assert loaded.f_get_from_runs('y', fast_access=True) == {
        run_name(0): 2, run_name(1): 4, run_name(2): 6}
    # a sweep stopped by a failing run resumes with the registered class
    env = mp.Environment(trajectory='r', filename=str(tmp_path / 'r.tagged'),
                         storage_service=TaggedPickleService, report_progress=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': [1, 2, 3]})
    with pytest.raises(ValueError, match='three'):
        env.f_run(fail_on_three)
    resumed = mp.Environment(trajectory='other', storage_service='lazy')
    resumed.f_continue_run(env.v_continue_file, job=double_x)
    loaded = mp.load_trajectory(filename=str(tmp_path / 'r.tagged'), load_all=mp.LOAD_DATA)
    assert type(loaded.v_storage_service) is TaggedPickleService
    assert sorted(loaded.f_get_from_runs('y', fast_access=True).values()) == [2, 4, 6]
    # the registry also builds it for a Trajectory given the name
    other = mp.Trajectory('u', filename=str(tmp_path / 'u.tagged'),
                          storage_service='TaggedPickleStorageService')
    assert type(other.v_storage_service) is TaggedPickleService


def test_storage_service_by_name_class_or_instance_for_a_trajectory(tmp_path):
    by_name = mp.Trajectory('a', filename=str(tmp_path / 'a.pkl'), storage_service='pickle')
    by_class = mp.Trajectory('b', filename=str(tmp_path / 'b.pkl'),
                             storage_service=mp.PickleStorageService, fsync_interval=0)
    instance = mp.LazyStorageService()
    given = mp.Trajectory('c', storage_service=instance)
    assert type(by_name.v_storage_service) is mp.PickleStorageService
    assert by_class.v_storage_service._journal.fsync_interval == 0
    assert given.v_storage_service is instance
    with pytest.raises(mp.ConfigurationError, match="'nosuch' is not one of"):
        mp.Trajectory('d', filename=str(tmp_path / 'd.pkl'), storage_service='nosuch')
    with pytest.raises(TypeError, match="unknown storage arguments.*bogus"):
        mp.Trajectory('e', filename=str(tmp_path / 'e.pkl'), bogus=1)
    assert not os.listdir(tmp_path)  # services write nothing until a store


def test_loading_with_a_service_class_and_no_filename_uses_the_default_file(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    traj = mp.Trajectory('t', storage_service=mp.PickleStorageService)
    traj.f_add_parameter('x', 3)
    traj.f_store()
    assert os.path.exists(os.path.join('hdf5', 't.pkl'))
    loaded = mp.load_trajectory(name='t', storage_service=mp.PickleStorageService)
    assert loaded.x == 3
    with pytest.raises(mp.DataNotInStorageError, match=r'nope\.pkl does not exist'):
        mp.load_trajectory(name='nope', storage_service=mp.PickleStorageService)


def test_use_hdf5_false_with_own_service(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = mp.Environment('own', add_time=False, use_hdf5=False, log_config=None,
                         report_progress=False)
    assert env.v_trajectory.v_storage_service is None
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2, 3]})
    with pytest.raises(mp.ConfigurationError, match='v_storage_service'):
        env.f_run(square_job)
    own = RecordingService()
    env.v_trajectory.v_storage_service = own
    env.f_run(square_job)
    msgs = [c[0] for c in own.calls]
    assert msgs[0] == mp.pypetconstants.TRAJECTORY and msgs[-1] == mp.pypetconstants.TRAJECTORY
    runs = [c[1] for c in own.calls if c[0] == mp.pypetconstants.SINGLE_RUN]
    assert sorted(r[2] for r in runs) == [0, 1, 2]
    for record in runs:
        idx, leaves = record[2], record[4]
        names = {leaf[0]: leaf for leaf in leaves}
        z = names['results.runs.%s.z' % run_name(idx)]
        assert z[3] == {'z': (idx + 1) ** 2 + 0.5} and z[2] == 'x squared'
    assert os.listdir(str(tmp_path)) == []  # nothing written


def write_modules(tmp_path, tag):
    """Two modules each defining a class `Special` (and alpha a Parameter subclass)."""
    names = []
    for origin in ('alpha', 'beta'):
        modname = 'mp_%s_%s' % (origin, tag)
        (tmp_path / (modname + '.py')).write_text(textwrap.dedent('''
            import importlib, os
            mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))

            class Special(mp.Result):
                origin = %r

                def f_double(self):
                    return 2 * self.f_get()

            class Knob(mp.Parameter):
                origin = %r
            ''' % (origin, origin)))
        names.append(modname)
    return names


def import_modules(monkeypatch, tmp_path, names):
    monkeypatch.syspath_prepend(str(tmp_path))
    return [importlib.import_module(n) for n in names]


def test_dynamic_imports_rebuild_user_classes_without_collision(file_backend, tmp_path,
                                                                 monkeypatch):
    names = write_modules(tmp_path, file_backend + '1')
    alpha, beta = import_modules(monkeypatch, tmp_path, names)
    filename = path_for(file_backend, tmp_path)

    def job(traj):
        traj.f_add_result(alpha.Special, 'sa', traj.x)
        traj.f_add_result(beta.Special, 'sb', -traj.x)

    env = make_env(file_backend, filename, dynamically_imported_classes=[alpha.Special],
                   dynamic_imports=['%s.Special' % names[1]])
    traj = env.v_trajectory
    traj.f_add_parameter(alpha.Knob, 'knob', 3)
    traj.f_add_result(alpha.Special, 'ta', 5)
    traj.f_add_result(beta.Special, 'tb', 6)
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2]})
    env.f_run(job)
    for kwargs in ({'dynamic_imports': [alpha.Special, beta.Special, alpha.Knob]},
                   {'dynamic_imports': ['%s.Special' % names[0], '%s.Special' % names[1],
                                        '%s.Knob' % names[0]]},
                   {}):  # importable modules: the stored dotted path is enough
        new = load(filename, name='traj', load_data=2, **kwargs)
        assert type(new.f_get('results.ta')) is alpha.Special
        assert type(new.f_get('results.tb')) is beta.Special
        assert new.f_get('results.tb').f_double() == 12
        assert type(new.f_get('parameters.knob')) is alpha.Knob
        assert new.f_get('parameters.knob').f_get() == 3
        for i, x in enumerate([1, 2]):
            sa = new.f_get('results.runs.%s.sa' % run_name(i))
            sb = new.f_get('results.runs.%s.sb' % run_name(i))
            assert (type(sa), sa.f_get()) == (alpha.Special, x)
            assert (type(sb), sb.f_get()) == (beta.Special, -x)


def test_unimportable_user_class_needs_dynamic_imports(file_backend, tmp_path, monkeypatch):
    names = write_modules(tmp_path, file_backend + '2')
    alpha, _ = import_modules(monkeypatch, tmp_path, names)
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('traj', storage_service=service(file_backend, filename))
    traj.f_add_result(alpha.Special, 'ta', 5)
    traj.f_store()
    monkeypatch.delitem(sys.modules, names[0])
    os.remove(str(tmp_path / (names[0] + '.py')))
    importlib.invalidate_caches()
    with pytest.raises(mp.StorageError) as info:
        load(filename, name='traj', load_data=2)
    assert 'Special' in str(info.value) and 'dynamic_imports' in str(info.value)
    new = load(filename, name='traj', load_data=2, dynamic_imports=[alpha.Special])
    assert type(new.f_get('results.ta')) is alpha.Special and new.results.ta == 5


# ---------------------------------------------------------------------------------------------
# Purging duplicate comments (the seed's semantics)
# ---------------------------------------------------------------------------------------------
def comment_job(traj):
    if traj.v_idx == 0 and traj.slow_first:
        time.sleep(0.5)  # under a pool, run 0 finishes last
    comment = 'different' if traj.v_idx == 2 else 'Mostly harmless!'
    traj.f_add_result('my_result', traj.x, comment=comment)
    traj.f_add_derived_parameter('dp', traj.x, comment='same everywhere')


def comment_sweep(backend, tmp_path, purge, **kwargs):
    filename = path_for(backend, tmp_path)
    env = make_env(backend, filename, purge_duplicate_comments=purge, **kwargs)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_add_parameter('slow_first', bool(kwargs.get('multiproc')))
    traj.f_explore({'x': [0, 1, 2, 3]})
    env.f_run(comment_job)
    return filename, load(filename, name='traj', load_data=2)


def comments(traj, branch, name):
    return [traj.f_get('%s.runs.%s.%s' % (branch, run_name(i), name)).v_comment
            for i in range(4)]


def test_purge_duplicate_comments(file_backend, tmp_path):
    filename, traj = comment_sweep(file_backend, tmp_path, True)
    assert comments(traj, 'results', 'my_result') == ['Mostly harmless!', '', 'different', '']
    assert comments(traj, 'derived_parameters', 'dp') == ['same everywhere', '', '', '']
    assert traj.f_get('parameters.x').v_comment == ''  # trajectory-level leaves untouched
    if file_backend == 'hdf5':
        with tables.open_file(filename) as h:
            summary = h.get_node('/traj/overview/results_runs_summary').read()
            assert summary['comment'].tolist() == [b'Mostly harmless!']
            assert summary['example_item_run_name'].tolist() == [run_name(0).encode()]


def test_no_purge_keeps_every_comment(file_backend, tmp_path):
    _, traj = comment_sweep(file_backend, tmp_path, False)
    assert comments(traj, 'results', 'my_result') == [
        'Mostly harmless!', 'Mostly harmless!', 'different', 'Mostly harmless!']
    assert comments(traj, 'derived_parameters', 'dp') == ['same everywhere'] * 4


@pytest.mark.skipif(sys.platform == 'win32', reason='uses the fork start method')
@pytest.mark.timeout(120)
def test_purge_keeps_lowest_run_index_whatever_the_finishing_order(file_backend, tmp_path):
    _, traj = comment_sweep(file_backend, tmp_path, True, multiproc=True, ncores=2,
                            use_pool=True, wrap_mode='QUEUE', start_method='fork')
    finish = [traj.f_get_run_information(i)['finish_timestamp'] for i in range(4)]
    assert finish[0] > finish[1], 'run 0 should have finished after run 1'
    assert comments(traj, 'results', 'my_result') == ['Mostly harmless!', '', 'different', '']


@pytest.mark.skipif(sys.platform == 'win32', reason='uses the fork start method')
@pytest.mark.timeout(120)
def test_lazy_keeps_results_of_pool_runs_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = mp.Environment('lazy', add_time=False, storage_service=mp.LazyStorageService,
                         log_config=None, report_progress=False, multiproc=True, ncores=2,
                         use_pool=True, wrap_mode='QUEUE', start_method='fork')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(6))})
    env.f_run(square_job)
    assert traj.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i * i + 0.5 for i in range(6)}
    assert traj.f_is_completed()
    assert os.listdir(str(tmp_path)) == []


BLOCK_TABLES = '''
import importlib, importlib.abc, logging, os, sys


class NoTables(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'tables' or name.startswith('tables.'):
            raise ImportError('PyTables is blocked for this test')


sys.meta_path.insert(0, NoTables())
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='LOG %(message)s')
mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))


def job(traj):
    traj.f_add_result('z', traj.x + 0.25)


for name in ('first', 'second'):
    env = mp.Environment(name, add_time=False, filename=os.path.join('out', name + '.hdf5'),
                         log_config=None, report_progress=False)
    service = env.v_trajectory.v_storage_service
    print('SERVICE', type(service).__name__, service.filename)
    env.v_trajectory.f_add_parameter('x', 1)
    env.f_run(job)
'''


@pytest.mark.timeout(120)
def test_without_pytables_hdf5_falls_back_to_pickle_and_says_so_once(tmp_path):
    script = tmp_path / 'no_tables.py'
    script.write_text(BLOCK_TABLES)
    proc = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path),
                          env=subprocess_env(), capture_output=True, timeout=120)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode() + out
    services = [line.split()[1] for line in out.splitlines() if line.startswith('SERVICE')]
    assert services == ['PickleStorageService'] * 2
    notes = [line for line in out.splitlines() if line.startswith('LOG') and
             'PyTables' in line]
    assert len(notes) == 1, out
    for name in ('first', 'second'):
        stored = [f for f in os.listdir(str(tmp_path / 'out')) if f.startswith(name + '.')
                  and not f.endswith('.segments')]
        assert len(stored) == 1, stored
        with open(str(tmp_path / 'out' / stored[0]), 'rb') as f:
            assert f.read(len(PICKLE_MAGIC)) == PICKLE_MAGIC
        traj = load(str(tmp_path / 'out' / stored[0]), load_data=2)
        assert traj.f_get_from_runs('z', fast_access=True) == {run_name(0): 1.25}


def test_purge_needs_summary_tables(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    with pytest.raises(mp.ConfigurationError, match='summary_tables'):
        make_env(file_backend, filename, purge_duplicate_comments=True, summary_tables=False)
    with pytest.raises(mp.ConfigurationError, match='summary_tables'):
        CLASSES[file_backend](filename, purge_duplicate_comments=True, summary_tables=False)
    assert os.listdir(str(tmp_path)) == []
    env = make_env(file_backend, filename, purge_duplicate_comments=False,
                   summary_tables=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.f_run(square_job)
    assert load(filename, load_data=2).f_is_completed()


# ---------------------------------------------------------------------------------------------
# Overview tables, read back without minipypet
# ---------------------------------------------------------------------------------------------
LONG_COMMENT = ''.join('%03d,' % i for i in range(75))  # 300 characters


def overview_job(traj):
    traj.f_add_result('z', traj.x * 0.5, comment='half of x')
    traj.f_add_derived_parameter('dz', traj.x + 1)


def label(i):
    return 'label_%04d_' % i + 'y' * 90  # longer than any 64-character summary


def h5_segments(filename, traj):
    """The paths of a trajectory's segment files, in order (format 3)."""
    with tables.open_file(filename) as h:
        listed = json.loads(h.get_node('/%s/mp_segments' % traj).read().item().decode())
    return [filename + '.segments/' + name for name, _ in listed['segments']]


def h5_table(filename, traj, name):
    """An overview table's rows: from the main file, else joined over the segments."""
    with tables.open_file(filename) as h:
        if '/%s/overview/%s' % (traj, name) in h:
            return h.get_node('/%s/overview/%s' % (traj, name)).read()
    parts = []
    for path in h5_segments(filename, traj):
        with tables.open_file(path) as h:
            if '/overview/' + name in h:
                parts.append(h.get_node('/overview/' + name).read())
    return np.concatenate(parts) if parts else None


def h5_overview_names(filename, traj):
    with tables.open_file(filename) as h:
        names = set(h.get_node('/%s/overview' % traj)._v_children)
    for path in h5_segments(filename, traj):
        with tables.open_file(path) as h:
            if '/overview' in h:
                names |= set(h.root.overview._v_children)
    return names


def h5_column(filename, traj, path, item):
    """(run indices, values) of a run column joined over the segments."""
    idx, values = [], []
    for seg in h5_segments(filename, traj):
        with tables.open_file(seg) as h:
            if path in h:
                idx.extend(h.get_node(path + '/_idx').read().tolist())
                values.extend(h.get_node(path + '/' + item).read().tolist())
    return idx, values


@pytest.fixture(scope='module')
def big_hdf5(tmp_path_factory):
    if tables is None:
        pytest.skip('PyTables is not installed')
    tmp_path = tmp_path_factory.mktemp('big')
    filename = str(tmp_path / 'big.hdf5')
    env = make_env('hdf5', filename, name='big')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0, comment='explored')
    traj.f_add_parameter('label', 'a', comment='explored too')
    traj.f_add_parameter('long', 1.0, comment=LONG_COMMENT)
    traj.f_add_config('cfg', 'config value')
    traj.f_add_result('rt', 'trajectory result', comment='trajectory-level')
    traj.f_add_result('ls', [1, 'two'])
    traj.f_add_derived_parameter('dt', 7)
    n = 1500
    traj.f_explore({'x': list(range(n)), 'label': [label(i) for i in range(n)]})
    start = time.time()
    env.f_run(overview_job)
    elapsed = time.time() - start
    return filename, n, elapsed


@needs_tables
def test_overview_tables_with_pytables(big_hdf5):
    filename, n, elapsed = big_hdf5
    assert elapsed < 60, 'a 1,500-run sweep took %.1f s' % elapsed
    assert {'info', 'runs', 'parameters', 'config', 'explored_parameters',
            'results_trajectory', 'derived_parameters_trajectory', 'results_runs',
            'results_runs_summary', 'derived_parameters_runs',
            'derived_parameters_runs_summary', 'explored_parameters_runs'} <= \
        h5_overview_names(filename, 'big')
    assert 'run_errors' not in h5_overview_names(filename, 'big')
    runs = h5_table(filename, 'big', 'runs')  # (the runs' rows are in the segments)
    assert len(runs) == n  # no 1,000-row cap
    assert runs['idx'].tolist() == list(range(n))
    assert runs['completed'].tolist() == [1] * n
    assert runs['name'][-1] == run_name(n - 1).encode()
    assert (runs['finish_timestamp'] >= runs['timestamp']).all()
    assert len(h5_table(filename, 'big', 'results_runs')) == n
    assert len(h5_table(filename, 'big', 'derived_parameters_runs')) == n
    assert h5_column(filename, 'big', '/results/runs/z', '_idx')[1] == list(range(n))
    assert h5_column(filename, 'big', '/results/runs/z', 'z')[1] == [i * 0.5 for i in range(n)]
    with tables.open_file(h5_segments(filename, 'big')[0]) as h:
        z = h.get_node('/results/runs/z')
        assert str(z._v_attrs.mp_kind) == 'column'
        assert 'z' in str(z._v_attrs.mp_template) and str(z._v_attrs.mp_class) == 'Result'
        assert str(z._v_attrs.mp_comment) == 'half of x'
    with tables.open_file(filename) as h:
        info = h.get_node('/big/overview/info').read()
        assert info['name'].tolist() == [b'big'] and info['length'].tolist() == [n]
        epr = h.get_node('/big/overview/explored_parameters_runs').read()
        assert len(epr) == n and epr['x'].tolist() == list(range(n))
        assert [v.decode() for v in epr['label']] == [label(i) for i in range(n)]
        params = h.get_node('/big/overview/parameters').read()
        by_name = {r['name'].decode(): r for r in params}
        assert set(by_name) == {'x', 'label', 'long'}
        assert by_name['long']['comment'].decode() == LONG_COMMENT  # not truncated
        ep = h.get_node('/big/overview/explored_parameters').read()
        ranges = {r['name'].decode(): r for r in ep}
        assert ranges['x']['length'] == n
        assert repr(label(n - 1)) in ranges['label']['range'].decode()
        assert b'cfg' in [r['name'] for r in h.get_node('/big/overview/config').read()]
        rt = h.get_node('/big/overview/results_trajectory').read()
        assert rt['name'].tolist() == [b'ls', b'rt'] and rt['comment'].tolist() == [
            b'', b'trajectory-level']
        summary = h.get_node('/big/overview/results_runs_summary').read()
        assert summary['number_of_items'].tolist() == [n]
        # scalar leaves are attributes of their group, described in its mp_leaves
        results = h.get_node('/big/results')
        assert json.loads(str(results._v_attrs.mp_leaves))['rt'] == [
            'Result', 'rt', 'str', 'trajectory-level']
        assert str(results._v_attrs.rt) == 'trajectory result'
        long_meta = json.loads(str(h.get_node('/big/parameters')._v_attrs.mp_leaves))['long']
        assert long_meta == ['Parameter', 'data', 'float', LONG_COMMENT]
        assert float(h.get_node('/big/parameters')._v_attrs.long) == 1.0
        # other single items are one dataset each
        ls = h.get_node('/big/results/ls')
        assert str(ls._v_attrs.mp_kind) == 'leaf' and str(ls._v_attrs.mp_item) == 'ls'
        assert str(ls._v_attrs.mp_class) == 'Result' and str(ls._v_attrs.mp_type) == 'json'


@needs_h5py
def test_overview_tables_with_h5py(big_hdf5):
    filename, n, _ = big_hdf5
    with h5py.File(filename, 'r') as h:
        # the segments through the external links the main file holds
        segments = [h['/big/segments'][k] for k in sorted(h['/big/segments'])]
        runs = np.concatenate([s['overview/runs'][()] for s in segments])
        assert runs.shape == (n,) and runs['completed'].tolist() == [1] * n
        epr = h['/big/overview/explored_parameters_runs'][()]
        assert epr['x'].tolist() == list(range(n))
        params = h['/big/overview/parameters'][()]
        comments = {r['name'].decode(): r['comment'].decode() for r in params}
        assert comments['long'] == LONG_COMMENT
        group = segments[0]['results/runs/z']
        kind = group.attrs['mp_kind']
        assert (kind.decode() if isinstance(kind, bytes) else str(kind)) == 'column'
        assert [i for s in segments for i in s['results/runs/z/_idx'][()].tolist()] == \
            list(range(n))
        assert [v for s in segments for v in s['results/runs/z/z'][()].tolist()] == \
            [i * 0.5 for i in range(n)]


@needs_tables
def test_loading_1500_runs(big_hdf5):
    filename, n, _ = big_hdf5
    start = time.time()
    traj = load(filename, name='big', load_data=2)
    elapsed = time.time() - start
    assert elapsed < 10, 'loading 1,500 runs took %.1f s' % elapsed
    assert traj.f_is_completed() and len(traj) == n
    assert traj.f_get('results.runs.%s.z' % run_name(n - 1)).f_get() == (n - 1) * 0.5
    assert traj.f_get('parameters.long').v_comment == LONG_COMMENT


@needs_tables
@pytest.mark.parametrize('switch,absent,present', [
    ('large_overview_tables', {'results_runs', 'derived_parameters_runs',
                               'explored_parameters_runs'},
     {'runs', 'info', 'parameters', 'results_runs_summary'}),
    ('small_overview_tables', {'parameters', 'config', 'results_trajectory',
                               'derived_parameters_trajectory', 'explored_parameters'},
     {'runs', 'info', 'results_runs', 'results_runs_summary'}),
    ('summary_tables', {'results_runs_summary', 'derived_parameters_runs_summary'},
     {'runs', 'info', 'results_runs', 'parameters'}),
])
def test_overview_switches(tmp_path, switch, absent, present):
    filename = path_for('hdf5', tmp_path)
    kwargs = {switch: False}
    if switch == 'summary_tables':
        kwargs['purge_duplicate_comments'] = False
    env, traj = sweep('hdf5', filename, overview_job, n=3, **kwargs)
    children = h5_overview_names(filename, 'traj')
    assert not absent & children, absent & children
    assert present <= children
    new = load(filename, load_data=2)
    assert new.f_get_from_runs('z', fast_access=True)[run_name(2)] == 1.0


def failing_job(traj):
    if traj.v_idx == 1:
        raise ValueError('bad run %d' % traj.v_idx)
    traj.f_add_result('z', traj.x)


def test_failed_run_recorded(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    env, traj = sweep(backend, filename, failing_job, n=3, record_failed_runs=True)
    got = traj if backend == 'lazy' else load(filename, load_data=2)
    assert [got.f_is_completed(i) for i in range(3)] == [True, False, True]
    assert 'bad run 1' in got.f_get_run_information(1)['error']
    assert got.f_get_run_information(0)['error'] == ''
    if backend == 'hdf5':
        errors = h5_table(filename, 'traj', 'run_errors')
        assert errors['idx'].tolist() == [1]
        assert b'bad run 1' in errors['error'][0]


def test_failed_run_raises_by_default_but_keeps_earlier_runs(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    with pytest.raises(ValueError, match='bad run 1'):
        sweep(file_backend, filename, failing_job, n=3)
    got = load(filename, load_data=2)
    assert got.f_is_completed(0) and not got.f_is_completed(2)
    assert got.f_get('results.runs.%s.z' % run_name(0)).f_get() == 0


@pytest.mark.parametrize('record_failed_runs', [False, True])
def test_a_serial_sweep_leaves_the_defaults_in_place_however_it_ends(tmp_path,
                                                                     record_failed_runs):
    # (between runs the serial loop leaves one run's values for the next run to replace)
    env = make_env('lazy', None, record_failed_runs=record_failed_runs)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [5, 6, 7]})
    if record_failed_runs:
        env.f_run(failing_job)
    else:
        with pytest.raises(ValueError, match='bad run 1'):
            env.f_run(failing_job)
    assert traj.v_idx == -1 and traj.x == 0 and 'x' not in vars(traj)
    assert traj.f_get('x').f_get() == 0 and traj.f_get('x').f_get_range() == [5, 6, 7]


# ---------------------------------------------------------------------------------------------
# Options checked before anything is written
# ---------------------------------------------------------------------------------------------
def test_results_per_run_hints(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, square_job, n=2, results_per_run=1,
                      derived_parameters_per_run=1)
    assert load(filename, load_data=2).f_is_completed()
    for key in ('results_per_run', 'derived_parameters_per_run'):
        for bad in (-1, 'many'):
            with pytest.raises(mp.ConfigurationError, match=key):
                make_env(file_backend, path_for(file_backend, tmp_path, 'other'),
                         **{key: bad})
    assert not os.path.exists(path_for(file_backend, tmp_path, 'other'))


def test_fsync_interval_checked(file_backend, tmp_path):
    for bad in (-1, 'x'):
        with pytest.raises(mp.ConfigurationError, match='fsync_interval'):
            make_env(file_backend, path_for(file_backend, tmp_path), fsync_interval=bad)
    for good in (0, 0.5, None):
        filename = path_for(file_backend, tmp_path, 'f%s' % good)
        sweep(file_backend, filename, square_job, n=2, fsync_interval=good)
        assert load(filename, load_data=2).f_is_completed()


@needs_tables
@pytest.mark.parametrize('kwargs', [{'complevel': 10}, {'complevel': -1},
                                    {'complevel': 'high'}, {'complib': 'nope'}])
@pytest.mark.parametrize('how', ['class', 'default', 'instance'])
def test_bad_compression_is_refused_before_writing(tmp_path, kwargs, how):
    filename = str(tmp_path / 'c.hdf5')
    with pytest.raises(mp.ConfigurationError, match=list(kwargs)[0]):
        if how == 'class':
            mp.Environment('c', add_time=False, storage_service=mp.HDF5StorageService,
                           filename=filename, log_config=None, **kwargs)
        elif how == 'default':
            mp.Environment('c', add_time=False, filename=filename, log_config=None, **kwargs)
        else:
            mp.HDF5StorageService(filename, **kwargs)
    assert os.listdir(str(tmp_path)) == []


@needs_tables
@pytest.mark.parametrize('complevel', [0, 1])
def test_other_compression_levels_round_trip(tmp_path, complevel):
    filename = path_for('hdf5', tmp_path)
    libs = [lib for lib in ('zlib', 'blosc') if lib in tables.filters.all_complibs]
    for lib in libs:
        env, _ = sweep('hdf5', filename, square_job, n=2, name='c_' + lib,
                       complevel=complevel, complib=lib)
        assert load(filename, name='c_' + lib, load_data=2).f_get_from_runs(
            'z', fast_access=True) == {run_name(0): 0.5, run_name(1): 1.5}


@needs_tables
def test_scalar_leaves_are_group_attributes(tmp_path):
    """Format 2: one-scalar leaves live as attributes of their group; everything else (and
    every name that could clash with an attribute of ours or PyTables') stays a dataset."""
    filename = path_for('hdf5', tmp_path)
    traj = mp.Trajectory('attrs', storage_service=service('hdf5', filename))
    as_attrs = {'f': 0.1, 'nan': float('nan'), 'inf': -float('inf'), 'i': 2 ** 63 - 1,
                'neg': -2 ** 63, 'b': False, 's': ' héllo wörld ', 'tab': 'a\tb\nc',
                'longest': 'x' * 1024}
    as_datasets = {'huge': 2 ** 63, 'longer': 'y' * 1025, 'empty': '', 'nul': 'a\x00b',
                   'X': 1, 'mp_mine': 2, 'cplx': 1 + 2j, 'raw': b'bytes', 'lst': [1, 2]}
    for name, value in {**as_attrs, **as_datasets}.items():
        traj.f_add_parameter(name, value, comment='about ' + name)
    traj.f_add_result('annotated', 5).v_annotations.f_set(unit='m')
    traj.f_store()
    with tables.open_file(filename) as h:
        group = h.get_node('/attrs/parameters')
        meta = json.loads(str(group._v_attrs.mp_leaves))
        assert set(meta) == set(as_attrs)
        assert meta['s'] == ['Parameter', 'data', 'str', 'about s']
        assert {n for n in as_datasets} <= set(group._v_children)
        assert 'annotated' in h.get_node('/attrs/results')._v_children
    many = {'c%03d' % i: i for i in range(120)}  # more than one mp_leaves attribute holds
    for name, value in many.items():
        traj.f_add_config(name, value, comment=name * 300)
    traj.f_store()
    with tables.open_file(filename) as h:
        group = h.get_node('/attrs/config')
        packed = json.loads(str(group._v_attrs.mp_leaves))
        assert 0 < len(packed) < 120 and len(packed) + len(group._v_children) == 120
    back = load(filename, name='attrs', load_data=2)
    for name, value in many.items():
        assert back.f_get('config.' + name).f_get() == value
        assert back.f_get('config.' + name).v_comment == name * 300
    for name, value in {**as_attrs, **as_datasets}.items():
        got = back.f_get('parameters.' + name)
        assert type(got.f_get()) is type(value), name
        assert got.f_get() == value or value != value, name
        assert got.v_comment == 'about ' + name
    assert back.f_get('results.annotated').v_annotations.unit == 'm'


@needs_tables
def test_text_too_long_for_an_hdf5_attribute_is_refused_before_writing(tmp_path):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, square_job, n=2)
    before = open(filename, 'rb').read()
    huge = 'c' * 70000
    env = make_env('hdf5', filename, overwrite_file=True)
    env.v_trajectory.f_add_parameter('x', 0, comment=huge)
    env.v_trajectory.f_explore({'x': [1, 2]})
    with pytest.raises(mp.StorageError, match='parameters.x: its comment is 70000 bytes'):
        env.f_run(square_job)
    assert open(filename, 'rb').read() == before  # not even overwrite_file removed it
    assert not os.path.exists(filename + '.journal')

    def long_comment_at_run_2(traj):
        traj.f_add_result('z', traj.x, comment=huge if traj.v_idx == 2 else 'fine')

    env = make_env('hdf5', filename, name='other')
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [0, 1, 2, 3]})
    with pytest.raises(mp.StorageError, match='run_00000002.z: its comment is 70000'):
        env.f_run(long_comment_at_run_2)
    got = load(filename, name='other', load_data=2)  # the runs before it are stored
    assert [got.f_is_completed(i) for i in range(4)] == [True, True, False, False]


def alternating_class_job(traj):
    if traj.v_idx % 2:
        traj.f_add_result(mp.PickleResult, 'z', traj.x)
    else:
        traj.f_add_result('z', traj.x)


@needs_tables
def test_a_column_of_thousands_of_runs_in_two_classes_round_trips(tmp_path):
    """Which runs have another class than the first is a dataset, not an attribute (an
    attribute holds at most 64 KB)."""
    filename = path_for('hdf5', tmp_path)
    n = 6000
    sweep('hdf5', filename, alternating_class_job, n=n)
    got = load(filename, name='traj', load_data=2)
    assert type(got.f_get('results.runs.%s.z' % run_name(n - 1))) is mp.PickleResult
    assert type(got.f_get('results.runs.%s.z' % run_name(n - 2))) is mp.Result
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i for i in range(n)}


@needs_tables
def test_file_title_is_the_files_title_for_pytables_and_h5py(tmp_path):
    filename = str(tmp_path / 'titled.hdf5')
    traj = mp.Trajectory('t', filename=filename, file_title='My experiment')
    traj.f_add_parameter('x', 1)
    traj.f_store()
    with tables.open_file(filename) as f:
        assert f.title == 'My experiment'
    other = mp.Trajectory('u', filename=filename)   # a later store keeps it
    other.f_add_parameter('y', 2)
    other.f_store()
    with tables.open_file(filename) as f:
        assert f.title == 'My experiment'
    untitled = str(tmp_path / 'untitled.hdf5')
    traj = mp.Trajectory('first', filename=untitled)
    traj.f_store()
    with tables.open_file(untitled) as f:
        assert f.title == 'first'                  # (as before: the first trajectory's name)


@needs_tables
def test_format1_file_still_loads(fixture_file):
    """A file of minipypet 0.1 (format 1: every leaf a dataset; made by
    testdata/make_format1_fixture.py) loads with the same values."""
    traj = load(fixture_file('minipypet_format1.hdf5'), name='old', load_data=2)
    assert traj.v_comment == 'written in format 1' and len(traj) == 3
    assert traj.f_get('parameters.n').f_get() == 3 and traj.n == 3
    assert traj.f_get('parameters.flag').f_get() is True
    assert traj.f_get('parameters.label').f_get() == 'héllo '
    assert traj.f_get('parameters.label').v_comment == 'text'
    assert traj.f_get('parameters.values').f_get() == [1, 2, 3]
    assert traj.f_get('parameters.x').f_get_range() == [1.0, 2.0, 3.0]
    assert traj.f_get('config.cfg').f_get() == 'config value'
    assert traj.f_get('results.summary').f_get() == 'trajectory-level'
    assert traj.f_get_from_runs('z', fast_access=True) == {
        run_name(i): (i + 1.0) * 3 for i in range(3)}
    assert traj.f_is_completed()


# ---------------------------------------------------------------------------------------------
# Bad files: newer format, missing, truncated, foreign, not minipypet
# ---------------------------------------------------------------------------------------------
def test_newer_format_version_is_refused(file_backend, tmp_path):
    filename, _ = rich_sweep(file_backend, tmp_path)
    if file_backend == 'hdf5':
        with tables.open_file(filename, 'a') as h:
            h.root._v_attrs.minipypet_format = 99
        mp._h5_stamp(filename)  # (as a newer minipypet would have written it)
    else:
        content = read_pickle_file(filename)
        content['format'] = 99
        with open(filename, 'wb') as f:
            f.write(PICKLE_MAGIC)
            pickle.dump(content, f)
    for attempt in (lambda: load(filename, name='traj'),
                    lambda: mp.Trajectory('traj', storage_service=service(
                        file_backend, filename)).f_load(name='traj')):
        with pytest.raises(mp.VersionMismatchError) as info:
            attempt()
        message = str(info.value)
        assert '99' in message and str(getattr(mp, 'FORMAT_VERSION', 1)) in message
        assert os.path.basename(filename) in message


def truncated(backend, tmp_path):
    filename, _ = rich_sweep(backend, tmp_path)
    size = os.path.getsize(filename)
    with open(filename, 'r+b') as f:
        f.truncate(size // 2)
    return filename


def foreign(backend, tmp_path):
    filename = path_for(backend, tmp_path, 'foreign')
    with open(filename, 'w') as f:
        f.write('this is a text file, not data\n' * 20)
    return filename


def not_ours(backend, tmp_path):
    filename = path_for(backend, tmp_path, 'notours')
    if backend == 'hdf5':
        with tables.open_file(filename, 'w') as h:
            h.create_group('/', 'traj')
            h.create_array('/traj', 'data', obj=[1, 2, 3])
    else:
        with open(filename, 'wb') as f:
            pickle.dump({'trajectories': {}}, f)
    return filename


def missing(backend, tmp_path):
    return path_for(backend, tmp_path, 'missing')


@pytest.mark.parametrize('make', [missing, truncated, foreign, not_ours])
def test_bad_files_give_storage_error_naming_the_file(file_backend, tmp_path, make):
    filename = make(file_backend, tmp_path)
    attempts = [lambda: load(filename, name='traj'),
                lambda: mp.Trajectory('traj', storage_service=service(
                    file_backend, filename)).f_load(name='traj')]
    for attempt in attempts:
        with pytest.raises(mp.StorageError) as info:
            attempt()
        assert os.path.basename(filename) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Unsupported data fails when it is added
# ---------------------------------------------------------------------------------------------
FUZZ_WORKER = """
import contextlib, io, json, os, random, shutil, sys, importlib
mp = importlib.import_module(os.environ['MINIPYPET_MODULE'])
folder, backend, seed, start, stop = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
SUFFIX = {'hdf5': '.hdf5', 'pickle': '.pkl'}[backend]


def job(traj):
    traj.f_add_result('z', traj.x * 1.5, comment='z of x')
    traj.f_add_result('s', 'run %d' % traj.x)


def values(filename):
    traj = mp.load_trajectory(filename=filename, load_all=2)
    out = {leaf.v_full_name: repr(leaf.f_get() if isinstance(leaf, mp.BaseParameter)
                                  else leaf.f_to_dict()) for leaf in traj.f_iter_leaves()}
    out['runs'] = repr([(traj.f_is_completed(i), traj.f_get_run_information(i)['finish_timestamp'])
                        for i in range(len(traj))])
    return out


orig = os.path.join(folder, 'orig' + SUFFIX)
if not os.path.exists(orig):
    env = mp.Environment('t', add_time=False, filename=orig, log_config=None,
                         storage_service={'hdf5': mp.HDF5StorageService,
                                          'pickle': mp.PickleStorageService}[backend])
    env.v_trajectory.f_add_parameter('x', 0, comment='the x')
    env.v_trajectory.f_add_parameter('name', 'abc')
    env.v_trajectory.f_add_result('top', 1.5, comment='a top-level result')
    env.v_trajectory.f_explore({'x': [1, 2, 3, 4, 5, 6]})
    env.f_run(job)
want = values(orig)
for case in range(start, stop):
    rnd = random.Random('%s:%s:%d' % (seed, backend, case))
    work = os.path.join(folder, 'case')
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    damaged = os.path.join(work, 'orig' + SUFFIX)
    shutil.copy(orig, damaged)
    shutil.copytree(orig + '.segments', damaged + '.segments')
    target = rnd.choice([damaged] + sorted(os.path.join(damaged + '.segments', n)
                                           for n in os.listdir(damaged + '.segments')))
    with open(target, 'rb') as f:
        data = bytearray(f.read())
    if rnd.random() < 0.3:
        how = 'truncated at %d' % rnd.randrange(len(data))
        data = data[:int(how.split()[-1])]
    else:
        spots = [rnd.randrange(len(data)) for _ in range(rnd.randint(1, 4))]
        how = 'bits flipped at %s' % spots
        for pos in spots:
            data[pos] ^= 1 << rnd.randrange(8)
    with open(target, 'wb') as f:
        f.write(bytes(data))
    print(json.dumps({'case': case, 'damage': '%s %s' % (os.path.basename(target), how)}),
          flush=True)
    try:
        outcome = 'same' if values(damaged) == want else 'WRONG VALUES'
    except mp.PypetError as exc:
        outcome = 'error' if os.path.basename(damaged) in str(exc) else 'error not naming ' \
            'the file: %s' % exc
    except Exception as exc:
        outcome = 'RAW %s: %s' % (type(exc).__name__, exc)
    if case % 8 == 0:  # the command line: one line on stderr, exit status 0 or 1
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = mp.main(['show', damaged])
        if code not in (0, 1) or 'Traceback' in err.getvalue() or \
                len(err.getvalue().strip().splitlines()) > 1:
            outcome = 'CLI %d %r' % (code, err.getvalue()[:300])
    print(json.dumps({'case': case, 'outcome': outcome}), flush=True)
"""


def fuzz_damaged_files(tmp_path, backend, seed, n):
    """Run n seeded damage cases in subprocesses (a crash inside the HDF5 library kills only
    its process: it is recorded, and the next process goes on after that case)."""
    script = tmp_path / 'fuzz_worker.py'
    script.write_text(FUZZ_WORKER)
    outcomes, start = {}, 0
    while start < n:
        proc = subprocess.run([sys.executable, str(script), str(tmp_path), backend, str(seed),
                               str(start), str(n)], env=subprocess_env(), capture_output=True,
                              text=True, timeout=600)
        current = None
        for line in proc.stdout.splitlines():
            rec = json.loads(line)
            if 'outcome' in rec:
                outcomes[rec['case']] = (rec['outcome'], current['damage'])
                current = None
            else:
                current = rec
        if proc.returncode == 0:
            break
        assert current is not None, proc.stderr[-3000:]
        outcomes[current['case']] = ('CRASH (exit %d)' % proc.returncode, current['damage'])
        start = current['case'] + 1
    assert len(outcomes) == n
    return outcomes


FUZZ_CASES = int(os.environ.get('MINIPYPET_FUZZ_CASES', '0'))


@pytest.mark.timeout(900)
@pytest.mark.parametrize('n', [150, pytest.param(FUZZ_CASES or 2000, marks=pytest.mark.stress)])
def test_damaged_files_give_a_storage_error_never_wrong_values(file_backend, tmp_path, n,
                                                                request):
    # of 200 corrupted HDF5 files, 63 raised raw exceptions, 6 crashed the interpreter
    # inside the HDF5 library, 14 HDF5 and 16 pickle-backend ones loaded with wrong values,
    # and `minipypet show` printed a traceback 67 times (issue 15). 150 cases per backend
    # here; -m stress (or MINIPYPET_FUZZ_CASES) runs more.
    if n != 150 and 'stress' not in (request.config.getoption('markexpr', '') or '') and \
            not FUZZ_CASES:
        pytest.skip('the long fuzzer runs with -m stress (or MINIPYPET_FUZZ_CASES set)')
    outcomes = fuzz_damaged_files(tmp_path, file_backend, 15, n)
    bad = {case: o for case, o in outcomes.items() if o[0] not in ('same', 'error')}
    assert not bad, bad
    assert sum(o[0] == 'error' for o in outcomes.values()) > n * 0.9  # (most damage shows)


@needs_tables
def test_a_big_file_is_checked_by_the_check_command_not_at_every_load(tmp_path, monkeypatch):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, array_job, n=4)
    segment = h5_segments(filename, 'traj')[0]
    out = io.StringIO()
    assert mp.main(['check', filename], out) == 0 and 'traj is intact (4 runs' in out.getvalue()
    h5py = pytest.importorskip('h5py')
    with h5py.File(segment, 'r') as h:            # damage the run data's last chunk
        dset = h['results/runs/z/z']
        where = dset.id.get_chunk_info(dset.id.get_num_chunks() - 1).byte_offset
    with open(segment, 'r+b') as f:
        f.seek(where + 3)
        byte = f.read(1)
        f.seek(where + 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(mp, '_VERIFY_MAX', [1000])  # every file is "big" now
    mp._VERIFIED.clear()
    assert len(load(filename, load_results=1)) == 4  # (a skeleton reads no run data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert mp.main(['check', filename], io.StringIO()) == 1
    assert os.path.basename(segment) in err.getvalue() and 'damaged' in err.getvalue()
    assert mp._VERIFY_MAX == [1000]               # (the limit is back after the check)
    monkeypatch.setattr(mp, '_VERIFY_MAX', [128 << 20])
    with pytest.raises(mp.StorageError, match='damaged'):
        load(filename, load_results=2)


@pytest.mark.timeout(60)
def test_a_file_another_process_holds_open_for_writing_is_not_called_damaged(tmp_path):
    # it was reported as "truncated or corrupt?" (issue 15)
    pytest.importorskip('tables')
    filename = str(tmp_path / 'held.hdf5')
    traj = mp.Trajectory('t', filename=filename, add_time=False)
    traj.f_add_parameter('x', 1)
    traj.f_store()
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time, tables\n'
                               'f = tables.open_file(sys.argv[1], "a")\n'
                               'print("open", flush=True)\ntime.sleep(60)', filename],
                              stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == 'open'
        with pytest.raises(mp.StorageError) as info:
            load(filename)
        message = str(info.value)
        assert 'open for writing in another process' in message and filename in message
        assert 'corrupt' not in message and 'damaged' not in message
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.timeout(120)
def test_a_mangled_cnt_gives_a_resume_error(tmp_path, J, monkeypatch):
    # a mangled .cnt gave a raw KeyError or TypeError 7 times in 45 (issue 15)
    filename, cnt, saved = crashed_with_a_saved_cnt(tmp_path, J)
    monkeypatch.chdir(tmp_path)
    with open(saved, 'rb') as f:
        good = f.read()
    outcomes = collections.Counter()
    for case in range(45):
        rnd = random.Random('cnt:%d' % case)
        data = bytearray(good)
        if case % 3 == 0:
            data = data[:rnd.randrange(len(data))]
        else:
            for _ in range(rnd.randint(1, 3)):
                data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        for allow_pickle in (None, True):
            with open(cnt, 'wb') as f:
                f.write(bytes(data))
            try:
                mp._read_continue_file(cnt, True, allow_pickle=allow_pickle)
                outcomes['read', allow_pickle] += 1
            except mp.ResumeError as exc:
                assert 't.cnt' in str(exc)
                outcomes['refused', allow_pickle] += 1
    assert outcomes['refused', None] == 45, outcomes  # (its signature no longer checks out)


def test_unsupported_data_fails_at_add_time(backend, tmp_path):
    traj = mp.Trajectory('traj', storage_service=service(backend, path_for(backend,
                                                                             tmp_path)))
    with pytest.raises(mp.UnsupportedTypeError) as info:
        traj.f_add_result('bad', object())
    assert 'bad' in str(info.value) and 'object' in str(info.value)
    with pytest.raises(mp.UnsupportedTypeError) as info:
        traj.f_add_result('nested', [1, {2: StoragePoint(1, 2)}])
    assert 'nested' in str(info.value) and 'Point' in str(info.value)
    with pytest.raises(mp.UnsupportedTypeError) as info:
        traj.f_add_parameter('p', object())
    assert 'p' in str(info.value)
    res = traj.f_add_result('ok', 1)
    with pytest.raises(mp.UnsupportedTypeError) as info:
        res.later = (1, [StoragePoint(0, 0)])
    assert 'later' in str(info.value)
    assert isinstance(info.value, TypeError)


def reserved_name_job(traj):
    traj.f_add_result('r', **{'a__idx': traj.x, 'b': 1})


@pytest.mark.parametrize('item', ['a__idx', 'a__offsets'])
def test_item_names_the_layout_reserves_fail_at_add_time(backend, tmp_path, item):
    """Such names used to pass f_add_result and then break every HDF5 checkpoint."""
    traj = mp.Trajectory('traj', storage_service=service(backend, path_for(backend,
                                                                             tmp_path)))
    with pytest.raises(mp.InvalidNameError, match=item):
        traj.f_add_result('r', **{item: 1})
    with pytest.raises(mp.InvalidNameError, match=item):
        traj.f_add_result('r2', 1).f_set_single(item, 2)


def test_a_reserved_item_name_in_a_run_does_not_break_checkpoints(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    try:
        sweep(file_backend, filename, reserved_name_job, n=2)
    except mp.PypetError:
        pass  # refusing the name is fine; leaving a trajectory that cannot be stored is not
    traj = load(filename, load_data=2)
    traj.f_store()  # the trajectory must stay storable
    assert load(filename, load_data=2).v_name == 'traj'


def object_job(traj):
    if traj.v_idx == 2:
        traj.f_add_result('oops', object())
    traj.f_add_result('z', traj.x)


def test_unsupported_data_in_a_run_fails_in_that_run(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    with pytest.raises(mp.UnsupportedTypeError) as info:
        sweep(backend, filename, object_job, n=4)
    assert 'oops' in str(info.value) and 'object' in str(info.value)
    if backend != 'lazy':
        got = load(filename, load_data=2)
        assert [got.f_is_completed(i) for i in range(4)] == [True, True, False, False]


# ---------------------------------------------------------------------------------------------
# Durability: kill -9
# ---------------------------------------------------------------------------------------------
SCRIPT = '''
import importlib, os, signal, sys, time
mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))
backend, filename, kill_at, n, delay, calls, mode = sys.argv[1:8]
kill_at, n, delay = int(kill_at), int(n), float(delay)


def job(traj):
    idx = traj.v_idx
    with open(calls, 'a') as f:
        f.write('%d\\n' % idx)
    if idx == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if delay:
        time.sleep(delay)
    traj.f_add_result('z', idx * idx + 0.5, comment='square')
    traj.f_add_result('label', 'run %d' % idx)
    return idx


cls = {'pickle': mp.PickleStorageService, 'hdf5': mp.HDF5StorageService}[backend]
env = mp.Environment('crash', add_time=False, storage_service=cls, filename=filename,
                     log_config=None, report_progress=False, continuable=True)
if mode == 'run' or mode == 'storeloop':
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(n))})
    if mode == 'storeloop':
        traj.f_add_result('blob', 'x' * 3000000)
    env.f_run(job)
    if mode == 'storeloop':
        for i in range(100000):
            traj.f_store()
            print('stored', i, flush=True)
else:
    env.f_continue_run(os.path.join(os.path.dirname(os.path.abspath(filename)), 'crash.cnt'))
print('done', flush=True)
'''


def subprocess_env():
    env = dict(os.environ)
    env['MINIPYPET_MODULE'] = mp.__name__
    env['PYTHONPATH'] = os.pathsep.join([p for p in sys.path if p] +
                                        [os.path.dirname(os.path.abspath(mp.__file__))])
    return env


def script_args(tmp_path, backend, kill_at, n, delay, mode):
    script = tmp_path / 'sweep_script.py'
    if not script.exists():
        script.write_text(SCRIPT)
    filename = path_for(backend, tmp_path, 'crash')
    calls = str(tmp_path / 'calls.txt')
    return filename, calls, [sys.executable, str(script), backend, filename, str(kill_at),
                             str(n), str(delay), calls, mode]


def run_script(tmp_path, backend, kill_at, n, delay=0.0, mode='run'):
    filename, calls, args = script_args(tmp_path, backend, kill_at, n, delay, mode)
    proc = subprocess.run(args, env=subprocess_env(), capture_output=True, timeout=120)
    return filename, calls, proc


def journal_records(path):
    """The intact records of a journal, read with the documented framing."""
    with open(path, 'rb') as f:
        data = f.read()
    assert data.startswith(b'MPJOURNAL1\n')
    pos = data.index(b'\n', len(b'MPJOURNAL1\n')) + 1
    records, bounds = [], []
    while pos + 8 <= len(data):
        length, crc = struct.unpack_from('<II', data, pos)
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        records.append(pickle.loads(body))
        bounds.append((pos, pos + 8 + length))
        pos += 8 + length
    return records, bounds


def test_a_sweep_folder_copied_or_moved_resumes_the_data_beside_its_cnt(file_backend,
                                                                         tmp_path):
    # (the .cnt named the data file by its absolute path: a copy resumed the original, and
    # after a move the resume said there was nothing to resume)
    for how in ('copy', 'move'):
        first, second = tmp_path / (how + '_a'), tmp_path / (how + '_b')
        first.mkdir()
        filename, _, proc = run_script(first, file_backend, kill_at=6, n=10)
        assert proc.returncode == -signal.SIGKILL
        before = sorted(os.listdir(str(first)))
        (shutil.copytree if how == 'copy' else shutil.move)(str(first), str(second))
        got = mp.Environment(log_config=None, report_progress=False).f_continue_run(
            str(second / 'crash.cnt'), job=square_job)
        assert [i for i, _ in got] == list(range(10))
        moved = os.path.join(str(second), os.path.basename(filename))
        assert load(moved, load_all=2, name='crash').f_is_completed()
        if how == 'copy':  # (the original is as the crash left it)
            assert sorted(os.listdir(str(first))) == before
            assert not load(filename, name='crash').f_is_completed()


def test_a_damaged_trajectory_record_in_the_journal_is_named_not_loaded_as_empty(
        file_backend, tmp_path):
    # A sweep killed before its first checkpoint: the journal alone holds the trajectory (its
    # first record) and the runs. With that record damaged the runs cannot be placed: it
    # loaded as a trajectory without parameters, and the resume blamed a changed exploration
    filename, _, proc = run_script(tmp_path, file_backend, kill_at=12, n=20)
    assert proc.returncode == -signal.SIGKILL and not os.path.exists(filename)
    journal = filename + '.journal'
    first = journal_records(journal)[1][0]  # (start, end) of the trajectory's record
    with open(journal, 'r+b') as f:
        f.seek((first[0] + first[1]) // 2)
        byte = f.read(1)
        f.seek((first[0] + first[1]) // 2)
        f.write(bytes([byte[0] ^ 1]))
    for call in (lambda: load(filename, load_all=2, name='crash'),
                 lambda: mp.Environment(log_config=None, report_progress=False)
                 .f_continue_run(str(tmp_path / 'crash.cnt'), job=square_job)):
        with pytest.raises(mp.StorageError, match='not the record of the trajectory itself'):
            call()
    assert not os.path.exists(filename)  # (nothing folded: a checkpoint would have written it)


def assert_data_file_intact(backend, filename):
    """The data file is whole, or (killed before the first checkpoint) not there at all and
    the journal holds everything."""
    if not os.path.exists(filename):
        assert os.path.exists(journal_path(filename))
        return
    with open(filename, 'rb') as f:
        head = f.read(len(PICKLE_MAGIC))
    if backend == 'hdf5':
        assert_stamped_hdf5(filename)
        assert tables.is_hdf5_file(filename)
        with tables.open_file(filename) as h:
            assert '/crash' in h
    else:
        assert head == PICKLE_MAGIC
        assert isinstance(read_pickle_file(filename), dict)


def assert_runs(filename, n, done):
    """Exactly the runs in `done` are completed, each with its correct results."""
    traj = load(filename, name='crash', load_data=2)
    assert len(traj) == n
    assert [i for i in range(n) if traj.f_is_completed(i)] == sorted(done)
    zs = traj.f_get_from_runs('z', fast_access=True, use_indices=True)
    assert {k: v for k, v in zs.items()} == {i: i * i + 0.5 for i in done}
    for i in done:
        assert traj.f_get('results.runs.%s.label' % run_name(i)).f_get() == 'run %d' % i
    return traj


def assert_no_run_twice(filename):
    if not os.path.exists(journal_path(filename)):
        return
    records, _ = journal_records(journal_path(filename))
    runs = [r[2] for r in records if r[0] == 'run']
    assert len(runs) == len(set(runs)), 'a run is stored twice in the journal: %s' % runs


def call_counts(calls):
    with open(calls) as f:
        counts = {}
        for line in f:
            counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


@posix_only
@pytest.mark.timeout(240)
@pytest.mark.parametrize('kill_at', [0, 3, 7])
def test_sigkill_inside_a_run_loses_no_finished_run_and_resumes(file_backend, tmp_path,
                                                                kill_at):
    n = 10
    filename, calls, proc = run_script(tmp_path, file_backend, kill_at, n)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert_data_file_intact(file_backend, filename)
    assert_no_run_twice(filename)
    traj = assert_runs(filename, n, range(kill_at))
    assert [i for i in range(n) if not traj.f_is_completed(i)] == list(range(kill_at, n))
    # resume: exactly the missing runs are recomputed
    _, _, proc = run_script(tmp_path, file_backend, -1, n, mode='resume')
    assert proc.returncode == 0, proc.stderr.decode()
    assert_runs(filename, n, range(n))
    counts = call_counts(calls)
    assert counts == {i: 2 if i == kill_at else 1 for i in range(n)}
    assert not os.path.exists(journal_path(filename))
    assert_data_file_intact(file_backend, filename)


@posix_only
@pytest.mark.timeout(240)
def test_sigkill_from_outside_during_a_long_sweep(file_backend, tmp_path):
    n = 5000
    filename, calls, args = script_args(tmp_path, file_backend, -1, n, 0.001, 'run')
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        seen = 0
        while time.time() < deadline:
            if os.path.exists(calls):
                seen = len(call_counts(calls))
                if seen >= 300:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert seen >= 300
    assert_data_file_intact(file_backend, filename)
    assert_no_run_twice(filename)
    traj = load(filename, name='crash', load_data=1)
    done = [i for i in range(n) if traj.f_is_completed(i)]
    assert done == list(range(len(done))), 'completed runs are not a prefix'
    assert len(done) >= seen - 1
    assert len(done) < n
    assert_runs(filename, n, done)


@posix_only
@pytest.mark.timeout(240)
@pytest.mark.parametrize('delay', [0.0, 0.005, 0.02])
def test_sigkill_during_a_checkpoint_leaves_a_loadable_file(file_backend, tmp_path, delay):
    """Kill the writer while it writes the new file (its temp file exists): the data file
    is still the old, whole one."""
    n = 20
    filename, calls, args = script_args(tmp_path, file_backend, -1, n, 0.0, 'storeloop')
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    killed_writing = False
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            names = os.listdir(str(tmp_path))
            if os.path.basename(filename) in names and any(
                    x.endswith('.tmp') for x in names):
                time.sleep(delay)
                killed_writing = True
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert killed_writing and proc.returncode == -signal.SIGKILL
    assert_data_file_intact(file_backend, filename)
    traj = assert_runs(filename, n, range(n))
    assert len(traj.f_get('results.blob').f_get()) == 3000000


def crash_at(tmp_path, backend, kill_at, n=10):
    filename, calls, proc = run_script(tmp_path, backend, kill_at, n)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    return filename


def assert_damage_warned_then_resumed(filename, tmp_path, backend, caplog, intact):
    """A damaged journal: exactly the intact runs load, with a warning; a resume completes."""
    assert_runs(filename, 10, intact)
    _, texts = load_capturing_warnings(filename, caplog)
    assert any('journal' in t for t in texts), 'no warning about the damage: %s' % texts
    _, _, proc = run_script(tmp_path, backend, -1, 10, mode='resume')
    assert proc.returncode == 0, proc.stderr.decode()
    assert_runs(filename, 10, range(10))


def load_capturing_warnings(filename, caplog):
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with caplog.at_level('WARNING'):
            traj = load(filename, name='crash', load_data=2)
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records
                                                if r.levelname in ('WARNING', 'ERROR')]
    return traj, texts


@posix_only
@pytest.mark.timeout(240)
def test_torn_last_journal_record_loads_intact_runs_and_warns(file_backend, tmp_path,
                                                              caplog):
    filename = crash_at(tmp_path, file_backend, 7)
    records, bounds = journal_records(journal_path(filename))
    assert [r[2] for r in records if r[0] == 'run'] == list(range(7))
    assert records[-1][0] == 'run' and records[-1][2] == 6
    with open(journal_path(filename), 'r+b') as f:
        f.truncate(bounds[-1][1] - 5)
    assert_damage_warned_then_resumed(filename, tmp_path, file_backend, caplog, range(6))


@posix_only
@pytest.mark.timeout(240)
def test_garbage_in_the_middle_of_the_journal_loses_only_the_damaged_record(file_backend,
                                                                           tmp_path, caplog):
    filename = crash_at(tmp_path, file_backend, 7)
    records, bounds = journal_records(journal_path(filename))
    start, end = [b for r, b in zip(records, bounds) if r[0] == 'run' and r[2] == 3][0]
    with open(journal_path(filename), 'r+b') as f:
        f.seek(start + 8 + (end - start - 8) // 2)
        f.write(b'\xde\xad\xbe\xef' * 4)
    # the reader resynchronises on the next intact record: only run 3 is lost
    assert_damage_warned_then_resumed(filename, tmp_path, file_backend, caplog,
                                      [0, 1, 2, 4, 5, 6])


@posix_only
@pytest.mark.timeout(240)
def test_lost_runs_are_found_by_their_completed_flags(file_backend, tmp_path):
    filename = crash_at(tmp_path, file_backend, 5)
    traj = load(filename, name='crash', load_data=2)
    missing_runs = [i for i in range(len(traj)) if not traj.f_is_completed(i)]
    assert missing_runs == list(range(5, 10))
    # recompute them in this process: an Environment on the loaded trajectory runs only them
    env = mp.Environment(traj, log_config=None, report_progress=False)
    for i in missing_runs:
        assert not traj.f_is_completed(i)

    def job(t):
        t.f_add_result('z', t.v_idx * t.v_idx + 0.5)
        t.f_add_result('label', 'run %d' % t.v_idx)
    env.f_run(job)
    assert_runs(filename, 10, range(10))


@posix_only
@pytest.mark.timeout(240)
def test_a_record_another_process_appends_during_a_sweep_is_folded(file_backend, tmp_path):
    """The sweep's own checkpoint folds what it appended without reading the journal back,
    but only while the journal holds nothing else: a record another process appends in the
    middle of the sweep reaches the file too."""
    import multiprocessing
    filename = path_for(file_backend, tmp_path)
    journal = filename + '.journal'

    def inject():
        record = ('leaf', 'traj', 'results.injected', 'Result', 'from elsewhere',
                  {'injected': 42}, None, True)
        mp._Journal(journal).append(record)
        os._exit(0)

    def job(traj):
        if traj.v_idx == 1:
            proc = multiprocessing.get_context('fork').Process(target=inject)
            proc.start()
            proc.join()
            assert proc.exitcode == 0
        traj.f_add_result('z', traj.x * 2)

    sweep(file_backend, filename, job, n=4)
    got = load(filename, name='traj', load_data=2)
    assert got.f_get('results.injected').f_get() == 42
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: 2 * i for i in range(4)}
    assert not os.path.exists(journal)


def test_a_checkpoint_reads_the_journal_when_another_writer_appended_last(file_backend,
                                                                          tmp_path):
    filename = path_for(file_backend, tmp_path)
    svc = service(file_backend, filename)
    traj = mp.Trajectory('traj', storage_service=svc)
    traj.f_add_parameter('x', 1)
    traj.f_store(only_init=True)  # the journal's first record, ours
    record = ('leaf', 'traj', 'results.injected', 'Result', '', {'injected': 42}, None, True)
    mp._Journal(filename + '.journal').append(record)  # another writer's, after ours
    traj.f_store()
    assert load(filename, name='traj', load_data=2).f_get('results.injected').f_get() == 42


def test_a_crashed_journal_survives_another_trajectorys_checkpoint(file_backend, tmp_path):
    filename = crash_at(tmp_path, file_backend, 3, n=6)
    env = make_env(file_backend, filename, name='other')
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2]})
    env.f_run(square_job)
    assert_data_file_intact(file_backend, filename)
    assert_runs(filename, 6, range(3))
    assert load(filename, name='other', load_data=2).f_is_completed()
    _, _, proc = run_script(tmp_path, file_backend, -1, 6, mode='resume')
    assert proc.returncode == 0, proc.stderr.decode()
    assert_runs(filename, 6, range(6))
    assert load(filename, name='other', load_data=2).f_get_from_runs(
        'z', fast_access=True, use_indices=True) == {0: 1.5, 1: 4.5}


# ---------------------------------------------------------------------------------------------
# Storage engine: segments, folds as runs come, journal records, full disks
# ---------------------------------------------------------------------------------------------
def segment_files(filename):
    folder = filename + '.segments'
    return {name: (os.stat(os.path.join(folder, name)).st_ino,
                   os.stat(os.path.join(folder, name)).st_mtime_ns,
                   os.path.getsize(os.path.join(folder, name)))
            for name in os.listdir(folder)} if os.path.isdir(folder) else {}


def array_job(traj):
    traj.f_add_result('arr', [float(traj.x)] * 4, comment='a list per run')
    traj.f_add_result('z', traj.x * 0.5)


def test_an_expansion_writes_one_new_segment_and_leaves_the_others(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, array_job, n=6)
    before = segment_files(filename)
    assert len(before) == 1
    traj.f_expand({'x': [6, 7]})
    env.f_run(array_job)
    after = segment_files(filename)
    assert len(after) == 2 and all(after[k] == v for k, v in before.items()), \
        'a segment written before was changed'
    got = load(filename, load_data=2)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i * 0.5 for i in range(8)}
    assert got.f_is_completed() and len(got) == 8


def test_f_load_item_reads_only_the_rows_asked_for(tmp_path, monkeypatch):
    pytest.importorskip('tables')
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, array_job, n=5)
    traj = load(filename, load_results=1)
    read = []
    original = mp._decode_node

    def spy(node, *args):
        read.append(node._v_pathname)
        return original(node, *args)
    monkeypatch.setattr(mp, '_decode_node', spy)
    traj.f_load_item('results.runs.%s.arr' % run_name(3))
    assert traj.f_get('results.runs.%s.arr' % run_name(3)).arr == [3.0] * 4
    assert not [p for p in read if p.endswith('/arr')], 'a whole column was read: %s' % read
    assert traj.f_get('results.runs.%s.arr' % run_name(2)).f_is_empty()


@pytest.mark.parametrize('mode', [0, 1])
def test_auto_load_reads_a_column_at_a_time(file_backend, tmp_path, mode):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, array_job, n=6)
    load(filename, load_data=2).f_delete_item('results.runs.%s.z' % run_name(4))
    got = load(filename, load_results=mode)
    want = {i: i * 0.5 for i in range(6) if i != 4}
    assert got.f_get_from_runs('z', fast_access=True, auto_load=True, use_indices=True) == want
    assert list(got.f_get_from_runs('z', fast_access=True, auto_load=True)) == [
        run_name(i) for i in sorted(want)]
    assert got.f_get_from_runs('arr', fast_access=True, auto_load=True,
                               use_indices=True)[5] == [5.0] * 4


def test_auto_load_values_are_a_mapping_by_run_made_as_asked(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, multiply_job, n=25)
    traj.f_expand({'x': [25, 26]})
    env.f_run(multiply_job)                          # a second segment
    got = load(filename, load_results=0).f_get_from_runs('z', fast_access=True,
                                                         auto_load=True)
    want = {run_name(i): 2 * i for i in range(27)}
    assert got == want and dict(got) == want and len(got) == 27
    assert list(got) == list(want) and list(got.items()) == list(want.items())
    assert list(got.values()) == list(want.values()) and len(got.values()) == 27
    assert type(got[run_name(3)]) is int and got[run_name(26)] == 52
    assert run_name(3) in got and 'run_3' not in got and 3 not in got
    for bad in ('run_3', run_name(99), 3, None):
        with pytest.raises(KeyError):
            got[bad]
    text = repr(got)
    assert text.startswith("{'%s': 0, '%s': 2" % (run_name(0), run_name(1)))
    assert text.endswith('... (27 runs)}')
    by_index = load(filename, load_results=0).f_get_from_runs(
        'z', fast_access=True, auto_load=True, use_indices=True)
    assert by_index[5] == 10 and 'run_00000005' not in by_index
    if np is not None:
        assert by_index[np.int64(5)] == 10


@needs_tables
def test_run_information_is_read_in_blocks_and_one_commit_is_kept_once(tmp_path, monkeypatch):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, multiply_job, n=10)
    whole = load(filename, load_results=0)
    with tables.open_file(h5_segments(filename, 'traj')[0]) as h:
        assert '_runs_hexsha' not in h.root  # (every run has the same SHA-1: one attribute)
        assert h.root._v_attrs.mp_hexsha == whole.f_get_run_information(0)[
            'short_environment_hexsha']
    monkeypatch.setattr(mp, '_RUNS_BLOCK', 3)
    blocks = load(filename, load_results=0)
    for i in range(10):
        assert blocks.f_get_run_information(i) == whole.f_get_run_information(i)


def fails_at_nine(traj):
    if traj.x == 9:
        raise ValueError('nine')
    traj.f_add_result('z', traj.x * 2)


@needs_tables
def test_run_information_is_read_when_first_asked_for_and_in_segment_order(tmp_path):
    filename = path_for('hdf5', tmp_path)
    env, traj = sweep('hdf5', filename, multiply_job, n=6, record_failed_runs=True)
    traj.f_expand({'x': [6, 7]})
    env.f_run(multiply_job)
    truth = [traj.f_get_run_information(i) for i in range(8)]
    loaded = load(filename, load_results=0)      # every segment a span of completed runs
    assert '_loader' in vars(loaded._runs)       # nothing of it read yet ...
    assert list(loaded._runs.completed) == [1] * 8
    assert [loaded.f_get_run_information(i) for i in range(8)] == truth  # ... now all
    assert '_loader' not in vars(loaded._runs) and truth[7]['timestamp'] > 0
    later = load(filename, load_results=0)       # expanded before it is read: read first
    later.f_expand({'x': [8]})
    assert later.f_get_run_information(7) == truth[7] and len(later._runs) == 9
    assert pickle.loads(pickle.dumps(load(filename)._runs)).hexsha == [
        t['short_environment_hexsha'] for t in truth]
    traj.f_expand({'x': [8, 9, 10]})
    env.f_run(fails_at_nine)  # a failed run: no span
    traj.f_expand({'x': [11, 12]})
    env.f_run(multiply_job)                      # 9 again, 11, 12: no span
    truth = [traj.f_get_run_information(i) for i in range(13)]
    spans = []
    for path in h5_segments(filename, 'traj'):
        with tables.open_file(path) as h:
            spans.append((getattr(h.root._v_attrs, 'mp_runs_span', None),
                          getattr(h.root.results.runs.z._v_attrs, 'mp_idx_span', None)))
    assert spans == [('0:6', '0:6'), ('6:8', '6:8'), (None, None), (None, None)]
    mixed = load(filename, load_results=0)       # (read whole, as the segments come)
    assert [mixed.f_get_run_information(i) for i in range(13)] == truth
    assert load(filename, load_results=2).f_get_from_runs('z', fast_access=True) == {
        run_name(i): 2 * i for i in range(13)}


@needs_numpy
def test_run_information_rows_in_any_order_and_of_several_commits():
    table = {'timestamp': [], 'finish_timestamp': [], 'completed': [], 'hexsha': [],
             'error': []}
    runs = {'idx': np.array([4, 1, 2]), 'timestamp': np.array([4.0, 1.0, 2.0]),
            'finish_timestamp': np.array([4.5, 1.5, 2.5]), 'completed': np.array([1, 0, 1]),
            'short_environment_hexsha': np.array([b'bbb', b'aaa ', b'bbb'])}
    mp._fill_runs(table, runs, {1: 'boom'}, np)
    assert list(table['timestamp']) == [0.0, 1.0, 2.0, 0.0, 4.0]
    assert list(table['completed']) == [0, 0, 1, 0, 1]
    assert table['hexsha'] == ['', 'aaa', 'bbb', '', 'bbb']
    assert table['error'] == ['', 'boom', '', '', '']
    mp._fill_runs(table, {k: v[1:] if k != 'idx' else np.array([5, 6]) for k, v in
                          runs.items()}, {}, np)         # in order: whole slices
    assert list(table['finish_timestamp'])[5:] == [1.5, 2.5] and table['hexsha'][5:] == [
        'aaa', 'bbb'] and len(table['error']) == 7


def test_a_run_item_deleted_is_gone_and_comes_back_when_stored_again(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, array_job, n=4)
    traj = load(filename, load_data=2)
    traj.f_delete_item('results.runs.%s.z' % run_name(1))
    got = load(filename, load_data=2)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 0.0, 2: 1.0, 3: 1.5}
    got.f_add_result('results.runs.%s.z' % run_name(1), 42.0)
    got.f_store_item('results.runs.%s.z' % run_name(1))
    again = load(filename, load_data=2)
    assert again.f_get_from_runs('z', fast_access=True, use_indices=True)[1] == 42.0
    assert again.f_get_from_runs('arr', fast_access=True, use_indices=True)[1] == [1.0] * 4


def shape_job(traj):
    import numpy
    traj.f_add_result('a', numpy.arange(3 if traj.x < 3 else 5, dtype=float) + traj.x)
    traj.f_add_result('s', 'x' * (1 + traj.x * 40))  # longer texts than the first batch's


def test_batches_that_change_shape_start_a_new_segment(file_backend, tmp_path, monkeypatch):
    pytest.importorskip('numpy')
    monkeypatch.setattr(mp, '_SEGMENT_BUDGET', 1)  # every run its own batch
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, shape_job, n=6)
    got = load(filename, load_data=2)
    arrays = got.f_get_from_runs('a', fast_access=True, use_indices=True)
    for i in range(6):
        assert arrays[i].tolist() == list(np.arange(3 if i < 3 else 5, dtype=float) + i)
    assert got.f_get_from_runs('s', fast_access=True, use_indices=True) == {
        i: 'x' * (1 + i * 40) for i in range(6)}


def last_run_differs_job(traj):
    traj.f_add_result('arr', np.arange(3.0 if traj.x < 9 else 5.0) + traj.x)


def test_a_segment_started_by_the_last_flush_is_kept(file_backend, tmp_path, monkeypatch):
    pytest.importorskip('numpy')
    # ~674 bytes a run by _row_bytes: batches of runs 0-2, 3-5, 6-8, and run 9 (another
    # shape: a new segment) written out by the checkpoint itself
    monkeypatch.setattr(mp, '_SEGMENT_BUDGET', 1500)
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, last_run_differs_job, n=10)
    got = load(filename, load_data=2)
    arrays = got.f_get_from_runs('arr', fast_access=True, use_indices=True)
    assert sorted(arrays) == list(range(10)) and got.f_is_completed()
    assert arrays[9].tolist() == [9.0, 10.0, 11.0, 12.0, 13.0]
    assert not os.path.exists(filename + '.journal')


def new_column_job(traj):
    if traj.x == 5:  # a column that only run 5 has, whose row fills the batch: written out
        traj.f_add_result('note', [1.0] * 200)  # there, with v's floats: a new segment
    traj.f_add_result('big', [float(traj.x)] * 50)
    traj.f_add_result('v', traj.x if traj.x < 4 else float(traj.x))  # int, later float


def test_rows_after_a_new_column_that_split_the_segment_are_kept(file_backend, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(mp, '_SEGMENT_BUDGET', 3000)
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, new_column_job, n=12)
    got = load(filename, load_data=2)
    assert got.f_get_from_runs('big', fast_access=True, use_indices=True) == {
        i: [float(i)] * 50 for i in range(12)}
    assert sorted(got.f_get_from_runs('v', fast_access=True, use_indices=True)) == \
        list(range(12))


def test_a_run_row_stored_twice_in_one_fold(file_backend, tmp_path, monkeypatch):
    monkeypatch.setattr(mp, '_SEGMENT_BUDGET', 1)  # every record written out at once
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, array_job, n=4)
    traj = load(filename, load_data=2)
    extra = traj.f_add_result('runs.%s.extra' % run_name(0))  # empty for now
    traj.f_store_item(extra)
    traj.f_store_item(traj.f_add_result('runs.%s.more' % run_name(1), 1.0))
    extra.f_set(extra=[1.0, 2.0])
    traj.f_store_item(extra, store_data=mp.OVERWRITE_DATA)  # the same row again, with data
    traj.f_store()
    got = load(filename, load_data=2)
    assert got.f_get('results.runs.%s.extra' % run_name(0)).extra == [1.0, 2.0]
    skeleton = load(filename, load_results=1)
    skeleton.f_load_item('results.runs.%s.extra' % run_name(0))
    assert skeleton.f_get('results.runs.%s.extra' % run_name(0)).extra == [1.0, 2.0]


def test_copy_to_twice_leaves_a_copy_that_loads(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, array_job, n=3)
    target = path_for(file_backend, tmp_path, 'copy')
    env.v_trajectory.v_storage_service.copy_to(target)
    traj.f_expand({'x': [3]})
    env.f_run(array_job)
    env.v_trajectory.v_storage_service.copy_to(target)  # over the earlier copy
    assert load(target, load_data=2).f_get_from_runs('z', fast_access=True,
                                                     use_indices=True) == {
        0: 0.0, 1: 0.5, 2: 1.0, 3: 1.5}


def journal_record(idx):
    return mp._RunRecord('run', 't', idx, (1.0 + idx, 2.0 + idx, 1, '', ''), [(
        'results.runs.%s.z' % run_name(idx), 'Result', '', {'z': idx + 0.5}, None)])


@posix_only
def test_a_run_appended_while_another_process_checkpoints_is_never_lost(tmp_path,
                                                                        monkeypatch):
    """(review) An append that finds its journal folded and removed opens a new one; a
    checkpoint of another process in the moment before the folder lock is had again folds
    and removes that one too: the record must go into a journal that still exists."""
    filename = str(tmp_path / 'f.pkl')
    service = mp.PickleStorageService(filename)
    traj = mp.Trajectory('t', storage_service=service, add_time=False)
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [0, 1, 2]})
    traj.f_store()
    checkpoint = [sys.executable, '-c', 'import sys; sys.path.insert(0, %r); import %s as mp;'
                  ' mp.PickleStorageService(%r).checkpoint()' % (
                      os.path.dirname(mp.__file__), mp.__name__, filename)]
    service._store_run(journal_record(0))
    subprocess.run(checkpoint, check=True, timeout=120)  # (folds the journal, removes it)
    opened, fired = mp._open_folder, []

    def in_the_gap(path):  # (the new journal is made, the folder lock not had yet)
        if not fired:
            fired.append(subprocess.run(checkpoint, check=True, timeout=120))
        return opened(path)
    monkeypatch.setattr(mp, '_open_folder', in_the_gap)
    service._store_run(journal_record(1))
    monkeypatch.setattr(mp, '_open_folder', opened)
    service._store_run(journal_record(2))
    assert fired
    got = mp.load_trajectory(filename=filename, name='t', load_all=mp.LOAD_DATA)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 0.5, 1: 1.5, 2: 2.5}


def test_folding_as_runs_come_and_reading_the_journal_agree(file_backend, tmp_path,
                                                           monkeypatch):
    live = path_for(file_backend, tmp_path, 'live')
    sweep(file_backend, live, array_job, n=5, name='live')
    monkeypatch.setattr(mp._FileService, '_live_record', lambda *args: None)
    streamed = path_for(file_backend, tmp_path, 'streamed')
    sweep(file_backend, streamed, array_job, n=5, name='streamed')
    a, b = load(live, load_data=2), load(streamed, load_data=2)
    for name in ('z', 'arr'):
        assert a.f_get_from_runs(name, fast_access=True) == \
            b.f_get_from_runs(name, fast_access=True)
    assert [a.f_get_run_information(i)['completed'] for i in range(5)] == [1] * 5


def test_segments_no_main_file_lists_are_removed_at_the_next_store(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, array_job, n=3)
    listed = set(segment_files(filename))
    folder = filename + '.segments'
    for stray in ('orphan_000009_deadbeef' + SUFFIX[file_backend], 'killed.tmp'):
        with open(os.path.join(folder, stray), 'wb') as f:
            f.write(b'left by a crash')
    traj.f_add_result('trajectory_level', 1.0)
    traj.f_store()
    assert set(segment_files(filename)) == listed
    assert load(filename, load_data=2).f_get_from_runs('z', fast_access=True,
                                                       use_indices=True) == {
        0: 0.0, 1: 0.5, 2: 1.0}


def test_a_format_2_file_is_converted_at_its_next_store(tmp_path):
    pytest.importorskip('tables')
    path = str(tmp_path / 'old.hdf5')
    with gzip.open(os.path.join(TESTDATA, 'minipypet_0.2.0_shape.hdf5.gz'), 'rb') as src, \
            open(path, 'wb') as dst:
        shutil.copyfileobj(src, dst)
    name = mp.load_trajectory(filename=path, load_all=0).v_name
    before = mp.load_trajectory(filename=path, name=name, load_all=2)
    values = {k: before.f_get_from_runs(k, fast_access=True) for k in ('z',)}
    before.f_add_result('added_later', 1.0)
    before.f_store()
    with tables.open_file(path) as h:
        assert int(h.root._v_attrs.minipypet_format) == mp.FORMAT_VERSION
        assert '/%s/mp_segments' % name in h
    after = mp.load_trajectory(filename=path, name=name, load_all=2)
    assert {k: after.f_get_from_runs(k, fast_access=True) for k in values} == values
    assert after.f_get('added_later').f_get() == 1.0


def test_big_rows_compressed_in_threads_read_back_everywhere(tmp_path):
    pytest.importorskip('tables')
    filename = path_for('hdf5', tmp_path)

    def job(traj):
        rng = np.random.default_rng(traj.x)
        traj.f_add_result('noise', rng.random(40000))  # 320 KB a row: direct chunk writes
        traj.f_add_result('smooth', np.linspace(0, traj.x, 40000))
    sweep('hdf5', filename, job, n=4)
    got = load(filename, load_data=2)
    for i in range(4):
        assert np.array_equal(got.f_get('results.runs.%s.noise' % run_name(i)).noise,
                              np.random.default_rng(i).random(40000))
    segment = h5_segments(filename, 'traj')[0]
    with tables.open_file(segment) as h:
        assert h.root.results.runs.noise.noise.filters.complevel == 9
        assert np.array_equal(h.root.results.runs.smooth.smooth[3], np.linspace(0, 3, 40000))
    if h5py is not None:
        with h5py.File(filename, 'r') as h:
            seg = h['traj/segments'][sorted(h['traj/segments'])[0]]
            assert np.array_equal(seg['results/runs/noise/noise'][2],
                                  np.random.default_rng(2).random(40000))


def test_chunks_written_directly_across_batches_read_back_everywhere(tmp_path):
    pytest.importorskip('tables')
    path = str(tmp_path / 'chunks.h5')
    rng = np.random.default_rng(1)
    batches = [np.zeros((300, 1000), np.int32)] + [  # a batch's rows start mid-chunk
        rng.integers(0, 2 ** 31, (300, 1000), dtype=np.int32) for _ in range(3)] + [
        np.arange(300000.0).reshape(300, 1000)[:, :1000].astype(np.int32)]
    with tables.open_file(path, 'w') as f:
        group = f.create_group('/', 'g')
        for batch in batches:
            mp._h5_append(f, group, 'a', batch, 'ndarray',
                          tables.Filters(9, 'zlib', shuffle=True))
        assert group.a.chunkshape[0] not in (1, 300)  # (whole chunks and partial ones)
    want = np.concatenate(batches)
    with tables.open_file(path) as f:
        assert np.array_equal(f.root.g.a[:], want)
    if h5py is not None:
        with h5py.File(path, 'r') as f:
            assert np.array_equal(f['g/a'][()], want)


def test_the_journal_never_takes_zeros_for_a_record(tmp_path):
    path = str(tmp_path / 'j.journal')
    journal = mp._Journal(path, fsync_interval=None)
    for i in range(3):
        journal.append(('leaf', 't', 'results.r%d' % i, 'Result', '', {'r': 0.0}, None, True))
    journal.close()
    good = os.path.getsize(path)
    with open(path, 'ab') as f:
        f.write(b'\x00' * 8)  # a torn tail of zeros (a 0.0 or a zero array being written)
    jid, records, end, skipped = mp._Journal.read(path)
    assert len(records) == 3 and end == good and skipped == 8
    with open(path, 'ab') as f:
        f.write(b'\x00' * 64)
    journal = mp._Journal(path, fsync_interval=None)
    journal.append(('delete', 't', ['results.r0'], False))  # after the damage
    journal.close()
    assert [r[0] for r in mp._Journal.read(path)[1]] == ['leaf'] * 3 + ['delete']
    mp._Journal.repair(path)
    assert [r[0] for r in mp._Journal.read(path)[1]] == ['leaf'] * 3 + ['delete']


def test_a_sweep_whose_journal_tail_is_zeros_loads_and_resumes(file_backend, tmp_path):
    filename = crash_at(tmp_path, file_backend, 3, n=6)
    with open(filename + '.journal', 'ab') as f:
        f.write(b'\x00' * 8)
    assert_runs(filename, 6, range(3))
    _, _, proc = run_script(tmp_path, file_backend, -1, 6, mode='resume')
    assert proc.returncode == 0, proc.stderr.decode()
    assert_runs(filename, 6, range(6))


FLAKY = {'fail': True}


def flaky_job(traj):
    traj.f_add_result('z', traj.x * 2.0)
    if traj.x == 2 and FLAKY['fail']:
        raise ValueError('a transient failure')
    return traj.x


@pytest.mark.parametrize('record', [True, False])
def test_a_run_that_failed_after_adding_a_result_runs_again(file_backend, tmp_path, record):
    filename = path_for(file_backend, tmp_path)
    FLAKY['fail'] = True
    env = make_env(file_backend, filename, record_failed_runs=record)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [0, 1, 2, 3]})
    try:
        env.f_run(flaky_job)
    except Exception:
        assert not record
    FLAKY['fail'] = False
    env.f_run(flaky_job)  # the runs not completed, again: the retry replaces what run 2 left
    got = load(filename, load_data=2)
    assert got.f_is_completed()
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i * 2.0 for i in range(4)}


@contextlib.contextmanager
def small_disk(tmp_path, size='2m'):
    """A real filesystem of `size` (tmpfs; needs root), grown to 64 MB by grow()."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs', str(mount)],
            capture_output=True).returncode:
        pytest.skip('mounting a small tmpfs needs root')

    def grow():
        subprocess.run(['mount', '-o', 'remount,size=64m', str(mount)], check=True)
    try:
        yield str(mount), grow
    finally:
        subprocess.run(['umount', '-l', str(mount)], capture_output=True)


def full_disk_sweep(folder, file_backend, n, **kwargs):
    """An environment for a sweep of x in range(n) into `folder` (a small disk), resumable
    from folder/cnt/full.cnt."""
    env = mp.Environment('full', filename=folder + '/full' + SUFFIX[file_backend],
                         add_time=False, log_config=None, report_progress=False,
                         continuable=True, continue_folder=folder + '/cnt',
                         storage_service=CLASSES[file_backend], **kwargs)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': list(range(n))})
    return env


FULL_DISK_SCRIPT = '''
import sys, minipypet as mp
def job(traj):
    traj.f_add_result('arr', [float(traj.x)] * 20000)  # ~200 KB a run in the journal
    return traj.x
if sys.argv[2] == 'run':
    env = mp.Environment('full', filename=sys.argv[1] + '/full' + sys.argv[3],
                         add_time=False, log_config=None, report_progress=False,
                         continuable=True, continue_folder=sys.argv[1] + '/cnt',
                         storage_service=mp.PickleStorageService if sys.argv[3] == '.pkl'
                         else mp.HDF5StorageService)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': list(range(30))})
    try:
        env.f_run(job)
    except mp.StorageError as exc:
        print('STORAGE', exc)
else:
    env = mp.Environment(continuable=True, log_config=None, report_progress=False)
    print('RESUMED', len(env.f_continue_run(sys.argv[1] + '/cnt/full.cnt')))
'''


def test_a_full_disk_stops_the_sweep_and_the_resume_completes_it(file_backend, tmp_path):
    script = tmp_path / 'full.py'
    script.write_text(FULL_DISK_SCRIPT)
    suffix = SUFFIX[file_backend]
    with small_disk(tmp_path) as (folder, grow):
        out = subprocess.run([sys.executable, str(script), folder, 'run', suffix],
                             cwd=str(tmp_path), env=subprocess_env(), capture_output=True,
                             timeout=120)
        text = out.stdout.decode()
        assert 'STORAGE' in text and 'ENOSPC' in text, text + out.stderr.decode()
        journalled = load(folder + '/full' + suffix, load_data=2)
        done = [i for i in range(30) if journalled.f_is_completed(i)]
        assert done and len(done) < 30
        for i in done:  # every run counted as done has its data
            assert journalled.f_get('results.runs.%s.arr' % run_name(i)).arr == \
                [float(i)] * 20000
        grow()
        out = subprocess.run([sys.executable, str(script), folder, 'resume', suffix],
                             cwd=str(tmp_path), env=subprocess_env(), capture_output=True,
                             timeout=120)
        assert 'RESUMED 30' in out.stdout.decode(), out.stderr.decode()
        got = load(folder + '/full' + suffix, load_data=2)
        assert got.f_is_completed()
        assert got.f_get_from_runs('arr', fast_access=True, use_indices=True) == {
            i: [float(i)] * 20000 for i in range(30)}


@posix_only
def test_a_file_at_its_size_limit_is_named_as_that_and_the_resume_completes_it(file_backend,
                                                                             tmp_path):
    # EFBIG (ulimit -f here; a FAT disk's 4 GB alike) is no full disk: "free some space"
    # would send the user the wrong way. A write beyond the limit is cut short silently.
    import resource
    script = tmp_path / 'full.py'
    script.write_text(FULL_DISK_SCRIPT)
    suffix, folder = SUFFIX[file_backend], str(tmp_path / 'data')
    os.mkdir(folder)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    out = subprocess.run([sys.executable, str(script), folder, 'run', suffix],
                         cwd=str(tmp_path), env=subprocess_env(), capture_output=True,
                         timeout=120, preexec_fn=limit)
    text = out.stdout.decode()
    assert 'STORAGE' in text and 'EFBIG' in text and 'ulimit -f' in text, \
        text + out.stderr.decode()
    assert 'Free some space' not in text and 'Raise that limit' in text
    journalled = load(folder + '/full' + suffix, load_data=2)
    done = [i for i in range(30) if journalled.f_is_completed(i)]
    assert done and len(done) < 30
    for i in done:
        assert journalled.f_get('results.runs.%s.arr' % run_name(i)).arr == [float(i)] * 20000
    out = subprocess.run([sys.executable, str(script), folder, 'resume', suffix],
                         cwd=str(tmp_path), env=subprocess_env(), capture_output=True,
                         timeout=120)
    assert 'RESUMED 30' in out.stdout.decode(), out.stderr.decode()
    assert load(folder + '/full' + suffix, load_data=2).f_is_completed()


@posix_only
def test_a_store_that_reaches_the_file_size_limit_is_named_as_that(file_backend, tmp_path):
    # (HDF5's close leaves the file short without an error: named as a torn write before)
    import resource
    script = tmp_path / 'big.py'
    script.write_text(
        'import sys, minipypet as mp\n'
        'traj = mp.Trajectory("t", filename=sys.argv[1], add_time=False)\n'
        'traj.f_add_parameter("x", 1)\n'
        'traj.f_add_result("big", bytes(range(256)) * 10000)\n'
        'try:\n'
        '    traj.f_store()\n'
        'except mp.StorageError as exc:\n'
        '    print("STORAGE", exc)\n')

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    out = subprocess.run([sys.executable, str(script), path_for(file_backend, tmp_path)],
                         cwd=str(tmp_path), env=subprocess_env(), capture_output=True,
                         timeout=120, preexec_fn=limit)
    text = out.stdout.decode()
    assert 'STORAGE' in text and 'EFBIG' in text and 'ulimit -f' in text, \
        text + out.stderr.decode()
    assert 'Nothing stored before is changed' in text


def padded_job(traj, pad):
    traj.f_add_result('y', traj.x * 2 + len(pad) * 0)


def expand_once(traj, results):
    return {'x': [10, 11]} if len(traj) == 3 else None


def test_a_cnt_for_added_runs_that_does_not_fit_removes_the_one_before(tmp_path):
    # Post-processing added runs; their .cnt does not fit. The .cnt left was the one of the
    # runs before, which cannot resume the expanded trajectory (the resume blamed a changed
    # exploration): it is removed, and the error says how to run the added runs
    with small_disk(tmp_path, size='3m') as (folder, grow):
        filename = folder + '/pp.pkl'
        env = mp.Environment('pp', filename=filename, add_time=False, log_config=None,
                             report_progress=False, continuable=True,
                             continue_folder=folder, storage_service=mp.PickleStorageService)
        env.v_trajectory.f_add_parameter('x', 0)
        env.v_trajectory.f_explore({'x': [0, 1, 2]})
        env.f_add_postprocessing(expand_once)
        pad = os.urandom(1700000)  # (in the .cnt: two of them do not fit)
        with pytest.raises(mp.StorageError, match=r'ENOSPC.*\.cnt of the runs before is '
                                                  r'removed.*f_run the job'):
            env.f_run(padded_job, pad)
        assert not os.path.exists(folder + '/pp.cnt')
        grow()
        traj = load(filename, load_all=2, name='pp')
        assert len(traj) == 5 and [traj.f_is_completed(i) for i in range(5)] == [
            True, True, True, False, False]
        again = mp.Environment(trajectory=traj, log_config=None, report_progress=False)
        again.f_run(padded_job, b'')
        assert load(filename, load_all=2, name='pp').f_get_from_runs(
            'y', fast_access=True, use_indices=True) == {0: 0, 1: 2, 2: 4, 3: 20, 4: 22}


def fails_once_job(traj):
    if traj.v_idx == 1 and not os.path.exists(traj.flag):
        traj.f_add_result('partial', -1.0)  # what the failed attempt leaves
        raise ValueError('boom')
    traj.f_add_result('z', traj.x + 1)
    return traj.x + 1


def test_a_failed_run_retried_by_a_parallel_resume_keeps_nothing_of_the_failed_attempt(
        tmp_path):
    # (the resume loads the runs unmade: the retried run's group was not removed, and the
    # pickle backend's final store put the failed attempt's result back)
    def env_for():
        return mp.Environment('t', add_time=False, filename=str(tmp_path / 't.pkl'),
                              storage_service=mp.PickleStorageService, log_config=None,
                              report_progress=False, record_failed_runs=True,
                              continue_folder=str(tmp_path), multiproc=True, ncores=2,
                              use_pool=True, wrap_mode='LOCK')
    env = env_for()
    env.v_trajectory.f_add_parameter('x', 0.0)
    env.v_trajectory.f_add_parameter('flag', str(tmp_path / 'fixed'))
    env.v_trajectory.f_explore({'x': [0.0, 1.0, 2.0, 3.0]})
    env.f_run(fails_once_job)
    assert 'partial' in load(str(tmp_path / 't.pkl'), load_all=2, name='t').f_get(
        'results.runs.run_00000001')
    open(str(tmp_path / 'fixed'), 'w').close()
    env_for().f_continue_run(str(tmp_path / 't.cnt'))
    run = load(str(tmp_path / 't.pkl'), load_all=2, name='t').f_get(
        'results.runs.run_00000001')
    assert run.z == 2.0 and 'partial' not in run


def stops_at_11_job(traj):
    traj.f_add_result('y', traj.x * 2)
    if traj.v_idx == 11:  # (Ctrl+C in the last run of a round, graceful_exit: it ends)
        os.kill(os.getpid(), signal.SIGINT)


def two_more(traj, results):
    return {'x': [len(traj), len(traj) + 1]} if len(traj) < 20 else None


@posix_only
def test_a_graceful_stop_between_post_processing_rounds_keeps_the_cnt(tmp_path):
    # (every run made so far was complete, so the .cnt went: the search could not resume)
    env = mp.Environment('t', add_time=False, filename=str(tmp_path / 't.pkl'),
                         storage_service=mp.PickleStorageService, log_config=None,
                         report_progress=False, graceful_exit=True,
                         continue_folder=str(tmp_path))
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': list(range(10))})
    env.f_add_postprocessing(two_more)
    assert len(env.f_run(stops_at_11_job)) == 12
    assert os.path.exists(str(tmp_path / 't.cnt'))
    got = mp.Environment(log_config=None, report_progress=False).f_continue_run(
        str(tmp_path / 't.cnt'))
    assert len(got) == 20
    assert load(str(tmp_path / 't.pkl'), load_all=2, name='t').f_get_from_runs(
        'y', fast_access=True, use_indices=True) == {i: 2 * i for i in range(20)}


def random_list_job(traj):
    traj.f_add_result('arr', [random.random() for _ in range(8000)])  # (incompressible)


def test_a_full_disk_at_the_store_leaves_no_file_open_and_the_same_process_resumes(
        file_backend, tmp_path):
    # The journal fits, the end-of-sweep segment does not: its temporary file must be
    # closed and removed (a deleted file held open keeps its space: the resume then
    # failed with ENOSPC again, in the same process)
    with small_disk(tmp_path) as (folder, grow):
        env = full_disk_sweep(folder, file_backend, 20)
        with pytest.raises(mp.StorageError, match='ENOSPC'):
            env.f_run(random_list_job)

        def held_deleted():
            fds = [os.path.join('/proc/self/fd', fd) for fd in os.listdir('/proc/self/fd')]
            links = [os.readlink(fd) for fd in fds if os.path.islink(fd)]
            return [link for link in links if link.startswith(folder) and 'deleted' in link]
        assert held_deleted() == []
        grow()
        resumed = mp.Environment(continuable=True, log_config=None, report_progress=False)
        assert len(resumed.f_continue_run(folder + '/cnt/full.cnt')) == 20
        assert held_deleted() == []
        got = load(folder + '/full' + SUFFIX[file_backend], load_data=2)
        assert got.f_is_completed() and len(got.f_get_from_runs('arr', fast_access=True)) == 20


def big_return_job(traj):
    traj.f_add_result('y', traj.x * 2)
    return bytes([traj.x]) * 300000  # (the .cnt's results journal fills the disk)


def test_a_full_disk_for_the_return_values_stops_the_sweep_and_loses_none(file_backend,
                                                                           tmp_path):
    """The return values a resume gives back go to a journal beside the .cnt: a full disk
    there stops the sweep (it was taken for an unpicklable value, and the runs' values
    came back None), and the resume returns every run's value."""
    with small_disk(tmp_path) as (folder, grow):
        env = full_disk_sweep(folder, file_backend, 12)
        with pytest.raises(mp.StorageError, match='ENOSPC'):
            env.f_run(big_return_job)
        grow()
        resumed = mp.Environment(continuable=True, log_config=None, report_progress=False)
        got = resumed.f_continue_run(folder + '/cnt/full.cnt')
        assert sorted(got) == [(i, bytes([i]) * 300000) for i in range(12)]


@pytest.mark.timeout(120)
@needs_fork
@pytest.mark.parametrize('wrap_mode', ['LOCK', 'QUEUE'])
def test_a_full_disk_stops_a_pool_that_records_failed_runs(file_backend, tmp_path,
                                                             wrap_mode, caplog):
    """record_failed_runs goes on past a failing job, not past a failing store: a full
    disk stops the sweep (it went on, every later run 'failed' too, and f_run returned
    as if the sweep were done); the resume completes it."""
    with small_disk(tmp_path) as (folder, grow):
        env = full_disk_sweep(folder, file_backend, 40, multiproc=True, ncores=2,
                              wrap_mode=wrap_mode, start_method='fork',
                              record_failed_runs=True)
        with pytest.raises(mp.StorageError, match='ENOSPC'):
            env.f_run(random_list_job)
        assert 'going on' not in caplog.text
        grow()
        resumed = mp.Environment(continuable=True, log_config=None, report_progress=False)
        assert len(resumed.f_continue_run(folder + '/cnt/full.cnt')) == 40
        got = load(folder + '/full' + SUFFIX[file_backend], load_data=2)
        assert got.f_is_completed() and len(got.f_get_from_runs('arr', fast_access=True)) == 40


def test_a_full_disk_before_the_first_run_leaves_no_cnt_to_resume(file_backend, tmp_path):
    """The store before the runs does not fit: the sweep never started, so no .cnt is
    left to resume it (a resume of it failed with 'holds no trajectory'), and the error
    says to run it again. The same for new runs of a stored trajectory (the .cnt written
    for them could not be resumed either): the .cnt is as it was."""
    with small_disk(tmp_path) as (folder, grow):
        filename = folder + '/full' + SUFFIX[file_backend]
        env = mp.Environment('full', filename=filename, add_time=False, log_config=None,
                             report_progress=False, continuable=True,
                             continue_folder=folder + '/cnt',
                             storage_service=CLASSES[file_backend])
        env.v_trajectory.f_add_parameter('x', 0)
        env.v_trajectory.f_add_parameter('big', bytes(range(256)) * 12000)  # 3 MB
        env.v_trajectory.f_explore({'x': list(range(3))})
        with pytest.raises(mp.StorageError, match=r"runs of 'full' could not start.*"
                                                  r"ENOSPC.*\.cnt is as it was.*run them"):
            env.f_run(double_x)
        assert not os.path.exists(folder + '/cnt/full.cnt')
        assert not os.path.exists(filename + '.journal')  # (nor an empty journal)
        grow()
        env.f_run(double_x)
        got = load(filename, load_data=2)
        assert got.f_get_from_runs('y', fast_access=True, use_indices=True) == {
            0: 0, 1: 2, 2: 4}
        # new runs of the stored trajectory, whose store before them does not fit
        subprocess.run(['mount', '-o', 'remount,size=4m', folder], check=True)
        traj = load(filename, load_data=2)
        traj.f_expand({'x': [3, 4]})
        traj.f_add_parameter('bigger', bytes(range(256)) * 16000)  # 4 MB
        again = mp.Environment(trajectory=traj, add_time=False, log_config=None,
                               report_progress=False, continuable=True,
                               continue_folder=folder + '/cnt')
        with pytest.raises(mp.StorageError, match=r"\.cnt is as it was"):
            again.f_run(double_x)
        assert not os.path.exists(folder + '/cnt/full.cnt')  # (the first sweep ended)
        grow()
        assert len(load(filename, load_data=2)) == 3


# ---------------------------------------------------------------------------------------------
# Randomized kill -9 stress: sizes x backends x modes, killed at random times
# ---------------------------------------------------------------------------------------------
# A sweep runs in a subprocess (in its own session, so a kill reaches every process of it) and
# is killed with SIGKILL at a seeded random point. The points come from the phase times of an
# uninterrupted sweep of the same configuration (measured once per session) and are anchored
# on the progress the sweep logs, so that they are hit whatever the machine's load:
#   before   in the interpreter's start-up (1 in 4), or between the environment being ready
#            and the first run (storing the trajectory, writing the .cnt, starting the pool)
#   mid      within one run's time after the k-th run started (k random)
#   store    after the last run ended, within the time the end-of-sweep store takes (+10%)
#   uniform  anywhere in the length of a whole sweep plus 15% (then it may have finished:
#            its file is checked all the same)
# Sometimes the resume is killed too (at a random phase of its own). Then a fresh subprocess
# resumes with env.f_continue_run(<.cnt>); where the kill came before the .cnt was written
# there is nothing to resume and the sweep is started anew (overwrite_file=True, as the
# trajectory may be in the file already). The file must then load with
# load_trajectory(load_results=2) and hold every run 0..n-1 completed exactly once, each with
# the value an uninterrupted sweep gives (computed here from the parameters; arrays from a
# numpy generator seeded per run), the returned results must be those of an uninterrupted
# sweep, and nothing may be left beside the data file (no *.tmp, no journal, no .cnt). After
# every kill: no run is journalled twice, no completed run is lost, and the next sweep runs
# exactly the runs that are not completed on disk.
#
# Configurations: small (200 runs, a float result each) or large (15-30 runs, a 1-4 MB uint8
# array each, random bytes but for a 4 KB block of zeros) x hdf5/pickle x serial, pool+QUEUE,
# pool+LOCK (multiproc=True, ncores=2, use_pool=True). The phase times of a sweep are
# measured once per configuration and session. Without PyTables (the stdlib-only CI job) the
# short version runs its HDF5 trials on pickle, and without numpy the arrays are bytes.
#
#   test_kill9_stress_short  runs by default (CI): 6 configurations, one kill each plus a kill
#                            of two of the resumes = 8 kills (fewer when a sweep ends first),
#                            ~20-25 s on 2 cores (~15 s in the stdlib-only job).
#   test_kill9_stress        marker `stress`, skipped unless selected with -m stress (or when
#                            MINIPYPET_STRESS_KILLS is set):
#                                python -m pytest -m stress test_minipypet.py
#                            MINIPYPET_STRESS_KILLS (default 60): the number of trials, a sweep
#                            killed in each (a few finish first), spread evenly over the 12
#                            configurations; about a third of their resumes are killed as
#                            well (60 trials: ~70 kills), and in the pool modes a quarter of
#                            the first kills hit the main process only (its workers must die
#                            with it). ~3 minutes on 2 cores with the default 60.
#   MINIPYPET_STRESS_SEED    the base seed (random by default). Every failure message names it
#                            with the trial's seed, kill time and what happened; the same seed
#                            gives the same configurations and kill times (not the same timing
#                            of the machine, so not always the same point of the sweep).
#   MINIPYPET_STRESS_LOG     a file to append one JSON line per trial to (where each kill
#                            landed, how long it took; the failure and story of a failed one),
#                            to see what a run covered.
#
# Uses from earlier in this file: mp, np and tables (None when missing), posix_only, run_name,
# subprocess_env, journal_runs, kill_group, session_alive; the autouse fixture
# _no_leaked_children applies to these tests too.

STRESS_BASE_SEED = int(os.environ.get('MINIPYPET_STRESS_SEED') or
                       random.SystemRandom().randrange(10 ** 9))
STRESS_KILLS = int(os.environ.get('MINIPYPET_STRESS_KILLS') or 60)
STRESS_MODES = {
    'serial': {},
    'poolQ': dict(multiproc=True, ncores=2, use_pool=True, wrap_mode='QUEUE'),
    'poolL': dict(multiproc=True, ncores=2, use_pool=True, wrap_mode='LOCK'),
}
STRESS_CONFIGS = ['%s-%s-%s' % (size, backend, mode) for size in ('small', 'large')
                  for backend in ('hdf5', 'pickle') for mode in STRESS_MODES]
STRESS_SHORT = [  # (configuration, where the first kill aims, kill the resume too)
    ('small-hdf5-serial', 'before', False),
    ('large-hdf5-poolQ', 'mid', True),
    ('small-hdf5-poolL', 'store', False),
    ('large-pickle-serial', 'store', False),
    ('small-pickle-poolQ', 'mid', True),
    ('large-pickle-poolL', 'uniform', False),
]
STRESS_PHASES = ('before', 'mid', 'store', 'uniform', 'uniform')
STRESS_SMALL_RUNS = 200
_STRESS_CALIBRATION = {}  # (configuration, runs, bytes) -> phase times of a whole sweep

STRESS_JOBS_SRC = r'''
"""The job and runner of minipypet's randomized kill stress test."""
import importlib
import json
import os
import time
import zlib

mp = importlib.import_module(os.environ.get('MINIPYPET_MODULE', 'minipypet'))


def note(path, line):
    """One O_APPEND write: whole lines even when two workers write at once."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def job(traj, log, kind):
    """kind 'small': z = x*x + y; 'ndarray' (or 'bytes' without numpy): `nbytes` random
    bytes from a generator seeded with (seed, x), 4 KB of them zero (as real data has runs of
    zero bytes: zeros, small integers); returns z or the data's CRC-32."""
    idx = traj.v_idx
    note(log, 's %d %r\n' % (idx, time.time()))
    if kind == 'small':
        value = traj.x * traj.x + traj.y
        traj.f_add_result('z', value, comment='x*x+y')
    else:
        if kind == 'ndarray':
            import numpy as np
            rng = np.random.default_rng([traj.seed, traj.x])
            data = rng.integers(0, 256, traj.nbytes, dtype=np.uint8)
            start = int(rng.integers(0, traj.nbytes - 4096))
            data[start:start + 4096] = 0
        else:
            import random
            rng = random.Random(traj.seed * 1000003 + traj.x)
            data = bytearray(rng.randbytes(traj.nbytes))
            start = rng.randrange(traj.nbytes - 4096)
            data[start:start + 4096] = bytes(4096)
            data = bytes(data)
        traj.f_add_result('a', data, comment='random bytes')
        value = zlib.crc32(bytes(data))
    note(log, 'e %d %r\n' % (idx, time.time()))
    return value


def main(cfg):
    note(cfg['events'], 'start %r\n' % time.time())
    if cfg['what'] == 'resume':
        env = mp.Environment(log_config=None, report_progress=False)
        note(cfg['events'], 'ready %r\n' % time.time())
        result = env.f_continue_run(cfg['cnt'])
    else:
        service = {'hdf5': mp.HDF5StorageService, 'pickle': mp.PickleStorageService}[
            cfg['backend']]
        env = mp.Environment(trajectory='t', add_time=False, filename=cfg['filename'],
                             storage_service=service, log_config=None, report_progress=False,
                             continuable=True, overwrite_file=cfg['what'] == 'rerun',
                             **cfg['env'])
        traj = env.v_trajectory
        if cfg['size'] == 'small':
            traj.f_add_parameter('x', 0.0, comment='explored')
            traj.f_add_parameter('y', 0.5, comment='fixed')
        else:
            traj.f_add_parameter('x', 0, comment='explored: the run index')
            traj.f_add_parameter('seed', cfg['seed'], comment='of the arrays')
            traj.f_add_parameter('nbytes', cfg['nbytes'], comment='of each array')
        traj.f_explore({'x': cfg['xs']})
        note(cfg['events'], 'ready %r\n' % time.time())
        result = env.f_run(job, cfg['log'], cfg['kind'])
    note(cfg['events'], 'done %r\n' % time.time())
    print('RESULT ' + json.dumps(result), flush=True)
'''


def _stress_env(stress_dir):
    env = subprocess_env()
    env['PYTHONPATH'] = os.pathsep.join([str(stress_dir), env['PYTHONPATH']])
    return env


@pytest.fixture(scope='session')
def stress_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('stressjobs')
    (folder / 'minipypet_stress_jobs.py').write_text(STRESS_JOBS_SRC)
    # a first interpreter compiles and reads everything: the sweeps timed later start warm
    imports = ['minipypet_stress_jobs'] + [m for m in ('numpy', 'tables')
                                           if importlib.util.find_spec(m)]
    subprocess.run([sys.executable, '-c', 'import ' + ', '.join(imports)],
                   env=_stress_env(folder), timeout=120, check=True)
    return folder


class _StressTrial:
    """One configuration's sweep, killed and resumed; `story` says what happened so far and
    goes into every failure message."""

    def __init__(self, tmp_path, stress_dir, config, seed, label):
        self.size, self.backend, self.mode = config.split('-')
        self.config, self.seed, self.label = config, seed, label
        self.tmp, self.stress_dir = tmp_path, stress_dir
        self.data_dir = tmp_path / 'data'
        self.data_dir.mkdir(parents=True)
        self.filename = str(self.data_dir / ('t.hdf5' if self.backend == 'hdf5' else 't.pkl'))
        self.cnt = str(self.data_dir / 't.cnt')
        rng = random.Random('%d:%s' % (STRESS_BASE_SEED, config))  # per configuration
        if self.size == 'small':
            self.kind, self.n, self.nbytes = 'small', STRESS_SMALL_RUNS, 0
            self.xs = [(i - 100) / 8.0 for i in range(self.n)]
        else:
            self.kind = 'bytes' if np is None else 'ndarray'  # (the stdlib-only CI job)
            short = label == 'short'
            self.n = rng.randint(15, 20 if short else 30)
            self.nbytes = rng.choice((1, 2) if short else (1, 2, 3, 4)) * 1024 * 1024
            self.xs = list(range(self.n))
        self.data_seed = seed % (2 ** 31)
        self.procs, self.story, self.main_only, self.reruns = [], [], False, []

    # -- what an uninterrupted sweep gives ---------------------------------------------------
    def expected(self, i):
        x = self.xs[i]
        if self.kind == 'small':
            return x * x + 0.5
        if self.kind == 'bytes':
            rng = random.Random(self.data_seed * 1000003 + x)
            data = bytearray(rng.randbytes(self.nbytes))
            start = rng.randrange(self.nbytes - 4096)
            data[start:start + 4096] = bytes(4096)
            return bytes(data)
        rng = np.random.default_rng([self.data_seed, x])
        data = rng.integers(0, 256, self.nbytes, dtype=np.uint8)
        start = int(rng.integers(0, self.nbytes - 4096))
        data[start:start + 4096] = 0
        return data

    def expected_return(self, i):
        if self.kind == 'small':
            return self.expected(i)
        return zlib.crc32(bytes(self.expected(i)))

    # -- processes ---------------------------------------------------------------------------
    def start(self, what, folder=None):
        """Start a sweep ('run', 'rerun': overwrite the file, 'resume': the .cnt) in its own
        session; calibration sweeps go to `folder`."""
        k = len(self.procs)
        filename = self.filename if folder is None else str(folder / os.path.basename(
            self.filename))
        folder = folder or self.tmp
        paths = {name: str(folder / ('%s%d.txt' % (name, k)))
                 for name in ('events', 'out', 'err')}
        # one log of started and ended runs for every sweep of a trial: a resume's job
        # writes where the .cnt says, the log of the sweep that was killed
        paths['log'] = str(folder / 'runs.txt')
        offset = os.path.getsize(paths['log']) if os.path.exists(paths['log']) else 0
        cfg = {'what': what, 'size': self.size, 'kind': self.kind, 'backend': self.backend,
               'env': STRESS_MODES[self.mode], 'xs': self.xs, 'seed': self.data_seed,
               'nbytes': self.nbytes, 'filename': filename, 'cnt': self.cnt,
               'log': paths['log'], 'events': paths['events']}
        env = _stress_env(self.stress_dir)
        code = 'import json, sys, minipypet_stress_jobs as J; J.main(json.loads(sys.argv[1]))'
        with open(paths['out'], 'w') as out, open(paths['err'], 'w') as err:
            t0 = time.time()
            proc = subprocess.Popen([sys.executable, '-c', code, json.dumps(cfg)], stdout=out,
                                    stderr=err, start_new_session=True, cwd=str(folder), env=env)
        proc.t0, proc.paths, proc.what, proc.killed, proc.t_exit = t0, paths, what, None, None
        proc.offset = offset
        if folder == self.tmp:  # (not a calibration sweep)
            self.procs.append(proc)
        return proc

    def finish(self, proc, timeout):
        """Wait for a process that must succeed."""
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait(timeout=30)
            raise AssertionError('%s hung: still running after %.0f s; stderr: %s'
                                 % (proc.what, timeout, self.tail(proc, 'err')))
        proc.t_exit = time.time() - proc.t0
        assert proc.returncode == 0, '%s failed (exit %s): %s' % (
            proc.what, proc.returncode, self.tail(proc, 'err'))

    def kill(self, proc, plan, main_only=False):
        """SIGKILL the sweep as `plan` says: (anchor, count, delay) = `delay` seconds after
        its start ('start'), its 'ready' event, the count-th run it 'started', or after
        `count` of its runs 'ended'. Returns False if the sweep finished first."""
        anchor, count, delay = plan
        deadline = time.time() + 120 + 6 * self.cal['exit']
        while proc.poll() is None and time.time() < deadline:
            if anchor == 'start' or self.reached(proc, anchor, count):
                break
            time.sleep(0.002)
        at = time.time() + delay if anchor != 'start' else proc.t0 + delay
        while proc.poll() is None and time.time() < min(at, deadline):
            time.sleep(min(max(at - time.time(), 0.0), 0.002))
        if proc.poll() is not None:
            proc.t_exit = time.time() - proc.t0
            return False
        assert time.time() < deadline, '%s hung: %s' % (proc.what, self.tail(proc, 'err'))
        if main_only:
            os.kill(proc.pid, signal.SIGKILL)
        else:
            kill_group(proc)
        proc.killed = time.time() - proc.t0
        proc.wait(timeout=30)
        if proc.returncode == 0:  # it ended between the last look and the kill
            proc.killed, proc.t_exit = None, time.time() - proc.t0
            return False
        # whatever of the session is left must be gone before anything reads the files
        gone = time.time() + 15
        while session_alive(proc.pid) and time.time() < gone:
            time.sleep(0.02)
        alive = session_alive(proc.pid)
        kill_group(proc)
        assert not (main_only and alive), \
            'processes of the sweep outlived its main process by 15 s after kill -9'
        return True

    def reached(self, proc, anchor, count):
        if anchor == 'ready':
            with contextlib.suppress(FileNotFoundError), open(proc.paths['events'], 'rb') as f:
                return b'ready ' in f.read()
            return False
        with contextlib.suppress(FileNotFoundError), open(proc.paths['log'], 'rb') as f:
            f.seek(proc.offset)
            mark = b's ' if anchor == 'started' else b'e '
            return sum(1 for x in f.read().split(b'\n') if x.startswith(mark)) >= count
        return False

    def tail(self, proc, name, chars=3000):
        try:
            with open(proc.paths[name]) as f:
                return f.read()[-chars:]
        except FileNotFoundError:
            return ''

    def events(self, proc):
        """(events {name: time since start}, [started runs], [ended runs], {run: times})."""
        marks = {}
        with contextlib.suppress(FileNotFoundError), open(proc.paths['events']) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    marks[parts[0]] = float(parts[1]) - proc.t0
        started, ended, times = [], [], {}
        with contextlib.suppress(FileNotFoundError), open(proc.paths['log']) as f:
            f.seek(proc.offset)
            for line in f:
                parts = line.split()
                if len(parts) != 3:
                    continue  # (a line cut by the kill)
                what, idx, when = parts[0], int(parts[1]), float(parts[2]) - proc.t0
                (started if what == 's' else ended).append(idx)
                times.setdefault(what, []).append(when)
        return marks, started, ended, times

    def result(self, proc):
        with open(proc.paths['out']) as f:
            lines = [x for x in f.read().splitlines() if x.startswith('RESULT ')]
        assert len(lines) == 1, '%s printed no result: %s' % (proc.what, self.tail(proc, 'err'))
        return json.loads(lines[0][len('RESULT '):])

    # -- the store, read back ----------------------------------------------------------------
    def on_disk(self):
        """The set of runs completed on disk (file + journal); an empty set when the file
        does not hold the trajectory yet."""
        self.stored = False
        try:
            traj = mp.load_trajectory(name='t', filename=self.filename, load_results=1)
        except mp.DataNotInStorageError:
            return set()
        self.stored = True
        assert len(traj) == self.n, 'the stored trajectory has %d runs, not %d' % (len(traj),
                                                                                  self.n)
        return {i for i in range(self.n) if traj.f_is_completed(i)}

    def check_journal(self):
        counts = journal_runs(self.filename)
        twice = {i: c for i, c in counts.items() if c != 1}
        assert not twice, 'runs journalled more than once: %s' % twice

    def check_file(self):
        """The file an uninterrupted sweep writes: every run completed once, right values."""
        traj = mp.load_trajectory(filename=self.filename, load_results=2)
        assert traj.v_name == 't' and len(traj) == self.n, (traj.v_name, len(traj))
        assert list(traj.f_get('x').f_get_range()) == self.xs, 'explored values changed'
        info = traj.f_get_run_information()
        bad = [i for i in range(self.n) if info[run_name(i)]['completed'] != 1]
        assert not bad, 'runs not completed on disk: %s' % bad
        item = 'z' if self.size == 'small' else 'a'
        got = traj.f_get_from_runs(item, fast_access=True, use_indices=True)
        assert list(got) == list(range(self.n)), \
            'each run must be stored exactly once: %s' % list(got)
        for i in range(self.n):
            want = self.expected(i)
            if self.kind == 'small':
                assert isinstance(got[i], float) and got[i] == want, (i, got[i], want)
            elif self.kind == 'bytes':
                assert got[i] == want, 'run %d: the data differs' % i
            else:
                assert isinstance(got[i], np.ndarray) and got[i].dtype == want.dtype and \
                    np.array_equal(got[i], want), 'run %d: the array differs' % i

    def check_folder(self):
        names = sorted(os.listdir(str(self.data_dir)))
        tmp = [x for x in names if x.endswith('.tmp')]
        assert not tmp, 'temp files left beside the data file: %s' % tmp
        base = os.path.basename(self.filename)
        left = [x for x in names if x not in (base, base + '.segments')]
        assert not left, 'files left beside the data file after the resume: %s' % left
        # the segments folder holds the segments the file lists, nothing else
        folder = self.filename + '.segments'
        on_disk = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        service = mp._make_service(None, self.filename, mode='load')
        assert on_disk == service._segment_names(), \
            'segment files: %s on disk, %s listed' % (sorted(on_disk),
                                                      sorted(service._segment_names()))

    # -- one kill, then recovery -------------------------------------------------------------
    def calibrate(self):
        """Phase times of an uninterrupted sweep of this configuration (cached)."""
        key = (self.config, self.n, self.nbytes)
        if key not in _STRESS_CALIBRATION:
            folder = self.tmp / 'calibration'
            folder.mkdir()
            proc = self.start('run', folder)
            self.finish(proc, timeout=240)
            marks, started, ended, times = self.events(proc)
            assert sorted(started) == list(range(self.n)), 'calibration: runs %s' % started
            _STRESS_CALIBRATION[key] = {
                'ready': marks['ready'], 'first': min(times['s']), 'last': max(times['e']),
                'done': marks['done'], 'exit': proc.t_exit}
            shutil.rmtree(str(folder))
        self.cal = _STRESS_CALIBRATION[key]

    def plan(self, rng, phase, pending):
        """Where to kill a sweep that has `pending` runs to do (see kill()), from the phase
        times of an uninterrupted sweep. Anchored on what the sweep has done, the phases are
        hit whatever the load of the machine; 'uniform' is a time anywhere in a whole
        sweep's length plus 15% (the sweep may finish first)."""
        cal = self.cal
        if phase == 'before':
            if rng.random() < 0.25:  # in the interpreter's start-up
                return ('start', 0, rng.uniform(0.0, cal['ready']))
            # after 'ready': storing the trajectory, writing the .cnt, starting the pool
            return ('ready', 0, rng.uniform(0.0, cal['first'] - cal['ready']))
        if phase == 'mid' and pending >= 2:  # within a run's time after the k-th run started
            return ('started', rng.randint(1, pending - 1),
                    rng.uniform(0.0, (cal['last'] - cal['first']) / self.n))
        if phase in ('mid', 'store') and pending:  # after the last run, before f_run returns
            return ('ended', pending, rng.uniform(0.0, 1.1 * (cal['done'] - cal['last'])))
        if phase in ('mid', 'store'):  # a resume with no run to do: it loads and stores
            return ('ready', 0, rng.uniform(0.0, cal['done'] - cal['last'] +
                                            cal['first'] - cal['ready']))
        return ('start', 0, rng.uniform(0.0, 1.15 * cal['exit']))

    def landed(self, proc, pending):
        """Where a kill hit, from the killed process's own logs."""
        marks, started, ended, _ = self.events(proc)
        if not proc.killed:
            return 'finished'
        if 'done' in marks:
            return 'exit'
        if 'ready' not in marks:
            return 'startup'
        if not started:
            return 'store-before-runs'
        if len(set(ended)) < len(pending):
            return 'runs(%d/%d ended)' % (len(set(ended)), len(pending))
        return 'end-store'

    def run(self, phase, second_kill, main_only_p):
        rng = random.Random(self.seed)
        self.calibrate()
        everything = set(range(self.n))
        plan = self.plan(rng, phase, self.n)
        self.main_only = main_only = self.mode != 'serial' and rng.random() < main_only_p
        self.story.append('%s, %d runs%s, calibrated %s; kill 1: %s %s%s' % (
            self.config, self.n, ' of %d MB' % (self.nbytes >> 20) if self.nbytes else '',
            {k: round(v, 3) for k, v in self.cal.items()}, phase, plan,
            ', main process only' if main_only else ''))
        landed = []
        proc = self.start('run')
        self.kill(proc, plan, main_only)
        before = set()  # the runs completed on disk when `proc` started
        while True:
            if proc.killed:
                assert proc.returncode == -signal.SIGKILL, (proc.returncode,
                                                            self.tail(proc, 'err'))
            elif proc.returncode != 0:
                raise AssertionError('%s failed on its own (exit %s): %s' % (
                    proc.what, proc.returncode, self.tail(proc, 'err')))
            landed.append(self.landed(proc, everything - before))
            marks, started, ended, _ = self.events(proc)
            cnt = os.path.exists(self.cnt)
            self.story.append('%s %s at %.3f s (%s): %d runs started in it; folder %s' % (
                proc.what, 'killed' if proc.killed else 'ended', proc.killed or proc.t_exit,
                landed[-1], len(started), sorted(os.listdir(str(self.data_dir)))))
            self.check_journal()
            done = self.on_disk()
            self.story[-1] += '; %d runs completed on disk' % len(done)
            assert len(started) == len(set(started)), 'a run was started twice in one sweep'
            again = sorted(set(started) & before)
            assert not again, 'runs completed on disk were run again: %s' % again
            assert before <= done, 'completed runs were lost: %s' % sorted(before - done)
            if not proc.killed:
                assert set(started) == everything - before, \
                    'the sweep must run exactly the runs not completed on disk: ran %s, ' \
                    'missing were %s' % (sorted(started), sorted(everything - before))
                assert self.result(proc) == [[i, self.expected_return(i)]
                                             for i in range(self.n)], \
                    'the returned results differ from an uninterrupted sweep'
                assert done == everything and not cnt, (sorted(everything - done), cnt)
                break
            # (killed between the .cnt and the first record: a .cnt with neither a file nor
            # a journal record, which a resume answers with "nothing to resume: run it again")
            nothing = not (os.path.exists(self.filename) or self.journalled())
            if not cnt or nothing:
                if done == everything:  # killed after the .cnt was deleted
                    break
                # killed before the .cnt was written: no run can have started. Nothing to
                # resume, and the trajectory may be stored already (a plain new sweep into the
                # file is refused: it holds trajectory 't'): start anew, overwriting the file
                assert not done and not started, 'runs done but no .cnt to resume them'
                what = 'rerun'
                self.reruns.append('stored' if self.stored else 'empty')
                self.story.append('no .cnt (trajectory %s): started anew with '
                                  'overwrite_file=True' % ('stored' if self.stored else
                                                           'not stored'))
            else:
                what = 'resume'
            assert len(self.procs) < 4, 'no complete sweep after %d processes' % len(
                self.procs)
            before = set() if what == 'rerun' else done
            proc = self.start(what)
            if second_kill and len(self.procs) == 2:
                phase2 = rng.choice(('before', 'mid', 'store', 'uniform'))
                plan = self.plan(rng, phase2, len(everything - before))
                self.story.append('kill 2 (of the %s): %s %s' % (what, phase2, plan))
                self.kill(proc, plan)
            else:
                self.finish(proc, timeout=120 + 6 * self.cal['exit'])
        self.check_file()
        self.check_folder()
        return landed

    def journalled(self):
        """True if the journal beside the file holds a record (a damaged one: True, for
        the resume to judge)."""
        path = self.filename + '.journal'
        if not os.path.exists(path):
            return False
        try:
            return bool(mp._Journal.read(path)[1])
        except Exception:
            return True


def _stress_trial(tmp_path, stress_dir, config, index, phase, second_kill, label,
                  main_only_p=0.0):
    if config.split('-')[1] == 'hdf5' and tables is None:
        pytest.skip('PyTables is not installed')
    seed = zlib.crc32(('%d:%s:%d' % (STRESS_BASE_SEED, config, index)).encode())
    trial = _StressTrial(tmp_path / ('trial%d' % index), stress_dir, config, seed, label)
    started = time.time()
    line = {'config': config, 'trial': index, 'base_seed': STRESS_BASE_SEED, 'seed': seed,
            'phase': phase}
    try:
        line['landed'] = trial.run(phase, second_kill, main_only_p)
    except Exception as exc:
        line['failed'] = '%s: %s' % (type(exc).__name__, exc)
        raise AssertionError(
            'kill stress FAILED: %s trial %d, MINIPYPET_STRESS_SEED=%d, trial seed %d:\n  %s\n'
            '%s: %s' % (config, index, STRESS_BASE_SEED, seed, '\n  '.join(trial.story),
                        type(exc).__name__, exc)) from exc
    finally:
        for proc in trial.procs:
            kill_group(proc)
            if proc.poll() is None:
                proc.wait(timeout=30)
        line.update(main_only=trial.main_only, sweeps=[p.what for p in trial.procs],
                    reruns=trial.reruns, kills=sum(1 for p in trial.procs if p.killed),
                    seconds=round(time.time() - started, 2))
        if 'failed' in line:
            line['story'] = trial.story
        print(json.dumps(line))
        if os.environ.get('MINIPYPET_STRESS_LOG'):
            with open(os.environ['MINIPYPET_STRESS_LOG'], 'a') as f:
                f.write(json.dumps(line) + '\n')
    shutil.rmtree(str(trial.tmp), ignore_errors=True)  # (large sweeps: up to 120 MB each)


if tables is None:  # (the stdlib-only CI job: its HDF5 share on pickle; arrays become bytes)
    STRESS_SHORT = [(c.replace('hdf5', 'pickle'), p, k) for c, p, k in STRESS_SHORT]


@posix_only
@pytest.mark.timeout(120)
@pytest.mark.parametrize('config,phase,second_kill', STRESS_SHORT,
                         ids=['%s-%s' % (c, p) for c, p, _ in STRESS_SHORT])
def test_kill9_stress_short(tmp_path, stress_dir, config, phase, second_kill):
    _stress_trial(tmp_path, stress_dir, config, 0, phase, second_kill, 'short')


STRESS_TRIALS = -(-STRESS_KILLS // len(STRESS_CONFIGS))  # per configuration, rounded up


@posix_only
@pytest.mark.stress
@pytest.mark.timeout(300 + 120 * STRESS_TRIALS)
@pytest.mark.parametrize('config', STRESS_CONFIGS)
def test_kill9_stress(tmp_path, stress_dir, request, config):
    expr = request.config.getoption('markexpr', '') or ''
    if 'MINIPYPET_STRESS_KILLS' not in os.environ and not (
            re.search(r'\bstress\b', expr) and not re.search(r'\bnot\s+stress\b', expr)):
        pytest.skip('the long kill stress runs with -m stress (or MINIPYPET_STRESS_KILLS set)')
    offset = STRESS_CONFIGS.index(config)
    for k in range(STRESS_TRIALS):
        rng = random.Random('%d:%s:%d:plan' % (STRESS_BASE_SEED, config, k))
        _stress_trial(tmp_path, stress_dir, config, k,
                      STRESS_PHASES[(k + offset) % len(STRESS_PHASES)],
                      second_kill=rng.random() < 1 / 3, label='long', main_only_p=0.25)


# ---------------------------------------------------------------------------------------------
# Storing and loading items: pypet's options
# ---------------------------------------------------------------------------------------------
def test_deleting_items_of_a_trajectory_never_stored_touches_no_file(file_backend,
                                                                      tmp_path):
    # (its delete was journalled under a name the file does not hold: the file's next
    # store of any trajectory took that for a damaged journal)
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, square_job, n=3)
    other = mp.Trajectory('other', filename=filename, add_time=False)
    other.f_add_parameter('y', 1)
    other.f_add_result('r', 5)
    other.f_delete_item('results.r', remove_from_trajectory=True)
    assert 'results.r' not in other.f_to_dict()
    assert load(filename).v_storage_service.list_trajectories() == ['traj']
    first = load(filename, load_all=2)
    first.f_add_result('extra', 1)
    first.f_store()
    other.f_store()
    assert load(filename, load_all=2, name='other').y == 1
    assert load(filename, load_all=2, name='traj').extra == 1


def test_a_sweep_without_automatic_storing_is_stored_by_its_own_f_store(file_backend,
                                                                        tmp_path):
    # pypet's automatic_storing=False: the runs are stored, the trajectory when its user
    # says so; its own f_store must not be refused as another trajectory of its name, and
    # a trajectory of that name already in the file must refuse the runs, not take them
    filename = path_for(file_backend, tmp_path)
    env = mp.Environment('manual', add_time=False, filename=filename, log_config=None,
                         storage_service=CLASSES[file_backend], report_progress=False,
                         automatic_storing=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2, 3]})
    env.f_run(square_job)
    traj.f_store()
    got = load(filename, load_all=2, name='manual')
    assert got.f_is_completed() and got.f_get('x').f_get_range() == [1, 2, 3]
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 1.5, 1: 4.5, 2: 9.5}
    again = mp.Environment('manual', add_time=False, filename=filename, log_config=None,
                           storage_service=CLASSES[file_backend], report_progress=False,
                           automatic_storing=False)
    again.v_trajectory.f_add_parameter('x', 0)
    again.v_trajectory.f_explore({'x': [7]})
    with pytest.raises(mp.StorageError, match="holds a trajectory 'manual' already"):
        again.f_run(square_job)
    assert load(filename, load_all=2, name='manual').f_get('x').f_get_range() == [1, 2, 3]


def test_store_item_overwrite_replaces_only_the_named_items(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('t', filename=filename, add_time=False)
    res = traj.f_add_result('mytest.test', a='b', c='d')
    traj.f_store()
    res.f_set(a=[1, 2, 3], c=123445, e=5)
    traj.f_store_item(res, overwrite='a')
    got = mp.load_trajectory(name='t', filename=filename, load_all=2).test
    assert (got.a, got.c, got.e) == ([1, 2, 3], 'd', 5)  # (e is new: added, as STORE_DATA)
    traj.f_store_item(res, store_data=mp.pypetconstants.OVERWRITE_DATA)
    assert mp.load_trajectory(name='t', filename=filename, load_all=2).test.c == 123445


def test_store_item_overwrite_of_a_run_result_keeps_the_other_stored_items(file_backend,
                                                                         tmp_path):
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, two_items_job, n=2)
    traj = load(filename, load_data=2)
    res = traj.f_get('results.runs.%s.r' % run_name(1))
    res.f_set_single('a', 100)
    del res._data['b']  # (as if loaded with load_only=['a'])
    res.f_set_single('c', 3)
    traj.f_store_item(res, overwrite=['a'])
    again = load(filename, load_data=2)
    assert again.f_get('results.runs.%s.r' % run_name(1)).f_to_dict() == {
        'a': 100, 'b': 2, 'c': 3}
    assert again.f_get('results.runs.%s.r' % run_name(0)).f_to_dict() == {'a': 1, 'b': 2}


def two_items_job(traj):
    traj.f_add_result('r', a=1, b=2)


def test_load_item_brings_the_groups_on_the_path_and_the_links_below(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('t', filename=filename, add_time=False)
    res = traj.f_add_result('aaa.bbb.ccc.iii', 42, comment='leaf')
    traj.bbb.v_comment = 'a group'
    traj.ccc.v_annotations['gg'] = 4
    traj.ccc.f_add_link('link', res)
    traj.f_store()
    new = mp.Trajectory('t', filename=filename, add_time=False)
    new.f_load(load_results=0)
    new.f_load_item('results.aaa.bbb.ccc.iii')
    assert new.bbb.v_comment == 'a group' and new.ccc.v_annotations['gg'] == 4
    assert 'link' not in new.ccc  # (recursive=False loads the leaf, not what is beside it)
    new.f_load_item('results.aaa.bbb.ccc', with_links=False)
    assert 'link' not in new.ccc
    new.f_load_item('results.aaa.bbb.ccc')
    assert new.ccc.link is new.iii
    traj.ccc.f_add_link('second', res)  # a group stored again takes its links along
    traj.f_store_item(traj.ccc)
    assert mp.load_trajectory(name='t', filename=filename, load_all=2).ccc.second == 42


def test_max_depth_stores_and_loads_only_that_deep(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('t', filename=filename, add_time=False)
    traj.par.d1 = mp.Parameter('d1.d2.d3.d4.d5', 55)
    traj.f_store(max_depth=4)  # parameters is depth 1: d1 to d3 are stored
    got = mp.load_trajectory(name='t', filename=filename, load_all=2)
    assert 'd3' in got and 'd4' not in got
    got = mp.load_trajectory(name='t', filename=filename, max_depth=3)
    assert 'd2' in got and 'd3' not in got
    got.dpar.l1 = mp.Parameter('l1.l2.l3.l4.l5', 123)
    got.dpar.f_store_child('l1', recursive=True, max_depth=3)  # (below dpar: l1 to l3)
    got.dpar.f_remove_child('l1', recursive=True)
    got.dpar.f_load_child('l1', recursive=True)
    assert 'l3' in got and 'l4' not in got
    got.dpar.f_remove_child('l1', recursive=True)
    got.dpar.f_load_child('l1', recursive=True, max_depth=2)
    assert 'l2' in got and 'l3' not in got


def test_loading_without_run_information_keeps_the_length(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename)
    traj = xy_traj(env.v_trajectory)
    env.f_run(multiply)
    got = mp.load_trajectory(name='traj', filename=filename, with_run_information=False)
    assert len(got) == 6 and got.f_get('x').f_get_range() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    got.f_store()  # (the runs' information in the file is kept: it was not loaded)
    assert mp.load_trajectory(name='traj', filename=filename).f_is_completed()
    del traj


def test_groups_and_links_outside_the_four_branches_load(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('t', filename=filename, add_time=False)
    res = traj.f_add_result('mytest.test', a='b')
    traj.f_add_link('x.y', res)
    traj.f_add_link('x.g.h', res)
    traj.f_store()
    traj.f_remove_child('x', recursive=True)
    traj.f_load()  # (load_other_data=LOAD_SKELETON by default, as pypet's)
    assert traj.x.y is traj.test and traj.x.g.h is traj.test
    traj.f_delete_link('x.y', remove_from_trajectory=True)
    traj.f_load()
    with pytest.raises(mp.NoSuchNodeError):
        traj.x.y


def test_an_explored_parameter_loaded_later_follows_v_idx(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename)
    xy_traj(env.v_trajectory)
    env.f_run(multiply)
    new = mp.load_trajectory(name='traj', filename=filename, load_all=0)
    new.v_auto_load = True
    new.v_idx = 4
    assert (new.par.x, new.par.y, new.res.runs.crun.z) == (2.0, 4.0, 8.0)
    new.v_idx = 0
    assert (new.x, new.y) == (1.0, 3.0)


def test_store_and_load_items_refuse_unknown_keywords_and_take_pypets(tmp_path):
    traj = mp.Trajectory('t', filename=str(tmp_path / 't.pkl'))
    traj.f_add_parameter('x', 1)
    traj.f_add_result('r', a=1, b=2)
    traj.f_add_result('e')
    traj.f_store()
    with pytest.raises(TypeError, match='bogus_kwarg'):
        traj.f_store_items(['parameters.x'], bogus_kwarg=1)
    with pytest.raises(TypeError, match='bogus_kwarg'):
        traj.f_load_items(['parameters.x'], bogus_kwarg=1)
    traj.r.f_set_single('a', 5)
    traj.f_store_item('r', overwrite=True)             # pypet's: every item replaced
    traj.f_store_items(['r', 'e'], non_empties=True)   # pypet's: the empty `e` skipped
    loaded = mp.load_trajectory('t', filename=str(tmp_path / 't.pkl'), load_all=mp.LOAD_DATA)
    assert (loaded.r.a, loaded.r.b) == (5, 2)


# ---------------------------------------------------------------------------------------------
# The end-of-sweep checkpoint: lighter, and checked
# ---------------------------------------------------------------------------------------------
# The end-of-sweep checkpoint of a small sweep costs less: segments are synced in a thread
# while the main file is written, the folder is not read back through the main file unless
# it holds something unknown, and small or bookkeeping columns are compressed lightly or not.
def float_job(traj):
    traj.f_add_result('z', traj.x * 0.5)


@needs_tables
def test_a_store_keeps_every_listed_segment_and_removes_debris(tmp_path):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, float_job, n=3, name='first')
    folder = filename + '.segments'
    assert sorted(os.listdir(folder)) == [os.path.basename(p)
                                          for p in h5_segments(filename, 'first')]
    # debris of a writer killed mid-store: a segment never listed and a temp file
    for junk in ('first_000007_0badcafe.hdf5', 'first_000008_0badcafe.hdf5.tmp'):
        with open(os.path.join(folder, junk), 'wb') as f:
            f.write(b'\0' * 64)
    sweep('hdf5', filename, float_job, n=2, name='second')
    listed = h5_segments(filename, 'first') + h5_segments(filename, 'second')
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in listed)
    assert len(listed) == 2 and all(os.path.exists(p) for p in listed)
    for name, n in (('first', 3), ('second', 2)):
        traj = load(filename, name=name, load_data=2)
        assert traj.f_get_from_runs('z', fast_access=True, use_indices=True) == {
            i: i * 0.5 for i in range(n)}


@needs_tables
def test_bookkeeping_is_compressed_lightly_and_a_small_first_batch_keeps_the_filters(
        tmp_path, monkeypatch):
    big = path_for('hdf5', tmp_path, 'big')
    sweep('hdf5', big, float_job, n=3000)
    with tables.open_file(h5_segments(big, 'traj')[0]) as h:
        assert h.root.results.runs.z.z.filters.complevel == 9  # the data: complevel
        assert h.root.results.runs.z._idx.filters.complevel == 1  # indices: light zlib
        assert h.root._runs.filters.complevel == 1
        assert h.root.results.runs.z.z.read().tolist() == [i * 0.5 for i in range(3000)]
    got = load(big, load_data=2)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True)[2999] == 1499.5
    assert got.f_get_run_information(2999)['completed'] == 1
    # an array per run fills the segment's budget after a few runs, so every column is
    # flushed in small batches: their first batch must not leave them uncompressed
    monkeypatch.setattr(mp, '_SEGMENT_BUDGET', 32 << 10)
    arrays = path_for('hdf5', tmp_path, 'arrays')
    sweep('hdf5', arrays, array_and_float_job, n=200)
    with tables.open_file(h5_segments(arrays, 'traj')[0]) as h:
        assert h.root.results.runs.s.s.filters.complevel == 9
        assert h.root.results.runs.s._idx.filters.complevel == 1
        assert h.root._runs.filters.complevel == 1
    got = load(arrays, load_data=2)
    assert got.f_get_from_runs('s', fast_access=True, use_indices=True)[199] == 199


def array_and_float_job(traj):
    traj.f_add_result('a', np.zeros(1000))
    traj.f_add_result('s', traj.v_idx)


@pytest.mark.parametrize('values', [
    [0.5, -0.0, 0.0, float('inf'), float('nan'), 1e300, 3, True, False],
    [10 ** 50, 1, 2.5],  # a repr longer than 40 characters is cut
    ['a', 'b', None],
    [(1, 2), 0.5, {3}],
])
def test_parameter_summaries_of_a_span_of_runs_equal_those_of_single_runs(values):
    explored = [('parameters.p', values), ('parameters.q', list(range(len(values))))]
    span = list(range(len(values)))
    whole = mp._run_summaries(explored, span)
    single = [mp._run_summaries(explored, [i, len(values) + 5])[0] for i in span]
    assert whole == single  # ([i, beyond the range] is no span: the general path)
    assert all(len(text.partition(', ')[0]) <= len('p: ') + 40 for text in whole)
    assert mp._run_summaries(explored, [len(values) - 1, len(values)])[1] == ', '


@pytest.mark.parametrize('value', [
    [0.5, -0.0, 1, True, None, 'x', b'y', 1j], (1, 2.5), [], [[1, 2], {3, 1}],
    [{'b': 1, 'a': 2}, frozenset({'b', 'a'})], list(range(1000))])
def test_the_canonical_text_of_a_list_is_that_of_its_items(value):
    name = type(value).__name__
    assert mp._canonical(value) == '%s[%s]' % (name, ','.join(mp._canonical(v) for v in value))


@needs_tables
def test_a_file_that_hdf5_did_not_write_whole_is_never_stamped(tmp_path):
    # PyTables ignores what H5Fclose returns: a close that hit a full disk left a torn main
    # file, which the rename then put in place. The superblock's end-of-file address tells.
    path = str(tmp_path / 'x.hdf5')
    with warnings.catch_warnings():  # (PyTables >= 3.10 prefers user_block_size)
        warnings.simplefilter('ignore', DeprecationWarning)
        f = tables.open_file(path, 'w', USER_BLOCK_SIZE=512)
    with f:
        f.create_array('/', 'a', obj=np.arange(1000.0))
    with open(path, 'rb') as f:
        whole = f.read()
    mp._h5_stamp(path)  # whole: stamped
    with open(path, 'r+b') as f:
        f.truncate(len(whole) - 100)
    with pytest.raises(OSError, match='did not write .* whole'):
        mp._h5_stamp(path)


@needs_tables
def test_a_truncated_hdf5_file_is_called_damaged_not_locked(tmp_path):
    # (HDF5's text for a truncated file names its superblock, "sblock", which a search for
    # "lock" once took for HDF5's file locking)
    path = str(tmp_path / 'x.hdf5')
    with tables.open_file(path, 'w') as f:
        f.create_array('/', 'a', obj=np.arange(100000.0))
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(size // 2)
    with pytest.raises(mp.StorageError, match=r'cannot be opened \(truncated or corrupt'):
        mp._open_hdf5(path, mp.StorageError, mp.DataNotInStorageError)


def test_run_records_are_journalled_as_plain_tuples(tmp_path):
    record = mp._RunRecord('run', 'traj', 3, (1.0, 2.0, 1, 'abc', ''),
                           [('results.runs.run_00000003.z', 'Result', '', {'z': 1.5}, None)])
    journal = mp._Journal(str(tmp_path / 'j.cnt'))
    journal.append(record)
    journal.close()
    raw = (tmp_path / 'j.cnt').read_bytes()
    assert b'_RunRecord' not in raw and b'minipypet' not in raw
    (back,) = mp._Journal.read(str(tmp_path / 'j.cnt'))[1]
    assert type(back) is tuple and back == tuple(record)
    assert mp._RunRecord(*back).leaves[0][3] == {'z': 1.5}


def test_bits_missing_lists_the_indices_not_held():
    import random
    rng = random.Random(17)
    for _ in range(200):
        n = rng.randint(0, 300)
        held = set(rng.sample(range(n + 20), rng.randint(0, n + 20)))
        if rng.random() < 0.3:  # (the usual end of a sweep: nearly all held)
            held = set(range(n + 5)) - set(rng.sample(range(n + 5), min(3, n + 5)))
        bits = mp._Bits()
        bits.update(held)
        assert bits.missing(n) == [i for i in range(n) if i not in held]


# ---------------------------------------------------------------------------------------------
# Loading: run groups made when they are touched
# ---------------------------------------------------------------------------------------------
# A loaded trajectory's runs groups are lazy (mp._PendingRuns): a run's group and
# leaves are made when something touches them.
def lazy_job(traj):
    traj.f_add_result('z', traj.x * traj.x + 0.5, comment='x squared')
    traj.f_add_derived_parameter('dz', traj.x * 2, comment='twice x')


def lazy_sweep(file_backend, tmp_path, n=6, **kwargs):
    filename = path_for(file_backend, tmp_path)
    env, traj = sweep(file_backend, filename, lazy_job, n=n, **kwargs)
    return filename, env


def made_runs(traj, branch='results'):
    """How many run groups of `branch` are made (not pending)."""
    return dict.__len__(traj.f_get(branch + '.runs')._children)


@pytest.mark.parametrize('load_results', [1, 2])
def test_lazy_load_makes_a_run_only_when_it_is_touched(file_backend, tmp_path,
                                                        load_results):
    filename, _ = lazy_sweep(file_backend, tmp_path, n=200)
    traj = load(filename, index=-1, load_results=load_results,
                load_derived_parameters=2)
    runs = traj.results.runs
    assert made_runs(traj) == 0 and made_runs(traj, 'derived_parameters') == 0
    assert len(traj._nodes) < 100, 'a load made nodes per run'
    assert runs.f_children() == 200 and traj.dpar.runs.f_children() == 200
    assert 'run_00000007' in runs and 'run_00000200' not in runs and 'x' not in runs
    assert made_runs(traj) == 0, '`in` made a run'
    z = runs.run_00000012.z
    if load_results == 2:
        assert z == 12 * 12 + 0.5
    else:
        assert isinstance(z, mp.Result) and z.f_is_empty()
    assert made_runs(traj) == 1 and runs.f_children() == 200
    assert runs.run_00000000.f_get('z').v_comment == 'x squared'   # (the others purged)
    assert traj.f_get('derived_parameters.runs.run_00000012.dz').f_get() == 24
    assert made_runs(traj, 'derived_parameters') == 1


def test_lazy_runs_are_reached_by_every_kind_of_name(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_data=2)
    assert traj.res.runs.run_00000002.z == 4.5
    assert traj.results.run_00000003.z == 9.5            # the seed's results.run_X
    assert traj.res.runs.r_4.z == 16.5                          # pypet's r_4
    assert traj['results', 'runs', 'run_00000001', 'z'] == 1.5
    assert traj.f_get('results.runs.run_set_00000.run_00000005.z').f_get() == 25.5
    assert traj.results.run_set_00000.run_00000000.z == 0.5
    with pytest.raises(mp.NotUniqueNodeError):
        traj.z                                                   # every run holds a z
    traj.f_set_crun(3)
    assert traj.res.crun.z == 9.5 and traj.z == 9.5 and traj.dz == 6
    assert traj.f_get('results.runs.$.z').f_get() == 9.5
    assert traj.dpar.runs.crun.dz == 6
    traj.f_restore_default()
    assert len(traj.f_get_all('z')) == 6
    assert sorted(traj.results.runs.f_get_children()) == [run_name(i) for i in range(6)]


def test_lazy_runs_names_are_found_before_their_runs_are_made(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_data=2)
    traj.f_add_result('z', -1.0, comment='not in a run')  # results.z beside the runs
    traj.f_set_crun(2)
    assert traj.res.crun.z == 4.5 and traj.z == -1.0             # the shallowest
    assert made_runs(traj) == 1
    traj.f_restore_default()
    assert traj.z == -1.0 and traj.results.f_get('z').f_get() == -1.0


def test_f_get_from_runs_on_lazy_runs_reads_the_column(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path, n=50)
    want = {run_name(i): i * i + 0.5 for i in range(50)}
    traj = load(filename, index=-1, load_data=2)
    assert dict(traj.f_get_from_runs('z', fast_access=True)) == want
    assert made_runs(traj) == 0, 'f_get_from_runs made a node per run'
    assert dict(traj.f_get_from_runs('dz', fast_access=True, use_indices=True)) == {
        i: 2 * i for i in range(50)}
    skeleton = load(filename, index=-1, load_results=1)
    assert dict(skeleton.f_get_from_runs('z', fast_access=True, auto_load=True)) == want
    assert made_runs(skeleton) == 0
    nodes = skeleton.f_get_from_runs('z')                       # nodes asked for: made
    assert len(nodes) == 50 and all(isinstance(n, mp.Result) for n in nodes.values())
    assert nodes[run_name(7)] is skeleton.results.runs.run_00000007.z
    traj.results.runs.run_00000003.z                       # one run made: the rest
    assert dict(traj.f_get_from_runs('z', fast_access=True)) == want   # still right


def test_iterating_lazy_runs_gives_what_an_eager_load_gave(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path, n=8)
    traj = load(filename, index=-1, load_data=2)
    traj.results.runs.run_00000005.z                             # one made first
    got = traj.results.f_to_dict(fast_access=True)
    assert got == {'results.runs.%s.z' % run_name(i): i * i + 0.5 for i in range(8)}
    assert list(traj.results.runs.f_get_children()) == [run_name(i) for i in range(8)]
    assert [n.v_name for n in traj.results.runs] == [run_name(i) for i in range(8)]
    assert len(list(traj.f_iter_leaves())) > 16
    assert traj.results.runs.f_groups() == 8
    assert 'run_00000000' in traj.results.runs.f_tree()
    again = load(filename, index=-1, load_data=2)
    dz = [leaf.f_get() for leaf in again.derived_parameters.f_iter_leaves()]
    assert dz == [2 * i for i in range(8)]


def test_links_into_lazy_runs_load_and_store(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_data=2)
    traj.f_add_link('best', traj.results.runs.run_00000004)
    traj.f_add_link('results.best_z', traj.f_get('results.runs.run_00000002.z'))
    traj.f_store()
    again = load(filename, index=-1, load_data=2)
    assert again.best.z == 16.5 and again.results.best_z == 4.5
    assert again.f_get_from_runs('z', fast_access=True)[run_name(5)] == 25.5


def test_removing_lazy_runs(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_data=2)
    runs = traj.results.runs
    runs.f_remove_child('run_00000001', recursive=True)
    assert runs.f_children() == 5 and 'run_00000001' not in runs
    with pytest.raises(mp.NoSuchNodeError):
        traj.f_get('results.runs.run_00000001.z')
    assert [g.v_name for g in runs] == [run_name(i) for i in (0, 2, 3, 4, 5)]
    traj.results.f_remove_child('runs', recursive=True)
    assert 'runs' not in traj.results._children
    assert made_runs(traj, 'derived_parameters') == 0
    with pytest.raises(mp.NotUniqueNodeError):                  # dz: still six pending
        traj.dz
    traj.derived_parameters.f_remove_child('runs', recursive=True)
    assert not traj._lazy_names
    with pytest.raises(mp.NoSuchNodeError):
        traj.dz


def test_stores_after_a_lazy_load_keep_every_run(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_results=1)
    traj.f_add_result('summary', 42, comment='after the runs')
    traj.f_store()
    assert made_runs(traj) == 0, 'a store made the runs not touched'
    traj.f_store_item('summary')
    full = load(filename, index=-1, load_data=2)
    assert full.results.summary == 42
    assert dict(full.f_get_from_runs('z', fast_access=True, use_indices=True)) == {
        i: i * i + 0.5 for i in range(6)}
    full.results.runs.run_00000002.f_get('z').f_set(99.0)
    full.f_store_item('results.runs.run_00000002.z', overwrite=True)
    again = load(filename, index=-1, load_data=2)
    assert again.results.runs.run_00000002.z == 99.0
    assert again.results.runs.run_00000003.z == 9.5
    assert again.f_get_from_runs('z', fast_access=True, use_indices=True)[2] == 99.0


@pytest.mark.parametrize('multiproc', [False, True])
@pytest.mark.timeout(120)
def test_expand_and_run_a_lazily_loaded_trajectory(file_backend, tmp_path, multiproc):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_results=1)
    traj.f_expand({'x': [6, 7]})
    kwargs = dict(multiproc=True, ncores=2, use_pool=True) if multiproc else {}
    env = mp.Environment(trajectory=traj, filename=filename, log_config=None,
                         report_progress=False, **kwargs)
    env.f_run(lazy_job)
    got = load(filename, index=-1, load_data=2)
    assert got.f_is_completed() and len(got) == 8
    assert dict(got.f_get_from_runs('z', fast_access=True, use_indices=True)) == {
        i: i * i + 0.5 for i in range(8)}
    assert got.results.runs.run_00000007.z == 49.5
    assert got.results.runs.run_00000001.z == 1.5


def test_merging_lazily_loaded_trajectories(file_backend, tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    a_file, _ = lazy_sweep(file_backend, tmp_path / 'a', n=3)
    b_file, _ = lazy_sweep(file_backend, tmp_path / 'b', n=3, name='other')
    a = load(a_file, index=-1, load_results=1)
    b = load(b_file, index=-1, load_results=1)
    a.f_merge(b, backup=False)
    assert len(a) == 6 and a.results.runs.f_children() == 6 and made_runs(a) == 0
    got = load(a_file, index=-1, load_data=2)
    assert len(got) == 6
    values = got.f_get_from_runs('z', fast_access=True, use_indices=True)
    assert sorted(values.values()) == sorted([i * i + 0.5 for i in range(3)] * 2)


def test_pickled_lazy_trajectory_stays_lazy_and_independent(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path)
    traj = load(filename, index=-1, load_data=2)
    traj.results.runs.run_00000001.z
    copy_ = pickle.loads(pickle.dumps(traj))
    assert made_runs(copy_) == 1 and copy_.results.runs.f_children() == 6
    assert copy_.results.runs.run_00000004.z == 16.5 and made_runs(traj) == 1
    assert copy.copy(traj).results.f_to_dict(fast_access=True) == \
        traj.results.f_to_dict(fast_access=True)


def test_pickled_results_in_runs_are_placed_at_load(file_backend, tmp_path):
    # a run made later loads outside f_load's allow_pickle: pickled data comes at once
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, lambda traj: traj.f_add_result(
        mp.PickleResult, 'p', {'x': traj.x}), n=3)
    traj = load(filename, index=-1, load_data=2)
    assert made_runs(traj) == 3
    assert traj.results.runs.run_00000002.p == {'x': 2}


@needs_tables
def test_hdf5_column_rows_are_plain_data():
    extras = ('Result', 'c', '', {}, {}, {}, {6})     # (run 6: an empty leaf)
    rows = mp._ColumnRows(5, 3, extras, [('z', [1.0, 2.0, 3.0], None)])
    assert dict(rows) == {5: ('Result', 'c', None, {'z': 1.0}),
                          6: ('Result', '', None, None),
                          7: ('Result', '', None, {'z': 3.0})}
    rows[9] = ('Result', '', None, {'z': 9.0})
    del rows[6]
    assert list(rows) == [5, 7, 9] and len(rows) == 3 and 6 not in rows
    assert type(pickle.loads(pickle.dumps(rows))) is dict    # never the class in a file


def test_showing_a_lazy_trajectory_makes_only_the_runs_shown(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path, n=50)
    traj = load(filename, index=-1, load_data=2)
    text = traj.f_tree(max_children=3)
    assert 'run_00000002' in text and 'run_00000003' not in text
    assert text.count('... 47 more') == 2                 # results and derived_parameters
    assert made_runs(traj) == 3 and made_runs(traj, 'derived_parameters') == 3
    assert 'run_00000001' in traj._repr_html_() and made_runs(traj) == 10
    assert traj.results.runs.f_children() == 50


def foo_job(traj):
    traj.f_add_result('z', foo=traj.x * 1.0)  # (one item, not named as the leaf)


def test_lazy_runs_answer_as_an_eager_load_where_memory_and_file_differ(file_backend,
                                                                        tmp_path):
    """The column of pending runs is read from the file only while memory holds exactly
    what the file holds: not after a run is removed or the file changed since the load;
    fast access takes a lone item only when it is named as the leaf (pypet's rule)."""
    filename, _ = lazy_sweep(file_backend, tmp_path, n=4)
    traj = load(filename, index=-1, load_data=2)
    traj.results.runs.f_remove_child('run_00000002', recursive=True)
    assert dict(traj.f_get_from_runs('z', fast_access=True, use_indices=True)) == {
        0: 0.5, 1: 1.5, 3: 9.5}
    a, b = (load(filename, index=-1, load_data=2) for _ in range(2))
    b.results.runs.run_00000002.f_get('z').f_set(99.0)
    b.f_store_item('results.runs.run_00000002.z', overwrite=True)
    got = a.f_get_from_runs('z', fast_access=True, use_indices=True)
    assert dict(got) == {0: 0.5, 1: 1.5, 2: 4.5, 3: 9.5} == {
        i: a.results.runs['run_%08d' % i].z for i in range(4)}
    fresh = load(filename, index=-1, load_data=2)   # (the journal holds b's record)
    got = fresh.f_get_from_runs('z', fast_access=True, use_indices=True, auto_load=True)
    assert dict(got)[2] == 99.0 and all(type(k) is int for k in got)
    json.dumps(dict(got))
    other = tmp_path / 'foo'
    other.mkdir()
    sweep(file_backend, path_for(file_backend, other), foo_job, n=3)
    traj = load(path_for(file_backend, other), index=-1, load_data=2)
    got = traj.f_get_from_runs('z', fast_access=True, use_indices=True)
    assert all(isinstance(v, mp.Result) and v.foo == i for i, v in got.items()), got


def test_lazy_runs_made_one_by_one_keep_the_load_order(file_backend, tmp_path):
    filename, _ = lazy_sweep(file_backend, tmp_path, n=3)
    traj = load(filename, index=-1, load_data=2)
    for i in (2, 0, 1):
        traj.results.runs['run_%08d' % i]
    assert list(traj.results.runs.f_get_children()) == [run_name(i) for i in range(3)]
    traj = load(filename, index=-1, load_data=2)
    traj.results.runs.run_00000002                          # (made first)
    text = traj.results.runs.f_tree(max_children=2)        # (shows the first two)
    assert 'run_00000000' in text and 'run_00000002' not in text and '1 more' in text
    traj.results.runs.f_remove_child('run_00000000', recursive=True)
    text = traj.results.runs.f_tree(max_children=2)
    assert 'run_00000000' not in text and 'run_00000001' in text and \
        'run_00000002' in text


# ---------------------------------------------------------------------------------------------
# A small sweep's fixed costs
# ---------------------------------------------------------------------------------------------
def test_a_serial_sweep_does_not_import_multiprocessing(tmp_path):
    """Importing multiprocessing (socket and more) costs ~4 ms a process: a serial sweep,
    which has no use for it, must not pay that."""
    script = tmp_path / 'serial.py'
    script.write_text(textwrap.dedent('''
        import sys
        import %s as mp

        def job(traj):
            traj.f_add_result('z', traj.x * 2)

        env = mp.Environment(trajectory='t', filename=%r, add_time=False, log_config=None,
                             report_progress=False,
                             storage_service=mp.PickleStorageService)
        env.v_trajectory.f_add_parameter('x', 0)
        env.v_trajectory.f_explore({'x': [1, 2, 3]})
        env.f_run(job)
        print('mp' if 'multiprocessing' in sys.modules else 'no mp')
    ''' % (MOD, str(tmp_path / 'serial.pkl'))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=sub_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['no', 'mp']
    assert list(load(str(tmp_path / 'serial.pkl'), name='t', load_data=2).f_get_from_runs(
        'z', fast_access=True).values()) == [2, 4, 6]


def result_only_job(traj):
    traj.f_add_result('z', traj.x * 0.5)


@needs_tables
def test_overview_tables_without_rows_are_left_out(tmp_path):
    filename = path_for('hdf5', tmp_path)
    env, traj = sweep('hdf5', filename, result_only_job, n=3)
    names = h5_overview_names(filename, 'traj')
    assert {'info', 'parameters', 'config', 'explored_parameters', 'explored_parameters_runs',
            'results_runs_summary', 'runs', 'results_runs'} <= names
    assert not {'results_trajectory', 'derived_parameters_trajectory',
                'derived_parameters_runs_summary', 'derived_parameters_runs'} & names
    # a later store that gives such a table rows writes it
    traj.f_add_result('summary', 1.5, comment='after the sweep')
    traj.f_store()
    with tables.open_file(filename) as h:
        rows = h.get_node('/traj/overview/results_trajectory').read()
    assert rows['name'].tolist() == [b'summary'] and rows['value'].tolist() == [b'summary=1.5']
    assert load(filename, name='traj', load_data=2).f_get('results.summary').f_get() == 1.5


def test_value_summaries_are_those_of_value_summary():
    cases = [[{'z': 0.1 * i} for i in range(20)] + [{'z': 1e300}, {'z': -0.0}],
             [{'data': i} for i in range(5)] + [{'data': True}],
             [{'z': float('nan')}, {'z': float('-inf')}, {'z': 2 ** 63}],
             [{'z': 10 ** 80}],                   # over 64 characters: cut with '...'
             [{'k' * 70: 1.0}],
             [{'z': 1}, {'y': 2}], [{'z': 1}, None], [{'z': 1}, {}], [{'__z': 1.0}],
             [{'a': 1, 'b': 2}], [{'z': 'text'}], [{'z': [1, 2]}], []]
    for datas in cases:
        assert mp._value_summaries(datas) == [mp._value_summary(d) for d in datas], datas


# ---------------------------------------------------------------------------------------------
# Chunk checksums (fletcher32): damage found when it is read
# ---------------------------------------------------------------------------------------------
def _flip_chunk_byte(path, dset_path, chunk, at=100):
    """Flip one byte inside a dataset's chunk of a file (found with get_chunk_info)."""
    with h5py.File(path, 'r') as h:
        where = h[dset_path].id.get_chunk_info(chunk).byte_offset + at
    with open(path, 'r+b') as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0x5A]))


@needs_h5py
def test_fletcher32_is_the_checksum_hdf5_appends_to_a_chunk(tmp_path):
    path = str(tmp_path / 'f.h5')
    rs = np.random.RandomState(3)
    datas = [rs.randint(0, 256, n).astype(np.uint8) for n in (1, 2, 3, 719, 721, 4097)]
    datas += [np.full(1441, 0xFF, np.uint8), np.zeros(9, np.uint8),  # (0 mod 65535)
              np.tile(np.array([0xFF, 0xFE], np.uint8), 70001)]
    with tables.open_file(path, 'w') as f:
        for k, data in enumerate(datas):
            f.create_earray('/', 'd%d' % k, atom=tables.UInt8Atom(), shape=(0,),
                            filters=tables.Filters(complevel=0, fletcher32=True),
                            chunkshape=(len(data),)).append(data)
    with h5py.File(path, 'r') as h:
        for k, data in enumerate(datas):
            mask, chunk = h['d%d' % k].id.read_direct_chunk((0,))
            assert chunk[:-4] == data.tobytes()
            assert mp._fletcher32(data.tobytes(), np) == chunk[-4:], len(data)


@needs_h5py
@pytest.mark.parametrize('shuffle', [True, False])
def test_chunks_written_directly_equal_hdf5s_own_with_fletcher32(tmp_path, shuffle):
    path = str(tmp_path / 'c.h5')
    rs = np.random.RandomState(5)
    smooth = np.repeat(rs.randint(0, 1000, (24, 1000)), 20, axis=1).astype(np.int64)
    # (noise in the last rows: their chunks do not compress, they are stored raw)
    smooth[12:] = rs.randint(-2 ** 63, 2 ** 63 - 1, (12, 20000), dtype=np.int64)
    filters = tables.Filters(complevel=9, complib='zlib', shuffle=shuffle)
    with tables.open_file(path, 'w') as f:
        direct = mp._h5_append(f, f.root, 'direct', smooth, 'ndarray', filters)
        if not hasattr(direct, 'write_chunk'):
            pytest.skip('PyTables %s writes no chunks directly (3.10 does): HDF5 '
                        'computes every checksum itself' % tables.__version__)
        assert direct.filters.fletcher32 and mp._direct_chunks(direct, smooth)
        own = f.create_earray('/', 'own', atom=direct.atom, shape=(0, 20000),
                              filters=direct.filters, chunkshape=direct.chunkshape)
        own.append(smooth)
        plain = f.create_earray('/', 'plain', atom=direct.atom, shape=(0, 20000),
                                filters=tables.Filters(complevel=0, fletcher32=True),
                                chunkshape=direct.chunkshape)
        plain.append(smooth)  # (HDF5's raw chunks, as minipypet keeps noise)
        assert direct.chunkshape[0] < len(smooth)  # (several chunks)
        assert_same(direct.read(), smooth)
    with h5py.File(path, 'r') as h:
        a, b, c = h['direct'], h['own'], h['plain']
        assert a.fletcher32 and a.id.get_num_chunks() == b.id.get_num_chunks()
        masks = set()
        for k in range(a.id.get_num_chunks()):
            offset = a.id.get_chunk_info(k).chunk_offset
            mask, got = a.id.read_direct_chunk(offset)
            # (HDF5 keeps a chunk that zlib makes bigger compressed; minipypet stores it
            # raw, the compression marked skipped: as HDF5 stores it without zlib)
            want = (b if mask == 0 else c).id.read_direct_chunk(offset)[1]
            assert got == want, (k, mask, len(got), len(want))
            masks.add(mask)
        assert masks == {0, 3 if shuffle else 1}  # (compressed chunks and raw ones)
        assert_same(a[()], smooth)


def noise_array_job(traj):
    traj.f_add_result('a', np.random.RandomState(traj.x).randint(0, 2 ** 62, 1 << 17))


def smooth_array_job(traj):
    traj.f_add_result('a', np.arange(1 << 17) // 100 + traj.x)


@needs_h5py
@pytest.mark.parametrize('data', ['raw', 'compressed'])
def test_damage_in_a_big_segments_run_array_is_found_when_read(tmp_path, monkeypatch,
                                                               data):
    # 1 MB a run (a chunk each): noise is stored raw, with no zlib adler32 to fail
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, noise_array_job if data == 'raw' else smooth_array_job, n=4)
    segment = h5_segments(filename, 'traj')[0]
    with h5py.File(segment, 'r') as h:
        dset = h['results/runs/a/a']
        assert dset.fletcher32 and dset.chunks[0] == 1
        assert (dset.compression is None) == (data == 'raw')
        assert dset.id.get_chunk_info(1).chunk_offset == (1, 0)
    _flip_chunk_byte(segment, 'results/runs/a/a', 1)
    monkeypatch.setattr(mp, '_VERIFY_MAX', [1000])  # the segment is "over 128 MB"
    mp._VERIFIED.clear()
    name = os.path.basename(segment)
    with h5py.File(segment, 'r') as h:  # (HDF5 itself checks: plain h5py sees it)
        with pytest.raises(OSError):
            h['results/runs/a/a'][1]
    traj = load(filename, load_results=1)
    for idx in (0, 2, 3):
        traj.f_load_item(traj.f_get('results.runs.%s.a' % mp._run_name(idx)))
        assert traj.f_get('results.runs.%s.a' % mp._run_name(idx)).a.shape == (1 << 17,)
    with pytest.raises(mp.StorageError) as info:
        traj.f_load_item(traj.f_get('results.runs.%s.a' % mp._run_name(1)))
    text = str(info.value)
    assert name in text and 'results/runs/a/a' in text and "run 1's row" in text
    assert 'python -m minipypet check' in text and 'backup' in text
    for call in (lambda: load(filename, load_results=2),
                 lambda: load(filename, load_results=1).f_get_from_runs(
                     'a', fast_access=True, auto_load=True)):
        with pytest.raises(mp.StorageError, match='damaged') as info:
            call()
        assert name in str(info.value) and 'results/runs/a/a' in str(info.value)


@needs_tables
def test_a_segment_too_big_to_hash_whose_index_is_damaged_is_refused_not_read_as_empty(
        tmp_path, monkeypatch):
    # HDF5 lists no children of a group whose B-tree is damaged: a segment over 128 MB
    # (not hashed at its open) then read as "no runs, no results", without an error
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, square_job, n=4)
    segment = h5_segments(filename, 'traj')[0]
    with open(segment, 'r+b') as f:
        head = f.read(4096)
        at = head.index(b'TREE', 512) + 3  # (the root group's B-tree node)
        f.seek(at)
        f.write(bytes([head[at] ^ 0x80]))
    monkeypatch.setattr(mp, '_VERIFY_MAX', [1000])  # the segment is "over 128 MB"
    mp._VERIFIED.clear()
    name = os.path.basename(segment)
    for call in (lambda: load(filename, load_results=2),
                 lambda: load(filename, load_results=0).f_get_from_runs(
                     'z', fast_access=True, auto_load=True),
                 lambda: mp.runs_table(filename)):
        with pytest.raises(mp.StorageError, match='index is damaged') as info:
            call()
        text = str(info.value)
        assert name in text and '/_runs' in text and 'minipypet check' in text


# ---------------------------------------------------------------------------------------------
# Damaged and crafted files: run indices, arrays outside runs, attributes
# ---------------------------------------------------------------------------------------------
def _flip_middle_of_chunk(path, dset_path, chunk=0):
    """Flip the middle byte of a dataset's chunk (however small compression made it)."""
    with h5py.File(path, 'r') as h:
        info = h[dset_path].id.get_chunk_info(chunk)
    _flip_chunk_byte(path, dset_path, chunk, at=info.size // 2)


def every_other_z_job(traj):
    if traj.x % 2 == 0:  # (z's run indices are no span: its _idx is read at a load)
        traj.f_add_result('z', traj.x + 0.5)


@needs_h5py
@pytest.mark.parametrize('dset', ['results/runs/z/_idx', '_runs'])
def test_damage_in_a_segments_run_index_is_a_storage_error_naming_it(tmp_path, monkeypatch,
                                                                     dset):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, every_other_z_job, n=3000)
    segment = h5_segments(filename, 'traj')[0]
    with h5py.File(segment, 'r') as h:
        assert h[dset].fletcher32
    _flip_middle_of_chunk(segment, dset)
    monkeypatch.setattr(mp, '_VERIFY_MAX', [1000])  # the segment is "over 128 MB"
    mp._VERIFIED.clear()

    def load_all():
        traj = load(filename, load_results=2)
        traj.f_get_run_information(1)  # (the run information is read when asked for)
    with pytest.raises(mp.StorageError, match='damaged') as info:
        load_all()
    text = str(info.value)
    assert os.path.basename(segment) in text and dset in text, text
    assert 'python -m minipypet check' in text and 'HDF5ExtError' not in text
    assert not isinstance(info.value.__cause__, mp.PypetError)


def big_result_job(traj):
    traj.f_add_result('z', traj.x)


@needs_h5py
@pytest.mark.parametrize('complevel', [9, 0])
def test_arrays_outside_runs_carry_fletcher32_and_their_damage_is_named(
        tmp_path, monkeypatch, complevel):
    filename = path_for('hdf5', tmp_path)
    env = make_env('hdf5', filename, complevel=complevel)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [0, 1]})
    big = np.arange(1 << 14, dtype=np.int64) % 7  # 128 KB: a chunked dataset
    traj.f_add_result('big', big)
    traj.f_add_result('small', np.arange(10))     # (small: contiguous, hashed at the open)
    env.f_run(big_result_job)
    with h5py.File(filename, 'r') as h:
        dset = h['traj/results/big']
        assert dset.fletcher32 and dset.chunks is not None
        assert (dset.compression is None) == (complevel == 0)
    assert_same(load(filename, load_results=2).results.big, big)
    _flip_middle_of_chunk(filename, 'traj/results/big')
    monkeypatch.setattr(mp, '_VERIFY_MAX', [1000])  # the main file is "over 128 MB"
    mp._VERIFIED.clear()
    with h5py.File(filename, 'r') as h:  # (HDF5 itself checks: plain h5py sees it)
        with pytest.raises(OSError):
            h['traj/results/big'][()]
    with pytest.raises(mp.StorageError, match='damaged') as info:
        load(filename, load_results=2)
    text = str(info.value)
    assert os.path.basename(filename) in text and 'results/big' in text
    assert 'backup' in text
    assert load(filename, load_results=1).f_get_from_runs(
        'z', fast_access=True, auto_load=True) == {mp._run_name(0): 0, mp._run_name(1): 1}


class _WritesAMarker:
    """Unpickling it creates the file `path` (code run by a crafted file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


@needs_tables
def test_hdf5_attributes_of_a_crafted_file_are_never_unpickled(tmp_path):
    """PyTables unpickles an attribute value as soon as its node's attributes are read
    (the root's at opening): in the files minipypet opens, plain data only (review)."""
    import tables
    marker, path = tmp_path / 'ran', str(tmp_path / 'crafted.hdf5')
    with tables.open_file(path, 'w') as f:
        f.root._v_attrs.evil = _WritesAMarker(str(marker))
        f.create_group('/', 'results')._v_attrs.evil = _WritesAMarker(str(marker))
        f.root._v_attrs.fine = [1, 2.5, 'plain']
    shutil.copyfile(path, str(tmp_path / 'copy.hdf5'))
    with tables.open_file(str(tmp_path / 'copy.hdf5'), 'r') as other:  # (not minipypet's:
        assert other.root._v_attrs.fine == [1, 2.5, 'plain']      # PyTables as it is)
    assert marker.exists()  # (the crafted value ran)
    marker.unlink()
    with pytest.raises(mp.PypetError):
        mp.load_trajectory(filename=path)
    assert not mp._is_pypet_file(path)
    assert not marker.exists()
    f = mp._open_hdf5(path, mp.StorageError, mp.StorageError)
    with f:
        assert f.root._v_attrs.fine == [1, 2.5, 'plain']   # (plain data still reads)
        assert isinstance(f.get_node('/results')._v_attrs.evil, bytes)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Loaded runs not made yet: in workers and in f_get_from_runs
# ---------------------------------------------------------------------------------------------
def read_earlier_run_job(traj):
    """Runs 6 and 7 read run 0's and 1's z, loaded with the trajectory and not made yet."""
    earlier = traj.f_get('results.runs.%s.z' % mp._run_name(traj.v_idx - 6))
    traj.f_add_result('w', earlier.z + 100)


@needs_tables
@pytest.mark.timeout(120)
@pytest.mark.parametrize('start_method', [pytest.param('fork', marks=needs_fork),
                                          pytest.param('spawn', marks=needs_spawn)])
def test_pending_runs_reach_pool_workers_as_their_columns(tmp_path, start_method):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, square_job, n=6)
    loaded = load(filename, load_results=2, load_parameters=2)
    kids = loaded.results.runs._children
    assert type(kids) is mp._PendingRuns and kids.pending() == 6
    assert any(type(rows) is mp._ColumnRows for _, rows, _ in kids.layers)
    copy = loaded._worker_copy()  # (what a pool's workers get)
    sent = copy.results.runs._children
    assert [type(rows) for _, rows, _ in sent.layers] == \
        [type(rows) for _, rows, _ in kids.layers]  # (columns arrive as columns)
    # what a job pickles (into a file) names no private class of minipypet's (review)
    assert type(pickle.loads(pickle.dumps(sent.layers[0][1]))) is dict
    assert b'_sent_rows' not in pickle.dumps(copy)
    assert [dict(rows) for _, rows, _ in sent.layers] == \
        [dict(rows) for _, rows, _ in kids.layers]
    # (a row per run pickled would be ~6x bigger: the columns are sent as they were read)
    assert type(pickle.loads(pickle.dumps(kids.layers[0][1]))) is dict  # (files: plain)
    loaded.f_expand({'x': [6, 7]})
    env = mp.Environment(loaded, log_config=None, report_progress=False, multiproc=True,
                         ncores=2, use_pool=True, start_method=start_method)
    env.f_run(read_earlier_run_job)
    got = load(filename, load_results=2)
    assert got.f_get_from_runs('w', fast_access=True, use_indices=True) == {
        6: 100.5, 7: 101.5}
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i * i + 0.5 for i in range(6)}


def nested_z_job(traj):
    traj.f_add_result('z', traj.x * 2.0)
    if traj.x == 1:
        traj.f_add_result('sub.z', -1.0)  # (a second z below run 1: f_get_from_runs says)


@needs_tables
@pytest.mark.parametrize('load_results', [1, 2])
def test_f_get_from_runs_of_pending_runs_makes_a_run_when_its_leaf_is_asked_for(
        tmp_path, load_results):
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, square_job, n=6)
    for kwargs in ({}, {'use_indices': True}, {'fast_access': True},
                   {'include_default_run': False}):
        traj = load(filename, load_results=load_results, load_parameters=2)
        kids = traj.results.runs._children
        got = traj.f_get_from_runs('z', **kwargs)
        assert kids.pending() == 6 and len(got) == 6  # (no run made yet)
        key = 3 if kwargs.get('use_indices') else mp._run_name(3)
        assert key in got and (-1 if key == 3 else 'run_ALL') not in got
        eager = load(filename, load_results=load_results, load_parameters=2)
        eager.results.runs._children.make()
        want = eager.f_get_from_runs('z', **kwargs)
        assert list(got) == list(want)
        if kwargs.get('fast_access') and load_results == 2:  # (values: the file's column)
            assert got == want == {mp._run_name(i): i * i + 0.5 for i in range(6)}
            continue
        node = got[key]
        assert kids.pending() == 5
        assert node is traj.f_get('results.runs.%s.z' % mp._run_name(3))
        assert [n.v_full_name for n in got.values()] == \
            [n.v_full_name for n in want.values()]
        assert [n.f_is_empty() for n in got.values()] == [load_results == 1] * 6
        assert kids.pending() == 0
    # runs with another z below them (and derived parameters' dz): made as before
    filename = path_for('hdf5', tmp_path, 'nested')
    sweep('hdf5', filename, nested_z_job, n=3, name='nested')
    traj = load(filename, load_results=load_results)
    got = traj.f_get_from_runs('z', use_indices=True)
    assert type(got) is dict and [n.v_full_name for n in got.values()] == [
        'results.runs.%s.z' % mp._run_name(i) for i in range(3)]
    traj = load(filename, load_results=load_results)
    dz = traj.f_get_from_runs('dz', use_indices=True)
    assert type(dz) is dict and dz == {}


@needs_tables
def test_f_get_from_runs_of_pending_runs_keeps_its_leaves_when_nodes_are_removed(tmp_path):
    """What f_get_from_runs returned holds its leaves, as the dict of nodes did, when
    runs or leaves are removed from the tree afterwards (review)."""
    filename = path_for('hdf5', tmp_path)
    sweep('hdf5', filename, square_job, n=4)
    for remove in ('results', 'results.runs.%s.z' % mp._run_name(1)):
        traj = load(filename, load_results=2, load_parameters=2)
        got = traj.f_get_from_runs('z', use_indices=True)
        if remove == 'results':
            traj.f_remove_child('results', recursive=True)
        else:
            traj.f_remove_item(remove)
        assert [n.z for n in got.values()] == [i * i + 0.5 for i in range(4)]
        assert got[1].v_full_name == 'results.runs.%s.z' % mp._run_name(1)


# ---------------------------------------------------------------------------------------------
# A file of several trajectories: stores patch a copy
# ---------------------------------------------------------------------------------------------
@prov_needs_tables
def test_storing_one_of_several_trajectories_of_a_file_keeps_the_others(tmp_path):
    # (a shared file is copied byte for byte and patched, every 16th time written whole:
    # the others stay as they were, and freed space does not pile up)
    filename = str(tmp_path / 'shared.hdf5')
    for name in ('a', 'b', 'c'):
        traj = mp.Trajectory(name, filename=filename, add_time=False)
        traj.f_add_parameter('x', 1)
        traj.f_add_result('r', list(range(500)), comment=name)
        traj.f_store()
    sizes = []
    for i in range(20):
        traj.f_add_result('more%d' % i, i)
        traj.f_store()
        sizes.append(os.path.getsize(filename))
    assert max(sizes) < 3 * sizes[0]
    for name in ('a', 'b', 'c'):
        got = load(filename, name=name, load_all=mp.LOAD_DATA)
        assert got.r == list(range(500)) and got.f_get('r').v_comment == name
    assert load(filename, name='c', load_all=mp.LOAD_DATA).more19 == 19
    got.f_delete_item('more3')            # (a drop of a trajectory's node, in a patched copy)
    assert 'more3' not in load(filename, name='c', load_all=mp.LOAD_DATA)
    assert mp.load_trajectory(name='a', filename=filename, load_all=mp.LOAD_DATA).r[-1] == 499


# ---------------------------------------------------------------------------------------------
# The parent folds what workers append, as it comes
# ---------------------------------------------------------------------------------------------
def append_as_a_worker(filename, idxs):
    """What a LOCK (or NONE) pool worker does: append runs to the journal itself."""
    journal = mp._Journal(filename + '.journal')
    for idx in idxs:
        journal.append(tuple(handover_record(idx)))
    journal.close()


def no_journal_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('the checkpoint read the journal again')
    monkeypatch.setattr(mp._Journal, 'records', classmethod(refuse))


@pytest.mark.timeout(120)
def test_the_parent_folds_the_runs_the_workers_append_as_they_come(
        file_backend, tmp_path, monkeypatch):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 6)
    append_as_a_worker(filename, range(3))
    svc._follow_journal()
    append_as_a_worker(filename, range(3, 6))
    svc._follow_journal(claim=True)
    assert svc._live.end == os.path.getsize(filename + '.journal')
    no_journal_reads(monkeypatch)
    traj.f_store()
    monkeypatch.undo()
    assert not os.path.exists(filename + '.journal')
    assert_handover_runs(filename, range(6))


@pytest.mark.timeout(120)
def test_an_append_under_way_is_folded_once_it_is_whole(file_backend, tmp_path, monkeypatch):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 3)
    append_as_a_worker(filename, range(2))
    payload = pickle.dumps(tuple(handover_record(2)), protocol=4)
    record = mp._Journal._HEAD.pack(len(payload), zlib.crc32(payload)) + payload
    with open(filename + '.journal', 'ab') as f:
        f.write(record[:len(record) // 2])  # (what a reader can see of a write under way)
        f.flush()
        whole = os.path.getsize(filename + '.journal') - len(record) // 2
        svc._follow_journal()
        assert svc._live.end == whole  # (the two whole runs; not the half)
        f.write(record[len(record) // 2:])
    svc._follow_journal(claim=True)
    no_journal_reads(monkeypatch)
    traj.f_store()
    monkeypatch.undo()
    assert_handover_runs(filename, range(3))


@pytest.mark.timeout(120)
def test_damage_in_the_journal_ends_the_parents_fold(file_backend, tmp_path, caplog):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 4)
    append_as_a_worker(filename, range(2))
    intact = os.path.getsize(filename + '.journal')
    with open(filename + '.journal', 'ab') as f:
        f.write(b'\x07' * 40)  # (damage; the checkpoint skips it and says so)
    append_as_a_worker(filename, range(2, 4))
    svc._follow_journal(claim=True)
    assert svc._live is None or svc._live.end == intact  # (the fold stops at it)
    with caplog.at_level(logging.WARNING, logger='minipypet'):
        traj.f_store()
    assert any('damaged bytes were skipped' in r.getMessage() for r in caplog.records)
    assert_handover_runs(filename, range(4))


@pytest.mark.timeout(120)
def test_a_torn_record_a_full_disk_left_between_runs_ends_the_parents_fold(
        file_backend, tmp_path, caplog):
    """A worker whose append hit a full disk leaves its torn record (cutting it could
    take another worker's record appended meanwhile): the parent's fold, which reads with
    plain reads (an mmap of a file cut meanwhile was a SIGBUS), stops at it, and the
    checkpoint skips it and stores every whole run."""
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 4)
    append_as_a_worker(filename, range(2))
    payload = pickle.dumps(tuple(handover_record(9)), protocol=4)
    torn = mp._Journal._HEAD.pack(len(payload), zlib.crc32(payload)) + payload
    with open(filename + '.journal', 'ab') as f:
        f.write(torn[:-5] + b'\0' * 5)  # (whole length, wrong checksum)
    append_as_a_worker(filename, range(2, 4))
    svc._follow_journal(claim=True)
    assert svc._live is None
    with caplog.at_level(logging.WARNING, logger='minipypet'):
        traj.f_store()
    assert any('damaged bytes were skipped' in r.getMessage() for r in caplog.records)
    assert_handover_runs(filename, range(4))


EXPANDING_WRITER = """
import sys, minipypet as mp
def job(traj):
    traj.f_add_result('z', traj.x * 2.5)
env = mp.Environment(trajectory='w', filename=sys.argv[1], add_time=False, log_config=None,
                     report_progress=False)
env.v_trajectory.f_add_parameter('x', 0)
env.v_trajectory.f_explore({'x': list(range(5))})
env.f_run(job)
for _ in range(30):  # (a checkpoint each: a new main file and a new journal)
    n = len(env.v_trajectory)
    env.v_trajectory.f_expand({'x': list(range(n, n + 5))})
    env.f_run(job)
"""


def test_a_load_while_another_process_checkpoints_sees_one_consistent_state(file_backend,
                                                                           tmp_path):
    # A load read main file N and then the journal that checkpoint N+1 started: runs counted
    # as completed whose rows only N+1 lists (most loads during such a sweep were wrong)
    filename = path_for(file_backend, tmp_path)
    script = tmp_path / 'writer.py'
    script.write_text(EXPANDING_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), filename], env=subprocess_env())
    loads = 0
    try:
        while writer.poll() is None or not loads:
            if not os.path.exists(filename):
                time.sleep(0.01)
                continue
            traj = mp.load_trajectory(name='w', filename=filename, load_all=2)
            loads += 1
            done = [i for i in range(len(traj)) if traj.f_is_completed(i)]
            zs = traj.f_get_from_runs('z', fast_access=True, use_indices=True)
            assert {i: zs.get(i) for i in done} == {i: i * 2.5 for i in done}, \
                'load %d: %d runs, completed without z: %s' % (
                    loads, len(traj), [i for i in done if i not in zs])
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0 and loads >= 2
    assert len(mp.load_trajectory(name='w', filename=filename, load_all=2)
               .f_get_from_runs('z', fast_access=True)) == 155


def test_an_append_that_fails_on_a_full_disk_cuts_nothing_others_append(tmp_path):
    """A worker's append that hits a full disk leaves its torn bytes: it holds no more
    than a shared lock, so another worker may be appending after them, and a cut (to
    where its own write began, or to the last whole record it had read) could take that
    record. Readers skip the torn bytes; the records before and after are read."""
    with small_disk(tmp_path, '1m') as (folder, grow):
        path = folder + '/j.journal'
        first, second = mp._Journal(path), mp._Journal(path)
        first.append(('note', 0))
        before = os.path.getsize(path)
        with pytest.raises(mp.StorageError, match='ENOSPC'):
            first.append(('note', b'x' * (2 << 20)))  # (a 2 MB record on a 1 MB disk)
        torn = os.path.getsize(path)
        assert torn > before, 'the torn bytes stay'
        grow()
        second.append(('note', 2))
        first.append(('note', 3))
        for journal in (first, second):
            journal.close()
        assert [r for r in mp._Journal.records(path)] == [('note', 0), ('note', 2),
                                                           ('note', 3)]


def test_a_record_bigger_than_one_write_is_refused_before_it_is_written(tmp_path):
    """A journal record is one write() (appenders never interleave), and Linux writes at
    most ~2 GiB a call: a bigger run was a torn record taken for a full disk. Now it is
    refused by name before anything is written (a small limit stands in for 2 GiB)."""
    assert mp._Journal._MAX_RECORD == 0x7ffff000 - 8
    path = str(tmp_path / 'j.journal')
    journal = mp._Journal(path, fsync_interval=None)
    journal.append(('note', 0))
    size = os.path.getsize(path)
    journal._MAX_RECORD = 1000
    with pytest.raises(mp.StorageError, match=r'the data of run 7 is .* nothing of it is '
                                              r'written\. Store it as several results'):
        journal.append(('run', 't', 7, b'x' * 2000))
    journal.close()
    assert os.path.getsize(path) == size
    assert list(mp._Journal.records(path)) == [('note', 0)]


def test_repair_frees_a_torn_tails_space_without_cutting_the_file(tmp_path):
    """A torn tail is never cut off (a reader without the lock may have the journal
    mapped, and a page of an mmap past the end of its file is a SIGBUS): under the
    exclusive lock its space is freed as a hole that reads as zeros (Linux), readers
    skip it, and new records follow it."""
    with small_disk(tmp_path, '4m') as (folder, grow):
        path = folder + '/j.journal'
        journal = mp._Journal(path, fsync_interval=None)
        journal.append(('note', 0))
        journal.close()
        with open(path, 'ab') as f:
            f.write(os.urandom(2 << 20))  # (a torn 2 MB record)
        size, blocks = os.path.getsize(path), os.stat(path).st_blocks
        assert mp._Journal.repair(path) is not None
        assert os.path.getsize(path) == size, 'not cut'
        if sys.platform.startswith('linux'):
            assert os.stat(path).st_blocks < blocks // 4, 'its space is freed'
        journal = mp._Journal(path, fsync_interval=None)
        journal.append(('note', 1))
        journal.close()
        assert list(mp._Journal.records(path)) == [('note', 0), ('note', 1)]


@pytest.mark.timeout(120)
def test_a_record_appended_after_the_parents_claim_is_folded_too(file_backend, tmp_path):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 4)
    append_as_a_worker(filename, range(3))
    svc._follow_journal(claim=True)
    append_as_a_worker(filename, [3])  # (after the workers: the checkpoint reads it all)
    traj.f_store()
    assert_handover_runs(filename, range(4))


# ---------------------------------------------------------------------------------------------
# Run-index bitmaps, segment batches, the serial sweep's GC freeze
# ---------------------------------------------------------------------------------------------
def test_bits_update_of_a_span_counts_as_one_by_one():
    import random
    rng = random.Random(5)
    for _ in range(300):
        bits, held = mp._Bits(), set()
        for _ in range(rng.randint(1, 3)):
            for idx in rng.sample(range(300), rng.randint(0, 8)):  # (held before)
                bits.add(idx)
                held.add(idx)
            lo = rng.randint(0, 200)
            batch = dict.fromkeys(range(lo, lo + rng.randint(0, 90)))  # (a sweep's batch)
            if rng.random() < 0.3:
                batch = dict.fromkeys(rng.sample(range(260), rng.randint(0, 40)))
            bits.update(batch)
            held.update(batch)
            assert bits.count == len(held)
            assert [i for i in range(320) if i in bits] == sorted(held)


def test_run_span_of_batches_out_of_order_or_spoiled():
    import types
    h = types.SimpleNamespace(span=[None, -1], seen=bytearray())
    mp._note_span(h, [0, 2, 4], (1, 1, True))     # (a pool's runs: gaps filled later)
    mp._note_span(h, [1, 3], (1, 1))
    mp._note_span(h, [5, 6, 7], (1, 1, 1))
    assert h.span == [0, 7] and h.seen.count(1) == 8
    mp._note_span(h, [7, 8], (1, 1))              # run 7 stored again: no span
    assert h.span[0] is None and h.seen is None
    h = types.SimpleNamespace(span=[None, -1], seen=bytearray())
    mp._note_span(h, [0, 1, 2], (1, 0, 1))        # a run not completed: no span
    assert h.span[0] is None


def test_serial_sweep_freezes_and_thaws_only_what_it_may(file_backend, tmp_path):
    seen = []

    def job(traj):
        seen.append(gc.get_freeze_count() > 0)
        traj.f_add_result('z', traj.x * 2.0)
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, job, n=3)
    assert seen == [True] * 3 and gc.get_freeze_count() == 0  # thawed at the end
    mine = [object()]
    gc.freeze()  # the process froze objects itself: a sweep must not thaw them
    try:
        count = gc.get_freeze_count()
        sweep(file_backend, path_for(file_backend, tmp_path, 'other'), job, n=2,
              name='other')
        # (still frozen: only what the sweep freed left the count; thawed it is 0)
        assert count // 2 < gc.get_freeze_count() <= count and mine
    finally:
        gc.unfreeze()
    assert load(filename, load_results=2).f_get_from_runs('z', fast_access=True) == {
        run_name(i): 2.0 * i for i in range(3)}


def mixed_rows_job(traj):
    """Rows a segment's fast paths must hand to the long way: a second item, another
    comment, annotations and an empty leaf, in some runs only."""
    x = traj.x
    if x % 4 == 1:
        traj.f_add_result('r', a=float(x), b=x)
    elif x % 4 == 2:
        traj.f_add_result('r', a=float(x), comment='odd one')
    elif x % 4 == 3:
        res = traj.f_add_result('r', a=float(x))
        res.v_annotations.f_set(note=x)
    else:
        traj.f_add_result('r', a=float(x))


@needs_tables
def test_a_long_explored_range_loads_exactly_with_its_repeated_values_shared(tmp_path):
    # a cartesian product's range repeats each value: loaded, equal values are one object
    # (a million runs' ranges took ~50 MB of floats); 0.0 and -0.0, NaN, big ints stay exact
    xs = [float(i) / 7 for i in range(7000)] + [-0.0, 0.0, float('nan'), float('inf')]
    ks = [i * 10 ** 12 for i in range(10)]
    filename = str(tmp_path / 'long.hdf5')
    traj = mp.Trajectory('long', filename=filename, add_time=False)
    traj.f_add_parameter('x', 0.0)
    traj.f_add_parameter('k', 0)
    traj.f_explore(mp.cartesian_product({'x': xs, 'k': ks}))
    n = len(traj)
    traj.f_store()
    got = mp.load_trajectory(name='long', filename=filename, load_all=2)
    want_x, want_k = traj.f_get('x').f_get_range(), traj.f_get('k').f_get_range()
    got_x, got_k = got.f_get('x').f_get_range(), got.f_get('k').f_get_range()
    assert len(got_x) == len(got_k) == n == 70040
    assert [repr(v) for v in got_x] == [repr(v) for v in want_x]  # (-0.0, nan exact)
    assert list(got_k) == list(want_k) and {type(v) for v in got_k} == {int}
    assert len(set(map(id, got_x))) == len(set(map(repr, xs))) and \
        len(set(map(id, got_k))) == len(ks)


def test_segment_batches_with_exceptions_load_as_stored(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    sweep(file_backend, filename, mixed_rows_job, n=12)
    got = load(filename, load_results=2)
    for x in range(12):
        res = got.f_get('results.runs.%s.r' % run_name(x))
        assert res.a == float(x)
        assert (res.b == x) if x % 4 == 1 else not hasattr(res, 'b') or res.f_is_empty()
        assert res.v_comment == ('odd one' if x % 4 == 2 else '')
        assert (res.v_annotations.f_get('note') == x) if x % 4 == 3 else \
            not res.v_annotations.f_to_dict()


# =============================================================================================
# Reading HDF5 files written by pypet 0.6 / 0.7
# =============================================================================================
# Tests of the pypet-0.6/0.7 HDF5 reader against the fixtures written by the real pypet 0.7.
# 
# The fixtures live in testdata/ as pypet07_*.hdf5 or gzipped as pypet07_*.hdf5.gz (unpacked to
# tmp_path); the expected values (read back by pypet itself) are in
# testdata/pypet_fixtures_expected.json.
# 
HERE = os.path.dirname(os.path.abspath(__file__))
R = mp  # the pypet reader lives in the module


def _find_testdata():
    for cand in (os.path.join(HERE, 'testdata'), os.path.join(HERE, '..', 'testdata')):
        if os.path.isfile(os.path.join(cand, 'pypet_fixtures_expected.json')):
            return os.path.abspath(cand)
    return None


TESTDATA = _find_testdata()
needs_pypet_fixtures = pytest.mark.skipif(
    TESTDATA is None or np is None or tables is None,
    reason='reading pypet files needs numpy, PyTables and testdata/ with the pypet fixtures')
PYPET_EXPECTED = json.load(open(os.path.join(TESTDATA, 'pypet_fixtures_expected.json'))) \
    if TESTDATA else {'files': {}, 'raw_files': {}}
ALL_FILES = sorted(PYPET_EXPECTED['files']) + sorted(PYPET_EXPECTED['raw_files'])
TRAJS = [(f, t) for f in sorted(PYPET_EXPECTED['files']) for t in PYPET_EXPECTED['files'][f]]
READ_ERROR = getattr(R, 'PypetReadError', None) or getattr(R, 'DataNotInStorageError')


@pytest.fixture
def fixture_file(tmp_path):
    """fixture_file('pypet07_basic.hdf5') -> a path to it, gunzipped to tmp_path if only the
    .gz is there."""
    def get(name):
        plain = os.path.join(TESTDATA, name)
        if os.path.isfile(plain):
            return plain
        if os.path.isfile(plain + '.gz'):
            out = tmp_path / name
            if not out.exists():
                with gzip.open(plain + '.gz', 'rb') as src, open(out, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
            return str(out)
        pytest.fail('fixture %s(.gz) is missing from %s' % (name, TESTDATA))
    return get


# -- helpers ------------------------------------------------------------------------------
def decode(v):
    """The tagged JSON of pypet_fixtures_expected.json -> Python/numpy values."""
    if isinstance(v, dict):
        if '__ndarray__' in v:
            return np.array(v['__ndarray__'], dtype=v['dtype']).reshape(v['shape'])
        if '__tuple__' in v:
            return tuple(decode(x) for x in v['__tuple__'])
        if '__set__' in v:
            return {decode(x) for x in v['__set__']}
        if '__complex__' in v:
            return complex(*v['__complex__'])
        if '__npscalar__' in v:
            return np.dtype(v['dtype']).type(decode(v['__npscalar__']))
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def typename(v):
    t = type(v)
    return t.__name__ if t.__module__ == 'builtins' else '%s.%s' % (t.__module__, t.__name__)


def pypet_assert_same(got, expected, expected_type, where):
    assert typename(got) == expected_type, '%s: type %s, pypet gives %s (%r)' % (
        where, typename(got), expected_type, got)
    if isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        assert np.array_equal(got, expected), where
    else:
        assert got == expected, '%s: %r != %r' % (where, got, expected)
        if isinstance(got, (list, tuple)):  # element types too (int stays int, not int32)
            assert [typename(x) for x in got] == [typename(x) for x in expected], where


def flatten(state):
    """state -> {full name: (class, comment, ann, data)} for every leaf, run leaves included."""
    out = {}
    for name, rec in state['nodes'].items():
        if rec['kind'] == 'leaf':
            out[name] = (rec['class'], rec['comment'], rec['ann'], rec['data'])
    for template, rows in state['columns'].items():
        for idx, row in rows.items():
            parts = ['run_%08d' % idx if p == '$' else 'run_set_%05d' % (idx // 1000)
                     if p == '$set' else p for p in template.split('.')]
            out['.'.join(parts)] = row
    return out


def check_parameter(full, leaf, exp):
    cls, comment, ann, data = leaf
    assert cls == exp['class'], full
    assert comment == exp['comment'], full
    assert data is not None, full
    if cls == 'PickleParameter':  # pickles come back as bytes; only this test unpickles
        assert isinstance(data['data'], bytes) and isinstance(data['protocol'], int), full
        assert data['protocol'] == 2  # pypet's default for PickleParameter
        default = pickle.loads(data['data'])
        rng = [pickle.loads(x) for x in data['explored_data']] if 'explored_data' in data \
            else None
        if rng is not None:
            assert all(isinstance(x, bytes) for x in data['explored_data']), full
    else:
        default, rng = data['data'], data.get('explored_data')
    pypet_assert_same(default, decode(exp['default']), exp['default_type'], full + ' default')
    assert (rng is not None) == exp['explored'], full
    if exp['explored']:
        assert len(rng) == len(exp['range']), full
        for i, (got, want, wtype) in enumerate(zip(rng, exp['range'], exp['range_types'])):
            pypet_assert_same(got, decode(want), wtype, '%s[%d]' % (full, i))


def check_result(full, leaf, exp):
    cls, comment, ann, data = leaf
    assert cls == exp['class'], full
    assert comment == exp['comment'], full  # purged duplicate comments stay ''
    assert data is not None, full
    if cls == 'PickleResult':
        data = dict(data)
        assert isinstance(data.pop('__pickle_protocol__'), int), full
        assert all(isinstance(v, bytes) for v in data.values()), full
        data = {k: pickle.loads(v) for k, v in data.items()}
    assert sorted(data) == sorted(exp['items']), full
    for key, want in exp['items'].items():
        pypet_assert_same(data[key], decode(want), exp['item_types'][key], '%s.%s' % (full, key))


# -- the fixtures, item by item -----------------------------------------------------------
@pytest.mark.parametrize('fname', ALL_FILES)
@needs_pypet_fixtures
def test_is_pypet_file(fname, fixture_file):
    assert R._is_pypet_file(fixture_file(fname)) is True


@pytest.mark.parametrize('fname,tname', TRAJS)
@needs_pypet_fixtures
def test_trajectory_matches_pypet(fname, tname, fixture_file):
    exp = PYPET_EXPECTED['files'][fname][tname]
    path = fixture_file(fname)
    state = R._pypet_read_state(path, name=tname)
    assert state['format'] == 1
    assert state['name'] == exp['name'] == tname
    assert state['comment'] == exp['comment']
    assert state['length'] == exp['length'] == len(exp['run_names'])
    assert state['version'] == PYPET_EXPECTED['versions']['pypet']
    assert state['python'] == PYPET_EXPECTED['versions']['python']
    assert re.match(r'^\d{4}_\d\d_\d\d_\d\dh\d\dm\d\ds$', state['time'])
    assert isinstance(state['timestamp'], float) and state['timestamp'] > 0
    assert sorted(state['explored']) == exp['explored']

    leaves = flatten(state)
    for full, pexp in exp['parameters'].items():
        check_parameter(full, leaves[full], pexp)
    for full, pexp in exp['derived_parameters'].items():
        check_parameter(full, leaves[full], pexp)
    for full, rexp in exp['results'].items():
        check_result(full, leaves[full], rexp)
    mine = {k for k in leaves if k.split('.')[0] != 'config'}
    assert mine == set(exp['parameters']) | set(exp['derived_parameters']) | \
        set(exp['results'])
    assert any(k.startswith('config.environment.') for k in leaves)  # pypet's own config

    # run information from the overview 'runs' table
    runs = state['runs']
    assert set(runs) == {'timestamp', 'finish_timestamp', 'completed', 'hexsha', 'error'}
    assert all(len(col) == state['length'] for col in runs.values())
    assert len(state['parameter_summary']) == state['length']
    for idx, rname in enumerate(exp['run_names']):
        rexp = exp['runs'][rname]
        assert rexp['idx'] == idx
        assert runs['completed'][idx] == rexp['completed'], rname
        assert runs['error'][idx] == ''
        if rexp['completed']:
            assert runs['timestamp'][idx] == rexp['timestamp']
            assert runs['finish_timestamp'][idx] == rexp['finish_timestamp']
            assert runs['hexsha'][idx] == rexp['short_environment_hexsha']
            assert len(runs['hexsha'][idx]) == 7
            assert state['parameter_summary'][idx] == rexp['parameter_summary']
        else:  # pypet's placeholder row (timestamp 42.0, hexsha 'N/A') is not passed on
            assert runs['timestamp'][idx] == runs['finish_timestamp'][idx] == 0.0
            assert runs['hexsha'][idx] == '' and state['parameter_summary'][idx] == ''

    # f_get_from_runs view of the per-run result
    key = [k for k in exp if k.startswith('f_get_from_runs_')][0]
    rname = key[len('f_get_from_runs_'):]
    rows = state['columns']['results.runs.$.%s' % rname]
    got = {'run_%08d' % i: row[3][rname] for i, row in rows.items()}
    assert got == {k: decode(v) for k, v in exp[key].items()}


@needs_pypet_fixtures
def test_placeholders_and_comment_purge(fixture_file):
    state = R._pypet_read_state(fixture_file('pypet07_resumed_partial.hdf5'))
    assert state['runs']['completed'] == [1, 1, 0, 0]
    assert sorted(state['columns']['results.runs.$.r']) == [0, 1]
    assert [row[1] for _, row in sorted(state['columns']['results.runs.$.r'].items())] == \
        ['a*100+sum(v)', '']
    basic = R._pypet_read_state(fixture_file('pypet07_basic.hdf5'))
    comments = {i: row[1] for i, row in basic['columns']['results.runs.$.z'].items()}
    assert comments == {0: 'product', 1: '', 2: '', 3: '', 4: '', 5: ''}
    assert basic['nodes']['config.environment'] == {
        'kind': 'group', 'ann': None,
        'comment': 'Settings for the different environments used to run the experiments'}


@pytest.mark.parametrize('fname', sorted(PYPET_EXPECTED['raw_files']))
@needs_pypet_fixtures
def test_crashed_file(fname, fixture_file):
    (tname, exp), = PYPET_EXPECTED['raw_files'][fname].items()
    path = fixture_file(fname)
    assert R._pypet_list_trajectories(path) == [tname]
    state = R._pypet_read_state(path)
    assert state['name'] == tname
    assert state['comment'] == exp['SRVC_INIT_COMMENT']
    assert state['explored'] == exp['explorations']
    assert state['length'] == len(exp['overview_runs_rows'])
    assert state['runs']['completed'] == [r['completed'] for r in exp['overview_runs_rows']]
    assert state['runs']['timestamp'] == [0.0] * state['length']
    assert state['runs']['hexsha'] == [''] * state['length']
    assert not exp['has_parameters_group'] and not exp['has_config_group']
    assert not [k for k in state['nodes'] if k.startswith(('parameters', 'config'))]
    rows = state['columns']['results.runs.$.r']
    got = {'run_%08d' % i: row[3]['r'] for i, row in rows.items()}
    assert got == exp['results_r']
    assert all(type(v) is int for v in got.values())


# -- choosing a trajectory ----------------------------------------------------------------
@needs_pypet_fixtures
def test_two_trajectories_by_name_and_index(fixture_file):
    path = fixture_file('pypet07_two_trajs.hdf5')
    names = R._pypet_list_trajectories(path)
    assert names == ['first', 'second']  # oldest first
    exp = PYPET_EXPECTED['files']['pypet07_two_trajs.hdf5']
    for idx, name in [(0, 'first'), (1, 'second'), (-1, 'second'), (-2, 'first')]:
        state = R._pypet_read_state(path, index=idx)
        assert state['name'] == name and state['comment'] == exp[name]['comment']
        assert state['length'] == exp[name]['length']
    assert R._pypet_read_state(path)['name'] == 'second'  # default: the newest
    first = R._pypet_read_state(path, name='first')
    assert first['nodes']['parameters.a']['data'] == {'data': 0, 'explored_data': [1, 2]}
    second = R._pypet_read_state(path, name='second')
    assert second['nodes']['parameters.b']['data'] == {'data': '',
                                                       'explored_data': ['u', 'v', 'w']}
    assert {i: r[3]['r'] for i, r in second['columns']['results.runs.$.r'].items()} == \
        {0: 'uu', 1: 'vv', 2: 'ww'}


@needs_pypet_fixtures
def test_missing_trajectory_names_the_file(fixture_file):
    path = fixture_file('pypet07_two_trajs.hdf5')
    with pytest.raises(READ_ERROR) as err:
        R._pypet_read_state(path, name='third')
    assert 'pypet07_two_trajs.hdf5' in str(err.value) and 'third' in str(err.value)
    with pytest.raises(READ_ERROR) as err:
        R._pypet_read_state(path, index=5)
    assert 'pypet07_two_trajs.hdf5' in str(err.value)


# -- data selection, safety, speed --------------------------------------------------------
@needs_pypet_fixtures
def test_data_selection(fixture_file):
    path = fixture_file('pypet07_basic.hdf5')
    full = R._pypet_read_state(path)
    none = R._pypet_read_state(path, data=False)
    assert set(none['nodes']) == set(full['nodes'])
    assert set(none['columns']) == set(full['columns'])
    assert all(r.get('data') is None for r in none['nodes'].values())
    assert all(row[3] is None for rows in none['columns'].values() for row in rows.values())
    assert none['nodes']['parameters.x']['comment'] == 'x coord'  # skeleton still there
    assert none['runs'] == full['runs'] and none['explored'] == full['explored']

    some = R._pypet_read_state(path, data={'parameters'})
    for name, rec in some['nodes'].items():
        if rec['kind'] == 'leaf':
            assert (rec['data'] is not None) == name.startswith('parameters.'), name
    assert all(row[3] is None for rows in some['columns'].values() for row in rows.values())
    res = R._pypet_read_state(path, data={'results'})
    assert res['columns']['results.runs.$.z'][3][3] == {'z': 40.0}
    assert res['columns']['derived_parameters.runs.$.dp'][3][3] is None


@needs_pypet_fixtures
def test_never_unpickles(fixture_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('the pypet reader must not unpickle')
    monkeypatch.setattr(pickle, 'loads', refuse)
    monkeypatch.setattr(pickle, 'load', refuse)
    for fname in ALL_FILES:
        R._pypet_read_state(fixture_file(fname))


@needs_pypet_fixtures
def test_foreign_files_are_not_pypet(tmp_path):
    import tables
    text = tmp_path / 'a.txt'
    text.write_text('hello')
    assert R._is_pypet_file(str(text)) is False
    assert R._is_pypet_file(str(tmp_path / 'missing.hdf5')) is False
    assert R._is_pypet_file(str(tmp_path)) is False
    broken = tmp_path / 'broken.hdf5'
    broken.write_bytes(b'\x89HDF\r\n\x1a\n' + b'\0' * 100)
    assert R._is_pypet_file(str(broken)) is False
    plain = tmp_path / 'plain.hdf5'
    with tables.open_file(str(plain), 'w') as f:
        f.create_array(f.root, 'x', np.arange(3))
        f.create_group(f.root, 'traj')
    assert R._is_pypet_file(str(plain)) is False
    with pytest.raises(READ_ERROR) as err:
        R._pypet_read_state(str(plain))
    assert 'plain.hdf5' in str(err.value)
    mini = tmp_path / 'mini.hdf5'  # minipypet's own files have an overview/info table too
    with tables.open_file(str(mini), 'w') as f:
        f.root._v_attrs.minipypet_format = 1
        ov = f.create_group(f.create_group(f.root, 't'), 'overview')
        f.create_table(ov, 'info', {'name': tables.StringCol(8)})
    assert R._is_pypet_file(str(mini)) is False


# =============================================================================================
# Parallel plumbing - workers, the queue writer, the lock wrapper, the executor adapter
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# Every mode: results correct, ordered, each run stored exactly once
# ---------------------------------------------------------------------------------------------
def _mode_params():
    out = []
    for start in PAR_START_METHODS:
        for wrap in ('QUEUE', 'LOCK', 'NONE', 'LOCAL', 'PIPE'):
            for pool, freeze in ((True, False), (True, True), (False, False)) if \
                    wrap not in ('LOCAL', 'PIPE') else ((True, False), (False, False)):
                out.append(pytest.param(pool, wrap, start, freeze, id='%s-%s-%s%s' % (
                    'pool' if pool else 'nopool', wrap, start, '-frozen' if freeze else '')))
    return out


@pytest.mark.timeout(90)
@pytest.mark.parametrize('use_pool,wrap_mode,start_method,freeze', _mode_params())
def test_every_mode_stores_each_run_once(tmp_path, J, count_stores, use_pool, wrap_mode,
                                         start_method, freeze):
    backend = 'pickle' if wrap_mode == 'NONE' else LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    log = str(tmp_path / 'exec.log')
    env = J.make_env(filename, backend, multiproc=True, ncores=2, use_pool=use_pool,
                     wrap_mode=wrap_mode, start_method=start_method, freeze_input=freeze)
    results = env.f_run(J.work, log=log)
    assert results == PARALLEL_EXPECTED  # ordered by run index
    assert sorted(executed(log)) == list(range(N))
    # (QUEUE, PIPE: the queue writer folds the runs and hands the fold to this process,
    # whose checkpoint reads none of them back)
    assert count_stores == ({} if wrap_mode in ('QUEUE', 'PIPE') else
                            {i: 1 for i in range(N)})
    assert env.v_trajectory.f_is_completed()
    assert_complete(filename)
    assert not os.path.exists(str(tmp_path / 't.cnt')), '.cnt not removed after success'


@par_needs_tables
@pytest.mark.timeout(30)
@pytest.mark.parametrize('use_pool', [True, False])
def test_hdf5_with_wrap_mode_none_is_refused_up_front(tmp_path, J, use_pool):
    filename = datafile(tmp_path, 'hdf5')
    log = str(tmp_path / 'exec.log')
    with pytest.raises(mp.ConfigurationError, match="NONE") as info:  # at once or at f_run
        env = J.make_env(filename, 'hdf5', multiproc=True, ncores=2, use_pool=use_pool,
                         wrap_mode='NONE')
        env.f_run(J.work, log=log)
    assert 'QUEUE' in str(info.value) and 'LOCK' in str(info.value)
    assert executed(log) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize('how', ['set', 'bag', 'add', 'none'])
@pytest.mark.parametrize('freeze', [False, True])
def test_a_pool_run_starts_from_a_fresh_trajectory_unless_frozen(tmp_path, J, how, freeze):
    # (the pool keeps a worker's trajectory and arguments for the next run only when the
    # run provably left them unchanged; without freeze_input no change leaks to later runs)
    filename = datafile(tmp_path, 'pickle')
    env = J.make_env(filename, 'pickle', multiproc=True, ncores=2, use_pool=True,
                     wrap_mode='QUEUE', freeze_input=freeze, xs=range(20))
    env.v_trajectory.f_add_parameter('c', 10)
    results = env.f_run(J.meddle, bag=[] if how == 'bag' else None, how=how)
    assert [i for i, _ in results] == list(range(40))
    seen = [r for _, r in results]
    assert all(s[3] for s in seen), 'explored parameters are plain attributes in a worker'
    assert [s[4] for s in seen] == [x for x in range(20) for _ in (0.5, 1.5)]
    if not freeze or how in ('none', 'add'):  # (what a run adds goes with its run group)
        assert set(seen) <= {(10, 0, False, True, x) for x in range(20)}, seen
    else:  # frozen: a worker's runs share its trajectory and arguments (as pypet's)
        changed = {'set': lambda s: s[0] > 10, 'bag': lambda s: s[1] > 0}[how]
        assert any(changed(s) for s in seen), seen
    values, _ = stored(filename)
    assert values == {i: x * x + y for i, (x, y) in enumerate(
        (x, y) for x in range(20) for y in (0.5, 1.5))}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('backend', ['pickle', LOCKED_BACKEND])
def test_serial_sweep_holds_the_journal_lock_and_a_store_in_a_job_does_not_hang(
        tmp_path, J, backend):
    # (a serial sweep keeps the shared folder lock from the first run to the last; a
    # checkpoint in this process, as storing another file of the folder in a job, must let
    # go of it, not wait for it for ever)
    filename = datafile(tmp_path, backend)
    env = J.make_env(filename, backend)
    held = []

    def job(traj):
        held.append(len(mp._HELD))
        if traj.v_idx == 2:
            other = mp.Trajectory('other', storage_service=service(
                backend, datafile(tmp_path, backend, 'other')))
            other.f_add_parameter('a', 1)
            other.f_store()
        return J.work(traj)
    assert env.f_run(job) == PARALLEL_EXPECTED
    assert held[:3] == [1, 1, 1] and not mp._HELD
    assert_complete(filename)
    assert mp.load_trajectory('other', filename=datafile(tmp_path, backend, 'other')).a == 1


@pytest.mark.timeout(90)
def test_a_store_beside_a_running_serial_sweep_does_not_wait_for_its_end(tmp_path, jobs_dir):
    # (the sweep keeps its shared folder lock for 10 ms at a time only: a checkpoint of
    # another process in the same folder, e.g. another sweep's end, gets in meanwhile)
    backend = LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    log = str(tmp_path / 'exec.log')
    proc = start_sweep(tmp_path, jobs_dir, backend, {'xs': list(range(150))},
                       {'log': log, 'sleep': 0.01})
    try:
        assert wait_for(lambda: len(executed(log)) >= 20, proc), proc.communicate()
        other = datafile(tmp_path, backend, 'other')
        began = time.time()
        for i in range(3):
            traj = mp.Trajectory('other%d' % i, storage_service=service(backend, other))
            traj.f_add_parameter('a', i)
            traj.f_store()
        took = time.time() - began
        running = proc.poll() is None
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err
    assert running, 'the stores waited for the sweep to end (%.1f s)' % took
    assert len(executed(log)) == 300
    assert len(stored(filename)[0]) == 300
    assert mp.load_trajectory('other2', filename=other).a == 2


# ---------------------------------------------------------------------------------------------
# Executors: ProcessPoolExecutor and a real dask.distributed LocalCluster
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def dask_executor(jobs_dir):
    if not HAVE_DASK:
        pytest.skip('dask.distributed missing')
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address=None)
    client = Client(cluster)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


def _process_pool(start_method):
    import concurrent.futures
    return concurrent.futures.ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context(start_method))


@pytest.mark.timeout(120)
@pytest.mark.parametrize('kind,backend', [('process-fork', 'pickle'),
                                          ('process-spawn', LOCKED_BACKEND),
                                          ('dask', 'pickle'), ('dask', LOCKED_BACKEND)])
def test_executor_stores_each_run_once(tmp_path, J, request, count_stores, kind, backend):
    if kind == 'dask':
        executor, own = request.getfixturevalue('dask_executor'), False
    else:
        executor, own = _process_pool(kind.split('-')[1]), True
    filename = datafile(tmp_path, backend)
    log = str(tmp_path / 'exec.log')
    try:
        env = J.make_env(filename, backend, executor=executor, freeze_input=True)
        results = env.f_run(J.work, log=log)
    finally:
        if own:
            executor.shutdown()
    assert results == PARALLEL_EXPECTED
    assert sorted(executed(log)) == list(range(N))
    assert count_stores == {i: 1 for i in range(N)}
    assert_complete(filename)


@pytest.mark.timeout(60)
def test_executor_reused_by_a_second_sweep_runs_the_second_job(tmp_path, J):
    """Executor workers cache the frozen context: a second sweep on the same executor (same
    trajectory name, same process) must not get the first sweep's job or arguments."""
    executor = _process_pool('fork' if 'fork' in PAR_START_METHODS else 'spawn')
    try:
        first = J.make_env(datafile(tmp_path, 'pickle', 'a'), 'pickle', executor=executor)
        assert first.f_run(J.work) == PARALLEL_EXPECTED
        log = str(tmp_path / 'second.log')
        second = J.make_env(datafile(tmp_path, 'pickle', 'b'), 'pickle', executor=executor)
        assert second.f_run(J.work, log=log, func=J.negate) == [(i, -z) for i, z in PARALLEL_EXPECTED]
        assert sorted(executed(log)) == list(range(N))
    finally:
        executor.shutdown()


# ---------------------------------------------------------------------------------------------
# A job that raises
# ---------------------------------------------------------------------------------------------
RAISE_MODES = {
    'serial': dict(),
    'pool-fork': dict(multiproc=True, ncores=2, start_method='fork'),
    'pool-spawn': dict(multiproc=True, ncores=2, start_method='spawn', wrap_mode='QUEUE'),
    'nopool-fork': dict(multiproc=True, ncores=2, use_pool=False, start_method='fork'),
    'executor': 'executor',
    'dask': 'dask',
}


def _env_for(J, mode, filename, backend, tmp_path, request=None, **more):
    if RAISE_MODES[mode] == 'dask':
        executor = request.getfixturevalue('dask_executor')
        return J.make_env(filename, backend, executor=executor, **more), None
    if RAISE_MODES[mode] == 'executor':
        executor = _process_pool('fork')
        return J.make_env(filename, backend, executor=executor, **more), executor
    return J.make_env(filename, backend, **dict(RAISE_MODES[mode], **more)), None


@pytest.mark.timeout(60)
@pytest.mark.parametrize('mode', sorted(RAISE_MODES))
def test_job_exception_is_reraised_with_worker_traceback(tmp_path, J, request, mode):
    backend = LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    env, executor = _env_for(J, mode, filename, backend, tmp_path, request)
    try:
        with pytest.raises(ValueError, match='boom in run 3') as info:
            env.f_run(J.work, at=3, how='raise', sleep=0.02)
    finally:
        if executor is not None:
            executor.shutdown()
    if mode == 'serial':
        assert info.traceback[-1].name == 'die'
    else:
        cause = str(info.value.__cause__)
        assert 'raise ValueError' in cause, cause          # the job's own source line
        assert re.search(r'run 3\b|run_00000003', cause), cause
        assert 'in die' in cause and 'in work' in cause, cause
    values, traj = stored(filename)
    for i in range(3):  # every run handed out before the failing one finished and is stored
        assert values.get(i) == PARALLEL_EXPECTED[i][1], (i, values)
    assert 3 not in values
    assert not traj.f_is_completed(3)
    assert all(values[i] == PARALLEL_EXPECTED[i][1] for i in values)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('mode', sorted(RAISE_MODES))
def test_a_failed_run_that_added_a_result_is_retried_in_every_mode(tmp_path, J, request, mode):
    # the retry failed with "results.runs.run_00000003.partial exists already" (issue 15)
    backend = LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    marker = str(tmp_path / 'failed_once')
    env, executor = _env_for(J, mode, filename, backend, tmp_path, request,
                             record_failed_runs=True)
    try:
        env.f_run(J.work, at=3, how='raise', marker=marker)  # run 3 adds `partial`, raises
        assert not env.v_trajectory.f_is_completed(3)
        results = env.f_run(J.work, at=3, how='raise', marker=marker)  # the retry succeeds
    finally:
        if executor is not None:
            executor.shutdown()
    assert results == [PARALLEL_EXPECTED[3]]  # (the runs not completed, again)
    values, traj = stored(filename)
    assert sorted(values.items()) == PARALLEL_EXPECTED
    assert traj.f_is_completed()
    # the retry replaced it (no run has it: an empty dict, as pypet's)
    assert traj.f_get_from_runs('partial', fast_access=True, use_indices=True) == {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('mode', sorted(RAISE_MODES))
def test_record_failed_runs_keeps_going(tmp_path, J, request, mode):
    backend = LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    env, executor = _env_for(J, mode, filename, backend, tmp_path, request,
                             record_failed_runs=True)
    try:
        results = env.f_run(J.work, at=3, how='raise')
    finally:
        if executor is not None:
            executor.shutdown()
    assert [r for r in results if r[0] != 3] == [r for r in PARALLEL_EXPECTED if r[0] != 3]
    for traj in (env.v_trajectory, stored(filename)[1]):
        info = traj.f_get_run_information(3)
        assert info['completed'] == 0
        assert 'ValueError' in info['error'] and 'boom in run 3' in info['error']
        assert all(traj.f_is_completed(i) for i in range(N) if i != 3)
        assert not traj.f_is_completed()
    values, traj = stored(filename)
    assert sorted(values.items()) == [r for r in PARALLEL_EXPECTED if r[0] != 3]
    assert traj.f_get_from_runs('partial', fast_access=True, use_indices=True) == {3: 3}


# ---------------------------------------------------------------------------------------------
# A worker that dies; the sweep is resumed
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(25)  # takes < 5 s; a dead worker must never hang the sweep
@pytest.mark.parametrize('how', ['exit', 'sigkill'])
@pytest.mark.parametrize('mode', ['pool-fork', 'pool-spawn', 'nopool-fork', 'executor'])
def test_dead_worker_is_reported_and_resumable(tmp_path, J, monkeypatch, how, mode):
    backend = LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    log, marker = str(tmp_path / 'exec.log'), str(tmp_path / 'died')
    env, executor = _env_for(J, mode, filename, backend, tmp_path)
    begin = time.time()
    try:
        with pytest.raises(mp.WorkerDiedError) as info:
            env.f_run(J.work, log=log, at=4, how=how, marker=marker, sleep=0.05)
    finally:
        if executor is not None:
            executor.shutdown()
    assert time.time() - begin < 20
    message = str(info.value)
    assert re.search(r'\bruns? (\d+, )*4\b', message), message  # names the run that died
    if mode != 'executor':
        assert (('signal 9' in message) if how == 'sigkill' else ('exit code 3' in message)), \
            message
    values, traj = stored(filename)
    assert 4 not in values
    assert len([i for i in values if i < 4]) >= 3, values  # dispatched in index order
    assert all(values[i] == PARALLEL_EXPECTED[i][1] for i in values)
    cnt = str(tmp_path / 't.cnt')
    assert os.path.exists(cnt)
    offset = os.path.getsize(log)
    monkeypatch.chdir(tmp_path)
    env2 = mp.Environment(log_config=None)
    assert env2.f_continue_run(cnt) == PARALLEL_EXPECTED
    assert sorted(executed(log, offset)) == sorted(set(range(N)) - set(values))
    assert_complete(filename)


# ---------------------------------------------------------------------------------------------
# Something that does not pickle
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize('what', ['lambda', 'lock'])
def test_unpicklable_argument_names_the_object(tmp_path, J, what):
    filename = datafile(tmp_path, 'pickle')
    value = (lambda z: z) if what == 'lambda' else threading.Lock()
    key = 'func' if what == 'lambda' else 'lock'
    env = J.make_env(filename, 'pickle', multiproc=True, ncores=2, use_pool=True,
                     wrap_mode='LOCK')
    with pytest.raises(mp.ConfigurationError) as info:
        env.f_run(J.work, **{key: value})
    message = str(info.value)
    assert ('lambda' if what == 'lambda' else 'lock') in message, message
    assert repr(key) in message or key in message, message
    assert 'use_pool=False' in message, message


@pytest.mark.skipif('fork' not in PAR_START_METHODS, reason='needs fork')
@pytest.mark.timeout(60)
@pytest.mark.parametrize('what', ['lambda', 'lock'])
def test_unpicklable_argument_works_without_pool_on_fork(tmp_path, J, what):
    filename = datafile(tmp_path, 'pickle')
    value = (lambda z: z) if what == 'lambda' else threading.Lock()
    key = 'func' if what == 'lambda' else 'lock'
    env = J.make_env(filename, 'pickle', multiproc=True, ncores=2, use_pool=False,
                     start_method='fork', wrap_mode='LOCK')
    assert env.f_run(J.work, **{key: value}) == PARALLEL_EXPECTED
    assert_complete(filename)


# ---------------------------------------------------------------------------------------------
# Shared data between runs: a Manager list passed as a run argument
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize('use_pool,start_method', [(True, 'fork'), (True, 'spawn'),
                                                   (False, 'fork'), (False, 'forkserver')])
def test_manager_list_is_filled_by_the_runs(tmp_path, J, use_pool, start_method):
    if start_method not in PAR_START_METHODS:
        pytest.skip('%s not available' % start_method)
    filename = datafile(tmp_path, 'pickle')
    manager = multiprocessing.get_context(start_method).Manager()
    try:
        shared = manager.list()
        env = J.make_env(filename, 'pickle', multiproc=True, ncores=2, use_pool=use_pool,
                         start_method=start_method, wrap_mode='QUEUE')
        assert env.f_run(J.work, shared=shared) == PARALLEL_EXPECTED
        assert sorted(shared) == PARALLEL_EXPECTED
    finally:
        manager.shutdown()


# ---------------------------------------------------------------------------------------------
# kill -9 the whole sweep at many points, in every mode; resume
# ---------------------------------------------------------------------------------------------
def start_sweep(tmp_path, jobs_dir, backend, env=None, kwargs=None, resume=None):
    cfg = {'path': [PAR_MODULE_DIR, str(jobs_dir)], 'filename': datafile(tmp_path, backend),
           'backend': backend, 'env': env or {}, 'kwargs': kwargs or {}, 'resume': resume}
    return subprocess.Popen([sys.executable, str(jobs_dir / 't3par_runner.py'),
                             json.dumps(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=str(tmp_path))


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(condition, proc, timeout=40.0, step=0.002):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(step)
    return False


POOL_Q = dict(multiproc=True, ncores=2, wrap_mode='QUEUE')
POOL_L = dict(multiproc=True, ncores=2, wrap_mode='LOCK')
POOL_N = dict(multiproc=True, ncores=2, wrap_mode='NONE')
NOPOOL = dict(multiproc=True, ncores=2, use_pool=False)
KILLS = [  # (id, backend, env settings, how to kill: ('job', run) | ('journal', runs) | ...)
    ('serial-pickle-job3', 'pickle', {}, ('job', 3)),
    ('serial-hdf5-job6', 'hdf5', {}, ('job', 6)),
    ('serial-hdf5-after4', 'hdf5', {}, ('journal', 4)),
    ('poolQ-hdf5-job4', 'hdf5', POOL_Q, ('job', 4)),
    ('poolQ-pickle-after3', 'pickle', POOL_Q, ('journal', 3)),
    ('poolL-hdf5-job5', 'hdf5', POOL_L, ('job', 5)),
    ('poolL-pickle-spawn-job2', 'pickle', dict(POOL_L, start_method='spawn'), ('job', 2)),
    ('poolN-pickle-job4', 'pickle', POOL_N, ('job', 4)),
    ('nopoolL-hdf5-job3', 'hdf5', dict(NOPOOL, wrap_mode='LOCK'), ('job', 3)),
    ('nopoolQ-pickle-after5', 'pickle', dict(NOPOOL, wrap_mode='QUEUE'), ('journal', 5)),
    ('nopoolN-pickle-job6', 'pickle', dict(NOPOOL, wrap_mode='NONE'), ('job', 6)),
    ('executor-pickle-job4', 'pickle', {'executor': True}, ('job', 4)),
    ('executor-hdf5-after3', 'hdf5', {'executor': True}, ('journal', 3)),
    ('serial-hdf5-final-store', 'hdf5', {}, ('checkpoint', None)),
    ('poolL-pickle-final-store', 'pickle', POOL_L, ('checkpoint', None)),
    ('nopoolL-pickle-torn-record', 'pickle', dict(NOPOOL, wrap_mode='LOCK'), ('torn', 2)),
]
BLOB = 2 * 1024 * 1024


@pytest.mark.timeout(120)
@pytest.mark.parametrize('backend,settings,kill', [  # without PyTables: all on pickle
    pytest.param(k[1].replace('hdf5', LOCKED_BACKEND), *k[2:],
                 id=k[0].replace('hdf5', LOCKED_BACKEND)) for k in KILLS])
def test_kill9_then_resume(tmp_path, jobs_dir, monkeypatch, backend, settings, kill):
    filename = datafile(tmp_path, backend)
    log, marker = str(tmp_path / 'exec.log'), str(tmp_path / 'killed')
    cnt = str(tmp_path / 't.cnt')
    point, arg = kill
    kwargs = {'log': log, 'sleep': 0.03}
    if point == 'job':
        kwargs.update(at=arg, how='killpg', marker=marker)
    if point in ('checkpoint', 'torn'):
        kwargs.update(blob=BLOB, sleep=0.0)
    proc = start_sweep(tmp_path, jobs_dir, backend, settings, kwargs)
    try:
        if point == 'journal':
            reached = wait_for(lambda: len(journal_runs(filename)) >= arg, proc)
        elif point == 'torn':  # mid-way through writing the third big record
            reached = wait_for(lambda: os.path.exists(filename + '.journal') and
                               os.path.getsize(filename + '.journal') > arg * BLOB + BLOB // 2,
                               proc, step=0.0005)
        elif point == 'checkpoint':  # the final store: a segment or the main file being
            # written under its temporary name
            pattern = re.compile(r'^\.%s\..*\.tmp$' % re.escape(os.path.basename(filename)))
            segments = filename + '.segments'

            def writing():
                return any(pattern.match(f) for f in os.listdir(str(tmp_path))) or \
                    os.path.isdir(segments) and any(f.endswith('.tmp')
                                                    for f in os.listdir(segments))
            reached = wait_for(lambda: len(executed(log)) == N and writing(), proc,
                               step=0.0005)
        else:
            reached = True
        if point != 'job':
            assert reached, 'the kill point was not reached: %r' % (proc.communicate(),)
            kill_group(proc)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err)
    assert os.path.exists(cnt), 'no .cnt after the crash'
    # what survived on disk: correct values, each run at most once in the journal
    assert all(c == 1 for c in journal_runs(filename).values()), journal_runs(filename)
    values, _ = stored(filename)
    assert all(values[i] == PARALLEL_EXPECTED[i][1] for i in values)
    if point == 'checkpoint':
        assert sorted(values) == list(range(N)), 'runs lost by a kill during the final store'
    offset = os.path.getsize(log)
    monkeypatch.chdir(tmp_path)
    env2 = mp.Environment(log_config=None)
    results = env2.f_continue_run(cnt)
    assert results == PARALLEL_EXPECTED, 'resumed results differ from an uninterrupted run'
    assert sorted(executed(log, offset)) == sorted(set(range(N)) - set(values)), \
        'resume must run exactly the runs not completed on disk'
    traj = assert_complete(filename)
    if kwargs.get('blob'):
        blobs = traj.f_get_from_runs('blob', fast_access=True, use_indices=True)
        assert {i: (len(b), b[:1]) for i, b in blobs.items()} == {
            i: (BLOB, bytes([i])) for i in range(N)}
    assert not os.path.exists(cnt)


def session_alive(pid):
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG: Linux')
@pytest.mark.timeout(120)
@pytest.mark.parametrize('settings', [POOL_Q, POOL_L, dict(NOPOOL, wrap_mode='QUEUE')],
                         ids=['pool-queue', 'pool-lock', 'nopool-queue'])
def test_kill9_of_the_main_process_alone_leaves_no_process_behind(tmp_path, jobs_dir,
                                                                  monkeypatch, settings):
    # (an out-of-memory killer or a batch scheduler kills the main process only: its
    # workers, queue writer and Manager must not wait forever on their pipes and queues)
    backend = LOCKED_BACKEND
    filename, cnt = datafile(tmp_path, backend), str(tmp_path / 't.cnt')
    proc = start_sweep(tmp_path, jobs_dir, backend, settings,
                       {'log': str(tmp_path / 'exec.log'), 'sleep': 0.2})
    try:
        assert wait_for(lambda: len(journal_runs(filename)) >= 2, proc), proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.time() + 10
        while session_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not session_alive(proc.pid), 'processes of the sweep outlived its main process'
    finally:
        kill_group(proc)
    monkeypatch.chdir(tmp_path)
    assert mp.Environment(log_config=None).f_continue_run(cnt) == PARALLEL_EXPECTED
    assert_complete(filename)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('settings', [{}, POOL_L], ids=['serial', 'pool-lock'])
def test_resume_killed_again_then_resumed(tmp_path, jobs_dir, monkeypatch, settings):
    """A crash, a resume that crashes too (kill -9 while it runs), a second resume."""
    backend = LOCKED_BACKEND
    filename, cnt = datafile(tmp_path, backend), str(tmp_path / 't.cnt')
    log, marker = str(tmp_path / 'exec.log'), str(tmp_path / 'killed')
    proc = start_sweep(tmp_path, jobs_dir, backend, settings,
                       {'log': log, 'sleep': 0.6, 'at': 2, 'how': 'killpg', 'marker': marker})
    try:  # runs of 0.6 s: slow enough for the resume to be caught in the middle below,
        # even where reading the file to see how far it got is slow (a load average of 8)
        proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    first, _ = stored(filename)
    assert len(first) < 5
    proc = start_sweep(tmp_path, jobs_dir, backend, resume=cnt)
    try:
        assert wait_for(lambda: len(stored(filename)[0]) >= 5, proc, step=0.01), \
            proc.communicate()
        kill_group(proc)
        proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, 'the resume finished before it was killed'
    second, _ = stored(filename)
    assert set(first) < set(second) and len(second) < N
    assert all(second[i] == PARALLEL_EXPECTED[i][1] for i in second)
    assert all(c == 1 for c in journal_runs(filename).values())
    offset = os.path.getsize(log)
    monkeypatch.chdir(tmp_path)
    assert mp.Environment(log_config=None).f_continue_run(cnt) == PARALLEL_EXPECTED
    assert sorted(executed(log, offset)) == sorted(set(range(N)) - set(second))
    assert_complete(filename)


@pytest.mark.timeout(60)
def test_continue_file_is_written_atomically(tmp_path, J, monkeypatch):
    filename = datafile(tmp_path, 'pickle')
    cnt = str(tmp_path / 't.cnt')
    renames = []
    real_replace = os.replace

    def spy(src, dst, *a, **kw):
        renames.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *a, **kw)
    monkeypatch.setattr(os, 'replace', spy)
    env = J.make_env(filename, 'pickle')
    with pytest.raises(ValueError):
        env.f_run(J.work, at=5, how='raise')
    monkeypatch.undo()
    assert [s for s, d in renames if os.path.abspath(d) == cnt], renames
    src = [s for s, d in renames if os.path.abspath(d) == cnt][0]
    assert os.path.dirname(os.path.abspath(src)) == str(tmp_path) and src != cnt
    assert sorted(os.listdir(str(tmp_path))) == ['t.cnt', 't.pkl'] or \
        not [f for f in os.listdir(str(tmp_path)) if f.endswith('.tmp')]
    assert isinstance(read_cnt(cnt), dict)


def read_cnt(path):
    """A .cnt's snapshot, read with the documented framing: a line MINIPYPET-CNT, a line with
    the signature of the pickle that follows (128 bits of HMAC-SHA256, hex) and its SHA-1
    (' sha1=' and 40 hex digits), the pickle."""
    with open(path, 'rb') as f:
        assert f.readline() == b'MINIPYPET-CNT\n'
        signature, digest = f.readline().strip().split(b' sha1=')
        assert len(signature) == 32 and len(digest) == 40
        data = f.read()
    assert hashlib.sha1(data).hexdigest().encode() == digest
    return pickle.loads(data)


ORPHAN_SWEEP = """
import os, sys, time, importlib
mp = importlib.import_module(os.environ['MINIPYPET_MODULE'])
folder, method, mode = sys.argv[1], sys.argv[2], sys.argv[3]

def job(traj):
    open(os.path.join(folder, 'started.%d' % traj.v_idx), 'w').close()
    time.sleep(60)  # (an orphan would go on and store this run after the main died)
    traj.f_add_result('z', traj.x)

if __name__ == '__main__':
    kwargs = {}
    if mode == 'executor':
        import concurrent.futures, multiprocessing
        kwargs['executor'] = concurrent.futures.ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context(method))
    else:
        wrap, pool = mode.split('-')
        kwargs.update(multiproc=True, ncores=2, wrap_mode=wrap, use_pool=pool == 'pool',
                      start_method=method)
    env = mp.Environment('t', add_time=False, filename=os.path.join(folder, 't.pkl'),
                         storage_service=mp.PickleStorageService, log_config=None, **kwargs)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2, 3, 4]})
    env.f_run(job)
"""


def processes_tagged(tag):
    """Pids of the processes whose environment holds `tag` (inherited from one script)."""
    pids = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open('/proc/%s/environ' % name, 'rb') as f:
                    if tag.encode() in f.read():
                        pids.append(int(name))
            except OSError:
                pass
    return pids


@pytest.mark.timeout(120)
@pytest.mark.parametrize('method, mode', [
    (method, mode) for method in ('fork', 'spawn', 'forkserver')
    for mode in ('QUEUE-pool', 'executor')] + [('forkserver', 'LOCK-nopool')])
def test_every_process_of_a_sweep_dies_with_the_main_on_kill9(tmp_path, method, mode):
    # with forkserver, the forkserver, the Manager and the runs lived on for 40 s and more
    # after a kill -9 of the main; a ProcessPoolExecutor's workers outlived it (issue 15)
    if not os.path.isdir('/proc/self') or method not in multiprocessing.get_all_start_methods():
        pytest.skip('needs /proc and the %s start method' % method)
    script = tmp_path / 'orphans.py'
    script.write_text(ORPHAN_SWEEP)
    tag = 'MINIPYPET_ORPHAN_TEST_%s' % os.urandom(8).hex()
    env = dict(subprocess_env(), MINIPYPET_ORPHAN_TAG=tag)
    main = subprocess.Popen([sys.executable, str(script), str(tmp_path), method, mode],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not any(n.startswith('started.') for n in os.listdir(str(tmp_path))):
            assert main.poll() is None and time.time() < deadline, 'the sweep did not start'
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(processes_tagged(tag)) >= 3  # the main and at least two helpers
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        deadline = time.time() + 5
        while processes_tagged(tag) and time.time() < deadline:
            time.sleep(0.1)
        left = processes_tagged(tag)
        assert not left, 'processes alive 5 s after the main was killed: %s' % left
    finally:
        for pid in processes_tagged(tag):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if main.poll() is None:
            main.kill()
            main.wait()


def crashed_with_a_saved_cnt(tmp_path, J):
    """A pickle sweep that raised in run 3: (data file, its .cnt file, a copy of that)."""
    filename = datafile(tmp_path, 'pickle')
    cnt = str(tmp_path / 't.cnt')
    env = J.make_env(filename, 'pickle')
    with pytest.raises(ValueError):
        env.f_run(J.work, at=3, how='raise')
    saved = str(tmp_path / 'saved.cnt')
    shutil.copy(cnt, saved)
    return filename, cnt, saved


@pytest.mark.timeout(60)
def test_resume_refuses_a_changed_exploration(tmp_path, J, monkeypatch):
    filename, cnt, saved = crashed_with_a_saved_cnt(tmp_path, J)
    # another sweep with the same name and different ranges rewrites the data file
    other = J.make_env(filename, 'pickle', xs=(10, 11, 12), overwrite_file=True)
    other.f_run(J.work)
    shutil.copy(saved, cnt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mp.ResumeError) as info:
        mp.Environment(log_config=None).f_continue_run(cnt)
    message = str(info.value)
    assert 't.cnt' in message and "'t'" in message and 'exploration' in message, message


@pytest.mark.timeout(60)
def test_resume_refuses_a_different_trajectory_and_garbage(tmp_path, J, monkeypatch):
    filename, cnt, saved = crashed_with_a_saved_cnt(tmp_path, J)
    os.remove(filename)
    J.make_env(filename, 'pickle', name='other').f_run(J.work)
    shutil.copy(saved, cnt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mp.ResumeError, match=r"'t'.*not in|not in.*'t'"):
        mp.Environment(log_config=None).f_continue_run(cnt)
    with open(cnt, 'wb') as f:
        f.write(b'not a pickle at all')
    with pytest.raises(mp.ResumeError, match='t.cnt'):
        mp.Environment(log_config=None).f_continue_run(cnt)
    with pytest.raises(mp.ResumeError, match='does not exist'):
        mp.Environment(log_config=None).f_continue_run(str(tmp_path / 'nope.cnt'))


SAME_NAME_SWEEP = """
import os, sys, time, importlib
mp = importlib.import_module(os.environ['MINIPYPET_MODULE'])
filename, backend, go, tag = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

def job(traj):
    traj.f_add_result('z', traj.x * 10 + tag)
    return traj.x

env = mp.Environment('same', add_time=False, filename=filename, log_config=None,
                     storage_service={'pickle': mp.PickleStorageService,
                                      'hdf5': mp.HDF5StorageService}[backend],
                     continue_folder=os.path.dirname(filename), delete_continue=False)
env.v_trajectory.f_add_parameter('x', 0)
env.v_trajectory.f_explore({'x': [1, 2, 3]})
while time.time() < go:
    pass
try:
    env.f_run(job)
    print('stored', tag)
except mp.StorageError as exc:
    print('refused', 'holds a trajectory' in str(exc))
"""


@pytest.mark.timeout(300)
def test_two_sweeps_of_one_name_started_at_once_one_is_stored_the_other_refused(
        file_backend, tmp_path):
    # 20 trials: 5 raw FileNotFoundErrors of a temp file the other writer removed, 3 times
    # both "succeeded" and the file held a mix of the two sweeps (issue 15)
    script = tmp_path / 'same_name.py'
    script.write_text(SAME_NAME_SWEEP)
    for trial in range(10):
        folder = tmp_path / str(trial)
        folder.mkdir()
        filename = path_for(file_backend, folder)
        go = repr(time.time() + 1.0)
        procs = [subprocess.Popen([sys.executable, str(script), filename, file_backend, go,
                                   str(tag)], env=subprocess_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for tag in (1, 2)]
        outs = [p.communicate(timeout=120) for p in procs]
        said = sorted(out.strip() for out, _ in outs)
        assert said[0] == 'refused True' and said[1].startswith('stored'), outs
        assert not any('Traceback' in err for _, err in outs), outs
        winner = int(said[1].split()[1])
        traj = load(filename, name='same', load_data=2)
        assert mp.PickleStorageService(filename).list_trajectories() == ['same'] \
            if file_backend == 'pickle' else True
        assert traj.f_get_from_runs('z', fast_access=True, use_indices=True) == {
            i: (i + 1) * 10 + winner for i in range(3)}
        cnt = mp._read_continue_file(os.path.join(os.path.dirname(filename), 'same.cnt'),
                                     True)  # (lenient: the job is the script's __main__.job)
        assert (cnt['trajectory'], cnt['length']) == ('same', 3)


FIRST_STORE_SWEEP = """
import os, signal, sys, importlib
mp = importlib.import_module(os.environ['MINIPYPET_MODULE'])
filename, backend, mode = sys.argv[1], sys.argv[2], sys.argv[3]
atomic_write = mp._atomic_write

def killed_at_the_cnt(path, write):  # a kill -9 just before or after the .cnt is written
    if path.endswith('.cnt') and mode == 'kill-before':
        os.kill(os.getpid(), signal.SIGKILL)
    atomic_write(path, write)
    if path.endswith('.cnt') and mode == 'kill-after':
        os.kill(os.getpid(), signal.SIGKILL)

mp._atomic_write = killed_at_the_cnt

def job(traj):
    traj.f_add_result('z', traj.x * 2)
    return traj.x

env = mp.Environment('t', add_time=False, filename=filename, log_config=None,
                     storage_service={'pickle': mp.PickleStorageService,
                                      'hdf5': mp.HDF5StorageService}[backend],
                     continue_folder=os.path.dirname(filename))
if mode == 'resume':
    print(env.f_continue_run(os.path.join(os.path.dirname(filename), 't.cnt')))
else:
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2, 3]})
    print(env.f_run(job))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize('kill', ['kill-before', 'kill-after'])
def test_a_kill_at_the_first_store_leaves_a_sweep_that_runs_again_or_resumes(
        file_backend, tmp_path, kill):
    # killed between the first store and the .cnt write, the sweep had no .cnt and running
    # the script again was refused with "holds a trajectory ... already" (issue 15)
    script = tmp_path / 'first_store.py'
    script.write_text(FIRST_STORE_SWEEP)
    filename = path_for(file_backend, tmp_path)

    def python(mode):
        return subprocess.run([sys.executable, str(script), filename, file_backend, mode],
                              env=subprocess_env(), capture_output=True, text=True,
                              timeout=60)
    assert python(kill).returncode == -signal.SIGKILL
    cnt = tmp_path / 't.cnt'
    if cnt.exists():  # the .cnt is there: the store may be, and then a resume completes it
        resumed = python('resume')
        if resumed.returncode == 0:
            assert resumed.stdout.strip() == '[(0, 1), (1, 2), (2, 3)]'
        else:
            assert 'nothing to resume: run it again' in resumed.stderr, resumed.stderr
            assert not (os.path.exists(filename) and
                        't' in mp.PickleStorageService(filename).list_trajectories()
                        if file_backend == 'pickle' else False)
            again = python('run')
            assert again.returncode == 0, again.stderr
    else:  # nothing stored: the script runs again from the start
        again = python('run')
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == '[(0, 1), (1, 2), (2, 3)]'
    traj = load(filename, name='t', load_data=2)
    assert traj.f_get_from_runs('z', fast_access=True, use_indices=True) == {0: 2, 1: 4, 2: 6}


def touch(path):
    """What a pickled payload runs when it is unpickled (os.system in a real attack)."""
    with open(path, 'w') as f:
        f.write('ran')
    return 'payload'


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return touch, (self.marker,)


@contextlib.contextmanager
def another_user(tmp_path, monkeypatch):
    """Play another user: another configuration folder, so another signing key."""
    folder = tmp_path / 'other_user_config'
    folder.mkdir(exist_ok=True)
    with monkeypatch.context() as m:
        m.setenv('XDG_CONFIG_HOME', str(folder))
        yield folder


@pytest.mark.parametrize('allow_pickle', [None, False, True])
def test_pickled_data_loads_by_default_only_where_this_user_wrote_it(file_backend, tmp_path,
                                                                     monkeypatch, allow_pickle):
    # opening a file from someone else ran its code (an os.system payload through
    # load_trajectory, even a skeleton load; issue 15): safe by default, as numpy's
    # allow_pickle=False (CVE-2019-6446), without breaking a user's own files
    filename = path_for(file_backend, tmp_path)
    marker = str(tmp_path / 'payload_ran')
    traj = mp.Trajectory('t', filename=filename, add_time=False,
                         storage_service=CLASSES[file_backend])
    traj.f_add_parameter(mp.PickleParameter, 'evil', Payload(marker))
    traj.f_add_result(mp.PickleResult, 'res', Payload(marker), other={1, 2})
    traj.f_store()
    assert not os.path.exists(marker)
    own = load(filename, load_data=2)  # this user's own file: signed, it loads
    assert own.res.other == {1, 2} and os.path.exists(marker)
    os.remove(marker)
    with another_user(tmp_path, monkeypatch) as config:
        if allow_pickle is not None:
            got = load(filename, load_data=2, allow_pickle=allow_pickle)
            assert os.path.exists(marker) == allow_pickle
            if allow_pickle:
                assert got.res.other == {1, 2}
            return
        skeleton = load(filename)  # parameters load with data, even in a skeleton load
        got = load(filename, load_data=2)
        assert not os.path.exists(marker)
        for node in (skeleton.parameters.evil, got.parameters.evil, got.results.res):
            with pytest.raises(mp.PickleRefusedError) as info:
                node.f_get()
            message = str(info.value)
            assert 'allow_pickle=True' in message, message
            assert 'python -m minipypet trust %s' % filename in message, message
            assert str(config) in message
        out = io.StringIO()
        assert mp.main(['trust', filename], out=out) == 0
        assert not os.path.exists(marker)  # trusting reads the pickles, it runs none
        assert 'trusted %s: 2 signatures' % filename in out.getvalue()  # (a leaf, one)
        assert oct(os.stat(str(config / 'minipypet' / 'trusted')).st_mode & 0o777) == '0o600'
        trusted = load(filename, load_data=2)
        assert trusted.res.other == {1, 2} and os.path.exists(marker)
    assert oct(os.stat(os.path.join(os.environ['XDG_CONFIG_HOME'], 'minipypet', 'key'))
               .st_mode & 0o777) == '0o600'


def flip_bit(path, at):
    """Flip the lowest bit of the byte at offset `at` of a file (negative: from its end)."""
    with open(path, 'r+b') as f:
        f.seek(at, os.SEEK_END if at < 0 else os.SEEK_SET)
        where = f.tell()
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 1]))


def kept_cnt_sweep(tmp_path, xs):
    """A finished continuable sweep of square_job whose .cnt is kept: (data file, .cnt)."""
    filename = str(tmp_path / 't.pkl')
    env = mp.Environment('t', add_time=False, filename=filename, log_config=None,
                         storage_service=mp.PickleStorageService,
                         continue_folder=str(tmp_path), delete_continue=False)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': xs})
    assert env.f_run(square_job) == list(enumerate(xs))
    return filename, str(tmp_path / 't.cnt')


def test_a_damaged_cnt_is_refused_as_damaged_not_as_another_users(tmp_path, monkeypatch):
    # (it was refused as written by another user, whose fixes, allow_pickle=True or
    # `minipypet trust`, then resumed the sweep with the damaged arguments)
    _, cnt = kept_cnt_sweep(tmp_path, [1, 2])
    flip_bit(cnt, -5)
    for allow in (None, True):
        with pytest.raises(mp.ResumeError, match='t.cnt is damaged: its checksum'):
            mp.Environment(log_config=None).f_continue_run(cnt, allow_pickle=allow)
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path / 'config'))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert mp.main(['trust', cnt], out=io.StringIO()) == 1
    assert 'is damaged' in err.getvalue()
    assert not os.path.exists(str(tmp_path / 'config' / 'minipypet' / 'trusted'))


def test_a_return_value_lost_to_a_damaged_results_log_is_named_on_resume(tmp_path, caplog):
    filename, cnt = kept_cnt_sweep(tmp_path, [1, 2, 3])
    flip_bit(cnt + '.results', -3)  # (in the last record's payload)
    with caplog.at_level(logging.WARNING, logger=mp.__name__):
        got = mp.Environment(log_config=None).f_continue_run(cnt)
    assert got == [(0, 1), (1, 2), (2, None)]
    said = [r.getMessage() for r in caplog.records if 'holds no return value' in r.getMessage()]
    assert said and 'is damaged' in said[0] and '1 finished run(s) (2)' in said[0] and \
        'intact' in said[0]
    assert load(filename, load_data=2).f_get_from_runs('z', fast_access=True,
                                                       use_indices=True) == {
        0: 1.5, 1: 4.5, 2: 9.5}


def test_a_cnt_from_another_user_is_not_unpickled_until_trusted(tmp_path, monkeypatch):
    marker = str(tmp_path / 'payload_ran')
    crafted = str(tmp_path / 'crafted.cnt')
    with open(crafted, 'wb') as f:  # a .cnt as minipypet 0.3 wrote it: a bare pickle
        pickle.dump({'format': 1, 'job': Payload(marker)}, f)
    with pytest.raises(mp.ResumeError, match='allow_pickle=True.*minipypet trust'):
        mp.Environment(log_config=None).f_continue_run(crafted)
    assert not os.path.exists(marker)
    # this user's own .cnt (signed) loads; another user's is refused until trusted
    filename = str(tmp_path / 't.pkl')
    env = mp.Environment('t', add_time=False, filename=filename, log_config=None,
                         storage_service=mp.PickleStorageService,
                         continue_folder=str(tmp_path), delete_continue=False)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2]})
    env.f_run(square_job)
    cnt = str(tmp_path / 't.cnt')
    assert mp._read_continue_file(cnt, False)['trajectory'] == 't'
    assert dict(mp._read_results_log(cnt + '.results')) == {0: 1, 1: 2}
    with another_user(tmp_path, monkeypatch):
        with pytest.raises(mp.ResumeError, match='t.cnt holds pickled data that this user'):
            mp._read_continue_file(cnt, False)
        with pytest.raises(mp.ResumeError, match='t.cnt.results holds pickled data'):
            mp._read_results_log(cnt + '.results')
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert mp.main(['resume', cnt]) == 1
        assert 'minipypet trust' in err.getvalue() and 'Traceback' not in err.getvalue()
        assert mp.main(['trust', cnt], out=io.StringIO()) == 0
        assert mp._read_continue_file(cnt, False)['trajectory'] == 't'
        assert dict(mp._read_results_log(cnt + '.results')) == {0: 1, 1: 2}
        with pytest.raises(mp.ResumeError, match='crafted.cnt is damaged'):
            mp._read_continue_file(crafted, True, allow_pickle=True)  # the user's call
    assert os.path.exists(marker)  # (allow_pickle=True: the payload ran)


def crafted_pickle_file(filename, name):
    """A pickle-backend file whose trajectory is renamed `name` (as a crafted file would)."""
    svc = mp.PickleStorageService(filename)
    content = svc._read_file()
    content['order'] = [name]
    content['trajectories'][name] = dict(content['trajectories'].pop('t'), name=name)
    with open(filename, 'wb') as f:
        f.write(svc.MAGIC)
        pickle.dump(content, f, protocol=4)


@pytest.mark.parametrize('name', ['../../X', '/tmp/abs', 'a/b', 'x.y', '', '__dict__'])
@pytest.mark.parametrize('where', ['file', 'journal', 'cnt'])
def test_names_read_from_a_file_are_checked_like_names_in_code(tmp_path, name, where):
    # a file whose trajectory name was '../../X' loaded, and running it put the .cnt and
    # the logs outside their folders (issue 15)
    filename = str(tmp_path / 'f.pkl')
    env = mp.Environment('t', add_time=False, filename=filename, log_config=None,
                         storage_service=mp.PickleStorageService, continue_folder=str(tmp_path),
                         delete_continue=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': [1, 2]})
    env.f_run(square_job)
    if where == 'file':
        crafted_pickle_file(filename, name)
    elif where == 'journal':
        os.remove(filename)
        journal = mp._Journal(filename + '.journal')
        journal.append(('traj', name, dict(env.v_trajectory._to_state(True), name=name),
                        2, True))
        journal.close()
    if where == 'cnt':
        cnt = str(tmp_path / 't.cnt')
        snapshot = read_cnt(cnt)
        with open(cnt, 'wb') as f:  # (unsigned: refused as untrusted first, so allow_pickle)
            pickle.dump(dict(snapshot, trajectory=name), f)
        with pytest.raises(mp.ResumeError, match='t.cnt.*trajectory name'):
            mp.Environment(log_config=None).f_continue_run(cnt, allow_pickle=True)
        return
    with pytest.raises(mp.StorageError, match='f.pkl is damaged or crafted'):
        mp.load_trajectory(filename=filename)
    with pytest.raises(mp.StorageError, match='trajectory name'):
        mp.PickleStorageService(filename).list_trajectories()


def test_node_names_read_from_a_file_are_checked(tmp_path):
    filename = str(tmp_path / 'f.pkl')
    traj = mp.Trajectory('t', filename=filename, add_time=False,
                         storage_service=mp.PickleStorageService)
    traj.f_add_parameter('x', 1)
    traj.f_store()
    content = mp.PickleStorageService(filename)._read_file()
    nodes = content['trajectories']['t']['nodes']
    nodes['parameters.../evil'] = nodes.pop('parameters.x')
    with open(filename, 'wb') as f:
        f.write(mp.PickleStorageService.MAGIC)
        pickle.dump(content, f, protocol=4)
    with pytest.raises(mp.StorageError, match="node name 'parameters.../evil'"):
        mp.load_trajectory(filename=filename)


SEEDED_SWEEP = """
import os, sys, importlib
mp = importlib.import_module(os.environ['MINIPYPET_MODULE'])

def job(traj):
    if os.path.exists('fail') and traj.x == 2:
        raise ValueError('a transient failure')
    return len(traj.labels) + traj.x

if __name__ == '__main__':
    env = mp.Environment('t', add_time=False, filename='t.pkl', log_config=None,
                         storage_service=mp.PickleStorageService, continue_folder='.')
    if sys.argv[1] == 'run':
        env.v_trajectory.f_add_parameter(mp.PickleParameter, 'labels',
                                         {'alpha', 'beta', 'gamma', 'delta', 'eps'})
        env.v_trajectory.f_add_parameter('x', 0)
        env.v_trajectory.f_explore({'x': [0, 1, 2, 3]})
        try:
            env.f_run(job)
        except ValueError:
            print('failed')
    else:
        print(sorted(env.f_continue_run('t.cnt')))
"""


@pytest.mark.timeout(120)
def test_a_resume_in_a_process_with_another_hash_seed_matches_the_fingerprint(tmp_path):
    # a PickleParameter holding a set of strings: its pickle follows the hash seed, so the
    # resume saw "its parameters or exploration changed" 4 times in 4 (issue 15)
    (tmp_path / 'seeded.py').write_text(SEEDED_SWEEP)
    (tmp_path / 'fail').write_text('')

    def python(seed, *args):
        env = dict(subprocess_env(), PYTHONHASHSEED=str(seed))
        return subprocess.run([sys.executable, 'seeded.py', *args], cwd=str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=60)
    first = python(1, 'run')
    assert first.returncode == 0 and 'failed' in first.stdout, first.stderr
    os.remove(str(tmp_path / 'fail'))
    resumed = python(2, 'resume')
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == '[(0, 5), (1, 6), (2, 7), (3, 8)]'


@pytest.mark.timeout(60)
def test_resume_by_name_and_folder(tmp_path, J, monkeypatch):
    """pypet 0.7's env.resume(trajectory_name, resume_folder)."""
    filename = datafile(tmp_path, 'pickle')
    log, marker = str(tmp_path / 'exec.log'), str(tmp_path / 'raised')
    env = J.make_env(filename, 'pickle', resume_folder=str(tmp_path / 'resume'))
    with pytest.raises(ValueError):
        env.f_run(J.work, log=log, at=5, how='raise', marker=marker)
    assert os.path.exists(str(tmp_path / 'resume' / 't.cnt'))
    monkeypatch.chdir(tmp_path)
    assert mp.Environment(log_config=None).resume('t', str(tmp_path / 'resume')) == PARALLEL_EXPECTED
    assert sorted(executed(log)) == sorted(list(range(N)) + [5])
    assert_complete(filename)


# ---------------------------------------------------------------------------------------------
# Graceful exit: Ctrl+C once lets running runs finish; twice stops at once
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize('settings', [{}, POOL_Q, POOL_L, dict(NOPOOL, wrap_mode='LOCK'),
                                      {'executor': True}],
                         ids=['serial', 'pool-queue', 'pool-lock', 'nopool-lock', 'executor'])
@pytest.mark.parametrize('presses', [1, 2])
def test_graceful_exit(tmp_path, jobs_dir, monkeypatch, settings, presses):
    backend = LOCKED_BACKEND
    filename = datafile(tmp_path, backend)
    log, slow, cnt = str(tmp_path / 'exec.log'), str(tmp_path / 'slow'), str(tmp_path / 't.cnt')
    open(slow, 'w').close()
    sleep = 1.0 if presses == 1 else 4.0
    proc = start_sweep(tmp_path, jobs_dir, backend, dict(settings, graceful_exit=True),
                       {'log': log, 'sleep': sleep, 'slow': slow})
    try:
        first = 2 if settings else 1
        assert wait_for(lambda: len(executed(log)) >= first, proc), proc.communicate()
        time.sleep(0.3)
        started = set(executed(log))
        os.killpg(proc.pid, signal.SIGINT)
        if presses == 2:
            time.sleep(0.3)
            pressed = time.time()
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    out, err = out.decode(), err.decode()
    values, _ = stored(filename)
    if presses == 1:
        assert proc.returncode == 0, err
        assert set(executed(log)) == started, 'a new run started after Ctrl+C'
        assert set(values) == started, 'the running runs were not finished and stored'
        returned = json.loads(out.split('RESULT ', 1)[1])
        assert [tuple(r) for r in returned] == [PARALLEL_EXPECTED[i] for i in sorted(started)]
    else:
        assert proc.returncode != 0
        stopped = re.search(r'STOPPED ([\d.]+)', err)
        stopped = float(stopped.group(1)) if stopped else time.time()
        assert stopped - pressed < sleep - 1.0, 'the second Ctrl+C did not stop at once'
        assert 'KeyboardInterrupt' in err
        assert set(values) <= set(executed(log))
    assert all(values[i] == PARALLEL_EXPECTED[i][1] for i in values)
    assert len(values) < N
    os.remove(slow)
    offset = os.path.getsize(log)
    monkeypatch.chdir(tmp_path)
    assert mp.Environment(log_config=None).f_continue_run(cnt) == PARALLEL_EXPECTED
    assert sorted(executed(log, offset)) == sorted(set(range(N)) - set(values))
    assert_complete(filename)


# ---------------------------------------------------------------------------------------------
# Property-based: explorations round-trip; bad input never corrupts a file
# ---------------------------------------------------------------------------------------------
if given is not None:
    _VALUES = {'int': st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1),
               'float': st.floats(allow_nan=False),
               'str': st.text(max_size=20)}

    @st.composite
    def explorations(draw):
        n = draw(st.integers(1, 5))
        kinds = draw(st.lists(st.sampled_from(sorted(_VALUES)), min_size=1, max_size=3))
        return {'p%d' % i: draw(st.lists(_VALUES[k], min_size=n, max_size=n))
                for i, k in enumerate(kinds)}

    def _same(a, b):
        return type(a) is type(b) and repr(a) == repr(b)

    @pytest.mark.timeout(300)
    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(exploration=explorations())
    def test_random_explorations_round_trip(J, exploration):
        names = sorted(exploration)
        n = len(exploration[names[0]])
        with tempfile.TemporaryDirectory() as folder:
            filename = os.path.join(folder, 'h.pkl')
            env = mp.Environment(trajectory='h', filename=filename, add_time=False,
                                 storage_service=mp.PickleStorageService, log_config=None,
                                 report_progress=False)
            traj = env.v_trajectory
            for name in names:
                traj.f_add_parameter(name, exploration[name][0])
            traj.f_explore(exploration)
            results = env.f_run(J.echo, names)
            want = [(i, tuple(exploration[k][i] for k in names)) for i in range(n)]
            assert [r[0] for r in results] == list(range(n))
            assert all(_same(a, b) for r, w in zip(results, want) for a, b in zip(r[1], w[1]))
            loaded = mp.load_trajectory(filename=filename, load_results=2)
            assert loaded.f_is_completed()
            for name in names:
                got = loaded.f_get_from_runs('r_' + name, fast_access=True, use_indices=True)
                assert list(got) == list(range(n))
                assert all(_same(got[i], exploration[name][i]) for i in range(n)), \
                    (name, dict(got), exploration[name])
                rng = loaded.f_get('parameters.' + name).f_get_range()
                assert all(_same(a, b) for a, b in zip(rng, exploration[name]))
                assert len(rng) == n

    class _StoredFile:
        """A finished sweep's file and its bytes (short repr for hypothesis reports)."""

        def __init__(self, filename):
            self.filename = filename
            with open(filename, 'rb') as f:
                self.content = f.read()

        def __repr__(self):
            return '<stored sweep %s>' % os.path.basename(self.filename)

        @contextlib.contextmanager
        def kept(self):
            """Assert the file is unchanged and loadable afterwards; then restore it, so that
            one failing example does not spoil the next ones."""
            filename = self.filename
            try:
                yield
                with open(filename, 'rb') as f:
                    assert f.read() == self.content, 'a bad input changed the stored file'
                assert not os.path.exists(filename + '.journal'), 'a bad input wrote the journal'
                assert sorted(stored(filename)[0].items()) == PARALLEL_EXPECTED
            finally:
                with open(filename, 'wb') as f:
                    f.write(self.content)
                for extra in (filename + '.journal',
                              os.path.join(os.path.dirname(filename), 'fresh.cnt')):
                    if os.path.exists(extra):
                        os.remove(extra)

    @pytest.fixture(scope='module')
    def stored_file(tmp_path_factory, jobs_dir):
        folder = tmp_path_factory.mktemp('t3prop')
        filename = str(folder / 't.pkl')
        jobs = importlib.import_module('t3par_jobs')
        jobs.make_env(filename, 'pickle').f_run(jobs.work)
        return _StoredFile(filename)

    _GOOD = 'abcxyzABC019_-'
    _BAD_NAMES = st.one_of(
        st.builds(lambda a, c, b: a + c + b, st.text(_GOOD, max_size=4),
                  st.characters(blacklist_categories=('Cs',)).filter(
                      lambda c: not re.match(r'[A-Za-z0-9_.$-]$', c)),
                  st.text(_GOOD, max_size=4)),
        st.builds(lambda p, b: p + b, st.sampled_from(['f_', 'v_']), st.text(_GOOD, max_size=4)),
        st.sampled_from(['', '.', 'a..b', '.a', 'a.', 'x y', 'a/b', 'a-b.c d']))
    _BAD_VALUES = st.one_of(
        st.builds(object), st.just(lambda: 1), st.builds(threading.Lock),
        st.lists(st.builds(object), min_size=1, max_size=3),
        st.dictionaries(st.text(max_size=3), st.builds(object), min_size=1, max_size=2),
        st.just(iter([1, 2])), st.just(type), st.just(Ellipsis))

    @pytest.mark.timeout(300)
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=_BAD_NAMES, kind=st.sampled_from(['parameter', 'result', 'derived']))
    def test_bad_names_raise_and_keep_the_file(stored_file, name, kind):
        with stored_file.kept():
            traj = mp.load_trajectory(filename=stored_file.filename, load_results=2)
            add = {'parameter': traj.f_add_parameter, 'result': traj.f_add_result,
                   'derived': traj.f_add_derived_parameter}[kind]
            with pytest.raises(mp.PypetError) as info:
                add(name, 1)
                traj.f_store()
            assert str(info.value).strip()

    @pytest.mark.timeout(300)
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=_BAD_VALUES, kind=st.sampled_from(['parameter', 'result', 'explore']))
    def test_bad_values_raise_and_keep_the_file(stored_file, value, kind):
        filename = stored_file.filename
        with stored_file.kept(), pytest.raises(mp.PypetError) as info:
            if kind == 'explore':  # a new sweep into the same file, with a bad range
                env = mp.Environment(trajectory='fresh', filename=filename, add_time=False,
                                     storage_service=mp.PickleStorageService,
                                     log_config=None, report_progress=False)
                env.v_trajectory.f_add_parameter('x', 1)
                env.v_trajectory.f_explore({'x': [1, value]})
                env.f_run(importlib.import_module('t3par_jobs').work)
            else:
                traj = mp.load_trajectory(filename=filename, load_results=2)
                (traj.f_add_parameter if kind == 'parameter' else traj.f_add_result)(
                    'bad', value)
                traj.f_store()
        assert str(info.value).strip()
else:
    @pytest.mark.skip(reason='hypothesis not installed')
    def test_property_based():
        pass


# ---------------------------------------------------------------------------------------------
# An unguarded spawn sweep
# ---------------------------------------------------------------------------------------------
UNGUARDED = FIRST_HOUR_PRELUDE + textwrap.dedent('''
    import minipypet as pypet

    def job(traj):
        return traj.x

    env = pypet.Environment(trajectory='u', filename='u.pkl', add_time=False, multiproc=True,
                            ncores=2, start_method='spawn', log_config=None)
    env.v_trajectory.f_add_parameter('x', 1.0)
    env.v_trajectory.f_explore({'x': [1.0, 2.0, 3.0]})
    env.f_run(job)
''')


@pytest.mark.timeout(120)
def test_an_unguarded_spawn_sweep_gets_the_hint(tmp_path):
    (tmp_path / 'u.py').write_text(UNGUARDED)
    out = subprocess.run([sys.executable, 'u.py'], cwd=str(tmp_path), env=sub_env(),
                         capture_output=True, text=True, timeout=100)
    assert out.returncode != 0
    assert "if __name__ == '__main__':" in out.stderr
    assert 'this sweep was started while a worker process imported the script' in out.stderr


# -- help in the code -------------------------------------------------------------------------
PUBLIC_CLASSES_16 = ['Environment', 'Trajectory', 'NNGroupNode', 'NNLeafNode', 'BaseParameter',
                     'Parameter', 'ArrayParameter', 'PickleParameter', 'BaseResult', 'Result',
                     'PickleResult', 'Annotations', 'StorageService', 'LazyStorageService',
                     'PickleStorageService', 'HDF5StorageService']


# ---------------------------------------------------------------------------------------------
# A worker's pristine copy
# ---------------------------------------------------------------------------------------------
def test_a_worker_keeps_its_pristine_copy_over_runs_that_add_results(monkeypatch):
    made = []
    of = mp._Pristine.of.__func__
    monkeypatch.setattr(mp._Pristine, 'of', classmethod(
        lambda cls, ctx: made.append(1) or of(cls, ctx)))
    traj = mp.Trajectory('t', add_time=False)
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [float(i) for i in range(10)]})
    ctx = mp._RunContext(traj._worker_copy(), _plain_job_x, (), {}, 'parent', None)
    fresh = pickle.dumps((ctx.traj, ctx.job, ctx.args, ctx.kwargs))
    ctx = pickle.loads(pickle.dumps(ctx))
    out = []
    for i in range(10):
        ctx.renew(fresh)
        out.append(ctx.run(i, {'parameters.x': float(i)}, None))
    assert [r.status for r in out] == ['ok'] * 10 and len(made) == 1
    assert out[3].record.leaves == [('results.runs.run_00000003.z', 'Result', '',
                                     {'z': 3.5}, None)]


def _plain_job_x(traj):
    traj.f_add_result('z', traj.x + 0.5)


# ---------------------------------------------------------------------------------------------
# Folds as runs come: by column name, and handed over by the QUEUE writer
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_live_fold_finds_run_columns_by_name(file_backend, tmp_path):
    """The live fold looks a run leaf's column up by its name below the run's group
    (results.runs.run_X.<name>); other places of the run's name go the long way."""
    def job(traj):
        traj.f_add_result('z', traj.x)
        traj.f_add_result('sim.crun.out', traj.x + 1)
        traj.f_add_result('runs.crun.deep.w', traj.x + 2)
        traj.f_add_result('results.tag_' + traj.v_crun, 7)

    filename = path_for(file_backend, tmp_path)
    env = make_env(file_backend, filename, name='t')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [0, 1, 2]})
    env.f_run(job)
    loaded = load(filename, name='t', load_results=2)
    assert loaded.f_get_from_runs('z', fast_access=True) == {
        run_name(i): i for i in range(3)}
    assert [loaded.results.sim[run_name(i)].out for i in range(3)] == [1, 2, 3]
    assert [loaded.res.runs[run_name(i)].deep.w for i in range(3)] == [2, 3, 4]
    assert loaded.results.tag_run_00000002 == 7


def handover_record(idx):
    return mp._RunRecord('run', 'traj', idx, (1.0 + idx, 2.0 + idx, 1, '', ''), [(
        'results.runs.%s.z' % run_name(idx), 'Result', '', {'z': idx + 0.5}, None)])


def handover_writer(svc, idxs, others, conn):
    """What the QUEUE writer does with the service: adopt the journal, store runs (those
    in `others` another appender stores, as another process would), hand over."""
    svc._adopt_journal()
    for idx in idxs:
        if idx in others:
            mp._Journal(svc._journal.path).append(tuple(handover_record(idx)))
        else:
            svc._store_run(handover_record(idx))
    conn.send(svc._hand_over())
    conn.close()


def handover_handed(svc, idxs, others=()):
    """Run handover_writer in a forked process; (what it handed over, segment files after)."""
    ctx = multiprocessing.get_context('fork')
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=handover_writer, args=(svc, list(idxs), set(others), there))
    proc.start()
    there.close()
    handed = here.recv() if here.poll(60) else 'nothing'
    proc.join(30)
    assert proc.exitcode == 0 and handed != 'nothing'
    return handed, set(segment_files(svc.filename))


def handover_sweep_start(file_backend, tmp_path, n):
    filename = path_for(file_backend, tmp_path)
    svc = service(file_backend, filename)
    traj = mp.Trajectory('traj', storage_service=svc)
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(n))})
    traj.f_store(only_init=True)  # the journal's first record, this process's
    return filename, svc, traj


def assert_handover_runs(filename, done):
    got = load(filename, name='traj', load_data=2)
    assert [i for i in range(len(got)) if got.f_is_completed(i)] == list(done)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i + 0.5 for i in done}


@needs_fork
@pytest.mark.timeout(120)
def test_the_checkpoint_takes_the_queue_writers_fold(file_backend, tmp_path):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 6)
    handed, segments = handover_handed(svc, range(6))
    assert handed is not None and segments and not any(s.endswith('.tmp') for s in segments)
    svc._take_over(handed)
    traj.f_store()
    # its segments are the file's: this process read no record of the journal back
    assert segments <= set(svc._segment_names())
    assert not os.path.exists(filename + '.journal')
    assert_handover_runs(filename, range(6))


@needs_fork
@pytest.mark.timeout(120)
def test_a_record_appended_after_the_writers_is_read(file_backend, tmp_path):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 5)
    handed, segments = handover_handed(svc, range(4))
    assert handed is not None
    mp._Journal(filename + '.journal').append(tuple(handover_record(4)))  # another process's
    svc._take_over(handed)
    traj.f_store()
    # the journal did not end where the fold did: read whole; the fold's segments removed
    assert not segments & set(segment_files(filename))
    assert_handover_runs(filename, range(5))


@needs_fork
@pytest.mark.timeout(120)
def test_a_record_appended_between_the_writers_ends_its_fold(file_backend, tmp_path):
    filename, svc, traj = handover_sweep_start(file_backend, tmp_path, 5)
    handed, segments = handover_handed(svc, range(5), others=[2])
    assert handed is None and not segments
    traj.f_store()
    assert_handover_runs(filename, range(5))


def annotating_job(traj):
    seen = traj.v_annotations.f_get('a')
    if traj.v_idx == 0:  # (in place, in the worker's copy of the trajectory)
        traj.v_annotations.f_set(a='changed by run 0')
        traj.f_add_wildcard_functions({('$w',): lambda idx: 'w%d' % idx})
    return seen, '$w' in traj._wildcards


@pytest.mark.timeout(120)
@pytest.mark.parametrize('wrap_mode', ['QUEUE', 'LOCK'])
def test_what_a_run_changes_in_the_trajectory_in_place_is_not_seen_by_the_next(
        tmp_path, wrap_mode):
    """(review) A worker reuses its trajectory for the next run only if the run left it
    as it came: changed annotations or wildcards are such a change."""
    env = mp.Environment('t', add_time=False, log_config=None, report_progress=False,
                         filename=path_for('pickle', tmp_path), storage_service='pickle',
                         multiproc=True, ncores=1, use_pool=True, wrap_mode=wrap_mode)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.v_annotations.f_set(a='orig')
    traj.f_explore({'x': [0, 1, 2, 3]})
    assert [r for _, r in env.f_run(annotating_job)] == [('orig', False)] * 4


def slow_z_job(traj):
    time.sleep(0.05)
    traj.f_add_result('z', traj.x * 2.0)


@pytest.mark.timeout(180)
@needs_fork
@posix_only
@pytest.mark.parametrize('use_pool', [True, False], ids=['pool', 'process_per_run'])
def test_a_killed_queue_writer_ends_the_sweep_with_an_error(tmp_path, use_pool):
    """(review) kill -9 of the QUEUE writer: the sweep stops with a StorageError, also with
    a process per run (there the workers blocked on the full queue and it hung)."""
    env = mp.Environment('t', add_time=False, log_config=None, report_progress=False,
                         filename=path_for('pickle', tmp_path), storage_service='pickle',
                         multiproc=True, ncores=2, use_pool=use_pool, wrap_mode='QUEUE',
                         start_method='fork')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(60))})
    killed = []

    def kill_the_writer():
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            time.sleep(0.3)  # (the runs under way)
            for process in multiprocessing.active_children():
                if process.name == 'QueueProcess':  # (the writer's name, as pypet's)
                    os.kill(process.pid, signal.SIGKILL)
                    killed.append(process.pid)
    killer = threading.Thread(target=kill_the_writer, daemon=True)
    killer.start()
    with pytest.raises(mp.StorageError, match='queue writer'):
        env.f_run(slow_z_job)
    killer.join()
    assert killed


@needs_fork
@pytest.mark.timeout(120)
def test_the_parent_killed_before_it_took_the_fold_loses_nothing(file_backend,
                                                                      tmp_path):
    """(A kill -9 of the parent once the writer has handed over: its durable segments are
    listed nowhere; the journal still holds every run, each loads once.)"""
    filename, svc, _ = handover_sweep_start(file_backend, tmp_path, 4)
    handed, segments = handover_handed(svc, range(4))
    assert handed is not None and segments
    assert_handover_runs(filename, range(4))
    again = load(filename, name='traj', load_data=2)
    again.f_store()  # another process's checkpoint: the runs once, the debris gone
    assert not segments & set(segment_files(filename))
    assert_handover_runs(filename, range(4))


# ---------------------------------------------------------------------------------------------
# A LOCK pool on a file: no Manager, batches timed by the workers
# ---------------------------------------------------------------------------------------------
def processes_seen(names, stop):
    while not stop:
        names.update(p.name for p in multiprocessing.active_children())
        time.sleep(0.01)


@needs_fork
@pytest.mark.timeout(180)
@pytest.mark.parametrize('wrap_mode', ['LOCK', 'NONE'])
def test_a_lock_pool_on_a_file_folds_as_it_goes_and_needs_no_manager(
        file_backend, tmp_path, wrap_mode):
    """LOCK on a file service: the journal serialises the workers' appends (no Manager
    lock); the parent folds them while the pool runs, the checkpoint reads none again."""
    if wrap_mode == 'NONE' and file_backend == 'hdf5':
        pytest.skip('HDF5 refuses NONE (see HDF5StorageService.multiproc_safe)')
    filename = path_for(file_backend, tmp_path)
    env = mp.Environment('traj', add_time=False, log_config=None, report_progress=False,
                         filename=filename, storage_service=file_backend, multiproc=True,
                         ncores=2, use_pool=True, wrap_mode=wrap_mode, start_method='fork')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(300))})
    names, stop = set(), []
    seer = threading.Thread(target=processes_seen, args=(names, stop), daemon=True)
    seer.start()
    taken = []
    checkpoint = mp._FileService._checkpoint

    def spy(self, extra):
        taken.append(self._live is not None and self._journal._own ==
                     [self._live.jid, self._live.end])
        return checkpoint(self, extra)
    try:
        mp._FileService._checkpoint = spy
        env.f_run(_plain_job_x)
    finally:
        mp._FileService._checkpoint = checkpoint
        stop.append(1)
        seer.join()
    assert taken[0] and not any(n.startswith('SyncManager') for n in names)
    got = load(filename, name='traj', load_data=2)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: i + 0.5 for i in range(300)}


def test_a_batch_times_its_runs_without_the_wait_for_the_store(tmp_path):
    """The pool sizes batches by the runs' time as the worker measures it: a wait for the
    lock (or a full queue) is no run's cost."""
    traj = mp.Trajectory('t', add_time=False)
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [float(i) for i in range(4)]})
    lock = threading.Lock()
    ctx = mp._RunContext(traj._worker_copy(), _plain_job_x, (), {}, 'lock',
                         mp.LazyStorageService(), lock=lock)
    lock.acquire()
    threading.Timer(0.5, lock.release).start()
    t0 = time.perf_counter()
    out = ctx.run_batch([(i, {'parameters.x': float(i)}, None) for i in range(4)])
    assert [r.status for r in out] == ['ok'] * 4
    assert time.perf_counter() - t0 >= 0.45 and 0 < ctx.took < 0.3


def _megabyte_job(traj):
    traj.f_add_result('blob', b'x' * (1 << 20))  # (cheap to make, big to carry)


def test_a_queue_batch_counts_the_bytes_it_carries_to_the_writer(tmp_path):
    """Cheap runs with big results: the time a batch reports counts what its bytes cost
    through the Manager and the writer, so that the pool sends them in small batches
    (batches of ~50 runs of 1 MB held ~1 GB across the processes at once)."""
    traj = mp.Trajectory('t', add_time=False)
    traj.f_add_parameter('x', 0.0)
    traj.f_explore({'x': [float(i) for i in range(4)]})
    manager = multiprocessing.Manager()
    try:
        queue = manager.Queue()
        ctx = mp._RunContext(traj._worker_copy(), _megabyte_job, (), {}, 'queue',
                             mp.LazyStorageService(), queue=queue)
        out = ctx.run_batch([(i, {'parameters.x': float(i)}, None) for i in range(4)])
        assert [r.status for r in out] == ['ok'] * 4 and queue.qsize() == 1
        per_run = ctx.took / 4
        assert per_run >= (1 << 20) * ctx.QUEUE_BYTE_SECONDS
        assert per_run >= mp._Sweep.BATCH_SECONDS / 2, 'a batch of 2 at most'
    finally:
        manager.shutdown()


# =============================================================================================
# Environment - config data, logging, git, the run loop, resume
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# Serial runs
# ---------------------------------------------------------------------------------------------
def test_pypet_arguments_without_effect_say_so_once_in_the_log(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(mp, '_SAID', set())  # (earlier tests may have said these already)
    with caplog.at_level(logging.WARNING, logger='minipypet'):
        for _ in range(2):
            mp.Environment(trajectory='t', filename=str(tmp_path / 't.pkl'),
                           encoding='ascii', niceness=5, cpu_cap=50.0, display_time=20)
    said = [r.getMessage() for r in caplog.records if 'has no effect' in r.getMessage()]
    assert said == ["Environment(encoding='ascii') has no effect in minipypet: text is "
                    'always stored as UTF-8',
                    "Environment(cpu_cap=50.0) has no effect in minipypet: worker processes "
                    "are not throttled"]  # display_time=20 is the default; niceness acts


def test_environment_defaults_are_those_of_the_seed():
    defaults = {k: p.default for k, p in inspect.signature(mp.Environment).parameters.items()}
    assert defaults['trajectory'] == 'trajectory'
    assert defaults['add_time'] is True
    assert defaults['comment'] == ''
    assert defaults['multiproc'] is False and defaults['ncores'] == 1
    assert defaults['wrap_mode'] == mp.pypetconstants.WRAP_MODE_LOCK
    assert defaults['continuable'] == 1
    assert defaults['use_hdf5'] is True and defaults['filename'] is None
    assert defaults['large_overview_tables'] is True
    assert defaults['results_per_run'] == 0 and defaults['derived_parameters_per_run'] == 0
    assert defaults['lazy_debug'] is False and defaults['git_message'] == ''


def test_environment_creates_a_trajectory_from_a_name_with_the_time_added():
    env = mp.Environment(trajectory='mytraj', comment='a comment',
                         storage_service=mp.LazyStorageService, log_config=None)
    traj = env.v_trajectory
    assert isinstance(traj, mp.Trajectory)
    assert re.fullmatch('mytraj_' + CORE_TIME_RE, traj.v_name)
    assert traj.v_name == 'mytraj_' + traj.v_time
    assert traj.v_comment == 'a comment'
    assert lazy_env('plain', add_time=False).v_trajectory.v_name == 'plain'


def test_environment_time_is_the_new_trajectory_time():
    # pypet 0.7: when the environment creates the trajectory, v_time/v_timestamp are the
    # trajectory's own, so the environment name and the trajectory name carry the same time
    env = mp.Environment(trajectory='timed', storage_service=mp.LazyStorageService,
                         log_config=None)
    traj = env.v_trajectory
    assert env.v_timestamp == traj.v_timestamp
    assert env.v_time == traj.v_time and env.v_name.endswith(traj.v_time)


def test_environment_uses_a_given_trajectory_object():
    traj = mp.Trajectory('given', comment='kept')
    env = mp.Environment(trajectory=traj, comment='ignored', log_config=None,
                         storage_service=mp.LazyStorageService)
    assert env.v_trajectory is traj
    assert traj.v_name == 'given' and traj.v_comment == 'kept'


def test_environment_trajectory_properties_and_run_aliases():
    env = lazy_env()
    assert env.v_trajectory is env.trajectory is env.traj
    env.traj.f_add_parameter('x', 2)
    assert env.run(lambda traj: traj.x) == [(0, 2)]


def test_environment_name_hexsha_and_time():
    env = lazy_env()
    assert re.fullmatch('[0-9a-f]{40}', env.v_hexsha)
    assert re.fullmatch('environment_[0-9a-f]{7}_' + CORE_TIME_RE, env.v_name)
    assert env.v_name == 'environment_%s_%s' % (env.v_hexsha[:7], env.v_time)
    assert env.v_time == datetime.datetime.fromtimestamp(env.v_timestamp).strftime(
        '%Y_%m_%d_%Hh%Mm%Ss')
    assert env.name == env.v_name and env.hexsha == env.v_hexsha
    traj = env.v_trajectory
    assert env.v_hexsha == hashlib.sha1((traj.v_name + str(traj.v_timestamp) + str(
        env.v_timestamp) + mp.__version__).encode()).hexdigest()
    other = lazy_env('other')
    assert other.v_hexsha != env.v_hexsha


def test_environment_config_data_below_config_environment_env_name():
    env = lazy_env()
    traj = env.v_trajectory
    prefix = 'config.environment.' + env.v_name
    group = traj.f_get(prefix)
    assert not group.v_is_leaf
    assert traj.f_get(prefix + '.hexsha').f_get() == env.v_hexsha
    assert traj.f_get(prefix + '.timestamp').f_get() == env.v_timestamp
    assert traj.f_get(prefix + '.multiproc').f_get() is False
    assert traj.f_get(prefix + '.trajectory.name').f_get() == traj.v_name
    traj.f_add_parameter('x', 1)
    env.f_run(lambda t: None)
    for key in ('start_timestamp', 'finish_timestamp', 'runtime'):
        assert (prefix + '.' + key) in traj


def test_environment_as_a_context_manager():
    with lazy_env() as env:
        env.v_trajectory.f_add_parameter('x', 3)
        assert env.f_run(lambda traj: traj.x) == [(0, 3)]


def test_environment_unknown_keyword_raises_type_error_naming_it():
    with pytest.raises(TypeError, match='not_an_argument'):
        mp.Environment(trajectory='t', log_config=None, not_an_argument=1)


@pytest.mark.parametrize('kwargs, word', [
    (dict(wrap_mode='SOMETIMES'), 'wrap_mode'), (dict(ncores=-1), 'ncores'),
    (dict(ncores='two'), 'ncores'), (dict(multiproc='yes'), 'multiproc'),
    (dict(trajectory=5), 'trajectory'), (dict(cpu_cap=0), 'cpu_cap'),
    (dict(add_time='no'), 'add_time'), (dict(log_config=None, log_folder='logs'), 'log_folder'),
], ids=lambda v: str(v))
def test_environment_bad_values_raise_configuration_error(kwargs, word):
    kwargs = dict(kwargs)
    kwargs.setdefault('trajectory', 't')
    kwargs.setdefault('log_config', None)
    with pytest.raises(mp.ConfigurationError, match=word):
        mp.Environment(storage_service=mp.LazyStorageService, **kwargs)


def test_f_run_passes_arguments_and_returns_results_ordered_by_index():
    env = lazy_env()
    xy_traj(env.v_trajectory)

    def job(traj, offset, scale=1):
        return traj.v_idx, traj.x * traj.y * scale + offset

    results = env.f_run(job, 100, scale=2)
    assert [idx for idx, _ in results] == list(range(6))
    assert [r for _, (_, r) in results] == [106.0, 108.0, 110.0, 112.0, 116.0, 120.0]
    assert all(idx == inner for idx, (inner, _) in results)


def test_adding_a_parameter_during_a_run_is_an_error():
    env = lazy_env()
    env.v_trajectory.f_add_parameter('x', 1)

    def job(traj):
        traj.f_add_parameter('late', 1)

    with pytest.raises(mp.PypetError) as info:
        env.f_run(job)
    assert 'late' in str(info.value) and 'during run' in str(info.value)
    with pytest.raises(mp.PypetError, match='during run'):
        env.f_run(lambda traj: traj.f_add_config('late_config', 1))


def test_a_job_that_raises_propagates_and_earlier_runs_stay_stored(tmp_path):
    env = file_env(tmp_path, 'failing')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2, 3, 4]})

    def job(traj):
        if traj.v_idx == 2:
            raise ValueError('boom in run 2')
        traj.f_add_result('z', traj.x * 10)
        return traj.x

    with pytest.raises(ValueError, match='boom in run 2'):
        env.f_run(job)
    assert [traj.f_is_completed(i) for i in range(4)] == [True, True, False, False]
    loaded = mp.load_trajectory(name='failing', filename=str(tmp_path / 'failing.pkl'),
                                load_all=2)
    assert [loaded.f_is_completed(i) for i in range(4)] == [True, True, False, False]
    assert dict(loaded.f_get_from_runs('z', fast_access=True)) == {
        'run_00000000': 10, 'run_00000001': 20}


def test_explored_values_read_in_a_serial_sweep_follow_every_change(tmp_path):
    """A serial sweep makes `traj.x` of explored parameters a plain attribute (speed); it
    must mean exactly what `traj.x` means without that."""
    env = file_env(tmp_path, 'fast')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_add_parameter('y', 0.5)
    traj.f_add_parameter('explore', 7)   # the name of a method alias: never shadowed
    traj.f_explore({'x': [1, 2, 3], 'y': [0.5, 1.5, 2.5], 'explore': [7, 8, 9]})
    seen = []

    def outcome(get):
        try:
            value = get()
        except Exception as exc:
            return type(exc)
        return value if not isinstance(value, mp.NNTreeNode) else value.v_full_name

    def job(traj):
        idx = traj.v_idx
        seen.append(('start', traj.x, traj.y))
        if idx == 0:  # (the fast path is what is tested; the changes below drop it)
            assert 'y' in vars(traj)
        assert callable(traj.explore)
        copy = pickle.loads(pickle.dumps(traj))       # a copy has no stale attributes
        copy.f_set_crun((idx + 1) % 3)
        seen.append(('copy', copy.x))
        traj.f_set_crun((idx + 1) % 3)                # the user moves to another run...
        seen.append(('moved', traj.x))
        traj.f_set_crun(idx)
        traj.v_fast_access = False                    # ... switches fast access off ...
        seen.append(('node', outcome(lambda: traj.x)))
        traj.v_fast_access = True
        traj.f_add_result('x', 'shadow')              # ... adds a node named like it
        seen.append(('shadowed', outcome(lambda: traj.x),
                     outcome(lambda: mp.NNGroupNode.__getattr__(traj, 'x'))))
        seen.append(('y', traj.y))

    env.f_run(job)
    for idx in range(3):
        start, copy, moved, node, shadowed, y = seen[6 * idx:6 * idx + 6]
        assert start == ('start', idx + 1, [0.5, 1.5, 2.5][idx])
        assert copy == ('copy', (idx + 1) % 3 + 1) and moved == ('moved', (idx + 1) % 3 + 1)
        assert node == ('node', 'parameters.x')
        assert shadowed[1] == shadowed[2]             # as the slow path says
        assert y == ('y', [0.5, 1.5, 2.5][idx])
    assert traj.x == 0 and 'x' not in vars(traj) and 'y' not in vars(traj)


def test_results_written_to_a_pickle_file_load_back(tmp_path):
    env = file_env(tmp_path, 'stored', comment='to disk')
    xy_traj(env.v_trajectory)
    env.f_run(multiply)
    loaded = mp.load_trajectory(name='stored', filename=str(tmp_path / 'stored.pkl'),
                                load_all=mp.pypetconstants.LOAD_DATA)
    assert loaded.v_name == 'stored' and loaded.v_comment == 'to disk' and len(loaded) == 6
    assert loaded.f_get('x').f_get_range() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    # purge_duplicate_comments (the default): the first run's comment is kept
    assert loaded.f_get('results.runs.run_00000000.z').v_comment == 'product'
    assert list(loaded.f_get_from_runs('z', fast_access=True).values()) == [
        3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
    assert loaded.f_is_completed()


def test_a_file_in_a_folder_that_does_not_exist_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = mp.Environment(trajectory='fresh', add_time=False, log_config=None,
                         continuable=False, storage_service=mp.PickleStorageService,
                         filename=os.path.join('new', 'folder', 'fresh.pkl'))
    env.v_trajectory.f_add_parameter('x', 1)
    assert env.f_run(lambda traj: traj.x) == [(0, 1)]
    assert os.path.isfile(os.path.join('new', 'folder', 'fresh.pkl'))
    # the default, ./hdf5/<trajectory name>.hdf5 (a pickle file without PyTables)
    env = mp.Environment(trajectory='default', add_time=False, log_config=None,
                         continuable=False)
    env.v_trajectory.f_add_parameter('x', 2)
    assert env.f_run(lambda traj: traj.x) == [(0, 2)]
    assert os.listdir('hdf5') and all(f.startswith('default') for f in os.listdir('hdf5'))


def test_lazy_storage_keeps_run_results_in_memory(tmp_path):
    env = lazy_env()
    traj = xy_traj(env.v_trajectory)
    assert isinstance(traj.v_storage_service, mp.LazyStorageService)
    env.f_run(multiply)
    assert len(traj.f_get_from_runs('z')) == 6
    assert traj.f_get('results.runs.run_00000005.z').f_get() == 10.0
    with pytest.raises(mp.DataNotInStorageError):
        traj.f_load()


LAZY_DEBUG_SCRIPT = '''
import importlib, os
mp = importlib.import_module(%r)
env = mp.Environment(trajectory='dbg', add_time=False, filename='dbg.hdf5',
                     lazy_debug=True, log_config=None)
env.v_trajectory.f_add_parameter('x', 1)
env.f_run(lambda traj: traj.x)
print(type(env.v_trajectory.v_storage_service).__name__)
print(sorted(f for f in os.listdir('.') if f.startswith('dbg')))
'''


def test_lazy_debug_uses_lazy_storage_only_in_debug_mode(tmp_path):
    debug_dir, optimized_dir = tmp_path / 'debug', tmp_path / 'optimized'
    debug_dir.mkdir()
    optimized_dir.mkdir()
    script = LAZY_DEBUG_SCRIPT % mp.__name__
    proc = run_python(script, cwd=str(debug_dir))
    assert proc.returncode == 0, proc.stderr
    kind, files = proc.stdout.strip().splitlines()
    assert kind == 'LazyStorageService' and files == '[]'
    assert 'nothing' in proc.stderr.lower() or 'NOTHING' in proc.stderr   # the warning
    proc = run_python(script, '-O', cwd=str(optimized_dir))
    assert proc.returncode == 0, proc.stderr
    kind, files = proc.stdout.strip().splitlines()
    assert kind != 'LazyStorageService'
    assert files != '[]'                              # python -O: a file is written


# ---------------------------------------------------------------------------------------------
# Config data added by the environment
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_config_data_has_every_entry_with_the_right_value(tmp_path, backend, jobs):
    before = time.time()
    env = env_for(backend, tmp_path, 'cfgtraj', continuable=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2, 3]})
    after_init = time.time()
    assert env.f_run(jobs.times_ten) == [(0, 10), (1, 20), (2, 30)]
    after_run = time.time()
    name = env.v_name
    assert ENV_NAME_RE.match(name), name
    assert re.match(r'^[0-9a-f]{40}$', env.v_hexsha)
    assert name == 'environment_%s_%s' % (env.v_hexsha[:7], env.v_time)
    assert env.v_git is None

    loaded = mp.load_trajectory(name='cfgtraj', filename=str(tmp_path / ('cfgtraj' +
                                                                          PROV_SUFFIX[backend])),
                                load_all=2)
    for t in (traj, loaded):
        group = t.f_get('config.environment')
        assert group.v_comment == 'Settings for the different environments used to run ' \
                                  'the experiments'
        assert cfg(t, name, 'hexsha') == env.v_hexsha
        assert cfg(t, name, 'name') == name
        assert before <= cfg(t, name, 'timestamp') <= after_init
        assert datetime.datetime.fromtimestamp(cfg(t, name, 'timestamp')).strftime(
            '%Y_%m_%d_%Hh%Mm%Ss') == env.v_time
        assert cfg(t, name, 'trajectory.name') == 'cfgtraj'
        assert cfg(t, name, 'trajectory.timestamp') == pytest.approx(traj.v_timestamp)
        assert cfg(t, name, 'multiproc') is False or cfg(t, name, 'multiproc') == 0
        assert cfg(t, name, 'ncores') == 1
        assert bool(cfg(t, name, 'use_pool')) is True
        assert cfg(t, name, 'wrap_mode') == 'LOCK'
        assert bool(cfg(t, name, 'continuable')) is False
        assert bool(cfg(t, name, 'freeze_input')) is False
        assert cfg(t, name, 'versions.python') == platform.python_version()
        assert cfg(t, name, 'versions.minipypet') == mp.__version__
        for dist, present in (('numpy', HAVE_NUMPY), ('tables', PROV_HAVE_TABLES),
                              ('GitPython', HAVE_GITPYTHON)):
            node = t.f_get_default('config.environment.%s.versions.%s' % (name, dist), None)
            assert (node is not None) == present, dist
        if HAVE_NUMPY:
            import numpy
            assert cfg(t, name, 'versions.numpy') == numpy.__version__
        assert cfg(t, name, 'platform') == platform.platform()
        start, finish = cfg(t, name, 'start_timestamp'), cfg(t, name, 'finish_timestamp')
        assert after_init <= start <= finish <= after_run
        runtime = cfg(t, name, 'runtime')
        h, m, s = runtime.split(':')
        assert int(h) * 3600 + int(m) * 60 + float(s) == pytest.approx(finish - start,
                                                                        abs=1e-3)
        assert t.f_get_default('config.environment.%s.resumed' % name, None) is None
        assert t.f_get_default('config.git', None) is None


def test_config_data_records_the_parallel_settings(tmp_path):
    env = mp.Environment('par', add_time=False, log_config=None, storage_service='pickle',
                         filename=str(tmp_path / 'par.pkl'), multiproc=True, ncores=3,
                         use_pool=True, wrap_mode='QUEUE', freeze_input=True, continuable=True)
    traj, name = env.v_trajectory, env.v_name
    assert cfg(traj, name, 'multiproc') == 1 and cfg(traj, name, 'multiproc') is not False
    assert cfg(traj, name, 'ncores') == 3
    assert bool(cfg(traj, name, 'use_pool')) is True
    assert cfg(traj, name, 'wrap_mode') == 'QUEUE'
    assert bool(cfg(traj, name, 'freeze_input')) is True
    assert bool(cfg(traj, name, 'continuable')) is True
    # every environment leaf is a locked parameter, as in pypet
    node = traj.f_get('config.environment.%s.ncores' % name)
    assert node.v_locked


def test_sha_without_git_comes_from_name_time_and_version(tmp_path):
    """Two environments for trajectories of the same name get different SHA-1s (the time
    is part of it); with git off, the SHA-1 is not any git object's."""
    a = mp.Environment('same', add_time=False, log_config=None, storage_service='lazy')
    time.sleep(0.01)
    b = mp.Environment('same', add_time=False, log_config=None, storage_service='lazy')
    assert a.v_hexsha != b.v_hexsha
    assert a.v_trajectory.v_environment_hexsha == a.v_hexsha
    assert a.v_trajectory.v_environment_name == a.v_name


def test_config_script_is_the_script_that_ran(tmp_path):
    script = tmp_path / 'my_sweep.py'
    script.write_text(IMPORT + textwrap.dedent('''
        env = mp.Environment('scr', add_time=False, log_config=None, storage_service='lazy')
        print(env.v_trajectory.f_get('config.environment.%s.script' % env.v_name).f_get())
    '''))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=sub_env(), cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(script.resolve())


def test_every_environment_that_ran_the_trajectory_keeps_its_entry(tmp_path, jobs):
    """Run, then expand with a second environment, then crash and resume with a third:
    three config.environment entries, each with its own run times; `resumed` on the third."""
    filename = str(tmp_path / 'grow.pkl')
    env1 = mp.Environment('grow', add_time=False, log_config=None, report_progress=False,
                          storage_service='pickle', filename=filename)
    traj = env1.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    env1.f_run(jobs.times_ten)

    time.sleep(1.05)  # environment names carry the time in seconds
    loaded = mp.load_trajectory(name='grow', filename=filename, load_all=2)
    loaded.f_expand({'x': [3, 4]})
    env2 = mp.Environment(loaded, log_config=None, report_progress=False)
    flag = tmp_path / 'crash_now'
    flag.write_text('')
    with pytest.raises(RuntimeError, match='simulated crash'):
        env2.f_run(jobs.crash_if, str(flag))
    cnt = env2.v_continue_file
    assert cnt is not None and os.path.exists(cnt)
    flag.unlink()
    time.sleep(1.05)
    env3 = mp.Environment('grow', add_time=False, log_config=None, report_progress=False,
                          storage_service='pickle', filename=filename)
    results = env3.f_continue_run(cnt)
    assert [r[0] for r in results] == [0, 1, 2, 3]
    assert results[3] == (3, 40)
    final = mp.load_trajectory(name='grow', filename=filename, load_all=2)
    names = sorted(final.f_get('config.environment').f_get_children())
    assert names == sorted([env1.v_name, env2.v_name, env3.v_name])
    assert len(set(names)) == 3
    for env in (env1, env2, env3):
        assert cfg(final, env.v_name, 'hexsha') == env.v_hexsha
        assert cfg(final, env.v_name, 'finish_timestamp') >= cfg(final, env.v_name,
                                                                 'start_timestamp')
    assert bool(cfg(final, env3.v_name, 'resumed')) is True
    assert final.f_get_default('config.environment.%s.resumed' % env1.v_name, None) is None
    assert [final.f_get_run_information(i)['completed'] for i in range(4)] == [1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------
# lazy_debug
# ---------------------------------------------------------------------------------------------
LAZY_CODE = IMPORT + textwrap.dedent('''
    import t4_helpers
    folder = sys.argv[1]
    env = mp.Environment('lazy', add_time=False, filename=os.path.join(folder, 'lazy.hdf5'),
                         lazy_debug=True, log_config=None, report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    print('results', env.f_run(t4_helpers.times_ten))
    print('service', type(traj.v_storage_service).__name__)
    print('debug', __debug__)
''')


def test_lazy_debug_without_O_stores_nothing_and_warns(tmp_path, helpers_dir):
    out = prov_run_python(LAZY_CODE, str(tmp_path), helpers_dir=helpers_dir, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert 'results [(0, 10), (1, 20)]' in out.stdout
    assert 'service LazyStorageService' in out.stdout
    assert 'debug True' in out.stdout
    assert 'NOTHING will be written' in out.stderr or 'nothing' in out.stderr.lower()
    assert os.listdir(str(tmp_path)) == [], 'lazy_debug must not create any file'


def test_lazy_debug_with_O_stores_as_usual(tmp_path, helpers_dir):
    out = prov_run_python(LAZY_CODE, str(tmp_path), helpers_dir=helpers_dir, cwd=str(tmp_path),
                     opts=['-O'])
    assert out.returncode == 0, out.stderr
    assert 'debug False' in out.stdout
    assert 'service LazyStorageService' not in out.stdout
    assert 'results [(0, 10), (1, 20)]' in out.stdout
    assert 'NOTHING' not in out.stderr
    stored = [f for f in os.listdir(str(tmp_path)) if f in ('lazy.hdf5', 'lazy.pkl')]
    assert stored, 'with -O the trajectory must be stored'
    assert [r['z'] for r in mp.runs_table(str(tmp_path / stored[0]))] == [10, 20]


def test_readme_says_python_O_turns_storage_back_on():
    readme = os.path.join(ROOT, 'README.md')
    if not os.path.exists(readme):
        pytest.skip('no README next to the module (installed copy)')
    with open(readme) as f:
        text = f.read()
    assert 'lazy_debug' in text
    assert re.search(r'python -O', text), 'the README must say that `python -O` stores again'


# ---------------------------------------------------------------------------------------------
# Git integration (GitPython and the git command)
# ---------------------------------------------------------------------------------------------
def git(repo, *args):
    return subprocess.run([GIT, '-C', str(repo)] + list(args), check=True,
                          capture_output=True, text=True).stdout.strip()


def make_repo(folder):
    """A repository with one committed file, one untracked file."""
    folder.mkdir()
    git(folder, 'init', '-q')
    git(folder, 'config', 'user.name', 'Test Engineer')
    git(folder, 'config', 'user.email', 'test@example.com')
    git(folder, 'config', 'commit.gpgsign', 'false')
    (folder / 'model.py').write_text('A = 1\n')
    git(folder, 'add', 'model.py')
    git(folder, 'commit', '-q', '-m', 'initial')
    (folder / 'notes_untracked.txt').write_text('not in git\n')
    return folder


class _BlockGit:
    """A meta-path finder that makes `import git` fail (GitPython 'not installed')."""

    def find_spec(self, name, path=None, target=None):
        if name == 'git' or name.startswith('git.'):
            raise ImportError('GitPython is blocked for this test')
        return None


@pytest.fixture(params=['gitpython', 'cli'])
def git_path(request, monkeypatch):
    """Run the git tests once through GitPython and once through the git command."""
    if GIT is None:
        pytest.skip('the git command is not installed (needed to build test repositories)')
    if request.param == 'gitpython':
        pytest.importorskip('git')
    else:
        for name in [m for m in sys.modules if m == 'git' or m.startswith('git.')]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(sys, 'meta_path', [_BlockGit()] + sys.meta_path)
        with pytest.raises(ImportError):
            importlib.import_module('git')
    return request.param


def git_env(tmp_path, repo, **kwargs):
    kwargs.setdefault('git_message', 'sweep of the week')
    return mp.Environment('gitsweep', add_time=True, comment='testing git', log_config=None,
                          storage_service='pickle', filename=str(tmp_path / 'git.pkl'),
                          git_repository=str(repo), report_progress=False, **kwargs)


def check_recorded_commit(env, repo, sha):
    traj = env.v_trajectory
    assert env.v_hexsha == sha
    assert env.v_name.startswith('environment_%s_' % sha[:7])
    assert ENV_NAME_RE.match(env.v_name)
    assert cfg(traj, env.v_name, 'hexsha') == sha
    commits = traj.f_get('config.git').f_get_children()
    assert list(commits) == ['commit_%s_%s' % (sha[:7], env.v_time)]
    prefix = 'config.git.commit_%s_%s.' % (sha[:7], env.v_time)
    assert traj.f_get(prefix + 'hexsha').f_get() == sha
    committed = traj.f_get(prefix + 'committed_date').f_get()
    assert int(committed) == int(git(repo, 'show', '-s', '--format=%ct', sha))
    assert traj.f_get(prefix + 'message').f_get().strip() == \
        git(repo, 'show', '-s', '--format=%B', sha).strip()
    name_rev = traj.f_get(prefix + 'name_rev').f_get()
    assert git(repo, 'rev-parse', '--abbrev-ref', 'HEAD') in name_rev.split()[-1]


def test_git_commits_changed_tracked_files(tmp_path, git_path):
    repo = make_repo(tmp_path / 'repo')
    old = git(repo, 'rev-parse', 'HEAD')
    (repo / 'model.py').write_text('A = 2\n')
    env = git_env(tmp_path, repo)
    new = git(repo, 'rev-parse', 'HEAD')
    assert new != old, 'a changed tracked file must be committed'
    assert git(repo, 'rev-parse', 'HEAD~1') == old
    assert git(repo, 'show', 'HEAD:model.py') == 'A = 2'
    message = git(repo, 'show', '-s', '--format=%B', 'HEAD')
    traj = env.v_trajectory
    assert message.startswith('sweep of the week')
    assert 'Trajectory: `%s`' % traj.v_name in message
    assert 'Time: `%s`' % traj.v_time in message
    assert 'Comment: `testing git`' in message
    # new files are never added
    assert '?? notes_untracked.txt' in git(repo, 'status', '--porcelain')
    assert 'notes_untracked.txt' not in git(repo, 'ls-files')
    check_recorded_commit(env, repo, new)
    assert env.v_git['hexsha'] == new


def test_git_commits_staged_but_uncommitted_changes(tmp_path, git_path):
    """pypet compares only the index with the working tree and records a stale commit."""
    repo = make_repo(tmp_path / 'repo')
    old = git(repo, 'rev-parse', 'HEAD')
    (repo / 'model.py').write_text('A = 3\n')
    git(repo, 'add', 'model.py')
    assert git(repo, 'status', '--porcelain', '--untracked-files=no') == 'M  model.py'
    env = git_env(tmp_path, repo)
    new = git(repo, 'rev-parse', 'HEAD')
    assert new != old, 'the staged change must be committed'
    assert git(repo, 'show', 'HEAD:model.py') == 'A = 3'
    assert git(repo, 'status', '--porcelain', '--untracked-files=no') == ''
    check_recorded_commit(env, repo, new)


@pytest.mark.parametrize('change', [False, True])
def test_git_name_rev_names_the_commit_not_head(tmp_path, git_path, change):
    """name_rev is what `git name-rev <sha>` (and GitPython's Commit.name_rev) says:
    '<sha> <branch>'. 'HEAD master' would not identify anything once HEAD moves on."""
    repo = make_repo(tmp_path / 'repo')
    if change:
        (repo / 'model.py').write_text('A = 9\n')
    env = git_env(tmp_path, repo)
    sha = git(repo, 'rev-parse', 'HEAD')
    name_rev = env.v_trajectory.f_get('config.git.commit_%s_%s.name_rev' % (
        sha[:7], env.v_time)).f_get()
    assert name_rev == git(repo, 'name-rev', sha), name_rev


def test_git_clean_repository_records_head_without_committing(tmp_path, git_path):
    repo = make_repo(tmp_path / 'repo')
    head = git(repo, 'rev-parse', 'HEAD')
    env = git_env(tmp_path, repo, git_fail=True)  # clean: git_fail does not raise
    assert git(repo, 'rev-parse', 'HEAD') == head
    assert git(repo, 'rev-list', '--count', 'HEAD') == '1'
    check_recorded_commit(env, repo, head)


@pytest.mark.parametrize('staged', [False, True])
def test_git_fail_raises_instead_of_committing(tmp_path, git_path, staged):
    repo = make_repo(tmp_path / 'repo')
    head = git(repo, 'rev-parse', 'HEAD')
    (repo / 'model.py').write_text('A = 4\n')
    if staged:
        git(repo, 'add', 'model.py')
    with pytest.raises(mp.GitDiffError) as info:
        git_env(tmp_path, repo, git_fail=True)
    assert isinstance(info.value, mp.PypetError)
    assert str(repo) in str(info.value)
    assert git(repo, 'rev-parse', 'HEAD') == head, 'git_fail must not commit'
    assert not os.path.exists(str(tmp_path / 'git.pkl'))


def test_git_path_that_is_not_a_repository_is_a_clear_error(tmp_path, git_path):
    plain = tmp_path / 'plain_folder'
    plain.mkdir()
    with pytest.raises(mp.PypetError) as info:
        git_env(tmp_path, plain)
    assert 'plain_folder' in str(info.value)
    assert 'not a git repository' in str(info.value)
    with pytest.raises(mp.PypetError) as info:
        git_env(tmp_path, tmp_path / 'missing')
    assert 'missing' in str(info.value)


def test_git_commit_is_stored_and_shown_by_provenance(tmp_path, git_path, jobs):
    repo = make_repo(tmp_path / 'repo')
    (repo / 'model.py').write_text('A = 5\n')
    env = git_env(tmp_path, repo)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    env.f_run(jobs.times_ten)
    sha = git(repo, 'rev-parse', 'HEAD')
    loaded = mp.load_trajectory(name=traj.v_name, filename=str(tmp_path / 'git.pkl'),
                                load_all=2)
    assert loaded.f_get('config.git.commit_%s_%s.hexsha' % (sha[:7], env.v_time)).f_get() == sha
    out = cli('provenance', tmp_path / 'git.pkl')
    assert out.returncode == 0, out.stderr
    assert 'commit_%s_%s' % (sha[:7], env.v_time) in out.stdout
    assert 'hexsha = %s' % sha in out.stdout
    assert env.v_name in out.stdout


GIT_SUB_CODE = IMPORT + textwrap.dedent('''
    repo, folder = sys.argv[1], sys.argv[2]
    env = mp.Environment('cli_git', add_time=False, log_config=None, storage_service='pickle',
                         filename=os.path.join(folder, 'cli_git.pkl'), git_repository=repo,
                         git_message='from a subprocess')
    print('hexsha', env.v_hexsha)
    print('name', env.v_name)
    print('gitpython_loaded', 'git' in sys.modules and sys.modules['git'] is not None)
''')


@needs_git_cli
@pytest.mark.parametrize('how', ['sys.modules', 'import_blocked'])
def test_git_cli_fallback_in_a_process_without_gitpython(tmp_path, how):
    """The stdlib-only CI run: GitPython is absent, the git command commits. Absence is
    simulated both ways Python offers: `sys.modules['git'] = None` and a failing import."""
    repo = make_repo(tmp_path / 'repo')
    (repo / 'model.py').write_text('A = 6\n')
    git(repo, 'add', 'model.py')  # staged only
    (repo / 'model.py').write_text('A = 7\n')  # and changed again in the working tree
    blocker = "import sys\nsys.modules['git'] = None\n" if how == 'sys.modules' else \
        block('git')
    out = prov_run_python(blocker + GIT_SUB_CODE, str(repo), str(tmp_path),
                     cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    head = git(repo, 'rev-parse', 'HEAD')
    assert git(repo, 'rev-list', '--count', 'HEAD') == '2'
    assert git(repo, 'show', 'HEAD:model.py') == 'A = 7'
    assert 'hexsha %s' % head in out.stdout
    assert 'name environment_%s_' % head[:7] in out.stdout
    assert 'gitpython_loaded False' in out.stdout


@needs_git_cli
def test_no_git_at_all_is_a_clear_error(tmp_path):
    repo = make_repo(tmp_path / 'repo')
    empty_bin = tmp_path / 'empty_bin'
    empty_bin.mkdir()
    code = block('git') + IMPORT + textwrap.dedent('''
        try:
            mp.Environment('nogit', add_time=False, log_config=None, storage_service='lazy',
                           git_repository=sys.argv[1])
        except mp.PypetError as exc:
            print('ERROR', type(exc).__name__, exc)
    ''')
    out = prov_run_python(code, str(repo), path=str(empty_bin))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('ERROR ')
    assert 'git' in out.stdout and 'GitPython' in out.stdout


# ---------------------------------------------------------------------------------------------
# Logging: no handlers unless asked, the seed's log files
# ---------------------------------------------------------------------------------------------
HANDLERS_SNAPSHOT = textwrap.dedent('''
    import logging
    def snapshot():
        loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()
                                           if isinstance(l, logging.Logger)]
        return sorted((l.name, repr(h)) for l in loggers for h in l.handlers), \\
            logging.getLogger().level
''')


def test_importing_minipypet_adds_no_logging_handler():
    code = HANDLERS_SNAPSHOT + textwrap.dedent('''
        import importlib, sys
        before = snapshot()
        mp = importlib.import_module(sys.argv[1])
        after = snapshot()
        print('same' if before == after else 'changed: %r -> %r' % (before, after))
        print('minipypet handlers', logging.getLogger('minipypet').handlers)
    ''')
    out = prov_run_python(code, MOD)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == 'same', out.stdout
    assert 'minipypet handlers []' in out.stdout


def test_log_config_none_leaves_logging_alone(tmp_path, helpers_dir):
    code = HANDLERS_SNAPSHOT + IMPORT + textwrap.dedent('''
        import t4_helpers
        before = snapshot()
        env = mp.Environment('quiet', add_time=False, log_config=None, report_progress=False,
                             storage_service='pickle', filename=sys.argv[1])
        traj = env.v_trajectory
        traj.f_add_parameter('x', 1)
        traj.f_explore({'x': [1, 2]})
        env.f_run(t4_helpers.log_job)
        during = snapshot()
        env.f_disable_logging()
        print('same' if before == during == snapshot() else 'changed %r %r' % (before, during))
    ''')
    out = prov_run_python(code, str(tmp_path / 'quiet.pkl'), helpers_dir=helpers_dir,
                     cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'same'
    assert sorted(os.listdir(str(tmp_path))) == ['quiet.pkl', 'quiet.pkl.segments']
    with pytest.raises(mp.ConfigurationError):
        mp.Environment('q2', log_config=None, log_folder=str(tmp_path / 'logs'),
                       storage_service='lazy')


def read_logs(folder):
    files = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            files[name] = f.read()
    return files


def assert_no_empty_files(files):
    assert all(text.strip() for text in files.values()), \
        'empty log files: %s' % [n for n, t in files.items() if not t.strip()]


def levels(text):
    return [line.split()[4] for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize('use_with', [False, True])
def test_log_files_of_a_serial_sweep(tmp_path, jobs, use_with):
    before = root_handlers()
    root_level = logging.getLogger().level
    env = mp.Environment('logged', add_time=False, log_folder=str(tmp_path / 'logs'),
                         storage_service='pickle', filename=str(tmp_path / 'logged.pkl'),
                         report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2, 3]})
    if use_with:
        with env:
            env.f_run(jobs.log_job)
    else:
        env.f_run(jobs.log_job)
        env.f_disable_logging()
    assert root_handlers() == before, 'the environment must remove the handlers it added'
    assert logging.getLogger().level == root_level
    folder = tmp_path / 'logs' / 'logged'
    files = read_logs(str(folder))
    assert sorted(files) == ['main.txt', 'warnings_and_errors.txt']
    assert_no_empty_files(files)
    main, warn = files['main.txt'], files['warnings_and_errors.txt']
    for i in range(3):
        assert 'hello from run %d' % i in main
        assert 'careful in run %d' % i in main
        assert 'careful in run %d' % i in warn
        assert 'hello from run %d' not in warn
    assert 'debug line' not in main  # INFO is the default level
    assert set(levels(main)) == {'INFO', 'WARNING'}
    assert set(levels(warn)) == {'WARNING'}
    assert ' t4job ' in main and 'MainProcess' in main
    # the log files were closed: logging after the environment is gone reaches no file
    logging.getLogger('t4job').warning('after the environment')
    assert 'after the environment' not in read_logs(str(folder))['main.txt']


def test_environment_arguments_as_pypet_spells_them(tmp_path):
    root = logging.getLogger()
    old = root.level
    try:
        env = mp.Environment('named', add_time=False, log_folder=str(tmp_path / 'logs'),
                             log_level='DEBUG', storage_service='lazy', report_progress=False)
        env.f_disable_logging()
    finally:
        root.setLevel(old)
    with pytest.raises(mp.ConfigurationError, match="log_level must be a logging level"):
        mp.Environment('bad', log_level='LOUD', log_config=None, storage_service='lazy')
    env = mp.Environment('cls', add_time=False, storage_service='HDF5StorageService'
                         if tables is not None else 'PickleStorageService', log_config=None,
                         filename=str(tmp_path / 'f.bin'), report_progress=False)
    assert type(env.v_trajectory.v_storage_service).__name__ in ('HDF5StorageService',
                                                                  'PickleStorageService')
    with pytest.raises(mp.ConfigurationError, match="storage_service 'Cloud' is not one of"):
        mp.Environment('bad', storage_service='Cloud', log_config=None)
    for mode in ('NETLOCK', 'NETQUEUE'):
        with pytest.raises(mp.ConfigurationError, match="pypet's modes.*'QUEUE'"):
            mp.Environment('bad', multiproc=True, ncores=2, wrap_mode=getattr(
                mp.pypetconstants, 'WRAP_MODE_' + mode), log_config=None)


def test_presetting_parameters_and_config_as_in_pypet():
    env = lazy_env()
    traj = env.v_trajectory
    traj.f_preset_parameter('g.y', 2)
    traj.f_preset_config('c', 'preset')
    traj.f_preset_parameter('never', 1)
    assert traj.f_add_parameter('g.y', 1).f_get() == 2     # the preset wins
    assert traj.f_add_config('c', 'default').f_get() == 'preset'
    with pytest.raises(mp.ConfigurationError, match='parameters.never preset'):
        env.f_run(lambda t: None)
    traj.f_add_parameter('never', 0)
    assert env.f_run(lambda t: t.g.y) == [(0, 2)]
    with pytest.raises(mp.PypetError, match='exists already'):
        traj.f_preset_parameter('g.y', 3)
    # pypet's other names
    assert set(traj.parameters.f_get_groups()) == {'g'} and traj.parameters.f_has_groups()
    assert set(traj.par.g.f_get_leaves()) == {'y'} and traj.par.g.f_has_leaves()
    assert not traj.f_has_links() and not traj.f_is_empty()
    leaf = traj.f_get('g.y')
    assert leaf.v_is_parameter and leaf.f_get_class_name() == 'Parameter'
    assert leaf.f_ann_to_str() == '' and leaf.v_stored          # (f_run stored it)
    assert mp.Trajectory('fresh').f_add_result('r', 1).v_stored is False
    leaf.v_annotations.unit = 'mV'
    assert leaf.f_ann_to_str() == 'unit=mV' == str(leaf.v_annotations)  # (as pypet's)
    assert mp.Trajectory('empty').f_is_empty()


def test_log_level_argument_and_the_users_level(tmp_path, jobs):
    root = logging.getLogger()
    old = root.level
    try:
        env = mp.Environment('quietlog', add_time=False, log_folder=str(tmp_path / 'logs'),
                             log_level=logging.WARNING, storage_service='lazy',
                             report_progress=False)
        env.v_trajectory.f_add_parameter('x', 1)
        env.f_run(jobs.log_job)
        env.f_disable_logging()
        main = read_logs(str(tmp_path / 'logs' / 'quietlog'))['main.txt']
        assert 'careful in run 0' in main and 'hello from run 0' not in main

        env = mp.Environment('debuglog', add_time=False, log_folder=str(tmp_path / 'logs'),
                             log_level=logging.DEBUG, storage_service='lazy',
                             report_progress=False)
        env.v_trajectory.f_add_parameter('x', 1)
        env.f_run(jobs.log_job)
        env.f_disable_logging()
        assert 'debug line of run 0' in read_logs(str(tmp_path / 'logs' / 'debuglog'))[
            'main.txt']
        assert root.level == old

        # "If you don't set a log level elsewhere before, the standard level will be INFO":
        # a user who set DEBUG on the root logger gets DEBUG in main.txt
        root.setLevel(logging.DEBUG)
        env = mp.Environment('userlevel', add_time=False, log_folder=str(tmp_path / 'logs'),
                             storage_service='lazy', report_progress=False)
        env.v_trajectory.f_add_parameter('x', 1)
        env.f_run(jobs.log_job)
        env.f_disable_logging()
        assert 'debug line of run 0' in read_logs(str(tmp_path / 'logs' / 'userlevel'))[
            'main.txt']
    finally:
        root.setLevel(old)


def check_worker_files(files, pids, n, queue):
    """process_<pid>.txt and process_<pid>_runs.txt for every pool worker that ran runs."""
    me = os.getpid()
    expected = {'main.txt', 'warnings_and_errors.txt'}
    for pid in pids:
        expected |= {'process_%d.txt' % pid, 'process_%d_runs.txt' % pid}
    if queue:
        expected.add('queue_process.txt')
    assert set(files) == expected
    assert me not in pids
    assert_no_empty_files(files)
    seen = []
    for pid in pids:
        runs_lines = files['process_%d_runs.txt' % pid].splitlines()
        names = []
        for line in runs_lines:
            when, _, run = line.partition(': ')
            assert PROV_TIME_RE.match(when), line
            names.append(run)
        seen += names
        log = files['process_%d.txt' % pid]
        for i in range(n):
            mine = 'run_%08d' % i in names
            assert ('hello from run %d\n' % i in log) == mine, (pid, i)
            assert ('careful in run %d\n' % i in log) == mine, (pid, i)
        assert set(levels(log)) <= {'INFO', 'WARNING'}
    assert sorted(seen) == ['run_%08d' % i for i in range(n)], 'each run in one runs file'
    warn = files['warnings_and_errors.txt']
    for i in range(n):
        assert warn.count('careful in run %d\n' % i) == 1
    assert 'hello from run' not in warn
    assert set(levels(warn)) == {'WARNING'}
    assert 'PROGRESS: Finished' in files['main.txt']
    if queue:
        assert 'queue writer' in files['queue_process.txt']
        assert 'QueueProcess' in files['queue_process.txt']


POOL_CASES = [pytest.param('LOCK', 'fork', False, marks=needs_fork),
              pytest.param('QUEUE', 'fork', True, marks=needs_fork),
              pytest.param('LOCK', 'spawn', True, marks=needs_spawn),
              pytest.param('QUEUE', 'spawn', False, marks=needs_spawn)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize('wrap_mode,start_method,freeze', POOL_CASES)
def test_log_files_of_a_pool(tmp_path, jobs, wrap_mode, start_method, freeze):
    n = 6
    before = root_handlers()
    env = mp.Environment('pooled', add_time=False, log_folder=str(tmp_path / 'logs'),
                         storage_service='pickle', filename=str(tmp_path / 'pooled.pkl'),
                         multiproc=True, ncores=2, use_pool=True, wrap_mode=wrap_mode,
                         start_method=start_method, freeze_input=freeze,
                         report_progress=(50, 'minipypet', logging.INFO))
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': list(range(n))})
    with env:
        results = env.f_run(jobs.log_job)
    assert root_handlers() == before
    assert [r[0] for r in results] == list(range(n))
    pids = sorted(set(r[1] for r in results))
    files = read_logs(str(tmp_path / 'logs' / 'pooled'))
    check_worker_files(files, pids, n, queue=wrap_mode == 'QUEUE')
    assert [r['z'] for r in mp.runs_table(str(tmp_path / 'pooled.pkl'))] == \
        [10 * i for i in range(n)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize('wrap_mode,start_method', [
    pytest.param('LOCK', 'fork', marks=needs_fork),
    pytest.param('QUEUE', 'spawn', marks=needs_spawn)])
def test_log_files_without_a_pool(tmp_path, jobs, wrap_mode, start_method):
    n = 4
    env = mp.Environment('nopool', add_time=False, log_folder=str(tmp_path / 'logs'),
                         storage_service='pickle', filename=str(tmp_path / 'nopool.pkl'),
                         multiproc=True, ncores=2, use_pool=False, wrap_mode=wrap_mode,
                         start_method=start_method, report_progress=(50, 'minipypet',
                                                                     logging.INFO))
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': list(range(n))})
    with env:
        results = env.f_run(jobs.log_job)
    assert len(set(r[1] for r in results)) == n, 'one process per run'
    files = read_logs(str(tmp_path / 'logs' / 'nopool'))
    expected = {'main.txt', 'warnings_and_errors.txt'} | {'run_%08d.txt' % i for i in range(n)}
    if wrap_mode == 'QUEUE':
        expected.add('queue_process.txt')
    assert set(files) == expected
    assert_no_empty_files(files)
    for i in range(n):
        log = files['run_%08d.txt' % i]
        assert 'hello from run %d\n' % i in log and 'careful in run %d\n' % i in log
        assert log.count('hello from run') == 1, 'a run file holds only its own run'
        assert files['warnings_and_errors.txt'].count('careful in run %d\n' % i) == 1
    assert 'hello from run' not in files['warnings_and_errors.txt']


def test_report_progress_logs_lines_with_an_eta(tmp_path, jobs):
    env = mp.Environment('progress', add_time=False, log_folder=str(tmp_path / 'logs'),
                         storage_service='lazy',
                         report_progress=(25, 'my.progress', logging.WARNING))
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': list(range(8))})
    with env:
        env.f_run(jobs.times_ten)
    files = read_logs(str(tmp_path / 'logs' / 'progress'))
    lines = [l for l in files['warnings_and_errors.txt'].splitlines() if 'my.progress' in l]
    assert 4 <= len(lines) <= 5, lines  # every 25 %
    assert all(ETA_RE.search(l) for l in lines), lines
    assert all(' WARNING ' in l for l in lines)
    assert '8/8' in lines[-1] and '100.0%' in lines[-1]
    done = [int(re.search(r'(\d+)/8', l).group(1)) for l in lines]
    assert done == sorted(done) and {2, 4, 6, 8} <= set(done)


def test_report_progress_print_and_off(tmp_path, jobs, capsys):
    env = mp.Environment('pp', add_time=False, log_config=None, storage_service='lazy',
                         report_progress=(50, 'print'))
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': list(range(4))})
    env.f_run(jobs.times_ten)
    out = capsys.readouterr().out
    assert '4/4' in out and ETA_RE.search(out)
    env = mp.Environment('pp2', add_time=False, log_config=None, storage_service='lazy',
                         report_progress=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': list(range(4))})
    env.f_run(jobs.times_ten)
    assert 'remaining' not in capsys.readouterr().out


def test_report_progress_level_by_name_and_bad_forms_refused_before_a_write(tmp_path, jobs,
                                                                          caplog):
    # a level name works as logging's own do; a bad level or logger name is refused by the
    # Environment (pypet fails at the first report, after the store before the runs)
    env = mp.Environment('pn', add_time=False, log_config=None, storage_service='lazy',
                         report_progress=(50, 'my.named', 'warning'))
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': list(range(4))})
    with caplog.at_level(logging.WARNING, logger='my.named'):
        env.f_run(jobs.times_ten)
    assert [r.levelno for r in caplog.records if r.name == 'my.named'][-1] == logging.WARNING
    filename = str(tmp_path / 'rp.hdf5')
    for fine in ((50, None, logging.INFO), (50, 'print', None)):  # (pypet's forms too)
        assert mp.Environment('pf', add_time=False, log_config=None, storage_service='lazy',
                              report_progress=fine)
    for bad, said in (((10, 'minipypet', 'LOUD'), "'LOUD'"), ((10, 'minipypet', None), 'None'),
                      ((10, 5, logging.INFO), 'logger name'),
                      (('10', 'minipypet', logging.INFO), 'percent')):
        with pytest.raises(mp.ConfigurationError) as info:
            mp.Environment('rp', filename=filename, add_time=False, log_config=None,
                           report_progress=bad)
        assert 'report_progress' in str(info.value) and said in str(info.value)
        assert not os.path.exists(filename)


def test_progressbar_helper(capsys, caplog):
    texts = [mp.progressbar(i, 10, percentage_step=20, logger='print') for i in range(10)]
    shown = [t for t in texts if t is not None]
    assert 5 <= len(shown) <= 6
    assert '100.0%' in shown[-1] and 'remaining' in shown[-1]
    out = capsys.readouterr().out
    assert '100.0%' in out and '[' in out
    with caplog.at_level(logging.INFO, logger='bar.test'):
        for i in range(4):
            mp.progressbar(i, 4, percentage_step=50, logger='bar.test', reset=i == 0)
    msgs = [r.getMessage() for r in caplog.records if r.name == 'bar.test']
    assert msgs and '100.0%' in msgs[-1]


# ---------------------------------------------------------------------------------------------
# Post-processing with expansion, pipelines, run_map
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize('mode', ['serial', pytest.param('pool', marks=needs_fork)])
@pytest.mark.parametrize('how', ['return', 'f_expand'])
def test_postprocessing_expands_twice(tmp_path, jobs, mode, how):
    kwargs = dict(multiproc=True, ncores=2, start_method='fork') if mode == 'pool' else {}
    env = env_for('pickle', tmp_path, 'adaptive', **kwargs)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    calls = []

    def post(traj, results, factor, bonus=0):
        calls.append((len(traj), [r for r in results], factor, bonus))
        if len(calls) < 3:
            new = [max(traj.f_get('x').f_get_range()) + k for k in (1, 2)]
            if how == 'return':
                return {'x': new}
            traj.f_expand({'x': new})
        return None
    env.f_add_postprocessing(post, 3, bonus=1)
    results = env.f_run(jobs.times_ten)
    assert results == [(i, 10 * (i + 1)) for i in range(6)]
    assert [c[0] for c in calls] == [2, 4, 6]
    assert [len(c[1]) for c in calls] == [2, 4, 6]  # the results of all runs so far
    assert calls[2][1] == results
    assert all(c[2:] == (3, 1) for c in calls)
    loaded = mp.load_trajectory(name='adaptive', filename=str(tmp_path / 'adaptive.pkl'),
                                load_all=2)
    assert len(loaded) == 6 and loaded.f_is_completed()
    assert loaded.f_get('x').f_get_range() == [1, 2, 3, 4, 5, 6]
    assert dict(loaded.f_get_from_runs('z', fast_access=True, use_indices=True)) == \
        {i: 10 * (i + 1) for i in range(6)}
    assert bool(cfg(loaded, env.v_name, 'postproc_expand')) is True
    assert [r['z'] for r in mp.runs_table(str(tmp_path / 'adaptive.pkl'))] == \
        [10, 20, 30, 40, 50, 60]


def test_a_job_or_postprocessing_that_is_not_callable_is_refused_before_anything(tmp_path):
    filename = str(tmp_path / 'nothing' / 'f.pkl')
    env = make_env('pickle', filename)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2]})
    with pytest.raises(mp.ConfigurationError, match="job must be a function.*'my_job'"):
        env.f_run('my_job')
    with pytest.raises(mp.ConfigurationError, match='f_add_postprocessing needs a function'):
        env.f_add_postprocessing('summarise')
    assert not os.path.exists(str(tmp_path / 'nothing'))


def test_postprocessing_without_expansion_is_called_once(tmp_path, jobs):
    env = env_for('pickle', tmp_path, 'once')
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': [1, 2, 3]})
    calls = []
    env.f_add_postprocessing(lambda traj, results: calls.append(list(results)))
    env.f_run(jobs.times_ten)
    assert calls == [[(0, 10), (1, 20), (2, 30)]]


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_pipeline(tmp_path, backend, jobs):
    env = env_for(backend, tmp_path, 'piped')
    seen = []

    def job(traj, offset, scale=1):
        traj.f_add_result('w', (traj.x + offset) * scale)
        return (traj.x + offset) * scale

    def post(traj, results, tag):
        seen.append((tag, list(results)))

    def pipeline(traj):
        traj.f_add_parameter('x', 0)
        traj.f_explore({'x': [1, 2, 3]})
        return (job, (100,), {'scale': 2}), (post, ('done',), {})
    results = env.f_pipeline(pipeline)
    assert results == [(0, 202), (1, 204), (2, 206)]
    assert seen == [('done', results)]
    assert [r['w'] for r in mp.runs_table(str(tmp_path / ('piped' + PROV_SUFFIX[backend])))] == \
        [202, 204, 206]
    env2 = env_for(backend, tmp_path, 'piped2')

    def bare(traj):
        traj.f_add_parameter('x', 4)
        return (jobs.times_ten,)
    assert env2.f_pipeline(bare) == [(0, 40)]


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_run_map(tmp_path, backend):
    env = env_for(backend, tmp_path, 'mapped')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2, 3]})

    def job(traj, a, b, c=None):
        traj.f_add_result('r', '%d-%s-%s-%s' % (traj.x, a, b, c))
        return a + traj.x
    assert env.f_run_map(job, [10, 20, 30], ['p', 'q', 'r'], c=['i', 'j', 'k']) == \
        [(0, 11), (1, 22), (2, 33)]
    rows = mp.runs_table(str(tmp_path / ('mapped' + PROV_SUFFIX[backend])))
    assert [r['r'] for r in rows] == ['1-10-p-i', '2-20-q-j', '3-30-r-k']
    env = env_for(backend, tmp_path, 'mapped_bad')
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': [1, 2, 3]})
    with pytest.raises(mp.ConfigurationError, match='3'):
        env.f_run_map(job, [1, 2], ['p', 'q'])


# ---------------------------------------------------------------------------------------------
# Progress, Ctrl+C, resume hints, messages that name the run
# ---------------------------------------------------------------------------------------------
# -- the live progress line -------------------------------------------------------------------
PROGRESS_SCRIPT = FIRST_HOUR_PRELUDE + textwrap.dedent('''
    import time, minipypet as pypet

    def job(traj):
        time.sleep(0.02)
        if traj.x == 3:
            raise ValueError('three')
        return traj.x

    env = pypet.Environment(trajectory='prog', filename='prog.pkl', add_time=False,
                            record_failed_runs=True, show_progress=%s)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': list(range(20))})
    env.f_run(job)
    print('returned')
''')


def run_in_pty(args, cwd, timeout=60):
    """Run a command with stdin, stdout and stderr on a pseudo-terminal; return its output."""
    pty = pytest.importorskip('pty')
    import select
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave,
                            env=sub_env())
    os.close(slave)
    out = b''
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # (Linux: EIO once the other end is closed)
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=10)
    return proc.returncode, out.decode('utf-8', 'replace')


@posix_only
@pytest.mark.parametrize('setting', ['None', 'False'])
def test_progress_line_on_a_terminal(tmp_path, setting):
    script = tmp_path / 'prog.py'
    script.write_text(PROGRESS_SCRIPT % setting)
    code, out = run_in_pty([sys.executable, str(script)], str(tmp_path))
    assert code == 0, out
    assert 'returned' in out
    if setting == 'False':        # the one switch: nothing at all
        assert 'runs' not in out and '\r' not in out.replace('\r\n', '\n')
        return
    lines = out.replace('\r\n', '\n').split('\r')
    live = [line for line in lines if re.match(r'prog: \d+/20 runs', line)]
    assert live, out
    last = live[-1]
    assert re.match(r'prog: 19/20 runs, 1 failed, [\d.]+ runs/s, elapsed [\d.]+ s, ETA', last), \
        out
    assert re.search(r'prog: 19 of 20 runs done, 1 failed in [\d.]+ s, stored in prog.pkl *\r?\n',
                     out), out


def test_no_progress_line_when_stderr_is_not_a_terminal(tmp_path):
    script = tmp_path / 'prog.py'
    script.write_text(PROGRESS_SCRIPT % 'None')
    out = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=60, env=sub_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'returned\n'
    assert '\r' not in out.stderr and 'runs/s' not in out.stderr and 'done' not in out.stderr


def test_show_progress_is_validated():
    with pytest.raises(mp.ConfigurationError, match='show_progress'):
        lazy_env(show_progress='yes')


# -- Ctrl+C, graceful exit and resuming -------------------------------------------------------
INTERRUPT_JOB = textwrap.dedent('''
    import time

    def slow(traj):
        time.sleep(0.1)
        traj.f_add_result('z', traj.x * 2)
        return traj.x * 2
''')
INTERRUPT_SCRIPT = FIRST_HOUR_PRELUDE + textwrap.dedent('''
    import sys, minipypet as pypet
    from jobs16 import slow

    env = pypet.Environment(trajectory='cc', filename='cc.pkl', add_time=False,
                            graceful_exit=%s)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': list(range(40))})
    print('started', flush=True)
    results = env.f_run(slow)
    print('returned %%d' %% len(results))
''')


@posix_only
@pytest.mark.timeout(120)
@pytest.mark.parametrize('graceful', [True, False], ids=['graceful_exit', 'plain'])
def test_ctrl_c_says_how_to_resume_and_the_command_line_resumes(tmp_path, graceful):
    (tmp_path / 'jobs16.py').write_text(INTERRUPT_JOB)
    (tmp_path / 'cc.py').write_text(INTERRUPT_SCRIPT % graceful)
    env = sub_env(str(tmp_path))
    # (a suite run in the background by a shell (`cmd &`) hands on SIGINT ignored, and
    # Python keeps it so: the script would not see the Ctrl+C)
    proc = subprocess.Popen([sys.executable, 'cc.py'], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == 'started\n'
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    cnt = str(tmp_path / 'cc.cnt')
    match = re.search(r'stopped after (\d+) of 40 runs of cc; resume with '
                      r'env\.f_continue_run\((.*?)\), or from the command line: '
                      r'python -m (\S+) resume (\S+)', err)
    assert match, err
    done = int(match.group(1))
    assert 0 < done < 40
    assert eval(match.group(2)) == cnt and match.group(3) == MOD and match.group(4) == cnt
    if graceful:   # returns what finished, exit status 0
        assert proc.returncode == 0 and out.endswith('returned %d\n' % done), (out, err)
    else:          # a KeyboardInterrupt that carries the message
        assert proc.returncode != 0 and 'KeyboardInterrupt: stopped after' in err, err
    resumed = subprocess.run([sys.executable, '-m', MOD, 'resume', cnt], cwd=str(tmp_path),
                             env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert 'resumed cc: 40 of 40 runs completed' in resumed.stdout
    traj = mp.load_trajectory(filename=str(tmp_path / 'cc.pkl'), load_all=2)
    assert traj.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: 2 * i for i in range(40)}
    assert not os.path.exists(cnt)


RESUME_MAIN_JOB = FIRST_HOUR_PRELUDE + textwrap.dedent('''
    import minipypet as pypet

    def divide(traj):
        return 1.0 / traj.x

    env = pypet.Environment(trajectory='mj', filename='mj.pkl', add_time=False)
    env.v_trajectory.f_add_parameter('x', 1.0)
    env.v_trajectory.f_explore({'x': [1.0, 2.0, 0.0, 4.0]})
    env.f_run(divide)
''')
RESUME_ELSEWHERE = FIRST_HOUR_PRELUDE + textwrap.dedent('''
    import minipypet as pypet
    env = pypet.Environment(log_config=None)
    try:
        env.f_continue_run('mj.cnt')
    except pypet.ResumeError as exc:
        print('refused:', exc)

    def divide(traj):
        return 1.0 / traj.x if traj.x else 0.0

    print(env.f_continue_run('mj.cnt', job=divide))
''')


def test_resume_from_another_script_needs_an_importable_job_or_job_argument(tmp_path):
    (tmp_path / 'a.py').write_text(RESUME_MAIN_JOB)
    (tmp_path / 'b.py').write_text(RESUME_ELSEWHERE)
    first = subprocess.run([sys.executable, 'a.py'], cwd=str(tmp_path), env=sub_env(),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode != 0 and 'ZeroDivisionError' in first.stderr
    # the failing run is named, with its parameter values
    assert 'run 2 (run_00000002) with x=0.0' in first.stderr, first.stderr
    second = subprocess.run([sys.executable, 'b.py'], cwd=str(tmp_path), env=sub_env(),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert ("refused: mj.cnt names divide from the script that ran the sweep (__main__), which "
            "cannot be imported here" in second.stdout)
    assert "env.f_continue_run('mj.cnt', job=divide)" in second.stdout
    assert '[(0, 1.0), (1, 0.5), (2, 0.0), (3, 0.25)]' in second.stdout


def test_f_continue_run_refuses_a_job_that_is_not_callable(tmp_path):
    env = file_env(tmp_path)
    with pytest.raises(mp.ConfigurationError, match='job must be a function'):
        env.f_continue_run(str(tmp_path / 'x.cnt'), job=3)


# -- errors that say what to do ---------------------------------------------------------------
def test_a_failing_serial_run_is_named_with_its_values(tmp_path, caplog):
    env = file_env(tmp_path)
    xy_traj(env.v_trajectory)

    def job(traj):
        return 1 / (traj.y - 4.0)
    with caplog.at_level(logging.ERROR, logger='minipypet'):
        with pytest.raises(ZeroDivisionError) as info:   # the job's own exception type
            env.f_run(job)
    text = 'run 1 (run_00000001) with x=1.0, y=4.0'
    notes = getattr(info.value, '__notes__', [])
    assert ('in ' + text in notes) if sys.version_info >= (3, 11) else text in caplog.text


@pytest.mark.timeout(120)
def test_a_failing_pool_run_is_named_with_its_values(tmp_path):
    env = file_env(tmp_path, multiproc=True, ncores=2, wrap_mode='LOCK')
    xy_traj(env.v_trajectory)
    with pytest.raises(ZeroDivisionError) as info:
        env.f_run(divide_by_y_minus_4)
    assert re.search(r'Traceback of run (1 \(run_00000001\) with x=1\.0|4 \(run_00000004\) '
                     r'with x=2\.0), y=4\.0:', str(info.value.__cause__))


def divide_by_y_minus_4(traj):
    return 1 / (traj.y - 4.0)


def test_a_skeleton_result_says_how_to_load_its_data(tmp_path):
    env = file_env(tmp_path)
    xy_traj(env.v_trajectory)
    env.f_run(store_z)
    loaded = mp.load_trajectory(filename=env.v_trajectory.v_storage_service.filename,
                                index=-1)
    res = loaded.f_get('results.runs.run_00000001.z')
    for read in (lambda: res.z, lambda: res.f_get('z'), lambda: res['z']):
        with pytest.raises(mp.NoSuchNodeError) as info:
            read()
        text = str(info.value)
        assert 'loaded as a skeleton' in text and 'load_results=2' in text
        assert "traj.f_load_item('results.runs.run_00000001.z')" in text
        assert 'v_auto_load' in text
    assert 'loaded as a skeleton' in repr(res)
    loaded.f_load_item(res)
    assert res.z == 4.0
    with pytest.raises(mp.NoSuchNodeError, match=r"has no item 'zz'; it has \['z'\]; did you "
                                                 r"mean z\?"):
        res.zz


def store_z(traj):
    traj.f_add_result('z', traj.x * traj.y)


def test_load_by_the_name_without_the_time_says_so(tmp_path):
    filename = str(tmp_path / 'ex.pkl')
    env = mp.Environment(trajectory='ex', filename=filename, log_config=None,
                         storage_service=mp.PickleStorageService)
    xy_traj(env.v_trajectory)
    env.f_run(store_z)
    with pytest.raises(mp.DataNotInStorageError) as info:
        mp.load_trajectory(name='ex', filename=filename)
    assert 'add_time=True appended the time' in str(info.value)
    assert "name=%r" % env.v_trajectory.v_name in str(info.value)
    assert 'index=-1' in str(info.value)


def test_silent_no_ops_now_speak(tmp_path, caplog):
    env = file_env(tmp_path)
    traj = xy_traj(env.v_trajectory)
    with pytest.raises(mp.ConfigurationError, match=r'parameters\.x is explored already \(6 '
                                                    r'values\).*f_expand.*f_shrink'):
        traj.f_explore({'x': [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    assert traj.f_get('x').f_get_range() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert len(env.f_run(store_z)) == 6
    with caplog.at_level(logging.WARNING, logger='minipypet'):
        assert env.f_run(store_z) == []
    assert 'all 6 runs of traj are already completed' in caplog.text
    loaded = mp.load_trajectory(filename=traj.v_storage_service.filename, load_all=2)
    with caplog.at_level(logging.WARNING, logger='minipypet'):  # (pypet: {}, so a warning)
        assert loaded.f_get_from_runs('zz', fast_access=True) == {}
    assert "'zz'; did you mean z" in caplog.text
    assert loaded.f_get_from_runs('z', fast_access=True)['run_00000005'] == 10.0
    with pytest.raises(mp.ConfigurationError, match='ncores=0.*multiproc=True'):
        lazy_env(ncores=0)
    assert lazy_env(ncores=0, multiproc=True)._s.ncores == (os.cpu_count() or 1)


def test_install_hints_name_the_packages():
    code = "import sys\nfor m in ('tables', 'matplotlib', 'numpy'):\n    sys.modules[m] = None\n" + \
        IMPORT + textwrap.dedent('''
        for module, extra in (('tables', None), ('matplotlib', None), ('git', None),
                              ('numpy', 'hdf5')):
            try:
                mp._require(module, extra)
            except mp.MissingDependencyError as exc:
                print(exc)
    ''')
    out = prov_run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'tables is needed for this feature but is not installed; install it with `pip ' \
        'install tables numpy`' in out.stdout
    assert 'numpy is needed for this feature but is not installed; install it with `pip ' \
        'install tables numpy`' in out.stdout
    assert '`pip install matplotlib`' in out.stdout
    assert 'minipypet[' not in out.stdout


# -- reprs, the tree printer, Jupyter ---------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Pipelines, map post-processing, niceness, pypet's sigint flag in workers
# ---------------------------------------------------------------------------------------------
def map_job(traj, a, w=0):
    traj.f_add_result('z', traj.x * 100 + a + w)
    return a


def map_postproc(traj, results, first):
    if len(traj) == 2:                                   # pypet's: (expand, args, kwargs, ..)
        return {'x': [3, 4]}, ([30, 40],), {'w': [5, 6]}, (first + 1,)
    return None


def test_pipeline_map_and_postprocessing_give_the_new_runs_their_arguments(tmp_path):
    env = mp.Environment('pm', add_time=False, log_config=None, report_progress=False,
                         filename=str(tmp_path / 'pm.hdf5'), storage_service='pickle')

    def pipeline(traj):
        traj.f_add_parameter('x', 0)
        traj.f_explore({'x': [1, 2]})
        return (map_job, ([10, 20],), {'w': [1, 2]}), (map_postproc, (7,))
    results = env.pipeline_map(pipeline)                 # (pypet's name, an alias)
    assert sorted(results) == [(0, 10), (1, 20), (2, 30), (3, 40)]
    got = mp.load_trajectory(name='pm', filename=str(tmp_path / 'pm.hdf5'),
                             load_all=mp.LOAD_DATA)
    assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 111, 1: 222, 2: 335, 3: 446}


def test_run_map_and_immediate_postproc_refused_as_pypet_does(tmp_path):
    env = mp.Environment('rm', add_time=False, log_config=None, report_progress=False,
                         filename=str(tmp_path / 'rm.hdf5'), storage_service='pickle')
    env.v_trajectory.f_add_parameter('x', 0)
    with pytest.raises(mp.ConfigurationError, match='at least one iterable'):
        env.f_run_map(map_job)                           # (pypet: a ValueError)
    assert not os.path.exists(str(tmp_path / 'rm.hdf5'))  # before anything was written
    with pytest.raises(ValueError, match='use_pool=False'):
        mp.Environment('rm2', log_config=None, use_pool=True, immediate_postproc=True)


def sigint_flag_job(traj):
    if traj.v_idx == 2:  # (pypet's tests stop a sweep this way, in a worker too)
        mp.install_as_pypet()
        sys.modules['pypet.utils.siginthandling'].sigint_handling.hit = True
    return traj.x


@pytest.mark.timeout(120)
@pytest.mark.parametrize('use_pool', [True, False], ids=['pool', 'process_per_run'])
def test_a_worker_that_sets_pypets_sigint_flag_stops_a_graceful_sweep(tmp_path, use_pool):
    env = mp.Environment('g', add_time=False, log_config=None, report_progress=False,
                         filename=str(tmp_path / 'g.pkl'), storage_service='pickle',
                         multiproc=True, ncores=1, use_pool=use_pool, graceful_exit=True)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(8))})
    results = env.f_run(sigint_flag_job)
    assert results == [(i, i) for i in range(3)]       # run 2 finished; none after it
    assert not traj.f_is_completed()


@pytest.mark.timeout(180)
def test_the_sigint_flag_a_worker_set_stops_its_sweep_only(tmp_path):
    """An executor's worker lives on into the next sweep: the flag its job set stops the
    sweep it was set in, not every later one (review)."""
    import concurrent.futures
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        for k, job in enumerate((sigint_flag_job, square_job)):
            env = mp.Environment('s%d' % k, add_time=False, log_config=None,
                                 report_progress=False, storage_service='pickle',
                                 filename=str(tmp_path / ('s%d.pkl' % k)), executor=pool,
                                 graceful_exit=True)
            traj = env.v_trajectory
            traj.f_add_parameter('x', 0)
            traj.f_explore({'x': list(range(6))})
            env.f_run(job)
            assert traj.f_is_completed() == (k == 1)


def niceness_job(traj):
    return os.nice(0)


@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(os, 'nice'), reason='os.nice is Unix only')
@pytest.mark.parametrize('use_pool', [True, False], ids=['pool', 'process_per_run'])
def test_niceness_makes_the_workers_nicer_as_pypets(tmp_path, use_pool):
    env = mp.Environment('n', add_time=False, log_config=None, report_progress=False,
                         filename=str(tmp_path / 'n.pkl'), storage_service='pickle',
                         multiproc=True, ncores=1, use_pool=use_pool, niceness=os.nice(0) + 3)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2]})
    assert [nice for _, nice in env.f_run(niceness_job)] == [os.nice(0) + 3] * 2
    assert traj.niceness == os.nice(0) + 3      # config.environment.n.niceness, as pypet's


# ---------------------------------------------------------------------------------------------
# pypet's log_config, log_stdout, logger_names; logging that undoes itself
# ---------------------------------------------------------------------------------------------
LOG_MAIN_INI = '''
[loggers]
keys=root
[logger_root]
handlers=main,warn
level=INFO
[formatters]
keys=plain
[formatter_plain]
format=%(processName)s %(name)s %(levelname)s %(message)s
[handlers]
keys=main,warn
[handler_main]
class=FileHandler
formatter=plain
args=('LOGS/$traj/$env/LOG.txt',)
[handler_warn]
class=FileHandler
level=WARNING
formatter=plain
args=('LOGS/$traj/$env/WARN.txt',)
'''
# pypet's multiproc_ sections: the same for each worker, into files named after it
LOG_INI = LOG_MAIN_INI + re.sub(r'^\[', '[multiproc_', LOG_MAIN_INI, flags=re.M).replace(
    '$env/', '$env/$run_$set_$proc_')


@pytest.mark.timeout(120)
@pytest.mark.parametrize('how', ['serial', pytest.param('pool', marks=needs_fork),
                                 pytest.param('per_run', marks=needs_spawn)])
def test_log_config_ini_file_makes_pypets_files_in_main_and_workers(tmp_path, jobs,
                                                                    how):
    """pypet's log_config: an .ini file whose file names hold $traj, $env, $run, $set
    and $proc; its multiproc_ sections set up each worker (a pool worker's $run is
    run_ALL, a process per run's its run)."""
    ini = tmp_path / 'log.ini'
    ini.write_text(LOG_INI.replace('LOGS', str(tmp_path / 'logs')))
    before = root_handlers()
    parallel = {'serial': {}, 'pool': dict(multiproc=True, ncores=2, use_pool=True,
                                           wrap_mode='LOCK', start_method='fork'),
                'per_run': dict(multiproc=True, ncores=2, use_pool=False,
                                wrap_mode='QUEUE', start_method='spawn')}[how]
    env = mp.Environment('inilog', add_time=False, log_config=str(ini),
                         report_progress=False, storage_service='pickle',
                         filename=str(tmp_path / 'i.pkl'), **parallel)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': list(range(4))})
    env.f_run(jobs.log_job)
    env.f_disable_logging()
    logging.getLogger('t4job').warning('after the environment')
    assert set(before) <= set(root_handlers()), 'the handlers it took off are back'
    assert not [h for h in root_handlers()
                if str(tmp_path) in getattr(h, 'baseFilename', '')]
    files = read_logs(str(tmp_path / 'logs' / 'inilog' / env.v_name))
    assert 'after the environment' not in ''.join(files.values())
    workers = sorted(name for name in files if name not in ('LOG.txt', 'WARN.txt'))
    text = ''.join(files[name] for name in workers if name.endswith('_LOG.txt'))
    if how == 'serial':
        assert workers == []
        text = files['LOG.txt']
    elif how == 'pool':
        assert len(workers) == 4  # (two workers, two files each, made at its start)
        name = r'run_ALL_run_set_ALL_PoolWorker-\d-\d+_(LOG|WARN)\.txt$'
        assert all(re.match(name, n) for n in workers), workers
    else:
        runs = [n for n in workers if n.startswith('run_0')]
        assert len(runs) == 8
        for n in runs:
            i = int(n[4:12])
            assert re.match(r'run_%08d_run_set_00000_Run-%d-\d+_(LOG|WARN)\.txt$'
                            % (i, i), n), n
        assert all('QueueProcess' in n for n in workers if n not in runs)
        for i in range(4):
            own = [n for n in runs if n.startswith('run_%08d' % i) and 'LOG' in n]
            assert files[own[0]].count('hello from run') == 1, 'its own run only'
    for i in range(4):
        assert text.count('hello from run %d\n' % i) == 1
        warned = ''.join(v for n, v in files.items() if n.endswith('WARN.txt'))
        assert warned.count('careful in run %d\n' % i) == 1
    assert 'debug line' not in ''.join(files.values())
    assert 'hello from run' not in ''.join(v for n, v in files.items() if 'WARN' in n)
    if how != 'serial':
        assert 'hello from run' not in files['LOG.txt'], 'the main file: no run lines'
    assert mp.runs_table(str(tmp_path / 'i.pkl'))[3]['z'] == 30


def test_log_config_dict_log_stdout_and_progress_print(tmp_path, jobs):
    """A dictConfig dict as log_config; log_stdout sends print output to a logger
    (until f_disable_logging), and report_progress=(percent, 'print') prints pypet's
    bar there."""
    log = str(tmp_path / 'logs' / '$traj' / 'LOG.txt')
    config = {'version': 1, 'disable_existing_loggers': False,
              'formatters': {'f': {'format': '%(name)s %(levelname)s %(message)s'}},
              'handlers': {'file': {'class': 'logging.FileHandler', 'filename': log,
                                    'formatter': 'f'}},
              'root': {'handlers': ['file'], 'level': 'INFO'},
              'multiproc_handlers': {}}
    stdout = sys.stdout
    env = mp.Environment('dictlog', add_time=False, log_config=config,
                         log_stdout=('out', logging.WARNING),
                         report_progress=(50, 'print'), storage_service='lazy')
    assert config['handlers']['file']['filename'] == log, 'the dict given is unchanged'
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': list(range(4))})
    env.f_run(jobs.times_ten)
    print('after the runs')
    env.f_disable_logging()
    assert sys.stdout is stdout
    print('not logged')
    with open(str(tmp_path / 'logs' / 'dictlog' / 'LOG.txt')) as f:
        text = f.read()
    assert 'out WARNING PROGRESS: Finished 2/4 runs [==========' in text
    assert 'out WARNING PROGRESS: Finished 4/4 runs [%s] 100.0%%' % ('=' * 20) in text
    assert 'out WARNING after the runs\n' in text and 'not logged' not in text


def test_log_config_refusals_come_before_anything_is_written(tmp_path):
    """pypet's ValueErrors: log_config together with the simple way (log_folder,
    logger_names, log_levels, log_multiproc), and a log_config file that is not
    there."""
    import configparser
    parser = configparser.ConfigParser()
    cases = [(dict(log_config=parser, log_folder=str(tmp_path / 'logs')), 'log_folder'),
             (dict(log_config=None, logger_names='test'), 'logger_names'),
             (dict(log_config={'version': 1}, log_multiproc=False), 'log_multiproc'),
             (dict(log_config=str(tmp_path / 'no.ini')), "no.ini': no such file"),
             (dict(log_config=42), "log_config must be 'DEFAULT', None"),
             (dict(log_stdout=('out', 'LOUD')), 'log_level must be a logging level'),
             (dict(log_folder=str(tmp_path / 'logs'), logger_names=['a', 'b'],
                   log_levels=[10, 20, 30]), 'one for each of logger_names')]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=re.escape(words)):
            mp.Environment('refused', filename=str(tmp_path / 'r.pkl'), **kwargs)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.timeout(120)
@needs_fork
def test_log_folder_with_logger_names_levels_and_no_worker_files(tmp_path, jobs):
    """The seed's files on the loggers pypet's logger_names names, at their
    log_levels; log_multiproc=False: workers make no files of their own (fork's write
    to the main's)."""
    env = mp.Environment('named', add_time=False, log_folder=str(tmp_path / 'logs'),
                         logger_names=('t4job',), log_levels=(logging.WARNING,),
                         log_multiproc=False, storage_service='pickle',
                         filename=str(tmp_path / 'n.pkl'), multiproc=True, ncores=2,
                         start_method='fork', report_progress=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': list(range(4))})
    with env:
        env.f_run(jobs.log_job)
    files = read_logs(str(tmp_path / 'logs' / 'named'))
    assert sorted(files) == ['main.txt', 'warnings_and_errors.txt']
    for i in range(4):
        assert files['main.txt'].count('careful in run %d\n' % i) == 1
    assert 'hello from run' not in files['main.txt']  # (t4job logs at WARNING)
    assert not logging.getLogger('t4job').handlers
    logging.getLogger('t4job').setLevel(logging.NOTSET)


def test_log_stdout_without_anywhere_to_log_leaves_print_alone(tmp_path, monkeypatch):
    """log_stdout=True with no log files and no handler for its logger: print output
    would vanish, so it stays on stdout (and the log says why)."""
    monkeypatch.setattr(mp, '_SAID', set())
    root = logging.getLogger()
    monkeypatch.setattr(root, 'handlers', [])
    said = []
    monkeypatch.setattr(mp, '_say_once', said.append)
    stdout = sys.stdout
    env = mp.Environment('plain', add_time=False, log_stdout=True,
                         storage_service='lazy')
    assert sys.stdout is stdout and env._log is None
    assert said and 'print output stays on stdout' in said[0]


SMALL_INI = '''
[loggers]
keys=root
[logger_root]
handlers=main
level=INFO
[formatters]
keys=plain
[formatter_plain]
format=%(name)s %(levelname)s %(message)s
[handlers]
keys=main
[handler_main]
class=FileHandler
formatter=plain
args=('LOGS/$traj/LOG.txt',)
'''


def test_an_environment_refused_after_its_logging_leaves_no_trace(tmp_path):
    """A combination refused in Environment() (wrap_mode='NONE' with a service that is
    not safe for several processes): there is no environment to disable the logging
    on, so print output, the root's handlers and the log folder stay as they were."""
    class Mine(mp.StorageService):
        def store(self, *args, **kwargs):
            pass

        def load(self, *args, **kwargs):
            pass
    stdout, before = sys.stdout, root_handlers()
    with pytest.raises(mp.ConfigurationError, match="wrap_mode='NONE'"):
        mp.Environment('t', storage_service=Mine(), log_folder=str(tmp_path / 'logs'),
                       log_stdout=True, multiproc=True, wrap_mode='NONE', add_time=False)
    assert sys.stdout is stdout and root_handlers() == before
    assert os.listdir(str(tmp_path)) == []


def test_two_environments_logging_to_files_come_off_in_any_order(tmp_path):
    """Two environments with log_config in one process (a notebook): disabling the
    first, then the second, leaves the root logger as before both; neither puts the
    other's closed handler back. A user's FileHandler(mode='w') that log_config took
    off comes back appending to what it wrote."""
    user_log = str(tmp_path / 'user.log')
    user = logging.FileHandler(user_log, mode='w')
    root = logging.getLogger()
    root.addHandler(user)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        logging.getLogger('me').info('before the environments')
        ini = tmp_path / 'log.ini'
        ini.write_text(SMALL_INI.replace('LOGS', str(tmp_path / 'logs')))
        envs = [mp.Environment(name, storage_service='lazy', log_config=str(ini),
                               add_time=False, report_progress=False)
                for name in ('one', 'two')]
        assert user not in root.handlers
        for env in envs:
            env.f_disable_logging()
        assert root.handlers.count(user) == 1
        assert not [h for h in root.handlers
                    if str(tmp_path / 'logs') in getattr(h, 'baseFilename', '')]
        logging.getLogger('me').info('after the environments')
    finally:
        root.removeHandler(user)
        user.close()
        root.setLevel(level)
    with open(user_log) as f:
        assert f.read().splitlines() == ['before the environments', 'after the environments']
    for name in ('one', 'two'):
        with open(str(tmp_path / 'logs' / name / 'LOG.txt')) as f:
            assert 'after the environments' not in f.read()


def test_a_broken_log_config_is_a_minipypet_error_that_undoes_itself(tmp_path):
    """A log_config dictConfig refuses (a handler it cannot make): a ConfigurationError
    naming the cause, and the root logger as before."""
    before = root_handlers()
    config = {'version': 1, 'disable_existing_loggers': False,
              'handlers': {'good': {'class': 'logging.StreamHandler'},
                           'bad': {'class': 'logging.NoSuchHandler'}},
              'root': {'handlers': ['good', 'bad'], 'level': 'INFO'}}
    with pytest.raises(mp.ConfigurationError, match="log_config cannot be applied.*'bad'"):
        mp.Environment('t', storage_service='lazy', log_config=config, add_time=False)
    assert root_handlers() == before


def test_each_environments_log_stdout_goes_to_its_own_logger(tmp_path):
    """Two environments with different log_stdout loggers: print output goes to the
    newest one's logger, and to the older one's when the newer is disabled."""
    got = []

    class Catch(logging.Handler):
        def emit(self, record):
            got.append((record.name, record.getMessage()))
    catch = Catch()
    for name in ('one', 'two'):
        logging.getLogger(name).addHandler(catch)
    stdout = sys.stdout
    try:
        env1 = mp.Environment('t1', storage_service='lazy', log_stdout=('one', 30),
                              add_time=False)
        env2 = mp.Environment('t2', storage_service='lazy', log_stdout=('two', 30),
                              add_time=False)
        print('both live')
        env2.f_disable_logging()
        print('the first only')
        env1.f_disable_logging()
    finally:
        for name in ('one', 'two'):
            logging.getLogger(name).removeHandler(catch)
    assert sys.stdout is stdout
    assert got == [('two', 'both live'), ('one', 'the first only')]


# =============================================================================================
# Coming from pypet - the rest of pypet's public names, its spellings, its scripts
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# pypet 0.7's unprefixed spellings: one table, one loop
# ---------------------------------------------------------------------------------------------
ALIAS_PAIRS = [(cls, target) for cls, targets in mp._ALIASES.items() for target in targets]


@pytest.mark.parametrize('cls, target', ALIAS_PAIRS,
                         ids=['%s.%s' % (c.__name__, t) for c, t in ALIAS_PAIRS])
def test_alias_resolves_to_the_same_function_or_property(cls, target):
    alias = mp._alias_name(target)
    assert alias != target and not alias.startswith(('f_', 'v_'))
    want = inspect.getattr_static(cls, target)
    assert inspect.getattr_static(cls, alias) is want
    for sub in cls.__subclasses__():                  # and in the module's own subclasses
        if sub.__module__ == cls.__module__:
            assert inspect.getattr_static(sub, alias) is inspect.getattr_static(sub, target)


# ---------------------------------------------------------------------------------------------
# A pypet script, unchanged
# ---------------------------------------------------------------------------------------------
PYPET_SCRIPT = '''\
"""A sweep written for pypet, in its documented style."""
import os
import sys

from pypet import Environment, cartesian_product, pypetconstants
from pypet.utils.explore import cartesian_product as explore_product
from pypet.trajectory import Trajectory


def multiply(traj):
    """Example of a sophisticated simulation that involves multiplying two values."""
    z = traj.x * traj.y
    traj.f_add_result('z', z, comment='Result of our simulation!')


def main():
    folder = sys.argv[1]
    filename = os.path.join(folder, 'example_01.hdf5')
    env = Environment(trajectory='Multiplication',
                      filename=filename,
                      file_title='Example_01',
                      log_folder=os.path.join(folder, 'logs'),
                      comment='I am the first example!')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1.0, comment='I am the first dimension!')
    traj.f_add_parameter('y', 1.0, comment='I am the second dimension!')
    assert explore_product is cartesian_product
    traj.f_explore(cartesian_product({'x': [1.0, 2.0, 3.0], 'y': [6.0, 7.0]}))
    env.run(multiply)
    env.f_disable_logging()

    loaded = Trajectory(filename=filename)
    loaded.f_load(index=-1, load_parameters=pypetconstants.LOAD_DATA,
                  load_results=pypetconstants.LOAD_DATA)
    for idx, run_name in enumerate(loaded.f_get_run_names()):
        loaded.v_idx = idx
        print('%s x=%s y=%s z=%s' % (run_name, loaded.x, loaded.y,
                                     loaded.results.runs[run_name].z))
    loaded.v_idx = -1
    print('name', loaded.v_name.startswith('Multiplication_'))
    print('env', env.v_name)


if __name__ == '__main__':
    main()
'''
EXPECTED_SCRIPT_LINES = ['run_00000000 x=1.0 y=6.0 z=6.0', 'run_00000001 x=1.0 y=7.0 z=7.0',
                         'run_00000002 x=2.0 y=6.0 z=12.0', 'run_00000003 x=2.0 y=7.0 z=14.0',
                         'run_00000004 x=3.0 y=6.0 z=18.0', 'run_00000005 x=3.0 y=7.0 z=21.0',
                         'name True']


def check_script_output(out, folder):
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:-1] == EXPECTED_SCRIPT_LINES, out.stdout
    env_name = lines[-1].split()[1]
    logs = os.listdir(os.path.join(folder, 'logs'))
    assert len(logs) == 1 and logs[0].startswith('Multiplication_')
    assert 'main.txt' in os.listdir(os.path.join(folder, 'logs', logs[0]))
    data = [f for f in os.listdir(folder) if f.startswith('example_01.')]
    assert data
    filename = os.path.join(folder, 'example_01' + (
        '.hdf5' if 'example_01.hdf5' in data else '.pkl'))
    rows = mp.runs_table(filename)
    assert [r['z'] for r in rows] == [6.0, 7.0, 12.0, 14.0, 18.0, 21.0]
    loaded = mp.load_trajectory(filename=filename, load_all=2)
    script = loaded.f_get('config.environment.%s.script' % env_name).f_get()
    assert os.path.basename(script) == 'pypet_sweep.py', 'the user script, not minipypet'


def test_pypet_script_through_python_m_minipypet_run(tmp_path):
    script = tmp_path / 'pypet_sweep.py'
    script.write_text(PYPET_SCRIPT)
    data = tmp_path / 'data'
    data.mkdir()
    out = cli('run', script, data, cwd=str(tmp_path))
    check_script_output(out, str(data))


def test_pypet_script_after_install_as_pypet(tmp_path):
    script = tmp_path / 'pypet_sweep.py'
    script.write_text(PYPET_SCRIPT)
    data = tmp_path / 'data'
    data.mkdir()
    code = IMPORT + textwrap.dedent('''
        import runpy
        assert 'pypet' not in sys.modules
        fake = mp.install_as_pypet()
        import pypet
        assert pypet is fake and pypet.Environment is mp.Environment
        from pypet.trajectory import Trajectory
        assert Trajectory is mp.Trajectory
        sys.argv = [sys.argv[1], sys.argv[2]]
        runpy.run_path(sys.argv[0], run_name='__main__')
    ''')
    out = prov_run_python(code, str(script), str(data), cwd=str(tmp_path))
    check_script_output(out, str(data))


def test_f_load_load_parameters_loads_config_as_pypet_does(tmp_path):
    """pypet: `load_parameters: How parameters and config items are loaded`."""
    env = env_for('pickle', tmp_path, 'cfgload')
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_store()
    traj = mp.Trajectory(filename=str(tmp_path / 'cfgload.pkl'))
    traj.f_load(index=-1, load_parameters=mp.pypetconstants.LOAD_DATA,
                load_results=mp.pypetconstants.LOAD_DATA)
    assert traj.f_get('parameters.x').f_get() == 1
    assert traj.f_get('config.environment.%s.hexsha' % env.v_name).f_get() == env.v_hexsha


def test_importing_minipypet_does_not_alias_pypet():
    out = prov_run_python(IMPORT + "print('pypet' in sys.modules)")
    assert out.returncode == 0 and out.stdout.strip() == 'False'


# ---------------------------------------------------------------------------------------------
# pypet's public API, round two
# ---------------------------------------------------------------------------------------------
def test_func_and_vars_namespaces_on_every_node():
    traj = mp.Trajectory('ns', add_time=False)
    x = traj.func.add_parameter('x', 1, comment='c')
    assert traj.vars.name == 'ns' and x.vars.full_name == 'parameters.x'
    assert traj.par.func.get('x') is x and x.func.get() == 1
    x.vars.comment = 'changed'
    assert x.v_comment == 'changed'
    assert 'add_result' in dir(traj.func) and 'full_name' in dir(x.vars)
    with pytest.raises(AttributeError, match='f_nothing'):
        traj.func.nothing


def test_links_with_dotted_names_make_the_groups_on_the_way():
    traj = mp.Trajectory('links', add_time=False)
    x = traj.f_add_parameter('x', 1)
    traj.f_add_link('parameters.mynewgroup.mylink2', x)
    traj.par.f_add_link('other.deeper.l', 'parameters.x')
    assert traj.parameters.mynewgroup.mylink2 == 1
    assert traj.f_get('parameters.other.deeper.l') is x
    assert traj.par.mynewgroup.f_get_links() == {'mylink2': x}
    assert traj.par.mynewgroup.f_links() == 1
    with pytest.raises(mp.InvalidNameError):
        traj.f_add_link('parameters.g.f_bad', x)


def set_job(traj):
    traj.f_add_result('a', traj.x)
    traj.f_add_result('b', traj.res.crunset.crun.a * 10)  # pypet: the run's set, then the run


def test_run_sets_resolve_while_the_layout_stays_columnar(backend, tmp_path):
    filename = path_for(backend, tmp_path)
    env, traj = sweep(backend, filename, set_job, n=3)
    got = traj if backend == 'lazy' else load(filename, name='traj', load_data=2)
    assert got.f_get('results.runs.run_set_00000.run_00000002.b').f_get() == 20
    assert got.results.runs.run_set_00000.run_00000001.a == 1
    got.v_crun = 'run_00000001'                      # the v_crun setter sets the run
    assert got.v_idx == 1 and got.res.crunset.crun.b == 10
    assert got.f_get('results.$set.$.a').v_full_name == 'results.runs.run_00000001.a'
    got.v_crun = None
    assert got.v_idx == -1
    assert 'run_set_00000' not in got.results.runs.f_get_children()   # no set groups were made


def frame_job(traj):
    pd = sys.modules['pandas']
    traj.f_add_result('rates', pd.DataFrame({'n': [traj.x, 2 * traj.x], 'rate': [0.5, 1.5]}),
                      comment='a firing-rate table')
    traj.f_add_result('s', series=pd.Series([traj.x * 1.0], name='s', index=['only']))


@pytest.mark.parametrize('backend', BACKENDS)
def test_pandas_frames_and_series_in_results_load_back_equal(backend, tmp_path):
    pd = pytest.importorskip('pandas')
    filename = path_for(backend, tmp_path)
    env = make_env(backend, filename)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    table = pd.DataFrame({'a': [1, 2], 'b': ['u', 'v'], 'c': [0.5, float('nan')],
                          't': pd.to_datetime(['2020-01-01', '2020-01-02'])},
                         index=pd.Index(['i', 'j'], name='key'))
    multi = pd.DataFrame({'v': [1, 2]}, index=pd.MultiIndex.from_tuples(
        [('a', 1), ('b', 2)], names=['k', 'n']))
    traj.f_add_result('table', table, multi=multi, nothing=pd.DataFrame())
    traj.f_add_result('objects', mp.ObjectTable({'a': [1, 'two', (3, 4)]}))
    traj.f_explore({'x': [1, 2, 3]})
    env.f_run(frame_job)
    got = traj if backend == 'lazy' else load(filename, name='traj', load_all=2)
    pd.testing.assert_frame_equal(got.res.table.table, table)
    pd.testing.assert_frame_equal(got.res.table.multi, multi)
    pd.testing.assert_frame_equal(got.res.table.nothing, pd.DataFrame())
    objects = got.res.objects
    assert type(objects).__name__ == 'ObjectTable' and objects['a'].tolist() == [1, 'two', (3, 4)]
    for idx in range(3):
        x = idx + 1
        pd.testing.assert_frame_equal(
            got.f_get('results.runs.%s.rates' % run_name(idx)).f_get(),
            pd.DataFrame({'n': [x, 2 * x], 'rate': [0.5, 1.5]}))
        pd.testing.assert_series_equal(got.f_get('results.runs.%s.s' % run_name(idx)).series,
                                       pd.Series([x * 1.0], name='s', index=['only']))


def test_a_frame_of_objects_that_are_not_plain_data_is_refused_when_added():
    pd = pytest.importorskip('pandas')
    traj = mp.Trajectory('objs', add_time=False)
    with pytest.raises(mp.UnsupportedTypeError, match="bad item 'bad' column 'a': cannot store a value of type object"):
        traj.f_add_result('bad', pd.DataFrame({'a': [object()]}))
    assert 'bad' not in traj.res


@pytest.mark.parametrize('backend', FILE_BACKENDS)
def test_a_stored_frame_reads_back_as_plain_columns_without_pandas(backend, tmp_path):
    pd = pytest.importorskip('pandas')
    filename = path_for(backend, tmp_path)
    traj = make_env(backend, filename).v_trajectory
    traj.f_add_result('table', pd.DataFrame({'a': [1, 2], 'b': ['u', 'v']}))
    traj.f_store()
    code = block('pandas') + IMPORT + textwrap.dedent('''
        traj = mp.load_trajectory(filename=sys.argv[1], name='traj', load_all=2)
        plain = traj.res.table
        print(plain['__t'], plain['columns']['levels'][0], [[str(v) for v in c] for c in plain['data']])
    ''')
    out = prov_run_python(code, filename)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split('\n')[0] == "DataFrame ['a', 'b'] [['1', '2'], ['u', 'v']]"


def test_sparse_parameter_and_result_round_trip(backend, tmp_path):
    sparse = pytest.importorskip('scipy.sparse')
    filename = path_for(backend, tmp_path)
    env = make_env(backend, filename)
    traj = env.v_trajectory
    traj.f_add_parameter(mp.SparseParameter, 'm', sparse.csr_matrix(np.eye(3)))
    traj.f_add_parameter(mp.ArrayParameter, 'empty', ())        # pypet allows an empty tuple
    traj.f_explore({'m': [sparse.csr_matrix(np.eye(3) * i) for i in range(3)]})
    traj.f_add_result(mp.SparseResult, 'r', dia=sparse.dia_matrix(np.eye(4)),
                      bsr=sparse.bsr_matrix(np.eye(4)), plain=1)
    env.f_run(lambda traj: traj.f_add_result('trace', traj.m.diagonal().sum()))
    got = traj if backend == 'lazy' else load(filename, name='traj', load_all=2)
    m = got.f_get('parameters.m')
    assert [(v != sparse.csr_matrix(np.eye(3) * i)).nnz for i, v in
            enumerate(m.f_get_range())] == [0, 0, 0]
    assert type(got.res.r.dia).__name__ == 'dia_matrix' and got.res.r.plain == 1
    assert (got.res.r.bsr.toarray() == np.eye(4)).all()
    assert got.par.empty == ()
    assert got.f_get_from_runs('trace', fast_access=True, use_indices=True) == {0: 0, 1: 3, 2: 6}


PYPET_PUBLIC_NAMES = [
    'Trajectory', 'Environment', 'MultiprocContext', 'HDF5StorageService', 'LazyStorageService',
    'ParameterGroup', 'DerivedParameterGroup', 'ConfigGroup', 'ResultGroup', 'NNGroupNode',
    'NNLeafNode', 'BaseParameter', 'Parameter', 'ArrayParameter', 'SparseParameter',
    'PickleParameter', 'BaseResult', 'Result', 'SparseResult', 'PickleResult',
    'DataNotInStorageError', 'NoSuchServiceError', 'NotUniqueNodeError',
    'ParameterLockedException', 'PresettingError', 'TooManyGroupsError', 'VersionMismatchError',
    'GitDiffError', 'HasSlots', 'HasLogger', 'rename_log_file', 'cartesian_product',
    'load_trajectory', 'compact_hdf5_file', 'KnowsTrajectory', 'StorageContextManager',
    'SharedArray', 'SharedCArray', 'SharedEArray', 'SharedVLArray', 'SharedPandasFrame',
    'SharedTable', 'SharedResult', 'make_ordinary_result', 'make_shared_result', 'progressbar',
    'racedirs', 'find_unique_points', 'merge_all_in_folder', 'manual_run']
PYPET_MODULE_NAMES = {
    'pypet.pypetlogging': ['HasLogger', 'rename_log_file', 'DisableAllLogging'],
    'pypet.utils.comparisons': ['nested_equal', 'parameters_equal', 'results_equal'],
    'pypet.utils.mpwrappers': ['LockWrapper', 'QueueStorageServiceSender'],
    'pypet.utils.siginthandling': ['sigint_handling'],
    'pypet.utils.decorators': ['retry', 'manual_run'],
    'pypet.utils.helpful_functions': ['is_debug', 'racedirs', 'flatten_dictionary',
                                      'nest_dictionary', 'progressbar'],
    'pypet.shareddata': ['SharedResult', 'make_ordinary_result', 'StorageContextManager'],
    'pypet.pypetconstants': ['ACCESS_DATA', 'BACKUP', 'DELETE_LINK', 'MERGE', 'PREPARE_MERGE',
                             'SET_FORMAT_ZEROS', 'UPDATE_DATA', 'UPDATE_SKELETON',
                             'WRAP_MODE_LOCAL', 'WRAP_MODE_PIPE'],
    'pypet.environment': ['Environment', 'MultiprocContext'],
    'pypet.parameter': ['SparseParameter', 'SparseResult'],
}


def test_pypets_public_names_resolve_through_the_alias():
    code = IMPORT + textwrap.dedent('''
        import importlib
        mp.install_as_pypet()
        import pypet
        missing = [n for n in %r if not hasattr(pypet, n)]
        for module, names in %r.items():
            mod = importlib.import_module(module)
            missing += [module + '.' + n for n in names if not hasattr(mod, n)]
        print('missing', missing)
        print('pandas imported', 'pandas' in sys.modules)
        ns = {}
        exec('from pypet import *', ns)
        print('star', sorted(set(%r) - set(ns)))
    ''' % (PYPET_PUBLIC_NAMES, PYPET_MODULE_NAMES, PYPET_PUBLIC_NAMES))
    out = prov_run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'missing []' in out.stdout and 'star []' in out.stdout
    assert 'pandas imported False' in out.stdout       # (ObjectTable is made when asked for)


class PlainObject:
    """An object with no == of its own."""


class SlotsA:
    __slots__ = ('a',)

    def __init__(self, a):
        self.a = a


class SlotsB(SlotsA):
    __slots__ = ()


def test_helpers_behave_as_pypets(tmp_path):
    assert mp.rename_log_file('$traj/$run/$set/$env.txt', traj_name='t', run_name='run_1',
                              set_name='run_set_0', env_name='e') == 't/run_1/run_set_0/e.txt'
    traj = mp.Trajectory('named', add_time=False)
    assert mp.rename_log_file('$traj_$run.log', trajectory=traj) == 'named_run_ALL.log'
    with pytest.raises(mp.ConfigurationError, match='pass trajectory='):
        mp.rename_log_file('$traj.log')
    mp.racedirs(str(tmp_path / 'a' / 'b'))
    mp.racedirs(str(tmp_path / 'a' / 'b'))                      # (exists already: fine)
    assert os.path.isdir(str(tmp_path / 'a' / 'b'))
    assert mp.compact_hdf5_file(str(tmp_path / 'x.hdf5')) == 0    # a no-op
    assert mp.flatten_dictionary({'a': {'b': 1, 'c': {'d': 2}}}, '.') == {'a.b': 1, 'a.c.d': 2}
    assert mp.nest_dictionary({'a.b': 1, 'a.c.d': 2}, '.') == {'a': {'b': 1, 'c': {'d': 2}}}
    assert mp.nested_equal({'a': [1, (2, 3)]}, {'a': [1, (2, 3)]})
    assert not mp.nested_equal({'a': [1, 2]}, {'a': [1, 3]})
    assert mp.nested_equal(float('nan'), float('nan'))
    a, b = PlainObject(), PlainObject()        # pypet: objects without == by their attributes
    a.g = b.g = [1, 2]
    assert mp.nested_equal(a, b) and not mp.nested_equal(a, PlainObject())
    b.h = 3
    assert not mp.nested_equal(a, b)
    assert mp.nested_equal(SlotsA(1), SlotsB(1)) and not mp.nested_equal(SlotsA(1), SlotsB(2))
    a.me, b.me = a, b                          # (a cycle compares unequal instead of failing)
    assert not mp.nested_equal(a, b)
    p1, p2 = mp.Parameter('x', 1), mp.Parameter('x', 1)
    assert mp.parameters_equal(p1, p2) and not mp.parameters_equal(p1, mp.Parameter('x', 2))
    assert mp.results_equal(mp.Result('r', a=1), mp.Result('r', a=1))
    chain = mp.IteratorChain([1, 2], iter([3]))
    chain.add((4,))
    assert list(chain) == [1, 2, 3, 4]
    assert mp.result_sort([(9, 'x'), (2, 'b'), (1, 'a')], 1) == [(9, 'x'), (1, 'a'), (2, 'b')]
    assert mp.get_matching_kwargs(lambda a, b=1: None, {'a': 1, 'c': 2}) == {'a': 1}
    calls = []

    @mp.retry(2, ValueError)
    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ValueError('not yet')
        return 'done'
    assert flaky() == 'done' and len(calls) == 3
    with pytest.raises(mp.PresettingError, match='never added'):
        env = lazy_env()
        env.v_trajectory.f_preset_parameter('nowhere', 1)
        env.f_run(lambda traj: None)


class Logged(mp.HasLogger):
    __slots__ = 'value'

    def __init__(self):
        self.value = 3
        self._set_logger()


def test_has_slots_and_has_logger_pickle():
    empty = pickle.loads(pickle.dumps(Logged.__new__(Logged)))   # (no slot set)
    assert not hasattr(empty, 'value')
    copy = pickle.loads(pickle.dumps(Logged()))
    assert copy.value == 3 and copy._logger.name.endswith('Logged')
    assert Logged.__all_slots__ == {'value', '_logger', '__weakref__'}
    assert mp.KnowsTrajectory.KNOWS_TRAJECTORY


def test_shared_data_is_kept_in_memory_and_in_place_writes_say_what_to_do(tmp_path):
    traj = mp.Trajectory('shared', add_time=False)
    res = traj.f_add_result(mp.SharedResult, 'shared')
    res.f_set_single('arr', mp.SharedArray(data=[1, 2, 3]))
    assert res.arr == [1, 2, 3]
    assert mp.make_ordinary_result(res, 'arr') is res
    with pytest.raises(mp.PypetError, match='never edits a stored file in place'):
        mp.make_shared_result(res, 'arr', traj)
    with pytest.raises(mp.PypetError, match='f_add_result'):
        mp.SharedArray('a', data=[1])[0] = 5
    with mp.StorageContextManager(traj) as got:
        assert got is traj


@mp.manual_run(store_meta_data=True)
def manual_multiply(traj):
    traj.f_add_result('$set.$.z', traj.x * traj.y)
    return traj.x * traj.y


def context_store_name(traj):
    traj.f_get('results.last').f_set(traj.x)
    traj.results.f_store(store_data=3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('wrap_mode', ['LOCK', 'QUEUE', 'PIPE'])
@pytest.mark.parametrize('backend', FILE_BACKENDS)
def test_multiproc_context_with_manual_runs_in_your_own_pool(backend, wrap_mode, tmp_path):
    filename = path_for(backend, tmp_path)
    traj = mp.Trajectory('ctx', add_time=False, filename=filename,
                         storage_service=CLASSES[backend])
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter('y', 10)
    traj.f_add_result('last', 0)
    traj.f_explore({'x': [1, 2, 3, 4]})
    start = PAR_START_METHODS[0]
    with mp.MultiprocContext(trajectory=traj, wrap_mode=wrap_mode):
        with multiprocessing.get_context(start).Pool(2) as pool:
            got = pool.map(manual_multiply, list(traj.f_iter_runs(yields='copy')))
            pool.map(context_store_name, list(traj.f_iter_runs(yields='copy')))
    assert got == [10, 20, 30, 40]
    assert not isinstance(traj.v_storage_service, (mp.LockWrapper,
                                                   mp.QueueStorageServiceSender))
    loaded = load(filename, name='ctx', load_all=2)
    assert loaded.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        0: 10, 1: 20, 2: 30, 3: 40}
    assert all(loaded.f_is_completed(i) for i in range(4))
    assert loaded.res.last in (1, 2, 3, 4)


def test_manual_run_without_an_environment_or_a_pool(tmp_path):
    filename = str(tmp_path / 'manual.pkl')
    traj = mp.Trajectory('manual', add_time=False, filename=filename,
                         storage_service=mp.PickleStorageService)
    traj.f_add_parameter('x', 1)
    traj.f_add_parameter('y', 2)
    traj.f_explore({'x': [1, 2]})
    traj.f_store()
    with pytest.raises(mp.PypetError, match='not set to a run'):
        manual_multiply(traj)
    for run in traj.f_iter_runs(yields='self'):
        assert manual_multiply(run) == run.x * 2
    loaded = load(filename, name='manual', load_all=2)
    assert loaded.f_get_from_runs('z', fast_access=True, use_indices=True) == {0: 2, 1: 4}


def test_pypet_spellings_of_adding_assigning_and_copying():
    traj = mp.Trajectory('spell', add_time=False)
    p = traj.f_apar('p', 1)
    traj.f_adpar('d', 2)
    traj.f_aconf('c', 3)
    r = traj.f_ares('r', x=1)
    assert (traj.par.p, traj.dpar.d, traj.conf.c, traj.res.r.x) == (1, 2, 3, 1)
    assert [n.v_full_name for n in traj.f_iter_nodes(recursive=False)] == [
        'config', 'parameters', 'derived_parameters', 'results']
    traj.par['q'] = mp.Parameter('q', 4)                 # item assignment on groups
    traj['results.new.deep'] = mp.Result('deep', 5)
    traj.par['q'] = 6                                    # (sets the value, as attribute does)
    assert traj.par.q == 6 and traj.results.new.deep == 5 and traj['par', 'q'] == 6
    p.v_annotations['unit'] = 'mV'                      # and on annotations
    p.v_annotations[0] = 'first'
    assert p.v_annotations['unit'] == 'mV' and p.v_annotations.annotation == 'first'
    del p.v_annotations['unit']
    assert 'unit' not in p.v_annotations
    assert traj.par.f_get_children(copy=False) is traj.par._children
    twin = copy.copy(traj)
    assert twin is not traj and twin.par.q == 6 and twin.f_get('parameters.q') is not \
        traj.f_get('parameters.q')
    traj.v_standard_parameter = mp.ArrayParameter
    traj.v_standard_result = mp.PickleResult
    assert type(traj.f_add_parameter('arr', [])).__name__ == 'ArrayParameter'
    assert type(traj.f_add_result('obj', object)).__name__ == 'PickleResult'
    with pytest.raises(mp.ConfigurationError, match='subclass of BaseResult'):
        traj.v_standard_result = dict
    pickled = mp.PickleParameter('pp', [1], protocol=2)
    pickled.v_protocol = 3
    assert pickled.v_protocol == 3 and mp.PickleResult('pr', 1, protocol=1).v_protocol == 1
    assert r.f_get('x') == 1
    ranged = mp.Trajectory('idx', add_time=False)
    e = ranged.f_add_parameter('e', 1)
    ranged.f_explore({'e': [1, 2, 3]})
    assert e['data'] == 1 and e['default'] == e.default == 1 and e[1] == 2 and e[-1] == 1
    with pytest.raises(TypeError, match='not explored'):
        ranged.f_add_parameter('plain', 5)[1]


def test_delete_only_delete_link_and_migrate(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = make_env(file_backend, filename).v_trajectory
    x = traj.f_add_parameter('x', 1)
    traj.f_add_result('r', a=1, b=2, c=3)
    traj.f_add_link('parameters.g.l', x)
    traj.f_store()
    traj.f_delete_items(['results.r'], delete_only=['b', 'c'], remove_from_item=True)
    assert traj.res.r.f_to_dict() == {'a': 1}
    assert load(filename, name='traj', load_all=2).res.r.f_to_dict() == {'a': 1}
    traj.f_delete_link('parameters.g.l', remove_from_trajectory=True)
    assert traj.par.g.f_get_links() == {}
    assert load(filename, name='traj', load_all=2).par.g.f_links() == 0
    with pytest.raises(mp.NoSuchNodeError, match='no link'):
        traj.f_delete_link('parameters.g.nothing')
    other = path_for(file_backend, tmp_path, 'moved')
    traj.f_migrate(new_name='moved', filename=other)
    traj.f_store()
    assert load(other, name='moved', load_all=2).par.x == 1


ENV_CONFIG_INI = """
[trajectory]
trajectory='ConfigTest'
add_time=False
auto_load=True

[environment]
continuable=False
storage_service='pypet.PickleStorageService'
wrap_mode='LOCK'

[storage_service]
filename='ignored.pkl'
purge_duplicate_comments=False

[config]
test.testconfig=True, 'This is a test config'

[parameters]
test.x=42
y=43, 'This is the second variable'
"""


def test_environment_from_a_pypet_config_file(tmp_path):
    ini = tmp_path / 'env.ini'
    ini.write_text(ENV_CONFIG_INI)
    filename = str(tmp_path / 'given.pkl')                 # (given arguments win)
    env = mp.Environment(config=str(ini), filename=filename, log_config=None)
    traj = env.v_trajectory
    assert traj.v_name == 'ConfigTest' and traj.v_auto_load
    assert traj.v_storage_service.filename == filename
    assert type(traj.v_storage_service).__name__ == 'PickleStorageService'
    assert traj.x == 42 and traj.f_get('y').v_comment == 'This is the second variable'
    assert traj.testconfig is True
    env.f_run(lambda traj: traj.f_add_result('z', traj.x + traj.y))
    assert load(filename, name='ConfigTest', load_all=2).f_get(
        'results.runs.run_00000000.z').f_get() == 85
    with pytest.raises(mp.ConfigurationError, match='does not exist'):
        mp.Environment(config=str(tmp_path / 'missing.ini'))
    ini.write_text('[parameters]\nx=not python\n')
    with pytest.raises(mp.ConfigurationError, match='not a Python literal'):
        mp.Environment(config=str(ini), log_config=None, storage_service='lazy')


# ---------------------------------------------------------------------------------------------
# pypet's behaviour in runs, config and errors
# ---------------------------------------------------------------------------------------------
def test_pypet_type_errors_for_what_cannot_change_after_the_runs(tmp_path):
    env = file_env(tmp_path)
    traj = xy_traj(env.v_trajectory)
    with pytest.raises(TypeError, match='during run'):  # (ParameterLockedError)
        env.f_run(lambda t: t.f_add_config('late', 1))
    with pytest.raises(TypeError, match='during run'):
        env.f_run(lambda t: t.f_add_parameter_group('late'))
    env.f_run(multiply)
    with pytest.raises(mp.ParameterLockedError, match='completed already'):
        traj.f_explore({'x': [1.0, 2.0]})
    with pytest.raises(TypeError, match='force=True'):
        traj.f_shrink()


def test_pypet_spellings_of_adding_and_storing_in_a_run(tmp_path):
    env = file_env(tmp_path)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})

    def job(traj):
        traj.res.f_add_result(name='named', data=traj.x)  # (pypet's name=)
        traj.res.runs.f_add_result('hhg', 5)  # from results.runs: into the run
        group = traj.f_add_result_group('List')  # a group goes into the run, too
        group.f_add_result('Of.Keys', 3)
        traj.List.f_store_child('Of', recursive=True)
        traj.f_store_item((mp.pypetconstants.LEAF, traj.f_get('hhg')))  # pypet's tuple

    env.f_run(job)
    got = mp.load_trajectory(name='traj', filename=str(tmp_path / 'traj.pkl'), load_all=2)
    assert [r.data for r in got.f_get_from_runs('named').values()] == [1, 2]
    assert got.f_contains('results.runs.%s.hhg' % run_name(1), shortcuts=False)
    assert got.f_contains('results.runs.%s.List.Of.Keys' % run_name(0), shortcuts=False)
    with pytest.raises(mp.ConfigurationError, match='tuple'):
        traj.f_store_item((mp.pypetconstants.LEAF, traj.x, (), {}, 5))


def test_graceful_exit_honours_pypets_sigint_flag(tmp_path):
    env = file_env(tmp_path, graceful_exit=True)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(8))})

    def job(traj):
        if traj.v_idx == 3:  # (pypet's tests stop a sweep this way)
            mp.install_as_pypet()
            sys.modules['pypet.utils.siginthandling'].sigint_handling.hit = True
        return traj.x

    assert env.f_run(job) == [(i, i) for i in range(4)]
    assert not traj.f_is_completed()


@needs_tables
def test_pypets_hdf5_config_is_added_and_applied(tmp_path, monkeypatch):
    # without the alias there is no config.hdf5: a parameter named shuffle stays unique
    monkeypatch.delitem(sys.modules, 'pypet', raising=False)  # (another test's alias)
    env = mp.Environment(trajectory='u', filename=str(tmp_path / 'u.hdf5'), log_config=None)
    env.v_trajectory.f_add_parameter('train.shuffle', True)
    assert env.v_trajectory.shuffle is True and 'config.hdf5' not in env.v_trajectory
    pypet = types.ModuleType('pypet')
    pypet.__minipypet__ = True  # (as install_as_pypet() marks its module)
    monkeypatch.setitem(sys.modules, 'pypet', pypet)
    filename = str(tmp_path / 'c.hdf5')
    env = mp.Environment(trajectory='c', filename=filename, log_config=None, complevel=4)
    traj = env.v_trajectory
    assert traj.f_get('config.hdf5.complevel')._data == 4  # (reading would lock it)
    traj.hdf5.purge_duplicate_comments = False
    traj.config.hdf5.complevel = 7
    traj.f_add_parameter('x', 1.0)
    traj.f_add_parameter('y', 2.0)
    env.f_run(multiply)
    service = traj.v_storage_service
    assert (service.complevel, service.purge_duplicate_comments) == (7, False)


@needs_tables
@pytest.mark.timeout(120)
def test_run_sets_auto_load_after_a_pool_run(tmp_path):
    filename = str(tmp_path / 'sets.hdf5')
    env = mp.Environment(trajectory='s', filename=filename, log_config=None, multiproc=True,
                         ncores=2, use_pool=True, freeze_input=True, wrap_mode='QUEUE')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': list(range(1003))})
    env.f_run(_add_to_a_run_set)
    traj.v_auto_load = True
    traj.v_idx = 1002
    assert traj.res.crunset.crun.z == 1002
    traj.v_idx = -1
    assert traj.res.rts_1001.r_1001.z == 1001


def _add_to_a_run_set(traj):
    traj.f_add_result('$set.$.z', traj.x)


def test_nodes_have_pypets_logger():
    leaf = mp.Result('r', 1)
    assert leaf._logger.name == 'pypet.Result'
    leaf._logger = logging.getLogger('mine')
    assert leaf._logger.name == 'mine'


# ---------------------------------------------------------------------------------------------
# pypet's keywords, copies, links in runs, run names and merges
# ---------------------------------------------------------------------------------------------
def test_environment_takes_trajectory_properties_and_refuses_other_keywords(tmp_path):
    traj = mp.Trajectory('props')
    env = mp.Environment(trajectory=traj, storage_service=mp.LazyStorageService,
                         log_config=None, v_auto_load=True, with_links=False)
    assert traj.v_auto_load is True and traj.v_with_links is False
    del env
    for exc in (TypeError, ValueError, mp.UnknownArgumentError):  # (pypet: ValueError)
        with pytest.raises(exc, match=r"unknown keywords \['foo'\]"):
            mp.Environment(trajectory='t', filename=str(tmp_path / 'x.hdf5'),
                           log_config=None, foo='bar')
    assert not os.listdir(str(tmp_path))                 # refused before anything is made
    with pytest.raises(AttributeError, match="unknown trajectory property 'j'"):
        traj.f_set_properties(j=7)                          # (pypet: AttributeError)


def test_f_store_recursive_false_is_only_init(tmp_path):
    traj = mp.Trajectory('oi', filename=str(tmp_path / 'oi.pkl'))
    traj.f_add_parameter('x', 1)
    with pytest.raises(ValueError, match='not both'):
        traj.f_store(only_init=True, recursive=False)
    traj.f_store(recursive=False)                       # as only_init=True
    loaded = mp.load_trajectory(name='oi', filename=str(tmp_path / 'oi.pkl'),
                                load_parameters=mp.LOAD_DATA)
    assert loaded.x == 1 and len(loaded) == 1


def test_f_get_from_runs_accepts_pypets_old_keywords_with_a_warning():
    env = lazy_env()
    traj = env.v_trajectory
    xy_traj(traj)
    env.f_run(lambda t: t.f_add_result('z', t.x * t.y))
    with pytest.warns(DeprecationWarning, match='where'):
        got = traj.f_get_from_runs('z', where='results', fast_access=True)
    assert got == traj.f_get_from_runs('z', fast_access=True) and len(got) == 6


def test_full_copy_false_drops_ranges_of_copies_only_when_set():
    param = mp.Parameter('p', 1)
    param._explore([1, 2, 3])
    assert pickle.loads(pickle.dumps(param)).f_get_range() == [1, 2, 3]  # (default: full)
    param.v_full_copy = False
    copied = pickle.loads(pickle.dumps(param))
    assert copied.v_explored and not copied.f_has_range() and copied.f_get() == 1
    assert param.f_has_range()                          # the original keeps its range
    traj = mp.Trajectory('fc')
    traj.f_add_parameter('x', 0)
    traj.f_explore({'x': [1, 2, 3]})
    assert copy.copy(traj).f_get('x').f_get_range() == [1, 2, 3]   # unset: a full copy
    traj.v_full_copy = False
    assert traj.v_full_copy is False
    new = copy.copy(traj)
    assert new.f_get('x').v_explored and not new.f_get('x').f_has_range()
    assert traj.f_get('x').f_get_range() == [1, 2, 3]
    traj.v_full_copy = True
    assert traj.f_copy().f_get('x').f_get_range() == [1, 2, 3]


def test_setitem_below_a_group_of_the_users_at_the_root():
    traj = mp.Trajectory('si')
    traj['r_1'] = mp.NNGroupNode('')
    with pytest.raises(AttributeError):
        traj['r_1.new'] = mp.Result('', 5)              # (an empty name is no name)
    traj['r_1.new'] = mp.Result('new', 5)
    assert traj.run_00000001.new == 5
    assert traj.f_get('run_00000001.new').v_full_name == 'run_00000001.new'


def test_f_remove_of_the_trajectory_empties_it_and_keeps_the_branches():
    traj = mp.Trajectory('rm')
    traj.f_add_parameter('g.x', 1)
    traj.f_add_result('r', 2)
    traj.f_add_link('l', traj.f_get('g'))
    traj['mine'] = mp.NNGroupNode('mine')
    with pytest.raises(ValueError, match='root cannot be removed'):
        traj.f_remove(recursive=False)
    assert not traj.f_is_empty()
    traj.f_remove()
    assert traj.f_is_empty() and 'mine' not in traj and 'l' not in traj
    assert traj.parameters.f_get_children() == {} and traj.results.f_get_children() == {}
    traj.f_add_parameter('x', 3)                        # the tree works on
    assert traj.x == 3


def link_in_run_job(traj):
    traj.f_add_result('lll.res32', traj.x * 2)
    traj.f_add_link('res.runs.crun.ff', traj.f_get('results.runs.crun.lll.res32'))
    traj.f_add_link('results.runs.crun.to_x', traj.f_get('parameters.x'))


@pytest.mark.timeout(240)
@pytest.mark.parametrize('mode', [None, 'QUEUE', 'LOCK', 'LOCAL'])
def test_links_added_in_a_run_are_stored_and_loaded(file_backend, tmp_path, mode):
    filename = path_for(file_backend, tmp_path)
    kwargs = dict(multiproc=True, ncores=2, wrap_mode=mode) if mode else {}
    env, traj = sweep(file_backend, filename, link_in_run_job, n=3, **kwargs)
    got = load(filename, name='traj', load_all=mp.LOAD_DATA)
    for idx in range(3):
        group = got.f_get('results.runs.' + run_name(idx))
        assert group.f_get('ff').v_full_name == 'results.runs.%s.lll.res32' % run_name(idx)
        assert group.ff == 2 * idx and group.f_get('to_x') is got.f_get('parameters.x')
        assert 'ff' in group.f_get_links()


def test_run_records_of_older_journals_without_links_still_load(file_backend, tmp_path):
    filename = path_for(file_backend, tmp_path)
    traj = mp.Trajectory('traj', storage_service=service(file_backend, filename))
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2]})
    traj.f_store(only_init=True)
    now = time.time()
    journal = mp._Journal(filename + '.journal')
    journal.append(('run', 'traj', 0, (now, now, 1, '', ''),            # (5 fields: old)
                    [('results.runs.run_00000000.z', 'Result', '', {'z': 5}, None)]))
    journal.append(tuple(mp._RunRecord('run', 'traj', 1, (now, now, 1, '', ''),
                                       [('results.runs.run_00000001.z', 'Result', '',
                                         {'z': 6}, None)],
                                       [('results.runs.run_00000001.l',
                                         'results.runs.run_00000001.z')])))
    journal.close()
    for _ in range(2):  # read from the journal, then from the file after a checkpoint
        got = load(filename, name='traj', load_all=mp.LOAD_DATA)
        assert got.f_get_from_runs('z', fast_access=True, use_indices=True) == {0: 5, 1: 6}
        assert got.f_get('results.runs.run_00000001').l == 6
        got.f_store()


def hello_run(idx):
    return 'hello_%d' % idx


def huhu_set(idx):
    return 'huhu_%d' % idx


def z_in_set_job(traj):
    traj.f_add_result('$set.$.z', traj.x * 2)


def test_pypets_run_naming_functions_name_the_runs_stored_by_index(tmp_path):
    filename = str(tmp_path / 'w.pkl')
    names = {('$', 'crun'): hello_run, ('$set', 'crunset'): huhu_set}
    env = mp.Environment(trajectory='w', add_time=False, filename=filename,
                         storage_service=mp.PickleStorageService, log_config=None,
                         wildcard_functions=names, clean_up_runs=False)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1)
    traj.f_explore({'x': [1, 2, 3]})
    env.f_run(z_in_set_job)
    assert traj.f_wildcard('$', 2) == run_name(2)       # the tree keeps the index names
    for t in (traj, load(filename, name='w', load_all=mp.LOAD_DATA,
                         wildcard_functions=names)):
        z = t.f_get('results.runs.hello_2.z')
        assert z.v_full_name == 'results.runs.run_set_00000.run_00000002.z'  # (by index)
        assert t.res.runs.hello_1.z == 4 and t.huhu_0.hello_0.z == 2
        assert t.f_get_from_runs('z', fast_access=True) == {
            run_name(i): 2 * (i + 1) for i in range(3)}
    with pytest.raises(mp.ConfigurationError, match='a node name of its own'):
        mp.Trajectory('bad', wildcard_functions={('$', 'crun'): lambda i: 'same'})
    with pytest.raises(mp.ConfigurationError, match='mixes built-in wildcards'):
        mp.Trajectory('bad', wildcard_functions={('$', 'mine'): lambda i: 'm%d' % i})


def gg_job(traj):
    traj.f_add_result('z', traj.p * 10)
    traj.f_add_link('results.$', traj.f_get('parameters.p'))    # a link named by its run
    traj.f_add_link('results.runs.crun.to_z', traj.f_get('results.runs.crun.z'))


@needs_tables
def test_merge_renumbers_run_links_and_spreads_the_others_run_all_values(tmp_path):
    filename = str(tmp_path / 'm.hdf5')
    trajs = []
    for name, value, points in (('a', 42, [1, 2]), ('b', 44, [3, 4, 5])):
        env = mp.Environment(trajectory=name, add_time=False, filename=filename,
                             log_config=None)
        traj = env.v_trajectory
        traj.f_add_parameter('p', 1)
        traj.f_explore({'p': points})
        traj.f_add_derived_parameter('test.$.gg', value)     # run_ALL: one for all runs
        env.f_run(gg_job)
        trajs.append(traj)
    a, b = trajs
    a.f_merge(b, backup=False)
    a.f_load(load_data=mp.LOAD_DATA)
    for idx, (p, gg) in enumerate([(1, 42), (2, 42), (3, 44), (4, 44), (5, 44)]):
        a.v_idx = idx
        assert a['test.crun.gg'] == gg                     # pypet: the other's run_ALL
        group = a.f_get('results.runs.' + run_name(idx))  # value in the merged runs
        assert group.to_z == 10 * p and group.f_get('to_z') is group.f_get('z')
        assert a.f_get('results').f_get_links()[run_name(idx)] is a.f_get('parameters.p')
    a.v_idx = -1
    backup = a.f_backup(str(tmp_path / 'backup.hdf5'))
    again = mp.load_trajectory(index=-1, filename=backup, load_all=mp.LOAD_DATA)
    assert again.v_name == 'a' and len(again) == 5          # only this trajectory
    assert again.f_get_from_runs('z', fast_access=True, use_indices=True) == {
        i: 10 * (i + 1) for i in range(5)}
    with pytest.raises(mp.ConfigurationError, match='exists'):
        a.f_backup(backup)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('backend', FILE_BACKENDS)
def test_multiproc_context_leaves_the_data_file_written(backend, tmp_path):
    """pypet's example 16: processes store into the file and nothing stores the trajectory
    after them; pypet leaves its HDF5 file written, so the context folds the journal."""
    filename = path_for(backend, tmp_path)
    traj = mp.Trajectory('ctx', add_time=False, filename=filename,
                         storage_service=CLASSES[backend])
    traj.f_add_parameter('x', 1)
    traj.f_add_result('last', 0)
    traj.f_explore({'x': [1, 2, 3]})
    with mp.MultiprocContext(trajectory=traj, wrap_mode='LOCK'):
        with multiprocessing.get_context(PAR_START_METHODS[0]).Pool(2) as pool:
            pool.map(context_store_name, list(traj.f_iter_runs(yields='copy')))
    assert os.path.exists(filename) and not os.path.exists(filename + '.journal')
    traj.results.f_load(load_data=3)
    assert traj.res.last in (1, 2, 3)


def trial_job(traj):
    traj.f_add_result('sim.$.w', traj.x)                  # a run's node outside runs
    traj.f_add_result('seen', sorted(n for n in traj.f_to_dict() if 'sim.run_' in n))


def test_merge_by_a_short_trial_name_and_runs_that_see_no_earlier_run(tmp_path):
    parts = []
    for name, points in (('a', [1, 2]), ('b', [1, 2, 3])):
        env = mp.Environment(trajectory=name, add_time=False, log_config=None,
                             filename=str(tmp_path / (name + '.pkl')),
                             storage_service=mp.PickleStorageService)
        traj = env.v_trajectory
        traj.f_add_parameter('x', 0)
        traj.f_add_parameter('setup.trial', 0)
        traj.f_explore({'x': points})
        env.f_run(trial_job)
        parts.append(traj)
    a, b = parts
    assert not a.f_contains('results.sim.run_00000001')     # cleaned up with its run
    a.f_merge(b, trial_parameter='trial', backup=False)   # (a short name, as pypet's)
    got = load(str(tmp_path / 'a.pkl'), name='a', load_all=mp.LOAD_DATA)
    assert got.f_get('trial').f_get_range() == [0, 0, 1, 1, 1]
    assert got.f_get_from_runs('seen', fast_access=True, use_indices=True) == {
        i: ['results.sim.%s.w' % run_name(j)] for i, j in enumerate([0, 1, 0, 1, 2])}
    assert got.f_get_from_runs('w', fast_access=True, use_indices=True) == {
        0: 1, 1: 2, 2: 1, 3: 2, 4: 3}
    comments = [got.f_get('results.runs.%s.seen' % run_name(i)).v_comment for i in range(5)]
    assert comments[1:] == [''] * 4                    # b's first run's comment: purged
    again = mp.load_trajectory(name='b', filename=str(tmp_path / 'b.pkl'))
    got.f_merge(again, remove_duplicates=True, backup=False)
    assert len(got) == 6                                # b's (x=3, trial=0) was new
    with pytest.raises(ValueError, match='nothing to merge'):
        got.f_merge(again, remove_duplicates=True, backup=False)


# ---------------------------------------------------------------------------------------------
# pypet's examples: frames in pypet files, names, assignment
# ---------------------------------------------------------------------------------------------
@needs_pypet_fixtures
@pytest.mark.skipif(not HAVE_PANDAS, reason='pandas is not installed')
def test_pypet_file_pandas_results_load_as_frames(fixture_file):
    """DataFrames and Series pypet stored in results (pandas' own HDF5 layout) load as
    pandas objects; an object-dtype frame, pickled by pandas, only with allow_pickle=True
    (before: every pandas item was left out with a warning)."""
    import pandas as pd
    path = fixture_file('pypet07_frames.hdf5')
    with pytest.warns(UserWarning, match=r"results\.tables\['objects'\].*allow_pickle"):
        traj = mp.load_trajectory(name='frames', filename=path, load_all=2)
    got = traj.results.tables
    pd.testing.assert_frame_equal(got.numbers, pd.DataFrame({'f': [1.5, 2.5], 'i': [3, 4]},
                                                            index=[0.5, 1.5]))
    pd.testing.assert_series_equal(got.series, pd.Series([1.0, 2.0, 3.0],
                                                         index=['p', 'q', 'r']))
    assert 'objects' not in got
    runs = traj.f_get_from_runs('s', fast_access=True)
    assert [list(s.values) for s in runs.values()] == [[1.0, 2.0], [2.0, 4.0]]
    assert [list(s.index) for s in runs.values()] == [['a', 'b'], ['a', 'b']]
    traj = mp.load_trajectory(name='frames', filename=path, load_all=2, allow_pickle=True)
    objects = traj.results.tables.objects
    assert list(objects.columns) == [5.0, 7.5] and list(objects.index) == [0.0, 0.1]
    assert objects.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_plain_value_to_an_unknown_name_raises_attribute_error():
    """pypet's tutorial shows `traj.par.simulation.dt = 0.1, 'comment'` for a new
    parameter; pypet 0.7 finds no such node and raises an AttributeError: so does
    minipypet (a NoSuchNodeError, naming the fix), and nothing is added."""
    traj = mp.Trajectory('plain', add_time=False)
    traj.f_add_parameter('simulation.dt', 0.1)
    with pytest.raises(AttributeError, match=r"simulation\.dt3.*f_add_parameter\('dt3'"):
        traj.par.simulation.dt3 = 0.1, 'The step size'
    with pytest.raises(mp.NoSuchNodeError):
        traj.par.simulation = 1.0  # (a group: no value to set either)
    traj.par.simulation.dt = 0.2  # (an existing parameter takes the value, as pypet's)
    assert 'dt3' not in traj and traj.dt == 0.2


def test_a_dotted_name_resolves_by_its_rest_where_its_first_part_is_ambiguous():
    traj = mp.Trajectory('amb', add_time=False)
    traj.f_add_result('runs.run_00000001.rrr', 1)
    traj.f_add_derived_parameter('runs.run_00000001.other', 2)
    assert traj.f_get('run_00000001.rrr').v_full_name == 'results.runs.run_00000001.rrr'
    with pytest.raises(mp.NotUniqueNodeError, match='is in none'):
        traj.f_get('run_00000001.missing')
    with pytest.raises(mp.NotUniqueNodeError, match='match at the same depth'):
        traj.f_get('run_00000001')


# =============================================================================================
# Working with results - the runs table
# =============================================================================================
def table_job(traj):
    if traj.x == 3 and traj.y == 'b':
        raise ValueError('boom at x=3 y=b')
    traj.f_add_result('z', traj.x * 10, comment='ten times x')
    traj.f_add_result('label', '%s%d' % (traj.y, traj.x))
    traj.f_add_result('stats.mean', traj.x / 2.0)
    traj.f_add_result('pair', lo=traj.x - 1, hi=traj.x + 1)
    traj.f_add_result('series', [traj.x] * 5)  # not a scalar: not in the table
    traj.f_add_derived_parameter('d', traj.x + 100)
    return traj.x


POINTS = [(x, y) for x in (1, 2, 3) for y in ('a', 'b')]


def make_table_file(backend, tmp_path):
    env = env_for(backend, tmp_path, 'table', record_failed_runs=True)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0, comment='first')
    traj.f_add_parameter('y', 'a')
    traj.f_add_parameter('fixed', 0.5)
    traj.f_explore(mp.cartesian_product({'x': [1, 2, 3], 'y': ['a', 'b']}))
    start = time.time()
    env.f_run(table_job)
    return traj, str(tmp_path / ('table' + PROV_SUFFIX[backend])), start


def check_table(rows, start):
    assert [r['idx'] for r in rows] == list(range(6))
    assert [r['name'] for r in rows] == ['run_%08d' % i for i in range(6)]
    assert [(r['x'], r['y']) for r in rows] == POINTS
    for r, (x, y) in zip(rows, POINTS):
        ok = not (x == 3 and y == 'b')
        assert bool(r['completed']) is ok
        assert r['failed'] is (not ok)
        if ok:
            assert r['error'] in ('', None)
            assert r['z'] == 10 * x and r['label'] == '%s%d' % (y, x)
            assert r['stats.mean'] == x / 2.0
            assert (r['pair.lo'], r['pair.hi']) == (x - 1, x + 1)
            assert r['dpar.d'] == x + 100
        else:
            assert 'ValueError' in r['error'] and 'boom at x=3 y=b' in r['error']
            assert r.get('z') in (None, '')
        assert 0 <= r['runtime'] < 30
        assert PROV_TIME_RE.match(r['finish_time'])
        assert r['finish_time'] >= datetime.datetime.fromtimestamp(int(start)).strftime(
            '%Y_%m_%d_%Hh%Mm%Ss')
        assert 'series' not in r and 'fixed' not in r


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_runs_table_against_known_values(tmp_path, backend):
    traj, filename, start = make_table_file(backend, tmp_path)
    check_table(mp.runs_table(traj), start)
    check_table(mp.runs_table(filename), start)
    check_table(mp.runs_table(filename, name='table'), start)
    check_table(mp.runs_table(filename, index=-1), start)
    loaded = mp.load_trajectory(name='table', filename=filename)  # results as skeleton only
    check_table(mp.runs_table(loaded), start)


def named_like_run_information_job(traj):
    traj.f_add_result('error', traj.x / 10.0, comment='a fit error')
    traj.f_add_result('runtime', traj.x * 5.0)


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_runs_table_keeps_every_value_in_a_column_of_its_own(tmp_path, backend):
    env = env_for(backend, tmp_path, 'clash')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0.0)
    traj.f_add_parameter('name', 'a')
    traj.f_explore({'x': [1.0, 2.0], 'name': ['model_a', 'model_b']})
    env.f_run(named_like_run_information_job)
    rows = mp.runs_table(str(tmp_path / ('clash' + PROV_SUFFIX[backend])))
    assert [r['name'] for r in rows] == ['run_00000000', 'run_00000001']
    assert [r['parameters.name'] for r in rows] == ['model_a', 'model_b']
    assert [r['error'] for r in rows] == ['', ''] and [r['failed'] for r in rows] == [False] * 2
    assert [r['results.runs.error'] for r in rows] == [0.1, 0.2]
    assert [r['results.runs.runtime'] for r in rows] == [5.0, 10.0]
    assert all(0 <= r['runtime'] < 30 for r in rows)


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_runs_dataframe(tmp_path, backend):
    pandas = pytest.importorskip('pandas')
    traj, filename, start = make_table_file(backend, tmp_path)
    df = mp.runs_dataframe(filename)
    assert isinstance(df, pandas.DataFrame)
    assert list(df.index) == list(range(6))
    assert list(df['x']) == [p[0] for p in POINTS]
    assert list(df['y']) == [p[1] for p in POINTS]
    assert list(df['z'].dropna()) == [10, 10, 20, 20, 30]
    assert list(df['completed'].astype(bool)) == [True] * 5 + [False]
    assert mp.runs_dataframe(traj).shape == df.shape


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_runs_table_without_pandas(tmp_path, backend):
    _, filename, _ = make_table_file(backend, tmp_path)
    code = "import sys\nsys.modules['pandas'] = None\n" + IMPORT + textwrap.dedent('''
        rows = mp.runs_table(sys.argv[1])
        print('z', [r.get('z') for r in rows])
        try:
            mp.runs_dataframe(sys.argv[1])
        except mp.MissingDependencyError as exc:
            print('missing', 'pip install' in str(exc), isinstance(exc, ImportError))
        print('pandas imported', sys.modules.get('pandas') is not None)
    ''')
    out = prov_run_python(code, filename)
    assert out.returncode == 0, out.stderr
    assert "z [10, 10, 20, 20, 30, None]" in out.stdout
    assert 'missing True True' in out.stdout
    assert 'pandas imported False' in out.stdout


@pytest.mark.parametrize('backend', PROV_BACKENDS)
def test_runs_csv(tmp_path, backend):
    traj, filename, _ = make_table_file(backend, tmp_path)
    target = str(tmp_path / 'runs.csv')
    rows = mp.runs_csv(filename, target)
    with open(target, newline='') as f:
        parsed = list(csv.DictReader(f))
    assert len(parsed) == len(rows) == 6
    assert [p['x'] for p in parsed] == ['1', '1', '2', '2', '3', '3']
    assert [p['y'] for p in parsed] == ['a', 'b'] * 3
    assert [p['z'] for p in parsed] == ['10', '10', '20', '20', '30', '']
    assert 'boom' in parsed[5]['error']
    buffer = io.StringIO()
    mp.runs_csv(traj, buffer)
    assert buffer.getvalue().splitlines()[0] == open(target).read().splitlines()[0]


# =============================================================================================
# Command line - python -m minipypet
# =============================================================================================
@pytest.fixture(scope='module', params=PROV_BACKENDS)
def cli_file(request, tmp_path_factory, jobs):
    """A file with two trajectories; the second has a failed run, comments, a git commit
    and a PickleResult/PickleParameter whose unpickling would create TRAP."""
    backend = request.param
    folder = tmp_path_factory.mktemp('cli_' + backend)
    filename = str(folder / ('both' + PROV_SUFFIX[backend]))
    trap = str(folder / 'UNPICKLED_TRAP')
    env = mp.Environment('first_traj', add_time=False, comment='the early one',
                         storage_service=backend, filename=filename, log_config=None,
                         report_progress=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': [7, 8]})
    env.f_run(jobs.times_ten)
    repo = None
    if GIT is not None:
        repo = make_repo(folder / 'repo')
        (repo / 'model.py').write_text('A = 42\n')
    env = mp.Environment('cli_traj', add_time=False, comment='made for the CLI test',
                         storage_service=backend, filename=filename, log_config=None,
                         report_progress=False, record_failed_runs=True,
                         git_repository=str(repo) if repo else None, git_message='cli')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1, comment='the explored one')
    traj.f_add_parameter('fixed', 0.25)
    traj.f_add_parameter(mp.PickleParameter, 'trap_param', jobs.Trap(trap))
    traj.f_add_result(mp.PickleResult, 'trap_result', jobs.Trap(trap), comment='a trap')

    def job(t):
        if t.x == 3:
            raise ValueError('three is bad')
        return jobs.times_ten(t)
    traj.f_explore({'x': [1, 2, 3]})
    env.f_run(job)
    assert not os.path.exists(trap)
    return {'backend': backend, 'file': filename, 'trap': trap, 'env': env.v_name,
            'sha': env.v_hexsha, 'git': repo is not None, 'folder': str(folder)}


def run_cli(cli_file, *args):
    importlib.import_module('t4_helpers')  # (the trap's class: an unpickling would fire it)
    out = cli(*args)
    assert not os.path.exists(cli_file['trap']), 'the command line unpickled: %r' % (args,)
    return out


def test_cli_list(cli_file):
    out = run_cli(cli_file, 'list', cli_file['file'])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ['trajectory', 'runs', 'completed']
    first = [l for l in lines if l.startswith('first_traj')]
    second = [l for l in lines if l.startswith('cli_traj')]
    assert len(first) == len(second) == 1
    assert first[0].split()[1:3] == ['2', '2'] and 'the early one' in first[0]
    assert second[0].split()[1:3] == ['3', '2'] and 'made for the CLI test' in second[0]


def test_cli_show(cli_file):
    out = run_cli(cli_file, 'show', cli_file['file'])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith('trajectory cli_traj')
    assert 'comment: made for the CLI test' in text
    assert 'runs: 3, completed: 2, failed: 1' in text
    assert 'parameters.x = [1, 2, 3]' in text
    assert re.search(r'parameters\.fixed\s+\[Parameter\] 0\.25', text)
    assert '# the explored one' in text
    assert re.search(r'results\.trap_result\s+\[PickleResult\] \(pickled, not unpickled\)'
                     r'\s+# a trap', text)
    assert re.search(r'results\.runs\.\$\.z\s+\[Result\] in 2 runs\s+# ten times x', text)
    assert 'config.' not in text
    out = run_cli(cli_file, 'show', cli_file['file'], '--config')
    assert out.returncode == 0, out.stderr
    assert 'config.environment.%s.hexsha' % cli_file['env'] in out.stdout
    out = run_cli(cli_file, 'show', cli_file['file'], '--name', 'first_traj')
    assert out.stdout.startswith('trajectory first_traj')
    assert 'runs: 2, completed: 2, failed: 0, pending: 0' in out.stdout
    out = run_cli(cli_file, 'show', cli_file['file'], '--index', '0')
    assert out.stdout.startswith('trajectory first_traj')
    # the failed run is failed, not also pending (2 + 1 + 1 would be 4 of 3 runs)
    assert 'runs: 3, completed: 2, failed: 1, pending: 0' in text


def test_cli_runs_table_csv_json(cli_file, tmp_path):
    out = run_cli(cli_file, 'runs', cli_file['file'])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    assert header[:3] == ['idx', 'name', 'x'] and 'z' in header and 'completed' in header
    assert len(lines) == 4
    assert lines[1].split()[:3] == ['0', 'run_00000000', '1']
    assert lines[2].split()[-1] == '20'

    out = run_cli(cli_file, 'runs', cli_file['file'], '--format', 'csv')
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r['x'] for r in rows] == ['1', '2', '3']
    assert [r['z'] for r in rows] == ['10', '20', '']
    assert [r['completed'] for r in rows] == ['1', '1', '0']
    assert 'three is bad' in rows[2]['error']

    out = run_cli(cli_file, 'runs', cli_file['file'], '--format', 'json', '--name',
                  'cli_traj')
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r['idx'], r['x'], r.get('z')) for r in rows] == [(0, 1, 10), (1, 2, 20),
                                                               (2, 3, None)]
    assert rows[2]['failed'] is True

    target = tmp_path / 'out.csv'
    out = run_cli(cli_file, 'runs', cli_file['file'], '--format', 'csv', '--output', target,
                  '--name', 'first_traj')
    assert out.returncode == 0 and out.stdout == ''
    with open(str(target), newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['x'], r['z']) for r in rows] == [('7', '70'), ('8', '80')]
    target = tmp_path / 'out.json'
    out = run_cli(cli_file, 'runs', cli_file['file'], '--format', 'json', '-o', target)
    assert out.returncode == 0
    assert len(json.loads(target.read_text())) == 3


def test_cli_provenance(cli_file):
    out = run_cli(cli_file, 'provenance', cli_file['file'])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith('environments of cli_traj:')
    assert '  %s' % cli_file['env'] in text
    assert 'hexsha = %s' % cli_file['sha'] in text
    assert 'versions.minipypet = %s' % mp.__version__ in text
    assert 'trajectory.name = cli_traj' in text
    assert 'runtime = ' in text
    if cli_file['git']:
        assert 'git commits:\n  commit_%s_' % cli_file['sha'][:7] in text
        assert 'message = cli -- Trajectory: `cli_traj`' in text
    else:
        assert 'git commits: none recorded' in text


def test_cli_errors(cli_file, tmp_path):
    out = run_cli(cli_file, 'show', str(tmp_path / 'nope.hdf5'))
    assert out.returncode == 1
    assert out.stderr.startswith('minipypet: error:') and 'nope' in out.stderr
    out = run_cli(cli_file, 'show', cli_file['file'], '--name', 'no_such_traj')
    assert out.returncode == 1 and 'no_such_traj' in out.stderr
    out = run_cli(cli_file, 'runs', cli_file['file'], '--format', 'xml')
    assert out.returncode == 2 and 'invalid choice' in out.stderr
    out = run_cli(cli_file, 'run', str(tmp_path / 'missing.py'))
    assert out.returncode == 2 and out.stderr.startswith('minipypet: error: no script')
    assert 'Traceback' not in out.stderr
    target = tmp_path / 'table.txt'                  # the table format honours -o too
    out = run_cli(cli_file, 'runs', cli_file['file'], '-o', target)
    assert out.returncode == 0 and out.stdout == ''
    assert target.read_text().splitlines()[0].split()[:3] == ['idx', 'name', 'x']


def test_cli_help_of_every_command():
    out = cli('--help')
    assert out.returncode == 0
    for command in ('list', 'show', 'runs', 'provenance', 'run'):
        assert command in out.stdout
    for command, words in (('list', ['file']), ('show', ['--config', '--name', '--index']),
                           ('runs', ['--format', '--output', 'table,csv,json']),
                           ('provenance', ['--name']), ('run', ['script'])):
        out = cli(command, '--help')
        assert out.returncode == 0, (command, out.stderr)
        assert out.stdout.startswith('usage: minipypet %s' % command)
        for word in words:
            assert word in out.stdout, (command, word)
    out = cli()
    assert out.returncode != 0 and 'usage' in out.stderr


def test_the_trap_really_fires_when_unpickled(tmp_path, jobs):
    """Proof that the CLI tests above would notice an unpickling."""
    path = str(tmp_path / 'fired')
    pickle.loads(pickle.dumps(jobs.Trap(path)))
    assert os.path.exists(path)


def test_cli_on_a_pickle_file_without_pytables_numpy_pandas(tmp_path, helpers_dir):
    filename = str(tmp_path / 'bare.pkl')
    env = mp.Environment('bare', add_time=False, storage_service='pickle', filename=filename,
                         log_config=None, report_progress=False)
    env.v_trajectory.f_add_parameter('x', 1)
    env.v_trajectory.f_explore({'x': [4, 5]})
    env.f_run(importlib.import_module('t4_helpers').times_ten)
    code = block('tables', 'numpy', 'pandas', 'git') + textwrap.dedent('''
        import runpy
        sys.argv = ['minipypet'] + sys.argv[2:]
        try:
            runpy.run_module(%r, run_name='__main__', alter_sys=True)
        except SystemExit as exc:
            print('exit', exc.code)
        print('tables loaded', 'tables' in sys.modules)
    ''' % MOD)
    for args, expect in ((['list'], 'bare'), (['show'], 'parameters.x = [4, 5]'),
                         (['runs', '--format', 'csv'], '1,run_00000001,5'),
                         (['provenance'], 'environments of bare')):
        out = prov_run_python(code, 'x', args[0], filename, *args[1:], helpers_dir=helpers_dir)
        assert out.returncode == 0, out.stderr
        assert expect in out.stdout, (args, out.stdout, out.stderr)
        assert 'exit 0' in out.stdout and 'tables loaded False' in out.stdout


def first_hour_file(tmp_path, n=None):
    """A pickle file with a 3 x 2 x 2 sweep of z = x * y + k (or n runs of z = x)."""
    filename = str(tmp_path / 'sweep.pkl')
    env = mp.Environment(trajectory='sweep', filename=filename, add_time=False,
                         storage_service=mp.PickleStorageService, log_config=None)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1.0)
    traj.f_add_parameter('y', 1)
    traj.f_add_parameter('k', 0.0)
    if n:
        traj.f_explore({'x': [float(i) for i in range(n)]})
    else:
        traj.f_explore(mp.cartesian_product({'x': [1.0, 2.0, 3.0], 'y': [6, 7],
                                             'k': [0.0, 1.0]}))
    env.f_run(job_xyk)
    return filename


def job_xyk(traj):
    traj.f_add_result('z', traj.x * traj.y + traj.k)


def test_cli_version():
    out = cli('--version')
    assert out.returncode == 0 and out.stdout.strip() == 'minipypet %s' % mp.__version__


def test_cli_runs_table_is_aligned(tmp_path):
    out = cli('runs', first_hour_file(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 13
    header = lines[0]
    for column in ('name', 'finish_time'):   # left-aligned columns start at the same place
        start = header.index(column)
        assert all(line[start - 2:start] == '  ' and line[start] != ' ' for line in lines[1:])
    end = header.index(' z') + 2              # numbers end where their header ends
    assert all(line[end - 1] != ' ' and len(line) >= end for line in lines[1:]), lines
    assert lines[1].split()[:5] == ['0', 'run_00000000', '1.0', '6', '0.0']


@posix_only
def test_cli_into_head_has_no_broken_pipe(tmp_path):
    filename = first_hour_file(tmp_path, n=3000)
    out = subprocess.run('"%s" -m %s runs "%s" | head -1' % (sys.executable, MOD, filename),
                         shell=True, capture_output=True, text=True, timeout=120,
                         env=sub_env())
    assert out.stdout.split()[:2] == ['idx', 'name'] and out.stdout.count('\n') == 1
    assert 'Broken pipe' not in out.stderr and 'Errno' not in out.stderr, out.stderr


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n'
    return struct.unpack('>II', head[16:24])


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason='matplotlib is not installed')
@pytest.mark.parametrize('extra', [[], ['--hue', 'y'], ['--hue', 'y', '--heatmap']],
                         ids=['line', 'hue', 'heatmap'])
def test_cli_plot_writes_a_png(tmp_path, extra):
    filename = first_hour_file(tmp_path)
    target = str(tmp_path / 'out.png')
    out = cli('plot', filename, 'z', '--x', 'x', *extra, '-o', target)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'wrote %s' % target
    assert png_size(target) == (640, 480)
    assert os.path.getsize(target) > 5000
    bad = cli('plot', filename, 'zz', '--x', 'x', '-o', target)
    assert bad.returncode == 1 and "no column 'zz'" in bad.stderr and 'did you mean z' in \
        bad.stderr


def test_cli_plot_without_matplotlib_names_the_package(tmp_path):
    filename = first_hour_file(tmp_path)
    code = "import sys\nsys.modules['matplotlib'] = None\n" + IMPORT + \
        "sys.exit(mp.main(['plot', sys.argv[1], 'z', '--x', 'x']))\n"
    out = prov_run_python(code, filename, cwd=str(tmp_path))
    assert out.returncode == 1
    assert '`pip install matplotlib`' in out.stderr


# -- parallel sweeps started without the __main__ guard ---------------------------------------
def test_python_m_minipypet_version():
    out = subprocess.run([sys.executable, '-m', MOD, '--version'], capture_output=True,
                         text=True, timeout=60, env=sub_env())
    assert out.returncode == 0 and out.stdout == 'minipypet %s\n' % mp.__version__


# =============================================================================================
# Public names: docstrings and annotations
# =============================================================================================
def public_callables():
    """(qualified name, object) of every public class, function, method and property."""
    found = {}
    for name in mp.__all__ + ['main', 'Annotations']:
        obj = getattr(mp, name)
        if inspect.isclass(obj) and obj.__module__ == mp.__name__:
            found.setdefault(obj, name)
            for attr in dir(obj):
                if attr.startswith('_') and attr != '__init__':
                    continue
                val = inspect.getattr_static(obj, attr)
                if isinstance(val, (staticmethod, classmethod)):
                    val = val.__func__
                if inspect.isfunction(val) and getattr(val, '__module__', '') == mp.__name__ \
                        or isinstance(val, property) and val.fget is not None:
                    found.setdefault(val, '%s.%s' % (name, attr))
        elif inspect.isfunction(obj):
            found.setdefault(obj, name)
    return [(name, obj) for obj, name in found.items()]


def test_every_public_class_function_method_and_property_has_a_docstring():
    missing = [name for name, obj in public_callables()
               if not (obj.__doc__ or '').strip() and not name.endswith('.__init__')]
    assert missing == []


def test_every_environment_argument_is_described():
    doc = mp.Environment.__doc__
    args = doc[doc.index('Args:'):]
    params = [p for p in inspect.signature(mp.Environment.__init__).parameters if p != 'self']
    assert len(params) >= 70
    undocumented = [p for p in params if not re.search(r'\b%s\b[^\n]*:' % p, args)]
    assert undocumented == []


def test_public_signatures_are_annotated():
    skip = ('StorageService', 'LazyStorageService', 'PickleStorageService', 'HDF5StorageService')
    bare = []
    for name, obj in public_callables():
        if not inspect.isfunction(obj) or name.startswith(skip):
            continue
        sig = inspect.signature(obj)
        params = [p for p in sig.parameters.values() if p.name not in ('self', 'cls')]
        if sig.return_annotation is inspect.Signature.empty or any(
                p.annotation is inspect.Parameter.empty for p in params):
            bare.append(name)
    assert bare == []


# =============================================================================================
# Examples and the README
# =============================================================================================
EXAMPLES = {
    '01_first_steps.py': ['run_00000005: x=3.0, y=7.0, z=21.0', 'with 6 runs'],
    '02_natural_naming.py': ['traj.ncars (a shortcut)       = 42', 'NotUniqueNodeError'],
    '03_lazy_and_results.py': ['run_00000005 final=8.0', 'runs with rate 2.0 and n > 3: [5]'],
    '04_parallel_sweep.py': ['samples=40000: mean error', '12 runs done in parallel'],
    '05_resume_after_crash.py': ['died with exit code 1', 'before the crash: [0, 1, 2, 3, 4, 5]',
                                 'after the resume: [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16), '
                                 '(5, 25), (6, 36), (7, 49), (8, 64), (9, 81)]'],
    '06_debugging_with_lazy_storage.py': ['runs that returned: [0, 2, 3, 5]',
                                          'run 1 failed: ZeroDivisionError',
                                          'ratio = 0.5  [Result]  # a / (b - 2)',
                                          'replayed: ZeroDivisionError'],
    '07_adaptive_search.py': ['best after 21 runs: x=2.6172, y=1.6236'],
    '08_big_arrays.py': ['stored 28.8 MB of arrays in 6 runs', 'empty, loaded as a skeleton',
                         'ndarray float64 (400, 2000)', 'rate=0.4 steps=400: width 89 cells'],
    '09_load_and_plot.py': ['39 runs (39 completed)', 'largest amplitude after t=0: 0.835',
                            'plotted amplitude against t into amplitude.png'],
    '10_dask_cluster.py': ['40 runs on the cluster; n=27 takes the most steps: 111'],
    '11_pypet_script.py': ['ran 12 runs; z of the last run: 32.0', 'pypet here is minipypet'],
}
# what an example that needs an extra says instead, when it is missing
EXAMPLES_WITHOUT = {
    '08_big_arrays.py': ('numpy', ['this example needs numpy: pip install numpy']),
    '09_load_and_plot.py': ('matplotlib', ['(no plot: pip install matplotlib)']),
    '10_dask_cluster.py': ('distributed', ['this example needs dask.distributed']),
}


@pytest.mark.parametrize('stdlib_only', [False, True], ids=['as-installed', 'stdlib-only'])
@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_example_runs(name, stdlib_only, tmp_path):
    path = os.path.join(REPO_DIR, 'examples', name)
    env = dict(os.environ)
    paths = [MODULE_DIR]
    if stdlib_only:  # shadow the optional packages with modules that refuse to import
        blocker = tmp_path / 'blocked'
        blocker.mkdir()
        for module in ('numpy', 'tables', 'git', 'pandas', 'dask', 'matplotlib'):
            (blocker / (module + '.py')).write_text('raise ImportError("blocked")\n')
        paths.insert(0, str(blocker))
    env['PYTHONPATH'] = os.pathsep.join(paths + [env.get('PYTHONPATH', '')])
    work = tmp_path / 'work'
    work.mkdir()
    command = [sys.executable, path]
    if name == '11_pypet_script.py':  # an unchanged pypet script, as its docstring runs it
        command[1:1] = ['-m', MOD, 'run']
    proc = subprocess.run(command, cwd=str(work), env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expect = EXAMPLES[name]
    if name in EXAMPLES_WITHOUT and (stdlib_only or importlib.util.find_spec(
            EXAMPLES_WITHOUT[name][0]) is None):
        expect = EXAMPLES_WITHOUT[name][1]
    for expected in expect:
        assert expected in proc.stdout, proc.stdout
    assert not (work / 'hdf5').exists()             # the example cleans up after itself


def test_readme_blocks_run_verbatim_in_order(tmp_path):
    """Every python block runs as written, one after the other in one interpreter (blocks
    for a cluster are compiled only, blocks for a missing extra are compiled only); then
    the command lines of the `python -m minipypet` block run against the files made."""
    blocks = readme_blocks()
    runner = [FIRST_HOUR_PRELUDE, 'import __main__\nCOMPILE_ONLY = []\n']
    n = 0
    for lang, code in blocks:
        if lang != 'python':
            continue
        compile(code, 'README block %d' % n, 'exec')  # every block: valid Python
        needs = [m for m, key in (('h5py', 'h5py'), ('pandas', 'runs_dataframe'),
                                  ('tables', 'h5py'))
                 if key in code and importlib.util.find_spec(m) is None]
        if 'dask_jobqueue' in code or 'mpi4py' in code or needs:
            runner.append('COMPILE_ONLY.append(%d)\n' % n)
        else:
            runner.append('print("block %d", flush=True)\nexec(compile(%r, "README block %d", '
                          '"exec"), __main__.__dict__)\n' % (n, code, n))
        n += 1
    assert n >= 10
    script = tmp_path / 'readme.py'
    script.write_text(''.join(runner))
    work = tmp_path / 'work'
    work.mkdir()
    out = subprocess.run([sys.executable, str(script)], cwd=str(work), capture_output=True,
                         text=True, timeout=240, env=sub_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert 'block %d' % (n - 1) in out.stdout or 'COMPILE_ONLY' in script.read_text()
    assert '6.0' in out.stdout          # the intro's loaded z values were printed
    commands = [line.split('#')[0].split() for lang, code in blocks if lang == 'sh'
                for line in code.splitlines() if line.startswith('python -m minipypet')]
    assert len(commands) >= 4
    for words in commands:
        if words[3] == 'plot' and not HAVE_MATPLOTLIB:
            continue
        got = subprocess.run([sys.executable, '-m', MOD] + words[3:], cwd=str(work),
                             capture_output=True, text=True, timeout=120, env=sub_env())
        assert got.returncode == 0, (words, got.stderr)


def test_readme_parallel_blocks_are_guarded():
    for lang, code in readme_blocks():
        if lang == 'python' and re.search(r'multiproc=True|executor=', code) and \
                'f_run' in code:
            assert "if __name__ == '__main__':" in code, code
