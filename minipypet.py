# minipypet - parameter exploration in one file. MIT licence; copy it into your project freely.
"""minipypet: pypet's workflow (trajectory tree, exploration, runs, storage) in one module.

Quick start::

    import minipypet as pypet

    def multiply(traj):
        traj.f_add_result('z', traj.x * traj.y, comment='product')

    env = pypet.Environment(trajectory='example', filename='./hdf5/example.hdf5')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1.0, comment='first factor')
    traj.f_add_parameter('y', 1.0, comment='second factor')
    traj.f_explore(pypet.cartesian_product({'x': [1.0, 2.0], 'y': [3.0, 4.0]}))
    env.f_run(multiply)

Data flow::

    Environment.f_run(job)
      |  store the trajectory (parameters, exploration)  -> journal beside the file
      |  for every pending run index (serially, in a pool, per process or on an Executor):
      |      job(traj)  -> new results/derived parameters -> run record (plain data)
      |      run record -> journal beside the file (append; fsync every `fsync_interval` s)
      |                 -> folded as it comes into a new segment (a temporary file)
      v  at the end: segment closed (fsync, rename into <file>.segments/), then the small
         main file that lists the segments replaced (temp, fsync, rename); journal removed

The journal is what makes a finished run survive `kill -9`; a segment is never changed once
written and the main file is only ever replaced whole, so nothing is left half written, and a
store costs what its new runs cost. Loading reads the main file, the segments and the journal.

Sections, in data-flow order (each opens with a banner; search for its title): imports,
constants, exceptions, plain data | the tree, groups | signed pickles, parameters, results,
leaf classes by name | trajectory: the runs, storing and loading, the class, exploring and
merging | storage: the protocol, the journal, plain-data states, file services, segments and
folds, atomic files, the pickle backend, the HDF5 backend (reading, writing), the registry |
reading pypet's files | parallel plumbing, your own multiprocessing | environment: logging,
settings, the class, the .cnt file, the sweep, progress | coming from pypet, pypet 0.7's
spellings, the opt-in alias | the runs table | the command line.
"""
from __future__ import annotations  # (annotations stay text: `str | None` on Python 3.9)

__version__ = '0.3.0'

__all__ = [
    'Environment', 'Trajectory', 'load_trajectory', 'cartesian_product', 'progressbar',
    'Parameter', 'ArrayParameter', 'PickleParameter', 'BaseParameter',
    'Result', 'PickleResult', 'BaseResult', 'NNGroupNode', 'NNLeafNode',
    'LazyStorageService', 'PickleStorageService', 'HDF5StorageService', 'StorageService',
    'pypetconstants', 'PypetError', 'NotUniqueNodeError', 'ParameterLockedError',
    'ParameterLockedException', 'DataNotInStorageError', 'MissingDependencyError',
    'NoSuchChildError', 'GroupNotEmptyError',
    'InvalidNameError', 'UnsupportedTypeError', 'UnknownArgumentError', 'NoSuchNodeError',
    'StorageError',
    'PickleRefusedError', 'VersionMismatchError', 'GitDiffError', 'ResumeError',
    'WorkerDiedError', 'RunFailedError', 'ConfigurationError', 'install_as_pypet',
    'PresettingError', 'NoSuchServiceError', 'TooManyGroupsError', 'SparseParameter',
    'SparseResult', 'HasLogger', 'HasSlots', 'KnowsTrajectory', 'MultiprocContext',
    'manual_run', 'compact_hdf5_file', 'racedirs', 'rename_log_file', 'StorageContextManager',
    'SharedResult', 'SharedArray', 'SharedCArray', 'SharedEArray', 'SharedVLArray',
    'SharedTable', 'SharedPandasFrame', 'make_ordinary_result', 'make_shared_result',
    'runs_table', 'runs_dataframe', 'runs_csv', 'merge_all_in_folder', 'find_unique_points',
    'plot_runs',
    'STORAGE_SERVICES',
]


# ============================================================================================
# Imports and optional dependencies
# ============================================================================================
import array
import base64
import bisect
import collections
import collections.abc
import contextlib
import copyreg
import datetime
import functools
import gc
import hashlib
import hmac
import importlib
import importlib.util
import io
import itertools
import json
import logging
import operator
import os
import pickle
import platform
import re
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
import weakref
import zlib

logger = logging.getLogger('minipypet')

# What to pip install for an optional module, or for a feature (the extras of
# pyproject.toml): named as packages, since a copied-in minipypet.py has no extras.
_PACKAGES = {'tables': 'tables numpy', 'numpy': 'numpy', 'git': 'GitPython', 'pandas': 'pandas',
             'dask': '"dask[distributed]"', 'distributed': '"dask[distributed]"',
             'h5py': 'h5py', 'matplotlib': 'matplotlib', 'hdf5': 'tables numpy'}


def _require(module, extra=None):
    """Import an optional dependency, or raise MissingDependencyError naming the
    packages (those of the feature `extra`, e.g. 'hdf5', else the module's own)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split('.')[0]
        packages = _PACKAGES.get(extra) or _PACKAGES.get(top, top)
        raise MissingDependencyError(
            '%s is needed for this feature but is not installed; install it with '
            '`pip install %s`' % (module, packages)) from exc


def _have(module):
    """True if `module` can be imported (it is imported only when asked for, never probed early)."""
    if sys.modules.get(module) is not None:
        return True
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def _is_numpy(value):
    # A numpy value can only exist if numpy is imported already, so this never imports numpy.
    return type(value).__module__ == 'numpy'


# ============================================================================================
# Constants
# ============================================================================================
WRAP_MODE_QUEUE = 'QUEUE'
WRAP_MODE_LOCK = 'LOCK'
WRAP_MODE_NONE = 'NONE'
WRAP_MODE_LOCAL = 'LOCAL'  # pypet's: the main process stores each run as its record returns
WRAP_MODE_PIPE = 'PIPE'  # pypet's: one writer in the main process (here the QUEUE writer)
WRAP_MODES = (WRAP_MODE_QUEUE, WRAP_MODE_LOCK, WRAP_MODE_NONE, WRAP_MODE_LOCAL, WRAP_MODE_PIPE)
_PYPET_ONLY_WRAP_MODES = ('NETLOCK', 'NETQUEUE')  # (refused, with the fix)

LOAD_NOTHING, LOAD_SKELETON, LOAD_DATA, OVERWRITE_DATA = 0, 1, 2, 3
STORE_NOTHING, STORE_DATA_SKIPPING, STORE_DATA = 0, 1, 2

# Messages of the storage protocol (store(msg, item, **kw) / load(msg, item, **kw)).
TRAJECTORY, SINGLE_RUN, LEAF, LIST, DELETE, GROUP, FLUSH, CLOSE_FILE, OPEN_FILE, TREE = (
    'TRAJECTORY', 'SINGLE_RUN', 'LEAF', 'LIST', 'DELETE', 'GROUP', 'FLUSH', 'CLOSE_FILE',
    'OPEN_FILE', 'TREE')

FORMAT_ZEROS = 8
RUN_NAME = 'run_'
FORMATTED_RUN_NAME = RUN_NAME + '%0' + str(FORMAT_ZEROS) + 'd'
RUN_NAME_DUMMY = 'run_ALL'
SET_NAME = 'run_set_'
FORMATTED_SET_NAME = SET_NAME + '%05d'
SET_NAME_DUMMY = 'run_set_ALL'
RUN_SET_SIZE = 1000
# the wildcards of the current run and its set; pypet's naming functions for them give the
# runs names of their own, which resolve to these index names (f_add_wildcard_functions)
_RUN_WILDCARDS, _SET_WILDCARDS = ('$', 'crun'), ('$set', 'crunset')
TIME_FORMAT = '%Y_%m_%d_%Hh%Mm%Ss'
FORMAT_VERSION = 3  # of the files minipypet writes; a newer one is refused on load
# (3: run rows in segment files beside the main file; 2: scalar leaves are attributes of
# their group, see mp_leaves; 2 and 1 are read too, and 2 is converted at the next store)
BRANCHES = ('config', 'parameters', 'derived_parameters', 'results')
ABBREVIATIONS = {'conf': 'config', 'par': 'parameters', 'dpar': 'derived_parameters',
                 'res': 'results'}
_RUN_RE = re.compile(r'^run_(\d{%d})$' % FORMAT_ZEROS)
_SET_RE = re.compile(r'^run_set_(\d{5})$')
_NAME_RE = re.compile(r'^[A-Za-z0-9_-]{1,4096}$')  # (HDF5 fails on names of ~64 KB)
# PyTables' own names (tables.path: _reserved_id_re, _hidden_name_re) and Python's dunders
_PYTABLES_RESERVED = ('__', '_c_', '_f_', '_g_', '_i_', '_p_', '_v_')
_RUN_BRANCHES = ('results', 'derived_parameters')
_RUN_GROUPS = tuple((b, b + '.runs') for b in _RUN_BRANCHES)


class pypetconstants:  # noqa: N801 - spelled as pypet users import it
    """pypet's constants namespace (`pypetconstants.WRAP_MODE_QUEUE`, `LOAD_DATA`, ...)."""
    WRAP_MODE_QUEUE = MULTIPROC_MODE_QUEUE = WRAP_MODE_QUEUE
    WRAP_MODE_LOCK = MULTIPROC_MODE_LOCK = WRAP_MODE_LOCK
    WRAP_MODE_NONE = MULTIPROC_MODE_NONE = WRAP_MODE_NONE
    WRAP_MODE_LOCAL, WRAP_MODE_PIPE = WRAP_MODE_LOCAL, WRAP_MODE_PIPE
    WRAP_MODE_NETLOCK, WRAP_MODE_NETQUEUE = \
        _PYPET_ONLY_WRAP_MODES  # (pypet's: refused by Environment with what to use)
    LOAD_NOTHING, LOAD_SKELETON, LOAD_DATA, OVERWRITE_DATA = 0, 1, 2, 3
    STORE_NOTHING, STORE_DATA_SKIPPING, STORE_DATA = 0, 1, 2
    TRAJECTORY, SINGLE_RUN, LEAF, LIST, DELETE, GROUP = (
        TRAJECTORY, SINGLE_RUN, LEAF, LIST, DELETE, GROUP)
    FLUSH, CLOSE_FILE, OPEN_FILE, TREE = FLUSH, CLOSE_FILE, OPEN_FILE, TREE
    FORMAT_ZEROS, RUN_NAME, FORMATTED_RUN_NAME = FORMAT_ZEROS, RUN_NAME, FORMATTED_RUN_NAME
    RUN_NAME_DUMMY, SET_NAME, FORMATTED_SET_NAME = RUN_NAME_DUMMY, SET_NAME, FORMATTED_SET_NAME
    SET_NAME_DUMMY = SET_NAME_DUMMY
    TIME_FORMAT = FORMAT_TIME = TIME_FORMAT
    LOG_LEVEL = logging.INFO
    # pypet's other message names and constants, for scripts that import them
    MERGE, PREPARE_MERGE, BACKUP, DELETE_LINK, ACCESS_DATA = (
        'MERGE', 'PREPARE_MERGE', 'BACKUP', 'DELETE_LINK', 'ACCESS_DATA')
    UPDATE_SKELETON, UPDATE_DATA = 1, 2
    SET_FORMAT_ZEROS = 5
    HDF5_STRCOL_MAX_NAME_LENGTH, HDF5_STRCOL_MAX_LOCATION_LENGTH = 128, 512
    HDF5_STRCOL_MAX_VALUE_LENGTH, HDF5_STRCOL_MAX_COMMENT_LENGTH = 64, 512
    HDF5_STRCOL_MAX_RANGE_LENGTH, HDF5_STRCOL_MAX_RUNTIME_LENGTH = 1024, 18
    LOG_ENV, LOG_TRAJ, LOG_RUN, LOG_PROC, LOG_HOST, LOG_SET = (
        '$env', '$traj', '$run', '$proc', '$host', '$set')
    DEFAULT_LOGGING = 'DEFAULT'


# ============================================================================================
# Exceptions - one root, each mixed with the builtin a caller would expect
# ============================================================================================
class PypetError(Exception):
    """Root of every error minipypet raises on purpose."""


class ConfigurationError(PypetError, ValueError):
    """An argument or a combination of arguments that cannot work."""


class _MergeMismatchError(ConfigurationError, TypeError):
    """Trajectories whose parameters differ cannot be merged (pypet's TypeError)."""


class PresettingError(ConfigurationError):
    """A parameter was preset (f_preset_parameter) but never added (pypet's name)."""


class NoSuchServiceError(PypetError, TypeError):
    """A storage service was asked for something it does not do (pypet's name)."""


class TooManyGroupsError(PypetError, TypeError):
    """pypet's fast search gave up on too many groups; kept so pypet's except clauses run."""


class InvalidNameError(PypetError, ValueError, AttributeError):
    """A node name that is not allowed, or taken (pypet raises AttributeError for that)."""


class UnknownArgumentError(PypetError, TypeError, ValueError, AttributeError):
    """Keywords a call does not take: a TypeError as Python raises it, also the ValueError
    pypet's Environment and f_store raise and the AttributeError of its f_set_properties."""


class UnsupportedTypeError(PypetError, TypeError):
    """Data of a type that the leaf cannot hold or store."""


class NoSuchNodeError(PypetError, AttributeError, KeyError):
    """A name that does not resolve to any node."""

    def __str__(self):  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ''


class NotUniqueNodeError(NoSuchNodeError):
    """A shortcut that matches several nodes at the same depth."""


class NoSuchChildError(NoSuchNodeError, ValueError):
    """A name that is no direct child (or link) of the group it is asked of, for
    f_remove_child, f_remove_link, f_store_child (pypet raises ValueError)."""


class GroupNotEmptyError(PypetError, TypeError):
    """A group with children removed without recursive=True (pypet raises TypeError)."""


class ParameterLockedError(PypetError, TypeError):
    """f_set on a parameter that was read (locked) or is explored."""


ParameterLockedException = ParameterLockedError  # pypet's spelling


class MissingDependencyError(PypetError, ImportError):
    """An optional package is needed and missing."""


class StorageError(PypetError, IOError):
    """A file that is missing, foreign, corrupt or written by a newer version."""


class DataNotInStorageError(StorageError):
    """The requested trajectory or item is not in the file."""


class VersionMismatchError(StorageError):
    """The file was written by a newer minipypet format."""


class PickleRefusedError(PypetError, ValueError):
    """Data that would have to be unpickled while allow_pickle=False."""


class GitDiffError(PypetError, RuntimeError):
    """git_fail=True and the repository has uncommitted changes."""


class ResumeError(PypetError, RuntimeError):
    """A .cnt file that cannot resume the trajectory it names."""


class RunFailedError(PypetError, RuntimeError):
    """A run's job raised; the original exception is the __cause__."""


class WorkerDiedError(PypetError, RuntimeError):
    """A worker process died (killed, os._exit, out of memory) while carrying out a run."""


# ============================================================================================
# Plain data - what leaves may hold, and a tagged JSON encoding of it
# ============================================================================================
_SCALARS = (bool, int, float, complex, str, bytes)
_SCALAR_TYPES = frozenset(_SCALARS)
_NUMBER_TYPES = frozenset((bool, int, float, complex))


def _type_name(value):
    t = type(value)
    return t.__name__ if t.__module__ == 'builtins' else '%s.%s' % (t.__module__, t.__name__)


def _check_plain(value, where):
    """Raise UnsupportedTypeError unless `value` is storable plain data (no pickling needed)."""
    t = type(value)
    if t in _SCALARS or value is None:
        return
    if t is list or t is tuple or t is set or t is frozenset:
        for v in value:
            _check_plain(v, where)
        return
    if t is dict:
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, where)
        return
    if _is_numpy(value):
        kind = getattr(getattr(value, 'dtype', None), 'kind', 'O')
        if kind in 'biufcSUM' or (kind == 'V' and value.dtype.names):
            return
    raise UnsupportedTypeError(
        '%s: cannot store a value of type %s (%r); use plain data (numbers, str, bytes, lists, '
        'tuples, dicts, numpy arrays) or a PickleResult/PickleParameter for other objects'
        % (where, _type_name(value), _short_repr(value)))


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


_JSON_NATIVE = frozenset((bool, int, float, str, type(None)))


def _encode(value):
    """Plain data -> JSON-compatible object, with type tags where JSON would lose the type."""
    t = type(value)
    if t in (bool, int, float, str) or value is None:
        return value
    if t is list:
        if all(type(v) in _JSON_NATIVE for v in value):  # (an explored range, mostly)
            return value
        return [_encode(v) for v in value]
    if t is dict:
        if all(type(k) is str for k in value) and '__t' not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {'__t': 'dict', 'v': [[_encode(k), _encode(v)] for k, v in value.items()]}
    if t is tuple:
        return {'__t': 'tuple', 'v': [_encode(v) for v in value]}
    if t in (set, frozenset):
        return {'__t': t.__name__, 'v': [_encode(v) for v in value]}
    if t is bytes:
        return {'__t': 'bytes', 'v': base64.b64encode(value).decode('ascii')}
    if t is complex:
        return {'__t': 'complex', 'v': [value.real, value.imag]}
    if _is_numpy(value):
        np = sys.modules['numpy']
        if isinstance(value, np.ndarray):
            arr = value if value.flags['C_CONTIGUOUS'] else value.copy(order='C')  # keeps 0-d
            return {'__t': 'ndarray', 'dtype': arr.dtype.str if not arr.dtype.names
                    else arr.dtype.descr, 'shape': list(arr.shape),
                    'v': base64.b64encode(arr.tobytes()).decode('ascii')}
        return {'__t': 'npscalar', 'dtype': value.dtype.str,
                'v': base64.b64encode(value.tobytes()).decode('ascii')}
    raise UnsupportedTypeError('cannot encode a value of type %s' % _type_name(value))


_REPR_SCALARS = frozenset(_SCALARS + (type(None),))  # (their _canonical text is their repr)


def _canonical(value):
    """A text for `value` that is the same in every process: sets and frozensets sorted
    by their items' texts, dicts by their keys' (unlike repr and pickle, whose order for
    a set follows PYTHONHASHSEED)."""
    t = type(value)
    if t in (set, frozenset):
        return '%s{%s}' % (t.__name__, ','.join(sorted(_canonical(v) for v in value)))
    if t is dict:
        return 'dict{%s}' % ','.join(sorted('%s:%s' % (_canonical(k), _canonical(v))
                                            for k, v in value.items()))
    if t in (list, tuple):
        if set(map(type, value)) <= _REPR_SCALARS:  # (an explored range: ~10x faster)
            return '%s[%s]' % (t.__name__, ','.join(map(repr, value)))
        return '%s[%s]' % (t.__name__, ','.join(_canonical(v) for v in value))
    if t in _SCALARS or value is None:
        return repr(value)
    if _is_numpy(value):
        return json.dumps(_encode(value), sort_keys=True)
    state = getattr(value, '__dict__', None)  # an object: its class and its attributes
    if isinstance(state, dict):
        return '%s.%s(%s)' % (t.__module__, t.__qualname__, _canonical(state))
    try:  # (its pickle, which is the same in every process unless it holds a set)
        return '%s.%s:%s' % (t.__module__, t.__qualname__, pickle.dumps(value, 4).hex())
    except Exception:
        return '%s.%s:%r' % (t.__module__, t.__qualname__, value)


def _decode(obj):
    """Inverse of _encode."""
    t = type(obj)
    if t is list:
        return [_decode(v) for v in obj]
    if t is not dict:
        return obj
    tag = obj.get('__t')
    if tag is None:
        return {k: _decode(v) for k, v in obj.items()}
    v = obj['v']
    if tag == 'tuple':
        return tuple(_decode(x) for x in v)
    if tag == 'dict':
        return {_freeze(_decode(k)): _decode(x) for k, x in v}
    if tag == 'set':
        return {_freeze(_decode(x)) for x in v}
    if tag == 'frozenset':
        return frozenset(_freeze(_decode(x)) for x in v)
    if tag == 'bytes':
        return base64.b64decode(v)
    if tag == 'complex':
        return complex(v[0], v[1])
    np = _require('numpy')
    if tag == 'ndarray':
        dtype = np.dtype(obj['dtype'] if isinstance(obj['dtype'], str)
                         else [tuple(f) for f in obj['dtype']])
        if dtype.itemsize == 0:  # (np.str_('') items: numpy reads no 0-byte buffer)
            return np.zeros(obj['shape'], dtype=dtype)
        return np.frombuffer(base64.b64decode(v), dtype=dtype).reshape(obj['shape']).copy()
    if tag == 'npscalar':
        dtype = np.dtype(obj['dtype'])
        if dtype.itemsize == 0:  # np.str_('') or np.bytes_(b'')
            return dtype.type('' if dtype.kind == 'U' else b'')
        return np.frombuffer(base64.b64decode(v), dtype=dtype)[0]
    raise StorageError('unknown type tag %r in stored data' % tag)


_PANDAS_TAGS = ('DataFrame', 'Series')


def _is_frame_or_sparse(value):
    """A pandas DataFrame/Series or a scipy.sparse matrix (never imports either)."""
    return _pandas_kind(value) is not None or \
        type(value).__module__.partition('.')[0] == 'scipy' and hasattr(value, 'tocsr')


def _pandas_kind(value):
    pd = sys.modules.get('pandas')
    if pd is not None:
        if isinstance(value, pd.DataFrame):
            return 'DataFrame'
        if isinstance(value, pd.Series):
            return 'Series'
    return None


def _to_plain(value, where):
    """A pandas DataFrame/Series or a scipy.sparse matrix as a plain dict with a type tag
    ('__t'), which every backend stores like any dict and which reads back as its columns
    without pandas; anything else unchanged. Raises UnsupportedTypeError naming `where`."""
    if not _is_frame_or_sparse(value):
        return value
    kind = _pandas_kind(value)
    if kind is None:  # scipy.sparse
        fmt = value.format
        parts = {'csr': ('data', 'indices', 'indptr'), 'csc': ('data', 'indices', 'indptr'),
                 'bsr': ('data', 'indices', 'indptr'), 'dia': ('data', 'offsets'),
                 'coo': ('data', 'row', 'col')}.get(fmt)
        if parts is None:  # (lil, dok: stored as csr, read back in the csr format)
            value, parts = value.tocsr(), ('data', 'indices', 'indptr')
        plain = {'__t': 'sparse', 'class': type(value).__name__, 'shape': list(value.shape)}
        plain.update((k, getattr(value, k)) for k in parts)
        return plain
    pd = sys.modules['pandas']
    frame = value.to_frame() if kind == 'Series' else value
    columns, dtypes = [], []
    for i in range(frame.shape[1]):
        col = frame.iloc[:, i]
        dtypes.append(str(col.dtype))
        columns.append(_plain_column(col, pd, where))
    plain = {'__t': kind, 'class': type(value).__name__, 'dtypes': dtypes, 'data': columns,
             'index': _plain_index(frame.index, pd, where)}
    if kind == 'Series':
        plain['name'] = _plain_label(value.name, where)
    else:
        plain['columns'] = _plain_index(frame.columns, pd, where)
    return plain


def _plain_index(index, pd, where):
    """A pandas Index as {'names', 'range'} or {'names', 'levels', 'dtypes'}."""
    plain = {'names': [_plain_label(n, where) for n in index.names]}
    if type(index) is pd.RangeIndex:
        plain['range'] = [index.start, index.stop, index.step]
    else:
        levels = [index.get_level_values(i) for i in range(index.nlevels)]
        plain['levels'] = [_plain_column(level.to_series(), pd, where) for level in levels]
        plain['dtypes'] = [str(level.dtype) for level in levels]
    return plain


def _plain_label(label, where):
    if _is_numpy(label):
        label = label.item()
    _check_plain(label, where + ' (a label)')
    return label


def _plain_column(col, pd, where):
    """A column's values: a numpy array for numbers, bools and times, else a plain list."""
    kind = getattr(col.dtype, 'kind', 'O')
    if kind in 'biufcmM' and type(col.dtype).__module__.startswith('numpy'):
        return col.to_numpy()
    values = [None if v is pd.NA or v is pd.NaT or (v is None) else v
              for v in col.astype(object).tolist()]
    _check_plain(values, '%s column %r' % (where, col.name))
    return values


def _from_plain(value):
    """Inverse of _to_plain; without pandas (or scipy) the plain dict stays as it is."""
    if type(value) is not dict:
        return value
    tag = value.get('__t')
    if tag == 'sparse':
        if not _have('scipy'):
            return value
        sparse = importlib.import_module('scipy.sparse')
        cls = getattr(sparse, value['class'], None) or getattr(
            sparse, value['class'].split('_')[0] + '_matrix')
        shape = tuple(value['shape'])
        if 'offsets' in value:
            return cls((value['data'], value['offsets']), shape=shape)
        if 'row' in value:
            return cls((value['data'], (value['row'], value['col'])), shape=shape)
        return cls((value['data'], value['indices'], value['indptr']), shape=shape)
    if tag not in _PANDAS_TAGS or not _have('pandas'):
        return value
    pd = sys.modules['pandas']

    def column(values, dtype):
        series = pd.Series(values, dtype=object if type(values) is list else None)
        try:
            return series.astype(dtype) if str(series.dtype) != dtype else series
        except (TypeError, ValueError):
            return series
    def index(plain):
        names = plain['names']
        if 'range' in plain:
            return pd.RangeIndex(*plain['range'], name=names[0])
        levels = [column(v, d) for v, d in zip(plain['levels'], plain['dtypes'])]
        return pd.Index(levels[0], name=names[0]) if len(levels) == 1 else \
            pd.MultiIndex.from_arrays(levels, names=names)
    cols = [column(v, d).values for v, d in zip(value['data'], value['dtypes'])]
    if tag == 'Series':
        return pd.Series(cols[0], index=index(value['index']), name=value['name'])
    frame = pd.DataFrame(dict(enumerate(cols)), index=index(value['index']))
    frame.columns = index(value['columns'])
    return _object_table()(frame) if value['class'] == 'ObjectTable' else frame


def _freeze(value):
    # JSON turns tuples used as dict keys or set members into tagged lists; they decode
    # back to tuples, but a nested list would not be hashable, so make it a tuple.
    return tuple(value) if type(value) is list else value


def _to_json(value):
    return json.dumps(_encode(value), separators=(',', ':'))


def _from_json(text):
    return _decode(json.loads(text))


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain data and numpy arrays: journal and pickle-backend files
    never hold anything else, so a crafted payload in them cannot run code."""
    _ALLOWED = {
        ('builtins', 'complex'), ('builtins', 'set'), ('builtins', 'frozenset'),
        ('builtins', 'bytearray'), ('builtins', 'slice'),
        ('array', 'array'), ('array', '_array_reconstructor'),  # (run tables' C columns)
        ('numpy', 'dtype'), ('numpy', 'ndarray'), ('numpy.core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', '_reconstruct'), ('numpy.core.multiarray', 'scalar'),
        ('numpy._core.multiarray', 'scalar'), ('numpy.core.numeric', '_frombuffer'),
        ('numpy._core.numeric', '_frombuffer'), ('_codecs', 'encode'),
        ('numpy', 'matrix'), ('numpy.matrixlib.defmatrix', 'matrix'),  # (an ndarray too)
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(_numpy_pickle_module(module), name)
        raise PickleRefusedError(
            'refused to unpickle %s.%s: minipypet files hold only plain data' % (module, name))


def _numpy_pickle_module(module):
    """numpy 2 pickles name numpy._core.*, numpy 1 numpy.core.*; numpy 1.26 has only a few
    numpy._core shims and numpy 2 warns on numpy.core.*: use the installed spelling."""
    parts = module.split('.')
    if parts[:2] not in (['numpy', 'core'], ['numpy', '_core']):
        return module
    numpy2 = int(_require('numpy').__version__.split('.')[0]) >= 2
    return '.'.join(['numpy', '_core' if numpy2 else 'core'] + parts[2:])


class _NumpyCompatUnpickler(pickle.Unpickler):
    """The plain unpickler (for PickleResult/PickleParameter data the user allowed),
    able to read numpy arrays pickled by the other numpy major version."""

    def find_class(self, module, name):
        return super().find_class(_numpy_pickle_module(module), name)


def _safe_loads(data):
    return _SafeUnpickler(io.BytesIO(data)).load()


# ============================================================================================
# Tree and natural naming
# ============================================================================================
class Annotations:
    """Free-form metadata on a node (`node.v_annotations.author = 'me'`), stored with it."""

    def __init__(self, owner: str = '') -> None:
        object.__setattr__(self, '_owner', owner)
        object.__setattr__(self, '_dict', {})

    def f_set(self, *args: object, **kwargs: object) -> None:
        """Set annotations: positional values are named annotation, annotation_1, ...;
        keywords by name."""
        for i, value in enumerate(args):
            self.f_set_single('annotation' if i == 0 else 'annotation_%d' % i, value)
        for key, value in kwargs.items():
            self.f_set_single(key, value)

    def f_set_single(self, name: str, value: object) -> None:
        """Set one annotation."""
        _check_plain(value, '%s annotation %r' % (self._owner, name))
        self._dict[name] = value

    def f_get(self, *names: str) -> object:
        """The value of one annotation, a tuple of several, or the only one if no name is
        given (names may be ints, as pypet's: 0 is 'annotation', 1 'annotation_1', ...)."""
        if not names:
            if not self._dict:
                raise NoSuchNodeError('%s has no annotations' % (self._owner or 'the node'))
            if len(self._dict) != 1:
                raise ValueError('%s has %d annotations; name the one you want'
                                 % (self._owner, len(self._dict)))
            return next(iter(self._dict.values()))
        values = tuple(self[n] for n in names)
        return values[0] if len(values) == 1 else values

    def f_remove(self, *names: str) -> None:
        """Delete the named annotations."""
        for name in names:
            del self._dict[name]

    def f_to_dict(self, copy: bool = True) -> dict:
        """The annotations as a dict (a copy unless copy=False)."""
        return dict(self._dict) if copy else self._dict

    def f_is_empty(self) -> bool:
        """True if there are no annotations."""
        return not self._dict

    def f_empty(self) -> None:
        """Delete every annotation."""
        self._dict.clear()

    def f_ann_to_str(self) -> str:
        """The annotations as one line of text, sorted by name: 'a=1; b=x' (as pypet's)."""
        return '; '.join('%s=%s' % (k, self._dict[k]) for k in sorted(self._dict, key=str))

    __str__ = f_ann_to_str

    def __getattr__(self, name):
        if name.startswith('_'):  # pickle and copy probe for __setstate__ & co.
            raise AttributeError(name)
        try:
            return self.__dict__['_dict'][name]
        except KeyError:
            raise AttributeError('%s has no annotation %r' % (self._owner, name)) from None

    def __setattr__(self, name, value):
        self.f_set_single(name, value)

    def __delattr__(self, name):
        self.f_remove(name)

    def __contains__(self, name):
        return self._key(name) in self._dict

    def __iter__(self):
        return iter(self._dict)

    def __len__(self):
        return len(self._dict)

    def _key(self, key):  # pypet: ann[0] is 'annotation', ann[1] 'annotation_1', ...
        return key if not isinstance(key, int) else \
            'annotation' if key == 0 else 'annotation_%d' % key

    def __getitem__(self, key):
        try:
            return self._dict[self._key(key)]
        except KeyError:
            raise NoSuchNodeError('%s has no annotation %r' % (self._owner, key)) from None

    def __setitem__(self, key, value):
        self.f_set_single(self._key(key), value)

    def __delitem__(self, key):
        self.f_remove(self._key(key))


class NNTreeNode:
    """A node of the trajectory tree: name, parent, comment and annotations."""

    def __init__(self, full_name: str = '', comment: str = '') -> None:
        d = self.__dict__
        d['_full_name'] = full_name
        d['_name'] = full_name.rpartition('.')[2]
        d['_comment'] = '' if comment is None or comment == '' else _check_comment(
            comment, full_name)
        d['_parent'] = None
        d['_traj'] = None
        d['_annotations'] = None

    v_name = property(lambda self: self._name, doc='The last part of the full name.')
    v_full_name = property(lambda self: self._full_name, doc='Dotted path from the root.')
    v_location = property(lambda self: self._full_name.rpartition('.')[0],
                          doc='Full name of the parent.')
    v_is_leaf = property(lambda self: False,
                         doc='True for leaves, False for groups.')
    v_is_group = property(lambda self: not self.v_is_leaf,
                          doc='True for groups.')
    v_is_root = property(lambda self: False,
                         doc='True only for the trajectory.')
    v_depth = property(lambda self: self._full_name.count('.') + 1 if self._full_name else 0,
                       doc='Levels below the trajectory (0 for the trajectory).')
    v_branch = property(lambda self: self._full_name.partition('.')[0],
                        doc="The branch: 'parameters', 'results', ...")
    v_root = property(lambda self: self._traj,
                      doc='The trajectory this node belongs to.')

    @property
    def _logger(self):
        # pypet's nodes are HasLogger: custom leaf classes in pypet scripts log with
        # self._logger, so it is there (made when asked for: a logger per node would cost)
        return self.__dict__.get('_own_logger') or logging.getLogger(
            'pypet.' + type(self).__name__)

    @_logger.setter
    def _logger(self, logger):
        self.__dict__['_own_logger'] = logger

    @property
    def v_run_branch(self) -> str:
        """The run this node hangs below ('run_00000003', 'run_ALL'), else 'trajectory'."""
        for part in self._full_name.split('.'):
            if part == 'run_ALL' or _RUN_RE.fullmatch(part):
                return part
        return 'trajectory'

    @property
    def v_comment(self) -> str:
        """Free text describing the node; stored with it."""
        return self._comment

    @v_comment.setter
    def v_comment(self, value: object) -> None:
        self.__dict__['_comment'] = _check_comment(value, self._full_name)

    @property
    def v_annotations(self) -> Annotations:
        """The node's Annotations (created on first use)."""
        if self._annotations is None:
            self.__dict__['_annotations'] = Annotations(self._full_name)
        return self._annotations

    def f_get_parent(self) -> NNGroupNode | None:
        """The group above this node (None for the trajectory itself)."""
        return self._parent

    def f_set_annotations(self, *args: object, **kwargs: object) -> None:
        """Set annotations of this node (as Annotations.f_set)."""
        self.v_annotations.f_set(*args, **kwargs)

    def f_get_annotations(self, *names: str) -> object:
        """Read annotations of this node (as Annotations.f_get)."""
        return self.v_annotations.f_get(*names)

    def f_ann_to_str(self) -> str:
        """The annotations as one line of text."""
        return self._annotations.f_ann_to_str() if self._annotations else ''

    def _rename(self, full_name):
        self.__dict__['_full_name'] = full_name
        self.__dict__['_name'] = full_name.rpartition('.')[2]

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self._full_name or self._name or '(root)')

    func = property(lambda self: _Namespace(self, 'f_'),
                    doc="pypet's other spelling of the f_ methods: node.func.add_result(...)")
    vars = property(lambda self: _Namespace(self, 'v_'),
                    doc="pypet's other spelling of the v_ properties: node.vars.full_name")


class _Namespace:
    """node.func.x is node.f_x and node.vars.x is node.v_x (pypet's alternative names,
    which never collide with a child called `name` or `comment`)."""
    __slots__ = ('_node', '_prefix')

    def __init__(self, node, prefix):
        object.__setattr__(self, '_node', node)
        object.__setattr__(self, '_prefix', prefix)

    def __getattr__(self, name):
        try:
            return getattr(self._node, self._prefix + name)
        except AttributeError:
            raise AttributeError('%s has no %s%s' % (self._node, self._prefix, name)) from None

    def __setattr__(self, name, value):
        setattr(self._node, self._prefix + name, value)

    def __dir__(self):
        n = len(self._prefix)
        return [k[n:] for k in dir(self._node) if k.startswith(self._prefix)]


def _brief(value, limit=40):
    """A value for reprs: an array as its dtype and shape, anything else cut at `limit`."""
    if _is_numpy(value) and getattr(value, 'ndim', 0) > 0:
        return 'ndarray %s %s' % (value.dtype, value.shape)
    return _short_repr(value, limit)


def _cell(value):
    """A runs-table value as table text: floats to 6 digits, the rest brief."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 10 else '%.6g' % value
    return _brief(value, 24) if value is not None else ''


def _read_only(attr, doc):
    """A read-only property showing the attribute `attr`."""
    return property(lambda self: getattr(self, attr), doc=doc)


def _did_you_mean(name, names):
    """'; did you mean x, xx?' for the names close to a misspelled one ('' if none)."""
    import difflib
    close = difflib.get_close_matches(name, list(names), n=3)
    return '; did you mean %s?' % ', '.join(close) if close else ''


def _check_comment(comment, where):
    """`comment` if every backend keeps it exactly: a str without NUL characters (HDF5
    text attributes end at the first one) that UTF-8 can encode (no lone surrogates)."""
    where = where or 'the trajectory'
    if not isinstance(comment, str):
        raise UnsupportedTypeError('%s: a comment must be a str, not %s (%r)'
                                   % (where, _type_name(comment), comment))
    if '\x00' in comment:
        raise UnsupportedTypeError('%s: a comment must not contain NUL characters, which HDF5 '
                                   'files cannot keep in text; got %r' % (where, comment[:80]))
    if not _is_utf8(comment):
        raise UnsupportedTypeError(
            '%s: the comment %r holds a lone surrogate (undecodable bytes, e.g. of a file '
            'name), which is not text; decode those bytes with errors="replace" first'
            % (where, comment[:80]))
    return comment


def _is_utf8(text):
    """True if UTF-8 can encode `text`: False for lone surrogates, which os.fsdecode and
    sys.argv make of undecodable bytes."""
    if text.isascii():
        return True
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def _check_name(component, where):
    if not _NAME_RE.fullmatch(component) or component.startswith(('f_', 'v_')):
        raise InvalidNameError(
            '%s is not a valid node name in %s: use letters, digits, "_" and "-" only (at most '
            '4,096 of them), and do not start with "f_" or "v_" (reserved for methods and '
            'properties)' % (_short_repr(component, 80), _short_repr(where, 160)))
    if component.startswith(_PYTABLES_RESERVED):
        # PyTables reads such names as its own attributes (a group's __dict__,
        # _v_attrs): stored, they break every later store into that file, so no backend
        # takes them (a file must move between backends)
        raise InvalidNameError(
            '%s is not a valid node name in %s: names starting with "__" or with one of '
            '"_c_", "_f_", "_g_", "_i_", "_p_", "_v_" are reserved by PyTables (HDF5 files); '
            'rename it, e.g. %r' % (_short_repr(component, 80), _short_repr(where, 160),
                                    component.lstrip('_') or 'x'))


# ============================================================================================
# Tree groups - lookup, adding, removing, iterating
# ============================================================================================
class NNGroupNode(NNTreeNode):
    """A group of the tree; children are reached by natural naming (`group.child`)."""

    def __init__(self, full_name: str = '', comment: str = '') -> None:
        super().__init__(full_name, comment)
        self.__dict__['_children'] = {}
        self.__dict__['_links'] = {}

    # -- natural naming ----------------------------------------------------------------------
    def __getattr__(self, name):
        if name.startswith('_') or name.startswith(('f_', 'v_')):
            root = self.__dict__.get('_traj') or self
            if name in Trajectory._HIDDEN and '_held' in root.__dict__:
                root._place_held()  # (see Trajectory._hold_result)
                return getattr(self, name)
            raise AttributeError('%r object has no attribute %r' % (type(self).__name__, name))
        root = self._root()  # (natural naming follows links unless v_with_links is False)
        return self.f_get(name, fast_access=None, auto_load=None, with_links=not isinstance(
            root, Trajectory) or root._props['with_links'])

    def __setattr__(self, name, value):
        # properties (v_comment, ...) are set; a method's name (an alias such as `get`) is data
        if name.startswith('_') or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        elif isinstance(value, NNTreeNode):
            if value._traj is not None and value._traj is self._root():
                self.f_add_link(name, value)
            else:
                if not value._full_name:
                    value._rename(name)
                elif value._full_name != name and not value._full_name.startswith(name + '.'):
                    raise InvalidNameError(
                        'cannot add %s as %s.%s: the names differ; name it %r (or "") or '
                        'assign it to %s.%s' % (value._full_name, self._full_name or 'traj',
                                                name, name, self._full_name or 'traj',
                                                value._full_name.partition('.')[0]))
                self.f_add_leaf(value) if value.v_is_leaf else self._add_group_node(value)
        else:
            child = self._root()._resolve(self, name)
            if isinstance(child, BaseParameter):
                child.f_set(value)
            elif isinstance(child, BaseResult):
                if child._data and not child.f_supports_fast_access():
                    raise NoSuchNodeError(
                        '%s holds the items %s, none named %r: set one of them, e.g. %s.%s = '
                        'value' % (child._full_name, sorted(child._data), child._name,
                                   child._full_name, sorted(child._data)[0]))
                child.f_set_single(child.v_name, value)
            else:  # (an AttributeError, as pypet's, which finds no such node either)
                raise NoSuchNodeError(
                    'cannot assign a plain value to %s.%s; add a leaf instead, e.g. '
                    'f_add_parameter(%r, value) or %s.%s = Parameter(%r, value)'
                    % (self._full_name or 'traj', name, name, self._full_name or 'traj',
                       name, name))

    def __delattr__(self, name):
        if name in self._children or name in self._links:
            self.f_remove_child(name, recursive=True)
        else:
            object.__delattr__(self, name)

    def __getitem__(self, name):
        if isinstance(name, tuple):  # pypet: traj['a', 'b'] is traj['a.b']
            name = '.'.join(name)
        if isinstance(name, int) and not isinstance(name, bool):  # pypet: group[3] is the
            name = self._root().f_wildcard('$', name)  # child of run 3, [-1] of run_ALL
        return self.f_get(name, fast_access=None, auto_load=None)

    def __setitem__(self, name, value):
        """group['x'] = value is group.x = value (pypet); a dotted name adds on the way."""
        root = self._root()
        if isinstance(root, Trajectory) and isinstance(value, NNTreeNode):
            name = '.'.join(root._translate(p) for p in name.split('.'))  # ('r_1', 'par')
        if '.' in name and isinstance(value, NNTreeNode):
            head, _, tail = name.rpartition('.')
            if value._full_name not in ('', tail, name):
                raise InvalidNameError('cannot add %s as %r: the names differ'
                                       % (value._full_name, name))
            first, _, rest = name.partition('.')
            group = self._children.get(first)
            if group is not None and not group.v_is_leaf and first not in BRANCHES:
                # (a group of the user's own, e.g. traj['r_1'] = NNGroupNode(''): pypet
                # adds below it rather than placing the leaf in its branch)
                group[rest] = value
                return
            value._rename(name)
            self.f_add_leaf(value) if value.v_is_leaf else self._add_group_node(value)
            return
        self.__setattr__(name, value)

    def __contains__(self, item):
        root = self._root()  # (`in` searches as natural naming does, pypet)
        if isinstance(root, Trajectory) and isinstance(item, str):
            return self.f_contains(item, with_links=root._props['with_links'],
                                   shortcuts=root._props['shortcuts'],
                                   max_depth=root._props['max_depth'])
        return self.f_contains(item)

    def __iter__(self):
        return iter(list(self._children.values()))

    def __dir__(self):
        return list(super().__dir__()) + list(self._children) + list(self._links)

    def _root(self):
        """The trajectory whose name index finds and adds this group's nodes (a group
        made on its own gets a private one, until it is added to a trajectory)."""
        if self._traj is not None or isinstance(self, Trajectory):
            return self._traj or self
        holder = _Holder('detached')
        head = self._full_name.rpartition('.')[0]
        parent = holder._add_path(holder, head, None, '') if head else holder
        holder._insert(parent, self)
        return holder

    # -- lookup ------------------------------------------------------------------------------
    def f_get(self, name: str, fast_access: bool = False, shortcuts: bool | None = None,
              max_depth: int | None = None, auto_load: bool = False,
              with_links: bool = True) -> object:
        """The node at `name` (dotted, relative to this group); a value if fast_access.
        auto_load=None (natural naming) follows the trajectory's v_auto_load."""
        root, natural = self._root(), auto_load is None
        if natural:
            auto_load = root._props['auto_load'] if isinstance(root, Trajectory) else False
        node = root._resolve(self, name, shortcuts, max_depth, with_links)
        if node is None:
            if auto_load and root._storage_service is not None:
                try:
                    root.f_load_item(self._join(name))
                except DataNotInStorageError:  # not stored either: no such node, and
                    if natural:  # natural naming says so as pypet's does (so hasattr
                        raise  # raises while v_auto_load is on)
                node = root._resolve(self, name, shortcuts, max_depth, with_links)
            if node is None:
                raise NoSuchNodeError('%s has no node %r%s' % (
                    self._full_name or 'the trajectory', name, root._hint(name)))
        if node.v_is_leaf:
            if auto_load and node.f_is_empty() and root._storage_service is not None:
                root.f_load_item(node)
            if fast_access is None:
                fast_access = root.v_fast_access
            if fast_access and node.f_supports_fast_access():
                return node._fast_value()
        return node

    def _join(self, name):
        return self._full_name + '.' + name if self._full_name else name

    def f_get_default(self, name: str, default: object = None, fast_access: bool = False,
                      **kwargs: object) -> object:
        """f_get(name), or `default` when there is no such node."""
        try:
            return self.f_get(name, fast_access=fast_access, **kwargs)
        except NoSuchNodeError:
            return default

    def f_contains(self, item: str | NNTreeNode, with_links: bool = True, shortcuts: bool = False,
                   max_depth: int | None = None) -> bool:
        """True if `item` (a name or a node) is in this group's subtree."""
        root = self._root()
        kids = self._children
        if type(kids) is _PendingRuns and kids._idx(item) is not None:
            return True  # (a pending run: not made to say so)
        if isinstance(item, NNTreeNode):
            prefix = self._full_name + '.' if self._full_name else ''
            return item._traj is root and item._full_name.startswith(prefix) and \
                root._nodes.get(item._full_name) is item and (
                    max_depth is None or item.v_depth - self.v_depth <= max_depth)
        try:
            return root._resolve(self, item, shortcuts, max_depth, with_links) is not None
        except NotUniqueNodeError:
            return True

    def f_get_all(self, name: str, max_depth: int | None = None, shortcuts: bool = True) -> list:
        """Every node named `name` in this subtree; a dotted name's parts may skip
        groups between them, as shortcuts do ('peter.yve' finds peter.markus.yve)."""
        root = self._root()
        prefix = self._full_name + '.' if self._full_name else ''
        if isinstance(root, Trajectory):  # (abbreviations and wildcards: 'par', '$', ...)
            root._place_held()  # (the name index is read directly below)
            name = '.'.join(root._translate(p) for p in name.split('.'))
        *path, last = name.split('.')
        if isinstance(root, Trajectory):
            root._lazy_lookup(last, self, everywhere=True)
        found = []
        for fn, node in root._by_name.get(last, {}).items():
            if not fn.startswith(prefix) or not shortcuts and fn != prefix + name:
                continue
            parts = iter(fn[len(prefix):].split('.')[:-1])
            if all(p in parts for p in path):  # (a subsequence: `in` consumes the iterator)
                found.append(node)
        return found

    # -- iteration ---------------------------------------------------------------------------
    def f_get_children(self, copy: bool = True) -> dict:
        """{name: node} of the direct children (groups and leaves, no links); copy=False
        gives the group's own dict."""
        return dict(self._children) if copy else self._children

    def f_children(self) -> int:
        """The number of direct children (as pypet's; f_get_children() gives them)."""
        return len(self._children)

    def f_dir_data(self) -> list:
        """The names of the children (what natural naming reaches from here)."""
        return list(self._children)

    def f_has_children(self) -> bool:
        """True if this group has children."""
        return bool(self._children)

    def f_get_groups(self, copy: bool = True) -> dict:
        """{name: group} of the child groups."""
        return {k: v for k, v in self._children.items() if not v.v_is_leaf}

    def f_get_leaves(self, copy: bool = True) -> dict:
        """{name: leaf} of the child leaves."""
        return {k: v for k, v in self._children.items() if v.v_is_leaf}

    def f_get_links(self, copy: bool = True) -> dict:
        """{name: target node} of the links in this group (copy=False: its own dict)."""
        return dict(self._links) if copy else self._links

    def f_groups(self) -> int:
        """The number of child groups (as pypet's; f_get_groups() gives them)."""
        return sum(not c.v_is_leaf for c in self._children.values())

    def f_leaves(self) -> int:
        """The number of child leaves (as pypet's; f_get_leaves() gives them)."""
        return sum(c.v_is_leaf for c in self._children.values())

    def f_links(self) -> int:
        """The number of links in this group (as pypet's; f_get_links() gives them)."""
        return len(self._links)

    def f_has_groups(self) -> bool:
        """True if a child is a group."""
        return any(not c.v_is_leaf for c in self._children.values())

    def f_has_leaves(self) -> bool:
        """True if a child is a leaf."""
        return any(c.v_is_leaf for c in self._children.values())

    def f_has_links(self) -> bool:
        """True if this group holds links."""
        return bool(self._links)

    # -- showing -----------------------------------------------------------------------------
    def __repr__(self):
        return '<%s %s: %d children>' % (type(self).__name__, self._full_name or '(root)',
                                         len(self._children) + len(self._links))

    def __str__(self):
        """pypet's text of a group: its name and first five children, '...' if more."""
        shown = ['(%s: %s)' % (name, type(child).__name__)
                 for name, child in itertools.islice(self._children.items(), 5)]
        return '%s %s: %s%s' % (type(self).__name__, self._full_name or '(root)',
                                ', '.join(shown), ', ...' if len(self._children) > 5 else '')

    def f_debug(self) -> object:
        """A plain object whose attributes are the children and links (groups nested the
        same way), for a debugger to unfold."""
        tree = types.SimpleNamespace()
        for name, child in self._children.items():
            setattr(tree, name, child if child.v_is_leaf else child.f_debug())
        for name, target in self._links.items():
            setattr(tree, name, target)
        return tree

    def f_tree(self, max_depth: int | None = None, config: bool = False,
               max_children: int = 10) -> str:
        """The tree below this group as text: a line per node with its value and comment.

        Args:
            max_depth: levels to show (None: all).
            config: show the config branch too (hidden by default, like `minipypet show`).
            max_children: children shown per group; the rest are counted.
        """
        lines = []
        self._tree_lines(lines, '', max_depth, config, max_children)
        return '\n'.join(lines)

    def f_print_tree(self, max_depth: int | None = None, config: bool = False,
                     max_children: int = 10, file: io.TextIOBase | None = None) -> None:
        """Print f_tree(...) (to `file`, default standard output)."""
        print(self.f_tree(max_depth, config, max_children), file=file)

    def _tree_lines(self, lines, indent, max_depth, config, max_children):
        if max_depth is not None and max_depth <= 0:
            return
        kids, more = self._children, 0
        if type(kids) is _PendingRuns and kids.layers and max_children is not None:
            children = kids.head(max_children)  # (those shown are made, no more)
            more = len(kids) - len(children)
        else:
            children = [c for c in kids.values() if config or c._full_name != 'config']
        for child in children[:max_children]:
            note = '  # ' + child._comment if child._comment else ''
            if child.v_is_leaf:
                lines.append('%s%s%s%s' % (indent, child._name, child._brief_text(), note))
                continue
            lines.append('%s%s/%s' % (indent, child._name, note))
            child._tree_lines(lines, indent + '  ', None if max_depth is None else
                              max_depth - 1, config, max_children)
        if len(children) + more > max_children:
            lines.append('%s... %d more' % (indent, len(children) + more - max_children))
        for name, target in self._links.items():
            lines.append('%s%s -> %s' % (indent, name, target._full_name))

    def f_iter_nodes(self, recursive: bool = True, max_depth: int | None = None,
                     predicate: object = None,
                     with_links: bool = False) -> collections.abc.Iterator:
        """Breadth-first iterator over the nodes below this group. predicate: a function
        of the node, or (as pypet) run indices or names, whose runs' nodes alone are
        kept among the runs' (the rest of the tree stays)."""
        if predicate is not None and not callable(predicate):
            keep = {_run_name(r) if isinstance(r, int) else r for r in (
                [predicate] if isinstance(predicate, (int, str)) else predicate)}

            def predicate(node):
                return all(p in keep for p in node._full_name.split('.')
                           if _RUN_RE.fullmatch(p))
        queue = collections.deque([(self, 0)])
        while queue:
            group, depth = queue.popleft()
            if max_depth is not None and depth >= max_depth:
                continue
            children = list(group._children.values())
            if group is self and self._parent is None and self._full_name == '':
                # pypet makes a branch group when something is added to it; minipypet has
                # all four from the start, and lists one only once it holds something
                children = [c for c in children if c._children or c._links or
                            c._annotations or c._comment]
            if with_links:
                children += list(group._links.values())
            for child in children:
                if predicate is None or predicate(child):
                    yield child
                if recursive and not child.v_is_leaf and child._parent is group:
                    queue.append((child, depth + 1))

    def f_iter_leaves(self, with_links: bool = False) -> collections.abc.Iterator:
        """Iterate over every leaf below this group."""
        for node in self.f_iter_nodes(with_links=with_links):
            if node.v_is_leaf:
                yield node

    def f_to_dict(self, fast_access: bool = False, short_names: bool = False, nested: bool = False,
                  copy: bool = True, with_links: bool = False) -> dict:
        """The leaves below this group as {full name: leaf or value}; nested=True gives
        nested dicts of the names below this group."""
        if short_names and nested:
            raise ConfigurationError('f_to_dict: short_names and nested exclude each other')
        result = {}
        skip = len(self._full_name) + 1 if nested and self._full_name else 0
        for leaf in self.f_iter_leaves(with_links=with_links):
            value = leaf._fast_value() if fast_access and leaf.f_supports_fast_access() else leaf
            key = leaf.v_name if short_names else leaf.v_full_name[skip:]
            if short_names and key in result:
                raise ValueError('short name %r is not unique below %s; use short_names=False'
                                 % (key, self._full_name or 'the trajectory'))
            if nested:
                target = result
                parts = key.split('.')
                for part in parts[:-1]:
                    target = target.setdefault(part, {})
                target[parts[-1]] = value
            else:
                result[key] = value
        return result

    # -- adding ------------------------------------------------------------------------------
    def f_add_group(self, name: str, comment: str = '') -> NNGroupNode:
        """Add a (possibly dotted) group below this one; or a group instance, with the
        nodes it holds."""
        if isinstance(name, NNGroupNode):
            return self._add_group_node(name)
        return self._root()._add_path(self, name, None, comment)

    def f_add_leaf(self, *args: object, **kwargs: object) -> NNLeafNode:
        """Add a leaf: (name, data, comment=...), (Class, name, ...) or (instance)."""
        branch = self._own_branch()
        if not branch and args:  # on the root the kind of leaf picks the branch
            kind = args[0] if isinstance(args[0], type) else type(args[0])
            branch = 'parameters' if issubclass(kind, BaseParameter) else 'results'
        default = {'parameters': Parameter, 'config': Parameter,
                   'derived_parameters': Parameter}.get(branch, Result)
        return self._add_leaf(branch or 'results', default, args, kwargs)

    def f_add_parameter(self, *args: object, **kwargs: object) -> NNLeafNode:
        """Add a parameter: (name, value, comment=...), (Class, name, ...) or (instance)."""
        return self._add_leaf('parameters', Parameter, args, kwargs)

    def f_add_config(self, *args: object, **kwargs: object) -> NNLeafNode:
        """Add a config entry below `config` (as f_add_parameter)."""
        return self._add_leaf('config', Parameter, args, kwargs)

    def f_add_derived_parameter(self, *args: object, **kwargs: object) -> NNLeafNode:
        """Add a derived parameter (below the run during a run), as f_add_parameter."""
        return self._add_leaf('derived_parameters', Parameter, args, kwargs)

    def f_add_result(self, *args: object, **kwargs: object) -> NNLeafNode:
        """Add a result: (name, *items, comment=..., **named_items), (Class, name, ...)
        or (instance). Inside a run it goes below results.runs.run_XXXXXXXX."""
        return self._add_leaf('results', Result, args, kwargs)

    def f_add_parameter_group(self, name: str, comment: str = '') -> NNGroupNode:
        """Add a group below `parameters` (dotted names make the groups between)."""
        return self._add_branch_group('parameters', name, comment)

    def f_add_config_group(self, name: str, comment: str = '') -> NNGroupNode:
        """Add a group below `config`."""
        return self._add_branch_group('config', name, comment)

    def f_add_derived_parameter_group(self, name: str, comment: str = '') -> NNGroupNode:
        """Add a group below `derived_parameters`."""
        return self._add_branch_group('derived_parameters', name, comment)

    def f_add_result_group(self, name: str, comment: str = '') -> NNGroupNode:
        """Add a group below `results`."""
        return self._add_branch_group('results', name, comment)

    def _add_branch_group(self, branch, name, comment):
        root = self._root()
        if isinstance(name, NNGroupNode):  # (pypet: a name or a group instance)
            start = self._branch_start(branch, 'group %r' % name._full_name)
            if '.' in name._full_name and not (name._traj is root and
                                               root._nodes.get(name._full_name) is name):
                name._rename(_strip_branch(name._full_name, branch, start))
            return start._add_group_node(name)
        if branch in ('parameters', 'config') and root._is_run:
            raise ParameterLockedError(
                'cannot add the %s group %r during run %d: parameters and config must be '
                'added before the runs' % (branch, name, root._idx))
        start = self._branch_start(branch, 'group %r' % name)
        rel = _strip_branch(name, branch, start)
        if root._is_run and branch in _RUN_BRANCHES and root._props['auto_run_prepend'] and \
                not any(_RUN_RE.fullmatch(p) or p in (RUN_NAME_DUMMY, '$', 'crun')
                        for p in rel.split('.')):  # (a group goes into the run, as a leaf)
            if start._full_name == branch and rel != 'runs':
                rel = 'runs.%s.%s' % (_run_name(root._idx), rel)
            elif start._full_name == branch + '.runs':
                rel = _run_name(root._idx) + '.' + rel
        return root._add_path(start, rel, None, comment)

    def _branch_start(self, branch, what):
        """`what` is a str or a leaf, named in the error."""
        root = self._root()
        if self is root:
            return root._children[branch]
        if self._own_branch() != branch:
            if not isinstance(what, str):
                what = '%s %r' % (branch, what._full_name)
            raise PypetError('cannot add %s below %s: it belongs below %s'
                             % (what, self._full_name, branch))
        return self

    def _add_leaf(self, branch, default_cls, args, kwargs):
        d = self.__dict__
        if d.get('_is_run') and len(args) == 2 and not kwargs and branch == 'results' and \
                type(args[0]) is str and args[0] in _PLAIN_NAMES and \
                type(args[1]) in _SCALAR_TYPES and d.get('_standard_result') is None and \
                not d.get('_presets'):
            # the common traj.f_add_result('z', 1.5) of a run, without the general walk:
            # what the rest of this method does for it, in short (held apart from the
            # tree where it can be, see Trajectory._hold_result)
            leaf = self._hold_result(*args)
            if leaf is not None:
                return leaf
            return self._add_path(self._children['results'], args[0], Result(*args), '')
        standard = self._root().__dict__.get(
            '_standard_result' if default_cls is Result else '_standard_parameter')
        if standard is not None:  # (pypet's v_standard_parameter / v_standard_result)
            default_cls = standard
        if not args and 'name' in kwargs:  # pypet: f_add_result(name='z', data=1)
            kwargs = dict(kwargs)
            args = (kwargs.pop('name'),)
        if args and type(args[0]) is str:  # the common f_add_result('z', value)
            leaf = default_cls(*args, **kwargs)
        elif args and isinstance(args[0], NNLeafNode):
            if len(args) > 1 or kwargs:
                raise TypeError('f_add_* with a leaf instance takes no further arguments')
            leaf = args[0]
        elif args and isinstance(args[0], type) and issubclass(args[0], NNLeafNode):
            leaf = args[0](*args[1:], **kwargs)
        else:
            if not args or not isinstance(args[0], str):
                raise TypeError('f_add_* needs a name (str), a leaf class or a leaf instance '
                                'first, got %r' % (args[:1],))
            leaf = default_cls(*args, **kwargs)
        root = self._root()
        if branch in ('parameters', 'config') and root._is_run:
            raise ParameterLockedError(  # (a TypeError, as pypet's)
                'cannot add %s %r during run %d: parameters and config must be added before '
                'the runs; use f_add_derived_parameter or f_add_result inside a run'
                % (branch, leaf._full_name, root._idx))
        start = self._branch_start(branch, leaf)
        name = leaf._full_name
        leaf = root._add_path(start, _strip_branch(name, branch, start) if '.' in name else name,
                              leaf, leaf._comment)
        presets = root.__dict__.get('_presets')
        if presets and leaf._full_name in presets:  # (f_preset_parameter: its value wins)
            args, kwargs = presets.pop(leaf._full_name)
            leaf.f_set(*args, **kwargs)
        return leaf

    def _own_branch(self):
        """v_branch; for a group made on its own, the branch its pypet class says."""
        root = self._root()
        if isinstance(root, _Holder):
            return root._detached_branch(self) or self.v_branch
        return self.v_branch

    def _add_group_node(self, group, links=None):
        """Add `group` itself where its name says, with the nodes it holds (a group made
        on its own, or removed from its trajectory). Links come last. In a run, a group
        below results or derived_parameters goes into the run, as a leaf does."""
        root, outer = self._root(), links is None
        if outer:
            self._check_group_to_add(group, root)
        kids, own_links = dict(group._children), dict(group._links)
        links = [] if outer else links
        count = len(root._nodes)
        new = root._add_path(self, group._full_name, None, '', in_run=outer)
        if new is group:
            return group
        if outer and len(root._nodes) == count:  # (pypet: one node of a name)
            raise InvalidNameError(
                'cannot add the group %s: %s exists already; add to that one, or remove it '
                'first with f_remove_child(%r, recursive=True)'
                % (group._full_name, new._full_name, new._name))
        group.__dict__.update(_children={}, _links={}, _name=new._name)
        root._insert(new._parent, group)  # (the group itself, in the new one's place)
        new = group
        for name, child in kids.items():
            child._rename(name)
            if child.v_is_leaf:
                new.f_add_leaf(child)
            else:
                new._add_group_node(child, links)
        links.extend((new, name, target) for name, target in own_links.items())
        if outer:
            for at, name, target in links:
                at.f_add_link(name, target)
        return new

    def _check_group_to_add(self, group, root):
        """Refuse, before anything changes, a group of another kind than its branch's, one
        of another trajectory, and one holding a link to a node of neither."""
        owner = group._traj
        if owner is not None and not isinstance(owner, _Holder) and \
                owner._nodes.get(group._full_name) is group:  # (a node is in one place)
            raise InvalidNameError(
                '%s is in this trajectory already, and a node is in one place at a time: '
                'link to it (f_add_link), or add a copy (copy.deepcopy(node))'
                % group._full_name if owner is root else
                '%s belongs to trajectory %r, and a node is in one trajectory at a time: add '
                'a copy (copy.deepcopy(node)), or remove it there first (f_remove_child)'
                % (group._full_name, owner.v_name))
        self._check_group_kind(group)
        branch = self._join(group._full_name).partition('.')[0]
        if isinstance(root, Trajectory) and root._is_run and \
                ABBREVIATIONS.get(branch, branch) in ('parameters', 'config'):
            raise ParameterLockedError(
                'cannot add the group %s during run %d: parameters and config must be added '
                'before the runs' % (self._join(group._full_name), root._idx))
        todo = [group]
        for g in todo:
            todo.extend(c for c in g._children.values() if not c.v_is_leaf)
            for name, target in g._links.items():
                inside = target is group or target._full_name.startswith(
                    group._full_name + '.') and target._traj is group._traj
                if not inside and root._nodes.get(target._full_name) is not target:
                    raise ConfigurationError(
                        'cannot add %s: its link %s.%s points to %s, which is in neither it '
                        'nor this trajectory; remove the link first (f_remove_link)'
                        % (group._full_name, g._full_name, name, target._full_name))

    def _check_group_kind(self, group):
        """pypet's rule: below a branch, that branch's group class; outside, NNGroupNode
        (a subclass of the user's own goes anywhere)."""
        kind = type(group).__dict__.get('_BRANCH')
        if kind is None and type(group) is not NNGroupNode:
            return
        head, _, rest = self._join(group._full_name).partition('.')
        branch = ABBREVIATIONS.get(head, head) if rest else ''
        branch = branch if branch in BRANCHES else ''
        if (kind or '') != branch:
            want = _GROUP_KINDS.get(branch, 'NNGroupNode')
            name = group._full_name
            raise UnsupportedTypeError(
                'a %s cannot be added as %s: below %s a group is a %s (as in pypet); '
                'assign %s(%r) instead' % (type(group).__name__, self._join(name),
                                           branch or 'the root', want, want, name))

    def f_add_link(self, name: str, target: NNTreeNode | str | None = None) -> NNTreeNode:
        """Link `name` in this group to `target` (a node of the same trajectory)."""
        if target is None:
            if not isinstance(name, NNTreeNode):
                raise ConfigurationError('f_add_link(%r) needs a target: pass a node, or a '
                                         'name and a node' % (name,))
            target, name = name, name.v_name
        root = self._root()
        if isinstance(root, Trajectory) and name in ('$', 'crun', '$set', 'crunset'):
            name = root._translate(name)  # (pypet: a link named after the current run)
        if isinstance(name, str) and '.' in name:  # pypet: the groups on the way are made
            head, _, name = name.rpartition('.')
            if isinstance(root, Trajectory):  # ('res.runs.crun.ff': results.runs.run_X)
                head = '.'.join(root._translate(p) for p in head.split('.'))
                if name in ('$', 'crun', '$set', 'crunset'):  # ('results.$')
                    name = root._translate(name)
            _check_name(name, self._join(head))
            return root._add_path(self, head, None, '').f_add_link(name, target)
        _check_name(name, self._full_name)
        if isinstance(target, str):
            target = root.f_get(target)
        if not isinstance(target, NNTreeNode) or target._traj is not root or target is root:
            raise ConfigurationError('a link target must be a node of this trajectory, got %r'
                                     % (target,))
        if name in self._children:
            raise InvalidNameError('%s already has a child %r' % (self._full_name, name))
        if name == 'overview' and self is root:  # (pypet's reserved name at the root)
            raise InvalidNameError("'overview' is reserved at the trajectory's root; "
                                   "put the link into a group")
        self._links[name] = target
        root._link_count += 1
        if root.__dict__.get('_is_run'):  # (stored with the run, see _run_record)
            root.__dict__.setdefault('_new_links', []).append((self, name))
        return target

    def f_remove_link(self, name: str) -> None:
        """Remove the link `name` from this group."""
        if name not in self._links:
            raise NoSuchChildError('%s has no link %r; it has %s' % (
                self._full_name or 'the trajectory', name, sorted(self._links)))
        del self._links[name]
        root = self._root()
        root._link_count = max(root._link_count - 1, 0)  # (a count of 0 skips link searches)

    # -- removal -----------------------------------------------------------------------------
    def f_remove_child(self, name: str, recursive: bool = False, predicate: object = None) -> None:
        """Remove the child `name` from memory (not from the file)."""
        if name in self._links:
            self.f_remove_link(name)
            return
        child = self._children.get(name)
        if child is None:
            raise NoSuchChildError('%s has no child %r; it has %s' % (
                self._full_name or 'the trajectory', name,
                _short_repr(sorted(self._children), 200)))
        if not child.v_is_leaf and child._children and not recursive:
            raise GroupNotEmptyError('%s has children; pass recursive=True to remove it'
                                     % child._full_name)
        self._root()._remove_subtree(child, predicate)

    def f_remove(self, recursive: bool = True, predicate: object = None) -> None:
        """Remove this group (and, with recursive, everything below it) from memory."""
        if self._parent is None:  # pypet: the trajectory empties itself, the root stays
            if not recursive:
                raise ConfigurationError('the trajectory root cannot be removed; '
                                         'traj.f_remove() removes everything below it')
            for group in [self] + [self._children[b] for b in BRANCHES
                                   if b in self._children]:
                for name in list(group._links):
                    group.f_remove_link(name)
                for name in list(group._children):
                    if group is not self or name not in BRANCHES:  # (branches stay)
                        group.f_remove_child(name, True, predicate)
            return
        self._parent.f_remove_child(self._name, recursive, predicate)

    def f_store(self, recursive: bool = True, store_data: int = STORE_DATA,
                max_depth: int | None = None) -> None:
        """Store this group (and, recursive, what is below it, down to max_depth levels)."""
        self._root().f_store_item(self, recursive=recursive, store_data=store_data,
                                  max_depth=max_depth)

    def f_load(self, recursive: bool = True, load_data: int = LOAD_DATA,
               max_depth: int | None = None) -> NNGroupNode:
        """Load this group (and, recursive, what is below it, down to max_depth levels)."""
        self._root().f_load_item(self._full_name, recursive=recursive, load_data=load_data,
                                 max_depth=max_depth)
        return self

    def f_store_child(self, name: str, recursive: bool = False,
                      store_data: int = STORE_DATA, max_depth: int | None = None) -> None:
        """Store the child `name` (a dotted path below this group, no shortcut;
        recursive: with what is below it, down to max_depth levels below this group)."""
        root = self._root()
        node = root._resolve(self, name, False, None, True)
        if node is None:
            raise NoSuchChildError('%s has no child %r (f_store_child takes a path below the '
                                   'group, no shortcut)' % (self._full_name or 'the trajectory',
                                                            name))
        root.f_store_item(node, recursive=recursive, store_data=store_data, max_depth=None
                          if max_depth is None else max_depth - 1 - name.count('.'))

    def f_load_child(self, name: str, recursive: bool = False, load_data: int = LOAD_DATA,
                     max_depth: int | None = None) -> NNTreeNode:
        """Load the child `name` from storage (recursive: what is below it, down to
        max_depth levels below this group)."""
        root = self._root()
        root.f_load_item(self._join(name), recursive=recursive, load_data=load_data,
                         max_depth=None if max_depth is None
                         else max_depth - 1 - name.count('.'))
        return self.f_get(name)


def _strip_branch(name, branch, start):
    """Names given to f_add_* on the root are relative to the branch: drop a leading branch."""
    if start._full_name == branch:
        head, _, rest = name.partition('.')
        if rest and (head == branch or ABBREVIATIONS.get(head) == branch):
            return rest
    return name


# ============================================================================================
# Nodes made in bulk - loaded leaves and groups, and the runs made when touched
# ============================================================================================
def _leaf_dict(cls, name, traj):
    """The attributes a leaf of class `cls` named `name` starts with when a load makes
    it without __init__ (its full name, comment and parent are set after)."""
    d = dict(_name=name, _traj=traj, _annotations=None, _refused=None)
    if issubclass(cls, BaseResult):
        d['_data'] = {}
    else:
        d.update(_data=None, _default=None, _explored_range=None, _locked=False, _empty=True)
    if cls is PickleResult or cls is PickleParameter:
        d['_protocol'] = pickle.HIGHEST_PROTOCOL
    return d


def _new_group(name, cls=None):
    """A group without the __init__ chain (bulk loading creates one per run)."""
    cls = cls or NNGroupNode
    group = cls.__new__(cls)
    d = group.__dict__
    d.update(_GROUP_DICT)
    d['_full_name'] = d['_name'] = name
    d['_children'], d['_links'] = {}, {}
    return group


_GROUP_DICT = {'_comment': '', '_parent': None, '_traj': None, '_annotations': None}
_BRANCH_GROUP = {}  # branch -> pypet's group class there (ParameterGroup, ...; made below)
_HELD_RESULT = {'_comment': '', '_annotations': None, '_refused': None}  # _hold_result


def _plain_rows(rows):
    """True if the rows' leaves load their data without unpickling (a run made later
    loads outside f_load's allow_pickle, so pickled data is placed at once)."""
    if type(rows) is _ColumnRows:
        tags = {rows.extras[0], *rows.extras[3].values(),
                *(row[0] for row in rows.extra.values())}
    else:
        tags = {row[0] for row in rows.values()}
    return tags <= _PLAIN_TAGS


_PLAIN_TAGS = frozenset(('Result', 'Parameter', 'ArrayParameter', 'SparseParameter',
                         'SparseResult'))


class _PendingRuns(dict):
    """The children of a loaded `runs` group: run groups made when first touched.

    A load keeps each run column's rows ({run index: (class, comment, annotations,
    data)}) as a layer here instead of making a group and a leaf per run (1M runs: ~2
    KB and ~13 us each). Looking one run up (get, [], in) makes that run's group; len
    counts the runs without making them; anything that lists the children (iteration,
    values, items, copy) makes them all first, in one batch. The trajectory's
    `_lazy_names` says which names a pending run may hold: lookups that skip groups
    (traj.z, f_get_all) make the runs they may find."""
    __slots__ = ('group', 'layers', 'done', 'count', 'stamp')

    def __init__(self, group, made=()):
        dict.__init__(self, made)
        self.group, self.layers, self.done, self.count = group, [], set(), None
        self.stamp = None  # (the files as loaded; see _RunsMixin._loaded_column)

    def __reduce__(self):  # (a copy of a trajectory, for a worker: still pending)
        return _PendingRuns, (None,), (self.group, self.layers, self.done, dict(
            dict.items(self)))

    def __setstate__(self, state):
        self.group, self.layers, self.done, made = state
        self.count = self.stamp = None
        dict.update(self, made)

    def add(self, template, rows, mode):
        """Keep the rows of `template` (branch.runs.$.tail) to place when asked."""
        self.layers.append((template, rows, mode))
        if self.done:  # (removed once, loaded again: pending again)
            self.done = {i for i in self.done if i not in rows}
        self.count = None

    def _idx(self, name):
        """The pending run index of the child `name`, or None."""
        if not self.layers or type(name) is not str or dict.__contains__(self, name):
            return None
        match = _RUN_RE.fullmatch(name)
        idx = int(match.group(1)) if match else -1 if name == RUN_NAME_DUMMY else None
        if idx is None or idx in self.done or not any(idx in rows for _, rows, _ in
                                                      self.layers):
            return None
        return idx

    def make(self, idxs=None):
        """Place the pending runs `idxs` (None: all of them, in the order loaded)."""
        layers, traj = self.layers, self.group._traj
        if idxs is None:
            self.layers, self.count = [], None  # (first: placing inserts into self)
            done, early = self.done, dict.__len__(self)
            gc_was_enabled = gc.isenabled()
            gc.disable()  # (as f_load: the GC's passes would rescan the growing tree)
            try:
                for template, rows, mode in layers:
                    if done:
                        rows = {i: r for i, r in rows.items() if i not in done}
                    traj._place_rows(template, rows, mode, lazy=False)
            finally:
                if gc_was_enabled:
                    gc.enable()
            self.done = set()
            if early:  # (runs made one by one before: in their places, as loaded)
                self._reorder(layers)
        else:
            self.done.update(idxs)
            for template, rows, mode in layers:
                some = {i: rows[i] for i in idxs if i in rows}
                if some:
                    traj._place_rows(template, some, mode, lazy=False)
            if len(self.done) >= self._pending_total():  # (the last: in load order)
                self._reorder(layers)
        if not self.layers or len(self.done) >= self._pending_total():
            self.layers, self.done, self.count = [], set(), None
            traj._lazy_changed()

    def _reorder(self, layers):
        order, fmt = {}, FORMATTED_RUN_NAME
        for _, rows, _ in layers:
            order.update(dict.fromkeys(fmt % i if i >= 0 else RUN_NAME_DUMMY
                                       for i in rows))
        made = dict(dict.items(self))
        dict.clear(self)
        for name in order:
            if name in made:
                dict.__setitem__(self, name, made.pop(name))
        dict.update(self, made)  # (runs added since: after them)

    def head(self, k):
        """The first `k` runs in the order loaded (made where pending), then runs added
        since."""
        fmt, names, want = FORMATTED_RUN_NAME, [], []
        for _, rows, _ in self.layers:
            for i in rows:
                if len(names) >= k:
                    break
                name = fmt % i if i >= 0 else RUN_NAME_DUMMY
                made = dict.__contains__(self, name)
                if name not in names and (made or i not in self.done):
                    names.append(name)
                    if not made:
                        want.append(i)
        if want:
            self.make(want)
        names += [n for n in dict.keys(self) if n not in names][:max(0, k - len(names))]
        return [dict.__getitem__(self, n) for n in names]

    def _pending_total(self):
        if self.count is None:
            keys = [rows.keys() for _, rows, _ in self.layers]
            self.count = len(keys[0]) if len(keys) == 1 else len(set().union(*keys)) \
                if keys else 0
        return self.count

    def pending(self):
        """The number of runs not made yet."""
        return self._pending_total() - len(self.done) if self.layers else 0

    def get(self, name, default=None):
        idx = self._idx(name)
        if idx is not None:
            self.make([idx])
        return dict.get(self, name, default)

    def __getitem__(self, name):
        idx = self._idx(name)
        if idx is not None:
            self.make([idx])
        return dict.__getitem__(self, name)

    def __contains__(self, name):
        return dict.__contains__(self, name) or self._idx(name) is not None

    def __len__(self):
        return dict.__len__(self) + self.pending()

    def __setitem__(self, name, node):
        idx = self._idx(name)
        if idx is not None:  # (a new group in its place: the pending one is dropped)
            self.done.add(idx)
        dict.__setitem__(self, name, node)

    def __delitem__(self, name):
        idx = self._idx(name)
        if idx is not None:
            self.done.add(idx)
        else:
            dict.__delitem__(self, name)

    def forget(self):
        """Drop the pending runs unmade (their group is removed from memory)."""
        if self.layers:
            self.layers, self.done, self.count = [], set(), None
            self.group._traj._lazy_changed()

    def pop(self, name, *default):
        self.get(name)
        return dict.pop(self, name, *default)


def _listing(name):
    """dict's method `name`, after every pending run is made (see _PendingRuns)."""
    method = getattr(dict, name)

    def listing(self, *args):
        if self.layers:
            self.make()
        return method(self, *args)
    listing.__name__ = name
    return listing


for _name in ('__iter__', 'keys', 'values', 'items', 'copy', 'popitem', 'setdefault',
              'update', 'clear', '__reversed__'):
    setattr(_PendingRuns, _name, _listing(_name))
del _name


# ============================================================================================
# Signed pickles - whose pickled data may be loaded
# ============================================================================================
# Trust: pickled data (PickleParameter, PickleResult, the .cnt and .cnt.results) runs code
# when it is unpickled, so by default it is unpickled only where this user wrote it: what
# minipypet pickles is signed with HMAC-SHA256 under a per-user secret key, kept in the
# user's configuration folder (as Jupyter trusts notebooks). Anything else needs
# allow_pickle=True, or `python -m minipypet trust FILE`, which records the digests of the
# pickles a file holds as trusted. numpy's allow_pickle=False default is the precedent.
_KEYS = {}  # ($XDG_CONFIG_HOME, $HOME) -> key (a test points them elsewhere: another user)


def _config_folder():
    base = os.environ.get('XDG_CONFIG_HOME') or os.path.join(os.path.expanduser('~'),
                                                             '.config')
    return os.path.join(base, 'minipypet')


def _user_key():
    """This user's signing key: 32 random bytes in <config>/minipypet/key, made 0600 the
    first time (by a hard link of a whole temp file, so that two processes agree on one)."""
    key = _KEYS.get((os.environ.get('XDG_CONFIG_HOME'), os.environ.get('HOME')))
    if key is not None:  # (asked per signature: the common case costs two lookups)
        return key
    path = os.path.join(_config_folder(), 'key')
    try:
        with open(path, 'rb') as f:
            key = bytes.fromhex(f.read().decode('ascii').strip())
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = '%s.%d-%s.tmp' % (path, os.getpid(), os.urandom(4).hex())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(os.urandom(32).hex() + '\n')
        try:
            os.link(tmp, path)  # (fails if another process made it first: use that one)
        except FileExistsError:
            pass
        except OSError:  # no hard links here
            if not os.path.exists(path):
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return _user_key()
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError('cannot read the signing key %s (%s); remove it to make a new '
                                 'one (files signed with it are then trusted no more)'
                                 % (path, exc)) from exc
    if len(key) < 16:
        raise ConfigurationError('the signing key %s is too short; remove it to make a new one'
                                 % path)
    _KEYS[os.environ.get('XDG_CONFIG_HOME'), os.environ.get('HOME')] = key
    return key


def _message(parts):
    """What a signature covers: the pickles (and their names) of one leaf or record,
    each after its length (so that no two lists of parts give one message)."""
    pack = _LENGTH.pack
    return b''.join(pack(len(p)) + p for p in (
        p.encode('utf-8', 'surrogatepass') if isinstance(p, str) else p for p in parts))


_LENGTH = struct.Struct('<Q')


def _signed_message(parts):
    """The SHA-256 of a message: what `minipypet trust` records."""
    return hashlib.sha256(_message(parts)).digest()


def _sign(parts):
    """HMAC-SHA256 of `parts` under this user's key, its first 128 bits in hex (as RFC 2104
    allows: half the hash; a signature per run costs 32 characters); ~7 us a leaf."""
    return hmac.digest(_user_key(), _message(parts), 'sha256')[:16].hex()


def _trusted(parts, signature):
    """True if this user signed `parts`, or trusted them with `minipypet trust`."""
    if isinstance(signature, str) and hmac.compare_digest(
            _sign(parts).encode('ascii'), signature.encode('utf-8', 'replace')):
        return True
    return _signed_message(parts).hex() in _trusted_digests()


_TRUSTED = {}  # trusted-digests file -> (its mtime and size, the set of digests)


def _trusted_digests():
    path = os.path.join(_config_folder(), 'trusted')
    try:
        st = os.stat(path)
    except OSError:
        return frozenset()
    cached = _TRUSTED.get(path)
    if cached is None or cached[0] != (st.st_mtime_ns, st.st_size):
        with open(path, 'r', encoding='ascii', errors='replace') as f:
            cached = _TRUSTED[path] = ((st.st_mtime_ns, st.st_size),
                                      {line.strip() for line in f})
    return cached[1]


def _add_trusted(digests):
    """Append digests (hex) to this user's trusted list (0600)."""
    folder = _config_folder()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    known = _trusted_digests()
    new = sorted(set(digests) - known)
    fd = os.open(os.path.join(folder, 'trusted'), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o600)
    with os.fdopen(fd, 'a') as f:
        f.write(''.join(d + '\n' for d in new))
    return len(new)


class _LoadPolicy(threading.local):
    allow_pickle = None  # True: unpickle; None: only what is trusted; False: nothing
    source = None  # the file being read (named when a pickle is refused)
    collect = None  # a set: `minipypet trust` gathers digests instead of unpickling


_LOAD_POLICY = _LoadPolicy()


def _untrusted_text(what, source, resume=False):
    source = source or 'the file'
    return ('%s holds pickled data that this user did not write (its signature does not check '
            'out with your key in %s: another user wrote it, or it was changed since), and '
            'unpickling it could run any code. If you trust %s, '
            '%s with allow_pickle=True, or trust it once: python -m minipypet trust %s'
            % (what, _config_folder(), source, 'resume' if resume else 'load it',
               _shell_quote(source)))


def _unpickle_parts(parts, signature, where):
    """Unpickle the pickles of one leaf (`parts`: [name, pickle, ...]) if the policy allows:
    allow_pickle=True always, None (the default) where they are trusted, False never."""
    policy = _LOAD_POLICY
    if policy.collect is not None:
        policy.collect.add(_signed_message(parts).hex())
        return None
    if policy.allow_pickle is False:
        raise PickleRefusedError('%s holds pickled data and allow_pickle=False; it was not '
                                 'unpickled (load with allow_pickle=True if you trust the file)'
                                 % where)
    if policy.allow_pickle is None and not _trusted(parts, signature):
        raise PickleRefusedError(_untrusted_text(where, policy.source))
    return [_NumpyCompatUnpickler(io.BytesIO(p)).load() for p in parts[1::2]]


# ============================================================================================
# Parameters - leaves that hold one value and can be explored
# ============================================================================================
class NNLeafNode(NNTreeNode):
    """A leaf. Subclasses hold data and convert it to plain data for storage.

    The contract for your own leaf classes: implement `f_supports(data)`, `_store()` returning
    a dict of plain data (numbers, str, bytes, lists, tuples, dicts, numpy arrays) and
    `_load(dict)` that restores the leaf from it; register the class with `dynamic_imports`
    (or keep it importable under its module path, which is stored too)."""

    v_is_leaf = property(lambda self: True,
                         doc='True for leaves.')
    v_is_parameter = property(lambda self: isinstance(self, BaseParameter),
                              doc='True for parameters.')
    v_stored = property(lambda self: self._traj is not None and self._traj._stored,
                        doc='True once its trajectory was stored or loaded')

    def f_get_class_name(self) -> str:
        """The leaf's class name, e.g. 'Parameter'."""
        return type(self).__name__

    def f_supports_fast_access(self) -> bool:
        """True if fast access returns a value instead of the leaf."""
        return False

    def _fast_value(self):
        return self

    def f_is_empty(self) -> None:
        """True if the leaf holds no data."""
        raise NotImplementedError

    def f_empty(self) -> None:
        """Drop the data (the leaf stays in the tree)."""
        raise NotImplementedError

    def f_supports(self, data: object) -> bool:
        """True if the leaf can hold `data`."""
        return True

    def _store(self):
        raise NotImplementedError

    def _load(self, data):
        raise NotImplementedError

    def f_val_to_str(self) -> str:
        """The data as short text."""
        return _short_repr(self._store() if not self.f_is_empty() else '', 64)

    def _brief_text(self):
        """' = value  [Class]' for reprs and the tree printer (locks nothing)."""
        if self.f_is_empty():
            return ' (empty%s)  [%s]' % (', loaded as a skeleton' if self.v_stored else '',
                                         type(self).__name__)
        return ' = %s  [%s]' % (self._brief_value(), type(self).__name__)

    def _brief_value(self):
        return self.f_val_to_str()

    def __repr__(self):
        return '<%s %s%s>' % (type(self).__name__, self._full_name,
                              self._brief_text().rpartition('  [')[0])

    def __str__(self):
        """pypet's text of a leaf: 'Parameter parameters.x (`comment`): 42'."""
        return '%s %s%s: %s' % (type(self).__name__, self._full_name, ' (`%s`)' % self._comment
                                if self._comment else '', self.f_val_to_str())

    @property
    def v_class_name(self) -> str:
        """The leaf's class name."""
        return type(self).__name__


class BaseParameter(NNLeafNode):
    """A parameter: a default value, optionally explored over a range of values."""

    def __init__(self, full_name: str, data: object = None, comment: str = '') -> None:
        super().__init__(full_name, comment)
        d = self.__dict__
        d['_data'] = d['_default'] = None
        d['_explored_range'] = None
        d['_locked'] = False
        d['_empty'] = True
        d['_refused'] = None
        if data is not None:
            self.f_set(data)

    # -- value -------------------------------------------------------------------------------
    def f_set(self, data: object) -> None:
        """Set the default value (only before it is read or explored)."""
        if self._explored_range is not None:
            raise ParameterLockedError(
                '%s is explored; change its values with f_explore/f_expand, or f_shrink() the '
                'exploration first' % self._full_name)
        if self._locked:
            raise ParameterLockedError(
                '%s is locked (its value was read, e.g. during a run); call f_unlock() first '
                'if you really want to change it' % self._full_name)
        if data is None:
            raise UnsupportedTypeError('%s: None is not a parameter value; use f_empty() to '
                                       'clear it' % self._full_name)
        data = self._check_value(data)
        self._data = self._default = data
        self._empty = False

    def f_get(self) -> object:
        """The value (of the current run if explored); reading locks the parameter."""
        if self._empty:
            raise (PickleRefusedError if self._refused else PypetError)(
                '%s is empty%s' % (self._full_name, self._refused or
                                   ' (no value set or loaded); set it with f_set(value) or '
                                   'load it with traj.f_load_item(...)'))
        self._locked = True
        return self._data

    data = property(lambda self: self.f_get(), doc='The value (pypet 0.7 spelling).')
    default = property(lambda self: self._default, doc='The default value (pypet spelling).')

    def __getitem__(self, key):
        """pypet: param['data'], param['default'], param[i] (the i-th explored value; -1
        the default)."""
        if key == 'data':
            return self.f_get()
        if key == 'default' or key == -1:
            return self._default
        if isinstance(key, int) and not isinstance(key, bool):
            if self._explored_range is None:
                raise TypeError('%s is not explored: it has no value %d (use -1 or "default" '
                                'for its default)' % (self._full_name, key))
            return self._explored_range[key]
        raise TypeError('%s: use param["data"], param["default"] or param[run index], not %r'
                        % (self._full_name, key))

    def f_get_default(self) -> object:
        """The default value (the one outside runs)."""
        return self._default

    def f_supports(self, data: object) -> bool:
        """True if the parameter can hold `data` (override this in your own classes)."""
        return True

    def _check_value(self, data):
        if not self.f_supports(data):
            raise UnsupportedTypeError('%s: %s does not support %s %s' % (
                self._full_name, type(self).__name__, _type_name(data), _short_repr(data)))
        return data

    def _coerce(self, value, position):
        return self._check_value(value)

    def f_is_empty(self) -> bool:
        """True if no value is set or loaded."""
        return self._empty

    def f_empty(self) -> None:
        """Drop the value and the range (refused while locked)."""
        if self._locked:
            raise ParameterLockedError('%s is locked; call f_unlock() before f_empty()'
                                       % self._full_name)
        self._data = self._default = None
        self._explored_range = None
        self._empty = True

    def f_supports_fast_access(self) -> bool:
        """True unless empty: fast access returns the value."""
        return not self._empty

    def _fast_value(self):
        return self.f_get()

    def f_lock(self) -> None:
        """Lock the value: f_set raises until f_unlock()."""
        self._locked = True

    def f_unlock(self) -> None:
        """Allow f_set again."""
        self._locked = False

    v_locked = property(lambda self: self._locked,
                        doc='True if f_set is refused (read during a run, or f_lock).')
    v_explored = property(lambda self: self._explored_range is not None or
                          '_range_dropped' in self.__dict__,
                          doc='True if the parameter has a range (or had one before a '
                              'copy without it, see v_full_copy).')

    @property
    def v_full_copy(self) -> bool:
        """pypet's: False makes a pickle (or copy) of the parameter keep its current value
        and drop the range (it stays v_explored); True, the default here, keeps the range."""
        return self.__dict__.get('_full_copy', True)

    @v_full_copy.setter
    def v_full_copy(self, value):
        self.__dict__['_full_copy'] = bool(value)

    def __getstate__(self):
        state = self.__dict__
        if state.get('_full_copy', True) or state['_explored_range'] is None:
            return state
        return dict(state, _explored_range=None, _range_dropped=True)

    # -- exploration -------------------------------------------------------------------------
    def f_has_range(self) -> bool:
        """True if the parameter is explored."""
        return self._explored_range is not None

    def f_get_range(self, copy: bool = True) -> list:
        """The explored values, one per run (a copy unless copy=False)."""
        if self._explored_range is None:
            if self._traj is not None and self._full_name in self._traj._explored:
                self._traj._check_ranges('f_get_range')
            raise PypetError('%s is not explored, it has no range' % self._full_name)
        return list(self._explored_range) if copy else self._explored_range

    def f_get_range_length(self) -> int:
        """The number of explored values."""
        return len(self._explored_range) if self._explored_range is not None else 1

    def __len__(self):
        return self.f_get_range_length()

    def _check_range_change(self, what, explored):
        """Raise unless the range may change: unlocked, explored (or not) as `what` needs."""
        if self._locked:
            raise ParameterLockedError('%s is locked (exploring locks it, as does reading it); '
                                       'call f_unlock() before %s' % (self._full_name, what))
        if explored is not None and (self._explored_range is not None) != explored:
            raise ParameterLockedError(
                '%s is %s: %s' % (self._full_name, 'explored already' if not explored else
                                  'not explored', 'use _expand to add values, or _shrink first'
                                  if not explored else 'explore it first'))

    def _explore(self, values):
        self._check_range_change('exploring it', explored=False)
        if self._empty or self.__dict__['_data'] is None:
            raise UnsupportedTypeError(
                '%s has no default value; set one with f_set(value) before exploring it (the '
                'default fixes the type of the explored values)' % self._full_name)
        values = list(values)
        if not values:
            raise ConfigurationError('%s: an exploration range must not be empty'
                                     % self._full_name)
        coerced = [self._coerce(v, i) for i, v in enumerate(values)]
        self._explored_range = coerced
        self._data = self._default  # outside a run an explored parameter reads its default
        self._locked = True  # an explored value is set by the runs, never by f_set (pypet)

    def _expand(self, values):
        self._check_range_change('expanding it', explored=True)
        coerced = [self._coerce(v, len(self._explored_range) + i)
                   for i, v in enumerate(values)]
        self._explored_range.extend(coerced)
        self._locked = True

    def _shrink(self):
        self._check_range_change('shrinking it', explored=True)
        self._explored_range = None
        self._data = self._default

    def _set_parameter_access(self, idx):
        try:
            self.__dict__['_data'] = self._explored_range[idx]
        except IndexError:  # (pypet: a ValueError)
            raise ConfigurationError('%s has %d explored values; there is no run index %d'
                                     % (self._full_name, len(self._explored_range), idx)
                                     ) from None

    def _values_of_same_type(self, value1, value2):
        """True if both values are of the type this parameter holds and explores alike
        (pypet 0.7's check before exploring); TypeError if it holds neither."""
        supported = self.f_supports(value1), self.f_supports(value2)
        if not any(supported):
            raise UnsupportedTypeError('%s holds neither %s nor %s' % (
                self._full_name, _type_name(value1), _type_name(value2)))
        return all(supported) and self._same_type(value1, value2)

    def _same_type(self, value1, value2):
        if type(value1) is not type(value2):
            return False
        if _is_numpy(value1) and hasattr(value1, 'dtype'):
            return value1.dtype == value2.dtype and \
                getattr(value1, 'shape', ()) == getattr(value2, 'shape', ())
        if type(value1) in (list, tuple) and value1 and value2:
            return type(value1[0]) is type(value2[0])
        return True

    def _equal_values(self, value1, value2):
        """True if the parameter holds both values and they are equal (numpy arrays
        compared element by element); TypeError if it holds neither."""
        return self._values_of_same_type(value1, value2) and nested_equal(value1, value2)

    def _restore_default(self):
        self.__dict__['_data'] = self._default

    def f_val_to_str(self) -> str:
        """The value as short text."""
        return '' if self._empty else _short_repr(self._data, 64)

    def _brief_value(self):
        text = _brief(self._data)
        if self._explored_range is not None:
            text += ' (explored: %d values)' % len(self._explored_range)
        return text

    # -- storage -----------------------------------------------------------------------------
    def _store(self):
        data = {'data': self._default}
        if self._explored_range is not None:
            data['explored_data'] = list(self._explored_range)
        return data

    def _load(self, data):
        self._data = self._default = data['data']
        explored = data.get('explored_data')
        self._explored_range = list(explored) if explored is not None else None
        self._empty = False


_PY_KINDS = {bool: 'b', int: 'iu', float: 'fiu', complex: 'cfiu', str: 'U', bytes: 'S'}


class Parameter(BaseParameter):
    """A parameter holding a bool, int, float, complex, str, bytes, a homogeneous
    non-empty list/tuple of these, or (with numpy) a numpy scalar or array."""

    def f_supports(self, data: object) -> bool:
        """True if a Parameter can hold `data` (scalars, homogeneous lists/tuples, numpy data)."""
        try:
            self._check_value(data)
            return True
        except PypetError:
            return False

    def _check_value(self, data):
        t = type(data)
        if t in _SCALARS:
            return data
        if t in (list, tuple):
            if not data:
                raise UnsupportedTypeError('%s: an empty %s is not a parameter value'
                                           % (self._full_name, t.__name__))
            first = type(data[0])
            if first not in _SCALARS or any(type(v) is not first for v in data):
                raise UnsupportedTypeError(
                    '%s: a list/tuple parameter must hold values of one scalar type, got %r; '
                    'use a PickleParameter for mixed or nested data'
                    % (self._full_name, _short_repr(data)))
            return data
        if _is_numpy(data):
            kind = getattr(getattr(data, 'dtype', None), 'kind', 'O')
            if kind in 'biufcSU' and (getattr(data, 'size', 1) > 0):
                return data
        raise UnsupportedTypeError(
            '%s: cannot hold %s %r; a Parameter takes bool, int, float, complex, str, bytes, '
            'homogeneous lists/tuples of them or numpy data; use PickleParameter for anything '
            'else' % (self._full_name, _type_name(data), _short_repr(data)))

    def _coerce(self, value, position):
        default = self._default
        dt, vt = type(default), type(value)
        if vt is dt and dt in _SCALARS:
            return value
        if dt in _SCALARS:
            if _is_numpy(value) and getattr(value, 'ndim', 1) == 0 and \
                    value.dtype.kind in _PY_KINDS[dt]:
                return dt(value.item() if dt is not bytes else value.tobytes())
            if vt in (int,) and dt in (float, complex) or (vt is float and dt is complex):
                return dt(value)
        elif dt in (list, tuple) and vt is dt:
            return self._check_value(value)
        elif _is_numpy(default) and _is_numpy(value):
            if type(default) is type(value) or (
                    getattr(value, 'dtype', None) is not None and
                    value.dtype.kind == default.dtype.kind):
                return self._check_value(value)
        elif _is_numpy(default) and vt in _SCALARS and getattr(default, 'ndim', 1) == 0:
            coerced = default.dtype.type(value)
            if coerced == value:
                return coerced
        raise UnsupportedTypeError(
            '%s: explored value %s at position %d is a %s but the parameter holds %s; explore '
            'it with values of the same type' % (
                self._full_name, _short_repr(value), position, _type_name(value), _type_name(
                    default)))


class ArrayParameter(Parameter):
    """A Parameter meant for arrays, tuples and lists (kept for pypet compatibility); it
    also holds an empty tuple, list or 1-d numpy array, as pypet's does."""

    def _check_value(self, data):
        if type(data) in (tuple, list) and not data:
            return data
        if _is_numpy(data) and getattr(data, 'ndim', 0) == 1 and data.size == 0 and \
                data.dtype.kind in 'biufcSU':  # (pypet's ArrayParameter holds these too)
            return data
        return super()._check_value(data)


class SparseParameter(ArrayParameter):
    """An ArrayParameter that also holds scipy.sparse matrices (csr, csc, bsr, dia, coo),
    stored as their plain arrays (scipy is needed only to read them back as matrices)."""

    def _check_value(self, data):
        if _is_frame_or_sparse(data) and _pandas_kind(data) is None:
            _to_plain(data, self._full_name)
            return data
        return super()._check_value(data)

    def _coerce(self, value, position):
        if _is_frame_or_sparse(self._default) and _pandas_kind(self._default) is None:
            if type(value) is not type(self._default):
                raise UnsupportedTypeError(
                    '%s: explored value at position %d is a %s but the parameter holds a %s; '
                    'explore it with matrices of one format' % (
                        self._full_name, position, _type_name(value),
                        _type_name(self._default)))
            return value
        return super()._coerce(value, position)

    def _store(self):
        data = super()._store()
        data['data'] = _to_plain(data['data'], self._full_name)
        if 'explored_data' in data:
            data['explored_data'] = [_to_plain(v, self._full_name)
                                     for v in data['explored_data']]
        return data

    def _load(self, data):
        data = dict(data, data=_from_plain(data['data']))
        if data.get('explored_data') is not None:
            data['explored_data'] = [_from_plain(v) for v in data['explored_data']]
        super()._load(data)


class PickleParameter(BaseParameter):
    """A parameter holding anything picklable; it is stored pickled."""

    def __init__(self, full_name: str, data: object = None, comment: str = '',
                 protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.__dict__['_protocol'] = protocol
        super().__init__(full_name, data, comment)

    v_protocol = property(lambda self: self._protocol,
                          lambda self, protocol: self.__dict__.__setitem__('_protocol', protocol),
                          doc='The pickle protocol the value is stored with.')

    def _check_value(self, data):
        try:
            pickle.dumps(data, protocol=self._protocol)
        except Exception as exc:
            raise UnsupportedTypeError('%s: %r cannot be pickled (%s)'
                                       % (self._full_name, _short_repr(data), exc)) from exc
        return data

    def _coerce(self, value, position):  # (pypet wants the default's type; any value here)
        return self._check_value(value)

    def _store(self):
        dump = functools.partial(pickle.dumps, protocol=self._protocol)
        data = {'data': dump(self._default), 'protocol': self._protocol}
        if self._explored_range is not None:
            data['explored_data'] = [dump(v) for v in self._explored_range]
        data['hmac'] = _sign(self._pickles(data))
        return data

    @staticmethod
    def _pickles(data):
        parts = ['data', data['data']]
        for i, blob in enumerate(data.get('explored_data') or ()):
            parts += [str(i), blob]
        return parts

    def _load(self, data):
        where = self._full_name
        try:
            values = _unpickle_parts(self._pickles(data), data.get('hmac'), where)
        except PickleRefusedError as exc:
            self._refused = ': %s' % exc
            return
        if values is None:  # (collected by `minipypet trust`)
            return
        default = values[0]
        explored = values[1:] if data.get('explored_data') is not None else None
        self._protocol = data.get('protocol', self._protocol)
        self._data = self._default = default
        self._explored_range = explored
        self._empty = False


# ============================================================================================
# Results - leaves that hold named items
# ============================================================================================
class BaseResult(NNLeafNode):
    """Base class of results."""


_ITEM_NAMES = set()  # item names _item_name_ok accepted (a sweep adds the same few every run)


def _item_name_ok(name):
    if not name or name.startswith(('_', 'f_', 'v_')) or name.endswith(('__idx', '__offsets')):
        return False
    if len(_ITEM_NAMES) < 4096:
        _ITEM_NAMES.add(name)
    return True


class Result(BaseResult):
    """Several named data items: positional items are named `name`, `name_1`, ...

    `res.item`, `res['item']` and `res.f_get('item')` read an item; `res.item = v` sets one."""

    def __init__(self, full_name: str, *args: object, comment: str = '', **kwargs: object) -> None:
        super().__init__(full_name, comment)
        d = self.__dict__
        d['_refused'] = None
        if len(args) == 1 and not kwargs and type(self) is Result and \
                type(args[0]) in _SCALARS and d['_name'] in _ITEM_NAMES:
            d['_data'] = {d['_name']: args[0]}  # Result('z', 1.5): what f_set would do
            return
        d['_data'] = {}
        if args or kwargs:
            self.f_set(*args, **kwargs)

    def f_set(self, *args: object, **kwargs: object) -> None:
        """Set items: positional ones are named like the result, then name_1, ...;
        keywords by name."""
        for i, item in enumerate(args):
            self.f_set_single(self._name if i == 0 else '%s_%d' % (self._name, i), item)
        for name, item in kwargs.items():
            self.f_set_single(name, item)

    def f_set_single(self, name: str, item: str | NNTreeNode) -> None:
        """Set the item `name`."""
        if name not in _ITEM_NAMES and not _item_name_ok(name):
            raise InvalidNameError('%s: %r is not a valid item name (it must not start with '
                                   '"_", "f_" or "v_", nor end with "__idx" or "__offsets", '
                                   'which the HDF5 layout uses)' % (self._full_name, name))
        if type(item) not in _SCALARS:
            self._check_item(name, item)
        self._data[name] = item

    def _check_item(self, name, item):
        where = '%s item %r' % (self._full_name or self._name, name)
        if _pandas_kind(item) is not None:  # pypet's Result keeps DataFrames and Series
            _to_plain(item, where)  # (every value plain: refused now, not at the store)
            self.__dict__['_tagged'] = True
        else:
            _check_plain(item, where)

    def f_translate_key(self, key: str | int) -> str:
        """An item name for `key` (an int n is the n-th positional name)."""
        if isinstance(key, int):
            return self._name if key == 0 else '%s_%d' % (self._name, key)
        return key

    def f_get(self, *names: str) -> object:
        """One item (the only one if no name is given) or a list of several."""
        if self._refused:
            raise PickleRefusedError(self._refused)
        if not names:
            if not self._data:
                raise self._no_item(self._name)
            if len(self._data) != 1:
                raise ValueError('%s has %d items %s; name the one you want' % (
                    self._full_name, len(self._data), sorted(self._data)))
            return next(iter(self._data.values()))
        values = []
        for key in names:
            key = self.f_translate_key(key)
            try:
                values.append(self._data[key])
            except KeyError:
                raise self._no_item(key) from None
        return values[0] if len(values) == 1 else values

    def _no_item(self, key):
        if not self._data and self.v_stored:
            return NoSuchNodeError(
                '%s has no item %r: it is empty, as a result loaded as a skeleton is '
                '(load_trajectory and f_load load results so by default, load_results=1). '
                'Load its data with traj.f_load_item(%r), load with load_results=2, or set '
                'traj.v_auto_load = True before reading it' % (self._full_name, key,
                                                                self._full_name))
        return NoSuchNodeError('%s has no item %r; it has %s%s' % (
            self._full_name, key, sorted(self._data), _did_you_mean(key, self._data)))

    def f_to_dict(self, copy: bool = True) -> dict:
        """{item name: value} (a copy unless copy=False)."""
        return dict(self._data) if copy else self._data

    def f_remove(self, *names: str) -> None:
        """Remove the named items, or without names the result itself from the tree."""
        if not names:  # pypet: remove the result itself from the tree
            return self._parent.f_remove_child(self._name)
        for name in names:
            del self._data[self.f_translate_key(name)]

    def f_is_empty(self) -> bool:
        """True if the result has no items."""
        return not self._data

    def f_empty(self) -> None:
        """Remove every item."""
        self._data.clear()

    def f_supports_fast_access(self) -> bool:
        """True if it holds exactly one item (fast access returns it)."""
        return len(self._data) == 1 and self._name in self._data

    def _fast_value(self):
        return self._data[self._name]

    def f_val_to_str(self) -> str:
        """The items as short text, "a=1, b='x'", cut to 64 characters (as pypet's)."""
        limit = pypetconstants.HDF5_STRCOL_MAX_VALUE_LENGTH
        text = ''
        for key, value in self._data.items():  # (stops early: a repr may be long)
            text += '%s=%r, ' % (key, value)
            if len(text) > limit:
                return text[:limit - 3] + '...'
        return text[:-2]

    def _brief_value(self):
        items = list(self._data.items())
        if len(items) == 1 and items[0][0] == self._name:  # (the common one-item result)
            return _brief(items[0][1])
        text = ', '.join('%s=%s' % (k, _brief(v)) for k, v in items[:6])
        return text + (', ... (%d items)' % len(items) if len(items) > 6 else '')

    def __getattr__(self, name):
        if name.startswith('_'):
            traj = self.__dict__.get('_traj')
            if name == '_parent' and traj is not None and '_held' in traj.__dict__:
                traj._place_held()  # (a held result, see Trajectory._hold_result)
                return self._parent
            raise AttributeError(name)
        try:
            return self.__dict__['_data'][name]
        except KeyError:
            if self.__dict__.get('_refused'):
                raise PickleRefusedError(self._refused) from None
            raise self._no_item(name) from None

    def __getstate__(self):  # (a held result goes into the tree before pickle reads it)
        traj = self.__dict__.get('_traj')
        if traj is not None and '_held' in traj.__dict__:
            traj._place_held()
        return self.__dict__

    def __setattr__(self, name, value):
        # properties (v_comment, ...) are set; a method's name (an alias such as `get`) is data
        if name.startswith('_') or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            self.f_set_single(name, value)

    def __delattr__(self, name):
        if name in self._data:
            del self._data[name]
        else:
            object.__delattr__(self, name)

    def __getitem__(self, key):
        return self.f_get(key)

    def __setitem__(self, key, value):
        self.f_set_single(self.f_translate_key(key), value)

    def __delitem__(self, key):
        self.f_remove(key)

    def __contains__(self, key):
        return self.f_translate_key(key) in self._data

    def __dir__(self):
        return list(super().__dir__()) + list(self._data)

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def _store(self):
        if self.__dict__.get('_tagged'):  # (pandas or sparse items: as tagged plain dicts)
            return {k: _to_plain(v, self._full_name) for k, v in self._data.items()}
        return dict(self._data)

    def _load(self, data):
        self._data.update(data)
        for key, value in data.items():
            if type(value) is dict and '__t' in value:
                self._data[key] = _from_plain(value)
                self.__dict__['_tagged'] = True


class SparseResult(Result):
    """A Result that also holds scipy.sparse matrices (scipy is needed only to read them
    back as matrices: without it they load as plain dicts of their arrays)."""

    def __init__(self, full_name: str, *args: object, comment: str = '',
                 protocol: int = pickle.HIGHEST_PROTOCOL, **kwargs: object) -> None:
        self.__dict__['_protocol'] = protocol  # (pypet's; nothing here is pickled)
        super().__init__(full_name, *args, comment=comment, **kwargs)

    v_protocol = property(lambda self: self._protocol,
                          lambda self, protocol: self.__dict__.__setitem__('_protocol', protocol),
                          doc="pypet's pickle protocol of the result (kept; nothing is pickled)")

    def _check_item(self, name, item):
        if _is_frame_or_sparse(item) and _pandas_kind(item) is None:
            _to_plain(item, '%s item %r' % (self._full_name, name))
            self.__dict__['_tagged'] = True
        else:
            super()._check_item(name, item)


class PickleResult(Result):
    """A result whose items may be anything picklable; they are stored pickled."""

    def __init__(self, full_name: str, *args: object, comment: str = '',
                 protocol: int = pickle.HIGHEST_PROTOCOL, **kwargs: object) -> None:
        self.__dict__['_protocol'] = protocol
        super().__init__(full_name, *args, comment=comment, **kwargs)

    v_protocol = SparseResult.v_protocol

    def _check_item(self, name, item):
        try:
            pickle.dumps(item, protocol=self._protocol)
        except Exception as exc:
            raise UnsupportedTypeError('%s item %r: %s cannot be pickled (%s)' % (
                self._full_name, name, _type_name(item), exc)) from exc

    def _store(self):
        data = {k: pickle.dumps(v, protocol=self._protocol) for k, v in self._data.items()}
        data['__hmac__'] = _sign([x for k in sorted(data) for x in (k, data[k])])
        data['__pickle_protocol__'] = self._protocol
        return data

    def _load(self, data):
        where = self._full_name
        data = dict(data)
        self._protocol = data.pop('__pickle_protocol__', self._protocol)
        signature = data.pop('__hmac__', None)
        names = sorted(data)
        try:
            values = _unpickle_parts([x for k in names for x in (k, data[k])], signature,
                                     where)
        except PickleRefusedError as exc:
            self._refused = str(exc)
            return
        if values is not None:
            self._data.update(zip(names, values))


_BUILTIN_LEAVES = {cls.__name__: cls for cls in (
    Parameter, ArrayParameter, PickleParameter, Result, PickleResult, SparseParameter,
    SparseResult)}


# ============================================================================================
# Leaf classes by name - class tags and dynamic imports
# ============================================================================================
def _class_tag(cls):
    """The stored name of a leaf class: bare for ours, 'module:qualname' for user classes."""
    if _BUILTIN_LEAVES.get(cls.__name__) is cls:
        return cls.__name__
    return '%s:%s' % (cls.__module__, cls.__qualname__)


def _resolve_class(tag, dynamic_imports):
    """Rebuild a leaf class from its stored tag (see _class_tag)."""
    if tag in _BUILTIN_LEAVES:
        return _BUILTIN_LEAVES[tag]
    if tag in dynamic_imports:
        return _imported(dynamic_imports[tag])
    module, _, qualname = tag.partition(':')
    bare = qualname.rpartition('.')[2]
    if bare in _BUILTIN_LEAVES and module.split('.')[-1] in ('pypet', 'minipypet') or \
            module == __name__ and bare in _BUILTIN_LEAVES:
        return _BUILTIN_LEAVES[bare]
    if bare in dynamic_imports:
        return _imported(dynamic_imports[bare])
    if _LOAD_POLICY.allow_pickle is not False:  # (allow_pickle=False: import nothing named
        # in a file; by default a leaf class is looked up among the modules on sys.path)
        try:
            obj = importlib.import_module(module)
            for part in qualname.split('.'):
                obj = getattr(obj, part)
            if isinstance(obj, type) and issubclass(obj, NNLeafNode):
                return obj
        except (ImportError, AttributeError, ValueError):
            pass
    raise StorageError('cannot rebuild leaf class %r: pass it in dynamic_imports (or '
                       'dynamically_imported_classes) when loading' % tag)


def _imported(cls):
    """A dynamic import's class; a dotted name is imported now (the first time it is used)."""
    if not isinstance(cls, str):
        return cls
    module, _, name = cls.rpartition('.')
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError('cannot import dynamic import %r: %s' % (cls, exc)) from exc
    if not (isinstance(cls, type) and issubclass(cls, NNLeafNode)):
        raise ConfigurationError('dynamic imports must be leaf classes (subclasses of '
                                 'BaseParameter or BaseResult), got %r' % (cls,))
    return cls


def _import_classes(classes):
    """dynamic_imports -> {tag: class, bare name: class}; strings are imported."""
    if classes is None:
        return {}
    if not isinstance(classes, (list, tuple, set)):
        classes = [classes]
    result = {}
    for cls in classes:
        if isinstance(cls, str):  # imported when a stored leaf needs it, as pypet does
            module, _, name = cls.rpartition('.')
            result['%s:%s' % (module, name)] = result[name] = cls
            continue
        if not (isinstance(cls, type) and issubclass(cls, NNLeafNode)):
            raise UnsupportedTypeError('dynamic imports must be leaf classes (subclasses of '
                                       'BaseParameter or BaseResult) or their dotted names, '
                                       'got %s %r' % (_type_name(cls), cls))
        result[_class_tag(cls)] = cls
        result[cls.__name__] = cls
    return result


def _object_table():
    """The ObjectTable class, made once."""
    cls = globals().get('ObjectTable')
    if cls is None:
        cls = globals()['ObjectTable'] = _object_table_class()
    return cls


def _object_table_class():
    pd = _require('pandas')

    class ObjectTable(pd.DataFrame):
        """pypet's DataFrame of dtype object: its values keep their Python types."""

        def __init__(self, data=None, index=None, columns=None, copy=False):
            super().__init__(data=data, index=index, columns=columns, dtype=object, copy=copy)
    ObjectTable.__module__, ObjectTable.__qualname__ = __name__, 'ObjectTable'  # (pickles)
    return ObjectTable


def __getattr__(name):
    """PEP 562: ObjectTable subclasses pandas.DataFrame, so it is made on first use
    (importing minipypet never imports pandas)."""
    if name == 'ObjectTable':
        return _object_table()
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


# ============================================================================================
# Run names, times and the run table
# ============================================================================================
def _now_strings(timestamp=None):
    timestamp = time.time() if timestamp is None else timestamp
    return datetime.datetime.fromtimestamp(timestamp).strftime(TIME_FORMAT), timestamp


def _time_strings(timestamps):
    """[_now_strings(t)[0] or '' for each t]: runs share seconds, so format each second once."""
    cache, out = {}, []
    for t in timestamps:
        if not t:
            out.append('')
            continue
        sec = int(t)
        if not 1e-3 < t - sec < 0.999:  # near a second's edge: rounding could cross it
            out.append(_now_strings(t)[0])
            continue
        text = cache.get(sec)
        if text is None:
            text = cache[sec] = _now_strings(t)[0]
        out.append(text)
    return out


@functools.lru_cache(maxsize=8)
def _short_sha(hexsha):
    """The 7-character SHA-1 of a run's record, one str object for all runs."""
    return (hexsha or '')[:7]


def _run_name(idx):
    return FORMATTED_RUN_NAME % idx if idx >= 0 else RUN_NAME_DUMMY


def _set_name(idx):
    return FORMATTED_SET_NAME % (idx // RUN_SET_SIZE) if idx >= 0 else SET_NAME_DUMMY


def _runtime_strings(starts, finishes):
    """str(timedelta) of each run ('' if unfinished); short runs share their
    microseconds counts, so each count is formatted once."""
    memo, out = {}, []
    for a, b in zip(starts, finishes):
        if not b:
            out.append('')
            continue
        us = round((b - a) * 1e6)
        text = memo.get(us)
        if text is None:
            text = memo[us] = str(datetime.timedelta(microseconds=us))
        out.append(text)
    return out


def _run_summaries(explored, idxs):
    """The parameter summary ('x: 1.0, y: 2') of the runs `idxs`, from [(full name,
    range)]; a sweep repeats few distinct values, so each value's repr is made once."""
    if not explored:
        return [''] * len(idxs)
    columns, formats = [], []  # (a column's '%'-format where its values are plain)
    lo, hi = (idxs[0], idxs[-1]) if len(idxs) else (0, -1)
    span = hi - lo + 1 == len(idxs) and list(idxs) == list(range(lo, hi + 1))
    for key, values in explored:
        head, memo, column = key.rpartition('.')[2] + ': ', {}, []
        if span and hi < len(values):  # (a sweep's batch: plain numbers, repr'd in C)
            part = values[lo:hi + 1]
            kinds = set(map(type, part))
            ints = [v for v in part if type(v) is int] if int in kinds else ()
            if kinds <= {float, int, bool} and (not ints or max(  # (a float's repr: <= 24)
                    len(repr(max(ints))), len(repr(min(ints)))) <= 40):
                formats.append(head.replace('%', '%%') + '%r')
                columns.append(part)
                continue
        formats.append(None)
        for i in idxs:
            if i >= len(values):
                column.append('')
                continue
            v = values[i]
            t = type(v)  # (0.0 == -0.0, but their reprs differ)
            memo_key = (t, v) if t in (int, str, bool) or t is float and v != 0.0 else None
            text = memo.get(memo_key) if memo_key is not None else None
            if text is None:
                text = head + _short_repr(v, 40)
                if memo_key is not None:
                    memo[memo_key] = text
            column.append(text)
        columns.append(column)
    if all(formats):  # (one format a run)
        return list(map(', '.join(formats).__mod__, zip(*columns)))
    columns = [list(map(text.__mod__, column)) if text else column
               for text, column in zip(formats, columns)]
    return [', '.join(row) for row in zip(*columns)]


def _split_run(full_name):
    """'results.runs.run_00000003.z' -> ('results.runs.$.z', 3); None outside run groups."""
    if 'run_' not in full_name:
        return None
    head, sep, tail = full_name.partition('.runs.run_')
    if sep and '.' not in head and 'run_' not in head:
        # the common 'results.runs.run_00000003.z', without the general walk below
        digits, rest = tail[:FORMAT_ZEROS], tail[FORMAT_ZEROS:]
        if len(digits) == FORMAT_ZEROS and digits.isdecimal() and rest[:1] in ('', '.'):
            return head + '.runs.$' + rest, int(digits)
    parts = full_name.split('.')
    for i, part in enumerate(parts):
        m = _RUN_RE.fullmatch(part)
        if m:
            parts[i] = '$'
            if i and _SET_RE.fullmatch(parts[i - 1]):
                parts[i - 1] = '$set'
            return '.'.join(parts), int(m.group(1))
    return None


def _leaf_split(split):
    """A leaf's _split_run: None for a leaf named like a run (results.ckpt.run_00000001,
    or f_add_result('z.$')), which is a node of its own and not a run column."""
    return None if split is None or split[0].endswith('$') else split


def _join_run(template, idx):
    parts = template.split('.')
    return '.'.join(_run_name(idx) if p == '$' else _set_name(idx) if p == '$set' else p
                    for p in parts)


class _RunTable:
    """Run information as columns (a dict per run would cost ~1 KB each at 100k runs)."""
    FIELDS = ('timestamp', 'finish_timestamp', 'completed', 'hexsha', 'error')
    BLANK = (0.0, 0.0, 0, '', '')
    LAZY = ('timestamp', 'finish_timestamp', 'hexsha', 'error')  # (see __getattr__)

    def __init__(self, n=1):
        # (timestamps as C doubles: a float object per run would cost 24 bytes more, each)
        self.timestamp, self.finish_timestamp = array.array('d', bytes(8 * n)), \
            array.array('d', bytes(8 * n))
        self.completed, self.hexsha, self.error = bytearray(n), [''] * n, [''] * n

    def __len__(self):
        return len(self.completed)

    def __getattr__(self, name):
        # Only for attributes not set: the run information a load put off (1M runs' take
        # ~0.3 s to read), read now that it is asked for.
        loader = self.__dict__.get('_loader')
        if loader is None or name not in self.LAZY:
            raise AttributeError(name)
        loader(self)  # (kept if it fails: a later access tries again)
        del self.__dict__['_loader']
        return getattr(self, name)

    def __getstate__(self):
        for field in self.LAZY:
            getattr(self, field)
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def resize(self, n):
        for field, blank in zip(self.FIELDS, self.BLANK):
            column = getattr(self, field)
            if n > len(column):
                _extend_blank(column, n - len(column), blank)
            else:
                del column[n:]

    def set(self, idx, timestamp, finish, completed, hexsha, error):
        self.timestamp[idx], self.finish_timestamp[idx] = timestamp, finish
        self.completed[idx], self.hexsha[idx], self.error[idx] = completed, hexsha, error

    def to_plain(self, share=False):
        """{field: list} (share: the table's own columns, for a state that is used at
        once and not kept; 1M runs' timestamps as float objects would take 50 MB)."""
        return {f: getattr(self, f) if share else list(getattr(self, f))
                for f in self.FIELDS}

    @classmethod
    def from_plain(cls, data, loader=None):
        """The table of a state's run information; columns already as the table keeps
        them are taken, not copied (a loaded state is dropped once its trajectory is
        made). `loader(table)`: sets the LAZY columns when one is first asked for."""
        table = cls(0)
        if loader is not None:
            table.completed = bytearray(data['completed'])
            for f in cls.LAZY:
                delattr(table, f)
            table.__dict__['_loader'] = loader
            return table
        for f in cls.FIELDS:
            values = data.get(f, [])
            kind = array.array if 'timestamp' in f else \
                bytearray if f == 'completed' else list
            if type(values) is not kind or kind is array.array and values.typecode != 'd':
                values = array.array('d', values) if kind is array.array else kind(values)
            setattr(table, f, values)
        table.resize(len(data.get('completed', [])))
        return table


# ============================================================================================
# Trajectory runs - exploring, the current run and the records of finished runs
# ============================================================================================
class _RunsMixin:
    """Exploration and runs: ranges, the current run, run information and the records
    of finished runs (a part of Trajectory)."""

    # -- exploration -------------------------------------------------------------------------
    def _explorable(self, key):
        node = self.f_get(key) if not isinstance(key, BaseParameter) else key
        if not isinstance(node, BaseParameter) or node.v_branch != 'parameters':
            raise ConfigurationError(
                'cannot explore %r: only parameters (below traj.parameters) can be explored; '
                'add it with f_add_parameter first' % (key,))
        return node

    def f_explore(self, build_dict: dict) -> None:
        """Explore parameters: {name: iterable}; all ranges must be of equal length."""
        if any(self._runs.completed):
            raise ParameterLockedError(  # (a TypeError, as pypet's)
                'runs of %s are completed already; use f_expand to add runs' % self._name)
        self._explore(build_dict, expand=False)

    def f_expand(self, build_dict: dict, fail_safe: bool = True) -> None:
        """Add runs: extend every explored parameter by the values in `build_dict`."""
        if not self._explored:
            return self._explore(build_dict, expand=False)
        self._explore(build_dict, expand=True)

    def _explore(self, build_dict, expand):
        if not isinstance(build_dict, dict) or not build_dict:
            raise ConfigurationError('f_explore/f_expand take a non-empty dict {name: values}, '
                                     'got %r' % (_short_repr(build_dict),))
        if self._is_run:
            raise PypetError('cannot explore during run %d' % self._idx)
        items = []
        for key, values in build_dict.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, '__iter__'):
                raise ConfigurationError('%s: the values to explore must be a list or another '
                                         'iterable, got %r' % (key, _short_repr(values)))
            items.append((self._explorable(key), list(values)))
        lengths = {p._full_name: len(v) for p, v in items}
        if len(set(lengths.values())) != 1:
            raise ConfigurationError('all explored ranges must have the same length, got %s; '
                                     'use cartesian_product for all combinations' % lengths)
        n = next(iter(lengths.values()))
        names = {p._full_name for p, _ in items}
        again = [p for p, _ in items if not expand and p._explored_range is not None]
        if again:  # (pypet refuses too: a second f_explore silently replaced the first)
            raise ConfigurationError(
                '%s is explored already (%d values); f_explore does not explore it again: use '
                'f_expand to add runs, or traj.f_shrink() first to start the exploration anew'
                % (again[0]._full_name, len(again[0]._explored_range)))
        if expand:
            missing = set(self._explored) - names
            if missing:
                raise ConfigurationError('f_expand must extend every explored parameter; '
                                         'missing %s' % sorted(missing))
            new_length = self._length + n
        else:
            others = [p for p in self._explored if p not in names]
            if others and n != self._length:
                raise ConfigurationError(
                    'the new ranges have length %d but %s are explored with length %d'
                    % (n, others, self._length))
            new_length = n
        saved = [(p, dict(p.__dict__), list(p._explored_range or [])) for p, _ in items]
        try:
            for param, values in items:
                param._locked = False  # (the parameter locks itself again once explored)
                if expand and param._explored_range is not None:
                    param._expand(values)
                else:
                    param._explore(values)
        except Exception:
            for param, state, rng in saved:  # leave nothing half-explored
                param.__dict__.update(state)
                param.__dict__['_explored_range'] = rng if state['_explored_range'] else None
            raise
        for param, _ in items:
            self._explored[param._full_name] = param
        self._length = new_length
        self._runs.resize(new_length)

    def f_shrink(self, force: bool = False) -> None:
        """Drop the exploration (refused once stored, unless force=True)."""
        if self._stored and not force:
            raise ParameterLockedError('%s is stored; pass force=True to drop its exploration'
                                       % self._name)
        for param in self._explored.values():
            param._locked = False
            param._shrink()
        self._explored.clear()
        self._unexplore()

    def _unexplore(self):
        self._length = 1
        self._runs = _RunTable(1)

    # -- runs --------------------------------------------------------------------------------
    def _to_idx(self, name_or_idx):
        if isinstance(name_or_idx, str):
            m = _RUN_RE.fullmatch(name_or_idx)
            if not m:
                raise ConfigurationError('%r is not a run name (run_XXXXXXXX)' % name_or_idx)
            name_or_idx = int(m.group(1))
        if not isinstance(name_or_idx, int) or not -1 <= name_or_idx < self._length:
            raise ConfigurationError('run index %r is out of range (the trajectory has %d '
                                     'runs: 0 to %d, or -1 for none)'
                                     % (name_or_idx, self._length, self._length - 1))
        return name_or_idx

    def f_set_crun(self, name_or_idx: str | int) -> None:
        """Make explored parameters return the values of this run (-1/None: defaults)."""
        idx = -1 if name_or_idx is None else self._to_idx(name_or_idx)
        if idx >= 0:
            self._check_ranges('f_set_crun(%r)' % (name_or_idx,))
        self._set_crun(idx)

    def _check_ranges(self, what):
        """Explored parameters loaded as a skeleton have no range: say how to load it."""
        for name, param in self._explored.items():
            if param._explored_range is None:
                raise PypetError(
                    '%s: %s is explored, but was loaded without its data (a skeleton, '
                    'load_parameters=1); load it first: traj.f_load_item(%r), or load the '
                    'trajectory with load_parameters=2' % (what, name, name))

    def _set_crun(self, idx):
        d = self.__dict__
        d['_idx'] = idx
        if idx < 0:
            for param in self._explored.values():
                param._restore_default()
        else:
            own = BaseParameter._set_parameter_access
            try:  # (what _set_parameter_access does, without a call per parameter)
                for param in d['_explored'].values():
                    if type(param)._set_parameter_access is own:
                        param.__dict__['_data'] = param._explored_range[idx]
                    else:  # (a class of the user's that does more)
                        param._set_parameter_access(idx)
            except (IndexError, TypeError):  # (it says what is wrong)
                param._set_parameter_access(idx)
                raise
        for short, param in d['_run_fast'].items():
            d[short] = param._data

    def _fast_attributes(self, on):
        """During a sweep (serial, or a worker's copy), `traj.x` of an explored Parameter
        with a unique name is a plain attribute that f_set_crun (a worker: _start_run) keeps
        equal to its value: ~1 us a read less than through __getattr__, three reads a run in
        a typical job. Whatever could change what `traj.x` means (a node named x added or
        removed, loading, properties) drops it, and the sweep's end drops them all."""
        self._place_held()
        d = self.__dict__
        for short in d['_run_fast']:
            d.pop(short, None)
        d['_run_fast'] = {}
        props = d['_props']
        if not on or not props['fast_access'] or not props['shortcuts'] or \
                props['max_depth'] is not None or props['auto_load']:
            return
        fast, cls = {}, type(self)
        for full, param in d['_explored'].items():
            short = full.rpartition('.')[2]
            if type(param) is Parameter and not param._empty and short[:1] != '_' and \
                    short[:2] not in ('f_', 'v_') and not hasattr(cls, short) and \
                    short not in d and short not in d['_children'] and \
                    short not in d['_links'] and len(d['_by_name'].get(short, ())) == 1:
                fast[short] = param
                d[short] = param._data
        d['_run_fast'] = fast

    def _drop_fast(self, name=None):
        """Forget the plain attribute `name` (all of them without a name); see above."""
        d = self.__dict__
        fast = d['_run_fast']
        for short in [name] if name is not None else list(fast):
            if fast.pop(short, None) is not None:
                d.pop(short, None)

    def f_restore_default(self) -> None:
        """Leave the current run: parameters hold their defaults again."""
        self.f_set_crun(-1)

    def f_iter_runs(self, start: int = 0, stop: int | None = None, step: int = 1,
                    yields: str = 'name') -> collections.abc.Iterator:
        """Set each run in turn and yield its name, index, the trajectory or a copy."""
        if yields not in ('name', 'idx', 'self', 'copy'):
            raise ValueError("yields must be 'name', 'idx', 'self' or 'copy'")
        try:
            for idx in range(start, self._length if stop is None else stop, step):
                self.f_set_crun(idx)
                yield {'name': _run_name(idx), 'idx': idx, 'self': self}.get(yields) \
                    if yields != 'copy' else pickle.loads(pickle.dumps(self))
        finally:
            self.f_restore_default()

    def f_idx_to_run(self, name_or_idx: str | int) -> str | int:
        """The run name of an index, or the index of a run name."""
        return _run_name(self._to_idx(name_or_idx))

    def f_get_run_names(self, sort: bool = True) -> list:
        """['run_00000000', ...], one per run."""
        return [_run_name(i) for i in range(self._length)]

    def _parameter_summary(self, idx):
        return ', '.join('%s: %s' % (name.rpartition('.')[2], _short_repr(p._explored_range[idx],
                                                                           40))
                         for name, p in self._explored.items())

    def f_get_run_information(self, name_or_idx: str | int | None = None,
                              copy: bool = True) -> dict:
        """A run's information dict; all runs' {name: info} without an argument."""
        if name_or_idx is None:
            return collections.OrderedDict((_run_name(i), self._run_info(i))
                                           for i in range(self._length))
        return self._run_info(self._to_idx(name_or_idx))

    def _run_info(self, idx):
        r = self._runs
        start, finish = r.timestamp[idx], r.finish_timestamp[idx]
        return {'idx': idx, 'name': _run_name(idx),
                'time': _now_strings(start)[0] if start else '',
                'timestamp': start, 'finish_timestamp': finish,
                'runtime': _runtime_strings([start], [finish])[0],
                'completed': r.completed[idx], 'parameter_summary': self._parameter_summary(idx),
                'short_environment_hexsha': r.hexsha[idx], 'error': r.error[idx]}

    def f_is_completed(self, name_or_idx: str | int | None = None) -> bool:
        """True if the run (or, without one, every run) is completed."""
        if name_or_idx is None:
            return all(self._runs.completed)
        return bool(self._runs.completed[self._to_idx(name_or_idx)])

    def _run_group(self, branch, idx):
        runs = self._nodes.get(branch + '.runs')
        if runs is None:
            return None
        name = _run_name(idx)
        group = runs._children.get(name)
        if group is None:
            bucket = runs._children.get(_set_name(idx))
            group = bucket._children.get(name) if bucket is not None else None
        return group

    def f_get_from_runs(self, name: str, include_default_run: bool = True,
                        use_indices: bool = False, fast_access: bool = False,
                        with_links: bool = True, shortcuts: bool = True,
                        max_depth: int | None = None, auto_load: bool = False,
                        where: object = None, backwards_search: object = None) -> dict:
        """{run name (or index): node or value} of `name` found below each run's group.
        where, backwards_search: pypet's old keywords, ignored as pypet ignores them."""
        for key, value in (('where', where), ('backwards_search', backwards_search)):
            if value is not None:
                warnings.warn('f_get_from_runs(%s=...) is deprecated and ignored (as in '
                              'pypet 0.7): drop it' % key, DeprecationWarning, stacklevel=2)
        if not isinstance(name, str):
            raise ConfigurationError('f_get_from_runs needs the name of a result or derived '
                                     'parameter (a str, e.g. "z"), got %r' % (name,))
        result = {}  # (ordered by run, as pypet's OrderedDict; a plain dict is ~3x cheaper)
        simple = '.' not in name
        bulk = None
        if fast_access and simple and self._stored and (
                auto_load or self._loaded_column(name)) and \
                isinstance(self._storage_service, _FileService):
            # (a column at a time from the file instead of a node per run: a million
            # runs' values in well under a second; runs loaded with their data and not
            # made yet (see _PendingRuns) hold what the file holds)
            bulk = self._service()._fast_values(self._name, name)
            if bulk is not None and not any(
                    self._nodes.get(b + '.runs') is not None and
                    dict.__len__(self._nodes[b + '.runs']._children)
                    for b in _RUN_BRANCHES):
                idxs, values = bulk
                if idxs and idxs[-1] >= self._length:
                    keep = bisect.bisect_left(idxs, self._length)
                    idxs, values = idxs[:keep], values[:keep]
                return _RunValues(idxs, values, use_indices)
            bulk = dict(zip(bulk[0], _py_values(bulk[1]))) if bulk is not None else None
        leaves = None if auto_load or bulk is not None or max_depth is not None or \
            not simple else self._pending_leaves(name, fast_access, include_default_run)
        if leaves is not None:
            return _RunValues(leaves.idxs, leaves, use_indices)
        for kids in self._pending_runs():  # (a node per run is asked for: made at once)
            kids.make()
        for idx in range(self._length):
            node = None
            for branch in ('results', 'derived_parameters'):
                group = self._run_group(branch, idx)
                if group is not None:
                    node = group._children.get(name) if simple else None
                    if node is None:
                        node = self._resolve(group, name, shortcuts, max_depth, with_links)
                if node is None and include_default_run:
                    group = self._nodes.get(branch + '.runs.' + RUN_NAME_DUMMY)
                    if group is not None:
                        node = self._resolve(group, name, shortcuts, max_depth, with_links)
                if node is not None:
                    break
            if node is None:  # the run's other groups: results.sim.run_X ('sim.$.w'),
                # a run-set bucket beside runs.run_X, pypet's results.run_X ('$.a')
                for group in list((self._by_name.get(_run_name(idx)) or {}).values()):
                    if not group.v_is_leaf:
                        node = self._resolve(group, name, shortcuts, max_depth, with_links)
                        if node is not None:
                            break
            if bulk is not None and idx in bulk and (node is None or node.v_is_leaf and
                                                     node.f_is_empty()):
                result[idx if use_indices else _run_name(idx)] = bulk[idx]
                continue
            if node is None:
                continue
            if auto_load and node.v_is_leaf and node.f_is_empty():
                self.f_load_item(node)
            if fast_access and node.v_is_leaf and node.f_supports_fast_access():
                node = node._fast_value()
            result[idx if use_indices else _run_name(idx)] = node
        if not result and name.rpartition('.')[2] not in self._by_name and any(
                self._nodes.get(b + '.runs') is not None and self._nodes[b + '.runs']._children
                for b in _RUN_BRANCHES):  # (runs hold other nodes: a misspelled name?
            # pypet gives an empty dict, which scripts test for; say it, once)
            _say_once('f_get_from_runs: no run has a result or derived parameter %r%s'
                      % (name, self._hint(name)))
        return result

    def _pending_leaves(self, name, fast_access, include_default_run):
        """_RunLeaves of the leaves `name` if no run is made yet (see _PendingRuns) and
        each run's `name` is that leaf: a run's node is then made when its value is asked
        for (1M runs' empty leaves at once took ~19 s and 1.8 GB). Else None."""
        found = None
        for _, path in _RUN_GROUPS:
            group = self._nodes.get(path)
            kids = None if group is None else group._children
            if kids is None or not (dict.__len__(kids) or getattr(kids, 'layers', None)):
                continue
            if type(kids) is not _PendingRuns or dict.__len__(kids) or kids.done:
                return None
            for template, rows, _ in kids.layers:
                parts = template.split('.')[3:]
                if name not in parts:
                    continue
                if parts != [name] or found not in (None, kids) or \
                        include_default_run and -1 in rows:
                    return None  # (a group, a deeper leaf, two branches: as below)
                found = kids
        if found is None or self._links or any(k.startswith(RUN_NAME) and k not in (
                'runs', RUN_NAME_DUMMY) for k in self._by_name):
            return None  # (other run groups may hold the name: results.sim.run_X)
        layers = [rows for template, rows, _ in found.layers
                  if template.split('.')[3:] == [name]]
        rows = layers[0]
        if len(layers) == 1 and type(rows) is _ColumnRows and not rows.gone and \
                not rows.extra:  # (a sweep's column as read: its runs are a span)
            idxs = range(max(rows.first, 0), min(rows.first + rows.n, self._length))
        else:
            idxs = sorted(i for i in set().union(*layers) if 0 <= i < self._length)
        return _RunLeaves(idxs, found, name, fast_access)

    def _loaded_column(self, name):
        """True if pending runs (see _PendingRuns) hold the leaves `name` loaded with
        their data, and no run is made: their values are the file's column."""
        found = False
        for _, path in _RUN_GROUPS:
            group = self._nodes.get(path)
            if group is None:
                continue
            kids = group._children
            # (a run made or removed, or a file changed since the load: memory decides)
            if type(kids) is not _PendingRuns or dict.__len__(kids) or kids.done or \
                    kids.stamp is None or kids.stamp != _files_stamp(self._storage_service):
                return False
            for template, _, mode in kids.layers:
                if template.split('.', 3)[3] == name:
                    if mode < LOAD_DATA:
                        return False
                    found = True
        return found

    def f_find_idx(self, name_list: str | list, predicate: object) -> collections.abc.Iterator:
        """Yield the run indices whose parameter values satisfy predicate(*values)."""
        names = [name_list] if isinstance(name_list, str) else list(name_list)
        params = [self._explorable(n) for n in names]
        for idx in range(self._length):
            values = [p._explored_range[idx] if p._explored_range is not None else p._default
                      for p in params]
            if predicate(*values):
                yield idx

    def f_preset_parameter(self, name: str, *args: object, **kwargs: object) -> None:
        """As pypet: the value f_set(*args, **kwargs) gives the parameter `name` when it
        is added later (a script's defaults, changed from outside); f_run refuses to
        start while a preset parameter was never added."""
        self._preset('parameters', name, args, kwargs)

    def f_preset_config(self, name: str, *args: object, **kwargs: object) -> None:
        """Preset a config value before it is added (as f_preset_parameter)."""
        self._preset('config', name, args, kwargs)

    def _preset(self, branch, name, args, kwargs):
        full = name if name.startswith(branch + '.') else branch + '.' + name
        if full in self._nodes:
            raise PresettingError('%s exists already: set it with f_set instead of presetting '
                                  'it' % full)
        self.__dict__.setdefault('_presets', {})[full] = (args, kwargs)

    def _check_presets(self):
        left = sorted(self.__dict__.get('_presets') or ())
        if left:
            raise PresettingError('%s preset (f_preset_parameter / f_preset_config) but '
                                     'never added: add them before the runs, or check their '
                                     'names' % ', '.join(left))

    def f_is_empty(self) -> bool:
        """True if the trajectory holds no leaf at all."""
        return next(iter(self.f_iter_leaves()), None) is None

    def f_lock_parameters(self) -> None:
        """Lock every parameter (f_set raises until f_unlock)."""
        for leaf in self._children['parameters'].f_iter_leaves():
            leaf.f_lock()

    def f_lock_derived_parameters(self) -> None:
        """Lock every derived parameter."""
        for leaf in self._children['derived_parameters'].f_iter_leaves():
            leaf.f_lock()

    def f_add_to_dynamic_imports(self, dynamic_imports: list) -> None:
        """Register your own leaf classes (or dotted names) for loading."""
        self._dynamic_imports.update(_import_classes(dynamic_imports))

    # -- run bookkeeping used by the environment ---------------------------------------------
    def _start_run(self, idx, values=None):
        if values is None:
            self._set_crun(idx)
        else:  # a worker's copy has no ranges: the run's values came with the task
            d = self.__dict__
            d['_idx'] = idx
            explored = d['_explored']
            for name, value in values.items():
                explored[name].__dict__['_data'] = value
            for short, param in d['_run_fast'].items():  # (see _fast_attributes)
                d[short] = param._data
        nodes = self._nodes
        for branch, runs in _RUN_GROUPS:
            if nodes.get(runs) is not None and nodes[runs]._children:
                group = self._run_group(branch, idx)
                if group is not None:  # left by an attempt that failed (or a load): a run
                    self._remove_subtree(group)  # run again replaces what that left
        d = self.__dict__
        d['_is_run'] = True
        d['_new_leaves'] = []
        d.pop('_new_links', None)  # ((group, link name), ...) added in the run: f_add_link

    def f_start_run(self, run_name_or_idx: str | int | None = None, turn_into_run: bool = True
                    ) -> None:
        """Make this trajectory a run by hand, without an Environment (pypet's manual
        runs, see manual_run): the run it is set to, or `run_name_or_idx`."""
        del turn_into_run  # (a run is always one here)
        if self.__dict__.get('_manual_start') is not None:
            return self
        if run_name_or_idx is None and self._idx < 0:
            raise PypetError('f_start_run: the trajectory is not set to a run; set one first '
                             '(traj.v_idx = 3, f_iter_runs) or pass it: f_start_run(3)')
        idx = self._idx if run_name_or_idx is None else self._to_idx(run_name_or_idx)
        self._start_run(idx)
        self.__dict__['_manual_start'] = time.time()
        return self

    def f_finalize_run(self, store_meta_data: bool = True, clean_up: bool = True) -> None:
        """End a run started with f_start_run. store_meta_data stores the run (its
        timing and, unlike pypet, which left them to an f_store, what it added: a
        finished run is never lost); the trajectory stays set to the run."""
        start = self.__dict__.pop('_manual_start', None)
        if start is None:
            return self
        idx = self._idx
        record = self._run_record(idx, start, time.time(), 1)
        if store_meta_data and self._storage_service is not None:
            self._storage_service.store(SINGLE_RUN, record)
        keep = getattr(self._storage_service, 'keeps_runs', False)
        self._finish_run(record, clean_up and not keep, restore=False)
        self._set_crun(idx)
        return self

    def _run_record(self, idx, start, finish, completed, error='', with_leaves=True):
        """The _RunRecord of a finished run: what the journal stores (with_leaves=False:
        its information alone, where storing what it added failed)."""
        leaves = []
        d = self.__dict__
        stored = d.get('_run_stored')  # (see f_store_items)
        new = d['_new_leaves'] if '_held' not in d else \
            d['_new_leaves'] + list(d['_held'].values())  # (Trajectory._hold_result)
        for leaf in new if with_leaves else ():
            if not leaf.f_is_empty():
                data = leaf._store()
            else:  # emptied after f_store_item (pypet's way to free memory in a run): the
                data = stored.get(id(leaf)) if stored else None  # data stored then stays
            if data is not None and type(leaf) not in _BUILTIN_TYPES:
                _check_plain(data, leaf._full_name)
            ann = leaf._annotations._dict if leaf._annotations else None
            leaves.append((leaf._full_name, _class_tag(type(leaf)), leaf._comment, data, ann))
        hexsha = _short_sha(d['_environment_hexsha'])
        added = d.get('_new_links')
        links = [(group._join(lname), group._links[lname]._full_name)
                 for group, lname in added if lname in group._links] \
            if added and with_leaves else ()
        # (tuple.__new__: the namedtuple's own __new__ is Python code, ~0.5 us a run)
        return _new_tuple(_RunRecord, ('run', self._name, idx,
                                       (start, finish, completed, hexsha, error), leaves,
                                       links))

    def _finish_run(self, record, clean_up, restore=True):
        """The run's bookkeeping after its record is stored. restore=False leaves the
        explored parameters at the run's values (a serial sweep sets the next run's at
        once; _Sweep.run restores the defaults when the sweep ends, however it ends)."""
        idx = record.idx
        self._runs.set(idx, *record.info)
        d = self.__dict__
        if '_held' in d:  # (see Trajectory._hold_result)
            self._place_held(keep=not clean_up)
        d['_is_run'] = False
        added, d['_new_leaves'] = d['_new_leaves'], []
        d.pop('_new_links', None)
        if '_run_stored' in d:
            del d['_run_stored']
        if clean_up:
            nodes, name = d['_nodes'], FORMATTED_RUN_NAME % idx
            for branch, path in _RUN_GROUPS:
                runs = nodes.get(path)
                if runs is None:
                    continue
                # the run's group directly below runs (the common case), else the long way
                group = runs._children.get(name) or (
                    self._run_group(branch, idx) if runs._children else None)
                if group is not None:
                    self._remove_subtree(group)
            # and what it added elsewhere below its name (results.sim.run_X.w,
            # results.$): as pypet, a later run sees none of an earlier one's nodes
            # (only the run's leaves and the groups they leave empty: a group named
            # after the run may hold what the user put there before the sweep)
            for leaf in added:
                if leaf._parent is None:  # (the common case: gone with the run's group)
                    continue
                full = leaf._full_name
                parts = full.split('.')
                if name not in parts or nodes.get(full) is not leaf:
                    continue
                group = leaf._parent
                self._remove_subtree(leaf)
                depth = parts.index(name) + 1  # (the groups at or below the run's name)
                while group is not None and group._parent is not None and \
                        group._full_name.count('.') + 1 >= depth and \
                        not group._children and not group._links:
                    above = group._parent
                    self._remove_subtree(group)
                    group = above
        d['_idx'] = -1  # f_set_crun(-1)
        if not restore:
            return
        for param in d['_explored'].values():
            param._restore_default()
        for short, param in d['_run_fast'].items():
            d[short] = param._data

    def _apply_run_record(self, record):
        """Put a run record made elsewhere (a worker) into this trajectory's tree."""
        self._runs.set(record.idx, *record.info)
        for full_name, tag, comment, data, ann in record.leaves:
            self._place_leaf(full_name, tag, comment, data, ann)
        self._place_links(record.links)

    def _place_links(self, links):
        """Put links [(full name, target's full name), ...] into the tree (the groups on
        the way are made; a link whose target is not in the tree is left out)."""
        for full_name, target_name in links:
            target = self._nodes.get(target_name)
            parent, _, lname = full_name.rpartition('.')
            group = self if not parent else (self._nodes.get(parent) or
                                             self._place_group(parent, '', None))
            if target is None or group is None or group.v_is_leaf or \
                    lname in group._children:
                continue
            self._load_link(group, lname, target)

    def _worker_copy(self):
        """A copy for other processes: no explored ranges (each run's values travel with
        the run), no run data, no storage service."""
        runs = self._runs  # O(n): it made every task of a pool without freeze_input grow
        self.__dict__['_runs'] = _RunTable(0)
        out = io.BytesIO()
        pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
        # (runs loaded and not made yet travel as their columns, see _send_rows)
        pickler.dispatch_table = dict(copyreg.dispatch_table)
        pickler.dispatch_table[_ColumnRows] = _send_rows
        try:
            pickler.dump(self)
            copy = pickle.loads(out.getbuffer())
        finally:
            self.__dict__['_runs'] = runs
        copy.__dict__['_runs'] = _WorkerRunTable(len(runs))
        for param in copy._explored.values():
            param.__dict__['_explored_range'] = None
        return copy

    def _run_values(self, idx):
        return {name: p._explored_range[idx] for name, p in self._explored.items()}

    # -- wildcards ---------------------------------------------------------------------------
    def f_add_wildcard_functions(self, func_dict: dict) -> None:
        """{('$mine', 'mine'): f} where f(run_idx) returns a unique name (also for -1).

        pypet's own run and set naming, {('$', 'crun'): f, ('$set', 'crunset'): g}, is
        taken as names for the runs: 'hello_3' (f(3)) resolves to run_00000003 (g's
        names to the run's set), while the tree, '$' and the file keep the index names
        (runs are stored by index)."""
        for keys, func in func_dict.items():
            keys = (keys,) if isinstance(keys, str) else tuple(keys)
            if keys in (_RUN_WILDCARDS, _SET_WILDCARDS):
                names = [func(i) for i in (-1, 0, 1)] if callable(func) else None
                if names is None or not all(isinstance(n, str) and _NAME_RE.fullmatch(n)
                                            for n in names) or \
                        keys == _RUN_WILDCARDS and len(set(names)) < 3:
                    raise ConfigurationError(
                        'the wildcard function of %s must give each run index (and -1) a '
                        'node name of its own, e.g. lambda idx: "sim_%%d" %% idx; it gave %r'
                        % (keys, names))
            elif set(keys) & {'$', 'crun', '$set', 'crunset'}:
                raise ConfigurationError(
                    '%s mixes built-in wildcards with others; give %s or %s alone, or '
                    'wildcards of your own' % (keys, _RUN_WILDCARDS, _SET_WILDCARDS))
            self._wildcards[keys] = func
            self.__dict__.pop('_custom_names', None)

    def f_wildcard(self, wildcard: str = '$', run_idx: int | None = None) -> str:
        """The name a wildcard stands for: '$' is the current run's name."""
        idx = self._idx if run_idx is None else run_idx
        if wildcard in ('$', 'crun'):
            return _run_name(idx)
        if wildcard in ('$set', 'crunset'):
            return _set_name(idx)
        for keys, func in self._wildcards.items():
            if wildcard in keys:
                return func(idx)
        raise ValueError('unknown wildcard %r' % wildcard)

    def f_get_wildcards(self) -> list:
        """The wildcards known to this trajectory."""
        return [_RUN_WILDCARDS, _SET_WILDCARDS] + [
            k for k in self._wildcards if k not in (_RUN_WILDCARDS, _SET_WILDCARDS)]

    def f_is_wildcard(self, name: str) -> bool:
        """True if `name` is a wildcard."""
        return name in ('$', 'crun', '$set', 'crunset') or any(
            name in keys for keys in self._wildcards)


def _tuple_item(entry):
    """pypet's (message, item[, args[, kwargs]]) form of an item to store or load: the
    item (the arguments are those of the call)."""
    if not isinstance(entry, tuple):
        return entry
    if not 2 <= len(entry) <= 4:
        raise ConfigurationError('an item given as a tuple is (message, item[, args[, '
                                 'kwargs]]), got %d parts: %s' % (len(entry),
                                                                  _short_repr(entry, 200)))
    return entry[1]


# ============================================================================================
# Trajectory storage - storing and loading
# ============================================================================================
class _StorageMixin:
    """Storing and loading, merging, and the plain-data state that storage services read
    and write (a part of Trajectory)."""

    @property
    def v_storage_service(self) -> StorageService | None:
        """The storage service (store/load); assign your own with use_hdf5=False."""
        return self._storage_service

    @v_storage_service.setter
    def v_storage_service(self, service: StorageService) -> None:
        if isinstance(service, type):
            service = service(None, trajectory_name=self._name) if issubclass(
                service, _FileService) else service()
        self.__dict__['_storage_service'] = service

    def _place_leaf(self, full_name, tag, comment, data, ann, overwrite=True):
        self._lazy_touch(full_name)
        node = self._nodes.get(full_name)
        if node is None:
            if self._leaf_above(full_name) is not None:
                return None
            cls = _resolve_class(tag, self._dynamic_imports)
            node = cls(full_name.rpartition('.')[2])  # as pypet: the class's own constructor
            branch, _, rest = full_name.partition('.')
            parent = self._nodes.get(full_name.rpartition('.')[0]) if rest else None
            if parent is None and not rest:
                parent = self  # (a leaf at the root, pypet's f_add_leaf)
            elif parent is None:
                top = self._children.get(branch)
                if top is None:  # (below a group outside the four branches: f_add_leaf)
                    top = self._add_path(self, branch, None, '')
                parent = self._add_path(top, rest.rpartition('.')[0], None, '') \
                    if '.' in rest else top
            node._rename(full_name.rpartition('.')[2])
            self._insert(parent, node)
        elif not node.v_is_leaf:
            raise StorageError('%s is a group in memory but a leaf in the file' % full_name)
        elif not overwrite and not node.f_is_empty():
            return node
        node.__dict__['_comment'] = comment or node._comment
        if ann:
            node.v_annotations._dict.update(ann)
        if data is not None:
            if not node.f_is_empty():
                node.__dict__['_locked'] = False
                node.f_empty()
            node._load(data)
            self._drop_fast(node._name)
        return node

    def _place_rows(self, template, rows, mode, lazy=True):
        """Bulk load of one run column: the fast path that keeps loading 100k runs
        quick. A column right below results.runs or derived_parameters.runs is kept
        pending (see _PendingRuns): its runs' groups are made when asked for."""
        parts = template.split('.')
        if lazy and len(parts) > 3 and parts[1] == 'runs' and parts[2] == '$' and \
                parts[0] in _RUN_BRANCHES and '$' not in parts[3:] and \
                '$set' not in parts and rows and (
                    mode < LOAD_DATA or _plain_rows(rows)):
            base = self._place_group(parts[0] + '.runs', '', None)
            if base is None:
                return
            kids = base._children
            if type(kids) is not _PendingRuns:
                kids = base.__dict__['_children'] = _PendingRuns(base, kids)
                kids.stamp = _files_stamp(self._storage_service)
            made = {}
            if dict.__len__(kids):  # (runs made already take the rows now, as before)
                fmt = FORMATTED_RUN_NAME
                made = {i: r for i, r in rows.items() if dict.__contains__(
                    kids, fmt % i if i >= 0 else RUN_NAME_DUMMY)}
            if made:
                self._place_rows(template, made, mode, lazy=False)
                rows = {i: r for i, r in rows.items() if i not in made}
            if rows:
                kids.add(template, rows, mode)
                self._lazy_changed()
            return
        if parts.count('$') != 1 or '$set' in parts or len(parts) < 3 or parts[-1] == '$':
            # (a template ending in $: leaves named like runs, as 0.2.0 wrote them)
            for idx, (tag, comment, ann, data) in rows.items():
                self._place_leaf(_join_run(template, idx), tag, comment,
                                 data if mode >= LOAD_DATA else None, ann,
                                 overwrite=mode == OVERWRITE_DATA)
            return
        pos = parts.index('$')
        head, tail = '.'.join(parts[:pos]), parts[pos + 1:]
        base = self._place_group(head, '', None)
        if base is None:
            return
        nodes, index = self._nodes, self._by_name
        leaf_name = tail[-1]
        self._unique.pop(leaf_name, None)
        self._drop_fast(leaf_name)
        leaf_index = index.setdefault(leaf_name, {})
        leaf_dicts = {}  # class -> what every new leaf of it holds (copied, not rebuilt)
        base_children, fmt = base._children, FORMATTED_RUN_NAME
        group_cls = _BRANCH_GROUP.get(head.partition('.')[0], NNGroupNode)
        pending = type(base_children) is _PendingRuns and base_children.layers
        for idx, (tag, comment, ann, data) in rows.items():
            cls = _BUILTIN_LEAVES.get(tag)
            run = fmt % idx if idx >= 0 else RUN_NAME_DUMMY
            prefix = head + '.' + run
            group = nodes.get(prefix)
            if group is None and pending:  # (a pending run: made first, then added to)
                group = base_children.get(run)
            if group is None:  # (what _insert(base, _new_group(run)) does, for a new name)
                group = group_cls.__new__(group_cls)
                group.__dict__.update(_comment='', _annotations=None, _full_name=prefix,
                                      _name=run, _children={}, _links={}, _parent=base,
                                      _traj=self)
                base_children[run] = nodes[prefix] = group
                if run in index or run in self._unique or run in self._run_fast:
                    self._unique.pop(run, None)
                    self._drop_fast(run)
                    index.setdefault(run, {})[prefix] = group
                else:
                    index[run] = {prefix: group}
            for part in tail[:-1]:
                if group.v_is_leaf:
                    break
                child = group._children.get(part)
                group = child if child is not None else self._insert(
                    group, _new_group(part, group_cls))
            if group.v_is_leaf:
                self._leaf_above(prefix + '.' + '.'.join(tail))  # (says which, and skips)
                continue
            full = group._full_name + '.' + leaf_name
            if cls is None or full in nodes:
                self._place_leaf(full, tag, comment, data if mode >= LOAD_DATA else None, ann,
                                 overwrite=mode == OVERWRITE_DATA)
                continue
            same = leaf_dicts.get(cls)
            if same is None:
                same = leaf_dicts[cls] = _leaf_dict(cls, leaf_name, self)
            leaf = cls.__new__(cls)
            d = leaf.__dict__
            d.update(same)
            d['_full_name'], d['_comment'], d['_parent'] = full, comment or '', group
            if d['_data'] is not None:
                d['_data'] = {}  # (a result's own)
            if ann:
                leaf.v_annotations._dict.update(ann)
            if data is not None and mode >= LOAD_DATA:
                leaf._load(data)
            group._children[leaf_name] = leaf
            nodes[full] = leaf
            leaf_index[full] = leaf

    def _pending_runs(self):
        """The children of the runs groups that hold pending runs (see _PendingRuns)."""
        found = []
        for _, path in _RUN_GROUPS:
            group = self._nodes.get(path)
            if group is not None and type(group._children) is _PendingRuns and \
                    group._children.layers:
                found.append(group._children)
        return found

    def _lazy_lookup(self, name, below, everywhere=False):
        """Make the pending runs that a search for `name` below the group `below`
        (skipping groups) may find: a run's name makes that run; another name the
        current run's, or all of them outside a run (or `everywhere`)."""
        names = self._lazy_names
        if not names:
            return
        held = name in names
        if not held and not _RUN_RE.fullmatch(name) and name != RUN_NAME_DUMMY:
            return
        for kids in self._pending_runs():
            path = kids.group._full_name
            if below is not self and path != below._full_name and \
                    not path.startswith(below._full_name + '.'):
                continue
            if not held:
                kids.get(name)
            elif everywhere or self._idx < 0:
                kids.make()
            else:
                kids.get(_run_name(self._idx))

    def _lazy_touch(self, full_name):
        """Make the pending run that `full_name` is in, if any."""
        if self._lazy_names:
            parts = full_name.split('.', 3)
            if len(parts) > 2 and parts[1] == 'runs' and parts[0] in _RUN_BRANCHES:
                group = self._nodes.get(parts[0] + '.runs')
                if group is not None:
                    group._children.get(parts[2])

    def _leaf_above(self, full_name):
        """The leaf at one of full_name's prefixes, said in the log, or None. Files where a
        node changed from leaf to group (or back) between stores held both (0.2.0 wrote
        them): what would go below the leaf is skipped, so that the rest loads."""
        nodes, head = self._nodes, full_name
        while '.' in head:
            head = head.rpartition('.')[0]
            node = nodes.get(head)
            if node is not None:
                if not node.v_is_leaf:
                    return None  # (a group: so are all above it)
                _say_once('%s: not loaded, as %s is a leaf: the stored tree changed shape '
                          'between stores; delete one of them (f_delete_item) to silence this'
                          % (full_name.rstrip('.'), head))
                return node
        return None

    def _place_group(self, full_name, comment, ann, overwrite=True):
        """The group at `full_name` with the stored comment and annotations; without
        overwrite (pypet's LOAD_DATA) those already in memory are kept."""
        self._lazy_touch(full_name)
        if self._leaf_above(full_name + '.') is not None:
            return None
        branch, _, rest = full_name.partition('.')
        top = self._children.get(branch)
        if top is None:  # a group outside the four branches (links' groups: traj.x.y)
            top = self._add_path(self, branch, None, '')
        group = self._add_path(top, rest, None, comment) if rest else top
        if comment and (overwrite or not group._comment):
            group.__dict__['_comment'] = comment
        if ann:
            mine = group.v_annotations._dict
            mine.update(ann if overwrite else {k: v for k, v in ann.items() if k not in mine})
        return group

    # -- storing and loading -----------------------------------------------------------------
    def _service(self):
        if '_merged' in self.__dict__:  # (what reads or writes the file sees the merges)
            self._store_merged()
        if self._storage_service is None:
            if self._is_run:  # a worker's copy
                raise PypetError(
                    '%s: a run in another process cannot load or store items itself (what it '
                    'adds is stored when it ends); load what the runs need before f_run, or '
                    'pass it to the job as an argument' % self._name)
            raise PypetError('%s has no storage service; pass filename=... or assign '
                             'traj.v_storage_service' % self._name)
        return self._storage_service

    def f_store(self, only_init: bool = False, store_data: int = STORE_DATA,
                max_depth: int | None = None, recursive: bool | None = None) -> None:
        """Store the whole trajectory (outside a run) or what the current run added.
        max_depth: only nodes up to that depth (the branches are depth 1);
        recursive=False: pypet's other spelling of only_init=True."""
        if recursive is not None:
            if only_init:  # (pypet: the two are mutually exclusive)
                raise ConfigurationError('f_store takes only_init=True or recursive=False, '
                                         'not both; drop one')
            only_init = not recursive
        if self._is_run:  # what the run added (in a worker: it goes with the run's record)
            self._place_held()
            self.f_store_items(list(self._new_leaves))
            return
        self._store_merged()
        self.__dict__['_store_max_depth'] = max_depth  # (read by _to_state, see there)
        try:
            self._service().store(TRAJECTORY, self, only_init=only_init, store_data=store_data)
        finally:
            self.__dict__.pop('_store_max_depth', None)
        self.__dict__['_stored'] = True

    def f_store_item(self, item: str | NNTreeNode, *args: object, **kwargs: object) -> None:
        """Store one node (or a name of one); see f_store_items."""
        self.f_store_items([item], *args, **kwargs)

    def f_store_items(self, iterator: collections.abc.Iterable, recursive: bool = False,
                      store_data: int = STORE_DATA,
                      overwrite: str | list | bool | None = None,
                      max_depth: int | None = None, with_links: bool = True,
                      non_empties: bool = False, complevel: int | None = None,
                      complib: str | None = None, shuffle: bool | None = None,
                      fletcher32: bool | None = None) -> None:
        """Store single leaves or groups (with recursive=True, their subtree).

        overwrite: names of a stored result's items to replace (pypet's; the other
        stored items stay, new ones are added); overwrite=True or
        store_data=OVERWRITE_DATA replaces them all; non_empties: skip the empty leaves
        among the items; complevel, complib, shuffle, fletcher32: pypet's per-store
        filters, said to have no effect (a store uses its service's); max_depth: with
        recursive, the levels below each item that are stored; a group's links are
        stored with it unless with_links=False."""
        iterator = [_tuple_item(i) for i in iterator]
        for key, value in (('complevel', complevel), ('complib', complib),
                           ('shuffle', shuffle), ('fletcher32', fletcher32)):
            if value is not None:
                _say_once('f_store_items(%s=%r) has no effect in minipypet: a store uses its '
                          "service's filters (HDF5StorageService(..., %s=...))"
                          % (key, value, key))
        if overwrite is True:
            overwrite, store_data = None, OVERWRITE_DATA
        if non_empties:
            nodes = [self.f_get(i) if isinstance(i, str) else i for i in iterator]
            iterator = [n for n in nodes if not (n.v_is_leaf and n.f_is_empty())]
        if self._is_run:  # the data as it is now goes with the run's record, even if the
            # leaf is emptied before the run ends
            stored = self.__dict__.setdefault('_run_stored', {})
            for item in iterator:
                node = self.f_get(item) if isinstance(item, str) else item
                for leaf in [node] if node.v_is_leaf else (
                        node.f_iter_leaves() if recursive else ()):
                    if not leaf.f_is_empty():
                        stored[id(leaf)] = leaf._store()
            if self._storage_service is None:
                return  # a worker's copy: what the run added is stored with the run
        if not self._stored and not self._is_run:
            raise PypetError('store the trajectory once with f_store() before f_store_item')
        msgs = []
        along = set()  # groups on the way are stored too (their comments, annotations), as pypet
        for item in iterator:
            node = self.f_get(item) if isinstance(item, str) else item
            parent = node._parent
            if not self._is_run:
                path = []
                while parent is not None and parent is not self and id(parent) not in along:
                    along.add(id(parent))
                    path.append((GROUP, parent))
                    parent = parent._parent
                msgs.extend(reversed(path))
            if node.v_is_leaf:
                msgs.append((LEAF, node))
            else:
                msgs.append((GROUP, node))
                if recursive:
                    top = node._full_name.count('.')
                    msgs.extend((LEAF if n.v_is_leaf else GROUP, n) for n in node.f_iter_nodes()
                                if max_depth is None or
                                n._full_name.count('.') - top <= max_depth)
        extra = {}  # (only when asked for: a service of one's own need not know them)
        if overwrite is not None:
            extra['overwrite'] = [overwrite] if isinstance(overwrite, str) else list(overwrite)
        if not with_links:
            extra['with_links'] = False
        self._service().store(LIST, msgs, trajectory=self, store_data=store_data, **extra)

    def f_load(self, name: str | None = None, index: int | None = None, as_new: bool = False,
               load_parameters: int = LOAD_DATA, load_derived_parameters: int = LOAD_SKELETON,
               load_results: int = LOAD_SKELETON, load_other_data: int = LOAD_SKELETON,
               recursive: bool = True, load_data: int | None = None, max_depth: int | None = None,
               force: bool = False, dynamic_imports: list | None = None,
               with_run_information: bool = True, with_meta_data: bool = True,
               storage_service: StorageService | type | str | None = None,
               filename: str | os.PathLike | None = None, allow_pickle: bool | None = None,
               load_all: int | None = None) -> None:
        """Load a trajectory from storage by name or index (-1: the newest) into this one.

        Each load_* is LOAD_NOTHING (0), LOAD_SKELETON (1, empty leaves), LOAD_DATA (2) or
        OVERWRITE_DATA (3); load_data sets all four. as_new loads only the parameters so that
        the trajectory can be run again. Pickled data (PickleParameter, PickleResult) is
        unpickled where this user wrote it (signed with the user's key; see "Trust model" in
        the README): allow_pickle=True unpickles any, False none."""
        if load_all is not None:
            load_data = load_all
        self._store_merged()  # (loading reads the file, so merges waiting in memory first)
        if load_data is not None:
            load_parameters = load_derived_parameters = load_results = load_other_data = \
                load_data
        if storage_service is not None:
            self.v_storage_service = storage_service
        elif filename is not None:
            self.v_storage_service = _make_service(None, filename, name=name or self._name,
                                                   mode='load')
        if dynamic_imports is not None:
            self.f_add_to_dynamic_imports(dynamic_imports)
        if name is None and index is None:
            name = self._name if self._name != 'my_trajectory' or self._stored else None
            index = -1 if name is None else None
        modes = {'config': load_parameters if not as_new else LOAD_DATA,  # as pypet
                 'parameters': load_parameters,
                 'derived_parameters': load_derived_parameters if not as_new else LOAD_NOTHING,
                 'results': load_results if not as_new else LOAD_NOTHING}
        for mode in modes.values():
            if mode not in (0, 1, 2, 3):
                raise ConfigurationError('load modes are 0 (nothing), 1 (skeleton), 2 (data) '
                                         'or 3 (overwrite), got %r' % (mode,))
        old = _LOAD_POLICY.allow_pickle, _LOAD_POLICY.source
        _LOAD_POLICY.allow_pickle = allow_pickle
        _LOAD_POLICY.source = getattr(self._service(), 'filename', None)
        # A load makes a few objects per run and no garbage; with the cyclic GC on, its
        # passes rescan the growing tree again and again (~35% of loading 100,000 runs).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            modes[''] = load_other_data if not as_new else LOAD_NOTHING  # (outside the four)
            state = self._service().load(TRAJECTORY, self, name=name, index=index,
                                         modes=modes, force=force)
            self._from_state(state, modes, as_new, with_run_information, max_depth)
        finally:
            _LOAD_POLICY.allow_pickle, _LOAD_POLICY.source = old
            if gc_was_enabled:
                gc.enable()

    def _from_state(self, state, modes, as_new=False, with_run_information=True,
                    max_depth=None):
        d = self.__dict__
        if not as_new:
            d['_name'] = state['name']
            d['_time'], d['_timestamp'] = state['time'], state['timestamp']
            d['_comment'] = state.get('comment', '')
            d['_stored'] = True
            if state.get('ann'):
                self.v_annotations._dict.update(state['ann'])
        d['_version'], d['_python'] = state.get('version', ''), state.get('python', '')
        place = self._place_leaf
        other = modes.get('', LOAD_NOTHING)  # (groups and links outside the four branches)
        if max_depth is not None:  # (pypet's f_load(max_depth): the branches are depth 1)
            state = dict(state, nodes={k: v for k, v in state['nodes'].items()
                                       if k.count('.') < max_depth},
                         columns={k: v for k, v in state.get('columns', {}).items()
                                  if k.count('.') < max_depth})
        for full_name, rec in state['nodes'].items():
            branch = full_name.partition('.')[0]
            mode = modes.get(branch, other)
            if mode == LOAD_NOTHING:
                continue
            kind = rec['kind']
            if kind == 'group':
                self._place_group(full_name, rec.get('comment', ''), rec.get('ann'),
                                  overwrite=mode == OVERWRITE_DATA)
            elif kind == 'leaf':
                data = rec.get('data') if mode >= LOAD_DATA else None
                place(full_name, rec['class'], rec.get('comment', ''), data, rec.get('ann'),
                      overwrite=mode == OVERWRITE_DATA)
        for template, rows in state.get('columns', {}).items():
            mode = modes.get(template.partition('.')[0], LOAD_NOTHING)
            if mode == LOAD_NOTHING:
                continue
            self._place_rows(template, rows, mode)
        for full_name, rec in state['nodes'].items():
            if rec['kind'] == 'link' and ('.' not in full_name or
                                          modes.get(full_name.partition('.')[0], other)):
                self._lazy_touch(rec['target'])  # (a link into a pending run makes it)
                target = self._nodes.get(rec['target'])
                if target is not None:
                    parent, _, lname = full_name.rpartition('.')
                    group = self if not parent else (self._nodes.get(parent) or
                                                     self._place_group(parent, '', None))
                    if group is not None and not group.v_is_leaf:
                        self._load_link(group, lname, target)
        d['_merged_runs'] = [list(r) for r in state.get('merged_runs', [])]
        explored = [n for n in state.get('explored', []) if n in self._nodes]
        d['_explored'] = {n: self._nodes[n] for n in explored}
        if as_new:
            d['_length'] = state.get('length', 1)
            d['_runs'] = _RunTable(d['_length'])
        elif with_run_information:
            d['_length'] = state.get('length', 1)
            d['_runs'] = _RunTable.from_plain(state['runs'], state.get('runs_loader'))
        else:  # as pypet: the explored ranges set the length, the run rows are not read
            d['_length'] = state.get('length', 1)
            d['_runs'] = _RunTable(d['_length'])
        for param in self._explored.values():
            if param._explored_range is not None:
                param._restore_default()

    def f_load_skeleton(self) -> None:
        """Load the tree without data (every leaf empty)."""
        self.f_load(load_parameters=LOAD_SKELETON, load_derived_parameters=LOAD_SKELETON,
                    load_results=LOAD_SKELETON, load_other_data=LOAD_SKELETON)

    def f_load_item(self, item: str | NNTreeNode, *args: object, **kwargs: object) -> None:
        """Load one node (or a name of one) from storage; see f_load_items."""
        self.f_load_items([item], *args, **kwargs)

    def f_load_items(self, iterator: collections.abc.Iterable, load_data: int = LOAD_DATA,
                     recursive: bool = True, load_only: list | None = None,
                     only_empties: bool = False, allow_pickle: bool | None = None,
                     load_except: list | None = None, with_links: bool = True,
                     max_depth: int | None = None) -> None:
        """Load the data of leaves (names or nodes); groups load their subtree, and the
        groups on the way are loaded too.

        load_only: load only these item names of a result (others stay as they are);
        load_except: load all items but these; with_links=False: no links; max_depth:
        with recursive, the levels below each item that are loaded."""
        if load_only is not None and load_except is not None:
            raise ConfigurationError('pass load_only or load_except, not both')
        names = []
        for item in iterator:
            item = _tuple_item(item)
            if isinstance(item, NNTreeNode):
                names.append(item._full_name)
            else:
                node = self._resolve(self, item)
                if node is not None:
                    names.append(node._full_name)
                    continue
                parts = [self._translate(part) for part in item.split('.')]  # ('res', '$')
                if len(parts) > 1 and parts[0] in _RUN_BRANCHES and (
                        _RUN_RE.fullmatch(parts[1]) or _SET_RE.fullmatch(parts[1])):
                    parts.insert(1, 'runs')  # (pypet's results.run_set_X: results.runs...)
                names.append('.'.join(parts))
        old = _LOAD_POLICY.allow_pickle, _LOAD_POLICY.source
        _LOAD_POLICY.allow_pickle = allow_pickle
        _LOAD_POLICY.source = getattr(self._service(), 'filename', None)
        try:
            state = self._service().load(LIST, self, names=names, recursive=recursive)
            if max_depth is not None:
                tops = [n.count('.') for n in names]
                state = {k: v for k, v in state.items() if any(
                    (k == n or k.startswith(n + '.')) and k.count('.') - t <= max_depth
                    or n.startswith(k + '.') for n, t in zip(names, tops))}
            keep = load_only if load_only is not None else load_except
            keep = {keep} if isinstance(keep, str) else set(keep) if keep is not None else None
            for full_name, (tag, comment, ann, data) in state.items():
                if tag == ':group':
                    self._place_group(full_name, comment, ann,
                                      overwrite=load_data == OVERWRITE_DATA)
                    continue
                if tag == ':link':
                    target = self._nodes.get(comment)  # (a link's record: its target)
                    parent, _, lname = full_name.rpartition('.')
                    group = self._nodes.get(parent) if parent else self
                    if with_links and target is not None and group is not None and \
                            not group.v_is_leaf and lname not in group._children:
                        self._load_link(group, lname, target)
                    continue
                node = self._nodes.get(full_name)
                if only_empties and node is not None and not node.f_is_empty():
                    continue
                if keep is not None and data is not None:
                    data = {k: v for k, v in data.items()
                            if (k in keep) == (load_only is not None)}
                    if node is not None and not node.f_is_empty():
                        node._load(data)
                        continue
                node = self._place_leaf(full_name, tag, comment,
                                        data if load_data >= LOAD_DATA else None, ann,
                                        overwrite=load_data == OVERWRITE_DATA)
                if isinstance(node, BaseParameter) and node._explored_range is not None \
                        and node.v_branch == 'parameters' and full_name not in self._explored:
                    # (a trajectory loaded without its parameters: an explored one
                    # loaded now takes part in f_set_crun / v_idx, as pypet's)
                    self._explored[full_name] = node
                    if self._idx >= 0:
                        node._set_parameter_access(self._idx)
        finally:
            _LOAD_POLICY.allow_pickle, _LOAD_POLICY.source = old

    # -- merging -----------------------------------------------------------------------------
    def f_merge(self, other_trajectory: Trajectory | str, trial_parameter: str | None = None,
                remove_duplicates: bool = False, ignore_data: bool = (), backup: bool = True,
                move_data: bool = False, delete_other_trajectory: bool = False,
                keep_info: bool = True, keep_other_trajectory_info: bool = True,
                merge_config: bool = True, backup_filename: str | os.PathLike | None = None,
                consecutive_merge: bool = False, slow_merge: bool = False) -> None:
        """Append the runs of `other_trajectory` (same parameters) to this one and store.

        Merged runs get new indices after this trajectory's; `remove_duplicates` skips runs
        whose parameter point this trajectory has already; `trial_parameter` is renumbered
        to continue after this trajectory's trials; config and environment entries of both
        are kept, and so are the other's comments. Both trajectories must be stored;
        `backup` first writes each into backup_<name> beside its file (pypet's names).
        consecutive_merge: as pypet's, the merged trajectory is written at the next f_store
        (or f_load) instead of at each merge: call f_store() after the last one."""
        for traj in (self, other_trajectory):
            if not isinstance(traj._storage_service, _FileService) or not traj._stored:
                raise PypetError('f_merge needs both trajectories stored in files; %s is not '
                                 '(store it with f_store() first)' % traj._name)
        if other_trajectory._name == self._name and \
                other_trajectory._storage_service.filename == self._storage_service.filename:
            raise PypetError('cannot merge %s with itself' % self._name)
        service = self._storage_service
        defer = consecutive_merge and not (backup or backup_filename or move_data or
                                           delete_other_trajectory)
        if not defer:
            self._store_merged()
        if backup or backup_filename:  # (pypet 0.7 took backup_filename=True for backup)
            # as pypet's: each trajectory into backup_<name> beside its file, the other
            # first; a name an earlier merge took gets a number (a backup is never lost)
            for traj in (other_trajectory, self):
                if traj is self and isinstance(backup_filename, (str, os.PathLike)):
                    traj.f_backup(backup_filename)
                    continue
                folder, base = os.path.split(traj._storage_service.filename)
                root = os.path.join(folder, 'backup_' + traj._name)
                ext, count = os.path.splitext(base)[1], 1
                target = root + ext
                while os.path.exists(target):
                    count += 1
                    target = '%s_%d%s' % (root, count, ext)
                traj.f_backup(target)
        # (this trajectory's run rows are stored already: only their indices are read)
        mine = self.__dict__.pop('_merged', None) or service._load_state(
            self._name, data={'config', 'parameters'})
        _merge_memory(mine, self._to_state(), STORE_DATA, False)
        other = other_trajectory._storage_service._load_state(other_trajectory._name,
                                                              data=True)
        if other['length'] > other_trajectory._length:  # (its runs beyond would be merged
            raise PypetError(  # without their parameters: refused before anything is written)
                'cannot merge %s: its file %s holds %d runs now, %d when it was loaded (runs '
                'were added since, by another process or object); load it again, once that '
                'sweep has ended, and merge that' % (
                    other_trajectory._name, other_trajectory._storage_service.filename,
                    other['length'], other_trajectory._length))
        _merge_memory(other, other_trajectory._to_state(), STORE_DATA, False)
        _merge_states(mine, other, trial_parameter, remove_duplicates, set(ignore_data),
                      merge_config)
        if defer:  # (a write copies every trajectory of the file: the caller stores once)
            self.__dict__['_merged'] = mine
        else:
            service.checkpoint(extra=(mine, OVERWRITE_DATA, False))
        if move_data or delete_other_trajectory:
            other_trajectory._storage_service.delete_trajectory(other_trajectory._name)
        self._reset_tree()
        self._from_state(dict(mine, runs={f: list(v) for f, v in mine['runs'].items()})
                         if defer else
                         service._load_state(self._name, data={'config', 'parameters'}), {
            'config': LOAD_DATA, 'parameters': LOAD_DATA,
            'derived_parameters': LOAD_SKELETON, 'results': LOAD_SKELETON})
        return self

    def _store_merged(self):
        """Write what consecutive merges (f_merge(consecutive_merge=True)) left in memory."""
        pending = self.__dict__.pop('_merged', None)
        if pending is not None:
            self._service().checkpoint(extra=(pending, OVERWRITE_DATA, False))

    def f_merge_many(self, other_trajectories: list, **kwargs: object) -> None:
        """f_merge each of `other_trajectories` in turn (keywords: f_merge's)."""
        code = Trajectory.f_merge.__code__
        unknown = set(kwargs) - set(code.co_varnames[2:code.co_argcount])
        if unknown:
            raise TypeError('f_merge_many got unknown keywords %s' % sorted(unknown))
        for other in other_trajectories:
            self.f_merge(other, **kwargs)
        return self

    def f_backup(self, backup_filename: str | os.PathLike | None = None) -> str:
        """Store this trajectory as stored (the file's, not what memory holds since)
        into `backup_filename` (default: backup_<name><ext> beside its file), as the
        only trajectory of that new file; returns its path (pypet's backup)."""
        service = self._service() if self._storage_service is not None else None
        if not isinstance(service, _FileService) or not self._stored:
            raise PypetError('f_backup needs the trajectory stored in a file; %s is not '
                             '(store it with f_store() first)' % self._name)
        if backup_filename is None:
            folder, base = os.path.split(service.filename)
            backup_filename = os.path.join(folder, 'backup_%s%s'
                                           % (self._name, os.path.splitext(base)[1]))
        backup_filename = os.fspath(backup_filename)
        if os.path.exists(backup_filename):  # (never over a file: it may be another's)
            raise ConfigurationError('f_backup: %s exists; give another backup_filename or '
                                     'remove it' % backup_filename)
        service.flush()
        state = service._load_state(self._name, data=True)
        type(service)(backup_filename).checkpoint(extra=(state, OVERWRITE_DATA, False),
                                                 fresh=self._name)
        return backup_filename

    def f_delete_item(self, item: str | NNTreeNode, *args: object, **kwargs: object) -> None:
        """Delete one node from storage; see f_delete_items."""
        self.f_delete_items([item], *args, **kwargs)

    def f_delete_items(self, iterator: collections.abc.Iterable,
                       remove_from_trajectory: bool = False, recursive: bool = False,
                       delete_only: str | list | None = None,
                       remove_from_item: bool = False) -> None:
        """Delete items from storage (and from memory with remove_from_trajectory).
        delete_only: names of a result's items to delete from storage, the rest stays
        (remove_from_item: from the result in memory too)."""
        nodes = [self.f_get(i) if isinstance(i, str) else i for i in iterator]
        for node in nodes:
            if node._full_name in self._explored:
                raise PypetError('%s is explored and cannot be deleted' % node._full_name)
        if not self._stored:  # (nothing of it is stored: a record of its name in the
            if remove_from_trajectory:  # file would name a trajectory the file lacks)
                self.f_remove_items(nodes, recursive=recursive)
            return
        if delete_only is not None:
            self._delete_only(nodes, [delete_only] if isinstance(delete_only, str) else
                              list(delete_only), remove_from_item)
            return
        self._service().store(DELETE, [n._full_name for n in nodes], trajectory=self,
                              recursive=recursive)
        if remove_from_trajectory:
            self.f_remove_items(nodes, recursive=recursive)

    def _delete_only(self, nodes, names, remove_from_item):
        """Store each result again without the items `names` (the file holds whole leaves)."""
        service = self._service()
        for node in nodes:
            if not isinstance(node, Result):
                raise PypetError('delete_only names items of a result; %s is a %s'
                                 % (node._full_name, type(node).__name__))
            stored = service.load(LIST, self, names=[node._full_name], recursive=False)
            tag, comment, ann, data = stored[node._full_name]
            keep = {k: v for k, v in (data or {}).items() if k not in names}
            copy = _resolve_class(tag, self._dynamic_imports).__new__(type(node))
            copy.__dict__.update(node.__dict__, _data={}, _annotations=None)
            copy._load(keep)
            service.store(LIST, [(LEAF, copy)], trajectory=self, store_data=OVERWRITE_DATA)
            if remove_from_item:
                for name in names:
                    node._data.pop(name, None)

    def f_delete_link(self, link: str | tuple, remove_from_trajectory: bool = False) -> None:
        """Delete one link from storage; see f_delete_links."""
        self.f_delete_links([link], remove_from_trajectory)

    def f_delete_links(self, iterator_of_links: collections.abc.Iterable, remove_from_trajectory: bool = False
                       ) -> None:
        """Delete links from storage: 'group.link' names or (group, link name) pairs."""
        pairs = []
        for link in iterator_of_links:
            if isinstance(link, str):
                parent, _, name = link.rpartition('.')
                group = self.f_get(parent) if parent else self
            else:
                group, name = link
            if name not in group._links:
                raise NoSuchNodeError('%s has no link %r' % (group._full_name or 'the '
                                                             'trajectory', name))
            pairs.append((group, name))
        self._service().store(DELETE, [g._join(n) for g, n in pairs], trajectory=self,
                              recursive=False)
        if remove_from_trajectory:
            for group, name in pairs:
                group.f_remove_link(name)

    def f_migrate(self, new_name: str | None = None, in_store: bool = False,
                  new_storage_service: object = None, filename: str | None = None) -> None:
        """Rename the trajectory and/or move it to another file or service;
        in_store=True says it is stored there already."""
        if new_name is not None:
            _check_name(new_name, 'the trajectory name')
            self.__dict__['_name'] = new_name
        if new_storage_service is not None:
            self.v_storage_service = new_storage_service
        elif filename is not None:
            self.v_storage_service = _make_service(None, filename, name=self._name)
        self.__dict__['_stored'] = bool(in_store)

    def f_remove_item(self, item: str | NNTreeNode, recursive: bool = False) -> None:
        """Remove one node from memory (the file keeps it)."""
        self.f_remove_items([item], recursive)

    def f_remove_items(self, iterator: collections.abc.Iterable, recursive: bool = False) -> None:
        """Remove items from memory only."""
        for item in iterator:
            node = self.f_get(item) if isinstance(item, str) else item
            node._parent.f_remove_child(node._name, recursive=recursive)

    # -- plain-data state (what storage services read and write) ----------------------------
    def _iter_made_nodes(self, pending):
        """f_iter_nodes() over the nodes made: the runs `pending` holds are left out."""
        for kids in pending:
            kids.group.__dict__['_children'] = dict(dict.items(kids))
        try:
            yield from self.f_iter_nodes(recursive=True)
        finally:
            for kids in pending:
                kids.group.__dict__['_children'] = kids

    def _to_state(self, only_init=False):
        """The whole trajectory as plain data: nodes, run columns, run table."""
        nodes, columns = {}, {}
        max_depth = self.__dict__.get('_store_max_depth')  # (f_store(max_depth=...))
        pending = self._pending_runs()
        for node in self._iter_made_nodes(pending):
            full = node._full_name
            if max_depth is not None and full.count('.') >= max_depth:
                continue
            if full.partition('.')[2] == '' and not node.v_is_leaf:
                if node._comment or node._annotations:
                    nodes[full] = {'kind': 'group', 'comment': node._comment,
                                   'ann': _ann(node)}
                for lname, target in node._links.items():  # links right in a branch
                    nodes[full + '.' + lname] = {'kind': 'link', 'target': target._full_name}
                continue
            split = _split_run(full)
            if node.v_is_leaf:
                split = _leaf_split(split)
                data = None if node.f_is_empty() else node._store()
                if data is not None and type(node) not in _BUILTIN_TYPES:
                    _check_plain(data, full)
                if split is not None:
                    columns.setdefault(split[0], {})[split[1]] = (
                        _class_tag(type(node)), node._comment, _ann(node), data)
                else:
                    nodes[full] = {'kind': 'leaf', 'class': _class_tag(type(node)),
                                   'comment': node._comment, 'ann': _ann(node), 'data': data}
            elif split is None:
                nodes[full] = {'kind': 'group', 'comment': node._comment, 'ann': _ann(node)}
            for lname, target in node._links.items() if not node.v_is_leaf and (
                    max_depth is None or full.count('.') + 1 < max_depth) else ():
                nodes[full + '.' + lname] = {'kind': 'link', 'target': target._full_name}
        for lname, target in self._links.items():
            nodes[lname] = {'kind': 'link', 'target': target._full_name}
        for kids in pending:  # (runs not made: their rows as loaded, see _PendingRuns)
            for template, rows, _ in kids.layers:
                if max_depth is not None and template.count('.') >= max_depth:
                    continue
                column, done = columns.setdefault(template, {}), kids.done
                for idx, row in rows.items():
                    if idx not in done:
                        if row[3] is None and idx in column:  # (a skeleton over data
                            row = row[:3] + (column[idx][3],)  # keeps the data)
                        column[idx] = row
        state = {'format': FORMAT_VERSION, 'name': self._name, 'time': self._time,
                 'timestamp': self._timestamp, 'comment': self._comment,
                 'version': __version__, 'python': self._python, 'length': self._length,
                 'explored': list(self._explored),
                 'runs': self._runs.to_plain(share=True),
                 'merged_runs': [list(r) for r in self._merged_runs], 'ann': _ann(self),
                 'nodes': nodes, 'columns': columns}
        return state


# ============================================================================================
# Trajectory
# ============================================================================================
class Trajectory(_RunsMixin, _StorageMixin, NNGroupNode):
    """The tree of config, parameters, derived parameters and results, plus the exploration.

    Args:
        name: the trajectory's name (letters, digits, `_`, `-`).
        add_time: append `_YYYY_MM_DD_HHhMMmSSs` to the name.
        comment: free text stored with the trajectory.
        dynamic_imports: your own leaf classes (classes or dotted strings) needed on load.
        storage_service: a service instance (or class); `filename` picks HDF5 (or pickle).
    """

    # Who writes which part of the state (__init__ sets it all up; a load, a copy and
    # pickling restore it whole). The others read it and call the owner's methods.
    _STATE_OWNERS = {
        'Trajectory': (  # the tree's index and how lookups behave
            '_nodes', '_by_name', '_unique', '_lazy_names', '_link_count', '_traj',
            '_held', '_hidden',
            '_props', '_presets', '_dynamic_imports', '_environment_hexsha',
            '_environment_name', '_standard_parameter', '_standard_result'),
        '_RunsMixin': (  # the exploration and the current run
            '_explored', '_length', '_runs', '_idx', '_is_run', '_new_leaves', '_run_fast',
            '_manual_start', '_new_links', '_wildcards'),
        '_StorageMixin': (  # the service and what the file knows the trajectory by
            '_storage_service', '_stored', '_merged_runs', '_store_max_depth', '_name',
            '_time', '_timestamp', '_version', '_python'),
    }
    _RESTORES = ('__init__', '__getstate__', '__setstate__', '__copy__', 'f_copy',
                 '_from_state', '_worker_copy')
    # the v_ properties and their defaults (also Environment(v_auto_load=...) keywords)
    _PROPERTY_DEFAULTS = {'fast_access': True, 'shortcuts': True, 'auto_load': False,
                          'max_depth': None, 'iter_recursive': False,
                          'auto_run_prepend': True, 'full_copy': None, 'with_links': True,
                          'no_clobber': False}  # (full_copy None: not set, see v_full_copy)

    def __init__(self, name: str = 'my_trajectory', add_time: bool = False, comment: str = '',
                 dynamic_imports: list | None = None, wildcard_functions: dict | None = None,
                 storage_service: StorageService | type | str | None = None,
                 filename: str | os.PathLike | None = None,
                 dynamically_imported_classes: list | None = None, file_title: str | None = None,
                 overwrite_file: bool = False, complevel: int = 9, complib: str = 'zlib',
                 fsync_interval: float = 1.0, **storage_kwargs: object) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidNameError('trajectory name %r is not valid: use letters, digits, "_" '
                                   'and "-" only' % (name,))
        timestr, timestamp = _now_strings()
        super().__init__('', comment)
        d = self.__dict__
        d['_name'] = name + '_' + timestr if add_time else name
        d['_time'], d['_timestamp'] = timestr, timestamp
        d['_traj'] = None
        d['_nodes'] = {}
        d['_by_name'] = {}
        d['_lazy_names'] = set()  # (names pending runs may hold, see _PendingRuns)
        d['_unique'] = {}
        d['_run_fast'] = {}
        d['_link_count'] = 0
        d['_explored'] = {}
        d['_length'] = 1
        d['_runs'] = _RunTable(1)
        d['_idx'] = -1
        d['_is_run'] = False
        d['_new_leaves'] = []
        d['_stored'] = False
        d['_merged_runs'] = []
        d['_presets'] = {}
        d['_version'] = __version__
        d['_python'] = platform.python_version()
        d['_environment_hexsha'] = None
        d['_environment_name'] = None
        d['_dynamic_imports'] = _import_classes(dynamic_imports)
        d['_dynamic_imports'].update(_import_classes(dynamically_imported_classes))
        d['_wildcards'] = {}
        d['_props'] = dict(self._PROPERTY_DEFAULTS)
        d['_storage_service'] = None
        for branch in BRANCHES:
            self._insert(self, _BRANCH_GROUP[branch](branch))
        if wildcard_functions:
            self.f_add_wildcard_functions(wildcard_functions)
        if storage_service is not None or filename is not None:
            # (as pypet: a class is built with the filename and the storage arguments)
            storage_service = _make_service(
                storage_service, filename, name=self._name, file_title=file_title,
                overwrite_file=overwrite_file, complevel=complevel, complib=complib,
                fsync_interval=fsync_interval, **storage_kwargs)
        d['_storage_service'] = storage_service

    # -- properties --------------------------------------------------------------------------
    v_is_root = property(lambda self: True,
                         doc='True: the trajectory is the root.')
    v_time = _read_only('_time', 'Creation time, YYYY_MM_DD_HHhMMmSSs.')
    v_timestamp = _read_only('_timestamp', 'Creation time, seconds since the epoch.')
    v_version = _read_only('_version', 'The minipypet version that made it.')
    v_python = _read_only('_python', 'The Python version that made it.')
    v_stored = _read_only('_stored', 'True once stored or loaded.')
    v_is_run = _read_only('_is_run', 'True inside a run.')
    v_environment_hexsha = _read_only('_environment_hexsha',
                                      'The SHA-1 of the environment that runs it.')
    v_environment_name = _read_only('_environment_name',
                                    'The name of the environment that runs it.')
    v_crun = property(lambda self: _run_name(self._idx) if self._idx >= 0 else None,
                      lambda self, run: self.f_set_crun(run),
                      doc='The current run name, or None; setting it sets the run.')
    v_crun_ = property(lambda self: _run_name(self._idx),
                       doc='The current run name, or run_ALL.')

    @property
    def v_name(self) -> str:
        """The trajectory's name (with the time when add_time=True)."""
        return self._name

    v_standard_parameter = property(
        lambda self: self.__dict__.get('_standard_parameter', Parameter),
        lambda self, cls: self._set_standard('_standard_parameter', cls, BaseParameter),
        doc='The class f_add_parameter (and config, derived) makes from a name and a value.')
    v_standard_result = property(
        lambda self: self.__dict__.get('_standard_result', Result),
        lambda self, cls: self._set_standard('_standard_result', cls, BaseResult),
        doc='The class f_add_result makes from a name and items.')

    def _set_standard(self, key, cls, base):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigurationError('%s must be a subclass of %s, got %r'
                                     % (key[1:], base.__name__, cls))
        self.__dict__[key] = cls

    @property
    def v_idx(self) -> int:
        """The current run index, -1 for none; setting it sets the run."""
        return self._idx

    @v_idx.setter
    def v_idx(self, idx: int) -> None:
        self.f_set_crun(idx)

    def __getattr__(self, name):
        # The common `traj.x` (a unique name) without the generality of f_get and _resolve;
        # what they would return, anything else goes the long way. `_unique` remembers
        # such names outside runs' subtrees (_insert and _remove_subtree forget them).
        d = self.__dict__
        if '_held' in d:  # (see _hold_result)
            self._place_held()
            return getattr(self, name)
        unique = d.get('_unique')
        if unique is None or name[:1] == '_' or name[:2] in ('f_', 'v_') or \
                name in d['_lazy_names']:  # (pending runs may hold it: the long way)
            return NNGroupNode.__getattr__(self, name)
        props = d['_props']
        if props['shortcuts'] and props['max_depth'] is None and not props['auto_load'] and \
                not d['_link_count']:  # (a link may make a name ambiguous)
            node = unique.get(name)
            if node is None and name not in d['_nodes']:
                found = d['_by_name'].get(name)
                if found is not None and len(found) == 1:
                    for node in found.values():
                        full = node._full_name
                        if 'run_' in full:
                            if d['_idx'] >= 0 and not _in_run(full, _run_name(d['_idx'])):
                                node = None
                        else:
                            unique[name] = node
            if node is not None:
                if node.v_is_leaf and props['fast_access'] and node.f_supports_fast_access():
                    return node._fast_value()
                return node
        return NNGroupNode.__getattr__(self, name)

    def _prop(name, doc):  # noqa: N805 - a property factory used in the class body
        def getter(self):
            return self._props[name]

        def setter(self, value):
            self._props[name] = value
            self._drop_fast()
        return property(getter, setter, doc=doc)

    v_fast_access = _prop('fast_access', 'Natural naming returns values of parameters and '
                                         'single-item results instead of the leaves.')
    v_shortcuts = _prop('shortcuts', 'Natural naming may skip groups (traj.x).')
    v_auto_load = _prop('auto_load', 'Load missing data from storage on access.')
    v_max_depth = _prop('max_depth', 'Maximum depth of shortcut searches.')
    v_iter_recursive = _prop('iter_recursive', 'Iterating the trajectory is recursive.')
    v_auto_run_prepend = _prop('auto_run_prepend',
                               'In a run, results go below results.runs.run_XXXXXXXX.')
    @property
    def v_full_copy(self) -> bool:
        """pypet's: set False, copy.copy(traj) and f_copy() drop the explored ranges
        (the parameters keep their current values and stay v_explored); unset or True, a
        copy keeps them (pickles for workers and .cnt files always do)."""
        return bool(self._props['full_copy'])

    @v_full_copy.setter
    def v_full_copy(self, value):
        self._props['full_copy'] = bool(value)
    v_with_links = _prop('with_links', 'Natural naming follows links.')
    v_no_clobber = _prop('no_clobber', 'Adding a leaf that exists returns it unchanged '
                         '(instead of raising).')
    del _prop

    def f_set_properties(self, **kwargs: object) -> None:
        """Set v_ properties by keyword: fast_access, shortcuts, auto_load, max_depth, ..."""
        for key, value in kwargs.items():
            key = key[2:] if key.startswith('v_') else key
            if key not in self._props:
                raise UnknownArgumentError('unknown trajectory property %r; known: %s'
                                           % (key, sorted(self._props)))
            self._props[key] = value
        self._drop_fast()

    def __len__(self):
        return self._length

    def __repr__(self):
        filename = getattr(self._storage_service, 'filename', None)
        explored = ', '.join(k.rpartition('.')[2] for k in self._explored)
        return '<Trajectory %s: %d run%s (%d completed)%s%s>' % (
            self._name, self._length, '' if self._length == 1 else 's',
            sum(self._runs.completed), ', explored: ' + explored if explored else
            ', nothing explored', ', file ' + filename if filename else '')

    __str__ = __repr__  # (print(traj) gives the summary, not a group's list of children)

    def _repr_html_(self):
        """Jupyter's display: the summary, the tree and the runs table (its first 50 rows)."""
        import html
        parts = ['<p><b>%s</b></p>' % html.escape(repr(self)),
                 '<details><summary>tree</summary><pre>%s</pre></details>'
                 % html.escape(self.f_tree())]
        if self._explored and self._length <= 100000:
            try:
                rows = runs_table(self)[:50]
            except PypetError as exc:  # (a file that went away: the tree is still worth it)
                rows, parts[1:1] = [], ['<p>runs table: %s</p>' % html.escape(str(exc))]
            fields = list(dict.fromkeys(k for row in rows for k in row))
            parts.append('<table><tr>%s</tr>%s</table>' % (
                ''.join('<th>%s</th>' % html.escape(f) for f in fields),
                ''.join('<tr>%s</tr>' % ''.join('<td>%s</td>' % html.escape(
                    _cell(row.get(f, ''))) for f in fields) for row in rows)))
            if self._length > len(rows):
                parts.append('<p>(%d of %d runs shown; runs_table(traj) has them all)</p>'
                             % (len(rows), self._length))
        return '\n'.join(parts)

    def __copy__(self):
        """copy.copy(traj): an independent tree that shares the storage service (pypet)."""
        new = pickle.loads(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))
        new.__dict__['_storage_service'] = self._storage_service
        if self._props['full_copy'] is False:  # (set by the user: pypet's copy of one run)
            for param in new._explored.values():
                if param._explored_range is not None:
                    param.__dict__['_explored_range'] = None
                    param.__dict__['_range_dropped'] = True
        return new

    def f_copy(self, copy_leaves: bool = True, with_links: bool = True) -> Trajectory:
        """pypet's f_copy: copy.copy(traj); with_links=False drops the links of the copy.
        A leaf belongs to one tree here, so leaves are always copied (copy_leaves=True)."""
        if copy_leaves is not True:
            raise ConfigurationError(
                'f_copy(copy_leaves=%r): a minipypet leaf belongs to one trajectory, so the '
                'copy cannot share leaves with this one; use copy_leaves=True' % (copy_leaves,))
        new = self.__copy__()
        if not with_links:
            for node in [new] + [n for n in new._nodes.values() if not n.v_is_leaf]:
                node._links.clear()
            new.__dict__['_link_count'] = 0
        return new

    def __getstate__(self):
        self._place_held()
        state = dict(self.__dict__)
        state.pop('_merged', None)  # (a merge waiting for f_store: the original writes it)
        if not isinstance(state['_storage_service'], (LockWrapper, QueueStorageServiceSender)):
            state['_storage_service'] = None  # services hold files and locks; workers get
            # their own (those a MultiprocContext installs are made to travel)
        for short in state['_run_fast']:  # (see _fast_attributes)
            del state[short]
        state['_run_fast'] = {}
        return state

    def __setstate__(self, state):
        state.setdefault('_run_fast', {})
        state.setdefault('_unique', {})
        state.setdefault('_lazy_names', set())
        self.__dict__.update(state)

    # -- tree bookkeeping --------------------------------------------------------------------
    def _reset_tree(self):
        self._place_held(keep=False)
        d = self.__dict__
        d['_nodes'], d['_by_name'], d['_children'], d['_links'] = {}, {}, {}, {}
        d['_unique'], d['_lazy_names'] = {}, set()
        for branch in BRANCHES:
            self._insert(self, _BRANCH_GROUP[branch](branch))

    def _lazy_changed(self):
        """Note the names the pending runs may hold: a lookup of one that skips groups
        makes them (_lazy_lookup); names remembered as unique may not be any more."""
        names = set()
        for kids in self._pending_runs():
            for template, _, _ in kids.layers:
                names.update(template.split('.')[3:])
        for name in names:
            self._unique.pop(name, None)
            self._drop_fast(name)
        self.__dict__['_lazy_names'] = names

    def _load_link(self, group, name, target):
        """Put a stored link below `group` (counted: lookups skip link searches while
        the trajectory has none)."""
        if name not in group._links:
            self.__dict__['_link_count'] += 1
        group._links[name] = target

    def _insert(self, parent, node):
        name = node._name
        full = parent._full_name + '.' + name if parent._full_name else name
        d = node.__dict__
        d['_full_name'], d['_parent'], d['_traj'] = full, parent, self
        parent._children[name] = node
        self._nodes[full] = node
        self._unique.pop(name, None)
        if name in self._run_fast:
            self._drop_fast(name)
        index = self._by_name.get(name)
        if index is None:
            self._by_name[name] = {full: node}
        else:
            index[full] = node
        return node

    # A run's f_add_result('z', 1.5) is held apart from the tree (what a scalar run
    # cost the tree: its group and leaf put into the indices, then taken out again).
    # While results are held, the tree's index and the child lists of the trajectory,
    # of results and of results.runs are out of their __dict__s: whatever then reads
    # the tree (natural naming, f_get, iteration, storing, pickling, the leaf's
    # _parent) misses them in __getattr__, which places the held results first
    # (_place_held). A run whose job reads none of it hands them to its record and
    # drops them (_finish_run).
    _HIDDEN = ('_nodes', '_children')

    def _hold_result(self, name, value):
        """Result(name, value) of a scalar, held apart (see above); None where the
        tree must take it now (the name is held already, or the run has its group)."""
        d = self.__dict__
        held = d.get('_held')
        if name not in _ITEM_NAMES:  # (Result checks it then: the long way)
            return None
        if held is None:
            if name in d['_run_fast'] or not d['_props']['auto_run_prepend']:
                return None
            results = d['_children']['results']
            kids = results.__dict__['_children']
            runs = kids.get('runs')
            run = FORMATTED_RUN_NAME % d['_idx']
            if runs is None and 'runs' in results._links or runs is not None and (
                    type(runs._children) is not dict or run in runs._children or
                    run in runs._links):
                return None
            d['_hidden'] = (d.pop('_nodes'), d.pop('_children'), results,
                            results.__dict__.pop('_children'), runs,
                            None if runs is None else runs.__dict__.pop('_children'),
                            'results.runs.%s.' % run, d['_idx'])
            held = d['_held'] = {}
        elif name in held:
            return None
        leaf = Result.__new__(Result)  # (as Result(name, value) makes it, no __init__)
        ld = leaf.__dict__
        ld.update(_HELD_RESULT)  # (no _parent: asked for, it places the held results)
        ld['_full_name'], ld['_name'] = d['_hidden'][6] + name, name
        ld['_traj'], ld['_data'] = self, {name: value}
        held[name] = leaf
        return leaf

    def _place_held(self, keep=True):
        """Put the held results into the tree (keep=False: drop them, the run is over)
        and the tree's hidden parts back."""
        d = self.__dict__
        held = d.pop('_held', None)
        if held is None:
            return
        d['_nodes'], d['_children'], results, kids, runs, run_kids, _, idx = \
            d.pop('_hidden')
        for group, children in ((results, kids), (runs, run_kids)):
            if group is not None:  # (in their order: a worker compares its groups'
                gd = group.__dict__  # dicts with their values in order, see _Pristine)
                gd['_children'] = children
                gd['_links'] = gd.pop('_links')
        for leaf in held.values():
            leaf.__dict__['_parent'] = None
            if keep:  # (into the run that added it: the job may have set another)
                self._add_run_leaf(results, leaf._name, leaf, idx)

    def _remove_subtree(self, node, predicate=None):
        """Remove `node` and what is below it (with a predicate: the nodes it accepts, and
        groups left empty by that). An explored parameter stops it before anything goes."""
        if predicate is not None and not predicate(node):
            return
        if _RunLeaves.live:  # (views of runs not made yet keep what they show)
            _RunLeaves.freeze(self)
        todo = [node]
        for n in todo:  # the subtree, parents before children (the list grows as it goes)
            if isinstance(n, NNLeafNode):
                if n._full_name in self._explored and (self._stored or self._is_run):
                    raise PypetError('%s is explored and stored (or running), so it cannot be '
                                     'removed; traj.f_shrink(force=True) drops the exploration'
                                     % n._full_name)
            elif predicate is None:
                if type(n._children) is _PendingRuns:  # (removed unmade)
                    n._children.forget()
                todo.extend(n._children.values())
        if predicate is not None and not node.v_is_leaf:
            for child in list(node._children.values()):
                self._remove_subtree(child, predicate)
            if node._children:
                return
        del node._parent._children[node._name]
        branch = node._parent is self and node._name in BRANCHES
        nodes, unique, by_name, fast = self._nodes, self._unique, self._by_name, self._run_fast
        for n in todo:
            name, full = n._name, n._full_name
            # A removed node has no parent: without this link back, a removed group and
            # its children (every run's results, at clean-up) are freed at once instead
            # of piling up as cycles for the garbage collector (~3 ms a 1,000-run sweep,
            # ~10 ms when a full collection falls in it).
            n.__dict__['_parent'] = None
            nodes.pop(full, None)
            if full in self._explored:  # (not stored: as pypet, the runs go with the last one)
                del self._explored[full]
                if not self._explored:
                    self._unexplore()
            unique.pop(name, None)
            if name in fast:
                self._drop_fast(name)
            index = by_name.get(name)
            if index is not None:
                index.pop(full, None)
                if not index:
                    del by_name[name]
        if branch:  # the four branches always exist
            self._insert(self, _BRANCH_GROUP[node._name](node._name))

    def _translate(self, comp):
        if comp in ABBREVIATIONS:
            return ABBREVIATIONS[comp]
        if comp in ('$', 'crun'):
            return self.v_crun_
        if comp in ('$set', 'crunset'):
            return _set_name(self._idx)
        if comp.startswith(('r_', 'run_')):
            tail = comp.partition('_')[2]
            if tail in ('A', 'ALL'):
                return RUN_NAME_DUMMY
            if tail.isdigit() and (comp.startswith('r_') or len(tail) != FORMAT_ZEROS):
                return _run_name(int(tail))
        if comp.startswith(('rts_', 'runtoset_')):
            tail = comp.partition('_')[2]
            if tail.isdigit():
                return _set_name(int(tail))
        for keys, func in self._wildcards.items():
            if comp in keys:
                return func(self._idx)
        if self._wildcards and '.' not in comp:
            return self._custom_run_names().get(comp, comp)
        return comp

    def _custom_run_names(self):
        """{name: index name} of pypet's own run and set naming functions (see
        f_add_wildcard_functions), made again when the number of runs changes."""
        d = self.__dict__
        cached = d.get('_custom_names')
        if cached is not None and cached[0] == self._length:
            return cached[1]
        names = {}
        for keys, index_name in ((_RUN_WILDCARDS, _run_name), (_SET_WILDCARDS, _set_name)):
            func = self._wildcards.get(keys)
            if func is not None:
                for idx in range(-1, self._length):
                    names[func(idx)] = index_name(idx)
        d['_custom_names'] = (self._length, names)
        return names

    def _resolve(self, start, name, shortcuts=None, max_depth=None, with_links=True):
        if not isinstance(name, str):
            raise TypeError('node names are str, got %r' % (name,))
        if start is self:
            node = self._nodes.get(name)
            if node is not None and (max_depth is None or name.count('.') < max_depth):
                return node
            found = self._by_name.get(name)
            if found is not None and len(found) == 1 and max_depth is None and not (
                    with_links and self._link_count) and \
                    name not in self._lazy_names and (
                    shortcuts or shortcuts is None and self._props['shortcuts']):
                node = next(iter(found.values()))  # the common `traj.x`: a unique name
                if self._idx < 0 or 'run_' not in node._full_name or \
                        _in_run(node._full_name, _run_name(self._idx)):
                    return node
        if shortcuts is None:
            shortcuts = self._props['shortcuts']
        node, depth = start, 0  # (depth below start along the path: max_depth limits it)
        parts = name.split('.')
        for i, comp in enumerate(parts):
            if node.v_is_leaf:
                return None
            child = node._children.get(comp)
            if child is None and with_links and node._links:
                child = node._links.get(comp)
            depth += 1
            if child is None:
                tr = self._translate(comp)
                child = node._children.get(tr)
                if child is None and with_links and node._links:  # (a run's link: 'crun')
                    child = node._links.get(tr)
                if child is None and tr != comp and comp in ('$', 'crun'):
                    child = node._children.get(RUN_NAME_DUMMY)
                if child is None and (_RUN_RE.fullmatch(tr) or tr == RUN_NAME_DUMMY or
                                      _SET_RE.fullmatch(tr)) and node._full_name in (
                        'results', 'derived_parameters') and 'runs' in node._children:
                    child = node._children['runs']._children.get(tr)  # seed: results.run_X
                if child is None and _SET_RE.fullmatch(tr):
                    child = self._run_set(node)
                    if child is None and node._full_name in _RUN_BRANCHES and \
                            self._stored and self._props['auto_load']:
                        # (runs stored by workers, not in memory: the runs' group, for
                        # auto-loading to go on below it, as pypet's set group)
                        child = self._insert(node, _BRANCH_GROUP[node._full_name]('runs'))
                if child is None and shortcuts:
                    self._lazy_lookup(tr, node)  # (pending runs: see _PendingRuns)
                    try:
                        child = self._search(node, tr, max_depth - depth + 1
                                             if max_depth is not None
                                             else self._props['max_depth'], with_links)
                    except NotUniqueNodeError:
                        if i + 1 == len(parts) or max_depth is not None:
                            raise
                        # (pypet's: 'run_00000001.rrr' is the one whose rest resolves)
                        return self._by_rest(node, tr, '.'.join(parts[i + 1:]),
                                             with_links)
                    if child is not None and not self._link_count and (
                            node is self or child._full_name.startswith(node._full_name + '.')):
                        # (the groups skipped; through links the search kept to max_depth)
                        depth += child.v_depth - node.v_depth - 1
                if child is None:
                    return None
            if max_depth is not None and depth > max_depth:
                return None
            node = child
        return node

    def _by_rest(self, start, comp, rest, with_links):
        """The node at `rest` below the one group named `comp` (below `start`) that has
        it; NotUniqueNodeError if none or several do."""
        prefix = start._full_name + '.' if start._full_name else ''
        found = {}  # (by identity: nodes may compare equal by their data)
        for full, group in (self._by_name.get(comp) or {}).items():
            if full.startswith(prefix) and not group.v_is_leaf:
                try:
                    node = self._resolve(group, rest, None, None, with_links)
                except NotUniqueNodeError:
                    node = None
                if node is not None:
                    found[id(node)] = node
        if len(found) != 1:
            raise NotUniqueNodeError(
                '%r is not unique below %s, and %s %s below it; use a longer name' % (
                    comp, start._full_name or 'the trajectory', rest,
                    'is in several' if found else 'is in none'))
        return found.popitem()[1]

    @staticmethod
    def _run_set(node):
        """The group pypet's run set `run_set_XXXXX` stands for: the runs keep no sets in
        this layout, so a set is its `runs` group (pypet's results.runs.run_set_00000.run_...
        and traj.res.crunset.crun read results.runs.run_...)."""
        if node._name == 'runs':
            return node
        if node._full_name in _RUN_BRANCHES:
            return node._children.get('runs')
        return None

    def _search(self, start, name, max_depth=None, with_links=False):
        candidates = self._by_name.get(name)
        if with_links and self._link_count:  # links are found by name too (pypet), at the
            linked = {g._full_name + '.' + name: g._links[name]  # depth of the link
                      for g in list(self._nodes.values()) if not g.v_is_leaf and
                      name in g._links}
            if linked:
                candidates = dict(candidates or {}, **linked)
        if not candidates:
            return self._search_links(start, name, max_depth) if with_links and \
                self._link_count else None
        prefix = start._full_name + '.' if start._full_name else ''
        base = start._full_name.count('.') + 1 if start._full_name else 0
        crun = _run_name(self._idx) if self._idx >= 0 else None
        best, best_depth, other = None, 1 << 30, None
        for full, node in candidates.items():
            if prefix and not full.startswith(prefix):
                continue
            if crun is not None and 'run_' in full and not _in_run(full, crun):
                continue
            depth = full.count('.')
            if max_depth is not None and depth - base >= max_depth:
                continue
            if depth < best_depth:
                best, best_depth, other = node, depth, None
            elif depth == best_depth:
                other = node
        if other is not None:
            raise NotUniqueNodeError(
                '%r is not unique below %s: %s and %s (and maybe more) match at the same '
                'depth; use a longer name' % (name, start._full_name or 'the trajectory',
                                              best._full_name, other._full_name))
        if best is None and with_links and self._link_count:
            return self._search_links(start, name, max_depth)
        return best

    def _search_links(self, start, name, max_depth=None):
        """`name` below `start` through link targets too (pypet searches the tree with its
        links, breadth first: traj.test2.test3 finds test3 below test2's link to test).
        Only when the name index found nothing below `start`: walking is slower."""
        crun = _run_name(self._idx) if self._idx >= 0 else None
        level, seen, depth = [start], {id(start)}, 0
        while level and (max_depth is None or depth < max_depth):
            depth += 1
            found, below = [], []
            for group in level:
                for key, child in itertools.chain(group._children.items(),
                                                  group._links.items()):
                    if crun is not None and 'run_' in child._full_name and \
                            not _in_run(child._full_name, crun):
                        continue
                    if key == name and all(child is not f for f in found):
                        found.append(child)
                    if not child.v_is_leaf and id(child) not in seen:
                        seen.add(id(child))
                        below.append(child)
            if len(found) > 1:
                raise NotUniqueNodeError(
                    '%r is not unique below %s: %s and %s (and maybe more) match at the same '
                    'depth, through links; use a longer name' % (
                        name, start._full_name or 'the trajectory', found[0]._full_name,
                        found[1]._full_name))
            if found:
                return found[0]
            level = below
        return None

    def _hint(self, name):
        cards = [p for p in name.split('.') if p in ('$', 'crun', '$set', 'crunset')]
        if cards:  # say what the wildcards stood for (pypet's message names the run)
            return ' (%s)' % ', '.join('%s is %s' % (c, self._translate(c)) for c in cards)
        return _did_you_mean(name.rpartition('.')[2], self._by_name)

    def _add_run_leaf(self, start, name, leaf, idx=None):
        """Put `leaf` as `name` into the group of run `idx` (None: the current one)
        below `start` (results or derived_parameters), making the groups on the way;
        False if it is taken."""
        run = FORMATTED_RUN_NAME % (self._idx if idx is None else idx)  # (idx >= 0)
        group = self._nodes.get(start._full_name + '.runs.' + run)
        if group is None:
            cls = _BRANCH_GROUP[start._full_name]
            runs = start._children.get('runs') or self._insert(start, cls('runs'))
            group = runs._children.get(run) or self._insert(runs, _new_group(run, cls))
        if name in group._children or name in group._links:
            return False
        if leaf._full_name != name:
            leaf._rename(name)
        self._insert(group, leaf)
        self._new_leaves.append(leaf)
        return True

    def _add_path(self, start, rel_name, leaf, comment, in_run=False):
        """Add `leaf` (None: a group) at `rel_name` below `start`, making the groups on
        the way; in a run, a leaf (or, `in_run`, a group) below results or
        derived_parameters goes into the run."""
        if leaf is not None and self._is_run and start._full_name in _RUN_BRANCHES and \
                (rel_name in _PLAIN_NAMES or _plain_name(rel_name)) and \
                self._props['auto_run_prepend']:
            # The common f_add_result('z', ...) in a run: results.runs.run_XXXXXXXX.z
            if self._add_run_leaf(start, rel_name, leaf):
                return leaf
        if not rel_name:
            raise InvalidNameError('a node needs a name (got an empty one)')
        parts = (start._full_name + '.' + rel_name if start._full_name else rel_name).split('.')
        parts = [self._translate(p) if p in ('$', 'crun', '$set', 'crunset') else p
                 for p in parts]
        for part in parts[1:]:  # all or nothing: no group is made for a name that fails
            if part not in start._children:
                _check_name(part, rel_name)
        if parts[0] in ('results', 'derived_parameters') and len(parts) > 2 and (
                _RUN_RE.fullmatch(parts[1]) or parts[1] == RUN_NAME_DUMMY or
                _SET_RE.fullmatch(parts[1])):
            parts.insert(1, 'runs')  # the seed's results.run_XXXXXXXX.z is results.runs...
        if self._is_run and (leaf is not None or in_run) and len(parts) > 1 and \
                parts[0] in _RUN_BRANCHES and self._props['auto_run_prepend'] and \
                not any(_RUN_RE.fullmatch(p) or p == RUN_NAME_DUMMY for p in parts[1:]):
            if parts[1] == 'runs' and start._full_name == parts[0] + '.runs':
                parts.insert(2, _run_name(self._idx))  # traj.res.runs.f_add_result('z')
            elif parts[1] != 'runs' or start._full_name in _RUN_BRANCHES:
                parts[1:1] = ['runs', _run_name(self._idx)]
        group, cls = self, _BRANCH_GROUP.get(parts[0], NNGroupNode)
        last = len(parts) - 1
        for i, part in enumerate(parts):
            child = group._children.get(part)
            if i == last:
                break
            if child is None and part in group._links:  # (pypet: nothing is added below a
                raise InvalidNameError(  # link, the target has its own place for that)
                    'cannot add %r: %s.%s is a link; add below its target %s instead' % (
                        rel_name, group._full_name, part, group._links[part]._full_name))
            if child is None:
                _check_name(part, rel_name)
                child = self._insert(group, cls(part))
            elif child.v_is_leaf:
                raise InvalidNameError('cannot add %r below leaf %s' % (rel_name,
                                                                        child._full_name))
            group = child
        name = parts[-1]
        _check_name(name, rel_name)
        existing = group._children.get(name)
        if leaf is None:
            if existing is not None and not existing.v_is_leaf:
                if comment:
                    existing._comment = _check_comment(comment, existing._full_name)
                return existing
            if existing is not None:
                raise InvalidNameError('%s is a leaf already' % existing._full_name)
            return self._insert(group, cls(name, comment))
        if existing is not None and self._props.get('no_clobber'):
            return existing
        if existing is not None:
            raise InvalidNameError(
                '%s exists already; change its value with f_set, or remove it first with '
                'f_remove_child(%r)' % (existing._full_name, name))
        if name in group._links:
            raise InvalidNameError('%s.%s is a link already' % (group._full_name, name))
        if parts[0] in _RUN_BRANCHES and parts[1:2] == ['runs'] and (
                len(parts) == 2 or len(parts) == 3 and (
                    _RUN_RE.fullmatch(name) or name == RUN_NAME_DUMMY)):
            raise InvalidNameError('%s is where the runs\' groups go, so a leaf cannot have '
                                   'that name; choose another' % '.'.join(parts))
        leaf._rename(name)
        self._insert(group, leaf)
        if self._is_run:
            self._new_leaves.append(leaf)
        return leaf

    # -- collections -------------------------------------------------------------------------
    @staticmethod
    def _check_copy(fast_access, copy):
        if fast_access and not copy:  # (pypet refuses it too)
            raise ConfigurationError('copy=False hands out the leaves themselves, fast_access '
                                     'their values: pass copy=True with fast_access=True')

    def _branch_dict(self, branch, fast_access, copy):
        self._check_copy(fast_access, copy)
        group = self._children[branch]
        return group.f_to_dict(fast_access=fast_access)

    def f_get_config(self, fast_access: bool = False, copy: bool = True) -> dict:
        """{full name: leaf (or value with fast_access)} of the config branch."""
        return self._branch_dict('config', fast_access, copy)

    def f_get_parameters(self, fast_access: bool = False, copy: bool = True) -> dict:
        """{full name: leaf (or value with fast_access)} of the parameters."""
        return self._branch_dict('parameters', fast_access, copy)

    def f_get_derived_parameters(self, fast_access: bool = False, copy: bool = True) -> dict:
        """{full name: leaf (or value)} of the derived parameters."""
        return self._branch_dict('derived_parameters', fast_access, copy)

    def f_get_results(self, fast_access: bool = False, copy: bool = True) -> dict:
        """{full name: leaf (or value)} of the results."""
        return self._branch_dict('results', fast_access, copy)

    def f_get_explored_parameters(self, fast_access: bool = False, copy: bool = True) -> dict:
        """{full name: parameter (or value)} of the explored parameters."""
        self._check_copy(fast_access, copy)
        return {k: (p.f_get() if fast_access else p) for k, p in self._explored.items()}


class _Holder(Trajectory):
    """The private trajectory of a group made on its own (see NNGroupNode._root): its
    nodes move to the trajectory the group is added to."""

    def _detached_branch(self, node):
        """The branch a pypet group class at the top of `node`'s tree says (or None)."""
        top = self._children.get(node._full_name.partition('.')[0])
        return getattr(type(top), '_BRANCH', None)


# ============================================================================================
# Exploring, merging and loading trajectories
# ============================================================================================
def _ann(node):
    return dict(node._annotations._dict) if node._annotations else None


_PLAIN_NAMES = set()  # names _plain_name accepted (a sweep adds the same few every run)


def _plain_name(name):
    """A valid single-part name that needs no translation (no wildcard, no run name)."""
    if '.' in name or not _NAME_RE.fullmatch(name) or \
            name.startswith(('f_', 'v_', 'run_', 'r_') + _PYTABLES_RESERVED):
        return False
    if len(_PLAIN_NAMES) < 4096:
        _PLAIN_NAMES.add(name)
    return True


def _in_run(full_name, crun):
    for part in full_name.split('.'):
        if part.startswith('run_') and part != crun and _RUN_RE.fullmatch(part):
            return False
    return True


_BUILTIN_TYPES = frozenset(_BUILTIN_LEAVES.values())


def cartesian_product(parameter_dict: dict, combined_parameters: tuple = ()) -> dict:
    """All combinations of the values; the last key varies fastest. A tuple of keys in
    `combined_parameters` (or as a key of the dict) is zipped instead of combined."""
    if combined_parameters:
        groups = [tuple(c) if isinstance(c, (tuple, list)) else (c,)
                  for c in combined_parameters]
    else:
        groups = [k if isinstance(k, tuple) else (k,) for k in parameter_dict]
    flat = {}
    for key, values in parameter_dict.items():
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, '__iter__'):
            raise ConfigurationError('cartesian_product: %r needs a list of the values to '
                                     'explore, got %s %s' % (key, _type_name(values),
                                                             _short_repr(values)))
        values = list(values)
        if isinstance(key, tuple):
            for v in values:
                if isinstance(v, (str, bytes)) or not hasattr(v, '__len__') or \
                        len(v) != len(key):
                    raise ConfigurationError(
                        'cartesian_product: the values of %r (zipped) must each be a tuple of '
                        '%d, one value per name; got %s' % (key, len(key), _short_repr(v)))
            for i, sub in enumerate(key):
                flat[sub] = [v[i] for v in values]
        else:
            flat[key] = values
    for group in groups:
        lengths = {k: len(flat[k]) for k in group}
        if len(set(lengths.values())) > 1:
            raise ConfigurationError('combined parameters must have ranges of equal length, '
                                     'got %s' % lengths)
    listed = {k for g in groups for k in g}
    groups += [(k,) for k in flat if k not in listed]
    result = {k: [] for g in groups for k in g}
    for combo in itertools.product(*[range(len(flat[g[0]])) for g in groups]):
        for group, i in zip(groups, combo):
            for key in group:
                result[key].append(flat[key][i])
    return result


def _point_key(values):
    """An exact key of a parameter point: repr() abbreviates arrays of over 1,000 items."""
    try:
        return _to_json(list(values))
    except PypetError:  # (a PickleParameter's object)
        try:
            return pickle.dumps(list(values), protocol=4)
        except Exception:
            return repr(values)


def _merge_states(mine, other, trial_parameter, remove_duplicates, ignore, merge_config):
    """Fold `other` (a state) into `mine`: new run indices, explored ranges, run data."""
    def ignored(key):  # (a name of ignore_data, or below it: whole parts of the name)
        return any(key == i or key.startswith(i + '.') for i in ignore)

    def params(state):  # (pypet: ignore_data leaves them out of the comparison too)
        return {k for k, r in state['nodes'].items() if k.startswith('parameters.') and
                r['kind'] == 'leaf' and not ignored(k)}
    if params(mine) != params(other):
        raise _MergeMismatchError(
            'cannot merge: the parameters differ (only here: %s; only in the other: %s)'
            % (sorted(params(mine) - params(other)),
               sorted(params(other) - params(mine))))

    def kind(state, key):  # (a numpy scalar as the Python value it holds)
        value = (state['nodes'][key].get('data') or {}).get('data')
        return type(value.item() if getattr(value, 'ndim', None) == 0 else value)
    for key in sorted(params(mine)):  # (pypet: a parameter of another type, too)
        kinds = kind(mine, key), kind(other, key)
        if kinds[0] is not kinds[1] and type(None) not in kinds:
            raise _MergeMismatchError('cannot merge: %s is a %s here and a %s in the '
                                      'other' % (key, kinds[0].__name__,
                                                 kinds[1].__name__))
    explored = list(mine['explored']) + [k for k in other['explored']
                                         if k not in mine['explored']]

    def default(state, key):
        return _point_key([(state['nodes'][key].get('data') or {}).get('data')])
    # As pypet: a parameter set to different values in the two becomes explored, so that
    # every merged run keeps the value it ran with
    explored += [k for k in sorted(params(mine)) if k not in explored and
                 default(mine, k) != default(other, k)]
    if trial_parameter is not None:
        trial = trial_parameter if trial_parameter.startswith('parameters.') else \
            'parameters.' + trial_parameter
        if trial not in mine['nodes']:  # (a short name, as natural naming finds it: pypet)
            found = [k for k in params(mine) if k.endswith('.' + trial_parameter)]
            if len(found) != 1:
                raise ConfigurationError('trial_parameter %r is %s' % (
                    trial_parameter, 'ambiguous: %s' % sorted(found) if found else
                    'not a parameter'))
            trial = found[0]
        if trial not in explored:
            explored.append(trial)

    def ranges(state):
        n = state['length']
        out = {}
        for k in explored:
            data = state['nodes'][k]['data'] or {}
            rng = data.get('explored_data')
            out[k] = list(rng) if rng is not None else [data.get('data')] * n
        return out
    mr, orr = ranges(mine), ranges(other)
    n_mine, n_other = mine['length'], other['length']
    if trial_parameter is not None:
        shift = max(mr[trial]) + 1 if mr[trial] else 0
        orr[trial] = [v + shift for v in orr[trial]]
    seen = set()
    if remove_duplicates:
        for i in range(n_mine):
            seen.add(_point_key(mr[k][i] for k in explored))
    mapping = {}
    for j in range(n_other):
        point = _point_key(orr[k][j] for k in explored)
        if remove_duplicates and point in seen:
            continue
        seen.add(point)
        mapping[j] = n_mine + len(mapping)
    if n_other and not mapping:  # (pypet: a ValueError, before anything is written)
        raise ConfigurationError('nothing to merge: every run of %s is a duplicate of one '
                                 'here (remove_duplicates=True)' % other.get('name', 'the other'))
    for k in explored:
        mr[k].extend(orr[k][j] for j in mapping)
        rec = mine['nodes'][k]
        rec['data'] = dict(rec['data'] or {}, explored_data=mr[k])
        if rec['data'].get('data') is None and mr[k]:
            rec['data']['data'] = mr[k][0]
    mine['explored'] = explored
    for j, new in mapping.items():
        _state_set_run(mine, new, tuple(other['runs'][f][j] for f in _RunTable.FIELDS))
    mine['length'] = n_mine + len(mapping)
    for template, rows in other['columns'].items():
        if ignored(template):
            continue
        target = mine['columns'].setdefault(template, {})
        # the other file may have purged duplicate comments: give them back, since
        # merged runs keep their comments (the seed)
        first = rows[min(rows)][1] if rows else ''
        # ... unless ours says the same first: a duplicate, purged as in one sweep's file
        own = target[min(target)][1] if target else None
        purged = own is not None and not any(r[1] for r in target.values() if r[1] != own)
        for j, row in rows.items():
            if j in mapping:
                comment = row[1] or first
                if purged and comment == own:
                    comment = ''
                target[mapping[j]] = row if comment == row[1] else (
                    row[0], comment, row[2], row[3])
    if mapping:
        mine.setdefault('merged_runs', []).append([n_mine, mine['length']])

    def renumber(name):  # the other's name of a run's node -> ours (None: not merged)
        split = _split_run(name)
        if split is None:
            return name
        return _join_run(split[0], mapping[split[1]]) if split[1] in mapping else None
    for key, rec in other['nodes'].items():
        if ignored(key):
            continue
        if mapping and rec['kind'] == 'leaf' and key.startswith('derived_parameters.') \
                and RUN_NAME_DUMMY in key.split('.'):
            _merge_run_all(mine, key, rec, sorted(mapping.values()))
            continue
        key = renumber(key)  # (a run's links and nodes named after it, e.g. results.$)
        if rec['kind'] == 'link':
            rec = dict(rec, target=renumber(rec['target']))
        if key is None or rec.get('target', '') is None or key in mine['nodes']:
            continue
        if key.startswith('config.') and not merge_config:
            continue
        if key.startswith(('results.', 'derived_parameters.', 'config.')):
            mine['nodes'][key] = rec


def _merge_run_all(mine, key, rec, new_runs):
    """The other's derived parameter of run_ALL, where ours differs or is missing: as
    pypet, it goes into the first merged run and the other merged runs link to it."""
    own = mine['nodes'].get(key)
    try:
        if own is not None and own.get('data') == rec.get('data'):
            return
    except (ValueError, TypeError):  # (numpy arrays compare elementwise: not the same)
        pass
    parts = key.split('.')
    where = parts.index(RUN_NAME_DUMMY)

    def at(idx):
        parts[where] = _run_name(idx)
        return '.'.join(parts)
    first = at(new_runs[0])
    split = _leaf_split(_split_run(first))
    if split is None:  # (a leaf named after its run: a node of its own)
        mine['nodes'][first] = rec
    else:
        mine['columns'].setdefault(split[0], {})[new_runs[0]] = (
            rec['class'], rec['comment'], rec['ann'], rec['data'])
    for idx in new_runs[1:]:
        mine['nodes'].setdefault(at(idx), {'kind': 'link', 'target': first})


def merge_all_in_folder(folder: str | os.PathLike, ext: str = '.hdf5',
                        dynamic_imports: list | None = None,
                        storage_service: StorageService | type | str | None = None,
                        force: bool = False, ignore_data: bool = (), move_data: bool = False,
                        delete_other_files: bool = False, keep_info: bool = True,
                        keep_other_trajectory_info: bool = True, merge_config: bool = True,
                        backup: bool = True, remove_duplicates: bool = False,
                        trial_parameter: str | None = None) -> Trajectory:
    """Merge the newest trajectory of every `ext` file in `folder` into the first one (by
    file name): the way to collect sweeps run as separate batch jobs on a cluster."""
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(ext) and
                   not f.startswith('backup_') and '_backup_' not in f)
    if not files:
        raise DataNotInStorageError('no %s files in %s' % (ext, folder))
    first = load_trajectory(index=-1, filename=files[0], dynamic_imports=dynamic_imports,
                            force=force)
    for path in files[1:]:
        other = load_trajectory(index=-1, filename=path, dynamic_imports=dynamic_imports,
                                force=force)
        first.f_merge(other, ignore_data=ignore_data, backup=backup, move_data=move_data,
                      merge_config=merge_config, remove_duplicates=remove_duplicates,
                      trial_parameter=trial_parameter)
        if delete_other_files:
            for p in (path, path + '.journal'):
                if os.path.exists(p):
                    os.remove(p)
    return first


def load_trajectory(name: str | None = None, index: int | None = None, as_new: bool = False,
                    load_parameters: int = LOAD_DATA, load_derived_parameters: int = LOAD_SKELETON,
                    load_results: int = LOAD_SKELETON, load_other_data: int = LOAD_SKELETON,
                    load_data: int | None = None, load_all: int | None = None, force: bool = False,
                    dynamic_imports: list | None = None,
                    storage_service: StorageService | type | str | None = None,
                    filename: str | os.PathLike | None = None, allow_pickle: bool | None = None,
                    new_name: str = 'my_trajectory', add_time: bool = True,
                    wildcard_functions: dict | None = None, with_run_information: bool = True,
                    recursive: bool = True, max_depth: int | None = None,
                    **kwargs: object) -> Trajectory:
    """Load a trajectory from a file by name or index and return it. As in pypet, with
    as_new=True it is named new_name (+ the time with add_time), so that running it
    again does not store over the loaded one."""
    unknown = set(kwargs) - _STORAGE_ARGUMENTS
    if unknown:
        raise ConfigurationError('load_trajectory got unknown arguments %s' % sorted(unknown))
    if filename is None and storage_service is None:
        raise ConfigurationError('load_trajectory needs filename=... (or storage_service=...)')
    storage_service = _make_service(storage_service, filename, name=name, mode='load')
    traj = Trajectory(new_name if as_new else name or 'my_trajectory',
                      add_time=bool(as_new and add_time), dynamic_imports=dynamic_imports,
                      wildcard_functions=wildcard_functions, storage_service=storage_service)
    traj.f_load(name=name, index=-1 if name is None and index is None else index,
                as_new=as_new, load_parameters=load_parameters,
                load_derived_parameters=load_derived_parameters, load_results=load_results,
                load_other_data=load_other_data, load_data=load_data, load_all=load_all,
                force=force, allow_pickle=allow_pickle, recursive=recursive,
                max_depth=max_depth, with_run_information=with_run_information)
    return traj


# pypet passes load_trajectory's other arguments to the storage service; for loading
# these change nothing here
_STORAGE_ARGUMENTS = frozenset((
    'file_title', 'complevel', 'complib', 'shuffle', 'fletcher32', 'overwrite_file',
    'purge_duplicate_comments', 'summary_tables', 'small_overview_tables',
    'large_overview_tables', 'results_per_run', 'derived_parameters_per_run', 'fsync_interval',
    'encoding', 'display_time', 'lazy_debug', 'trajectory_name'))


# ============================================================================================
# Storage services - the protocol and the lazy service
# ============================================================================================
STORAGE_SERVICES = {}  # a backend's name: its class (StorageService.__init_subclass__)


class StorageService:
    """The storage protocol: `store(msg, item, **kw)` and `load(msg, item, **kw)`.

    Messages: TRAJECTORY (the whole trajectory; kw only_init, store_data), SINGLE_RUN (a
    run record: plain data, see Trajectory._run_record), LIST (a list of (LEAF|GROUP,
    node)), DELETE (a list of full names), FLUSH, CLOSE_FILE. `load(TRAJECTORY, traj,
    name=, index=, modes=)` returns the trajectory's plain-data state; `load(LIST, traj,
    names=)` returns {full name: (class tag, comment, annotations, data)} (groups and
    links may come too, see _items_from_state). A service used by several processes at
    once without wrapping sets `multiproc_safe = True`; one that keeps run data in
    memory (so the environment must not clean it up) sets `keeps_runs = True`.

    A backend names itself in its class body (`BACKEND = 'mine'`): that registers it in
    STORAGE_SERVICES, so `storage_service='mine'` builds it (a file backend's `_claims`
    lets load_trajectory open its files). A subclass without its own BACKEND is not
    registered."""

    multiproc_safe = False
    keeps_runs = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if 'BACKEND' in cls.__dict__:  # (names are looked up lower-cased)
            STORAGE_SERVICES[cls.BACKEND.lower()] = cls
    _STORE = {TRAJECTORY: '_store_trajectory', SINGLE_RUN: '_store_run', LIST: '_store_list',
              DELETE: '_delete', FLUSH: 'flush', CLOSE_FILE: 'close', OPEN_FILE: '_noop'}
    _LOAD = {TRAJECTORY: '_load_trajectory', LIST: '_load_list'}

    def store(self, msg, item, *args, **kwargs):
        """Store `item` as message `msg` asks (TRAJECTORY, SINGLE_RUN, LIST, ...)."""
        try:
            method = self._STORE[msg]
        except KeyError:
            raise ConfigurationError('%s does not know the store message %r'
                                     % (type(self).__name__, msg)) from None
        return getattr(self, method)(item, *args, **kwargs) if item is not None or \
            method in ('flush', 'close', '_noop') else getattr(self, method)()

    def load(self, msg, item, *args, **kwargs):
        """Load into `item` as message `msg` asks (TRAJECTORY, LEAF, LIST, ...)."""
        try:
            method = self._LOAD[msg]
        except KeyError:
            raise ConfigurationError('%s does not know the load message %r'
                                     % (type(self).__name__, msg)) from None
        return getattr(self, method)(item, *args, **kwargs)

    def _noop(self, *args, **kwargs):
        pass

    def flush(self, *args, **kwargs):
        """Write out anything buffered (nothing by default)."""
        pass

    def close(self, *args, **kwargs):
        """Release files and handles (nothing by default)."""
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LazyStorageService(StorageService):
    """Writes nothing. Run results stay in the trajectory in memory, so a quick script
    or a lesson can still look at them after the runs."""

    BACKEND = 'lazy'
    multiproc_safe = True
    keeps_runs = True

    def _store_trajectory(self, traj, only_init=False, store_data=STORE_DATA):
        pass

    def _store_run(self, record):
        pass

    def _store_list(self, msgs, trajectory=None, store_data=STORE_DATA, overwrite=None,
                    with_links=True):
        pass

    def _delete(self, names, trajectory=None, recursive=False):
        pass

    def _load_trajectory(self, traj, **kwargs):
        raise DataNotInStorageError('LazyStorageService keeps nothing on disk; there is '
                                    'nothing to load (use HDF5 or pickle storage)')

    _load_list = _load_trajectory


_FORKS = [0]  # forks so far in this process's line: a forked child reopens its files
_HELD = set()  # journals that keep their folder lock across appends (see _Journal.hold)


# ============================================================================================
# Storage journal - finished runs between checkpoints
# ============================================================================================
def _after_fork_in_child():
    _FORKS[0] += 1
    for journal in list(_HELD):  # (the parent's lock: a child that lives on must not
        journal._forget_hold()    # keep it after the parent is gone)


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# The two messages about a finished run, defined once (as concurrent.futures' _CallItem and
# _ResultItem). Tuples with names: a run record is journalled as the plain tuple (no class of
# minipypet's in a file), so that what a reader gets back unpacks in this field order.
#
#   _RunRecord  what a run left: kind 'run', the trajectory's name, the run index, info
#               (start, finish, completed, hexsha, error: _RunTable.FIELDS, in order),
#               leaves [(full name, class tag, comment, data, annotations), ...] and links
#               [(full name, target's full name), ...] (the links the run added; a field
#               added last, with a default, so the 5-field records of older journals read)
#   _RunResult  what goes back from a worker: status 'ok', 'err' or 'stop' (ok, and the
#               job set pypet's sigint_handling.hit: no new runs), the run index, value
#               (the job's return value, or the traceback text), exc_bytes (the pickled
#               exception, or None) and the run's _RunRecord (where the parent stores
#               the run, or it failed; else None: the store says the rest)
_RunRecord = collections.namedtuple('_RunRecord', 'kind name idx info leaves links',
                                    defaults=((),))
_RunResult = collections.namedtuple('_RunResult', 'status idx value exc_bytes record')
_new_tuple = tuple.__new__  # _new_tuple(_RunRecord, fields): one made without its __new__


class _Journal:
    """An append-only file of checksummed records beside the data file.

    A record is one os.write() of [length, crc32, pickle of plain data]. A process killed
    mid-write leaves a torn record; readers skip it (and anything damaged) by resynchronising
    on the next record whose checksum holds, and a writer cuts a torn tail off before it
    appends. Appends take a shared lock on the folder and checkpoints an exclusive one, so a
    checkpoint never drops a record another process is writing. fsync runs at most
    `fsync_interval` seconds after a record (a timer covers a pause in the appends; 0 syncs
    every record, None never), so a power cut costs at most that interval's runs."""

    MAGIC = b'MPJOURNAL1\n'
    _HEAD = struct.Struct('<II')
    # what one write() takes whole (Linux writes at most 0x7ffff000 bytes a call), with
    # the record's head: a record is one call, so that appenders never interleave
    _MAX_RECORD = 0x7ffff000 - 8

    def __init__(self, path, fsync_interval=1.0, folder_lock=True):
        self.path, self.fsync_interval = path, fsync_interval
        self._fd, self._last_sync, self._dirty = None, 0.0, False
        self._timer, self._pid = None, None
        self._folder_lock = folder_lock  # False: no checkpoint ever folds this journal
        self._dirfd = None
        self._own = None  # see take_own
        self.listener = None  # listener(journal id or None, record, payload): see _keep
        self._hold = self._held = False  # see hold
        self._held_at = 0.0

    def __getstate__(self):
        return {'path': self.path, 'fsync_interval': self.fsync_interval, '_fd': None,
                '_last_sync': 0.0, '_dirty': False, '_timer': None, '_pid': None,
                '_folder_lock': self._folder_lock, '_dirfd': None, '_own': None,
                'listener': None, '_hold': False, '_held': False, '_held_at': 0.0}

    # While a sweep holds the journal, the shared folder lock an append takes is kept
    # for the appends that follow within this many seconds, then given back: a
    # checkpoint of another process (another sweep's end in the same folder) gets its
    # turn as often as it would between single appends, give or take these 10 ms.
    HOLD_SECONDS = 0.01

    def hold(self):
        """Keep the shared folder lock across appends until release() (a serial sweep):
        most appends then save two flock calls and an fstat. It is given back every
        HOLD_SECONDS, before a checkpoint in this process (_FolderLock), and by a child
        forked meanwhile (_after_fork_in_child)."""
        self._hold = True
        _HELD.add(self)

    def release(self):
        """End hold(): give the folder lock back."""
        self._hold = False
        _HELD.discard(self)
        self._unhold()

    def _unhold(self):
        if self._held:
            self._held = False
            if self._dirfd is not None and self._pid == _FORKS[0]:
                _flock(self._dirfd, unlock=True)

    def _forget_hold(self):
        """In a forked child: close this process's reference to the parent's locked folder
        descriptor (the parent keeps the lock; the child reopens its files anyway)."""
        _HELD.discard(self)
        self._hold = self._held = False
        if self._dirfd is not None:
            try:
                os.close(self._dirfd)
            except OSError:
                pass
            self._dirfd = None

    def _open(self):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_BINARY', 0)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, flags, 0o644)
        self._own = None
        failed = False
        if os.fstat(fd).st_size == 0:
            # Two processes may race to write the header; readers accept exactly one.
            _lock_fd(fd)
            try:
                if os.fstat(fd).st_size == 0:
                    header = self.MAGIC + os.urandom(8).hex().encode() + b'\n'
                    try:
                        failed = os.write(fd, header) != len(header)
                    except OSError as exc:
                        failed = exc
                    if failed:
                        os.ftruncate(fd, 0)  # (no torn header left behind)
                    else:
                        self._own = [header[len(self.MAGIC):-1].decode(), len(header)]
            finally:
                _unlock_fd(fd)
        if failed:
            os.close(fd)
            error = failed if isinstance(failed, OSError) else None
            raise StorageError('cannot write to %s: %s' % (
                self.path, _disk_error_text(self.path, error))) from error
        self._fd, self._pid = fd, _FORKS[0]
        self._last_sync = time.monotonic()
        self._held = False
        self._dirfd = _open_folder(self.path) if self._folder_lock else None

    def append(self, record, locked=False):
        """Append one record (`locked`: the caller holds the folder's exclusive lock)."""
        # (a _RunRecord goes in as the plain tuple: no class of minipypet's in the file)
        payload = pickle.dumps(record if type(record) is tuple else tuple(record), protocol=4)
        if len(payload) > self._MAX_RECORD:
            what = 'run %d' % record[2] if record[0] == 'run' else 'the %s record' % record[0]
            raise StorageError(
                'the data of %s is %.2f GB, more than one journal record holds (%.2f GB): '
                'nothing of it is written. Store it as several results of less than that '
                'each (e.g. f_add_result(\'part_0\', ...), ...)'
                % (what, len(payload) / 1e9, self._MAX_RECORD / 1e9))
        data = (self._HEAD.pack(len(payload), zlib.crc32(payload)), payload)
        if self._fd is None or self._pid != _FORKS[0]:
            self._open()
        # Shared lock on the folder for the write only: a checkpoint takes it
        # exclusively. (Held for longer, a process forked meanwhile would hold it too,
        # for its life; except while hold() keeps it, which sees to that.)
        held = self._held
        dirfd = None if held or locked else self._dirfd
        if dirfd is not None:
            _flock(dirfd, shared=True)
        try:
            size = None
            if held:  # (no checkpoint can have removed it since; take_own checks the end)
                size = self._own[1] if self._own is not None else None
            elif self._folder_lock:
                st = os.fstat(self._fd)
                if st.st_nlink:
                    size = st.st_size
                while st.st_nlink == 0:  # a checkpoint folded and removed it: a new one,
                    os.close(self._fd)  # checked again under the lock (one may have
                    self._close_folder()  # folded the new one before the lock was had)
                    self._open()
                    dirfd = self._dirfd if not locked else None
                    if dirfd is not None:
                        _flock(dirfd, shared=True)
                    st = os.fstat(self._fd)
            if size is None and self._own is not None:
                size = os.fstat(self._fd).st_size
            self._write(data, locked)
            if self._own is not None:
                self._keep(record, payload, size, len(data[0]) + len(payload))
        finally:
            if dirfd is not None:
                if self._hold:  # kept for the next appends (see hold)
                    self._held, self._held_at = True, time.monotonic()
                else:
                    _flock(dirfd, unlock=True)
        self._dirty = True
        now = time.monotonic()
        if held and now - self._held_at >= self.HOLD_SECONDS:
            self._unhold()
        interval = self.fsync_interval
        if interval is not None:
            if now - self._last_sync >= interval:
                self.sync()
            elif self._timer is None:  # a long pause before the next record: sync anyway
                self._timer = threading.Timer(interval, self._timed_sync)
                self._timer.daemon = True
                self._timer.start()

    def _write(self, data, locked):
        """One write of a whole record (head, payload): one system call, so that
        appenders never interleave. A short write or ENOSPC (a full disk) leaves a torn
        record, and the run is not counted as done. The torn bytes are never cut (other
        processes may be appending after them, and readers may have the file mapped):
        readers skip them, and under the folder's exclusive lock (`locked`, or the next
        store) their space is freed (see repair)."""
        head, payload = data
        try:
            if len(payload) > 1 << 16 and hasattr(os, 'writev'):
                written = os.writev(self._fd, data)  # (no copy of a big record)
            else:
                written = os.write(self._fd, head + payload)
        except OSError as exc:
            written, error = 0, exc
        else:
            error = None
        if written == len(head) + len(payload):
            return
        cause = _disk_error_text(self.path, error)  # (before repair frees the space)
        if self._own is not None:  # (its records no longer end where the file does)
            self._own = None
            if self.listener is not None:
                self.listener(None, None, None)
        if locked:
            self.close(sync=False)
            _Journal.repair(self.path)
        exc = StorageError(
            'cannot write to %s: %s; the runs journalled before are safe. %s and resume '
            'the sweep (env.f_continue_run with its .cnt file)'
            % (self.path, cause, _disk_fix(cause)))
        exc.reason = cause  # (for a message of its own: see Environment._store_first)
        raise exc from error

    # A journal this process started, while it alone appends, holds exactly the records the
    # process appended: each goes to the listener as well (the service folds them as they
    # come, see _FileService._live_record), so that a checkpoint needs not read the journal
    # again. A record written by another process in between ends that (listener(None, ...)).
    def _keep(self, record, payload, start, size):
        own = self._own  # [journal id, end offset]
        # `start`: the file's size just before the write (None: unknown). Another process
        # may still write between that and ours; take_own's size check catches it then.
        if start != own[1]:
            self._own = None
            if self.listener is not None:
                self.listener(None, None, None)
            return
        own[1] = start + size
        if self.listener is not None:
            self.listener(own[0], record, payload)

    def take_own(self):
        """(journal id, end) if the file holds exactly the records this process
        appended, else None; either way it is forgotten. Call it under the exclusive
        folder lock, so that nothing is appended meanwhile."""
        own, self._own = self._own, None
        if own is None:
            return None
        jid, end = own
        try:
            with open(self.path, 'rb') as f:
                head = f.read(len(self.MAGIC) + 17)
                size = os.fstat(f.fileno()).st_size
        except OSError:
            return None
        if size != end or head[len(self.MAGIC):-1] != jid.encode():
            return None
        return jid, end

    def quiesce(self):
        """Sync now and stop the timer thread (before forking: a process with threads
        should not fork)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            timer.join()
        self.sync()

    def _timed_sync(self):
        self._timer = None
        try:
            self.sync()
        except OSError:  # closed meanwhile: close() synced it
            pass

    def sync(self):
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self, sync=True):
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.release()
        if self._fd is not None:
            try:
                if sync and self._pid == _FORKS[0]:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
                self._close_folder()

    def _close_folder(self):
        if getattr(self, '_dirfd', None) is not None:
            os.close(self._dirfd)
            self._dirfd = None

    @classmethod
    def scan(cls, data, start=0, counts=None):
        """Yield (payload, end offset) of each intact record in a journal's bytes (a bytes
        object or an mmap). A record needs a length > 1, a pickle's first byte and its
        CRC-32, so that zeros (a torn tail of a 0.0 or a zero array) never pass as one;
        damage is skipped by resynchronising on the next record that checks out.
        `counts` (a list [end of the last intact record, bytes skipped]) is kept up to date."""
        head = len(cls.MAGIC) + 17
        pos = first = max(start, head)
        size, done = len(data), 0
        unpack, crc32 = cls._HEAD.unpack_from, zlib.crc32
        view = memoryview(data)
        counts = counts if counts is not None else [0, 0]
        counts[0] = pos
        free, freed = getattr(data, 'madvise', None), 0
        try:
            while pos + 8 <= size:
                length, crc = unpack(data, pos)
                end = pos + 8 + length
                if 1 < length and end <= size and data[pos + 8] == 0x80 and \
                        crc32(view[pos + 8:end]) == crc:
                    done += 8 + length
                    counts[0] = end
                    yield data[pos + 8:end], end
                    pos = end
                    if free is not None and end - freed > 32 << 20:
                        # an mmap's pages once read count as the process's memory until
                        # they are dropped: a journal of gigabytes would count whole
                        mmap = sys.modules['mmap']
                        upto = end - end % mmap.PAGESIZE
                        free(mmap.MADV_DONTNEED, freed, upto - freed)
                        freed = upto
                    continue
                nxt = pos + 1  # damaged or torn: look for the next record that checks out
                while nxt + 8 <= size:
                    # (a record's payload starts with the byte 0x80: find() skips to the
                    # next one at C speed, through megabytes of a torn array)
                    mark = data.find(b'\x80', nxt + 8)
                    if mark < 0:
                        nxt = size
                        break
                    nxt = mark - 8
                    length, crc = unpack(data, nxt)
                    if 1 < length and nxt + 8 + length <= size and \
                            crc32(view[nxt + 8:nxt + 8 + length]) == crc:
                        break
                    nxt += 1
                pos = nxt
        finally:
            view.release()
        counts[1] = max(0, size - first) - done

    @classmethod
    def open(cls, path):
        """(journal id, mmap of the file) or (None, bytes skipped) where there is no
        journal or only a torn header. An mmap, so that a journal of gigabytes is read a
        record at a time and never held in memory whole."""
        import mmap
        try:
            f = open(path, 'rb')
        except FileNotFoundError:
            return None, 0
        with f:
            size = os.fstat(f.fileno()).st_size
            head = len(cls.MAGIC) + 17
            first = f.read(head)
            if len(first) < head or not first.startswith(cls.MAGIC):
                if len(first) < head and cls.MAGIC.startswith(first[:len(cls.MAGIC)]):
                    return None, size  # killed while writing the header
                raise StorageError('%s is not a minipypet journal (bad header)' % path)
            try:
                jid = first[len(cls.MAGIC):head - 1].decode('ascii')
            except UnicodeDecodeError:
                raise StorageError('%s is not a minipypet journal (bad header)' % path) \
                    from None
            return jid, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    @classmethod
    def tail(cls, path, jid, start):
        """Yield (payload, end offset) of the whole records from `start` on, read with
        plain reads and without the folder's lock (a follower while others append): an
        append under way ends it; damage raises ValueError. (Plain reads, not an mmap:
        a page of an mmap past the end of its file is a SIGBUS, so a reader that maps
        a file must be sure that nothing cuts it.)"""
        head = len(cls.MAGIC) + 17
        with open(path, 'rb') as f:
            first = f.read(head)
            if not first.startswith(cls.MAGIC) or first[len(cls.MAGIC):head - 1] != \
                    jid.encode('ascii'):
                raise ValueError('another journal')
            f.seek(start)
            while True:
                got = f.read(8)
                if len(got) < 8:
                    return
                length, crc = cls._HEAD.unpack(got)
                payload = f.read(length)
                if len(payload) < length:
                    return
                if length < 2 or payload[0] != 0x80 or zlib.crc32(payload) != crc:
                    raise ValueError('damage in the journal at byte %d' % start)
                start += 8 + length
                yield payload, start

    @classmethod
    def records(cls, path, start=0, loads=None, counts=None):
        """Yield the records of a journal from `start` on, one at a time (see scan)."""
        jid, data = cls.open(path)
        if jid is None:
            if counts is not None:
                counts[:] = [0, data]
            return
        loads = loads or _safe_loads
        scan = cls.scan(data, start, counts)
        bad = 0
        try:
            for payload, _ in scan:
                try:
                    record = loads(payload)
                except PickleRefusedError:
                    raise
                except Exception:  # (damage that kept its checksum: skipped like damage)
                    bad += 8 + len(payload)
                    continue
                yield record
        finally:
            scan.close()
            data.close()
            if counts is not None:
                counts[1] += bad

    @classmethod
    def read(cls, path, start=0, parse=True, loads=None):
        """(journal id, [records], end offset of the last intact record, bytes skipped)."""
        jid, data = cls.open(path)
        if jid is None:
            return None, [], 0, data
        counts = [0, 0]
        scan = cls.scan(data, start, counts)
        try:
            loads = loads or _safe_loads
            records = [loads(p) if parse else None for p, _ in scan]
        finally:
            scan.close()
            data.close()
        return jid, records if parse else [], counts[0], counts[1]

    @classmethod
    def repair(cls, path):
        """Free a torn tail's disk space (call it under the folder's exclusive lock). The
        file is not cut: a reader without the lock (a load, `check`) may have it mapped,
        and a page of an mmap past the end of its file is a SIGBUS. Where the file system
        can, the tail becomes a hole that reads as zeros, which never pass for a record;
        elsewhere it stays. New records follow it, and readers skip it."""
        jid, _, end, skipped = cls.read(path, parse=False)
        if jid is None:
            if skipped:
                os.remove(path)
            return None
        size = os.path.getsize(path)
        if size > end:
            logger.warning('journal %s: %d bytes of an interrupted write at its end are '
                           'skipped', path, size - end)
            libc = _libc()
            if libc is not None:
                import ctypes
                with open(path, 'r+b') as f:  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                    if libc.fallocate(f.fileno(), 3, ctypes.c_int64(end),
                                      ctypes.c_int64(size - end)) == 0:
                        os.fsync(f.fileno())
        return jid


_FROZEN = frozenset((bool, int, float, complex, str, bytes, type(None)))


def _frozen_run(record):
    """True if no later change can reach into this run record: its leaves are minipypet's
    own (whose _store makes a new dict), without annotations, holding immutable values."""
    if record[0] != 'run':
        return False
    for _, tag, _, data, ann in record.leaves:
        if ann or tag not in _BUILTIN_LEAVES:
            return False
        if data is not None:
            for v in data.values():
                if type(v) not in _FROZEN:
                    return False
    return True


def _frozen_record(record):
    """_frozen_run, and for a trajectory's record: True if its nodes hold immutable values
    only (scalars, and fresh lists of them: explored ranges), no annotations and no runs."""
    if record[0] == 'run':
        return _frozen_run(record)
    if record[0] != 'traj' or record[2]['columns']:
        return False
    for rec in record[2]['nodes'].values():
        if rec.get('ann'):
            return False
        for value in (rec.get('data') or {}).values():
            kind = type(value)
            if kind not in _FROZEN and not (
                    kind in (list, tuple) and set(map(type, value)) <= _FROZEN):
                return False
    return True


def _open_folder(path):
    """A descriptor of the file's folder to flock, or None where there is no flock."""
    if not _have('fcntl'):
        return None
    try:
        return os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return None


def _flock(fd, shared=False, unlock=False):
    fcntl = sys.modules['fcntl']  # imported by _open_folder (an import statement costs more)
    fcntl.flock(fd, fcntl.LOCK_UN if unlock else fcntl.LOCK_SH if shared else fcntl.LOCK_EX)


class _FolderLock:
    """flock on the data file's folder: shared for appends, exclusive for checkpoints."""

    def __init__(self, path, shared):
        self.folder = os.path.dirname(os.path.abspath(path))
        self.shared, self.fd = shared, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one sweep per file at a time
            return self
        try:
            self.fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return self
        if not self.shared:  # (this process's own hold would block it for ever)
            for journal in list(_HELD):
                journal._unhold()
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def _lock_fd(fd):
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
    except ImportError:  # Windows: the header race is harmless enough there
        pass


def _unlock_fd(fd):
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_UN)
    except ImportError:
        pass


def _fsync_dir(path):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ============================================================================================
# Storage states - what a file holds, as plain dicts
# ============================================================================================
def _new_state(name):
    return {'format': FORMAT_VERSION, 'name': name, 'time': '', 'timestamp': 0.0,
            'comment': '', 'version': __version__, 'python': '', 'length': 0,
            'explored': [], 'runs': _RunTable(0).to_plain(), 'nodes': {}, 'columns': {},
            'parameter_summary': []}


def _state_set_run(state, idx, info):
    runs = state['runs']
    n = len(runs['completed'])
    if idx >= n:
        _runs_length(runs, idx + 1)
    (runs['timestamp'][idx], runs['finish_timestamp'][idx], runs['completed'][idx],
     runs['hexsha'][idx], runs['error'][idx]) = info  # (_RunTable.FIELDS, in order)


def _state_put_leaf(state, full_name, tag, comment, data, ann, overwrite=True):
    """Put a leaf in a state; returns its column template (None for a node)."""
    split = _leaf_split(_split_run(full_name))
    if split is not None:
        rows = state['columns'].setdefault(split[0], {})
        old = rows.get(split[1])
        if old is None or overwrite or old[3] is None:
            rows[split[1]] = (tag, comment, ann, data if data is not None or old is None
                              else old[3])
        return split[0]
    old = state['nodes'].get(full_name)
    if isinstance(overwrite, tuple) and old is not None and old.get('kind') == 'leaf' and \
            old.get('data') is not None and data is not None and tag == old.get('class'):
        # pypet's f_store_item(overwrite=[items]): those replace the stored ones, and
        # new items are added; the other stored items stay
        kept = {k: v for k, v in old['data'].items() if k not in overwrite}
        state['nodes'][full_name] = dict(old, comment=comment, ann=ann, data=dict(data, **kept))
        return
    if old is None or old.get('kind') != 'leaf' or overwrite or old.get('data') is None:
        state['nodes'][full_name] = {'kind': 'leaf', 'class': tag, 'comment': comment,
                                     'ann': ann, 'data': data if data is not None or old is None
                                     else old.get('data')}
    elif data is not None and tag == old.get('class') and set(data) - set(old['data']):
        # pypet's STORE_DATA: new items of a stored result are added, old ones stay
        state['nodes'][full_name] = dict(old, data=dict(data, **old['data']))


def _apply_records(states, records):
    """Fold journal records into {trajectory name: state}, in order."""
    last, shapes = None, {}
    for record in records:
        kind, name = record[0], record[1]
        if name != last:
            state = states.get(name)
            if state is None:
                state = states[name] = _new_state(name)
            last, columns = name, state['columns']
            shape = shapes.setdefault(name, {})  # (see _run_shape and _apply_record)
        if kind == 'run':  # (nearly all of them: inline)
            idx, info, leaves = record[2:5]  # (_RunRecord fields; read back: a tuple)
            if len(record) > 5 and record[5]:  # (the run's links; older records have none)
                _state_put_links(state, record[5])
            _state_set_run(state, idx, info)
            if idx >= state['length']:
                state['length'] = idx + 1
            for leaf in leaves:
                template = _state_put_leaf(state, *leaf)
                if template is not None and len(columns) > 1:
                    known = shape.get(template)
                    if known is None or known[0] != len(columns):
                        known = shape[template] = (len(columns), [
                            t for t in columns if t != template and (
                                t.startswith(template + '.') or
                                template.startswith(t + '.'))])
                    if known[1]:
                        _run_shape(state, template, idx, known[1], shape)
        else:
            _apply_record(state, record, shape)


def _run_shape(state, template, idx, others, said):
    """A run's leaf replaces that run's rows of the columns it cannot coexist with
    (`others`): a run stored again with its result z now a group (z.mean), or back."""
    columns = state['columns']
    for other in others:
        rows = columns.get(other)
        if rows is not None and rows.pop(idx, None) is not None:
            if (template, other) not in said:  # (said once a fold, not once a run)
                said[template, other] = True
                _say_once('%s is stored again with %s, so the %s stored before is dropped '
                          '(in every run stored again so): a node cannot be both a leaf and a '
                          'group' % (_run_name(idx), _join_run(template, idx),
                                     _join_run(other, idx)), remember=False)
            if not rows:
                del columns[other]


def _apply_record(state, record, shape=None):
    """Fold one journal record other than a run's into its trajectory's state. `shape`:
    a fold's cache for this trajectory (the prefixes of its stored names, made on first
    use, so that many stored items stay linear)."""
    kind = record[0]
    if kind == 'leaf':
        _, _, full_name, tag, comment, data, ann, overwrite = record
        split = _leaf_split(_split_run(full_name))
        if split is not None:  # (as the fold does: z.mean replaces the run's z, or back)
            others = [t for t in state['columns'] if t != split[0] and (
                t.startswith(split[0] + '.') or split[0].startswith(t + '.'))]
            if others:
                _run_shape(state, split[0], split[1], others, {} if shape is None else shape)
        if split is None:
            groups = None
            if shape is not None:
                groups = shape.get(None)
                if groups is None:
                    groups = shape[None] = _group_names(state)
                groups.update(_heads(full_name))
            _make_room(state, full_name, 'leaf', groups)
        _state_put_leaf(state, full_name, tag, comment, data, ann, overwrite)
    elif kind == 'group':
        _, _, full_name, comment, ann = record
        _make_room(state, full_name, 'group')
        if comment or ann or full_name not in state['nodes']:  # (the group as it is now)
            state['nodes'][full_name] = {'kind': 'group', 'comment': comment, 'ann': ann}
        if shape is not None and shape.get(None) is not None:
            shape[None].update(_heads(full_name))
    elif kind == 'link':  # (a group stored with f_store_item takes its links along)
        _state_put_links(state, [record[2:4]])
    elif kind == 'delete':
        _, _, names, recursive = record
        _state_delete(state, names, recursive)
    elif kind == 'traj':
        _, _, mem, store_data, only_init = record
        _merge_memory(state, mem, store_data, only_init)
        if shape is not None:
            shape.pop(None, None)  # (many new names: made again when needed)
    else:
        raise StorageError('unknown journal record %r' % (kind,))


def _state_put_links(state, links):
    """Links [(full name, target's full name), ...] into a state (not over a node)."""
    nodes = state['nodes']
    for full_name, target in links:
        if (nodes.get(full_name) or {'kind': 'link'})['kind'] == 'link':
            nodes[full_name] = {'kind': 'link', 'target': target}


def _state_delete(state, names, recursive):
    for full_name in names:
        prefix = full_name + '.'
        for key in [k for k in state['nodes'] if k == full_name or
                    (recursive and k.startswith(prefix))]:
            del state['nodes'][key]
        split = _split_run(full_name)
        if split is not None:  # in a run: that run's row of the column (or of those below)
            template, idx = split
            columns = state['columns']
            for key in [t for t in columns if t == template or
                        (recursive and t.startswith(template + '.'))]:
                columns[key].pop(idx, None)
                if not columns[key]:
                    del columns[key]
        elif recursive:
            for template in [t for t in state['columns'] if t.startswith(prefix)]:
                del state['columns'][template]


def _heads(full_name):
    """'a.b.c' -> 'a', 'a.b'."""
    parts = full_name.split('.')
    return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def _group_names(state):
    """The names that hold stored nodes below them (for _make_room)."""
    return {head for key in state['nodes'] for head in _heads(key)}


def _make_room(state, full_name, kind, groups=None):
    """Newest wins where a node changed from leaf to group (or back) between stores: a
    node put at full_name replaces a leaf stored at one of its prefixes, and a leaf replaces
    what is stored at or below its name. (Not run columns: where a node conflicts with one,
    loading skips the node and says so.) `groups`: the prefixes of the stored names, if
    known (else they are looked for)."""
    nodes, dropped = state['nodes'], []
    for head in _heads(full_name):
        rec = nodes.get(head)
        if rec is not None and rec['kind'] == 'leaf':
            dropped.append(head)
    own = nodes.get(full_name)
    if own is not None and own['kind'] != kind and 'link' not in (kind, own['kind']):
        dropped.append(full_name)
    if kind == 'leaf' and (groups is None or full_name in groups):
        dropped.extend(k for k in nodes if k.startswith(full_name + '.'))
    for key in dropped:
        _say_once('%s is stored as a %s now; the %s %s stored before is dropped, as a node '
                  'cannot be both a leaf and a group' % (full_name, kind, nodes.pop(key)['kind'],
                                                         key), remember=False)


def _merge_memory(state, mem, store_data, only_init):
    """Fold an in-memory trajectory's state over a stored one (see f_store's modes)."""
    overwrite = store_data >= OVERWRITE_DATA
    explored = set(mem['explored'])
    for key in ('name', 'time', 'timestamp', 'comment', 'version', 'python', 'explored',
                'format', 'merged_runs', 'ann'):
        state[key] = mem.get(key, state.get(key))
    groups = _group_names(state)
    for full_name, rec in mem['nodes'].items():
        _make_room(state, full_name, rec['kind'], groups)
        if rec['kind'] != 'leaf':
            if full_name not in state['nodes'] or rec.get('comment') or rec.get('ann'):
                state['nodes'][full_name] = rec
            continue
        if store_data == STORE_DATA_SKIPPING and full_name in state['nodes']:
            continue
        _state_put_leaf(state, full_name, rec['class'], rec['comment'], rec['data'],
                        rec['ann'], overwrite or full_name in explored or
                        full_name.startswith('config.environment.'))  # the env's own notes
    if not only_init:
        for template, rows in mem['columns'].items():
            for idx, (tag, comment, ann, data) in rows.items():
                _state_put_leaf(state, _join_run(template, idx), tag, comment, data, ann,
                                overwrite)
    n = state['length'] = mem['length']
    if mem['runs'] is None:  # (a checkpoint: run information goes to the segments)
        return
    old = state['runs']
    runs = {f: list(mem['runs'][f]) for f in _RunTable.FIELDS}
    for i in range(min(n, len(old['completed']))):
        if old['finish_timestamp'][i] > runs['finish_timestamp'][i]:
            for f in _RunTable.FIELDS:  # stored later (by a worker) than memory knows
                runs[f][i] = old[f][i]
    state['runs'], state['length'] = runs, n


def _merged_set(ranges):
    return {i for start, stop in ranges for i in range(start, stop)}


class _AllBut(frozenset):
    """The branches whose data a load reads when it is all but these (load_other_data)."""

    def __contains__(self, branch):
        return not frozenset.__contains__(self, branch)

    def __bool__(self):
        return True


class _FromState:
    """Loading for services that read a whole trajectory's plain-data state from a file
    (`self.filename`, `self._load_state`): minipypet's own and the pypet 0.7 reader."""

    def _load_trajectory(self, traj, name=None, index=None, modes=None, force=False):
        modes = None if modes is None else dict(modes)
        other = LOAD_SKELETON if modes is None else modes.pop('', LOAD_SKELETON)
        data = True if modes is None else {b for b, m in modes.items() if m >= LOAD_DATA}
        if other >= LOAD_DATA and data is not True:  # (pypet's load_other_data: the data
            data = _AllBut(b for b, m in modes.items() if m < LOAD_DATA)  # of the rest, too)
        skip = {b for b, m in (modes or {}).items() if m == LOAD_NOTHING}
        return self._load_state(name, index, data=data, skip=skip, lazy_runs=True)

    def _load_list(self, traj, names=(), recursive=True):
        return _items_from_state(self._load_state(traj._name, data=True), names, recursive,
                                 self.filename)


# ============================================================================================
# File services - the main file, segments and checkpoints
# ============================================================================================
class _FileService(_FromState, StorageService):
    """What the pickle and HDF5 services share: the journal, segments, checkpoints, loading.

    A file service keeps three things beside each other:
      <file>            the main file: each trajectory's metadata (parameters, config,
                        trajectory-level results, overview tables) and its list of segments;
                        small, and replaced whole (temp file, fsync, rename) at a checkpoint
      <file>.segments/  immutable segment files holding run rows and run information, one
                        or more per checkpoint that had runs to store; never changed again
      <file>.journal    finished runs and stored items since the last checkpoint
    A checkpoint streams the journal into new segments, then swaps in a new main file that
    lists them, then removes the journal: it writes what is new, never the runs stored
    before, and holds at most a batch of rows (_SEGMENT_BUDGET) in memory.

    Backend hooks (a new backend implements these, names itself with BACKEND and runs
    the contract tests): _list_names, _folded_marker, _read_main (a trajectory's metadata
    and, for files of format 2, the rows the main file itself holds), _write_main,
    _segment_open/_segment_append/_segment_close (write one segment), _segment_read (its
    rows into a state) and _segment_idx (the run indices of one column)."""

    multiproc_safe = True
    SUFFIX = ''
    # the storage arguments this backend takes (_make_service passes it only these)
    OPTIONS = frozenset(('file_title', 'overwrite_file', 'purge_duplicate_comments',
                         'summary_tables', 'small_overview_tables', 'large_overview_tables',
                         'results_per_run', 'derived_parameters_per_run', 'fsync_interval'))

    @classmethod
    def _claims(cls, head):
        """True if a file starting with the bytes `head` is this backend's."""
        return False

    @classmethod
    def _open_existing(cls, path):
        """The service that reads the existing file `path`, which this backend claims."""
        return cls(path)

    def __init__(self, filename, file_title=None, overwrite_file=False,
                 purge_duplicate_comments=True, summary_tables=True, small_overview_tables=True,
                 large_overview_tables=True, results_per_run=0, derived_parameters_per_run=0,
                 fsync_interval=1.0, trajectory_name=None):
        if not summary_tables and purge_duplicate_comments:
            raise ConfigurationError('purge_duplicate_comments needs summary_tables=True (the '
                                     'summary keeps the first comment); set one of them off')
        for key, value in (('results_per_run', results_per_run),
                           ('derived_parameters_per_run', derived_parameters_per_run)):
            if not isinstance(value, int) or value < 0:
                raise ConfigurationError('%s must be an int >= 0, got %r' % (key, value))
        if fsync_interval is not None and (not isinstance(fsync_interval, (int, float)) or
                                           fsync_interval < 0):
            raise ConfigurationError('fsync_interval must be seconds >= 0 or None, got %r'
                                     % (fsync_interval,))
        self.filename = _default_filename(filename, trajectory_name, self.SUFFIX)
        self.file_title = file_title
        self.purge_duplicate_comments = purge_duplicate_comments
        self.summary_tables = summary_tables
        self.small_overview_tables = small_overview_tables
        self.large_overview_tables = large_overview_tables
        self.results_per_run = results_per_run
        self.derived_parameters_per_run = derived_parameters_per_run
        self._overwrite_pending = overwrite_file
        self._ours = set()  # trajectories whose runs this service stored before them
        self._journal = _Journal(self.filename + '.journal', fsync_interval)
        self._journal.listener = self._live_record
        self._live = None  # the fold of this process's own journal, made as records come

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_overwrite_pending'] = False
        state['_live'] = None
        return state

    def _live_record(self, jid, record, payload):
        """Fold a record this process journalled right away (into a segment written as a
        temporary file), so that the checkpoint at the end of a sweep only closes it. A
        record from elsewhere (jid None), or a new journal, ends the fold: the
        checkpoint then reads the journal."""
        live = self._live
        if live is not None and live.jid != jid:
            self._live = None
            live.abort()
            live = None
        if jid is None:
            return
        if live is None:
            live = self._live = _Fold(self)
            live.jid = jid
        if live.broken:
            return
        try:
            # (a value the job changes after the run must not reach the fold: except where
            # nothing can change, the record is the pickle written, made here, so trusted)
            live.record(record if _frozen_record(record) else pickle.loads(payload))
            live.end = self._journal._own[1]  # (what it covers: checked before use)
        except BaseException as exc:
            live.abort()
            live.broken = True
            if not isinstance(exc, Exception):
                raise
            logger.debug('folding as the runs come failed (%s: %s); the checkpoint will read '
                         'the journal instead', type(exc).__name__, exc)

    # The QUEUE writer appends runs to a journal the parent started (the store before
    # the runs), so its records would never count as its own: it adopts the journal
    # (folds what is there, claims the end), folds its records as they come and hands
    # the fold, segments closed, to the parent, whose checkpoint takes it only if the
    # journal still ends where the fold does (take_own); else it reads the journal.
    def _adopt_journal(self):
        """Fold the journal so far and claim its end, under the exclusive folder lock so
        that no record comes between (a torn or damaged record: nothing is adopted)."""
        journal, self._live = self._journal, None  # (not the parent's, forked with us)
        journal.close(sync=False)
        journal.listener = self._live_record  # (unpickled, the journal has none)
        with _FolderLock(journal.path, shared=False):
            jid, start = self._unfolded()
            if jid is None:
                return
            fold, counts = _Fold(self), [0, 0]
            try:
                for record in _Journal.records(journal.path, start, counts=counts):
                    fold.record(record)
                journal._open()
                adopted = counts == [os.fstat(journal._fd).st_size, 0]
            except Exception:  # (the parent's checkpoint reads the journal, as ever)
                adopted = False
            if not adopted:
                fold.abort()
                return
            fold.jid, fold.end, self._live = jid, counts[0], fold
            journal._own = [jid, counts[0]]

    def _hand_over(self):
        """Close the journal; return the fold pickled, its segments closed and durable,
        for _take_over; None where no fold covers the journal."""
        live, self._live = self._live, None
        own = self._journal._own
        self._journal.close()
        if live is None:
            return None
        if not live.broken and own == [live.jid, live.end]:
            try:
                live.close_segments()
                live.durable()
                return pickle.dumps(live, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # (its segments are debris the checkpoint removes)
                logger.debug('handing the fold over failed (%s: %s)',
                             type(exc).__name__, exc)
        live.abort()
        return None

    def _take_over(self, handed):
        """Make the fold _hand_over gave this process's own (see _checkpoint)."""
        try:
            fold = pickle.loads(handed)
        except Exception:  # (a speed-up only: the checkpoint reads the journal instead)
            return
        fold.service = self
        for segment in itertools.chain(*fold.closed.values()):
            segment.fold, segment.service = fold, self
        old, self._live = self._live, fold
        if old is not None:
            old.abort()
        self._journal._own = [fold.jid, fold.end]

    # LOCK and NONE pool workers append their runs to the journal themselves: the parent
    # folds them as their batches come back, while the workers go on, so that the
    # checkpoint at the end of the sweep does not read them again.
    def _follow_journal(self, claim=False):
        """Fold the records other processes appended to the journal since the fold's end,
        up to the last whole one (an append under way comes next time); `claim`: the
        appends are over, the checkpoint may take the fold (take_own checks the end).
        A gap, another journal or a failure ends it: the checkpoint reads the journal."""
        live = self._live
        if live is None or live.broken or live.jid is None:
            return
        try:
            for payload, end in _Journal.tail(self._journal.path, live.jid, live.end):
                live.record(_safe_loads(payload))
                live.end = end
        except BaseException as exc:
            self._live = None
            live.abort()
            if not isinstance(exc, Exception):
                raise
            logger.debug('folding the workers\' runs as they come failed (%s: %s); the '
                         'checkpoint will read the journal', type(exc).__name__, exc)
            return
        if claim:
            self._journal._own = [live.jid, live.end]

    @property
    def segment_folder(self):
        """The folder beside the file that holds its segments (see the class docstring)."""
        return self.filename + '.segments'

    def _settings(self):
        """The keyword arguments that rebuild this service (for a resume)."""
        keys = ('file_title', 'purge_duplicate_comments', 'summary_tables',
                'small_overview_tables', 'large_overview_tables', 'results_per_run',
                'derived_parameters_per_run')
        out = {k: getattr(self, k) for k in keys}
        out['fsync_interval'] = self._journal.fsync_interval
        for key in ('complevel', 'complib', 'shuffle', 'fletcher32'):
            if hasattr(self, key):
                out[key] = getattr(self, key)
        return out

    # -- storing -----------------------------------------------------------------------------
    def _prepare_overwrite(self):
        _check_writable(self.filename)
        if self._overwrite_pending:
            for path in (self.filename, self._journal.path):
                if os.path.exists(path):
                    os.remove(path)
            if os.path.isdir(self.segment_folder):
                import shutil
                shutil.rmtree(self.segment_folder)
            self._overwrite_pending = False

    def _store_trajectory(self, traj, only_init=False, store_data=STORE_DATA, before=None):
        """A checkpoint: journal + memory -> new segments and a new main file.

        The store before the runs (only_init) goes to the journal instead, as durable as
        the runs' records, and the sweep's checkpoint then happens at the end.
        `before()` runs under the file's lock just before it (a sweep writes its .cnt
        there: a kill between never leaves a stored sweep without one)."""
        mem = traj._to_state(only_init)
        self._check(mem)
        self._prepare_overwrite()
        fresh = None if traj._stored else traj._name
        if only_init:
            self._journal.close()
            with _FolderLock(self._journal.path, shared=False):
                # (the check, the .cnt and the record under one lock: of two sweeps of
                # one name started at once, exactly one is stored and the other refused)
                self._refuse_another(fresh)
                _Journal.repair(self._journal.path)
                if before is not None:
                    before()
                try:
                    self._journal.append(('traj', mem['name'], mem, store_data, True),
                                         locked=True)
                except StorageError:  # (a journal this left with no record goes with it)
                    if os.path.exists(self._journal.path) and \
                            not _Journal.read(self._journal.path)[1]:
                        os.remove(self._journal.path)
                    raise
            # (synced with the runs after it, by the group commit (fsync_interval): its own
            # fsync cost ~2 ms, a tenth of a small sweep; a kill -9 loses nothing either way)
            return
        self.checkpoint(extra=(mem, store_data, only_init), fresh=fresh, before=before)

    def _refuse_another(self, name):
        """A trajectory never stored or loaded must not replace one of its name in the file
        (call it under the exclusive folder lock, so that the answer holds until the store)."""
        if name is not None and name not in self._ours and (os.path.exists(
                self.filename) or os.path.exists(self._journal.path)) and \
                name in self.list_trajectories():
            raise StorageError(
                '%s holds a trajectory %r already, and this one was never stored or loaded: '
                'storing it would replace that one and its runs. Load it to add to it '
                '(load_trajectory, or f_load), give this one another name (add_time=True, '
                'or new_name=... when loading as_new), or start the file anew '
                '(overwrite_file=True)' % (self.filename, name))

    def checkpoint(self, extra=None, fresh=None, before=None):
        """Fold the journal (and an in-memory state) into the file; then drop the journal.
        (`fresh`: the name of a trajectory never stored; `before`: see _store_trajectory.)"""
        self._journal.close(sync=False)  # its records go into files that are fsynced
        with _FolderLock(self._journal.path, shared=False):
            self._refuse_another(fresh)
            if before is not None:
                before()
            self._checkpoint(extra)

    def _checkpoint(self, extra):
        own = self._journal.take_own()
        live, self._live = self._live, None
        counts = [0, 0]
        if own is not None and live is not None and (live.jid, live.end) == own and \
                not live.broken and live.stamp in (None, _file_stamp(self.filename)):
            # every record went through it, and the main file is still the one it read
            fold, records, (jid, end) = live, (), own
        else:  # (a torn tail needs no repair: the journal goes once it is folded)
            if live is not None:
                live.abort()
            own = None
            jid, start = self._unfolded()
            records = _Journal.records(self._journal.path, start, counts=counts) \
                if jid is not None else ()
            if jid is None and extra is None and not self._legacy_names():
                return
            fold = _Fold(self)
        try:
            for record in records:
                fold.record(record)
            if own is None:
                end, fold.damaged = counts[0], counts[1]
                self._say_skipped(counts[1])
            if extra is not None:
                fold.memory(*extra)
            fold.finish('%s:%d' % (jid, end) if jid else '')
        except BaseException as exc:
            fold.abort()
            if isinstance(exc, OSError) or type(exc).__module__.startswith('tables'):
                raise StorageError(
                    'cannot store into %s: %s. Nothing stored before is changed, and the '
                    'journal %s keeps every finished run: once that is mended, store again '
                    'or resume the sweep' % (self.filename, _disk_error_text(self.filename, exc),
                                             self._journal.path)) from exc
            raise
        finally:
            if hasattr(records, 'close'):
                records.close()
        if jid is not None:
            os.remove(self._journal.path)  # no directory fsync: a journal that comes back
            # after a power cut is skipped up to the folded marker the new file holds

    def _say_skipped(self, skipped):
        if skipped:
            _say_once('journal %s: %d damaged bytes were skipped (a write interrupted by a '
                      'crash, or damage); the runs in them are not completed and a resume '
                      'repeats them' % (self._journal.path, skipped), remember=False)

    def _unfolded(self):
        """(journal id, offset of its first record not yet folded into the file)."""
        jid, data = _Journal.open(self._journal.path)
        if jid is None:
            return None, 0
        data.close()
        folded = self._folded_marker() if os.path.exists(self.filename) else ''
        start = 0
        if folded and folded.partition(':')[0] == jid:
            start = int(folded.partition(':')[2])
        return jid, start

    def _journal_records(self, name=None, counts=None):
        """The records not yet folded into the file (of trajectory `name`), streamed;
        `counts`: [bytes read, damaged bytes skipped], filled as they are read."""
        jid, start = self._unfolded()
        if jid is None:
            return
        counts = [0, 0] if counts is None else counts
        for record in _Journal.records(self._journal.path, start, counts=counts):
            if name is None or record[1] == name:
                yield record
        self._say_skipped(counts[1])

    def _store_run(self, record):
        if self._overwrite_pending:
            self._prepare_overwrite()
        self._check_run(record)
        self._journal.append(record)

    def _check(self, state):
        """Refuse what the file format cannot hold, before anything is written."""

    def _check_run(self, record):
        """The same for a run record."""

    def _store_list(self, msgs, trajectory=None, store_data=STORE_DATA, overwrite=None,
                    with_links=True):
        self._prepare_overwrite()
        name = trajectory._name
        # overwrite: pypet's item names that replace the stored ones (the others stay)
        replace = store_data >= OVERWRITE_DATA if overwrite is None else tuple(overwrite)
        for msg, node in msgs:
            if msg == LEAF:
                data = None if node.f_is_empty() else node._store()
                if data is not None and type(node) not in _BUILTIN_TYPES:
                    _check_plain(data, node._full_name)
                how = replace
                if isinstance(replace, tuple) and \
                        _leaf_split(_split_run(node._full_name)) is not None:
                    how = True  # (a run's leaf: its row whole, with the items kept)
                    if data is not None:
                        data = self._keep_stored_items(trajectory, node, data, replace)
                self._journal.append(('leaf', name, node._full_name, _class_tag(type(node)),
                                      node._comment, data, _ann(node), how))
            elif msg == GROUP:
                self._journal.append(('group', name, node._full_name, node._comment,
                                      _ann(node)))
                for lname, target in node._links.items() if with_links else ():
                    self._journal.append(('link', name, node._join(lname), target._full_name))
            else:
                raise ConfigurationError('unknown item message %r' % (msg,))
        self._journal.sync()

    def _delete(self, names, trajectory=None, recursive=False):
        self._prepare_overwrite()
        self._journal.append(('delete', trajectory._name, list(names), recursive))
        self._journal.sync()

    def flush(self, *args, **kwargs):
        """Make what the journal holds durable now (fsync); the next checkpoint folds it."""
        self._journal.sync()

    def close(self, *args, **kwargs):
        """Release the journal; what it holds is folded at the next checkpoint or load."""
        self._journal.close()

    # -- loading -----------------------------------------------------------------------------
    def _load_state(self, name=None, index=None, data=True, force=False, rows=None, skip=(),
                    lazy_runs=False):
        """A trajectory's whole plain-data state: the main file's metadata, the rows of its
        segments (newest first wins; `rows`, {template: run indices or None for all}, loads
        only those) and the journal's records not yet folded in. `lazy_runs`: where a
        backend can, the runs' timestamps, SHA-1s and errors are read only when asked for
        (state['runs_loader'], for _RunTable.from_plain)."""
        state = self._snapshot(functools.partial(self._read_snapshot, name, index, data, rows,
                                                 skip, lazy_runs))
        for full_name in itertools.chain(state['nodes'], state.get('columns', ())):
            _check_stored_name(full_name, 'node name', self.filename)
        return state

    def _snapshot(self, read):
        """read() of the main file, its segments and the journal as one state. A checkpoint
        in another process may replace the main file (and start a new journal) between
        reading that and the journal: the journal's runs would then count as completed
        without the rows only the new main file lists, or a trajectory it just folded be
        in neither. So the read (or its error) counts only if the main file stayed the
        same throughout; from the third try on it is made under the folder's shared lock,
        which a checkpoint takes exclusively (where there is no flock: tries alone)."""
        for attempt in range(5):
            stamp = _file_stamp(self.filename)
            try:
                with _FolderLock(self._journal.path, shared=True) if attempt >= 2 else \
                        contextlib.nullcontext():
                    got = read()
            except Exception:
                if attempt == 4 or _file_stamp(self.filename) == stamp:
                    raise
                continue
            if _file_stamp(self.filename) == stamp:
                break
        return got

    def _read_snapshot(self, name, index, data, rows, skip, lazy_runs):
        if not os.path.exists(self.filename) and not os.path.exists(self._journal.path):
            raise DataNotInStorageError('cannot load: %s does not exist' % self.filename)
        names = self.list_trajectories()
        if name is None:
            if not names:
                raise DataNotInStorageError('%s holds no trajectory' % self.filename)
            try:
                name = names[-1 if index is None else index]
            except (IndexError, TypeError):
                raise DataNotInStorageError('%s holds %d trajectories; index %r is out of '
                                            'range' % (self.filename, len(names), index)) \
                    from None
        if name not in names:
            timed = [n for n in names if re.fullmatch(re.escape(name) + r'_\d{4}_.*', n)]
            raise DataNotInStorageError('%s holds no trajectory %r; it holds %s%s'
                                        % (self.filename, name, names, timed and (
                                            ' (add_time=True appended the time to the name: '
                                            'load with name=%r, or index=-1 for the newest)'
                                            % timed[-1])))
        states, kinds, counts = {}, set(), [0, 0]
        known = os.path.exists(self.filename) and name in self._list_names()
        if known:
            states[name] = self._read_state(name, data, rows, skip, lazy_runs)
            paths = states[name].pop('runs_pending', None)
            if paths and os.path.exists(self._journal.path):  # (its records come after)
                self._runs_flush(states[name], paths)
            elif paths:
                states[name]['runs_loader'] = functools.partial(self._runs_later, paths)

        def noting(records):  # (the kinds of record seen: streamed, not held)
            for record in records:
                kinds.add(record[0])
                yield record
        _apply_records(states, noting(self._journal_records(name, counts)))
        if not known and 'traj' not in kinds and counts[1]:
            raise StorageError(_undescribed_text(self, name))
        return states[name]

    def _read_state(self, name, data, rows=None, skip=(), lazy_runs=False):
        """(`skip`: branches whose run columns are not read at all.)"""
        if skip:
            rows = _RowsSkipping(rows, skip)
        meta = self._read_main(name, data, rows)
        if lazy_runs:  # (a backend's _segment_read lists here the segments it put off)
            meta['runs_pending'] = []
        legacy = meta.pop('legacy', None)
        if legacy is not None:  # format 2: the main file holds rows itself
            meta['columns'], meta['runs'] = legacy['columns'], legacy['runs']
        tombs = meta.get('tombs') or {}
        for seg, seq in meta.get('segments', ()):
            self._segment_read(meta, os.path.join(self.segment_folder, seg), seq, tombs,
                               data, rows)
        _runs_length(meta['runs'], meta['length'])
        return meta

    def _fast_values(self, name, item):
        """{run index: value} of the run leaves named `item` (results.runs.run_X.<item>,
        else derived_parameters...) read a column at a time, for f_get_from_runs(...,
        fast_access=True, auto_load=True); None where a leaf has more than its one item
        or another class than Result/Parameter (then the nodes are made as usual)."""
        return self._snapshot(functools.partial(self._read_fast_values, name, item))

    def _read_fast_values(self, name, item):
        if not os.path.exists(self.filename) or name not in self._list_names():
            return None
        meta = self._read_main(name, set())
        if 'legacy' in meta:
            return None
        read = {}  # template -> [(run indices, values) of each segment]
        for branch in _RUN_BRANCHES:
            template = branch + '.runs.$.' + item
            parts = read[template] = []
            if template not in meta['templates']:
                continue
            for seg, seq in meta['segments']:
                got = self._segment_column(os.path.join(self.segment_folder, seg), template)
                if got is None:
                    return None
                parts.append((got, seq))
        records = list(self._journal_records(name))
        filled = [t for t, parts in read.items() if any(len(got[0]) for got, _ in parts)]
        if not records and len(filled) <= 1 and not meta['tombs'].get(
                filled[0] if filled else None) and _ascending(read[filled[0]] if filled else ()):
            # (a sweep's column: its segments hold ascending runs, one after the other;
            # numbers stay in one C array until they are asked for)
            parts = [got for got, _ in read[filled[0]]] if filled else []
            idxs = array.array('q')
            for i, _ in parts:
                idxs.frombytes(i.astype('=i8').tobytes()) if hasattr(i, 'dtype') else \
                    idxs.extend(i)
            arrays = [v for _, v in parts if hasattr(v, 'dtype')]
            if len(arrays) == len(parts) and len({a.dtype for a in arrays}) == 1:
                return idxs, arrays[0] if len(arrays) == 1 else \
                    _require('numpy').concatenate(arrays)
            return idxs, [x for _, v in parts for x in _py_values(v)]
        found = {}  # template -> {run index: value}
        for template, parts in read.items():
            out = found[template] = {}
            tomb = meta['tombs'].get(template, {})
            for got, seq in parts:
                got = (_py_values(got[0]), _py_values(got[1]))
                if not tomb:
                    out.update(zip(*got))
                    continue
                for idx, value in zip(*got):
                    if max(tomb.get(idx, -1), tomb.get(_ALL, -1)) <= seq:
                        out[idx] = value
        for record in records:  # (not folded in yet)
            kind = record[0]
            if kind in ('run', 'leaf'):
                leaves = record[4] if kind == 'run' else [record[2:7]]
                keep = kind == 'leaf' and not record[7]  # (STORE_DATA keeps a stored row)
                for full_name, tag, _, data, ann in leaves:
                    split = _split_run(full_name)
                    if split and split[0] in found:
                        if ann or tag not in ('Result', 'Parameter') or len(data or ()) != 1:
                            return None
                        if not (keep and split[1] in found[split[0]]):
                            found[split[0]][split[1]] = next(iter(data.values()))
            elif kind == 'delete':
                for full_name in record[2]:
                    split = _split_run(full_name)
                    if split and split[0] in found:
                        found[split[0]].pop(split[1], None)
                    elif record[3] and any(w.startswith(full_name + '.') or
                                           split and w.startswith(split[0] + '.')
                                           for w in found):
                        return None  # (a group deleted with what is below it)
        out = {}
        for template in reversed(list(found)):  # (results win, as in f_get_from_runs)
            out.update(found[template])
        idxs = sorted(out)
        return idxs, [out[i] for i in idxs]

    def copy_to(self, path):
        """Copy the file and its segments to `path` (and `path`.segments), after a
        checkpoint: a backup, or a copy to send elsewhere."""
        import shutil
        self.checkpoint()
        with _FolderLock(self._journal.path, shared=False):
            if os.path.isdir(self.segment_folder):  # the segments first, the main file last
                shutil.copytree(self.segment_folder, path + '.segments', dirs_exist_ok=True)
            _atomic_write(path, lambda tmp: shutil.copyfile(self.filename, tmp))

    def _keep_stored_items(self, traj, node, data, replace):
        """A run's leaf stored with pypet's overwrite=[items]: it is one row of a column,
        replaced whole, so the stored items the list does not name are read and kept."""
        try:
            stored = self._load_list(traj, names=[node._full_name]).get(node._full_name)
        except DataNotInStorageError:
            stored = None
        if stored is None or stored[0] != _class_tag(type(node)) or not stored[3]:
            return data
        return dict(data, **{k: v for k, v in stored[3].items() if k not in replace})

    def _load_list(self, traj, names=(), recursive=True):
        """Items by full name, reading of the run columns only the rows asked for."""
        name = traj._name
        templates = set()
        if os.path.exists(self.filename) and name in self._list_names():
            meta = self._read_main(name, set())
            templates = set(meta.get('templates') or ()) | set(
                (meta.get('legacy') or {}).get('columns') or ())
        rows = {}
        for full_name in names:
            split = _split_run(full_name)
            head, idx = split if split is not None else (full_name, None)
            for template in templates:
                plain = template.replace('.$set.', '.')  # (pypet's run sets, see there)
                if template == head or (recursive and template.startswith(head + '.')) or \
                        plain == head or (recursive and plain.startswith(head + '.')):
                    if idx is None:
                        rows[template] = None
                    elif rows.get(template, ()) is not None:
                        rows.setdefault(template, set()).add(idx)
        state = self._load_state(name, data=True, rows=rows)
        return _items_from_state(state, names, recursive, self.filename)

    def delete_trajectory(self, name):
        """Remove a whole trajectory (and its segments) from the file."""
        self.checkpoint()
        if name not in self.list_trajectories():
            raise DataNotInStorageError('%s holds no trajectory %r' % (self.filename, name))
        with _FolderLock(self._journal.path, shared=False):
            fold = _Fold(self)
            fold.finish('', drop=(name,))

    def list_trajectories(self):
        """Names of the trajectories in the file, oldest first."""
        names = self._list_names() if os.path.exists(self.filename) else []
        for record in self._journal_records():
            if record[1] not in names:
                names.append(record[1])
        for name in names:
            _check_stored_name(name, 'trajectory name', self.filename)
        return names

    def _legacy_names(self):
        """Trajectories whose rows the main file itself holds (format 2): moved into
        segments at the next checkpoint."""
        return []

    def _stored_runs(self, meta):
        """{run index: finish timestamp} of the runs a trajectory's segments hold."""
        state = {'runs': _RunTable(0).to_plain(), 'columns': {}, 'length': 0}
        tombs = meta.get('tombs') or {}
        for seg, seq in meta.get('segments', ()):
            self._segment_read(state, os.path.join(self.segment_folder, seg), seq, tombs,
                               set(), {})
        finish = state['runs']['finish_timestamp']
        done = state['runs']['completed']
        return {i: f for i, f in enumerate(finish) if f or done[i]}

    # -- backend hooks -----------------------------------------------------------------------
    def _list_names(self):
        raise NotImplementedError

    def _folded_marker(self):
        raise NotImplementedError

    def _read_main(self, name, data=True, rows=None):
        raise NotImplementedError

    def _write_main(self, metas, folded, drop=(), ready=None):
        """Replace the main file; ready() is called once the new one is written, before
        it replaces the old one (what it lists must be on disk first)."""
        raise NotImplementedError

    def _segment_open(self, segment):
        raise NotImplementedError

    def _segment_append(self, segment, rows, info):
        raise NotImplementedError

    def _segment_close(self, segment):
        raise NotImplementedError

    def _segment_read(self, state, path, seq, tombs, data, rows):
        raise NotImplementedError

    def _segment_idx(self, path, template):
        raise NotImplementedError

    def _segment_names(self):
        """The names of the segments the main file lists (of every trajectory)."""
        raise NotImplementedError

    def _segment_column(self, path, template):
        """(run indices, values) of a column whose every row is one item of a Result or
        Parameter, else None."""
        raise NotImplementedError


# A stored name as _check_name accepts it (dotted for a node's full name); the
# trajectory name becomes a file name (its .cnt, logs), so a crafted '../../x' must
# never pass. ($ and $set: a run in a column's template)
_STORED_PART = r'(?:\$|\$set|(?!f_|v_|__|_[cfgipv]_)[A-Za-z0-9_-]{1,4096})'
_STORED_NAME_RE = re.compile(r'%s(?:\.%s)*' % (_STORED_PART, _STORED_PART))


# ============================================================================================
# Segments and folds - runs written as they come
# ============================================================================================
def _undescribed_text(service, name):
    """The error of a trajectory whose runs are journalled but not the trajectory itself."""
    return ('%s: the journal %s holds runs of trajectory %r but not the record of the '
            'trajectory itself (its parameters and exploration, journalled before the runs): '
            'that record is damaged, so the runs cannot be placed, and nothing is loaded or '
            'written. Restore the file and its journal from a backup, or run the sweep again '
            '(overwrite_file=True, or another file)'
            % (service.filename, service._journal.path, name))


def _check_stored_name(name, what, filename):
    """Refuse a name read from a file that code could not have given (a crafted file)."""
    if type(name) is not str or not _STORED_NAME_RE.fullmatch(name) or (
            what == 'trajectory name' and not _NAME_RE.fullmatch(name)):
        raise StorageError('%s is damaged or crafted: it holds the %s %s, which minipypet '
                           'never writes (names are letters, digits, "_" and "-"); it is not '
                           'loaded' % (filename, what, _short_repr(name, 80)))


def _py_values(values):
    """A column's values as Python objects (a numpy array of numbers: its tolist())."""
    return values.tolist() if hasattr(values, 'dtype') else values


def _ascending(parts):
    """Whether [((run indices, values), seq)] hold ascending run indices throughout."""
    last = -1
    for (idxs, _), _ in parts:
        if not len(idxs):
            continue
        if hasattr(idxs, 'dtype'):  # (a numpy array: checked at C speed)
            if idxs[0] <= last or (len(idxs) > 1 and not (idxs[1:] > idxs[:-1]).all()):
                return False
        elif idxs[0] <= last or any(a >= b for a, b in zip(idxs, idxs[1:])):
            return False
        last = idxs[-1]
    return True


class _RowsSkipping(dict):
    """A `rows` filter (see _FileService._load_state) that holds every column except
    those of the given branches."""

    def __init__(self, rows, skip):
        super().__init__(rows or {})
        self.all, self.skip = rows is None, tuple(b + '.' for b in skip)

    def __contains__(self, template):
        return not template.startswith(self.skip) and (
            self.all or super().__contains__(template))

    def __getitem__(self, template):
        return None if self.all else super().__getitem__(template)

    def get(self, template, default=None):
        return self[template] if template in self else default


def _runs_length(runs, n):
    """Pad (with blank runs) or cut a state's run information to n runs."""
    for field, blank in zip(_RunTable.FIELDS, _RunTable.BLANK):
        column = runs[field]
        if len(column) < n:
            _extend_blank(column, n - len(column), blank)
        else:
            del column[n:]


def _extend_blank(column, k, blank):
    """Append k blank runs to a run-information column (C doubles, bytes or a list)."""
    if isinstance(column, array.array):
        column.frombytes(bytes(column.itemsize * k))
    elif isinstance(column, bytearray):
        column.extend(bytes(k))
    else:
        column.extend([blank] * k)


# Run rows are buffered up to this many bytes, then appended to the segment being written:
# a sweep's checkpoint holds about this much run data in memory, however big the sweep.
_SEGMENT_BUDGET = 32 << 20
_SEGMENT_ROWS = 1 << 13  # (a scalar row costs ~500 bytes buffered: so few rows at a time)
_RUNS_BLOCK = 1 << 17  # runs' information read at a time
_ALL = -1  # a tombstone's run index that stands for every run of a column


class _SegmentSplit(Exception):
    """Raised by a backend's _segment_append when a batch cannot go into the segment being
    written (a column's dtype or shape changed): the batch starts a new segment."""


def _row_bytes(row):
    """About what a run row costs in memory (for the batch budget): a row's tuple, dict
    and its run's information take ~400 bytes in CPython, plus the values."""
    size = 400
    for value in (row[3] or {}).values():
        if type(value) in _NUMBER_TYPES:  # (a scalar result: nearly every row)
            size += 132
            continue
        nbytes = getattr(value, 'nbytes', None)
        size += 100 + (nbytes if nbytes is not None else (
            len(value) if type(value) in (str, bytes) else
            8 * len(value) + 64 if isinstance(value, (list, tuple, dict)) else 32))
    return size


_NOT_FULL = re.compile(b'[^\xff]')  # (a byte of a _Bits not all set)


class _Bits:
    """A set of run indices as a bitmap: 1M runs in 125 KB."""

    __slots__ = ('bits', 'count')

    def __init__(self):
        self.bits, self.count = bytearray(), 0

    def add(self, idx):
        byte = idx >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits) + (len(self.bits) >> 1)))
        mask = 1 << (idx & 7)
        if not self.bits[byte] & mask:
            self.bits[byte] |= mask
            self.count += 1

    def __contains__(self, idx):
        byte = idx >> 3
        return 0 <= byte < len(self.bits) and bool(self.bits[byte] & (1 << (idx & 7)))

    def update(self, idxs):
        """Add unique indices (a dict's keys: a batch of runs); a span lo..hi of them, as
        a sweep's batches are, is set at C speed."""
        n = len(idxs)
        lo = min(idxs) if n > 16 else -1
        if lo < 0 or max(idxs) - lo + 1 != n:
            for idx in idxs:
                self.add(idx)
            return
        old, span = int.from_bytes(self.bits, 'little'), ((1 << n) - 1) << lo
        self.count += n - bin(old & span).count('1')
        self.bits = bytearray((old | span).to_bytes(max(len(self.bits), (lo + n + 7) >> 3),
                                                    'little'))

    def missing(self, n):
        """The indices below n not held, in order: the bytes of eight held ones are
        skipped at C speed (at a sweep's end all but a few are held)."""
        nbytes = (n + 7) >> 3
        bits = bytes(self.bits[:nbytes]).ljust(nbytes, b'\0')
        out = []
        for m in _NOT_FULL.finditer(bits):
            byte = m.start()
            value = bits[byte]
            out.extend(i for i in range(byte << 3, min((byte + 1) << 3, n))
                       if not value & (1 << (i & 7)))
        return out

    def union(self, other):
        n = max(len(self.bits), len(other.bits))
        merged = int.from_bytes(self.bits, 'little') | int.from_bytes(other.bits, 'little')
        self.bits = bytearray(merged.to_bytes(n, 'little'))
        self.count = bin(merged).count('1')

    def discard(self, idx):
        if idx in self:
            self.bits[idx >> 3] &= ~(1 << (idx & 7)) & 0xFF
            self.count -= 1

    def bounds(self):
        """(lowest, highest) run index held (None if empty)."""
        bits = self.bits
        lo = next((i for i, b in enumerate(bits) if b), None)
        if lo is None:
            return None
        hi = len(bits) - 1 - next(i for i, b in enumerate(reversed(bits)) if b)
        low = (lo << 3) + ((bits[lo] & -bits[lo]).bit_length() - 1)
        return low, (hi << 3) + bits[hi].bit_length() - 1


class _Segment:
    """A segment being written: run rows and run information of one trajectory. They are
    buffered up to _SEGMENT_BUDGET bytes, then appended to a temporary file, which
    close() syncs and moves into the segment folder under its final name. Once there,
    the file is never changed again."""

    def __init__(self, fold, meta, seq):
        self.fold, self.service, self.meta, self.seq = fold, fold.service, meta, seq
        self.rows, self.info, self.size = {}, {}, 0
        self.written, self.info_written = {}, _Bits()  # (template -> _Bits)
        self.first = {}  # template -> (run index, row) of the first row written
        self.handle = None
        safe = re.sub(r'[^A-Za-z0-9_-]', '_', meta['name'])[:64]
        self.name = '%s_%06d_%s%s' % (safe, seq, os.urandom(4).hex(), self.service.SUFFIX)
        self.path = os.path.join(self.service.segment_folder, self.name)
        self.tmp = self.path + '.tmp'

    def __getstate__(self):
        return dict(self.__dict__, fold=None, service=None)  # (see _Fold.__getstate__)

    def has(self, template, idx):
        rows = self.rows.get(template)
        if rows is not None and idx in rows:
            return True
        written = self.written.get(template)
        return written is not None and idx in written

    def add(self, template, idx, row):
        written = self.written.get(template)
        if written is not None and idx in written:  # (never two rows of a run in a segment)
            self.fold.split(self.meta['name']).add(template, idx, row)
            return
        rows = self.rows.get(template)
        if rows is None:
            rows = self.rows[template] = {}
        rows[idx] = row
        self.size += _row_bytes(row)
        if self.size >= _SEGMENT_BUDGET or len(rows) >= _SEGMENT_ROWS:
            self.flush()

    def add_info(self, idx, info):
        self.info[idx] = info  # (info_written takes the batch's at flush: see memory)
        self.size += 150
        if len(self.info) >= _SEGMENT_ROWS:
            self.flush()

    def drop(self, template, idx):
        """Forget a buffered row (every row of the column for _ALL). False if such a row is
        in the file already: then the caller closes this segment and starts another."""
        rows = self.rows.get(template)
        if rows:
            if idx == _ALL:
                rows.clear()
            else:
                rows.pop(idx, None)
        written = self.written.get(template)
        return written is None or (written.count == 0 if idx == _ALL else idx not in written)

    def flush(self):
        if not self.rows and not self.info:
            return
        if self.handle is None:
            os.makedirs(self.service.segment_folder, exist_ok=True)
            self.handle = self.service._segment_open(self)
        rows = {t: r for t, r in self.rows.items() if r}
        try:
            self.service._segment_append(self, rows, self.info)
        except _SegmentSplit:
            self.fold.split(self.meta['name']).flush()
            return
        for template, trows in rows.items():
            written = self.written.get(template)
            if written is None:
                written = self.written[template] = _Bits()
                first = min(trows)
                self.first[template] = (first, trows[first])
            written.update(trows)
        self.info_written.update(self.info)
        self.rows, self.info, self.size = {}, {}, 0

    def close(self):
        """Write out what is buffered; make the file durable under its final name.
        Returns False if the segment holds nothing (no file is left)."""
        self.flush()
        if self.handle is None:
            return False
        self.service._segment_close(self, self.handle)  # (if it fails, abort closes it)
        self.handle = None
        self.fold.make_durable(self.tmp, self.path)
        return True

    def abort(self):
        handle, self.handle = self.handle, None
        if os.path.exists(self.tmp):
            # emptied first: its space comes back at once, so closing it (which writes
            # metadata) succeeds on a full disk rather than leaving it open unlinked
            os.truncate(self.tmp, 0)
        if handle is not None:
            try:
                handle.close()
            except Exception:  # (closing a file a full disk broke: the temp file goes)
                pass
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def _disk_error_text(path, error=None):
    """What went wrong writing near `path`: the disk named as full where it is (ENOSPC),
    and a file grown to the largest size allowed (EFBIG) as that."""
    import errno
    code = getattr(error, 'errno', None)
    if code == errno.EFBIG or error is None and _at_size_limit(path):
        return ('the file reached the largest size allowed (EFBIG: the file-size limit of '
                'this process, ulimit -f, or the largest file of its file system)')
    full = code in (errno.ENOSPC, errno.EDQUOT)
    if not full:
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(path)))
            full = st.f_bavail * st.f_frsize < (1 << 20)
        except (OSError, AttributeError):
            pass
    if full:
        return 'the disk is full (ENOSPC)'
    text = '%s: %s' % (type(error).__name__, error) if error is not None else \
        'a short write (the disk is full?)'
    limit = _size_limit()
    if limit is not None and not isinstance(error, OSError):  # (HDF5's own errors)
        text += (' (this process may write files of at most %d bytes, ulimit -f: EFBIG if '
                 'the file reached that)' % limit)
    return text


def _size_limit():
    """The largest file this process may write (RLIMIT_FSIZE), or None: unlimited."""
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, AttributeError, ValueError, OSError):
        return None
    return None if limit == resource.RLIM_INFINITY else limit


def _at_size_limit(path):
    """True if `path` is as large as this process may make a file (RLIMIT_FSIZE): a
    write beyond it is cut short without an error."""
    limit = _size_limit()
    try:
        return limit is not None and os.path.getsize(path) >= limit
    except OSError:
        return False


def _disk_fix(cause):
    """What to do about _disk_error_text's `cause` before a resume."""
    if 'EFBIG' in cause:
        return 'Raise that limit (or use a file system that holds larger files)'
    return 'Free some space' if 'ENOSPC' in cause or 'full' in cause else 'Mend that'


def _files_stamp(service):
    """The stamps of a file service's main file and journal (None: another service)."""
    if not isinstance(service, _FileService):
        return None
    return _file_stamp(service.filename), _file_stamp(service._journal.path)


def _file_stamp(path):
    """(inode, modification time, size) of a file (a path or an open descriptor), or ()
    where there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _sync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Fold:
    """One checkpoint. Journal records (and an in-memory trajectory) fold into each
    trajectory's metadata (nodes, explored ranges, length: small) and into new segments
    (run rows and run information, streamed); finish() writes the main file."""

    def __init__(self, service):
        self.service = service
        self.metas, self.segments, self.shapes = {}, {}, {}
        self.stored, self.said = {}, set()
        self.prior, self.closed, self.tombed = {}, {}, set()
        self.plain = {}  # name -> columns no other column conflicts with (see row)
        self.tails = {}  # 'z' -> 'results.runs.$.z' (see record)
        # (a fold made as records come: the journal's id, the end of its last record)
        self.jid, self.end, self.broken = None, None, False
        self.stamp = None  # the main file as it was when its metadata was first read
        self.syncing = []  # threads syncing closed segments (see make_durable)
        # trajectories neither the file nor a record has described: where the journal was
        # damaged (damaged bytes skipped), that record was lost and their runs cannot be placed
        self.unknown, self.damaged = set(), 0

    # -- per trajectory ----------------------------------------------------------------------
    def meta(self, name):
        meta = self.metas.get(name)
        if meta is None:
            if self.stamp is None:
                self.stamp = _file_stamp(self.service.filename)
            exists = os.path.exists(self.service.filename) and \
                name in self.service._list_names()
            meta = self.service._read_main(name, True) if exists else _new_meta(name)
            if not exists:  # (until its 'traj' record, or the state in memory, comes)
                self.unknown.add(name)
            self.metas[name] = meta
            self.prior[name] = len(meta['segments'])
            legacy = meta.pop('legacy', None)
            if legacy is not None:  # format 2: the main file held the rows; now segments do
                self._legacy(name, meta, legacy)
        return meta

    def _legacy(self, name, meta, legacy):
        runs = legacy['runs']
        for idx in range(len(runs['completed'])):
            info = tuple(runs[f][idx] for f in _RunTable.FIELDS)
            if info != _RunTable.BLANK:
                self.segment(name).add_info(idx, info)
        for template, rows in legacy['columns'].items():
            self.known(meta).add(template)
            for idx, row in rows.items():
                self.segment(name).add(template, idx, row)

    def segment(self, name):
        segment = self.segments.get(name)
        if segment is None:
            meta = self.metas[name]
            segment = self.segments[name] = _Segment(self, meta, meta['seq'])
            meta['seq'] += 1
        return segment

    def split(self, name):
        """Close the segment being written and start the next one."""
        old = self.segments.pop(name)
        rows, info = old.rows, old.info
        old.rows, old.info = {}, {}
        self._close(name, old)
        self.durable()  # (under its final name now: the rest of the fold may read it)
        new = self.segment(name)
        new.rows, new.info = rows, info
        return new

    def _close(self, name, segment):
        if segment.close():
            self.metas[name]['segments'].append([segment.name, segment.seq])
            self.closed.setdefault(name, []).append(segment)
            for template, written in segment.written.items():
                bits = self.stored.get((name, template))
                if bits is not None:
                    bits.union(written)

    def known(self, meta):
        """The run columns (templates) a trajectory holds in any segment or this fold."""
        return meta.setdefault('templates', set())

    def stored_bits(self, name, template):
        """The run indices of a column in the segments written before (read once), and
        in those this fold has closed."""
        bits = self.stored.get((name, template))
        if bits is None:
            bits = self.stored[name, template] = _Bits()
            meta = self.metas[name]
            tomb = (meta.get('tombs') or {}).get(template, {})
            for seg, seq in meta['segments'][:self.prior[name]]:
                if tomb.get(_ALL, -1) > seq:
                    continue
                for idx in self.service._segment_idx(
                        os.path.join(self.service.segment_folder, seg), template):
                    if tomb.get(idx, -1) <= seq:
                        bits.add(idx)
            for segment in self.closed.get(name, ()):
                written = segment.written.get(template)
                if written is not None:
                    bits.union(written)
        return bits

    def has(self, name, template, idx):
        segment = self.segments.get(name)
        return (segment is not None and segment.has(template, idx)) or \
            idx in self.stored_bits(name, template)

    # -- records -----------------------------------------------------------------------------
    def record(self, record):
        kind, name = record[0], record[1]
        meta = self.metas.get(name) or self.meta(name)
        if kind == 'run':  # (nearly all of them)
            idx, info, leaves = record[2:5]  # (_RunRecord fields; read back: a tuple)
            if len(record) > 5 and record[5]:  # (the run's links; older records have none)
                _state_put_links(meta, record[5])
            segment = self.segments.get(name) or self.segment(name)
            segment.add_info(idx, info)
            if idx >= meta['length']:
                meta['length'] = idx + 1
            plain, tails, run = self.plain.get(name), self.tails, None
            for full_name, tag, comment, data, ann in leaves:
                # (most are results.runs.run_X.<name>: their column found by the name)
                if run is None:
                    run = 'results.runs.%s.' % (FORMATTED_RUN_NAME % idx)
                tail = full_name[len(run):] if full_name.startswith(run) else None
                template = tails.get(tail)
                if template is not None:
                    split = template, idx
                else:
                    split = _leaf_split(_split_run(full_name))
                    if tail is not None and split is not None and \
                            split[0] == 'results.runs.$.' + tail:
                        tails[tail] = split[0]
                if split is None:
                    _state_put_leaf(meta, full_name, tag, comment, data, ann)
                elif plain is not None and split[0] in plain and data is not None:
                    segment = self.segments[name]  # (an add before may have started another)
                    segment.add(split[0], idx, (tag, comment, ann, data))
                else:
                    self.row(name, split[0], split[1], (tag, comment, ann, data), True)
        elif kind == 'leaf':
            _, _, full_name, tag, comment, data, ann, overwrite = record
            split = _leaf_split(_split_run(full_name))
            if split is None:
                _apply_record(meta, record, self.shapes.setdefault(name, {}))
            else:
                self.row(name, split[0], split[1], (tag, comment, ann, data), overwrite)
        elif kind == 'delete':
            _, _, names, recursive = record
            _state_delete(meta, names, recursive)
            self.delete_rows(name, names, recursive)
        elif kind == 'traj':
            self.memory(*record[2:])
        else:
            _apply_record(meta, record, self.shapes.setdefault(name, {}))

    def row(self, name, template, idx, row, overwrite):
        """A run row; newest wins, except that STORE_DATA (overwrite False) keeps a
        stored row and an empty leaf never replaces stored data."""
        meta = self.metas[name]
        known = self.known(meta)
        if template not in known:
            known.add(template)
            self.shapes.pop((name, 'conflicts'), None)
            self.plain.pop(name, None)
        conflicts = self.conflicts(name, template)
        if not conflicts:  # (the run records' fast path: see record)
            self.plain.setdefault(name, set()).add(template)
        for other in conflicts:
            if self.has(name, other, idx):
                if (template, other) not in self.said:
                    self.said.add((template, other))
                    _say_once('%s is stored again with %s, so the %s stored before is '
                              'dropped (in every run stored again so): a node cannot be both '
                              'a leaf and a group' % (_run_name(idx), _join_run(template, idx),
                                                      _join_run(other, idx)), remember=False)
                self.hide(name, other, idx)
        if (not overwrite or row[3] is None) and self.has(name, template, idx):
            return
        self.segment(name).add(template, idx, row)

    def conflicts(self, name, template):
        """The columns that cannot hold a run together with `template` (z and z.mean)."""
        cache = self.shapes.setdefault((name, 'conflicts'), {})
        found = cache.get(template)
        if found is None:
            found = cache[template] = [
                t for t in self.known(self.metas[name]) if t != template and (
                    t.startswith(template + '.') or template.startswith(t + '.'))]
        return found

    def hide(self, name, template, idx):
        """Drop a run's row of a column (idx _ALL: every row): from the buffer, and from
        the segments written before by a tombstone."""
        segment = self.segment(name)
        if not segment.drop(template, idx):
            segment = self.split(name)
        tombs = self.metas[name].setdefault('tombs', {})
        tombs.setdefault(template, {})[idx] = segment.seq
        self.tombed.add((name, template))
        bits = self.stored.get((name, template))
        if bits is not None:
            if idx == _ALL:
                self.stored[name, template] = _Bits()
            else:
                bits.discard(idx)

    def delete_rows(self, name, names, recursive):
        known = self.known(self.metas[name])
        for full_name in names:
            split = _split_run(full_name)
            if split is not None:
                template, idx = split
                for t in [t for t in known if t == template or
                          (recursive and t.startswith(template + '.'))]:
                    if self.has(name, t, idx):
                        self.hide(name, t, idx)
            elif recursive:
                for t in [t for t in known if t.startswith(full_name + '.')]:
                    self.hide(name, t, _ALL)
                    known.discard(t)
                    self.shapes.pop((name, 'conflicts'), None)
                    self.plain.pop(name, None)

    def memory(self, mem, store_data, only_init):
        """Fold an in-memory trajectory's state (see f_store's modes)."""
        name = mem['name']
        meta = self.meta(name)
        self.unknown.discard(name)
        _merge_memory(meta, dict(mem, columns={}, runs=None), store_data, only_init)
        if not only_init:
            overwrite = store_data >= OVERWRITE_DATA
            for template, rows in mem['columns'].items():
                for idx, row in rows.items():
                    self.row(name, template, idx, row, overwrite)
        runs = mem['runs']
        segment = self.segments.get(name)
        written = _Bits()
        if segment is not None:  # (the runs it wrote, and those buffered)
            written = segment.info_written
            written.update(segment.info)
        fresh = [i for i in written.missing(min(len(runs['completed']), mem['length']))
                 if runs['completed'][i] or runs['timestamp'][i]]
        if fresh:
            stored = self.service._stored_runs(meta) if meta['segments'] else {}
            for i in fresh:
                finish = runs['finish_timestamp'][i]
                if i not in stored or finish > stored[i]:
                    self.segment(name).add_info(i, tuple(runs[f][i] for f in _RunTable.FIELDS))

    # -- the end -----------------------------------------------------------------------------
    def finish(self, folded, drop=()):
        """Close the segments, then swap in the main file that lists them."""
        unknown = self.unknown - set(drop) if self.damaged else ()
        if unknown:
            raise StorageError(_undescribed_text(self.service, sorted(unknown)[0]))
        for name in self.service._legacy_names():
            if name not in drop:
                self.meta(name)
        self.close_segments()
        for name, meta in self.metas.items():
            meta['columns_info'] = self.columns_info(name, meta)
        self.service._write_main(self.metas, folded, drop, ready=self.durable)
        if self.syncing:  # (a backend's _write_main that never called ready())
            self.durable()
            raise StorageError('%s._write_main did not call ready() before replacing the '
                               'main file; a crash then could lose the segments it lists'
                               % type(self.service).__name__)
        self.collect(drop)

    def close_segments(self):
        """Write out and close the segments being written (listed in the metadata)."""
        for name in list(self.segments):
            while self.segments.get(name) is not None:  # (a close may start another)
                segment = self.segments[name]
                self._close(name, segment)
                if self.segments.get(name) is segment:
                    del self.segments[name]

    def __getstate__(self):
        """(Handed to another process once its segments are closed: _hand_over.)"""
        return dict(self.__dict__, service=None, syncing=[])

    def make_durable(self, tmp, path):
        """fsync a closed segment, rename it to its final name and fsync the folder, in
        a thread: the fsyncs wait on the disk (~2 ms each, without the GIL) while the
        main file is written, and the main file's rename waits for them (durable()), so
        the order on disk is kept."""
        def sync():
            try:
                _sync_file(tmp)
                os.replace(tmp, path)
                _fsync_dir(path)
            except BaseException as exc:  # (re-raised by durable, in the folding thread)
                failed.append(exc)
        failed = []
        thread = threading.Thread(target=sync, name='minipypet-segment-sync', daemon=True)
        thread.start()
        self.syncing.append((thread, failed))

    def durable(self):
        """Wait until every closed segment is synced under its final name, and the
        segment folder too (before the main file that lists them replaces the old one)."""
        syncing, self.syncing = self.syncing, []
        for thread, _ in syncing:  # (all of them, before any failure is raised)
            thread.join()
        for _, failed in syncing:
            if failed:
                raise failed[0]

    def columns_info(self, name, meta):
        """{template: [first run index, number of runs, highest run index, first row]}
        for the summary tables (a row: (class, comment, annotations, data)). Runs
        appended beyond the highest index are counted as they come; otherwise (a run
        stored again, a row deleted) the indices are read from the segments."""
        known = self.known(meta)
        info = {t: list(v) for t, v in (meta.get('columns_info') or {}).items() if t in known}
        for segment in self.closed.get(name, ()):
            for template, written in segment.written.items():
                bounds = written.bounds()
                if bounds is None or template not in known:
                    continue
                idx, row = segment.first[template]
                old = info.get(template)
                if old is None:
                    info[template] = [idx, written.count, bounds[1], _row_brief(row)]
                    continue
                if (name, template) in self.tombed or bounds[0] <= old[2]:
                    old[1] = self.stored_bits(name, template).count
                else:
                    old[1] += written.count
                old[2] = max(old[2], bounds[1])
                if idx < old[0]:
                    old[0], old[3] = idx, _row_brief(row)
        for template in known:
            if (name, template) in self.tombed and template in info:
                info[template][1] = self.stored_bits(name, template).count
        return {t: v for t, v in info.items() if v[1]}

    def collect(self, drop):
        """Remove segment files no main file lists: left by a crash between a segment's
        rename and the main file's, temp files of a killed writer, and segments of dropped
        trajectories. (Under the exclusive folder lock: no other checkpoint is writing.)"""
        folder = self.service.segment_folder
        if not os.path.isdir(folder):
            return
        entries = os.listdir(folder)
        # The segments of the trajectories this fold wrote are known; the main file is read
        # again (~3 ms) only where the folder holds others (other trajectories', or debris).
        listed = {seg for name, meta in self.metas.items() if name not in drop
                  for seg, _ in meta['segments']}
        if any(entry not in listed for entry in entries):
            listed = self.service._segment_names()
        for entry in entries:
            if entry not in listed:
                try:
                    os.remove(os.path.join(folder, entry))
                except OSError:
                    pass

    def abort(self):
        for segment in self.segments.values():
            segment.abort()
        self.segments = {}
        for thread, _ in self.syncing:  # (a sync may still rename its segment, listed
            thread.join()  # nowhere: the next store collects it, as a crash's debris)
        self.syncing = []


def _row_brief(row):
    """What the summary tables keep of a column's first row: [class, comment, value]."""
    return [row[0], row[1], _value_summary(row[3])]


def _meta_store(meta):
    """The part of a trajectory's metadata that says where its runs are, as plain JSON."""
    return {'segments': meta['segments'], 'seq': meta['seq'],
            'tombs': {t: sorted(v.items()) for t, v in (meta.get('tombs') or {}).items()},
            'columns': meta['columns_info']}


def _meta_load(meta, stored):
    meta.update(segments=[list(s) for s in stored['segments']], seq=int(stored['seq']),
                tombs={t: {int(i): int(s) for i, s in v} for t, v in stored['tombs'].items()},
                columns_info={t: list(v) for t, v in stored['columns'].items()})
    meta['templates'] = set(meta['columns_info'])
    return meta


def _new_meta(name):
    meta = _new_state(name)
    meta.update(segments=[], tombs={}, seq=0, columns_info={})
    return meta


def _items_from_state(state, names, recursive, filename):
    """{full name: (class tag, comment, annotations, data)} of leaves named or below names;
    groups (on the path too) come as (':group', comment, annotations, None) and links as
    (':link', target's full name, None, None), before the leaves and after them."""
    out, links = {}, {}
    nodes = state['nodes']
    for full_name in names:
        prefix = full_name + '.'
        found = False
        parts = full_name.split('.')
        for i in range(1, len(parts) + 1):  # (pypet loads the groups on the way, too)
            head = '.'.join(parts[:i])
            rec = nodes.get(head)
            if rec is not None and rec['kind'] == 'group':
                out[head] = (':group', rec.get('comment', ''), rec.get('ann'), None)
                found = found or head == full_name
        rec = nodes.get(full_name)
        if rec is not None and rec['kind'] == 'link':
            links[full_name] = (':link', rec['target'], None, None)
            found = True
        if rec is not None and rec['kind'] == 'leaf':
            out[full_name] = (rec['class'], rec['comment'], rec['ann'], rec['data'])
            found = True
        for template, rows in state['columns'].items():
            sets = '$set' in template.split('.')  # (pypet's run sets: found without them)
            for idx, row in rows.items():
                fn = _join_run(template, idx)
                if fn == full_name or (recursive and fn.startswith(prefix)):
                    out[fn] = row
                    found = True
                elif sets:
                    plain = '.'.join(p for p in fn.split('.') if not _SET_RE.fullmatch(p))
                    if plain == full_name or (recursive and plain.startswith(prefix)):
                        out[fn] = row
                        found = True
        if rec is None or rec['kind'] == 'group':
            for key, rec2 in state['nodes'].items():
                if not recursive or not key.startswith(prefix):
                    continue
                if rec2['kind'] == 'leaf':
                    out[key] = (rec2['class'], rec2['comment'], rec2['ann'], rec2['data'])
                elif rec2['kind'] == 'group':
                    out[key] = (':group', rec2.get('comment', ''), rec2.get('ann'), None)
                else:
                    links[key] = (':link', rec2['target'], None, None)
                found = True
        if not found:
            raise DataNotInStorageError('%s is not stored in %s' % (full_name, filename))
    out.update(links)
    return out


# ============================================================================================
# Atomic files and checksums
# ============================================================================================
def _default_filename(filename, trajectory_name, suffix):
    """None -> ./hdf5/<traj>.hdf5; a folder ('./dir/') -> ./dir/<traj>.hdf5."""
    name = (trajectory_name or 'trajectory') + (suffix or '.hdf5')
    if filename is None:
        return os.path.join('.', 'hdf5', name)
    filename = os.fspath(filename)
    if filename.endswith(('/', os.sep)) or os.path.isdir(filename):
        return os.path.join(filename, name)
    return filename


def _file_mode(path):
    """The mode a plain open() would give (mkstemp makes 0600): the old file's, or by umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _check_writable(path):
    """Refuse to replace a file its owner write-protected (chmod 0444), as open() would, even
    for root (for whom os.access says yes) and although a rename needs only the folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not mode & 0o222:
        raise StorageError('%s is write-protected (mode %04o), so minipypet does not replace '
                           'or change it; make it writable (chmod u+w) to store into it, or '
                           'store into another file' % (path, mode & 0o7777))


def _atomic_write(path, write):
    """write(tmp_path) then fsync and rename over `path`: the file is old or new, never torn."""
    _check_writable(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stale = '.' + os.path.basename(path) + '.'
    for name in os.listdir(directory):  # left by a writer killed mid-write
        if name.startswith(stale) and name.endswith('.tmp') and _stale_tmp(
                os.path.join(directory, name), name[len(stale):]):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass
    # the writer's pid in the name: another process's temp file is never taken for stale
    fd, tmp = tempfile.mkstemp(prefix='%s%d-' % (stale, os.getpid()), suffix='.tmp',
                               dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode(path))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _stale_tmp(path, rest):
    """True for a temp file whose writer is gone: its pid (the name's '<pid>-') is no
    live process; a name without one (minipypet 0.3), once it is a minute old."""
    pid, dash, _ = rest.partition('-')
    if dash and pid.isdigit() and os.name == 'posix':  # (Windows' os.kill would kill it)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:  # (alive, another user's)
            return False
        return False
    try:
        return time.time() - os.stat(path).st_mtime > 60
    except OSError:
        return False


def _checksum_line(payload):
    """b'sha1 <hex>\\n' before a payload: read back, any change to it shows (_checked)."""
    return b'sha1 ' + hashlib.sha1(payload).hexdigest().encode('ascii') + b'\n'


def _checked(data, path, what):
    """The payload after a checksum line, once it matches; data without one (minipypet
    0.3) as it is."""
    if not data.startswith(b'sha1 '):
        return data
    line, _, payload = data.partition(b'\n')
    if line[5:] != hashlib.sha1(payload).hexdigest().encode('ascii'):
        raise StorageError('%s is damaged: the checksum of %s does not match its content '
                           '(changed or truncated after it was written)' % (path, what))
    return payload


# ============================================================================================
# Pickle backend
# ============================================================================================
class PickleStorageService(_FileService):
    """Stores trajectories with the stdlib only: a main pickle file of plain data (never
    of minipypet classes), rewritten atomically at checkpoints, plus segment files (a
    stream of pickled batches of run rows) and the journal between checkpoints."""

    MAGIC = b'MINIPYPET-PICKLE\n'
    SEGMENT_MAGIC = b'MINIPYPET-SEGMENT\n'
    BACKEND = 'pickle'
    SUFFIX = '.pkl'

    @classmethod
    def _claims(cls, head):
        return head.startswith(cls.MAGIC)

    def __init__(self, filename=None, **kwargs):
        super().__init__(filename, **kwargs)
        self._cache = None  # (inode, mtime, size, content) of the last file read

    def __getstate__(self):
        return dict(super().__getstate__(), _cache=None)  # never ship the file to workers

    def _read_file(self):
        try:
            st = os.stat(self.filename)
        except FileNotFoundError:
            return {'format': FORMAT_VERSION, 'order': [], 'trajectories': {}, 'folded': ''}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with open(self.filename, 'rb') as f:
            head = f.read(len(self.MAGIC))
            if head != self.MAGIC:
                raise StorageError('%s is not a minipypet pickle file (it does not start with '
                                   '%r)' % (self.filename, self.MAGIC))
            payload = f.read()
        payload = _checked(payload, self.filename, 'the file')
        try:
            content = _SafeUnpickler(io.BytesIO(payload)).load()
        except PickleRefusedError:
            raise
        except Exception as exc:
            raise StorageError('%s is damaged (truncated or corrupt): %s: %s'
                               % (self.filename, type(exc).__name__, exc)) from exc
        if not isinstance(content, dict) or not isinstance(content.get('trajectories'), dict) \
                or not isinstance(content.get('order'), list):
            raise StorageError('%s is damaged: it is not a minipypet pickle file'
                               % self.filename)
        if content.get('format', 0) > FORMAT_VERSION:
            raise VersionMismatchError('%s was written in file format %s by a newer minipypet; '
                                       'this version (%s) reads format %d and older'
                                       % (self.filename, content['format'], __version__,
                                          FORMAT_VERSION))
        self._cache = (key, content)
        return content

    def _list_names(self):
        return list(self._read_file()['order'])

    def _folded_marker(self):
        return self._read_file().get('folded', '')

    def _legacy_names(self):
        if not os.path.exists(self.filename):
            return []
        content = self._read_file()
        return [n for n in content['order'] if 'segments' not in content['trajectories'][n]]

    def _read_main(self, name, data=True, rows=None):
        old = self._read_file()['trajectories'][name]
        meta = dict(old, nodes=dict(old['nodes']), columns={}, runs=_RunTable(0).to_plain())
        if 'segments' not in old:  # format 2: the rows are in the main file
            meta['legacy'] = {'columns': {t: dict(r) for t, r in old['columns'].items()
                                          if rows is None or t in rows},
                              'runs': {f: list(v) for f, v in old['runs'].items()}}
            meta.update(segments=[], tombs={}, seq=0, columns_info={})
        meta['segments'] = [list(s) for s in meta['segments']]
        meta['tombs'] = {t: dict(v) for t, v in meta['tombs'].items()}
        meta['columns_info'] = {t: list(v) for t, v in meta['columns_info'].items()}
        meta['templates'] = set(meta['columns_info'])
        return meta

    def _write_main(self, metas, folded, drop=(), ready=None):
        content = self._read_file()
        trajectories = {k: v for k, v in content['trajectories'].items() if k not in drop}
        order = [n for n in content['order'] if n not in drop]
        for name, meta in metas.items():
            if name in drop:
                continue
            trajectories[name] = {k: v for k, v in meta.items() if k not in (
                'columns', 'runs', 'templates', 'parameter_summary', 'legacy')}
            if name not in order:
                order.append(name)
        new = {'format': FORMAT_VERSION, 'version': __version__, 'order': order,
               'trajectories': trajectories, 'folded': folded,
               'title': self.file_title or ''}

        def write(tmp):
            payload = pickle.dumps(new, protocol=4)
            with open(tmp, 'wb') as f:
                f.write(self.MAGIC + _checksum_line(payload))
                f.write(payload)
            if ready is not None:
                ready()
        _atomic_write(self.filename, write)
        self._cache = None

    # -- segments: a header, then one pickle per batch ---------------------------------------
    # -- segments: a header, then one pickle per batch, each framed with its length and
    # CRC-32 (b'C', <QI>), then an end mark (b'E'), so that damage and truncation show --------
    _FRAME = struct.Struct('<QI')

    def _segment_open(self, segment):
        f = open(segment.tmp, 'wb')
        f.write(self.SEGMENT_MAGIC)
        self._frame(f, {'trajectory': segment.meta['name'], 'seq': segment.seq})
        return f

    def _frame(self, f, obj):
        payload = pickle.dumps(obj, protocol=4)
        f.write(b'C' + self._FRAME.pack(len(payload), zlib.crc32(payload)))
        f.write(payload)

    def _segment_append(self, segment, rows, info):
        if self.purge_duplicate_comments:  # the seed's rule, within the segment
            out = {}
            for template, trows in rows.items():
                first = segment.first.get(template)
                first = first if first is not None else (min(trows), trows[min(trows)])
                merged = _merged_set(segment.meta.get('merged_runs') or ())
                out[template] = {i: r if i == first[0] or r[1] != first[1][1] or i in merged
                                 else (r[0], '', r[2], r[3]) for i, r in trows.items()}
            rows = out
        self._frame(segment.handle, {'rows': rows, 'runs': info})

    def _segment_close(self, segment, handle):
        handle.write(b'E')
        handle.close()

    def _segment_batches(self, path):
        try:
            f = open(path, 'rb')
        except FileNotFoundError:
            raise StorageError('%s is damaged: its segment %s is missing'
                               % (self.filename, path)) from None
        with f:
            if f.read(len(self.SEGMENT_MAGIC)) != self.SEGMENT_MAGIC:
                raise StorageError('%s is damaged: it is not a minipypet segment file' % path)
            first = True
            try:
                while True:
                    tag = f.read(1)
                    if tag == b'C':
                        head = f.read(self._FRAME.size)
                        size, crc = self._FRAME.unpack(head) if len(head) == \
                            self._FRAME.size else (-1, 0)
                        payload = f.read(size) if 0 <= size < 1 << 40 else b''
                        if len(payload) != size or zlib.crc32(payload) != crc:
                            raise StorageError('%s is damaged: a batch of runs is truncated '
                                               'or its checksum does not match' % path)
                        batch = _SafeUnpickler(io.BytesIO(payload)).load()
                    elif tag == b'E' and not first:
                        if f.read(1):
                            raise StorageError('%s is damaged: bytes after its end' % path)
                        return
                    elif tag == b'\x80':  # (minipypet 0.3: bare pickles, no checksums)
                        f.seek(-1, 1)
                        batch = _SafeUnpickler(f).load()
                        if not f.peek(1)[:1]:
                            if not first:
                                yield batch
                            return
                    else:
                        raise StorageError('%s is damaged: %s' % (path, 'it is truncated' if
                                                                  not tag else 'bad frame'))
                    if not first:
                        yield batch
                    first = False
            except (PypetError, GeneratorExit):
                raise
            except Exception as exc:
                raise StorageError('%s is damaged (truncated or corrupt): %s: %s'
                                   % (path, type(exc).__name__, exc)) from exc

    def _segment_read(self, state, path, seq, tombs, data, rows):
        for batch in self._segment_batches(path):
            top = max(batch['runs'], default=-1) + 1
            if top > len(state['runs']['completed']):  # (at once: not a run at a time)
                _runs_length(state['runs'], top)
            for idx, info in batch['runs'].items():
                _state_set_run(state, idx, info)
            for template, trows in batch['rows'].items():
                if rows is not None and template not in rows:
                    continue
                only = rows.get(template) if rows is not None else None
                tomb = tombs.get(template, {})
                column = state['columns'].setdefault(template, {})
                for idx, row in trows.items():  # (the data comes along: it is unpickled)
                    if max(tomb.get(idx, -1), tomb.get(_ALL, -1)) <= seq and \
                            (only is None or idx in only):
                        column[idx] = row
                if not column:
                    del state['columns'][template]

    def _segment_names(self):
        if not os.path.exists(self.filename):
            return set()
        return {seg for meta in self._read_file()['trajectories'].values()
                for seg, _ in meta.get('segments', ())}

    def _segment_column(self, path, template):
        idxs, values = [], []
        for batch in self._segment_batches(path):
            leaf = template.rpartition('.')[2]  # (fast access: one item, named as the leaf)
            for idx, (tag, _, ann, data) in batch['rows'].get(template, {}).items():
                if ann or tag not in ('Result', 'Parameter') or len(data or ()) != 1 or \
                        leaf not in data and tag == 'Result':
                    return None
                idxs.append(idx)
                values.append(next(iter(data.values())))
        return idxs, values

    def _segment_idx(self, path, template):
        out = []
        for batch in self._segment_batches(path):
            out.extend(batch['rows'].get(template, ()))
        return out


# ============================================================================================
# HDF5 backend
# ============================================================================================
class HDF5StorageService(_FileService):
    """Stores trajectories in HDF5 through PyTables (the `hdf5` extra), in a columnar layout
    that plain PyTables or h5py can read (see the README, "File layout"): a run leaf is one
    group whose datasets hold that item for every run. The file is rewritten whole (temp
    file, fsync, rename) at checkpoints; between them finished runs go to the journal."""

    BACKEND = 'hdf5'
    SUFFIX = '.hdf5'
    # Runs only ever reach the journal, which is safe to append to from several processes,
    # but pypet users know HDF5 as not process safe, and the issue tracker asked to refuse
    # wrap_mode='NONE' with it rather than rely on that: QUEUE or LOCK it is.
    multiproc_safe = False
    # bytes; smaller datasets are neither chunked nor compressed: compressing them saves
    # a few KB at most and costs more time (~0.3 ms a dataset) than writing them
    _BIG = 16384
    OPTIONS = _FileService.OPTIONS | {'complevel', 'complib', 'shuffle', 'fletcher32',
                                      'encoding', 'display_time'}

    @classmethod
    def _claims(cls, head):
        return head.startswith((b'\x89HDF', _H5_STAMP))

    @classmethod
    def _open_existing(cls, path):
        return _PypetFileReader(path) if _is_pypet_file(path) else cls(path)

    def __init__(self, filename=None, file_title=None, overwrite_file=False, complevel=9,
                 complib='zlib', shuffle=True, fletcher32=False, encoding='utf8',
                 display_time=20, **kwargs):
        tables = _require('tables', 'hdf5')
        if not isinstance(complevel, int) or not 0 <= complevel <= 9:
            raise ConfigurationError('complevel must be an int from 0 to 9, got %r'
                                     % (complevel,))
        if complib not in tables.filters.all_complibs:
            raise ConfigurationError('complib %r is not available; PyTables knows %s'
                                     % (complib, tables.filters.all_complibs))
        super().__init__(filename, file_title=file_title, overwrite_file=overwrite_file,
                         **kwargs)
        self.complevel, self.complib = complevel, complib
        self.shuffle, self.fletcher32 = shuffle, fletcher32

    # -- file access -------------------------------------------------------------------------
    def _open(self, path=None):
        path = path or self.filename
        f = _open_hdf5(path, StorageError, DataNotInStorageError)
        attrs = f.root._v_attrs
        if 'minipypet_format' not in attrs._v_attrnames:
            f.close()
            raise StorageError('%s is an HDF5 file but was not written by minipypet (no '
                               'minipypet_format attribute); pypet files load with '
                               'load_trajectory(filename=...)' % path)
        version = int(_attr(attrs, 'minipypet_format'))
        if version > FORMAT_VERSION:
            writer = _attr(attrs, 'minipypet_version')
            f.close()
            raise VersionMismatchError(
                '%s was written in file format %d by minipypet %s; this minipypet (%s) reads '
                'format %d and older' % (path, version, writer, __version__, FORMAT_VERSION))
        return f

    def _list_names(self):
        with self._open() as f:
            return json.loads(_attr(f.root._v_attrs, 'minipypet_trajectories'))

    def _folded_marker(self):
        if not os.path.exists(self.filename):
            return ''
        with self._open() as f:
            return str(_attr(f.root._v_attrs, 'minipypet_folded', ''))

    def _check(self, state):
        _check_attr_texts(state)

    def _check_run(self, record):
        for full_name, _, comment, _, ann in record.leaves:
            if comment and len(comment) > _ATTR_TEXT_MAX // 4:  # (cheap first: chars)
                _attr_text(comment, full_name, 'comment')

    def _filters(self, light=False):
        """The data's filters (None: uncompressed). light: zlib level 1, for what
        minipypet writes beside the data (run indices and information, overview tables):
        ~2x faster than level 9 on such columns and ~10% bigger, readable everywhere."""
        tables = _require('tables')
        if not self.complevel:
            return None
        if light:
            return tables.Filters(complevel=1, complib='zlib', shuffle=True,
                                  fletcher32=self.fletcher32)
        return tables.Filters(complevel=self.complevel, complib=self.complib,
                              shuffle=self.shuffle, fletcher32=self.fletcher32)

    # -- writing -----------------------------------------------------------------------------
    def _legacy_names(self):
        if not os.path.exists(self.filename):
            return []
        with self._open() as f:
            if int(_attr(f.root._v_attrs, 'minipypet_format')) >= 3:
                return []
            return json.loads(_attr(f.root._v_attrs, 'minipypet_trajectories'))

    def _write_main(self, metas, folded, drop=(), ready=None):
        tables = _require('tables', 'hdf5')
        old_exists = os.path.exists(self.filename)

        def write(tmp):
            order, title = [], self.file_title
            patched = old_exists and self._copy_whole(tmp, metas)
            with warnings.catch_warnings():
                # No CLASS/VERSION/TITLE attributes on every node: ~40% faster and smaller.
                # (PyTables >= 3.10 prefers the lower-case spelling, older ones only know this.)
                warnings.simplefilter('ignore', DeprecationWarning)
                out = tables.open_file(_guard_attributes(tmp), 'a', PYTABLES_SYS_ATTRS=False) \
                    if patched else tables.open_file(tmp, 'w', PYTABLES_SYS_ATTRS=False,
                                                     USER_BLOCK_SIZE=_USER_BLOCK)
            with out:
                if old_exists:
                    with self._open() as old:
                        order = [n for n in json.loads(
                            _attr(old.root._v_attrs, 'minipypet_trajectories')) if n not in drop]
                        title = title or _attr(old.root._v_attrs, 'TITLE', '')
                        for name in order:
                            if name not in metas and not patched:
                                old.get_node('/' + name)._f_copy(out.root, recursive=True)
                if patched:  # (the copy's groups of what is written anew or dropped go)
                    for name in set(metas) | set(drop):
                        if '/' + name in out:
                            out.remove_node('/' + name, recursive=True)
                if patched:
                    _h5_set(out.root, 'minipypet_patched', patched)
                for name, meta in metas.items():
                    if name in drop:
                        continue
                    self._write_trajectory(out, meta)
                    if name not in order:
                        order.append(name)
                # file_title, else the title it had, else the first trajectory's name
                # (as PyTables' TITLE: the sys attributes that would write it are off)
                _h5_set(out.root, 'TITLE', _attr_text(title or (order[0] if order else ''),
                                                      out.root, 'title'))
                for key, value in (('minipypet_format', FORMAT_VERSION),
                                   ('minipypet_version', __version__),
                                   ('minipypet_trajectories', json.dumps(order)),
                                   ('minipypet_folded', folded)):
                    _h5_set(out.root, key, value)
            _h5_stamp(tmp)
            if ready is not None:
                ready()
        _atomic_write(self.filename, write)

    def _copy_whole(self, tmp, metas):
        """Copy the file byte for byte into `tmp` when it holds other trajectories too,
        and return how many times in a row that was done; 0: write anew. (PyTables
        copies the trajectories kept node by node, so storing one of n into a shared
        file cost O(n): merging 40 into one file took minutes. What HDF5 frees in a
        patched copy and does not reuse stays, so every 16th write is whole again.)"""
        with self._open() as old:
            attrs = old.root._v_attrs
            names = json.loads(_attr(attrs, 'minipypet_trajectories'))
            count = int(_attr(attrs, 'minipypet_patched', 0)) + 1
            if int(_attr(attrs, 'minipypet_format')) != FORMAT_VERSION or \
                    count > 16 or not set(names) - set(metas):
                return 0
        import shutil
        shutil.copyfile(self.filename, tmp)
        return count

    def _write_trajectory(self, f, state):
        np = _require('numpy', 'hdf5')
        name = state['name']
        root = f.create_group('/', name, title=state.get('comment', '')[:255])
        _check_attr_texts({'name': name, 'comment': state['comment'], 'nodes': {},
                           'ann': state.get('ann')})
        for key in ('name', 'time', 'timestamp', 'comment', 'version', 'python', 'length'):
            _h5_set(root, key, state[key])
        _h5_set(root, 'minipypet_format', FORMAT_VERSION)
        _h5_set(root, 'explored', json.dumps(state['explored']))
        _h5_set(root, 'merged_runs', json.dumps(state.get('merged_runs', [])))
        if state.get('ann'):
            _h5_set(root, 'mp_annotations', _to_json(state['ann']))
        filters = self._filters()
        links, packed, made = [], {}, {}
        for full_name in sorted(state['nodes']):
            rec = state['nodes'][full_name]
            if rec['kind'] == 'link':
                links.append((full_name, rec['target']))
                continue
            parts = full_name.split('.')
            data = rec.get('data') if rec['kind'] == 'leaf' else None
            if data is not None and len(data) == 1 and 'explored_data' not in data:
                item, value = next(iter(data.items()))
                group = self._ensure_group(f, root, parts[:-1], made)
                kind = _attr_kind(parts[-1], value, rec)
                meta = [rec.get('class'), item, kind, rec.get('comment') or '']
                pack = packed.setdefault(group._v_pathname, [group, {}, 0])
                size = len(json.dumps(meta)) + len(parts[-1]) + 4 if kind else 0
                if kind is not None and pack[2] + size <= _PACK_BYTES:
                    # A scalar (config, most parameters): an attribute of its group,
                    # named like the leaf, described in the group's mp_leaves. ~8x
                    # faster to write than a dataset, and far smaller.
                    _h5_set(group, parts[-1], value)
                    pack[1][parts[-1]] = meta
                    pack[2] += size
                    continue
                # Other single items: the leaf is one dataset, ~0.4 KB instead of the
                # ~1.4 KB of a group holding a dataset.
                node = self._put_value(f, group, parts[-1], value, filters, np)
                _h5_set(node, 'mp_item', item)
                _leaf_attrs(node, rec)
                continue
            group = self._ensure_group(f, root, parts, made)
            _leaf_attrs(group, rec)
            if rec['kind'] == 'leaf':
                if data is None:
                    _h5_set(group, 'mp_empty', True)
                    continue
                for item, value in data.items():
                    if item == 'explored_data' and isinstance(value, list):
                        self._put_column(f, group, item, value, filters, np)
                    else:
                        self._put_value(f, group, item, value, filters, np)
        for group, meta, _ in packed.values():
            if meta:
                _h5_set(group, 'mp_leaves', json.dumps(meta, sort_keys=True))
        # The trajectory's segments, in order (and what the summary tables need of their
        # columns), as JSON; and external links to them, which h5py follows.
        self._put_value(f, root, 'mp_segments', json.dumps(_meta_store(state)), None, np)
        if state['segments']:
            group = f.create_group(root, 'segments')
            folder = os.path.basename(self.segment_folder)
            for seg, _ in state['segments']:
                f.create_external_link(group, os.path.splitext(seg)[0],
                                       '%s/%s:/' % (folder, seg))
        for full_name, target in links:
            parent, _, lname = full_name.rpartition('.')
            group = self._ensure_group(f, root, parent.split('.'), made) if parent else root
            f.create_soft_link(group, lname, '/%s/%s' % (name, target.replace('.', '/')))
        # Overview tables are summaries, rewritten at every store: light compression is
        # ~5x faster than level 9 and still readable everywhere (zlib).
        light = self._filters(light=True)
        self._write_overview(f, root, state, light, np)

    @staticmethod
    def _ensure_group(f, root, parts, made):
        """The group root/parts..., made if missing; `made` remembers groups by their
        parts (asking PyTables costs ~10 us a level)."""
        key = tuple(parts)
        group = made.get(key)
        if group is None:
            parent = HDF5StorageService._ensure_group(f, root, parts[:-1], made) \
                if parts else root
            group = made[key] = f.create_group(parent, parts[-1]) if parts else root
        return group

    def _put_array(self, f, group, name, arr, kind, filters):
        if arr.ndim and arr.nbytes > self._BIG:
            # Up to 1 MB is one chunk: PyTables' default chunk for a small array is far
            # bigger than the array and compressing it whole costs ~5x the data's time.
            # Each chunk carries its Fletcher-32, as in segments (see _h5_append): a
            # file over _VERIFY_MAX is not hashed at its open.
            chunks = arr.shape if arr.nbytes <= 1 << 20 else None
            filters = filters.copy(fletcher32=True) if filters is not None else \
                _require('tables').Filters(complevel=0, fletcher32=True)
            node = f.create_carray(group, name, obj=arr, filters=filters, chunkshape=chunks)
        else:
            node = f.create_array(group, name, obj=arr)
        _h5_set(node, 'mp_type', kind)
        return node

    def _put_value(self, f, group, name, value, filters, np):
        kind, arr = _value_array(value, np)
        return self._put_array(f, group, name, arr, kind, filters)

    def _put_column(self, f, group, name, values, filters, np):
        kind, arr, offsets = _column_array(values, np)
        self._put_array(f, group, name, arr, kind, filters)
        if offsets is not None:
            self._put_array(f, group, name + '__offsets', offsets, 'offsets', filters)

    def _write_overview(self, f, root, state, filters, np):
        """The main file's overview tables (the runs' own rows are in their segments). A
        table without rows is left out: each costs ~0.5 ms to write, and a sweep leaves
        several empty (no derived parameters, no results outside the runs)."""
        ov = f.create_group(root, 'overview', title='overview tables (for reading; minipypet '
                                                    'itself loads from the nodes)')
        n = state['length']

        def table(name, columns, filters):
            if len(columns[0][1]):
                _h5_table(f, ov, name, columns, filters, np)
        table('info', [
            ('name', [state['name']]), ('time', [state['time']]),
            ('timestamp', [state['timestamp']]), ('comment', [state['comment']]),
            ('length', [n]), ('version', [state['version']]), ('python', [state['python']])],
            None)
        nodes = state['nodes']
        leaves = [(k, r) for k, r in sorted(nodes.items()) if r['kind'] == 'leaf']

        def rows_of(branch):
            return [(k, r) for k, r in leaves if k.startswith(branch + '.')]

        def node_table(name, items):
            table(name, [
                ('location', [k.rpartition('.')[0] for k, _ in items]),
                ('name', [k.rpartition('.')[2] for k, _ in items]),
                ('value', [_value_summary(r['data']) for _, r in items]),
                ('comment', [r.get('comment', '') for _, r in items])], filters)
        if self.small_overview_tables:
            node_table('parameters', rows_of('parameters'))
            node_table('config', rows_of('config'))
            node_table('results_trajectory', rows_of('results'))
            node_table('derived_parameters_trajectory', rows_of('derived_parameters'))
            explored = [(k, nodes[k]) for k in state['explored'] if k in nodes]
            table('explored_parameters', [
                ('location', [k.rpartition('.')[0] for k, _ in explored]),
                ('name', [k.rpartition('.')[2] for k, _ in explored]),
                ('value', [_value_summary(r['data']) for _, r in explored]),
                ('comment', [r.get('comment', '') for _, r in explored]),
                ('length', [len((r['data'] or {}).get('explored_data') or ())
                            for _, r in explored]),
                ('range', [_range_text((r['data'] or {}).get('explored_data'))
                           for _, r in explored])], filters)
        info = state['columns_info']  # {template: [first, count, highest, (class,
        for branch in _RUN_BRANCHES:  # comment, annotations, data) of the first row]}
            templates = sorted(t for t in info if t.startswith(branch + '.'))
            if self.summary_tables:
                table(branch + '_runs_summary', [
                    ('name', templates),
                    ('value', [info[t][3][2] for t in templates]),
                    ('comment', [info[t][3][1] for t in templates]),
                    ('number_of_items', [info[t][1] for t in templates]),
                    ('example_item_run_name', [_run_name(info[t][0]) for t in templates])],
                    None)
        if self.large_overview_tables and state['explored']:
            cols = [('idx', np.arange(n, dtype=np.int64))]
            for k in state['explored']:
                data = (nodes.get(k) or {}).get('data') or {}
                rng = (data.get('explored_data') or [])[:n]
                kinds = set(map(type, rng))
                if len(kinds) != 1 or not kinds <= {int, float, bool, str}:
                    rng = [repr(v) for v in rng]  # full text: overview tables never cut
                elif kinds <= {int, float, bool}:
                    try:  # (1M runs: a list of Python ints would cost ~36 MB more)
                        rng = np.array(rng)
                    except OverflowError:
                        rng = [repr(v) for v in rng]
                cols.append((k.rpartition('.')[2] if k.rpartition('.')[2] not in
                             [c for c, _ in cols] else k.replace('.', '_'), rng))
            table('explored_parameters_runs', cols, filters)

    # -- segments ----------------------------------------------------------------------------
    # A segment holds run columns laid out as the main file of format 2 held them (a group per
    # column: _idx, one dataset per item, the exceptions), as extendable datasets, so that
    # batches append to them; and its runs' information in overview/runs (plus run_errors and
    # the results_runs / derived_parameters_runs overview rows).
    def _segment_open(self, segment):
        tables = _require('tables', 'hdf5')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            # (a chunk cache of 1 MB, not 16 MB per dataset: appends fill each chunk once,
            # and six columns' caches would otherwise hold ~100 MB by the end of a sweep)
            f = tables.open_file(segment.tmp, 'w', PYTABLES_SYS_ATTRS=False,
                                 CHUNK_CACHE_SIZE=1 << 20, USER_BLOCK_SIZE=_USER_BLOCK)
        for key, value in (('minipypet_segment', 1), ('minipypet_format', FORMAT_VERSION),
                           ('minipypet_version', __version__),
                           ('trajectory', segment.meta['name']), ('seq', segment.seq)):
            _h5_set(f.root, key, value)
        return _H5Segment(f, segment.meta)

    def _segment_append(self, segment, rows, info):
        np = _require('numpy', 'hdf5')
        h = segment.handle
        batches = []
        for template in sorted(rows):
            trows = rows[template]
            idxs = sorted(trows)
            items, datas = {}, [trows[i][3] for i in idxs]
            key = next(iter(datas[0])) if type(datas[0]) is dict and len(datas[0]) == 1 \
                else None
            try:  # (a sweep's usual column: one item of one name in every row)
                if key is not None and set(map(len, datas)) == {1}:
                    items[key] = (idxs, list(map(operator.itemgetter(key), datas)))
            except (TypeError, KeyError):  # (an empty row, another name: the long way)
                items = {}
            for i in () if items else idxs:
                data = trows[i][3]
                if data:
                    for key, value in data.items():
                        col = items.get(key)
                        if col is None:
                            col = items[key] = ([], [])
                        col[0].append(i)
                        col[1].append(value)
            bad = [k for k in items if k in _COLUMN_META or k.endswith(('__idx', '__offsets'))]
            if bad:
                raise StorageError('%s: item names %s are reserved in HDF5 files (names ending '
                                   'in "__idx" or "__offsets" or %s); rename them'
                                   % (template, bad, sorted(_COLUMN_META)))
            arrays = {k: (where, _column_array(values, np)) for k, (where, values) in
                      items.items()}
            column = h.columns.get(template)
            if column is not None:  # all or nothing: check that every item still fits
                for key, (_, (kind, arr, _)) in arrays.items():
                    node = column.group._f_get_child(key) if key in column.group else None
                    if node is not None and not _h5_fits(node, column.kinds[key], kind, arr):
                        raise _SegmentSplit(template)
            batches.append((template, trows, idxs, arrays))
        filters = self._filters()
        for template, trows, idxs, arrays in batches:
            self._append_rows(h, template, trows, idxs, arrays, filters, np)
        if info:
            self._append_runs(h, segment, info, np)

    def _append_rows(self, h, template, trows, idxs, arrays, filters, np):
        column = h.columns.get(template)
        if column is None:
            parts = [p for p in template.split('.') if p not in ('$', '$set')]
            path = '.'.join(parts)
            while path in h.paths:
                path += '_'
            h.paths.add(path)
            group = self._ensure_group(h.file, h.file.root, path.split('.'), h.made)
            first = trows[idxs[0]]
            _h5_set(group, 'mp_kind', 'column')
            _h5_set(group, 'mp_template', template)
            _h5_set(group, 'mp_class', first[0])
            _h5_set(group, 'mp_comment', _attr_text(first[1], group, 'comment'))
            _h5_set(group, 'mp_purged', bool(self.purge_duplicate_comments))
            column = h.columns[template] = _H5Column(group, idxs[0], first[0], first[1])
        group, before = column.group, column.rows
        if column.next is not None:  # (sorted and unique: a span if its ends are)
            column.next = idxs[-1] + 1 if idxs[0] == column.next and \
                idxs[-1] - idxs[0] + 1 == len(idxs) else None
        purge = self.purge_duplicate_comments
        merged = _merged_set(h.meta.get('merged_runs') or ()) if purge else ()
        light = self._filters(light=True)  # (for the run indices)
        _h5_append(h.file, group, '_idx', np.array(idxs, dtype=np.int64), 'int', light)
        tags, comments, anns, datas = zip(*map(trows.__getitem__, idxs))
        n = len(idxs)  # (a sweep's batch has no exceptions: that is checked at C speed)
        plain = tags.count(column.tag) == n and comments.count(column.comment) == n and \
            not any(anns) and None not in datas and not (purge and merged)
        for i in () if plain else idxs:
            tag, comment, ann, data = trows[i]
            if tag != column.tag:
                column.classes[0].append(i)
                column.classes[1].append(tag)
            # The seed's rule (purge_duplicate_comments): a run keeps its comment only
            # if it differs from the first run's; merged runs keep theirs.
            if comment != column.comment and i != column.first or \
                    purge and comment and i in merged:
                column.comments[0].append(i)
                column.comments[1].append(comment)
            if ann:
                column.anns[0].append(i)
                column.anns[1].append(ann)
            if data is None:
                column.empty.append(i)
        for key, (where, (kind, arr, offsets)) in arrays.items():
            node = group._f_get_child(key) if key in group else None
            own_idx = key + '__idx' in group
            if node is None and before and not own_idx:
                _h5_append(h.file, group, key + '__idx', np.zeros(0, np.int64), 'int',
                           filters)  # a new item: the rows before lack it
                own_idx = True
            elif not own_idx and len(where) != len(idxs):
                prior = group._idx.read(0, before) if before else np.zeros(0, np.int64)
                _h5_append(h.file, group, key + '__idx', prior, 'int', filters)
                own_idx = True
            if own_idx:
                _h5_append(h.file, group, key + '__idx', np.array(where, np.int64), 'int',
                           filters)
            base = node.nrows if node is not None and offsets is not None else 0
            _h5_append(h.file, group, key, arr, kind, filters)
            column.kinds[key] = kind
            if offsets is not None:
                if node is not None:
                    offsets = offsets[1:]
                _h5_append(h.file, group, key + '__offsets', offsets + base, 'offsets',
                           filters)
        for key in list(group._v_leaves):  # items this batch lacks
            if key in arrays or key in _COLUMN_META or key.endswith(('__idx', '__offsets')) \
                    or key + '__idx' in group:
                continue
            _h5_append(h.file, group, key + '__idx', group._idx.read(0, before), 'int',
                       filters)
        column.rows += len(idxs)
        if self.large_overview_tables:
            branch = template.partition('.')[0]
            if branch in _RUN_BRANCHES:
                h.overview_rows(branch + '_runs', [
                    ('idx', idxs), ('name', [template] * len(idxs)),
                    ('value', _value_summaries(datas))], np)

    def _append_runs(self, h, segment, info, np):
        idxs = sorted(info)
        # (the fields as columns in one pass at C speed: a batch holds up to 8k runs)
        t0, t1, done, shas, errors = zip(*map(info.__getitem__, idxs))
        if any(errors):
            h.errors.update((i, e) for i, e in zip(idxs, errors) if e)
        h.overview_rows('runs', [
            ('idx', idxs), ('name', list(map(FORMATTED_RUN_NAME.__mod__, idxs))),
            ('time', _time_strings(t0)), ('timestamp', t0), ('finish_timestamp', t1),
            ('runtime', _runtime_strings(t0, t1)), ('completed', done),
            ('parameter_summary', _summaries_of(segment.meta, idxs)),
            ('short_environment_hexsha', shas)], np)
        # The same run information as plain numbers, what loading reads (the overview
        # table's rows are ~200 bytes): _runs (n, 4) float64 = run index, timestamp, finish
        # timestamp, completed; and the SHA-1s, written at the close (see _segment_close)
        filters = self._filters(light=True)
        numbers = np.empty((len(idxs), 4))
        numbers[:, 0], numbers[:, 1], numbers[:, 2], numbers[:, 3] = idxs, t0, t1, done
        _h5_append(h.file, h.file.root, '_runs', numbers, 'ndarray', filters)
        codes = h.shas
        for sha in dict.fromkeys(shas):
            codes.setdefault(sha, len(codes))
        h.sha_codes.extend(map(codes.__getitem__, shas))
        _note_span(h, idxs, done)

    def _segment_close(self, segment, h):
        np = _require('numpy', 'hdf5')
        filters = self._filters()
        try:
            for column in h.columns.values():
                group = column.group
                for idx_name, name, (where, values) in (('_class_idx', '_classes', column.classes),
                                                        ('_comment_idx', '_comments',
                                                         column.comments),
                                                        ('_ann_idx', '_ann', column.anns)):
                    if where:
                        self._put_array(h.file, group, idx_name, np.array(where, np.int64),
                                        'int', filters)
                        self._put_column(h.file, group, name, values, filters, np)
                if column.empty:
                    self._put_array(h.file, group, '_empty_idx',
                                    np.array(column.empty, np.int64), 'int', filters)
            # The runs' SHA-1s: one attribute where they are all the same (a sweep's are),
            # else _runs_hexsha, a row per _runs row (1M runs' copies took 40 MB to read)
            if len(h.shas) > 1:
                shas = np.array([s or ' ' for s in h.shas], dtype='S')
                _h5_append(h.file, h.file.root, '_runs_hexsha',
                           shas[np.frombuffer(h.sha_codes, np.uint32)], 'str', filters)
            elif h.shas:
                _h5_set(h.file.root, 'mp_hexsha', next(iter(h.shas)))
            # Spans let a load skip reading what it can tell without (see _h5_idx, _runs_span)
            lo, hi = h.span
            if lo is not None and not h.errors and h.seen.count(1) == hi - lo + 1:
                _h5_set(h.file.root, 'mp_runs_span', '%d:%d' % (lo, hi + 1))
            for table in h.tables.values():  # (rows are in HDF5; see _h5_table)
                table.close(flush=False)
            for column in h.columns.values():
                if column.next is not None and column.next > column.first:
                    _h5_set(column.group, 'mp_idx_span', '%d:%d' % (column.first, column.next))
            if h.errors:
                errors = sorted(h.errors.items())
                ov = h.overview()
                _h5_table(h.file, ov, 'run_errors', [('idx', [i for i, _ in errors]),
                                                     ('error', [e for _, e in errors])],
                          filters, np)
            # What the segment holds, beside its nodes: a file too big to be hashed at its
            # open (_VERIFY_MAX) whose group index is damaged shows no children at all,
            # which must not read as "no runs" (see _segment_files)
            contents = json.dumps(sorted(
                [c.group._v_pathname for c in h.columns.values()] +
                (['/_runs'] if '_runs' in h.file.root else [])))
            if len(contents) <= _ATTR_TEXT_MAX:
                _h5_set(h.file.root, 'mp_contents', contents)
        finally:
            h.file.close()
        _h5_stamp(segment.tmp)

    def _segment_files(self, path):
        f = _open_hdf5(path, StorageError, StorageError)
        attrs = f.root._v_attrs
        if 'minipypet_segment' not in attrs._v_attrnames:
            f.close()
            raise StorageError('%s is not a minipypet segment file' % path)
        try:
            gone = [p for p in json.loads(_attr(attrs, 'mp_contents', '[]')) if p not in f]
        except ValueError:
            gone = ['mp_contents']
        if gone:
            f.close()
            raise StorageError('%s is damaged: %s, which it holds, cannot be found in it (its '
                               'index is damaged); `python -m minipypet check %s` tells what '
                               'else is, restore the file from a backup or run those runs '
                               'again' % (path, ', '.join(gone[:5]), self.filename))
        return f

    def _segment_read(self, state, path, seq, tombs, data, rows):
        np = _require('numpy', 'hdf5')
        with self._segment_files(path) as f:
            for group in f.walk_groups('/'):
                ga = group._v_attrs
                if 'mp_kind' not in ga._v_attrnames:
                    continue
                template = _attr(ga, 'mp_template')
                if rows is not None and template not in rows:
                    continue
                want = data is True or (data == 'scalars' and 'scalars') or \
                    (data != 'scalars' and template.partition('.')[0] in data)
                tomb = tombs.get(template)
                read = self._read_rows(group, want, np, None if rows is None else
                                       rows[template])
                if tomb is None and type(read) is _ColumnRows and \
                        not state['columns'].get(template):
                    state['columns'][template] = read  # (kept as read, see _ColumnRows)
                    continue
                column = state['columns'].setdefault(template, {})
                for idx, row in read.items():
                    if tomb is None or max(tomb.get(idx, -1), tomb.get(_ALL, -1)) <= seq:
                        column[idx] = row
                if not column:
                    del state['columns'][template]
            pending = state.get('runs_pending')
            span = _runs_span(f) if pending is not None else None
            if span is not None:  # (read when the run information is asked for)
                lo, hi = span
                if hi > len(state['runs']['completed']):
                    _runs_length(state['runs'], hi)
                state['runs']['completed'][lo:hi] = b'\x01' * (hi - lo)
                pending.append(path)
                return
            if pending is not None:  # (older segments' information first; and the rest is
                self._runs_flush(state)  # read now too: the table is put off whole or not)
                state['runs_pending'] = None
            if '_runs' in f.root:
                blocks = self._runs_blocks(f, np)
            elif 'overview' in f.root and 'runs' in f.root.overview:
                blocks = [_h5_read(f.root.overview.runs)]
            else:
                blocks = []
            errors = {}
            if '/overview/run_errors' in f:
                errors = {i: e.decode('utf-8') for i, e in
                          _h5_read(f.root.overview.run_errors).tolist()}
            for runs in blocks:
                _fill_runs(state['runs'], runs, errors, np)

    def _runs_flush(self, state, paths=None):
        """Read the run information of the segments a load put off
        (state['runs_pending']) into state['runs'], in their order."""
        if paths is None:
            paths, state['runs_pending'] = state['runs_pending'], []
        np = _require('numpy', 'hdf5') if paths else None
        for path in paths:
            with self._segment_files(path) as f:
                for runs in self._runs_blocks(f, np):
                    _fill_runs(state['runs'], runs, {}, np)

    def _runs_later(self, paths, table):
        """Fill a _RunTable's run information put off at its load (its `completed`
        column is the table's own already, and may have changed since)."""
        runs = _RunTable(len(table)).to_plain(share=True)
        self._runs_flush({'runs': runs}, paths)
        for field in _RunTable.LAZY:
            setattr(table, field, runs[field])

    @staticmethod
    def _runs_blocks(f, np):
        """A segment's run information, _RUNS_BLOCK runs at a time (1M runs whole would
        take ~70 MB while they are read)."""
        step, node = _RUNS_BLOCK, f.root._runs
        shas = f.root._runs_hexsha if '_runs_hexsha' in f.root else None
        one = np.array([_attr(f.root._v_attrs, 'mp_hexsha', '').encode()], 'S')
        for start in range(0, node.nrows, step):
            numbers = _h5_read(node, start, start + step)
            yield {'idx': numbers[:, 0].astype(np.int64), 'timestamp': numbers[:, 1],
                   'finish_timestamp': numbers[:, 2], 'completed': numbers[:, 3],
                   'short_environment_hexsha':
                   _h5_read(shas, start, start + len(numbers))
                   if shas is not None else np.broadcast_to(one, (len(numbers),))}

    def _segment_names(self):
        if not os.path.exists(self.filename):
            return set()
        np = _require('numpy', 'hdf5')
        names = set()
        with self._open() as f:
            for name in json.loads(_attr(f.root._v_attrs, 'minipypet_trajectories')):
                root = f.get_node('/' + name)
                if 'mp_segments' in root:
                    names.update(s for s, _ in json.loads(_read_node(
                        root, 'mp_segments', np, single=True))['segments'])
        return names

    def _segment_column(self, path, template):
        np = _require('numpy', 'hdf5')
        with self._segment_files(path) as f:
            for group in f.walk_groups('/'):
                ga = group._v_attrs
                if 'mp_template' not in ga._v_attrnames or _attr(ga, 'mp_template') != template:
                    continue
                items = [k for k, _ in _column_items(group)]
                cls = _attr(ga, 'mp_class')  # (fast access: one item, named as the leaf)
                if len(items) != 1 or cls not in ('Result', 'Parameter') or \
                        cls == 'Result' and items[0] != template.rpartition('.')[2] or \
                        {'_class_idx', '_ann_idx', '_empty_idx', items[0] + '__idx'} & \
                        set(group._v_leaves):
                    return None
                node = group._f_get_child(items[0])
                if _attr(node._v_attrs, 'mp_type') in ('bool', 'int', 'float') and \
                        items[0] + '__offsets' not in group:
                    return _h5_idx(group, np), _h5_read(node)  # (numbers: as read)
                return _h5_idx(group, np), _read_node(group, items[0], np)
        return [], []

    def _segment_idx(self, path, template):
        np = _require('numpy', 'hdf5')
        with self._segment_files(path) as f:
            for group in f.walk_groups('/'):
                ga = group._v_attrs
                if 'mp_template' in ga._v_attrnames and _attr(ga, 'mp_template') == template:
                    return _h5_idx(group, np).tolist()
        return []

    # -- reading -----------------------------------------------------------------------------
    def _read_main(self, name, data=True, rows=None):
        with self._open() as f:
            if '/' + name not in f:
                raise DataNotInStorageError('%s holds no trajectory %r' % (self.filename, name))
            return self._read_trajectory(f, name, data, rows)

    def _read_trajectory(self, f, name, data, rows=None):
        """A trajectory's metadata from the main file; the run rows and run information
        a main file of format 2 holds itself go to state['legacy']."""
        np = _require('numpy', 'hdf5')
        root = f.get_node('/' + name)
        a = root._v_attrs
        state = _new_meta(name)
        for key in ('time', 'timestamp', 'comment', 'version', 'python', 'length'):
            state[key] = _attr(a, key)
        state['length'] = int(state['length'])
        state['timestamp'] = float(state['timestamp'])
        state['explored'] = json.loads(_attr(a, 'explored', '[]'))
        state['merged_runs'] = json.loads(_attr(a, 'merged_runs', '[]'))
        if 'mp_annotations' in a._v_attrnames:
            state['ann'] = _from_json(_attr(a, 'mp_annotations', 'null'))
        legacy = 'mp_segments' not in root
        if legacy:
            _read_legacy_runs(f, root, state)
        prefix = len(root._v_pathname) + 1
        links = []
        for node in _walk_tree(root, links):
            ga = node._v_attrs
            if 'mp_leaves' in ga._v_attrnames:  # scalar leaves kept as attributes (format 2)
                base = node._v_pathname[prefix:].replace('/', '.')
                for lname, (tag, item, kind, comment) in json.loads(
                        _attr(ga, 'mp_leaves')).items():
                    full_name = base + '.' + lname
                    want = full_name in state['explored'] if data == 'scalars' else \
                        data is True or full_name.partition('.')[0] in data
                    state['nodes'][full_name] = {
                        'kind': 'leaf', 'class': tag, 'comment': comment, 'ann': None,
                        'data': {item: _ATTR_KINDS[kind](_attr(ga, lname))} if want else None}
            if 'mp_kind' not in ga._v_attrnames:
                continue
            kind = _attr(ga, 'mp_kind')
            full_name = node._v_pathname[prefix:].replace('/', '.')
            want = data is True or full_name.partition('.')[0] in data
            if kind == 'column':
                template = _attr(ga, 'mp_template')
                if rows is not None and template not in rows:
                    continue
                want = data is True or (data == 'scalars' and 'scalars') or \
                    (data != 'scalars' and template.partition('.')[0] in data)
                state['columns'][template] = self._read_rows(
                    node, want, np, None if rows is None else rows[template])
                continue
            if data == 'scalars':
                want = full_name in state['explored']
            rec = {'kind': kind, 'comment': _attr(ga, 'mp_comment', ''),
                   'ann': _from_json(_attr(ga, 'mp_annotations', 'null'))}
            if kind == 'leaf':
                rec['class'] = _attr(ga, 'mp_class')
                rec['data'] = None
                if 'mp_item' in ga._v_attrnames:  # a one-item leaf stored as one dataset
                    if want:
                        rec['data'] = {_attr(ga, 'mp_item', ''): _decode_node(node, None, np,
                                                                             True)}
                elif want and 'mp_empty' not in ga._v_attrnames:
                    rec['data'] = {}
                    for leaf in node._f_iter_nodes('Leaf'):
                        item = leaf._v_name
                        if item.endswith('__offsets'):
                            continue
                        rec['data'][item] = _read_node(node, item, np, single=item !=
                                                       'explored_data')
            state['nodes'][full_name] = rec
        for link in links:
            target = link.target
            if target.startswith('/' + name + '/'):
                state['nodes'][link._v_pathname[prefix:].replace('/', '.')] = {
                    'kind': 'link', 'target': target[prefix:].replace('/', '.')}
        if legacy:
            state['legacy'] = {'columns': state['columns'], 'runs': state['runs']}
            state['columns'], state['runs'] = {}, _RunTable(0).to_plain()
        else:
            _meta_load(state, json.loads(_read_node(root, 'mp_segments', np, single=True)))
        return state

    @staticmethod
    def _read_rows(group, want, np, only=None):
        """{run index: (class, comment, annotations, data)} of a run column's group;
        `only`: these run indices alone, their data read row by row."""
        if only is not None:
            return _read_some_rows(group, want, np, only)
        idx_array = _h5_idx(group, np)
        extras = _column_extras(group, np)
        items = [(item, _read_node(group, item, np), _h5_read(group._f_get_child(
            item + '__idx')).tolist() if item + '__idx' in group else None)
            for item, _ in _column_items(group, want)] if want else None
        if len(idx_array) > 1 and all(c is None for _, _, c in items or ()) and \
                int(idx_array[-1]) - int(idx_array[0]) == len(idx_array) - 1 and \
                bool((np.diff(idx_array) == 1).all()):
            # (a sweep's column: its rows are made when asked for, see _ColumnRows)
            return _ColumnRows(int(idx_array[0]), len(idx_array), extras, items)
        idxs = idx_array.tolist()
        tag, first_comment, default_comment, classes, comments, anns, empty = extras
        datas = {i: ({} if i not in empty else None) for i in idxs} if want else \
            dict.fromkeys(idxs)
        if want:
            for item, values, col_idx in items:
                for i, v in zip(idxs if col_idx is None else col_idx, values):
                    datas[i][item] = v
        first = idxs[0] if idxs else None
        return {i: (classes.get(i, tag),
                    first_comment if i == first else comments.get(i, default_comment),
                    anns.get(i), datas[i]) for i in idxs}


# ============================================================================================
# HDF5 reading - columns, run information, nodes
# ============================================================================================
class _ColumnRows(collections.abc.MutableMapping):
    """{run index: (class, comment, annotations, data)} of a run column of consecutive
    runs as read: the columns are kept and a run's row is made when asked for (a tuple
    and a dict per run cost ~1 s and ~300 MB at 1M runs). Rows set or deleted later
    (journal records not folded in yet) are kept beside the columns."""

    __slots__ = ('first', 'n', 'extras', 'cols', 'extra', 'gone')

    def __init__(self, first, n, extras, cols):
        self.first, self.n, self.extras, self.cols = first, n, extras, cols
        self.extra, self.gone = {}, set()

    def _base(self, idx):
        return type(idx) is int and 0 <= idx - self.first < self.n

    def __getitem__(self, idx):
        if idx in self.extra:
            return self.extra[idx]
        if not self._base(idx) or idx in self.gone:
            raise KeyError(idx)
        tag, first_comment, default_comment, classes, comments, anns, empty = \
            self.extras
        pos = idx - self.first
        data = None if self.cols is None or idx in empty else {
            item: values[pos] for item, values, _ in self.cols}
        return (classes.get(idx, tag), first_comment if pos == 0 else
                comments.get(idx, default_comment), anns.get(idx), data)

    def __contains__(self, idx):
        return idx in self.extra or self._base(idx) and idx not in self.gone

    def __setitem__(self, idx, row):
        self.extra[idx] = row
        self.gone.discard(idx)

    def __delitem__(self, idx):
        if idx not in self:
            raise KeyError(idx)
        self.extra.pop(idx, None)
        if self._base(idx):
            self.gone.add(idx)

    def __iter__(self):
        gone = self.gone
        for idx in range(self.first, self.first + self.n):
            if idx not in gone:
                yield idx
        for idx in list(self.extra):
            if not self._base(idx):
                yield idx

    def __len__(self):
        return self.n - len(self.gone) + sum(not self._base(i) for i in self.extra)

    def __reduce__(self):  # (a plain dict wherever it goes: never this class in a file)
        return dict, (dict(self),)


def _send_rows(rows):
    """How _worker_copy pickles a _ColumnRows (its pickler's dispatch table only): as its
    columns, since a row per run made 100k pending runs cost ~0.5 s per copy. Anything
    else pickles one as a plain dict, so what a job pickles into a file never names this."""
    return _sent_rows, (rows.first, rows.n, rows.extras, rows.cols, rows.extra, rows.gone)


def _sent_rows(first, n, extras, cols, extra, gone):
    rows = _ColumnRows(first, n, extras, cols)
    rows.extra, rows.gone = extra, gone
    return rows


def _span_of(node, key, rows):
    """(lo, hi) of a span attribute 'lo:hi' when it spans `rows` rows, else None."""
    text = _attr(node._v_attrs, key)
    if not isinstance(text, str):
        return None
    lo, _, hi = text.partition(':')
    try:
        lo, hi = int(lo), int(hi)
    except ValueError:
        return None
    return (lo, hi) if 0 <= lo < hi and hi - lo == rows else None


def _h5_idx(group, np):
    """A run column's run indices: made from its span when it has one (1M runs' indices
    take ~40 ms to decompress), else read."""
    span = _span_of(group, 'mp_idx_span', group._idx.nrows)
    return np.arange(*span, dtype=np.int64) if span else _h5_read(group._idx)


def _runs_span(f):
    """(lo, hi) of a segment whose runs lo..hi-1 are each completed, without errors."""
    root = f.root
    if '_runs' not in root:
        return None
    return _span_of(root, 'mp_runs_span', root._runs.nrows)


def _walk_tree(root, links):
    """A trajectory group's groups and leaves, parents first, without its overview
    tables (made from the rest: opening their 18 tables took half of a small file's
    load) and the external links to its segments; its soft links go to `links`."""
    tables = _require('tables')
    todo = [root]
    for group in todo:
        yield group
        for name in list(group._v_children.keys()):
            if group is root and name in ('overview', 'segments'):
                continue
            node = group._f_get_child(name)
            if isinstance(node, tables.Group):
                todo.append(node)
            elif isinstance(node, tables.link.SoftLink):
                links.append(node)
            elif not isinstance(node, tables.link.Link):
                yield node


def _read_legacy_runs(f, root, state):
    """Run information from a format 2 main file's overview/runs table."""
    runs = _h5_read(f.get_node(root, 'overview/runs'))
    state['runs'] = {
        'timestamp': runs['timestamp'].tolist(),
        'finish_timestamp': runs['finish_timestamp'].tolist(),
        'completed': runs['completed'].tolist(),
        'hexsha': [x.decode() for x in runs['short_environment_hexsha'].tolist()],
        'error': [''] * len(runs)}
    if 'run_errors' in root.overview:
        for i, e in _h5_read(f.get_node(root, 'overview/run_errors')).tolist():
            state['runs']['error'][i] = e.decode('utf-8')


def _read_some_rows(group, want, np, only):
    """The rows of the run indices `only` of a column group, each item read row by row."""
    idxs = _h5_idx(group, np).tolist()
    where = {}
    for pos, i in enumerate(idxs):
        if i in only:
            where[i] = pos  # (the last wins: a run stored again later in the segment)
    if not where:
        return {}
    tag, first_comment, default_comment, classes, comments, anns, empty = \
        _column_extras(group, np)
    datas = {i: ({} if i not in empty else None) if want else None for i in where}
    if want:
        for item, leaf in _column_items(group, want):
            if item + '__idx' in group:
                own = _h5_read(group._f_get_child(item + '__idx')).tolist()
                positions = {i: p for p, i in enumerate(own) if i in where}
            else:
                positions = where
            offsets = group._f_get_child(item + '__offsets') \
                if item + '__offsets' in group else None
            for i, pos in positions.items():
                try:
                    if offsets is not None:
                        lo, hi = offsets[pos:pos + 2].tolist()
                        value = _from_json(leaf[lo:hi].tobytes().decode('utf-8'))
                    else:
                        value = _decode_node_row(leaf, pos)
                except Exception as exc:
                    raise _damaged(leaf, exc, i) or exc
                if datas[i] is not None:
                    datas[i][item] = value
    first = idxs[0]
    return {i: (classes.get(i, tag),
                first_comment if i == first else comments.get(i, default_comment),
                anns.get(i), datas[i]) for i in where}


def _column_items(group, want=True):
    """(name, dataset) of each item of a run column's group (want='scalars': the scalar
    items alone, all a runs table needs)."""
    for leaf in group._f_iter_nodes('Leaf'):
        item = leaf._v_name
        if item in _COLUMN_META or item.endswith(('__idx', '__offsets')):
            continue
        if want == 'scalars' and _attr(leaf._v_attrs, 'mp_type') not in _SCALAR_KINDS:
            continue
        yield item, leaf


def _column_extras(group, np):
    """What a run column's group says beside its items: (class, first comment, the comment
    of the other runs, {run: class}, {run: comment}, {run: annotations}, empty runs)."""
    a = group._v_attrs
    tag, first_comment = _attr(a, 'mp_class'), _attr(a, 'mp_comment', '')
    default_comment = '' if _attr(a, 'mp_purged', True) else first_comment
    extra = {'_classes': {int(k): v for k, v in json.loads(  # (mp_classes: format 1)
        _attr(a, 'mp_classes', '{}')).items()}}
    for idx_name, name in (('_class_idx', '_classes'), ('_comment_idx', '_comments'),
                           ('_ann_idx', '_ann')):
        if idx_name in group:
            extra[name] = dict(zip(_h5_read(group._f_get_child(idx_name)).tolist(),
                                   _read_node(group, name, np)))
    empty = set(_h5_read(group._empty_idx).tolist()) if '_empty_idx' in group else set()
    return (tag, first_comment, default_comment, extra['_classes'],
            extra.get('_comments', {}), extra.get('_ann', {}), empty)


def _fill_runs(table, runs, errors, np):
    """Put rows of run information (columns idx, timestamp, finish_timestamp, completed,
    short_environment_hexsha) into a state's run table; `errors`: {run index: error}."""
    ridx = np.asarray(runs['idx']).astype(np.int64)
    n = len(ridx)
    if not n:
        return
    top = int(ridx.max())
    if top >= len(table['completed']):
        _runs_length(table, top + 1)
    for field in ('timestamp', 'finish_timestamp'):  # (C doubles, as _RunTable's)
        if not isinstance(table[field], array.array):
            table[field] = array.array('d', table[field])
    t0s, t1s, done, shas, errs = (table[f] for f in _RunTable.FIELDS)
    shas_read = runs['short_environment_hexsha']
    if (shas_read == shas_read[0]).all():  # (one commit, as a sweep's runs have)
        distinct, codes = shas_read[:1], np.zeros(n, np.intp)
    else:
        distinct, codes = np.unique(shas_read, return_inverse=True)
    text = [s.decode().strip() for s in distinct.tolist()]
    lo = int(ridx[0])
    if int(ridx[-1]) - lo + 1 == n and (ridx == np.arange(lo, lo + n)).all():
        # (runs stored in order, as a sweep's are: whole slices at a time, and no Python
        # float made: 1M runs' information in ~0.05 s)
        hi = lo + n
        t0s[lo:hi] = array.array('d', runs['timestamp'].astype('=f8').tobytes())
        t1s[lo:hi] = array.array('d', runs['finish_timestamp'].astype('=f8').tobytes())
        done[lo:hi] = np.asarray(runs['completed']).astype(np.uint8).tobytes()
        shas[lo:hi] = [text[0]] * n if len(text) == 1 else \
            [text[c] for c in codes.ravel().tolist()]
        errs[lo:hi] = [''] * n
        for i, e in errors.items():
            if lo <= i < hi:
                errs[i] = e
        return
    for i, a, b, c, s in zip(ridx.tolist(), runs['timestamp'].tolist(),
                             runs['finish_timestamp'].tolist(),
                             np.asarray(runs['completed']).astype(np.int64).tolist(),
                             codes.ravel().tolist()):
        t0s[i], t1s[i], done[i] = a, b, c
        shas[i], errs[i] = text[s], errors.get(i, '')


def _damaged(node, exc, run=None):
    """The StorageError for a dataset whose chunk does not read back (its Fletcher-32
    or zlib check failed: the file changed after it was written), or None for any other
    error. HDF5's own text names no file and no run."""
    if not isinstance(exc, _require('tables').HDF5ExtError):
        return None
    path = node._v_file.filename
    err = StorageError(
        '%s is damaged: %s%s does not read back (a chunk of it fails its checksum: the '
        'file changed after it was written). Run "python -m minipypet check %s" to see '
        'what else is damaged, and restore the file from a backup (or run %s again)%s. '
        'HDF5 said: %s'
        % (path, node._v_pathname, '' if run is None else ", run %d's row" % run, path,
           'the runs' if run is None else 'that run',
           '' if run is None else '; the other runs still load',
           (str(exc).strip().splitlines() or [''])[-1][:200]))
    err.__cause__ = exc
    return err


def _h5_read(node, start=None, stop=None):
    """node.read(start, stop), damage raised as _damaged's StorageError (the run indices
    and run information say which run is where: PyTables' own error names neither file
    nor fix)."""
    try:
        return node.read(start, stop)
    except Exception as exc:
        raise _damaged(node, exc) or exc


def _decode_node_row(node, pos):
    """One row of a column dataset, as _decode_node gives it in a column's list."""
    kind = _attr(node._v_attrs, 'mp_type')
    value = node[pos]
    if kind == 'str':
        return value.decode('utf-8')
    if kind in ('bool', 'int', 'float', 'complex', 'bytes'):
        return value.item() if hasattr(value, 'item') else value
    return value


def _note_span(h, idxs, done):
    """Keep a segment's run span (lo, hi) and mark each run in it; a run not completed,
    or stored twice, spoils it (h.span[0] None). `idxs` ascending and unique, `done`
    their completed flags."""
    span, seen = h.span, h.seen
    if h.seen is None:
        return
    lo, hi = idxs[0], idxs[-1]
    if hi + 1 > len(seen):
        seen.extend(bytes(hi + 1 - len(seen)))
    if done.count(1) != len(idxs):
        h.seen, span[0] = None, None
        return
    if hi - lo + 1 == len(idxs):  # (a serial sweep's batch: checked at C speed)
        if seen.find(1, lo, hi + 1) >= 0:
            h.seen, span[0] = None, None
            return
        seen[lo:hi + 1] = b'\x01' * len(idxs)
    else:
        for i in idxs:
            if seen[i]:
                h.seen, span[0] = None, None
                return
            seen[i] = 1
    span[0], span[1] = lo if span[0] is None else min(span[0], lo), max(span[1], hi)


class _H5Column:
    """A run column in a segment being written: its group, rows so far and exceptions."""

    def __init__(self, group, first, tag, comment):
        self.group, self.first, self.tag, self.comment, self.rows = group, first, tag, \
            comment, 0
        self.classes, self.comments, self.anns, self.empty = ([], []), ([], []), ([], []), []
        self.kinds = {}  # item -> mp_type (attributes set through _h5_set read back stale)
        self.next = first  # the next run index while _idx is one ascending span, else None


class _H5Segment:
    """A segment file being written: its columns and overview tables."""

    def __init__(self, f, meta):
        self.file, self.meta, self.columns, self.paths, self.made = f, meta, {}, set(), {}
        self.tables, self.errors = {}, {}
        self.shas, self.sha_codes = {}, array.array('I')  # (a code per _runs row)
        # (the runs' indices while they are each completed once: lo, hi and a byte each)
        self.span, self.seen = [None, -1], bytearray()

    def close(self):  # (_Segment.abort)
        self.file.close()

    def overview(self):
        if 'overview' not in self.file.root:
            self.file.create_group('/', 'overview')
        return self.file.root.overview

    def overview_rows(self, name, columns, np):
        """Append rows to an overview table (made by the first batch; its string columns
        are sized then, with room to grow: a longer text is cut, ending in '...')."""
        table = self.tables.get(name)
        n = len(columns[0][1])
        texts = {}  # (the first batch's texts, encoded once)
        if table is None:
            widths = {}
            for col, values in columns:
                if values and type(values[0]) is str:
                    texts[col] = _h5_texts(values, None, np)
                    widths[col] = max(16, 2 * texts[col].itemsize)
            dtype = [(col, np.dtype('S%d' % widths[col])) if col in widths else
                     (col, np.array(values).dtype) for col, values in columns]
            table = self.tables[name] = self.file.create_table(
                self.overview(), name, description=_h5_description(dtype),
                chunkshape=(max(1, min(4096, 65536 // np.dtype(dtype).itemsize)),),
                filters=_require('tables').Filters(complevel=1, complib='zlib', shuffle=True))
        rows = np.empty(n, dtype=table.dtype)
        for col, values in columns:
            kind = table.dtype[col].kind
            if col in texts:  # (fits: the column was sized for them)
                rows[col] = texts[col]
            elif kind == 'S':
                rows[col] = _h5_texts(values, table.dtype[col].itemsize, np)
            else:
                rows[col] = values
        table.append(rows)


# ============================================================================================
# HDF5 writing - datasets, chunks and attributes
# ============================================================================================
def _compresses(arr, np):
    """Whether compression pays for a new dataset: its first MB, shuffled as HDF5's
    filter would, shrinks by 10% or more under fast zlib. Noise (random numbers, images
    from a sensor) does not, and zlib level 9 spends ~20 s a GB on it for nothing."""
    if arr.nbytes < (64 << 10):
        return True  # (too small to matter either way)
    sample = np.ascontiguousarray(arr.reshape(-1)[:(1 << 20) // arr.itemsize])
    if sample.itemsize > 1 and sample.dtype.kind in 'biufc':
        sample = sample.view(np.uint8).reshape(-1, sample.itemsize).T
    raw = sample.tobytes()
    return len(zlib.compress(raw, 1)) < 0.9 * len(raw)


def _fletcher32(data, np):
    """HDF5's Fletcher-32 of `data` as its fletcher32 filter appends it to a chunk
    (4 bytes, little-endian). HDF5 sums 16-bit big-endian words (an odd last byte as
    the high byte of a word) into sum1 and sum1's running values into sum2, folding
    both to 16 bits every 360 words; a folded sum is the sum mod 65535 taken in
    1..65535 (0 only for zeros), so the exact sums are taken here, with cumulative
    sums over blocks of words."""
    words = np.frombuffer(data, dtype='>u2', count=len(data) // 2)
    s1 = s2 = 0
    for lo in range(0, len(words), 1 << 16):  # (a block's sums fit in 64 bits)
        sums = np.cumsum(words[lo:lo + (1 << 16)], dtype=np.uint64)
        s2 += s1 * len(sums) + int(sums.sum())
        s1 += int(sums[-1])
    if len(data) % 2:
        s1 += data[-1] << 8
        s2 += s1
    s1, s2 = (s and (s - 1) % 65535 + 1 for s in (s1, s2))
    return struct.pack('<I', s2 << 16 | s1)


def _h5_texts(values, size, np):
    """str values as an S array (UTF-8, lone surrogates escaped), each cut to `size`
    bytes with '...' where longer (None: as long as the longest)."""
    try:  # numpy encodes ASCII itself, ~10x faster than a loop
        arr = np.array(values, dtype='S')
    except UnicodeEncodeError:
        arr = np.array([v.encode('utf-8', 'backslashreplace') for v in values], dtype='S')
    if size is not None and arr.dtype.itemsize > size:
        long = np.char.str_len(arr) > size
        arr = arr.astype('S%d' % size)
        arr[long] = np.char.add(arr[long].astype('S%d' % (size - 3)), b'...')
    return arr


def _h5_fits(node, had, kind, arr):
    """Whether a batch's array (of `kind`) can be appended to a segment's dataset (of
    kind `had`)."""
    if had != kind or tuple(node.shape[1:]) != arr.shape[1:]:
        return False
    if node.dtype == arr.dtype:
        return True
    return node.dtype.kind == arr.dtype.kind == 'S' and arr.dtype.itemsize <= node.dtype.itemsize


def _h5_append(f, group, name, arr, kind, filters):
    """Append rows to an extendable dataset of a segment (made by the first batch, sized
    so that a chunk holds ~64 KB-1 MB, or one row of a big array)."""
    node = group._f_get_child(name) if name in group else None
    if node is None:
        tables = _require('tables')
        np = sys.modules['numpy']
        dtype = arr.dtype
        if dtype.kind == 'S':  # room for longer texts in later batches
            dtype = np.dtype('S%d' % max(8, 2 * dtype.itemsize))
        row = max(1, dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64)))
        rows = max(1, min(1 << 20, (1 << 20) // row if row < (1 << 20) else 1,
                          max(len(arr), 1024)))
        if filters is not None and not _compresses(arr, np):
            # (judged on the first batch; a small one keeps the filters: a segment
            # flushes every column when one of them fills its budget, so a column's
            # first batch may be a few rows of millions to come)
            filters = None
        # Every chunk carries HDF5's Fletcher-32 (4 bytes): a file over _VERIFY_MAX is
        # not hashed at its open, and a chunk stored raw has no zlib adler32 either, so
        # this finds a flipped byte in it, at its read (by PyTables, h5py and HDF5).
        filters = tables.Filters(complevel=0, fletcher32=True) if filters is None else \
            filters.copy(fletcher32=True)
        node = f.create_earray(group, name, atom=tables.Atom.from_dtype(dtype),
                               shape=(0,) + arr.shape[1:], filters=filters,
                               chunkshape=(rows,) + arr.shape[1:])
        _h5_set(node, 'mp_type', kind)
    if arr.dtype != node.dtype:
        arr = arr.astype(node.dtype)
    if len(arr) and _direct_chunks(node, arr):
        _append_chunks(node, arr)
    elif len(arr):
        node.append(arr)
    return node


def _direct_chunks(node, arr):
    """Whether the whole chunks of a batch can be compressed here, in threads, and
    written directly: zlib (with or without shuffle), numbers, chunks of 64 KB or more.
    Python's zlib releases the GIL, so the cores compress in parallel; HDF5's own filter
    runs on one core, at half the speed of zlib here."""
    filters, rows = node.filters, node.chunkshape[0]
    return filters.complib == 'zlib' and filters.complevel > 0 and \
        len(arr) >= rows and rows * arr[0].nbytes >= (64 << 10) and \
        arr.dtype.kind in 'biufc' and arr.dtype.isnative and \
        tuple(node.chunkshape[1:]) == arr.shape[1:] and hasattr(node, 'write_chunk')


def _append_chunks(node, arr):
    """Append `arr`: the rows up to a chunk's edge through HDF5, then whole chunks written
    directly (with the Fletcher-32 HDF5's filter would append: it is last in the
    pipeline, so of the bytes as stored), then the rest through HDF5 again."""
    import concurrent.futures
    filters, np, rows = node.filters, sys.modules['numpy'], node.chunkshape[0]
    shuffle = filters.shuffle and arr.itemsize > 1
    skip_all = 3 if filters.shuffle else 1  # (the filter mask of a chunk stored raw)

    def pack(piece):
        raw = np.ascontiguousarray(piece).reshape(-1)
        data = raw.view(np.uint8).reshape(-1, raw.itemsize).T.tobytes() if shuffle else \
            raw.tobytes()  # (HDF5's shuffle: every value's first byte, then second, ...)
        packed = zlib.compress(data, filters.complevel)
        packed, mask = (packed, 0) if len(packed) < len(data) else \
            (raw.tobytes(), skip_all)
        return (packed + _fletcher32(packed, np), mask) if filters.fletcher32 else \
            (packed, mask)
    fill = (-node.nrows) % rows
    if fill:
        node.append(arr[:fill])
        arr = arr[fill:]
    whole = len(arr) // rows * rows
    if whole:
        with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
            chunks = list(pool.map(pack, (arr[i:i + rows] for i in range(0, whole, rows))))
        start = node.nrows
        node.truncate(start + whole)
        zeros = (0,) * (arr.ndim - 1)
        for k, (data, mask) in enumerate(chunks):
            node.write_chunk((start + k * rows,) + zeros, data, filter_mask=mask)
    if len(arr) > whole:
        node.append(arr[whole:])


def _summaries_of(meta, idxs):
    """The parameter summaries of the given runs, from a state's explored ranges."""
    return _run_summaries([(k, ((meta['nodes'].get(k) or {}).get('data') or {}).get(
        'explored_data') or ()) for k in meta['explored']], idxs)


_SCALAR_KINDS = ('bool', 'int', 'float', 'complex', 'str', 'npscalar')
_COLUMN_META = frozenset(('_idx', '_comments', '_comment_idx', '_ann', '_ann_idx',
                          '_empty_idx', '_classes', '_class_idx'))  # datasets of a run column that are not items


_ATTR_KINDS = {'bool': bool, 'int': int, 'float': float, 'str': str}
# The JSON of a group's mp_leaves stays below this: an HDF5 attribute must fit in 64 KB
# (with PyTables' default file format); further scalar leaves of the group are datasets.
_PACK_BYTES = 48 * 1024


def _attr_kind(name, value, rec):
    """The kind of a leaf's single item if it is stored as an attribute of its group
    (format 2): bool, int64, float or a short str, no annotations, and a name that cannot
    clash with minipypet's (mp_*) or PyTables' (upper case) attributes; else None."""
    if rec.get('ann') or name.startswith('mp_') or name == name.upper():
        return None
    t = type(value)
    if t is bool or t is float:
        return t.__name__
    if t is int:
        return 'int' if -2 ** 63 <= value < 2 ** 63 else None
    if t is str:
        return 'str' if 0 < len(value) <= 1024 and '\x00' not in value and _is_utf8(value) \
            else None
    return None


def _leaf_attrs(node, rec):
    _h5_set(node, 'mp_kind', rec['kind'])
    if rec.get('class'):
        _h5_set(node, 'mp_class', rec['class'])
    if rec.get('comment'):
        _h5_set(node, 'mp_comment', _attr_text(rec['comment'], node, 'comment'))
    if rec.get('ann'):
        _h5_set(node, 'mp_annotations', _attr_text(_to_json(rec['ann']), node, 'annotations'))


def _h5_set(node, name, value):
    """Attribute `name` of a node made in this write, through PyTables' C-level setter:
    the Python one checks the name against PyTables' own (~25 us each, numpy per call)
    and keeps a cache this writer never reads. The value becomes a numpy scalar as
    PyTables would make it, so the file is the same."""
    np = sys.modules['numpy']  # (imported: this is an HDF5 write)
    node._v_attrs._g_setattr(node, name, np.array(value))


_ATTR_TEXT_MAX = 60000  # bytes: an HDF5 attribute must fit in 64 KB (PyTables' file format)


def _attr_text(text, where, what):
    """`text`, if it fits in an HDF5 attribute; else a StorageError naming the node."""
    size = len(text) if text.isascii() else len(text.encode('utf-8'))
    if size > _ATTR_TEXT_MAX:
        where = where if isinstance(where, str) else where._v_pathname
        raise StorageError('%s: its %s is %d bytes, and the HDF5 file keeps it in an '
                           'attribute of at most %d bytes; shorten it (long text belongs in '
                           'a result), or use the pickle backend' % (where, what, size,
                                                                    _ATTR_TEXT_MAX))
    return text


def _check_attr_texts(state):
    """The texts HDF5 keeps in attributes fit: checked before the runs, as the file itself is
    written only at the end (run-level comments are checked when they are stored)."""
    _attr_text(state.get('comment') or '', 'trajectory ' + state['name'], 'comment')
    if state.get('ann'):
        _attr_text(_to_json(state['ann']), 'trajectory ' + state['name'], 'annotations')
    for full_name, rec in state['nodes'].items():
        if rec.get('comment'):
            _attr_text(rec['comment'], full_name, 'comment')
        if rec.get('ann'):
            _attr_text(_to_json(rec['ann']), full_name, 'annotations')


# minipypet's HDF5 files (main files, segments) start with a user block (bytes HDF5 leaves
# alone) that holds the SHA-1 of the rest: checked before the HDF5 library reads a byte, so
# that damage gives a StorageError, never wrong values (nor a crash inside the library).
_USER_BLOCK = 512
_H5_STAMP = b'MINIPYPET-SHA1 '
_H5_MAGIC = b'\x89HDF\r\n\x1a\n'
_VERIFIED = {}  # path -> (inode, mtime, size) of the version whose checksum held
# Bytes: a bigger file is checked by `python -m minipypet check` instead of at every
# open (a skeleton load, or one run's array, of a 10 GB sweep must not hash 10 GB first:
# ~13 s). [None]: every file, whatever its size (the check command).
_VERIFY_MAX = [128 << 20]


def _h5_stamp(path):
    """Write the SHA-1 of a closed HDF5 file (after its user block) into the user block,
    once it is known whole: PyTables ignores what H5Fflush and H5Fclose return, so a write
    that failed at the close (a full disk) would leave a torn file without an error. The
    close writes the superblock last, with the end-of-file address: it must be the size."""
    h = hashlib.sha1()
    with open(path, 'r+b') as f:
        f.seek(_USER_BLOCK)
        head = f.read(64)
        size = os.fstat(f.fileno()).st_size
        if head[:8] == _H5_MAGIC and head[8] in (0, 1, 2, 3) and head[13 if head[8] < 2
                                                                      else 9] == 8:
            # (superblock versions 0/1: base, free space, end of file address at 24
            # (+4); 2/3: base, extension, end of file address from 12; 8-byte addresses)
            at = (24 + 4 * head[8] + 16) if head[8] < 2 else 28
            eof = struct.unpack_from('<Q', head, at)[0]
            if eof not in (size, size - _USER_BLOCK):
                import errno
                raise OSError(errno.EFBIG if _at_size_limit(path) else errno.EIO,
                              'HDF5 did not write %s whole (it ends at byte %d, its '
                              'superblock says %d): a write failed as the file was closed'
                              % (path, size, eof))
        f.seek(_USER_BLOCK)
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
        f.seek(0)
        f.write(_H5_STAMP + h.hexdigest().encode('ascii') + b'\n')


def _h5_verify(path, head, error, f):
    """Check a stamped file's SHA-1 (once per version of the file in this process), read
    through `f`, the open file whose `head` was read: another process may replace the
    file at `path` meanwhile."""
    st = os.fstat(f.fileno())
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    limit = _VERIFY_MAX[0]
    if _VERIFIED.get(path) == key or limit is not None and st.st_size > limit:
        return
    want = head[len(_H5_STAMP):len(_H5_STAMP) + 40]
    h = hashlib.sha1()
    f.seek(_USER_BLOCK)
    for chunk in iter(lambda: f.read(1 << 20), b''):
        h.update(chunk)
    if h.hexdigest().encode('ascii') != want:
        if _held_by_writer(path):
            raise error('%s is open for writing in another process (which may be changing '
                        'it); load it when that process is done' % path)
        raise error('%s is damaged: its checksum does not match its content (changed or '
                    'truncated after it was written); nothing of it is loaded' % path)
    if len(_VERIFIED) > 4096:
        _VERIFIED.clear()
    _VERIFIED[path] = key


def _held_by_writer(path):
    """True if another process holds the file open for writing: HDF5 writers hold an
    exclusive flock on it (asked here without the library, which may crash on damage)."""
    try:
        import fcntl
        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (and with it the shared lock)
    return False


_NO_UNPICKLE = set()  # files whose HDF5 attributes are never unpickled (see _AttrPickle)


class _AttrPickle:
    """The pickle module as PyTables' attribute sets see it once minipypet reads HDF5.

    tables.attributeset unpickles every attribute value ending in '.' as soon as a
    node's attributes are touched (opening a file touches the root's): a crafted file
    would run code. In the files minipypet opens, attributes unpickle as plain data only
    (_safe_loads; PyTables keeps a refused value as its raw bytes); others as before."""

    def __getattr__(self, name):
        return getattr(pickle, name)

    def loads(self, data, **kwargs):
        attrs = sys._getframe(1).f_locals.get('self')  # (AttributeSet.__getattr__'s)
        if getattr(getattr(attrs, '_v__nodefile', None), 'filename', None) in _NO_UNPICKLE:
            return _safe_loads(data)
        return pickle.loads(data, **kwargs)


def _guard_attributes(path):
    """Never unpickle anything but plain data from the HDF5 attributes of `path`."""
    _require('tables', 'hdf5')
    attributeset = sys.modules['tables.attributeset']
    if not isinstance(attributeset.pickle, _AttrPickle):
        attributeset.pickle = _AttrPickle()
    _NO_UNPICKLE.add(path)
    return path


def _open_hdf5(path, error, missing):
    """PyTables' file for reading, or `error`/`missing` naming the file."""
    tables = _require('tables', 'hdf5')
    path = _guard_attributes(os.fspath(path))
    try:
        for _ in range(8):  # (a checkpoint elsewhere may replace the file as it is opened:
            with open(path, 'rb') as probe:  # then the one opened is not the one checked)
                head = probe.read(_USER_BLOCK + 8)
                if head.startswith(_H5_STAMP) and head[_USER_BLOCK:] == _H5_MAGIC:
                    _h5_verify(path, head, error, probe)
                elif not head.startswith(_H5_MAGIC):
                    raise error('%s is not an HDF5 file%s' % (
                        path, ' (or it is damaged)' if _H5_MAGIC in head else ''))
                checked = _file_stamp(probe.fileno())
            f = tables.open_file(path, 'r')
            if _file_stamp(path) == checked:
                return f
            f.close()
        raise error('%s was replaced again and again as it was opened (another process '
                    'is storing into it); open it when that process is done' % path)
    except error:
        raise
    except FileNotFoundError:
        raise missing('%s does not exist' % path) from None
    except Exception as exc:
        text = str(exc)
        # (HDF5's file locking says "unable to lock file"; a truncated file's "sblock" not)
        if re.search(r'\block\b', text, re.I) or _held_by_writer(path):
            raise error('%s is open for writing in another process (HDF5 file locking '
                        'refused to open it); open it when that process is done: %s'
                        % (path, ' '.join(text.split())[:300])) from exc
        raise error('%s cannot be opened (truncated or corrupt?): %s: %s'
                    % (path, type(exc).__name__, exc)) from exc


def _attr(attrs, key, default=None):
    """An HDF5 attribute read raw (as str, int, float or bool). PyTables' own attribute access
    unpickles any bytes value ending in '.': file content must never be unpickled."""
    if key not in attrs._v_attrnames:
        return default
    value = attrs._g_getattr(attrs._g_getnode(), key)
    if hasattr(value, 'item') and getattr(value, 'ndim', 0) == 0:
        value = value.item()
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else value


def _range_text(values, limit=1 << 20):
    """repr() of an explored range, cut after `limit` characters with '...' (the range is
    stored whole in its explored_data dataset; a 1M-run range's text would take ~20 MB)."""
    if not isinstance(values, list):
        return repr(values)
    parts, size = [], 2
    for value in values:
        text = repr(value)
        size += len(text) + 2
        if size > limit:
            parts.append('...')
            break
        parts.append(text)
    return '[' + ', '.join(parts) + ']'


def _brief_repr(value):
    """repr() that stays cheap for big values: only `limit` characters are kept anyway,
    and the repr of a 1,000-element array costs ~10 ms."""
    if _is_numpy(value) and getattr(value, 'size', 0) > 8:
        head = ', '.join(repr(v) for v in value.ravel()[:4].tolist())
        return 'array([%s, ...], shape=%s, dtype=%s)' % (head, value.shape, value.dtype)
    if isinstance(value, (list, tuple, dict, set, frozenset)) and len(value) > 16:
        import reprlib
        return reprlib.repr(value)
    return repr(value)


def _value_summary(data, limit=64):
    if data is None:
        return ''
    if len(data) == 1:  # the common one-item result: no generality
        (key, value), = data.items()
        if type(value) in (float, int, bool) and key[:2] != '__':
            text = ('%s' if key == 'data' else key + '=%s') % repr(value)
            return text if len(text) <= limit else text[:limit - 3] + '...'
    if set(data) <= {'data', 'explored_data'} and 'data' in data:
        text = _brief_repr(data['data'])
    else:
        text = ', '.join('%s=%s' % (k, _brief_repr(v)) for k, v in data.items()
                         if not k.startswith('__'))
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _value_summaries(datas, limit=64):
    """[_value_summary(data) for data in datas]; a sweep's usual column (one int, float
    or bool item of one name in every row) repr'd in C: ~2.5x faster."""
    first = datas[0] if datas else None
    if type(first) is dict and len(first) == 1:
        key = next(iter(first))
        if key[:2] != '__' and all(type(d) is dict and len(d) == 1 and key in d
                                   for d in datas):
            values = [d[key] for d in datas]
            kinds = set(map(type, values))
            if kinds <= {float, int, bool}:
                head = '' if key == 'data' else key + '='
                texts = list(map((head.replace('%', '%%') + '%r').__mod__, values))
                if len(head) + 24 <= limit and int not in kinds or \
                        max(map(len, texts)) <= limit:  # (a float's repr: <= 24)
                    return texts
    return [_value_summary(data, limit) for data in datas]


def _value_array(value, np):
    """(kind, numpy array) for one value; 'json' holds the tagged JSON as uint8."""
    t = type(value)
    if t is bool:
        return 'bool', np.array(value)
    if t is int and -2 ** 63 <= value < 2 ** 63:
        return 'int', np.array(value, dtype=np.int64)
    if t is float:
        return 'float', np.array(value, dtype=np.float64)
    if t is complex:
        return 'complex', np.array(value, dtype=np.complex128)
    if t is str and '\x00' not in value and value and _is_utf8(value):
        return 'str', np.array(value.encode('utf-8'))
    if t is bytes and value and not value.endswith(b'\x00'):
        return 'bytes', np.array(value)
    if _is_numpy(value) and getattr(value, 'dtype', None) is not None and \
            value.dtype.kind in 'biufc':
        if isinstance(value, np.ndarray) and value.size:
            return 'ndarray', value
        if not isinstance(value, np.ndarray):
            return 'npscalar', np.array(value)
    return 'json', np.frombuffer(_to_json(value).encode('utf-8'), dtype=np.uint8)


def _column_array(values, np):
    """(kind, array, offsets or None) holding a list of values, one row each."""
    types = {type(v) for v in values}
    if len(types) == 1 and values:
        t = types.pop()
        try:
            if t is float:
                return 'float', np.array(values, dtype=np.float64), None
            if t is bool:
                return 'bool', np.array(values, dtype=np.bool_), None
            if t is int:
                return 'int', np.array(values, dtype=np.int64), None
            if t is complex:
                return 'complex', np.array(values, dtype=np.complex128), None
        except OverflowError:
            pass
        if t is str and not any('\x00' in v for v in values) and all(map(_is_utf8, values)):
            return 'str', np.array([v.encode('utf-8') for v in values] or [b'']), None
        if t is bytes and all(v and not v.endswith(b'\x00') for v in values):
            return 'bytes', np.array(values), None
        if t.__module__ == 'numpy' and t is not np.ndarray and \
                np.dtype(t).kind in 'biufc':
            return 'npscalar', np.array(values), None
        if t is np.ndarray:
            first = values[0]
            if first.dtype.kind in 'biufc' and first.size and first.ndim and all(
                    v.shape == first.shape and v.dtype == first.dtype for v in values):
                return 'ndarray', np.stack(values), None  # (0-d arrays: JSON keeps them)
    parts = [_to_json(v).encode('utf-8') for v in values]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return 'json', np.frombuffer(b''.join(parts) or b' ', dtype=np.uint8), offsets


def _read_node(group, name, np, single=False):
    """Inverse of _value_array (single=True) / _column_array."""
    offsets = group._f_get_child(name + '__offsets') if name + '__offsets' in group else None
    return _decode_node(group._f_get_child(name), offsets, np, single and offsets is None)


def _decode_node(node, offsets, np, single):
    kind = _attr(node._v_attrs, 'mp_type')
    if getattr(getattr(node, 'atom', None), 'kind', None) == 'object':  # a pickled VLArray
        raise StorageError('%s is not a minipypet dataset (it holds pickled objects)'
                           % node._v_pathname)
    try:
        arr = node.read()
    except Exception as exc:
        raise _damaged(node, exc) or exc
    if kind == 'json':
        raw = arr.tobytes()
        if offsets is None:
            return _from_json(raw.decode('utf-8'))
        offsets = _h5_read(offsets).tolist()
        return [_from_json(raw[a:b].decode('utf-8')) for a, b in zip(offsets, offsets[1:])]
    if single:
        if kind == 'str':
            return arr.item().decode('utf-8')
        if kind in ('bool', 'int', 'float', 'complex', 'bytes'):
            return arr.item() if hasattr(arr, 'item') else arr
        if kind == 'npscalar':
            return arr[()]
        return arr
    if kind == 'str':
        return [v.decode('utf-8') for v in arr.tolist()]
    if kind in ('int', 'float') and arr.ndim == 1 and arr.size > 1 << 16:
        return _shared_list(arr, np)
    if kind in ('bool', 'int', 'float', 'complex', 'bytes'):
        return arr.tolist()
    return list(arr)


def _shared_list(arr, np):
    """arr.tolist(), with one Python object for each distinct value: an explored range of a
    cartesian product repeats each value many times (a million runs' range took ~32 MB,
    ~24 of them floats). Distinct by their bits, so that 0.0 and -0.0 stay apart."""
    if arr.dtype.itemsize != 8 or arr.dtype.kind not in 'fi':
        return arr.tolist()
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder('='))
    bits = arr.view(np.int64)
    if len(np.unique(bits[:4096])) > 3072 and len(np.unique(
            bits[::len(bits) // 4096])) > 3072:  # (no repeats seen: spare the sort)
        return arr.tolist()
    uniq, first, inverse = np.unique(bits, return_index=True,
                                     return_inverse=True)
    if len(uniq) > len(arr) // 2:  # (few repeats: nothing to share)
        return arr.tolist()
    objects = np.empty(len(uniq), dtype=object)
    objects[:] = arr[first].tolist()
    return objects[inverse.ravel()].tolist()


def _h5_table(f, group, name, columns, filters, np):
    """A table from [(column, values)]: strings as utf-8 of their full length, never cut."""
    n = len(columns[0][1]) if columns else 0
    dtype, arrays = [], []
    for col, values in columns:
        if type(values) is np.ndarray and values.dtype.kind in 'biuf':
            arr = values
        elif len(values) and set(map(type, values)) == {str} or not len(values) and col in (
                'name', 'location', 'value', 'comment', 'range', 'time', 'error'):
            try:  # numpy encodes ASCII itself, ~10x faster than a loop
                arr = np.array(values or [b''], dtype='S')[:n]
            except UnicodeEncodeError:  # (a lone surrogate shows as \udcxx: these are summaries)
                arr = np.array([v.encode('utf-8', 'backslashreplace') for v in values],
                               dtype='S')
            if arr.dtype.itemsize == 0:  # all empty
                arr = arr.astype('S1')
        else:
            try:
                arr = np.array(values)
            except (ValueError, OverflowError):
                arr = None
            if arr is None or arr.dtype.kind not in 'biufc' or arr.shape != (n,):
                # Mixed kinds, ints beyond 64 bits: the column holds their text
                arr = np.array([(v if type(v) is str else repr(v)).encode(
                    'utf-8', 'backslashreplace') for v in values] or [b''], dtype='S')[:n]
                if arr.dtype.itemsize == 0:
                    arr = arr.astype('S1')
        dtype.append((col, arr.dtype))
        arrays.append(arr)
    # One chunk of at most 64 KB: PyTables' default chunk would be allocated whole even for
    # a table of three rows. Small tables are not compressed (it costs more than it saves).
    itemsize = np.dtype(dtype).itemsize
    rows = max(1, min(n, 65536 // max(1, itemsize)))
    out = f.create_table(group, name, description=_h5_description(dtype), chunkshape=(rows,),
                         filters=filters if n * itemsize > HDF5StorageService._BIG else None)
    step = 1 << 16  # (rows at a time: 1M runs' table whole would cost ~50 MB more)
    for start in range(0, n, step):
        block = np.empty(min(step, n - start), dtype=dtype)
        for (col, _), arr in zip(dtype, arrays):
            block[col] = arr[start:start + step]
        out.append(block)
    # Its rows went to HDF5 as they were appended; PyTables' default close would flush
    # the whole file's buffers once per table (~0.3 ms each), where the file's close
    # does it once (_h5_stamp then checks that the close wrote the file whole).
    out.close(flush=False)


def _h5_description(dtype):
    """PyTables' description of a row dtype, from its column classes: twice as fast as
    letting PyTables derive it from the dtype (which inspects signatures per column)."""
    tables = _require('tables')
    simple = {'f8': tables.Float64Col, 'i8': tables.Int64Col, 'b1': tables.BoolCol,
              'c16': tables.Complex128Col}
    cols = {}
    for pos, (col, dt) in enumerate(dtype):
        code = '%s%d' % (dt.kind, dt.itemsize)
        if dt.kind == 'S':
            cols[col] = tables.StringCol(dt.itemsize, pos=pos)
        elif code in simple and dt.byteorder in '=|<' and not dt.shape:
            cols[col] = simple[code](pos=pos)
        else:
            cols[col] = tables.Col.from_dtype(dt, pos=pos)
    return tables.Description(cols)


# ============================================================================================
# Storage registry - the backends and the one factory
# ============================================================================================
# (STORAGE_SERVICES, filled by the backends' BACKEND names, is in "Storage services")


def _make_service(spec=None, filename=None, name=None, mode='store', **options):
    """Build a storage service: the one place services are made.

    Args:
        spec: None (HDF5 when PyTables is installed, else pickle; an existing file's first
            bytes decide), a name in STORAGE_SERVICES or a class name such as pypet's
            'HDF5StorageService', a StorageService class, or an instance (returned as is).
        mode: 'store', or 'load' to open a file that must exist.
        options: the file services' arguments (file_title, complevel, fsync_interval, ...);
            each backend gets those it takes."""
    unknown = set(options) - _STORAGE_ARGUMENTS
    if unknown:
        raise TypeError('unknown storage arguments %s; the storage services take %s'
                        % (sorted(unknown), sorted(_STORAGE_ARGUMENTS)))
    if isinstance(spec, str):
        key = spec.lower().replace('storageservice', '')
        if key not in STORAGE_SERVICES:
            raise ConfigurationError(
                'storage_service %r is not one of %s (or their class names, e.g. '
                '"HDF5StorageService"); pass a class or an instance for your own'
                % (spec, sorted(STORAGE_SERVICES)))
        spec = STORAGE_SERVICES[key]
    if spec is not None and not isinstance(spec, type):
        return spec
    if spec is not None and not issubclass(spec, _FileService):
        return spec()
    if mode == 'load':
        if spec is None:
            if filename is None:
                raise ConfigurationError('loading needs filename=... (or a storage_service)')
            return _open_service(os.fspath(filename))
        service = spec(filename, trajectory_name=name)  # (no filename: the default one)
        if not os.path.exists(service.filename):
            raise DataNotInStorageError('cannot load: %s does not exist' % service.filename)
        return service
    if spec is None:
        spec, filename = _default_backend(filename)
    return spec(filename, trajectory_name=name,
                **{k: v for k, v in options.items() if k in spec.OPTIONS})


def _default_backend(filename):
    """HDF5 when PyTables is there, else pickle (said once, and the name ends in .pkl);
    an existing pickle file, or a name ending in .pkl, stays pickle."""
    existing = None
    if filename is not None and os.path.isfile(filename):
        with open(filename, 'rb') as probe:
            existing = probe.read(len(PickleStorageService.MAGIC))
    pickled = PickleStorageService._claims(existing) if existing is not None else (
        filename is not None and os.fspath(filename).endswith(('.pkl', '.pickle')))
    if pickled:
        return PickleStorageService, filename
    if _have('tables'):
        return HDF5StorageService, filename
    _say_once('PyTables is not installed, so minipypet stores with the pickle backend '
              '(pip install tables numpy for HDF5)')
    if filename is not None and not os.fspath(filename).endswith(('/', os.sep)) and \
            not os.path.isdir(filename):
        filename = os.path.splitext(os.fspath(filename))[0] + '.pkl'
    return PickleStorageService, filename


def _open_service(filename):
    """The service for an existing file, by its first bytes (a pickle file may sit beside
    the name asked for, from a sweep without PyTables), or for a journal not yet folded."""
    pkl = os.path.splitext(filename)[0] + '.pkl'
    for path in (filename, pkl):
        if os.path.isfile(path):
            with open(path, 'rb') as probe:
                head = probe.read(32)
            for cls in STORAGE_SERVICES.values():
                if issubclass(cls, _FileService) and cls._claims(head):
                    return cls._open_existing(path)
            raise StorageError('%s is neither a minipypet HDF5 nor a minipypet pickle '
                               'file' % path)
    if os.path.isfile(filename + '.journal'):
        return (HDF5StorageService if _have('tables') else PickleStorageService)(filename)
    if os.path.isfile(pkl + '.journal'):  # (a first sweep without PyTables)
        return PickleStorageService(pkl)
    raise DataNotInStorageError('cannot load: %s does not exist' % filename)


_SAID = set()


def _say_once(message, remember=True):
    if message not in _SAID:
        if remember:
            _SAID.add(message)
        logger.warning(message)


# ============================================================================================
# Reading pypet files - HDF5 written by pypet, read only
# ============================================================================================
# pypet's layout in short (one root group per trajectory):
#   /<traj>                      attrs: SRVC_INIT_COMMENT
#   /<traj>/overview/info        one row: name, time, timestamp, comment, length, python, version
#   /<traj>/overview/runs        one row per run: idx, timestamp, finish_timestamp, completed,
#                                parameter_summary, short_environment_hexsha (rows of runs never
#                                stored have completed=0 and placeholder values)
#   /<traj>/overview/explorations   column 'explorations': full names of explored parameters
#   /<traj>/{config,parameters,derived_parameters,results}/...   the tree: a group with the
#       attribute SRVC_LEAF=True is a leaf (SRVC_INIT_CLASS_NAME, SRVC_INIT_COMMENT,
#       SRVC_ANNOTATED + SRVC_AN_<key>); its children are the leaf's items, each with
#       SRVC_STORE (ARRAY, CARRAY, EARRAY, VLARRAY, TABLE, DICT, NESTED_GROUP, FRAME, ...) and
#       SRVC_DATA_COLL_TYPE / SRVC_DATA_SCALAR_TYPE (tables: SRVC_COLUMN_<col>_COLL_TYPE / ...).
_PP_RUN_RE = re.compile(r'^run_(\d{8})$')
_PP_SET_RE = re.compile(r'^run_set_(\d{5})$')
_PP_BRANCHES = ('config', 'parameters', 'derived_parameters', 'results')
_PP_ARRAY_STORES = ('ARRAY', 'CARRAY', 'EARRAY', 'VLARRAY')
_PP_PANDAS_STORES = ('FRAME', 'SERIES', 'PANEL')
_PP_PY_SCALARS = {'int': int, 'long': int, 'float': float, 'bool': bool, 'complex': complex,
                  'str': str, 'unicode': str, 'bytes': bytes}
_PP_TYPE_REPR_RE = re.compile(r"^<(?:type|class) '(?:numpy\.)?(\w+)'>$")  # pypet < 0.1b


class PypetReadError(StorageError):
    """A pypet file (or a trajectory in it) cannot be read."""


def _pp_open(path):
    return _open_hdf5(path, PypetReadError, PypetReadError)


def _pp_attrnames(node):
    return node._v_attrs._v_attrnames


def _pp_attr(node, name, default=None):
    """An HDF5 attribute, read raw: PyTables' normal attribute access unpickles any
    bytes value that ends in '.', i.e. it would unpickle file content."""
    attrs = node._v_attrs
    if name not in attrs._v_attrnames:
        return default
    getter = getattr(attrs, '_g_getattr', None)
    value = getter(node, name) if getter is not None else getattr(attrs, name)
    return value


def _pp_str(value, default=''):
    if value is None:
        return default
    if isinstance(value, bytes):  # also numpy.bytes_
        return value.decode('utf-8', 'replace')
    if hasattr(value, 'ndim') and getattr(value, 'ndim', 0) == 0 and hasattr(value, 'item'):
        value = value.item()
        if isinstance(value, bytes):
            return value.decode('utf-8', 'replace')
    return str(value)


def _pp_plain_attr(value):
    """An annotation value as plain data (numpy str/bytes/number scalars -> Python)."""
    import numpy as np
    return value.item() if isinstance(value, np.generic) else value


def _pp_children(mapping):
    """(name, node) pairs of a PyTables children dict (its .get()/.values() do not load
    the nodes, indexing does)."""
    return [(name, mapping[name]) for name in list(mapping)]


def _pp_is_traj_group(group):
    if 'overview' not in group._v_groups:
        return False
    overview = group._v_groups['overview']
    if 'info' not in overview._v_children:
        return False
    return getattr(overview._v_children['info'], '_c_classid', '') == 'TABLE'


def _pp_trajectories(f):
    """[(name, group)] of the pypet trajectories in an open file, oldest first (by the
    creation timestamp in overview/info; the HDF5 groups themselves are listed by name)."""
    found = []
    for name, group in _pp_children(f.root._v_groups):
        if not _pp_is_traj_group(group):
            continue
        try:
            stamp = float(group.overview.info.read(0, 1)['timestamp'][0])
        except Exception:
            stamp = float('inf')
        found.append((stamp, name, group))
    found.sort(key=lambda t: (t[0], t[1]))
    return [(name, group) for _, name, group in found]


def _is_pypet_file(path):
    """True for an HDF5 file holding at least one pypet trajectory (a root group with pypet's
    overview/info table); False for anything else, including minipypet's own files."""
    try:
        path = os.fspath(path)
        with open(path, 'rb') as probe:
            if probe.read(8) != b'\x89HDF\r\n\x1a\n':
                return False
        import tables
        with tables.open_file(_guard_attributes(path), 'r') as f:
            if 'minipypet_format' in f.root._v_attrs._v_attrnames:
                return False
            return any(_pp_is_traj_group(g) for _, g in _pp_children(f.root._v_groups))
    except Exception:
        return False


def _pypet_list_trajectories(path):
    """Names of the pypet trajectories in the file, oldest first."""
    with _pp_open(path) as f:
        return [name for name, _ in _pp_trajectories(f)]


# -- value restoration ---------------------------------------------------------------------
def _pp_type_name(stype):
    if stype is None:
        return None
    stype = _pp_str(stype)
    m = _PP_TYPE_REPR_RE.match(stype)
    return m.group(1) if m else stype


def _pp_scalar(value, stype, np):
    """One scalar converted to the type pypet recorded (SRVC_*SCALAR_TYPE)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return value
        value = value.reshape(())[()]
    if stype is None:
        return value
    if stype in ('str', 'unicode', 'str_'):
        text = value.decode('utf-8') if isinstance(value, bytes) else str(value)
        return np.str_(text) if stype == 'str_' else text
    if stype == 'bytes':
        return bytes(value) if not isinstance(value, str) else value.encode('utf-8')
    py = _PP_PY_SCALARS.get(stype)
    if py is not None:
        return py(value.item() if isinstance(value, np.generic) else value)
    if stype == 'bool_':
        return np.bool_(value)
    nptype = getattr(np, stype, None)
    if isinstance(nptype, type) and issubclass(nptype, np.generic):
        return nptype(value)
    return value


def _pp_restore(value, coll, stype, np):
    """Undo PyTables' type changes using pypet's COLL_TYPE / SCALAR_TYPE attributes."""
    coll = _pp_str(coll, None) if coll is not None else None
    stype = _pp_type_name(stype)
    if coll == 'COLL_SCALAR':
        return _pp_scalar(value, stype, np)
    if coll in ('COLL_LIST', 'COLL_TUPLE'):
        seq = [_pp_scalar(v, stype, np) for v in value]
        return tuple(seq) if coll == 'COLL_TUPLE' else seq
    if coll == 'COLL_EMPTY_DICT':
        return {}
    if coll in ('COLL_NDARRAY', 'COLL_MATRIX'):
        value = np.asarray(value)
        if stype == 'str' and value.dtype.kind == 'S':
            value = np.char.decode(value, 'utf-8')
        if coll == 'COLL_MATRIX':
            with warnings.catch_warnings():  # numpy's "matrix is not recommended"
                warnings.simplefilter('ignore', PendingDeprecationWarning)
                value = np.asmatrix(value)
        return value
    return value


# -- reading a leaf's items ----------------------------------------------------------------
def _pp_read_columns(table, types, np):
    """A table as {column: [restored values]}; `types` maps the SRVC_COLUMN_* attribute names
    to their values (from the table's attributes or a split table's type table)."""
    rows = table.read()
    out = {}
    for col in table.colnames:
        prefix = 'SRVC_COLUMN_%s_' % col
        coll, stype = types(prefix + 'COLL_TYPE'), types(prefix + 'SCALAR_TYPE')
        out[col] = [_pp_restore(v, coll, stype, np) for v in rows[col]]
    return out


def _pp_read_table_item(node, np):
    """A TABLE or DICT item (possibly split over several tables) as {column: [values]}."""
    import tables
    if isinstance(node, tables.Table):
        return _pp_read_columns(node, lambda key: _pp_attr(node, key), np)
    # a split table: a group of tables plus '<name>__SRVC_STORE' mapping attribute -> value
    type_name = node._v_name + '__SRVC_STORE'
    mapping = {}
    if type_name in node._v_children:
        rows = node._v_children[type_name].read()
        mapping = {_pp_str(k): _pp_str(v) for k, v in zip(rows['field_name'],
                                                           rows['data_type'])}
    out = {}
    for child_name in sorted(node._v_children):
        child = node._v_children[child_name]
        if child_name != type_name and isinstance(child, tables.Table):
            out.update(_pp_read_columns(child, mapping.get, np))
    return out


def _pp_read_array_item(node, np):
    value = node.read()
    if 'PTCOMPAT__empty__dtype' in _pp_attrnames(node):  # an empty array written by PyTables 2
        try:
            if value.shape == (1,) and value[0] == 0:
                dtype = _pp_attr(node, 'PTCOMPAT__empty__dtype')
                value = np.array([]) if dtype == 0 else np.array([], dtype=np.dtype(dtype))
        except (AttributeError, TypeError):
            pass
    return _pp_restore(value, _pp_attr(node, 'SRVC_DATA_COLL_TYPE'),
                       _pp_attr(node, 'SRVC_DATA_SCALAR_TYPE'), np)


def _pp_read_items(group, full_name, ctx, prefix=''):
    """All items of a leaf group as {name: value}; items in nested groups get dotted
    names. Items the reader cannot translate (pandas data without pandas, panels) are
    left out and noted in ctx.skipped."""
    np = ctx.np
    import tables
    items = {}
    for name, node in _pp_children(group._v_children):
        if isinstance(node, tables.link.Link):
            continue
        key = prefix + name
        store = _pp_str(_pp_attr(node, 'SRVC_STORE'), None)
        if isinstance(node, tables.Group) and (
                store == 'NESTED_GROUP' or (store is None and not
                                            _pp_attr(node, 'SRVC_SPLIT_TABLE'))):
            items.update(_pp_read_items(node, full_name, ctx, key + '.'))
            continue
        if store is None:
            store = 'TABLE' if isinstance(node, (tables.Table, tables.Group)) else 'ARRAY'
        if store == 'DICT':
            columns = _pp_read_table_item(node, np)
            value = {k: (v[0] if v else None) for k, v in columns.items()}
        elif store == 'TABLE':
            value = _pp_read_table_item(node, np)
        elif getattr(getattr(node, 'atom', None), 'kind', None) == 'object' and \
                _LOAD_POLICY.allow_pickle is not True:  # (a VLArray of objects unpickles
            # on read; pypet signs nothing, so only allow_pickle=True trusts it)
            ctx.skipped.append('%s[%r] (pickled objects, not unpickled: load with '
                               'allow_pickle=True if you trust the file)' % (full_name, key))
            continue
        elif store in _PP_ARRAY_STORES:
            value = _pp_read_array_item(node, np)
        elif store.startswith('SHARED_DATA') and isinstance(node, tables.Leaf) and \
                not store.endswith('FRAME'):
            value = node.read()  # shared tables/arrays: their plain content
        elif store in ('FRAME', 'SERIES') and importlib.util.find_spec('pandas'):
            # (pandas' own layout, so pandas reads it; it pickles object columns)
            if _LOAD_POLICY.allow_pickle is not True and any(
                    getattr(getattr(n, 'atom', None), 'kind', None) == 'object'
                    for n in node._f_walknodes('Leaf')):
                ctx.skipped.append('%s[%r] (pandas %s with pickled objects, not unpickled: '
                                   'load with allow_pickle=True if you trust the file)'
                                   % (full_name, key, store))
                continue
            import pandas
            value = pandas.read_hdf(ctx.path, node._v_pathname)
        else:
            ctx.skipped.append('%s[%r] (%s%s)' % (full_name, key, 'pandas ' if store in
                                                  _PP_PANDAS_STORES else '', store))
            continue
        items[key] = value
    return items


def _pp_protocol(dump):
    """The pickle protocol of a dump, from its PROTO opcode (old pypet files do not
    record it); 0 for dumps without one (protocols 0 and 1)."""
    if isinstance(dump, bytes) and len(dump) > 1 and dump[:1] == b'\x80':
        return dump[1]
    return 0


def _pp_column(items, key, col):
    value = items.get(key)
    if isinstance(value, dict):
        return value.get(col)
    return None


def _pp_leaf_data(cls, items):
    """pypet's stored items of one leaf -> minipypet's data dict for that leaf class."""
    if cls == 'PickleParameter':
        if 'data' not in items:
            return None  # an empty parameter
        data = {'data': items['data']}
        proto = items.get('__pckl_prtcl__')
        data['protocol'] = int(proto) if proto is not None else _pp_protocol(data['data'])
        idx = _pp_column(items, 'explored_data', 'idx')
        if idx is not None:
            data['explored_data'] = [items['xp_%08d' % int(i)] for i in idx]
        return data
    if cls == 'PickleResult':
        data = dict(items)
        proto = data.pop('__pckl_prtcl__', None)
        if proto is None:
            proto = _pp_protocol(next(iter(data.values()))) if data else 0
        data['__pickle_protocol__'] = int(proto)
        return data
    if cls in ('Parameter', 'ArrayParameter') or cls.endswith('Parameter') and (
            'data__rr__' in items or _pp_column(items, 'data', 'data') is not None):
        if 'data__rr__' in items:  # an ArrayParameter holding an array, tuple or list
            data = {'data': items['data__rr__']}
            idx = _pp_column(items, 'explored_data__rr__', 'idx')
            if idx is not None:
                explored = []
                for i in idx:
                    i = int(i)
                    key = 'explored__rr__.set_%05d.xa_%08d' % (i // 1000, i)
                    if key not in items:  # older pypet: flat names
                        key = 'xa__rr__%08d' % i
                    explored.append(items[key])
                data['explored_data'] = explored
            return data
        data = {}
        default = _pp_column(items, 'data', 'data')
        if default is not None:
            data['data'] = default[0]
        explored = _pp_column(items, 'explored_data', 'data')
        if explored is not None:
            data['explored_data'] = list(explored)
        if 'data' not in data:
            return None
        return data
    return items  # Result and anything else: the items as they are


# -- the tree -------------------------------------------------------------------------------
def _pp_split_run(parts):
    """['results', 'runs', 'run_00000003', 'z'] -> ('results.runs.$.z', 3), else None."""
    for i, part in enumerate(parts):
        m = _PP_RUN_RE.fullmatch(part)
        if m:
            parts = list(parts)
            parts[i] = '$'
            if i and _PP_SET_RE.fullmatch(parts[i - 1]):
                parts[i - 1] = '$set'
            return '.'.join(parts), int(m.group(1))
    return None


def _pp_annotations(node):
    if not _pp_attr(node, 'SRVC_ANNOTATED', False):
        return None
    ann = {}
    for attr in _pp_attrnames(node):
        if attr.startswith('SRVC_AN_'):
            ann[attr[len('SRVC_AN_'):]] = _pp_plain_attr(_pp_attr(node, attr))
    return ann or None


class _PPContext:
    """What the tree walk of one trajectory needs and collects."""

    def __init__(self, state, path, np):
        self.state, self.path, self.np = state, path, np
        self.ranged = []  # parameters with stored ranges (for files without 'explorations')
        self.skipped = []  # items left out


def _pp_walk(ctx, group, parts, want):
    state = ctx.state
    for name, child in _pp_children(group._v_groups):
        cparts = parts + [name]
        full_name = '.'.join(cparts)
        comment = _pp_str(_pp_attr(child, 'SRVC_INIT_COMMENT'), '')
        ann = _pp_annotations(child)
        split = _pp_split_run(cparts)
        if not _pp_attr(child, 'SRVC_LEAF', False):
            if split is None and (comment or ann):
                state['nodes'][full_name] = {'kind': 'group', 'comment': comment, 'ann': ann}
            _pp_walk(ctx, child, cparts, want)
            continue
        if cparts[0] == 'parameters' and ('explored_data' in child._v_children or
                                          'explored_data__rr__' in child._v_children or
                                          _pp_attr(child, 'SRVC_INIT_LENGTH') is not None):
            ctx.ranged.append(full_name)
        cls = _pp_str(_pp_attr(child, 'SRVC_INIT_CLASS_NAME'), 'Result')
        data = None
        if want:
            try:
                data = _pp_leaf_data(cls, _pp_read_items(child, full_name, ctx))
            except PypetReadError:
                raise
            except Exception as exc:
                raise PypetReadError('%s: cannot read %s (%s): %s: %s' % (
                    ctx.path, full_name, cls, type(exc).__name__, exc)) from exc
        if _leaf_split(split) is not None:
            state['columns'].setdefault(split[0], {})[split[1]] = (cls, comment, ann, data)
        else:
            state['nodes'][full_name] = {'kind': 'leaf', 'class': cls, 'comment': comment,
                                         'ann': ann, 'data': data}
    _pp_links(state, group, parts)


def _pp_links(state, group, parts):
    """Soft links inside the trajectory become {'kind': 'link', 'target': full name}."""
    import tables
    root = '/' + state['name'] + '/'
    for name, link in _pp_children(group._v_links):
        target = getattr(link, 'target', None)
        if isinstance(link, tables.link.SoftLink) and target and target.startswith(root):
            state['nodes']['.'.join(parts + [name])] = {
                'kind': 'link', 'target': target[len(root):].replace('/', '.')}


def _pp_rows(table):
    return table.read() if table.nrows else None


def _pypet_read_state(path, name=None, index=None, data=True):
    """One pypet trajectory as minipypet's plain-data state.

    name, or else index into _pypet_list_trajectories (default -1, the newest). data:
    True (all leaves get their data), False, or a set of branch names whose leaves get
    data (the other leaves are listed with data=None and their datasets are not read).
    Pickled data is returned as bytes, never unpickled."""
    import numpy as np
    path = os.fspath(path)
    with _pp_open(path) as f:
        trajs = _pp_trajectories(f)
        names = [n for n, _ in trajs]
        if name is None:
            if not names:
                raise PypetReadError('%s holds no pypet trajectory' % path)
            try:
                name = names[-1 if index is None else index]
            except (IndexError, TypeError):
                raise PypetReadError('%s holds %d pypet trajectories; index %r is out of range'
                                     % (path, len(names), index)) from None
        if name not in names:
            raise PypetReadError('%s holds no pypet trajectory %r; it holds %s'
                                 % (path, name, names))
        group = dict(trajs)[name]
        overview = group.overview
        info = overview.info.read()
        row = info[0] if len(info) else None

        def field(col, default):
            if row is None or col not in info.dtype.names:
                return default
            return row[col]
        length = int(field('length', 0))
        comment = _pp_str(field('comment', None), None)
        if comment is None:
            comment = _pp_str(_pp_attr(group, 'SRVC_INIT_COMMENT'), '')
        state = {'format': 1, 'name': name, 'time': _pp_str(field('time', '')),
                 'timestamp': float(field('timestamp', 0.0)), 'comment': comment,
                 'version': _pp_str(field('version', '')), 'python': _pp_str(field('python', '')),
                 'length': length, 'explored': [],
                 'runs': {'timestamp': [0.0] * length, 'finish_timestamp': [0.0] * length,
                          'completed': [0] * length, 'hexsha': [''] * length,
                          'error': [''] * length},
                 'parameter_summary': [''] * length, 'nodes': {}, 'columns': {},
                 'ann': _pp_annotations(group)}  # (the trajectory's own, as its nodes')
        runs = _pp_rows(overview.runs) if 'runs' in overview._v_children else None
        if runs is not None:
            names_ = runs.dtype.names
            for i, r in enumerate(runs):
                idx = int(r['idx']) if 'idx' in names_ else i
                if not 0 <= idx < length or not int(r['completed']):
                    continue  # placeholder rows of runs never stored keep the blanks
                state['runs']['completed'][idx] = 1
                state['runs']['timestamp'][idx] = float(r['timestamp'])
                state['runs']['finish_timestamp'][idx] = float(r['finish_timestamp'])
                state['runs']['hexsha'][idx] = _pp_str(r['short_environment_hexsha'])
                state['parameter_summary'][idx] = _pp_str(r['parameter_summary'])
        if 'explorations' in overview._v_children:
            rows = _pp_rows(overview.explorations)
            if rows is not None:
                state['explored'] = [_pp_str(x) for x in rows['explorations']]
        ctx = _PPContext(state, path, np)
        for branch in _PP_BRANCHES:
            if branch not in group._v_groups:
                continue
            want = data is True or bool(data) and branch in data
            bgroup = group._v_groups[branch]
            bcomment = _pp_str(_pp_attr(bgroup, 'SRVC_INIT_COMMENT'), '')
            bann = _pp_annotations(bgroup)
            if bcomment or bann:
                state['nodes'][branch] = {'kind': 'group', 'comment': bcomment, 'ann': bann}
            _pp_walk(ctx, bgroup, [branch], want)
        _pp_links(state, group, [])  # links directly below the trajectory
        if 'explorations' not in overview._v_children:  # older pypet: the explored leaves
            state['explored'] = ctx.ranged
        if ctx.skipped:
            warnings.warn('%s: the pypet reader cannot translate %d item(s), which are left out: '
                          '%s%s' % (path, len(ctx.skipped), ', '.join(ctx.skipped[:5]),
                                    ', ...' if len(ctx.skipped) > 5 else ''), stacklevel=2)
    return state


class _PypetFileReader(_FromState, StorageService):
    """Loads trajectories from files written by pypet 0.6/0.7; it never writes them. To keep
    such a trajectory in minipypet's format, give it a minipypet service and f_store()."""

    def __init__(self, filename):
        self.filename = os.fspath(filename)

    def list_trajectories(self):
        return _pypet_list_trajectories(self.filename)

    def _load_state(self, name=None, index=None, data=True, force=False, skip=(),
                    lazy_runs=False):
        return _pypet_read_state(self.filename, name, index,
                                 True if data == 'scalars' else data)

    def _refuse(self, *args, **kwargs):
        raise StorageError('%s was written by pypet and is read only here; to store, give the '
                           'trajectory a minipypet service first, e.g. traj.v_storage_service '
                           '= HDF5StorageService("new.hdf5"); traj.f_store()' % self.filename)

    _store_trajectory = _store_run = _store_list = _delete = _refuse


# ============================================================================================
# Parallel plumbing - workers, the queue writer, the lock wrapper, the executor adapter
# ============================================================================================
class _RemoteTraceback(Exception):
    """The traceback text of an exception raised in another process."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _describe_exit(exitcode):
    if exitcode is None:
        return 'an unknown exit code'
    if exitcode < 0:
        try:
            return 'signal %d (%s)' % (-exitcode, signal.Signals(-exitcode).name)
        except ValueError:
            return 'signal %d' % -exitcode
    return 'exit code %d' % exitcode


def _find_unpicklable(job, args, kwargs):
    """Name the first object that does not pickle."""
    for what, obj in [('the job %r' % (job,), job)] + \
            [('run argument %d (%s)' % (i, _short_repr(a)), a) for i, a in enumerate(args)] + \
            [('run keyword argument %r' % k, v) for k, v in kwargs.items()]:
        try:
            pickle.dumps(obj)
        except Exception as exc:
            return '%s: %s: %s' % (what, type(exc).__name__, exc)
    return None


class _RunContext:
    """What every worker needs, sent once per worker: the trajectory without its
    explored ranges, the job and its arguments, and how to store a finished run."""

    # What a byte of a batch sent to the queue writer costs, in seconds, counted into
    # `took`: pickled, carried through the Manager and unpickled by the writer (~100 MB/s
    # in all), so that cheap runs with big results go in small batches (batches of 50
    # runs of 1 MB each held ~1 GB across the processes at once)
    QUEUE_BYTE_SECONDS = 1e-8

    def __init__(self, traj, job, args, kwargs, store_mode, service, lock=None, queue=None,
                 log_setup=None, clean_up=True, results_path=None):
        self.traj, self.job, self.args, self.kwargs = traj, job, args, kwargs
        self.store_mode, self.service, self.lock, self.queue = store_mode, service, lock, queue
        self.log_setup, self.clean_up = log_setup, clean_up
        self.watch = None  # (main pid, start method): workers exit when the main is gone
        self.niceness = None  # (pypet's: the local worker processes' least niceness)
        # continuable: return values go to <cnt>.results before the run is stored, so a
        # resume has them for every run the store holds as completed
        self.results = _Journal(results_path, folder_lock=False) if results_path else None
        # QUEUE and LOCK: the records of a batch of runs, stored by flush() at its end
        # (one Manager round trip a batch instead of one or two a run)
        self.batch, self.took = [], 0.0

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.traj._fast_attributes(True)  # (a worker's reads as fast as a serial sweep's)

    def renew(self, fresh):
        """Without freeze_input: a fresh trajectory, job and arguments for the next run.
        Unpickling them costs ~0.1-0.3 ms, most of a trivial run; so the last run's are
        kept when _Pristine proves that run left them as they came."""
        pristine = self.__dict__.get('pristine')
        if pristine is not None and pristine.holds(self):
            return
        self.traj, self.job, self.args, self.kwargs = pickle.loads(fresh)
        self.traj._fast_attributes(True)
        self.pristine = _Pristine.of(self)

    def run(self, idx, values, extra):
        """Carry out one run here; store it as the wrap mode says; return what goes back."""
        traj = self.traj
        traj._start_run(idx, values)
        args, kwargs = self.args, self.kwargs
        if extra is not None:
            args, kwargs = tuple(args) + tuple(extra[0]), dict(kwargs, **extra[1])
        start, stored = time.time(), False
        try:
            ret = self.job(traj, *args, **kwargs)
            record, stored = traj._run_record(idx, start, time.time(), 1), True
            _log_return(self.results, idx, ret)
            self._store(record)
        except BaseException as exc:  # the job, or storing its run, failed: tell the parent
            if stored:
                _mark_store_failure(exc)
            tb = traceback.format_exc()
            try:  # with what the run added, as a serial sweep stores a failed run
                record = traj._run_record(idx, start, time.time(), 0, _format_exc(exc))
                self._store(record)
            except Exception:  # storing is what failed: the failure alone, if it can be
                record = traj._run_record(idx, start, time.time(), 0, _format_exc(exc),
                                          with_leaves=False)
                try:
                    self._store(record)
                except Exception:  # the parent reports the cause
                    pass
            traj._finish_run(record, True)
            return _RunResult('err', idx, tb, _pickled_exception(exc), record)
        traj._finish_run(record, True)
        if self.log_setup is not None:
            self.log_setup.note_run(idx)
        # (the job set pypet's sigint flag, as pypet's tests do: a Ctrl+C to the parent;
        # said once, since an executor's worker lives on into later sweeps)
        stop, sigint_handling.hit = sigint_handling.hit, False
        return _RunResult('stop' if stop else 'ok', idx, ret, None,
                          record if self.store_mode == 'parent' else None)

    def run_batch(self, tasks, fresh=None):
        """Carry out [(idx, values, extra), ...] and store their records; stops at the first
        failed run. A run counts as done only once flush() has stored its record.
        self.took: the seconds the runs took (without their store: what a pool sizes its
        batches by, a wait for the lock or the queue being no run's cost), plus what the
        batch's bytes cost to carry to the queue writer (QUEUE_BYTE_SECONDS)."""
        out, start = [], time.perf_counter()
        for idx, values, extra in tasks:
            if fresh is not None:
                self.renew(fresh)
            out.append(_safe_result(self.run(idx, values, extra)))
            if out[-1].status != 'ok':
                break
        self.took = time.perf_counter() - start
        try:
            self.flush()
        except BaseException as exc:  # nothing of the batch is stored: all of it failed
            _mark_store_failure(exc)
            tb, exc_bytes = traceback.format_exc(), _pickled_exception(exc)
            out = [_RunResult('err', r.idx, tb, exc_bytes, r.record) for r in out]
        return out

    def flush(self):
        """Store the records of the runs carried out since the last flush."""
        batch = self.batch
        if not batch:
            return
        self.batch = []
        if self.store_mode == 'queue':  # (pickled here: the Manager passes bytes on
            # instead of unpickling and pickling every record again, ~10 us a run)
            blob = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            self.took += len(blob) * self.QUEUE_BYTE_SECONDS
            self.queue.put(blob)
        elif self.lock is None:  # (a file service: see _Sweep._start_plumbing)
            _store_runs(self.service, batch)
        else:
            with self.lock:
                _store_runs(self.service, batch)

    def close(self):
        if isinstance(self.service, _FileService):
            self.service.close()
        if self.results is not None:
            self.results.close()

    def _store(self, record):
        mode = self.store_mode
        if mode in ('queue', 'lock'):
            self.batch.append(record)
        elif mode == 'direct':
            _store_run(self.service, record)


class _Pristine:
    """What a worker's fresh trajectory and run arguments were, to tell whether a run left
    them unchanged (then the next run may start from them instead of a new unpickled copy).
    Only where that can be told cheaply and for sure: every value held is immutable, or a
    list or dict of immutable values (copied here, compared by value), a tree node (each
    is checked itself) or a Manager proxy (a handle). Anything else (an array, a set, an
    annotation, an object of your own) makes of() return None: each run unpickles its own."""

    __slots__ = ('keys', 'dicts', 'states', 'own', 'own_values', 'own_len', 'props', 'args',
                 'held')
    PER_RUN = frozenset(('_idx', '_is_run', '_new_leaves', '_run_stored'))

    @classmethod
    def of(cls, ctx):
        self = cls()
        traj = ctx.traj
        self.keys = list(traj._nodes)
        self.dicts = [node.__dict__ for node in traj._nodes.values()]
        states = [cls._state(d.values()) for d in self.dicts]
        if None in states:
            return None
        # (copies of the nodes' dicts: holds() compares them with one == in C, ~4x
        # cheaper than lists of their values made per run)
        self.states = [dict(zip(d, state)) for d, state in zip(self.dicts, states)]
        # the trajectory's own attributes but those every run sets (and the explored
        # values kept as plain attributes, see _fast_attributes)
        d = traj.__dict__
        self.own = operator.itemgetter(*[k for k in d if k not in cls.PER_RUN and
                                         k not in traj._run_fast])
        self.own_values, self.own_len = self.own(d), len(d)
        self.props = dict(traj._props)
        self.held = cls._held(d)
        self.args = cls._state((ctx.args, ctx.kwargs))
        return None if self.args is None else self

    @staticmethod
    def _held(d):
        """Copies of what the trajectory holds in place (a run may change it there): its
        annotations, wildcards, presets and dynamic imports."""
        ann = d.get('_annotations')
        return (None if ann is None else dict(ann._dict), dict(d['_wildcards']),
                dict(d['_presets']), dict(d['_dynamic_imports']))

    @staticmethod
    def _state(values):
        """`values` as a list to compare with ==: immutable values and nodes themselves,
        lists and dicts of immutable values as copies; None if anything else is there."""
        out = []
        for v in values:
            kind = type(v)
            if kind in _FROZEN or isinstance(v, (NNTreeNode, types.FunctionType)):
                out.append(v)
            elif kind is tuple or kind is list or kind is dict:
                items = v.values() if kind is dict else v
                if not all(type(x) in _FROZEN or isinstance(x, NNTreeNode) for x in items):
                    return None
                out.append(kind(v) if kind is not tuple else v)
            elif type(v).__name__.endswith('Proxy') and hasattr(v, '_token'):
                out.append(v)  # (a Manager proxy: what it refers to lives elsewhere)
            else:
                return None
        return out

    def holds(self, ctx):
        """True if the run left the trajectory and the arguments as they came."""
        traj = ctx.traj
        nodes = traj._nodes
        try:
            if len(nodes) != len(self.keys):  # the groups that hold the runs, left empty
                for _, path in _RUN_GROUPS:
                    group = nodes.get(path)
                    if group is not None and not group._children and path not in self.keys:
                        traj._remove_subtree(group)
            d = traj.__dict__
            return list(nodes) == self.keys and len(d) == self.own_len and \
                self.own(d) == self.own_values and traj._props == self.props and \
                self._held(d) == self.held and \
                self.dicts == self.states and \
                self._state((ctx.args, ctx.kwargs)) == self.args
        except Exception:  # (== of something that will not say: changed, to be safe)
            return False


def _mark_store_failure(exc):
    """Mark an exception as the store's, not the job's: record_failed_runs does not go on
    past it (a full disk would fail every run after)."""
    try:  # (an attribute: it travels with the pickled exception)
        exc.minipypet_store_failure = True
    except AttributeError:
        pass


def _pickled_exception(exc):
    try:
        return pickle.dumps(exc)
    except Exception:  # the parent reports the traceback text alone
        return None


def _store_runs(service, records):
    """Store run records one by one, keeping the journal's folder lock between them."""
    journal = service._journal if isinstance(service, _FileService) else None
    if journal is not None:
        journal.hold()
    try:
        for record in records:
            _store_run(service, record)
    finally:
        if journal is not None:
            journal.release()


def _store_run(service, record):
    if isinstance(service, _FileService):
        service._store_run(record)
    else:
        service.store(SINGLE_RUN, record)


def _log_return(journal, idx, ret):
    if journal is None or ret is None:  # a resume reads a run missing here as None
        return
    try:
        blob = pickle.dumps(ret, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an unpicklable return value only costs the resume
        _say_once('continuable: a run returned %s, which cannot be pickled (%s); '
                  'f_continue_run will return None for such runs' % (_type_name(ret), exc))
        return
    # (signed: a resume unpickles only what this user logged, see _trusted; a full disk
    # stops the sweep here, before the run counts as stored)
    journal.append(('signed', idx, blob, _sign(_result_parts(idx, blob))))


def _run_label(traj, idx):
    """'run 2 (run_00000002) with x=0.0, y=1.0': a run and its explored values."""
    values = traj._run_values(idx)
    return 'run %d (%s)%s' % (idx, _run_name(idx), ' with ' + ', '.join(
        '%s=%s' % (k.rpartition('.')[2], _short_repr(v, 40)) for k, v in values.items())
        if values else '')


def _note_run(exc, traj, idx):
    """Name the failed run where the traceback shows it (a note; a log line before 3.11)."""
    text = 'in %s' % _run_label(traj, idx)
    if hasattr(exc, 'add_note'):
        exc.add_note(text)
    else:
        logger.error('%s failed: %s', text[3:], _format_exc(exc))


def _format_exc(exc):
    return ''.join(traceback.format_exception_only(type(exc), exc)).strip()


_WORKER_CONTEXT = {}  # per process: context key -> unpickled _RunContext


def _context_from(key, payload):
    ctx = _WORKER_CONTEXT.get(key)
    if ctx is None:
        ctx = pickle.loads(payload) if isinstance(payload, bytes) else payload
        _die_with_main(ctx.watch)
        _WORKER_CONTEXT.clear()
        _WORKER_CONTEXT[key] = ctx
        if ctx.log_setup is not None:
            ctx.log_setup.in_worker('process')
        _nice(ctx.niceness)
    return ctx


def _nice(niceness):
    """pypet's niceness: this worker process at least that nice (Unix only; a process
    cannot become less nice without privileges)."""
    if niceness is not None and hasattr(os, 'nice'):
        current = os.nice(0)
        if niceness > current:
            os.nice(niceness - current)


def _safe_result(result):
    """Make sure what goes back to the parent pickles; explain if the return value does not."""
    try:
        pickle.dumps(result.value)
        return result
    except Exception as exc:
        return _RunResult(
            'err', result.idx, 'run %d returned %s, which cannot be pickled back to the main '
            'process (%s: %s); return plain data or store it as a result instead'
            % (result.idx, _type_name(result.value), type(exc).__name__, exc), None,
            result.record)


def _die_with_parent():
    """Linux: this helper process is killed when the process that started it dies, even
    by kill -9 (an out-of-memory killer, a batch scheduler), instead of waiting forever
    on its pipes and queues. Elsewhere nothing happens."""
    libc = _libc()
    if libc is not None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _die_with_main(watch):
    """Make this helper process (a worker, the Manager, the queue writer) exit once the
    main process is gone, even by kill -9: PR_SET_PDEATHSIG covers a child of the main
    on Linux; a thread that polls covers the rest (a child of the forkserver, an
    executor's worker, other POSIX systems), so that no orphan goes on running or
    writing. `watch`: (main pid, start method) or None."""
    _die_with_parent()
    if watch is None or os.name != 'posix' or watch[0] == os.getpid() or _WATCHING:
        return
    _WATCHING.append(watch)
    threading.Thread(target=_watch_main, args=(watch[0], os.getppid()), daemon=True,
                     name='minipypet-watch-main').start()


_WATCHING = []  # this process's watch (one thread a process)


def _is_local_pool(executor):
    """A concurrent.futures ProcessPoolExecutor: its workers run on this machine, as
    children of this process (a cluster's workers outlive a client by design)."""
    cf = sys.modules.get('concurrent.futures')
    return cf is not None and isinstance(executor, cf.ProcessPoolExecutor)


def _watch_main(main_pid, parent):
    while _alive(main_pid) and os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)  # (no cleanup: what the runs finished is journalled, the rest runs again)


def _alive(pid):
    """True while process `pid` runs (a zombie, killed but not yet reaped, is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (another user's: alive)
        return True
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            return f.read().rpartition(b')')[2].split()[0] != b'Z'
    except (OSError, IndexError):
        return True


def _libc():
    """The C library through ctypes (Linux), loaded once: the parent loads it before it
    forks, so that a process per run does not import ctypes again (~1 ms)."""
    if not sys.platform.startswith('linux'):
        return None
    if not _LIBC:
        try:
            import ctypes
            _LIBC.append(ctypes.CDLL(None))
        except Exception:  # (no libc to ask: helpers just lack the safety net)
            _LIBC.append(None)
    return _LIBC[0]


_LIBC = []


def _pool_worker(conn, key, payload, fresh):
    """A pool worker: carry out batches [(idx, values, extra), ...] until None; each batch's
    results go back in one message once their records are stored, with the seconds its
    runs took. `fresh` (without
    freeze_input): the pickled trajectory, job and arguments each run starts from."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl+C means
    ctx = _context_from(key, payload)  # (which watches the main)
    while True:
        try:
            tasks = conn.recv()
        except EOFError:
            return
        if tasks is None:
            break
        results = ctx.run_batch(tasks, fresh)
        conn.send((results, ctx.took))
    ctx.close()


def _process_run(conn, key, payload, idx, values, extra):
    """No pool: one process carries out one run and exits."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = pickle.loads(payload) if isinstance(payload, bytes) else payload
    _die_with_main(ctx.watch)
    _nice(ctx.niceness)
    ctx.traj._fast_attributes(True)  # (fork: the parent's copy, inherited, not unpickled)
    if ctx.log_setup is not None:
        ctx.log_setup.in_worker('run', idx)
    result = ctx.run_batch([(idx, values, extra)])[0]
    ctx.close()
    conn.send(result)
    conn.close()


def _executor_batch(key, payload, tasks):
    """Runs [(idx, values, extra), ...] on an Executor's worker; stops at the first failure."""
    return _context_from(key, payload).run_batch(tasks)


def _queue_writer(queue, service, conn, log_setup, watch=None):
    """The QUEUE mode's single writer: store records from the queue until None."""
    _die_with_main(watch)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_setup is not None:
        log_setup.in_worker('queue')
    count, files, handed = 0, isinstance(service, _FileService), None
    logger.info('queue writer (process %d) stores runs with %s', os.getpid(),
                type(service).__name__)
    try:
        if files:  # (its records fold as they come: see _FileService._adopt_journal)
            service._adopt_journal()
        while True:
            batch = queue.get()  # the records of a worker's batch of runs, pickled
            if batch is None:
                break
            batch = pickle.loads(batch)
            _store_runs(service, batch)
            count += len(batch)
        if files:
            handed = service._hand_over()
        logger.info('queue writer stored %d runs', count)
        conn.send(('ok', count, handed))
    except BaseException as exc:  # report, never swallow: the parent stops the sweep
        conn.send(('err', '%s\n%s' % (_format_exc(exc), traceback.format_exc())))
        raise


class _Worker:
    __slots__ = ('process', 'conn', 'idx')

    def __init__(self, process, conn):
        self.process, self.conn, self.idx = process, conn, None


# ============================================================================================
# Your own multiprocessing - MultiprocContext and the wrapped services
# ============================================================================================
_PROXIES = {}  # (pid, manager address, object id) -> this process's proxy (_one_proxy)


def _pack_proxy(obj):
    """What pickles a Manager proxy so that each process rebuilds it once (_one_proxy)."""
    from multiprocessing.managers import BaseProxy
    return ('proxy', obj.__reduce__()) if isinstance(obj, BaseProxy) else ('plain', obj)


def _one_proxy(packed):
    """The proxy _pack_proxy packed, made once per process. (Python 3.9: when a second proxy
    of one object, unpickled with the next task, is collected, its clean-up closes the
    connection the first one still uses: 'an integer is required (got type NoneType)'.)"""
    kind, value = packed
    if kind == 'plain':
        return value
    rebuild, args = value
    token = args[1]
    key = (os.getpid(), token.address, token.id)
    proxy = _PROXIES.get(key)
    if proxy is None:
        proxy = _PROXIES[key] = rebuild(*args)
    return proxy


class LockWrapper(StorageService):
    """A storage service that worker processes share: each store or load holds `lock` (a
    Manager lock, which pickles into a pool's tasks)."""
    multiproc_safe = True

    def __init__(self, storage_service, lock=None):
        self._service, self.lock = storage_service, lock
        self.keeps_runs = getattr(storage_service, 'keeps_runs', False)

    def __getstate__(self):
        return dict(self.__dict__, lock=_pack_proxy(self.lock))

    def __setstate__(self, state):
        self.__dict__.update(state, lock=_one_proxy(state['lock']))

    def store(self, msg, item, *args, **kwargs):
        with self.lock:
            return self._service.store(msg, item, *args, **kwargs)

    def load(self, msg, item, *args, **kwargs):
        with self.lock:
            return self._service.load(msg, item, *args, **kwargs)

    def __getattr__(self, name):  # (filename, ...: the wrapped service's)
        if name.startswith('_'):
            raise AttributeError(name)
        return getattr(self._service, name)


class QueueStorageServiceSender(StorageService):
    """A storage service for worker processes that sends what they store, as plain data,
    to the writer thread of a MultiprocContext (QUEUE or PIPE), which stores it."""
    multiproc_safe = True

    def __init__(self, storage_queue=None):
        self.queue = storage_queue

    def __getstate__(self):
        return dict(self.__dict__, queue=_pack_proxy(self.queue))

    def __setstate__(self, state):
        self.__dict__.update(state, queue=_one_proxy(state['queue']))

    def store(self, msg, item, *args, trajectory=None, store_data=STORE_DATA, only_init=False,
              **kwargs):
        if msg == SINGLE_RUN:
            self.queue.put(('run', item))
        elif msg in (LIST, TRAJECTORY):
            if msg == TRAJECTORY:
                if only_init:
                    return
                item = [(LEAF if n.v_is_leaf else GROUP, n) for n in item.f_iter_nodes()]
            self.queue.put(('list', [(kind, node._full_name, _class_tag(type(node)),
                                      node._comment, node._store() if kind == LEAF and not
                                      node.f_is_empty() else None, _ann(node))
                                     for kind, node in item], store_data))
        elif msg not in (FLUSH, CLOSE_FILE, OPEN_FILE):
            raise NoSuchServiceError('a worker of a MultiprocContext in %s mode stores runs '
                                     'and items only, not %r' % ('QUEUE', msg))

    def load(self, msg, item, *args, **kwargs):
        raise NoSuchServiceError('a worker of a MultiprocContext in QUEUE mode cannot load; '
                                 "load before the workers start, or use wrap_mode='LOCK'")

    def send_done(self):
        self.queue.put(None)


def _context_writer(queue, traj, service):
    """The QUEUE/PIPE writer of a MultiprocContext: a thread of the main process that puts
    what the workers send into the trajectory and stores it, until the None sentinel."""
    while True:
        message = queue.get()
        if message is None:
            return
        try:
            if message[0] == 'run':
                service.store(SINGLE_RUN, message[1])
                continue
            msgs = []
            for kind, full_name, tag, comment, data, ann in message[1]:
                node = traj._place_leaf(full_name, tag, comment, data, ann, overwrite=True) \
                    if kind == LEAF else traj.f_get(full_name) if full_name in traj._nodes \
                    else traj.f_add_group(full_name)
                msgs.append((kind, node))
            service.store(LIST, msgs, trajectory=traj, store_data=message[2])
        except Exception:  # (keep storing what else comes; the log says what failed)
            logger.exception('MultiprocContext: storing what a worker sent failed')


class MultiprocContext:
    """Your own multiprocessing with a trajectory, as in pypet: inside the context the
    trajectory's storage service is wrapped so that the processes you start can store through
    it (LOCK: in turn, under a Manager lock; QUEUE and PIPE: through a writer thread of this
    process), and restored at the end::

        with MultiprocContext(trajectory=traj, wrap_mode='LOCK'):
            pool.map(job, [traj] * 10)       # each job: traj.f_store_item(...), manual_run
    """

    def __init__(self, trajectory: Trajectory | None = None, wrap_mode: str = WRAP_MODE_LOCK,
                 full_copy: bool | None = None, manager: object = None, use_manager: bool = True,
                 lock: object = None, queue: object = None, queue_maxsize: int = 0,
                 port: object = None, timeout: float | None = None, gc_interval: object = None,
                 log_config: object = None, log_stdout: bool = False,
                 graceful_exit: bool = False) -> None:
        del full_copy, gc_interval, log_config, log_stdout, graceful_exit  # (pypet's knobs)
        if not isinstance(trajectory, Trajectory):
            raise ConfigurationError('MultiprocContext needs trajectory=<a Trajectory>, got %r'
                                     % (trajectory,))
        if wrap_mode not in (WRAP_MODE_LOCK, WRAP_MODE_QUEUE, WRAP_MODE_PIPE, WRAP_MODE_NONE,
                             WRAP_MODE_LOCAL):
            raise ConfigurationError(
                "MultiprocContext: wrap_mode %r is not supported; use 'LOCK', 'QUEUE' or "
                "'PIPE' (NETLOCK/NETQUEUE: an Environment with executor=...)" % (wrap_mode,))
        if port is not None or timeout is not None:
            raise ConfigurationError('MultiprocContext: port and timeout belong to pypet\'s '
                                     'NETLOCK/NETQUEUE modes, which minipypet does not have')
        self._traj, self._wrap_mode = trajectory, wrap_mode
        self._manager, self._use_manager = manager, use_manager
        self.lock, self.queue, self._queue_maxsize = lock, queue, queue_maxsize
        self._service = self._writer = self._own_manager = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.finalize()

    def _the_manager(self):
        if self._manager is None:
            import multiprocessing
            self._manager = self._own_manager = multiprocessing.Manager()
        return self._manager

    def start(self) -> None:
        """Store the trajectory's skeleton and wrap its storage service."""
        traj = self._traj
        if self._service is not None:
            return
        traj.f_store(only_init=True)
        self._service = service = traj.v_storage_service
        mode = self._wrap_mode
        if mode == WRAP_MODE_LOCK:
            if self.lock is None:
                import multiprocessing
                self.lock = self._the_manager().Lock() if self._use_manager else \
                    multiprocessing.Lock()
            traj.v_storage_service = LockWrapper(service, self.lock)
        elif mode in (WRAP_MODE_QUEUE, WRAP_MODE_PIPE, WRAP_MODE_LOCAL):
            if self.queue is None:
                self.queue = self._the_manager().Queue(maxsize=self._queue_maxsize)
            self._writer = threading.Thread(target=_context_writer, name='minipypet-writer',
                                            args=(self.queue, traj, service), daemon=True)
            self._writer.start()
            traj.v_storage_service = QueueStorageServiceSender(self.queue)

    def finalize(self) -> None:
        """Store what is still queued, then restore the trajectory's own storage service
        and fold what the processes stored into the file (pypet leaves its file written)."""
        service = self._service
        if service is None:
            return
        try:
            if self._writer is not None:
                self.queue.put(None)
                self._writer.join()
                self._writer = None
        finally:
            self._traj.v_storage_service, self._service = service, None
            if self._own_manager is not None:
                self._own_manager.shutdown()
                self._own_manager = self._manager = None
        if isinstance(service, _FileService):
            service.checkpoint()

    f_start, f_finalize = start, finalize


# ============================================================================================
# Environment helpers - logging, git, progress bars
# ============================================================================================
class _LogSetup:
    """The logging an environment sets up, in the main process and again in each
    worker process (it pickles without its handlers, so workers set up their own).
    Either the seed's files below <log_folder>/<trajectory name>/ (main.txt,
    warnings_and_errors.txt; in workers process_<pid>.txt, run_<idx>.txt,
    queue_process.txt) on the loggers of `levels` ({name: level}; the root's: '');
    or pypet's `config`: (main, worker) configurations, each the text of a
    logging.config.fileConfig file, a dictConfig dict or None, whose file names may
    hold pypet's wildcards ($env, $traj, $run, $set, $proc, $host; `names`: the
    environment's and the trajectory's). `stdout`: (logger name, level) that print
    output goes to, or None. `multiproc`: pypet's log_multiproc (False: workers set
    up nothing, and fork's keep the main's handlers)."""

    FORMAT = '%(asctime)s %(processName)-12s %(name)s %(levelname)-8s %(message)s'

    def __init__(self, folder=None, levels=None, config=None, stdout=None,
                 multiproc=True, names=('', '')):
        self.folder, self.levels, self.config = folder, levels, config
        self.stdout, self.multiproc, self.names = stdout, multiproc, names
        self._handlers, self._runs_file, self._redirect = [], None, None
        self._main_files = []

    def __getstate__(self):
        return dict(self.__dict__, _handlers=[], _runs_file=None, _redirect=None,
                    _removed=[])

    def _add(self, filename, warnings_only=False):
        for name, level in self.levels.items():
            path = os.path.join(self.folder, filename)
            handler = logging.FileHandler(path, delay=True)
            handler.setLevel(logging.WARNING if warnings_only else level)
            handler.setFormatter(logging.Formatter(self.FORMAT))
            logging.getLogger(name).addHandler(handler)
            self._handlers.append((name, handler))

    def _configure(self, config, run_name, set_name):
        """Apply a pypet configuration with its wildcards replaced; keep what it
        added and the handlers it took off (remove() puts them back)."""
        import logging.config

        def rename(filename):
            filename = rename_log_file(filename, env_name=self.names[0],
                                       traj_name=self.names[1], run_name=run_name,
                                       set_name=set_name)
            if os.path.dirname(filename):
                racedirs(os.path.dirname(filename))  # (pypet makes the folders too)
            return filename
        before = set(_log_handlers())
        try:
            if isinstance(config, dict):
                logging.config.dictConfig(_renamed_files(config, rename))
            else:
                parser = _log_parser(io.StringIO(config))
                for section in parser.sections():
                    for option in ('args', 'kwargs'):
                        if parser.has_option(section, option):
                            parser.set(section, option, _renamed_files(
                                parser.get(section, option), rename))
                text = io.StringIO()
                parser.write(text)
                text.seek(0)
                logging.config.fileConfig(text, disable_existing_loggers=False)
        finally:  # (also when it fails half-way: remove() undoes what it did)
            after = _log_handlers()
            self._handlers += [pair for pair in after if pair not in before]
            self._removed = [pair for pair in before if pair not in after]

    def in_main(self):
        root = logging.getLogger()
        self._old_level = root.level
        if self.config is not None and self.config[0] is not None:
            try:
                self._configure(self.config[0], RUN_NAME_DUMMY, SET_NAME_DUMMY)
            except Exception as exc:
                self.remove()
                raise ConfigurationError('log_config cannot be applied: %s: %s; mend it '
                                         '(see logging.config in the Python docs)'
                                         % (type(exc).__name__, exc)) from exc
        elif self.folder is not None:
            os.makedirs(self.folder, exist_ok=True)
            for name, level in self.levels.items():
                lg = logging.getLogger(name)
                if lg.level > level or lg.level == logging.NOTSET:
                    lg.setLevel(level)
            self._add('main.txt')
            self._add('warnings_and_errors.txt', warnings_only=True)
        self._main_files = [h.baseFilename for _, h in self._handlers
                            if isinstance(h, logging.FileHandler)]
        self._redirect_stdout()

    def in_worker(self, kind, idx=None):
        if not self.multiproc or self.config is not None and self.config[1] is None:
            self._redirect_stdout()  # (fork: the main's handlers stay, as in pypet)
            return
        main_files = set(self._main_files)
        for name, handler in _log_handlers():  # (fork's: the main's files)
            if getattr(handler, 'baseFilename', None) in main_files:
                logging.getLogger(name).removeHandler(handler)
        self._handlers = []
        if self.config is not None:
            run = idx if kind == 'run' else -1
            self._configure(self.config[1], _run_name(run), _set_name(run))
        elif self.folder is not None:
            for name, level in self.levels.items():
                lg = logging.getLogger(name)
                lg.setLevel(min(lg.level or level, level))
            name = {'process': 'process_%d' % os.getpid(),
                    'run': 'run_%08d' % (idx or 0), 'queue': 'queue_process'}[kind]
            self._add(name + '.txt')
            self._add('warnings_and_errors.txt', warnings_only=True)  # appends: shared
            if kind == 'process':
                self._runs_file = os.path.join(self.folder,
                                               'process_%d_runs.txt' % os.getpid())
        self._redirect_stdout()

    def _redirect_stdout(self):
        if self.stdout is not None and getattr(sys.stdout, 'logger', None) is not \
                logging.getLogger(self.stdout[0]):  # (a fork's: redirected already)
            self._redirect = _StdoutToLogger(*self.stdout, stream=sys.stdout)
            sys.stdout = self._redirect

    def note_run(self, idx):
        if self._runs_file is not None:
            with open(self._runs_file, 'a') as f:
                f.write('%s: %s\n' % (_now_strings()[0], _run_name(idx)))

    def remove(self):
        if self._redirect is not None and sys.stdout is self._redirect:
            sys.stdout = self._redirect.stream
        self._redirect = None
        for name, handler in self._handlers:
            logging.getLogger(name).removeHandler(handler)
            handler.close()
            _RETIRED.add(handler)
        self._handlers = []
        for name, handler in self.__dict__.pop('_removed', ()):
            if handler in _RETIRED:  # (another environment's, which it removed since)
                continue
            if isinstance(handler, logging.FileHandler) and handler.mode == 'w':
                handler.mode = 'a'  # (fileConfig closed it: it reopens after what it wrote)
            logging.getLogger(name).addHandler(handler)
        if getattr(self, '_old_level', None) is not None:
            logging.getLogger().setLevel(self._old_level)
            self._old_level = None


_RETIRED = weakref.WeakSet()  # log handlers an environment removed and closed for good


class _StdoutToLogger:
    """sys.stdout while log_stdout is on: each line printed is logged."""

    def __init__(self, name, level, stream):
        self.logger, self.level, self.stream = logging.getLogger(name), level, stream
        self._busy = False

    def write(self, text):
        if self._busy:  # (a handler that prints to stdout: there, not round again)
            return self.stream.write(text)
        self._busy = True
        try:
            for line in text.rstrip().splitlines():
                self.logger.log(self.level, line.rstrip())
        finally:
            self._busy = False
        return len(text)

    def flush(self):
        pass


def _log_handlers():
    """[(logger name, handler)] of every logger (the root's name: '')."""
    manager = logging.getLogger().manager
    names = [''] + [n for n, lg in list(manager.loggerDict.items())
                    if isinstance(lg, logging.Logger)]
    return [(n, h) for n in names for h in logging.getLogger(n).handlers]


def _log_parser(source):
    import configparser
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_file(source)
    return parser


def _renamed_files(config, rename):
    """A dictConfig dict with rename() applied to every 'filename', or the text of a
    fileConfig 'args'/'kwargs' option with it applied to each string that names a
    file (holds a wildcard, or ends in .log or .txt, as pypet decides)."""
    if isinstance(config, dict):
        return {k: rename(v) if k == 'filename' and isinstance(v, str) else
                _renamed_files(v, rename) if isinstance(v, dict) else v
                for k, v in config.items()}
    import ast
    for node in ast.walk(ast.parse(config.strip() or 'None', mode='eval')):
        text = getattr(node, 'value', None)
        if isinstance(node, ast.Constant) and isinstance(text, str) and (
                '$' in text or text.endswith(('.log', '.txt'))):
            new = rename(text).replace('\\', '\\\\')
            config = config.replace(repr(text)[1:-1], new)
    return config


def _log_config(config):
    """pypet's log_config (an .ini file's path, a ConfigParser or a dictConfig dict)
    as (main, worker) configurations for _LogSetup: the 'multiproc_' sections or
    keys, without the prefix, configure the worker processes (none: workers set up
    nothing)."""
    import configparser
    if isinstance(config, dict):
        main = {k: v for k, v in config.items() if not k.startswith('multiproc_')}
        worker = {k[10:]: v for k, v in config.items() if k.startswith('multiproc_')}
        for key in ('version', 'disable_existing_loggers'):
            if key in config and worker:
                worker[key] = config[key]
        return main, worker or None
    if isinstance(config, (str, os.PathLike)):
        if not os.path.isfile(config):
            raise ConfigurationError(
                'log_config %r: no such file; give the path of an .ini file in '
                'logging.config.fileConfig format, a ConfigParser or a dict for '
                'dictConfig' % (config,))
        with open(config) as f:
            config = _log_parser(f)
    if not isinstance(config, configparser.RawConfigParser):
        raise ConfigurationError(
            "log_config must be 'DEFAULT', None, the path of an .ini file, a "
            'ConfigParser or a dict for logging.config.dictConfig, got %r' % (config,))
    texts = []
    for worker in (False, True):
        part = _log_parser(io.StringIO(''))
        for section in config.sections():
            if section.startswith('multiproc_') == worker:
                name = section[10:] if worker else section
                part.add_section(name)
                for option in config.options(section):
                    part.set(name, option, config.get(section, option, raw=True))
        text = io.StringIO()
        part.write(text)
        texts.append(text.getvalue() if part.sections() else None)
    return tuple(texts)


def _package_version(name):
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:
        return None


def _git(repo, *args):
    import subprocess
    try:
        out = subprocess.run(('git', '-C', repo) + args, capture_output=True, text=True,
                             check=False)
    except FileNotFoundError:
        raise ConfigurationError('git_repository=%r needs git, but neither GitPython nor the '
                                 'git command is installed' % repo) from None
    if out.returncode != 0:
        raise ConfigurationError('git %s in %r failed: %s' % (' '.join(args), repo,
                                                             out.stderr.strip()))
    return out.stdout


def _git_commit(repo, message, fail):
    """Commit the tracked files that changed (git add -u; git commit); return commit info.

    Staged changes count as changes too (pypet compares only the working tree with the
    index and records a stale commit)."""
    if not os.path.isdir(repo):
        raise ConfigurationError('git_repository=%r is not a folder' % repo)
    if _have('git'):
        git = importlib.import_module('git')
        try:
            r = git.Repo(repo)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ConfigurationError('git_repository=%r is not a git repository' % repo) \
                from None
        dirty = r.is_dirty(index=True, working_tree=True, untracked_files=False)
        if dirty and fail:
            raise GitDiffError('%s has uncommitted changes and git_fail=True; commit them '
                               'first' % repo)
        if dirty:
            r.git.add('-u')
            r.index.commit(message)
        c = r.head.commit
        return {'hexsha': c.hexsha, 'name_rev': c.name_rev, 'committed_date': c.committed_date,
                'message': c.message, 'new_commit': dirty}
    if _git(repo, 'rev-parse', '--is-inside-work-tree').strip() != 'true':
        raise ConfigurationError('git_repository=%r is not a git repository' % repo)
    dirty = bool(_git(repo, 'status', '--porcelain', '--untracked-files=no').strip())
    if dirty and fail:
        raise GitDiffError('%s has uncommitted changes and git_fail=True; commit them first'
                           % repo)
    if dirty:
        _git(repo, 'add', '-u')
        _git(repo, 'commit', '-q', '-m', message)
    hexsha = _git(repo, 'rev-parse', 'HEAD').strip()
    return {'hexsha': hexsha, 'name_rev': _git(repo, 'name-rev', hexsha).strip(),
            'committed_date': int(_git(repo, 'show', '-s', '--format=%ct', 'HEAD').strip()),
            'message': _git(repo, 'show', '-s', '--format=%B', 'HEAD').strip(),
            'new_commit': dirty}


def _is_default(log_config):
    return isinstance(log_config, str) and log_config == 'DEFAULT'


def _log_levels(names, levels):
    """{logger name: level} of the seed's log files from pypet's logger_names and
    log_levels (one level, or one a name); a level left out: INFO, unless that
    logger has a level of its own already (not WARNING, the root's default)."""
    names = list(names) if isinstance(names, (list, tuple)) else [names or '']
    levels = list(levels) if isinstance(levels, (list, tuple)) else [levels]
    if len(levels) == 1:
        levels *= len(names)
    if len(levels) != len(names):
        raise ConfigurationError('log_levels %r: give one level, or one for each of '
                                 'logger_names %r' % (levels, names))
    out = {}
    for name, level in zip(names, levels):
        own = logging.getLogger(name).level
        out[name] = _log_level(level) if level is not None else own if own not in (
            logging.NOTSET, logging.WARNING) else logging.INFO
    return out


def _log_stdout(value):
    """pypet's log_stdout as (logger name, level) that print output goes to, or None."""
    if value is None or value is False:
        return None
    if value is True:
        return 'STDOUT', logging.INFO
    if isinstance(value, (str, int)):  # (a logger's name, or a level)
        return (value, logging.INFO) if isinstance(value, str) else ('STDOUT', value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return value[0], _log_level(value[1])
    raise ConfigurationError('log_stdout must be True, False, a logger name, a level '
                             'or (logger name, level), got %r' % (value,))


def _log_level(level):
    """A logging level from an int or a name ('DEBUG'), as logging.setLevel takes it."""
    if level is None or isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and isinstance(logging.getLevelName(level.upper()), int):
        return logging.getLevelName(level.upper())
    raise ConfigurationError('log_level must be a logging level (logging.DEBUG, or a name such '
                             'as "DEBUG"), got %r' % (level,))


def progressbar(index: int, total: int, percentage_step: int = 10,
                logger: str | logging.Logger = 'print', log_level: int | str = logging.INFO,
                reprint: bool = True, time: bool = True, length: int = 20,
                fmt_string: str | None = None, reset: bool = False) -> str | None:
    """Print or log a progress bar with ETA every `percentage_step` percent; returns it."""
    state = progressbar.__dict__.setdefault('_state', {'start': None, 'last': -1})
    now = _time_now()
    if reset or index == 0 or state['start'] is None:
        state['start'], state['last'] = now, -1
    done = (index + 1) / float(total) if total else 1.0
    step = int(done * 100 // percentage_step)
    if step == state['last'] and index + 1 < total:
        return None
    state['last'] = step
    filled = int(round(done * length))
    text = '[%s%s] %5.1f%%' % ('=' * filled, ' ' * (length - filled), done * 100)
    if time and done > 0:
        elapsed = now - state['start']
        eta = elapsed / done - elapsed
        text += ', remaining: %s' % datetime.timedelta(seconds=int(eta))
    if fmt_string:
        text = fmt_string % text
    if logger == 'print':
        print(('\r' if reprint else '') + text, end='' if reprint and done < 1 else '\n')
    else:
        log = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        log.log(log_level, text)
    return text


_time_now = time.time


# ============================================================================================
# Environment settings - the arguments, checked once
# ============================================================================================
# pypet's Environment arguments that minipypet accepts and does not act on: (default, why).
# Given another value, each says so once in the log, so a pypet script runs and is told.
_NO_EFFECT = {
    'display_time': (20, 'progress is shown by report_progress and show_progress'),
    'encoding': ('utf8', 'text is always stored as UTF-8'),
    'pandas_format': ('fixed', 'DataFrames and Series are stored as plain columns'),
    'pandas_append': (False, 'DataFrames and Series are stored as plain columns'),
    'cpu_cap': (100.0, 'worker processes are not throttled'),
    'memory_cap': (100.0, 'worker processes are not throttled'),
    'swap_cap': (100.0, 'worker processes are not throttled'),
    'gc_interval': (None, 'the garbage collector runs as Python schedules it'),
}


def _say_no_effect(given, where='Environment'):
    """Log once per argument that a pypet argument given a non-default value does nothing."""
    for key, (default, why) in _NO_EFFECT.items():
        if key in given and given[key] != default:
            _say_once('%s(%s=%r) has no effect in minipypet: %s'
                      % (where, key, given[key], why))


class _Settings:
    """An Environment's arguments, checked once and kept together: what the run loop, the
    workers, the .cnt snapshot and the config data read. Built from Environment.__init__'s
    arguments, with pypet 0.7's spellings (resumable, freeze_pool_input, log_levels, ...)
    mapped to the seed's names; a bad value raises ConfigurationError naming it."""

    __slots__ = ('multiproc', 'ncores', 'use_pool', 'wrap_mode', 'freeze_input',
                 'queue_maxsize', 'continuable', 'continue_folder', 'delete_continue',
                 'automatic_storing', 'clean_up_runs', 'graceful_exit', 'start_method',
                 'executor', 'record_failed_runs', 'report_progress', 'show_progress',
                 'do_single_runs', 'git_message', 'lazy', 'fsync_interval', 'log_level',
                 'niceness', 'storage')
    # pypet 0.7's name -> the seed's
    _SPELLINGS = (('resumable', 'continuable'), ('resume_folder', 'continue_folder'),
                  ('delete_resume', 'delete_continue'), ('freeze_pool_input', 'freeze_input'),
                  ('log_levels', 'log_level'))
    # the storage services' arguments (_make_service gives each backend those it takes)
    _STORAGE = ('file_title', 'overwrite_file', 'purge_duplicate_comments', 'summary_tables',
                'small_overview_tables', 'large_overview_tables', 'results_per_run',
                'derived_parameters_per_run', 'fsync_interval', 'complevel', 'complib',
                'shuffle', 'fletcher32')

    def __init__(self, a):
        a = dict(a)
        for old, new in self._SPELLINGS:
            if a[old] is not None:
                a[new] = a[old]
        if a['use_pool'] is None:  # the seed's pool, unless pypet's immediate_postproc
            a['use_pool'] = not a['immediate_postproc']
        progress = a['report_progress']  # (pypet's forms: True, a percent, a logger)
        if progress is True or isinstance(progress, (int, float, str)) and progress:
            progress = () if progress is True else (5, progress) if isinstance(
                progress, str) else (progress,)
        if isinstance(progress, tuple):
            default = (5, 'minipypet', logging.INFO)
            a['report_progress'] = progress + default[len(progress):]
        level = a['log_level']
        a['log_level'] = min(_log_level(x) for x in level) if isinstance(
            level, (list, tuple)) else _log_level(level)
        self._check(a)
        _say_no_effect(a)
        a['ncores'] = a['ncores'] or os.cpu_count() or 1  # (pypet's 0: one per CPU)
        a['lazy'] = bool(a['lazy_debug'] and __debug__)
        for flag in ('multiproc', 'continuable'):
            a[flag] = bool(a[flag])
        a['storage'] = {key: a[key] for key in self._STORAGE}
        for name in self.__slots__:
            setattr(self, name, a[name])

    def config(self, service):
        """The settings as the environment's config data (config.environment.<name>.*)."""
        return {
            'multiproc': self.multiproc, 'ncores': self.ncores, 'use_pool': self.use_pool,
            'wrap_mode': self.wrap_mode, 'continuable': self.continuable,
            'freeze_input': self.freeze_input, 'automatic_storing': self.automatic_storing,
            'clean_up_runs': self.clean_up_runs, 'graceful_exit': self.graceful_exit,
            'start_method': self.start_method or '',
            'executor': type(self.executor).__name__ if self.executor is not None else '',
            'fsync_interval': -1.0 if self.fsync_interval is None else self.fsync_interval,
            'record_failed_runs': self.record_failed_runs,
            'storage_service': type(service).__name__,
            'filename': getattr(service, 'filename', None) or '',
            **({} if self.niceness is None else {'niceness': self.niceness})}

    @staticmethod
    def _check(a):
        def bad(message):
            raise ConfigurationError(message)
        if a['wrap_mode'] in _PYPET_ONLY_WRAP_MODES:
            bad("wrap_mode %r is one of pypet's modes that minipypet does not have; use "
                "'QUEUE' (one writer process), 'LOCK' (workers write in turn), 'LOCAL' (the "
                "main process stores) or, for other machines, a concurrent.futures Executor "
                "(executor=...)" % a['wrap_mode'])
        if a['wrap_mode'] not in WRAP_MODES:
            bad('wrap_mode must be one of %s (see pypetconstants), got %r'
                % (WRAP_MODES, a['wrap_mode']))
        if not isinstance(a['ncores'], int) or isinstance(a['ncores'], bool) or \
                a['ncores'] < 0:
            bad('ncores must be an int >= 1 (0: one per CPU), got %r' % (a['ncores'],))
        if a['ncores'] == 0 and not a['multiproc'] and a['executor'] is None:
            bad('ncores=0 (a process per CPU) does nothing without multiproc=True; pass '
                'multiproc=True, or leave ncores at 1')
        if a['use_scoop']:
            bad('SCOOP is not supported; pass a concurrent.futures Executor instead, e.g. '
                'executor=dask.distributed.Client(...).get_executor()')
        if a['port'] is not None or a['timeout'] is not None:
            bad('port and timeout belong to pypet\'s NETLOCK/NETQUEUE/SCOOP modes, which '
                'minipypet does not have; use executor=... to reach other machines')
        if a['sumatra_project'] is not None:
            bad('Sumatra is not supported')
        for cap in ('cpu_cap', 'memory_cap', 'swap_cap'):
            value = a[cap]
            value = value[0] if isinstance(value, tuple) else value
            if not 0.0 < value <= 100.0:
                bad('%s must lie in (0, 100], got %r' % (cap, value))
        if a['freeze_input'] and not (a['multiproc'] and a['use_pool']) and \
                a['executor'] is None:
            bad('freeze_input only applies to a pool (multiproc=True, use_pool=True) or an '
                'executor')
        if a['immediate_postproc'] and a['use_pool']:  # (pypet: even without multiproc)
            bad('immediate_postproc needs use_pool=False')
        if a['start_method'] not in (None, 'fork', 'spawn', 'forkserver'):
            bad("start_method must be None, 'fork', 'spawn' or 'forkserver', got %r"
                % (a['start_method'],))
        if a['executor'] is not None and not callable(getattr(a['executor'], 'submit', None)):
            bad('executor must have a submit(fn, *args) method (a concurrent.futures '
                'Executor), got %r' % (a['executor'],))
        simple = [k for k in ('log_folder', 'logger_names', 'log_level')
                  if a[k] is not None] + (['log_multiproc'] if a['log_multiproc']
                                          is not True else [])
        if not _is_default(a['log_config']) and simple:
            bad('log_config=%r and %s: give either log_config (None, an .ini file, '
                'a ConfigParser or a dict for dictConfig) or the simple way '
                '(log_folder, logger_names, log_levels, log_multiproc), as pypet '
                'takes one or the other' % (a['log_config'], ', '.join(simple)))
        if a['queue_maxsize'] is not None and (not isinstance(a['queue_maxsize'], int) or
                                               a['queue_maxsize'] < -1):
            bad('queue_maxsize must be -1 (2*ncores), 0 (unbounded) or a positive int')
        if a['gc_interval'] is not None and (not isinstance(a['gc_interval'], int) or
                                             a['gc_interval'] < 1):
            bad('gc_interval must be None or an int >= 1')
        for flag in ('multiproc', 'use_pool', 'add_time', 'automatic_storing', 'use_hdf5',
                     'graceful_exit', 'clean_up_runs', 'record_failed_runs', 'lazy_debug'):
            if not isinstance(a[flag], (bool, int)):
                bad('%s must be True or False, got %r' % (flag, a[flag]))
        if a['show_progress'] not in (None, True, False):
            bad('show_progress must be None (a live line when stderr is a terminal or in '
                'Jupyter), True or False, got %r' % (a['show_progress'],))
        progress = a['report_progress']
        if progress not in (False, None, 0) and not (
                isinstance(progress, tuple) and len(progress) == 3
                and isinstance(progress[0], (int, float)) and 0 < progress[0] <= 100
                and isinstance(progress[1], (str, type(None)))):  # (None: the root logger)
            bad('report_progress must be True, False, a percent, a logger name or '
                '(percent, logger name or "print", level), got %r' % (progress,))
        if isinstance(progress, tuple) and progress[1] != 'print':  # (checked here: a sweep
            try:  # would fail at its first report, after the store before the runs)
                level = _log_level(progress[2])
            except ConfigurationError:
                level = None
            if level is None:
                bad('report_progress %r: its level must be a logging level (logging.INFO, '
                    'or a name such as "INFO"), got %r' % (progress, progress[2]))
            a['report_progress'] = progress[:2] + (level,)


# ============================================================================================
# Environment
# ============================================================================================
def _map_arguments(iter_args, iter_kwargs, n):
    """[(args, kwargs)] of `n` runs from iterables of one element a run (f_run_map)."""
    columns = [list(a) for a in iter_args]
    kwcolumns = {k: list(v) for k, v in iter_kwargs.items()}
    if not columns and not kwcolumns:
        raise ConfigurationError('f_run_map needs at least one iterable of arguments '
                                 '(one element per run); use f_run for none')
    for col in columns + list(kwcolumns.values()):
        if len(col) != n:
            raise ConfigurationError('f_run_map: every iterable needs one element per '
                                     'run (%d), got %d' % (n, len(col)))
    return [(tuple(c[i] for c in columns), {k: v[i] for k, v in kwcolumns.items()})
            for i in range(n)]


class Environment:
    """Runs a job once per point of a trajectory's exploration and stores everything.

    Every argument of pypet's Environment that the seed names is accepted, with pypet 0.7's
    spellings (resumable, resume_folder, dynamic_imports, freeze_pool_input, ...) as aliases.
    Beyond pypet: `executor` (any concurrent.futures Executor: dask, mpi4py), `start_method`,
    `fsync_interval` (group commit of the journal), `record_failed_runs` and `show_progress`.
    Arguments "accepted for pypet" do nothing here; given another value than the default,
    each says so once in the log.

    Args:
        trajectory: a name for a new Trajectory, or a Trajectory to run.
        add_time: append the creation time to a new trajectory's name (default True).
        comment: the new trajectory's comment.
        dynamic_imports: your own leaf classes (or dotted names), needed to load them.
        wildcard_functions: {('$', 'crun'): func(idx) -> name, ...}, extra wildcards.
        automatic_storing: store the trajectory before, each run during and all after the runs.
        log_folder: write log files to <log_folder>/<trajectory>/ (None: leave logging alone).
        log_config: 'DEFAULT' (files in log_folder when given), None (no logging
            setup), or pypet's: an .ini file's path or a ConfigParser (for
            logging.config.fileConfig) or a dict (dictConfig), file names with $env,
            $traj, $run, $set, $proc, $host; 'multiproc_' sections or keys set up
            the worker processes.
        log_level: the level of the log files (default INFO).
        log_stdout: print output to a logger: True ('STDOUT', INFO), a name, a level or
            (name, level), until f_disable_logging().
        report_progress: log progress with an ETA: (percent, logger name or 'print', level),
            True for (5, 'minipypet', INFO), False to stop.
        multiproc: run the runs in other processes (a pool or a process per run).
        ncores: processes at once with multiproc (0: one per CPU).
        use_pool: with multiproc, `ncores` worker processes (True) or a process per run
            (None: a pool, unless immediate_postproc).
        use_scoop: refused (SCOOP is not supported; pass executor=...).
        wrap_mode: how workers store: 'QUEUE' (one writer process), 'LOCK' (in turn),
            'PIPE' (a writer thread in the main process), 'LOCAL' (the main process stores
            each run) or 'NONE' (a process-safe service of your own).
        queue_maxsize: the QUEUE mode's queue size (-1: 2 * ncores, 0: unbounded).
        freeze_input: a pool worker's runs share one copy of the trajectory, job and
            arguments (without it, each run starts from a fresh copy, or from its worker's
            last one when that run provably left it unchanged).
        timeout: refused (pypet's network modes).
        cpu_cap, memory_cap, swap_cap: accepted in (0, 100] for pypet, not enforced.
        niceness: pypet's: the worker processes on this machine at least that nice (Unix).
        continuable: write <trajectory>.cnt so that a crashed sweep can be resumed.
        continue_folder: where the .cnt goes (default: beside the data file).
        delete_continue: delete the .cnt after a complete sweep.
        use_hdf5: store with HDF5 (pickle when PyTables is missing); False: your own service.
        storage_service: a service class, instance or name ('hdf5', 'pickle', 'lazy').
        filename: the data file, or a folder for <trajectory>.hdf5 (default ./hdf5/).
        file_title: the HDF5 file's title.
        overwrite_file: replace an existing file instead of adding to it.
        encoding: accepted for pypet (text is UTF-8).
        complevel, complib, shuffle, fletcher32: HDF5 filters of big datasets (zlib 9).
        pandas_format, pandas_append: accepted for pypet (DataFrames and Series are
            stored as plain columns).
        purge_duplicate_comments: keep a run result's comment only where it first appears.
        summary_tables, small_overview_tables, large_overview_tables: write overview tables.
        results_per_run, derived_parameters_per_run: accepted for pypet (size hints).
        git_repository: commit the tracked, changed files there and record the commit.
        git_message: the commit message.
        git_fail: raise GitDiffError on uncommitted changes instead of committing.
        lazy_debug: store nothing (LazyStorageService) unless Python runs with -O.
        do_single_runs: False makes f_run refuse (an environment for post-processing only).
        clean_up_runs: drop a run's results from memory once stored.
        immediate_postproc: accepted for pypet (post-processing runs after the runs).
        graceful_exit: the first Ctrl+C starts no new runs and stores the running ones.
        gc_interval: accepted for pypet (an int >= 1), not used.
        port: refused (pypet's network modes).
        display_time: accepted for pypet.
        start_method: 'fork', 'spawn' or 'forkserver' for worker processes (None: default).
        executor: a concurrent.futures Executor (dask, mpi4py) to run the runs on.
        fsync_interval: seconds between fsyncs of the journal (0: after every run).
        record_failed_runs: record a failing run (its error in the run information) and go on.
        resumable, resume_folder, delete_resume: pypet 0.7's names of the continue_* arguments.
        dynamically_imported_classes: the seed's name of dynamic_imports.
        freeze_pool_input: pypet 0.7's name of freeze_input.
        log_levels: pypet 0.7's name of log_level (a level or a list of levels).
        logger_names: the loggers log_folder's files are on (default: the root), each at
            its level of log_levels.
        log_multiproc: False: worker processes make no log files of their own.
        sumatra_project, sumatra_reason, sumatra_label: refused (Sumatra is not supported).
        config: pypet's .ini file of Environment arguments, parameters and config (the
            arguments given here win).
        show_progress: the live progress line on stderr: None (default) when stderr is a
            terminal or Jupyter, True always, False never.
        **properties: trajectory properties, as pypet takes them (v_auto_load=False,
            with_links=False, ...); other keywords raise UnknownArgumentError (a TypeError,
            and the ValueError pypet raises).
    """

    def __init__(self, trajectory: str | Trajectory = 'trajectory', add_time: bool = True,
                 comment: str = '', dynamic_imports: list | None = None,
                 wildcard_functions: dict | None = None, automatic_storing: bool = True,
                 log_folder: str | os.PathLike | None = None, log_config: str = 'DEFAULT',
                 log_level: int | str | None = None, log_stdout: bool = False,
                 report_progress: bool | tuple = (5, 'minipypet', logging.INFO),
                 multiproc: bool = False, ncores: int = 1, use_pool: bool | None = None,
                 use_scoop: bool = False, wrap_mode: str = WRAP_MODE_LOCK, queue_maxsize: int = -1,
                 freeze_input: bool = False, timeout: float | None = None,
                 cpu_cap: float | tuple = 100.0, memory_cap: float | tuple = 100.0,
                 swap_cap: float | tuple = 100.0, niceness: int | None = None,
                 continuable: bool = True, continue_folder: str | os.PathLike | None = None,
                 delete_continue: bool = True, use_hdf5: bool = True,
                 storage_service: StorageService | type | str | None = None,
                 filename: str | os.PathLike | None = None, file_title: str | None = None,
                 overwrite_file: bool = False, encoding: str = 'utf8', complevel: int = 9,
                 complib: str = 'zlib', shuffle: bool = True, fletcher32: bool = False,
                 pandas_format: str = 'fixed', purge_duplicate_comments: bool = True,
                 summary_tables: bool = True, small_overview_tables: bool = True,
                 large_overview_tables: bool = True, results_per_run: int = 0,
                 derived_parameters_per_run: int = 0,
                 git_repository: str | os.PathLike | None = None, git_message: str = '',
                 git_fail: bool = False, lazy_debug: bool = False, do_single_runs: bool = True,
                 clean_up_runs: bool = True, immediate_postproc: bool = False,
                 graceful_exit: bool = False, gc_interval: int | None = None,
                 port: int | None = None, display_time: int = 20, start_method: str | None = None,
                 executor: object = None, fsync_interval: float = 1.0,
                 record_failed_runs: bool = False, resumable: bool | None = None,
                 resume_folder: str | os.PathLike | None = None, delete_resume: bool | None = None,
                 dynamically_imported_classes: list | None = None,
                 freeze_pool_input: bool | None = None, log_levels: object = None,
                 logger_names: object = None, log_multiproc: bool = True,
                 sumatra_project: str | None = None, sumatra_reason: str = '',
                 sumatra_label: str | None = None, pandas_append: bool = False,
                 config: str | os.PathLike | None = None,
                 show_progress: bool | None = None, **properties: object) -> None:
        unknown = sorted(k for k in properties if (k[2:] if k.startswith('v_') else k)
                         not in Trajectory._PROPERTY_DEFAULTS)
        if unknown:
            raise UnknownArgumentError(
                'Environment got unknown keywords %s; besides its arguments it takes the '
                'trajectory properties %s (also as v_...)'
                % (unknown, sorted(Trajectory._PROPERTY_DEFAULTS)))
        if config is not None:  # pypet's .ini file of arguments, parameters and config
            given = {k: v for k, v in locals().items()
                     if k not in ('self', 'config', 'properties', 'unknown')}
            given.update(properties)
            return self._from_config(config, given)
        settings = self._s = _Settings(locals())
        stdout = _log_stdout(log_stdout)  # (checked before anything is written)
        log_config = None if log_config is None or _is_default(log_config) else \
            _log_config(log_config)
        levels = None if log_folder is None else _log_levels(
            logger_names, log_level if log_levels is None else log_levels)
        self._timestamp = time.time()
        self._time = _now_strings(self._timestamp)[0]
        if isinstance(trajectory, str):
            self._traj = Trajectory(trajectory, add_time=add_time, comment=comment,
                                    dynamic_imports=dynamic_imports,
                                    dynamically_imported_classes=dynamically_imported_classes,
                                    wildcard_functions=wildcard_functions)
            # pypet: a new trajectory's time is the environment's (one name suffix)
            self._time, self._timestamp = self._traj.v_time, self._traj.v_timestamp
        elif isinstance(trajectory, Trajectory):
            self._traj = trajectory
            if dynamic_imports or dynamically_imported_classes:
                trajectory.f_add_to_dynamic_imports(
                    list(_import_classes(dynamic_imports).values()) +
                    list(_import_classes(dynamically_imported_classes).values()))
        else:
            raise ConfigurationError('trajectory must be a name (str) or a Trajectory, got %r'
                                     % (trajectory,))
        traj = self._traj
        if properties:  # (pypet's Environment(v_auto_load=False, with_links=False))
            traj.f_set_properties(**properties)
        self._live = None
        self._postproc = None
        self._stopped = False
        self._resumed = False
        # storage: an explicit service, or HDF5 (pickle without PyTables), or the user's own
        if settings.lazy:
            logger.warning('lazy_debug=True and Python runs without -O: using '
                           'LazyStorageService, NOTHING will be written to disk')
            traj.v_storage_service = LazyStorageService()
        elif traj.v_storage_service is None and (storage_service is not None or use_hdf5):
            traj.v_storage_service = _make_service(storage_service, filename,
                                                   name=traj.v_name, **settings.storage)
        # names and provenance
        self._git = None
        if git_repository is not None:
            message = '%s -- Trajectory: `%s`, Time: `%s`' % (git_message, traj.v_name,
                                                             traj.v_time)
            if traj.v_comment:
                message += ', Comment: `%s`' % traj.v_comment
            self._git = _git_commit(os.fspath(git_repository), message.strip(), git_fail)
            self._hexsha = self._git['hexsha']
        else:
            self._hexsha = hashlib.sha1((traj.v_name + str(traj.v_timestamp) +
                                         str(self._timestamp) + __version__).encode()).hexdigest()
        self._name = 'environment_%s_%s' % (self._hexsha[:7], self._time)
        traj.__dict__['_environment_hexsha'] = self._hexsha
        traj.__dict__['_environment_name'] = self._name
        if traj.v_storage_service is not None:  # (refused before a log file is made)
            self._check_parallel(traj.v_storage_service)
        # logging, only when asked for
        self._log = None
        if stdout and log_config is None and log_folder is None and \
                not logging.getLogger(stdout[0]).hasHandlers():  # (prints would vanish)
            _say_once('Environment(log_stdout=%r): print output stays on stdout, as no '
                      'handler would write it anywhere (give log_folder or log_config)'
                      % (log_stdout,))
            stdout = None
        if log_config is not None or log_folder is not None or stdout:
            folder = None if log_folder is None else os.path.join(os.fspath(log_folder),
                                                                  traj.v_name)
            self._log = _LogSetup(folder, levels, log_config, stdout, log_multiproc,
                                  (self._name, traj.v_name))
            self._log.in_main()
        try:
            self._add_config()
        except BaseException:  # (no environment comes back to disable the logging)
            if self._log is not None:
                self._log.remove()
            raise

    def _from_config(self, config, given):
        """pypet's Environment(config=...): an .ini file (or a ConfigParser) whose sections
        [trajectory], [environment] and [storage_service] hold keyword arguments (Python
        literals; those given to Environment win), and [parameters] and [config] items to add
        (`name = value` or `name = value, 'comment'`). [trajectory] may set trajectory
        properties too (auto_load, v_with_links, ...)."""
        import ast
        import configparser
        import inspect
        parser = config
        if isinstance(config, (str, os.PathLike)):
            if not os.path.isfile(config):
                raise ConfigurationError('config file %s does not exist' % (config,))
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(config)
        elif not isinstance(config, configparser.RawConfigParser):
            raise ConfigurationError('config must be the path of an .ini file or a '
                                     'ConfigParser, got %r' % (config,))

        def section(name):
            out = {}
            for option in parser.options(name) if parser.has_section(name) else ():
                text = parser.get(name, option, raw=True)
                try:
                    out[option] = ast.literal_eval(text)
                except (ValueError, SyntaxError) as exc:
                    raise ConfigurationError('config [%s] %s = %s is not a Python literal (%s)'
                                             % (name, option, text, exc)) from exc
            return out
        defaults = {k: p.default for k, p in inspect.signature(
            type(self).__init__).parameters.items()}
        kwargs = {k: v for k, v in given.items() if v is not defaults.get(k)}
        props = {}
        for name in ('storage_service', 'trajectory', 'environment'):
            for key, value in section(name).items():
                if key in defaults:
                    if key == 'storage_service' and isinstance(value, str):
                        value = value.rpartition('.')[2]  # ('pypet.HDF5StorageService')
                    kwargs.setdefault(key, value)
                else:
                    props[key] = value
        kwargs.pop('display_time', None)
        self.__init__(**kwargs)
        if props:
            self._traj.f_set_properties(**props)
        for name, add in (('parameters', self._traj.f_add_parameter),
                          ('config', self._traj.f_add_config)):
            for key, value in section(name).items():
                add(key, *(value if isinstance(value, tuple) else (value,)))

    # -- properties --------------------------------------------------------------------------
    v_trajectory = property(lambda self: self._traj, doc='The trajectory being run.')
    v_traj = v_trajectory
    v_name = property(lambda self: self._name,
                      doc='environment_<sha1[:7]>_<YYYY_MM_DD_HHhMMmSSs>')
    v_hexsha = property(lambda self: self._hexsha, doc='SHA-1 (the git commit with git).')
    v_time = property(lambda self: self._time,
                      doc='Creation time, YYYY_MM_DD_HHhMMmSSs.')
    v_timestamp = property(lambda self: self._timestamp,
                           doc='Creation time, seconds since the epoch.')
    v_git = property(lambda self: self._git, doc='The recorded git commit (or None).')

    @property
    def v_continue_file(self) -> str | None:
        """The .cnt file of this environment's trajectory (None if nothing is stored)."""
        service = self._traj.v_storage_service
        filename = getattr(service, 'filename', None)
        if filename is not None:
            folder = self._s.continue_folder or os.path.dirname(os.path.abspath(filename))
        elif self._log is not None and self._log.folder is not None:
            folder = self._s.continue_folder or self._log.folder
        else:
            return None
        return os.path.join(folder, self._traj.v_name + '.cnt')

    def __repr__(self):
        if self._s.executor is not None:
            how = 'executor %s' % type(self._s.executor).__name__
        elif self._s.multiproc:
            how = '%s of %d, wrap_mode %s' % ('pool' if self._s.use_pool else 'process per run',
                                            self._s.ncores, self._s.wrap_mode)
        else:
            how = 'serial'
        service = self._traj.v_storage_service
        filename = getattr(service, 'filename', None)
        return '<Environment %s: trajectory %s (%d run%s), %s, %s%s>' % (
            self._name, self._traj.v_name, len(self._traj), 's' if len(self._traj) != 1 else '',
            how, type(service).__name__, ' ' + filename if filename else '')

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f_disable_logging()

    def f_disable_logging(self, remove_all_handlers: bool = True) -> None:
        """Remove the log handlers this environment added."""
        if self._log is not None:
            self._log.remove()

    # -- config data -------------------------------------------------------------------------
    def _config(self, name, value, comment=''):
        full = 'environment.%s.%s' % (self._name, name)
        node = self._traj._nodes.get('config.' + full)
        if node is None:
            self._traj.f_add_config(full, value, comment=comment)
        else:
            node.__dict__['_locked'] = False
            node.f_set(value)

    def _add_config(self):
        traj = self._traj
        group = traj.f_add_config_group('environment', comment='Settings for the different '
                                        'environments used to run the experiments')
        del group
        c = self._config
        c('hexsha', self._hexsha, 'SHA-1 identifying the environment')
        c('timestamp', self._timestamp, 'creation time of the environment')
        c('name', self._name)
        c('trajectory.name', traj.v_name)
        c('trajectory.timestamp', traj.v_timestamp)
        for key, value in self._s.config(traj.v_storage_service).items():
            c(key, value)
        c('versions.python', platform.python_version())
        c('versions.minipypet', __version__)
        for module, dist in (('numpy', 'numpy'), ('tables', 'tables'), ('git', 'GitPython'),
                             ('pandas', 'pandas')):
            version = _package_version(dist)
            if version:
                c('versions.' + dist, version)
        c('platform', platform.platform())
        self._add_hdf5_config()
        main = sys.modules.get('__main__')
        script = getattr(main, '__file__', None)
        if script:
            c('script', os.path.abspath(script))
        if self._git is not None:
            g = self._git
            prefix = 'git.commit_%s_%s' % (g['hexsha'][:7], self._time)
            if 'config.' + prefix not in traj._nodes:
                for key in ('hexsha', 'name_rev', 'committed_date', 'message'):
                    traj.f_add_config('%s.%s' % (prefix, key), g[key])

    # pypet's config.hdf5 settings: {config name: (service attribute, comment)}; the overview
    # tables are three switches here (summary, small, large), pypet's are one per table
    _HDF5_CONFIG = {
        'complib': ('complib', 'compression library'),
        'complevel': ('complevel', 'compression level (0-9)'),
        'shuffle': ('shuffle', 'the shuffle filter'),
        'fletcher32': ('fletcher32', 'the fletcher32 checksum filter'),
        'purge_duplicate_comments': ('purge_duplicate_comments',
                                     'a comment of a run leaf is stored once'),
        'results_per_run': ('results_per_run', 'a size hint (pypet\'s; no effect)'),
        'derived_parameters_per_run': ('derived_parameters_per_run',
                                       'a size hint (pypet\'s; no effect)'),
        'overview.results_summary': ('summary_tables', 'the summary tables'),
        'overview.derived_parameters_summary': ('summary_tables', 'the summary tables'),
        'overview.config_overview': ('small_overview_tables', 'the small overview tables'),
        'overview.parameters_overview': ('small_overview_tables', 'the small overview tables'),
        'overview.explored_parameters_overview': ('small_overview_tables',
                                                  'the small overview tables'),
        'overview.results_overview': ('large_overview_tables', 'the large overview tables'),
        'overview.derived_parameters_overview': ('large_overview_tables',
                                                 'the large overview tables')}

    def _add_hdf5_config(self):
        """config.hdf5.*, as pypet's environment adds them: pypet scripts set them
        (traj.hdf5.purge_duplicate_comments = False) before the runs, which apply them.
        Only for pypet scripts (the alias installed): their names (shuffle, complevel, ...)
        would make a user's parameter of the same name ambiguous in natural naming."""
        traj, service = self._traj, self._traj.v_storage_service
        if not isinstance(service, HDF5StorageService) or 'config.hdf5' in traj._nodes or \
                not getattr(sys.modules.get('pypet'), '__minipypet__', False):
            return
        for name, (attr, comment) in self._HDF5_CONFIG.items():
            value = getattr(service, attr)
            traj.f_add_config('hdf5.' + name, int(value) if isinstance(value, bool) else value,
                              comment=comment)

    def _apply_hdf5_config(self):
        """config.hdf5.* back into the HDF5 service (they may have changed since)."""
        traj, service = self._traj, self._traj.v_storage_service
        if not isinstance(service, HDF5StorageService) or 'config.hdf5' not in traj._nodes:
            return
        values = {}
        for name, (attr, _) in self._HDF5_CONFIG.items():
            node = traj._nodes.get('config.hdf5.' + name)
            if node is not None and not node.f_is_empty():
                value = node.f_get()
                values[attr] = values.get(attr, False) or value  # (any table of a switch)
        for attr, value in values.items():
            if attr in ('complib', 'complevel', 'results_per_run',
                        'derived_parameters_per_run'):
                setattr(service, attr, value)
            else:
                setattr(service, attr, bool(value))
        if service.purge_duplicate_comments and not service.summary_tables:
            service.purge_duplicate_comments = False  # (it needs the summary: pypet's rule)

    # -- running -----------------------------------------------------------------------------
    def f_add_postprocessing(self, postproc: collections.abc.Callable, *args: object,
                             **kwargs: object) -> None:
        """Call postproc(traj, results, *args, **kwargs) after the runs; if it returns a dict
        (or calls traj.f_expand), the new runs execute and postproc is called again."""
        if not callable(postproc):
            raise ConfigurationError('f_add_postprocessing needs a function called as '
                                     'postproc(traj, results, ...), got %s %s'
                                     % (_type_name(postproc), _short_repr(postproc)))
        self._postproc = (postproc, args, kwargs)

    def f_run(self, runfunc: collections.abc.Callable, *args: object, **kwargs: object) -> list:
        """Run runfunc(traj, *args, **kwargs) for every run not completed yet; returns
        [(run index, return value), ...] ordered by run index."""
        if not self._s.do_single_runs:
            raise PypetError('this environment was made with do_single_runs=False')
        return self._execute(runfunc, args, kwargs, None)

    def f_run_map(self, runfunc: collections.abc.Callable, *iter_args: collections.abc.Iterable,
                  **iter_kwargs: collections.abc.Iterable) -> list:
        """Like f_run, but run i gets the i-th element of each iterable as arguments."""
        return self._execute(runfunc, (), {}, _map_arguments(iter_args, iter_kwargs,
                                                             len(self._traj)))

    def f_pipeline(self, pipeline: collections.abc.Callable) -> list | None:
        """pipeline(traj) builds the trajectory and returns (runfunc, args, kwargs) or
        ((runfunc, args, kwargs), (postproc, args, kwargs)); None means analysis only."""
        return self._pipeline(pipeline, self.f_run)

    def f_pipeline_map(self, pipeline: collections.abc.Callable) -> list | None:
        """f_pipeline whose run part is (runfunc, iter_args, iter_kwargs), as f_run_map
        takes them."""
        return self._pipeline(pipeline, self.f_run_map)

    def _pipeline(self, pipeline, run):
        spec = pipeline(self._traj)
        if spec is None:
            return None
        if isinstance(spec, tuple) and spec and isinstance(spec[0], tuple):
            run_spec, post = spec[0], spec[1] if len(spec) > 1 else None
        else:
            run_spec, post = spec, None
        run_spec = tuple(run_spec) if isinstance(run_spec, tuple) else (run_spec,)
        if not 1 <= len(run_spec) <= 3 or not callable(run_spec[0]):
            raise ConfigurationError('the pipeline must return (runfunc[, args[, kwargs]]), '
                                     'got %r' % (spec,))
        if post is not None:
            post = tuple(post) if isinstance(post, tuple) else (post,)
            if not 1 <= len(post) <= 3 or not callable(post[0]):
                raise ConfigurationError('the post-processing part of a pipeline must be '
                                         '(postproc[, args[, kwargs]]), got %r' % (post,))
            self.f_add_postprocessing(post[0], *(post[1] if len(post) > 1 else ()),
                                      **(post[2] if len(post) > 2 else {}))
        return run(run_spec[0], *(run_spec[1] if len(run_spec) > 1 else ()),
                   **(run_spec[2] if len(run_spec) > 2 else {}))

    def _service(self):
        service = self._traj.v_storage_service
        if service is None:
            raise ConfigurationError(
                'no storage service: with use_hdf5=False attach your own with '
                'env.v_trajectory.v_storage_service = MyService() (or pass '
                'storage_service=LazyStorageService to store nothing)')
        return service

    def _execute(self, job, args, kwargs, per_run, pending=None, earlier=()):
        if not callable(job):  # (before anything is stored)
            raise ConfigurationError('the job must be a function called as job(traj, ...) '
                                     'once per run, got %s %s'
                                     % (_type_name(job), _short_repr(job)))
        if _bootstrapping():  # (before anything is stored: the parent stores this trajectory)
            raise ConfigurationError('this sweep was started while a worker process imported '
                                     'the script: %s' % _BOOTSTRAP_HINT)
        traj = self._traj
        traj._check_ranges('running')
        traj._check_presets()
        service = self._service()
        self._check_parallel(service)
        if isinstance(service, _FileService) and not self._s.automatic_storing:
            service._prepare_overwrite()  # (else the first store does, once its data passed)
            if not traj._stored:  # (its runs go to the file before it: not into another's,
                service._refuse_another(traj.v_name)  # and its own f_store later is no clash)
                service._ours.add(traj.v_name)
        start = time.time()
        self._config('start_timestamp', start)
        traj.f_lock_parameters()  # as pypet: nothing changes a parameter once runs start
        results, returned = list(earlier), []  # (returned: _Returns, made pairs at the end)
        cnt = None
        self._stopped = False
        if self._s.automatic_storing:
            cnt = self._store_first(job, args, kwargs, per_run)
        first = True
        self._live = _LiveLine.make(self._s.show_progress, traj)
        try:
            while True:
                if pending is None:
                    done = traj._runs.completed
                    pending = range(len(traj)) if not any(done) else \
                        [i for i in range(len(traj)) if not done[i]]
                if first and not pending and len(traj):
                    logger.warning('all %d runs of %s are already completed, so there is '
                                   'nothing to run (f_expand adds runs)', len(traj), traj.v_name)
                first = False
                returned.append(self._run_pending(job, args, kwargs, per_run, pending, cnt))
                pending = None
                if self._postproc is not None and self._s.automatic_storing:
                    traj.f_store()  # post-processing may load what the runs stored
                    self._refresh_runs()
                if self._postproc is None or self._stopped:
                    break
                before = len(traj)
                func, pargs, pkwargs = self._postproc
                results.extend(returned.pop().pairs())
                expanded = self._postprocess(func, results, pargs, pkwargs)
                if len(traj) == before and not expanded:
                    break
                self._config('postproc_expand', True)
                if expanded is not None:
                    args, kwargs = expanded
                    if per_run is not None:  # (a map: iterables for the new runs)
                        per_run = per_run + _map_arguments(args, kwargs,
                                                           len(traj) - len(per_run))
                        args, kwargs = (), {}
                if self._s.automatic_storing:  # the new runs' ranges reach the store first
                    traj.f_store(only_init=True)
                    if cnt is not None:
                        cnt = self._write_continue_file(job, args, kwargs, per_run)
        except BaseException as exc:
            failed = True
            interrupted = isinstance(exc, KeyboardInterrupt)
            raise
        else:
            failed = interrupted = False
        finally:
            finish = time.time()
            self._config('finish_timestamp', finish)
            self._config('runtime', str(datetime.timedelta(seconds=finish - start)))
            if self._resumed:
                self._config('resumed', True)
            if self._s.automatic_storing:
                try:
                    traj.f_store()
                    self._refresh_runs()
                except Exception as exc:
                    if not failed:
                        raise
                    # (the error that stopped the sweep is the one to see; the runs it
                    # finished are in the journal, which a resume folds in)
                    logger.error('the final store after the error failed too: %s: %s',
                                 type(exc).__name__, exc)
            if self._live is not None:
                self._live.close(getattr(traj.v_storage_service, 'filename', None))
                self._live = None
            if interrupted or self._stopped and not failed:
                stopped = self._stopped_text(cnt)
                if interrupted:  # (raised from here: the finally's own exception wins)
                    raise KeyboardInterrupt(stopped) from None
                logger.warning('%s', stopped)
        if cnt is not None and self._s.delete_continue and traj.f_is_completed() and \
                not self._stopped:  # (stopped before post-processing added more runs)
            for path in (cnt + '.results', cnt):  # (a kill between leaves the .cnt alone)
                if os.path.exists(path):
                    os.remove(path)
        for part in returned:
            results.extend(part.pairs())
        results.sort(key=lambda r: r[0])
        return results

    def _stopped_text(self, cnt):
        """'stopped after N of M runs; resume with ...' (the call and the command line)."""
        traj = self._traj
        text = 'stopped after %d of %d runs of %s' % (sum(traj._runs.completed), len(traj),
                                                       traj.v_name)
        if cnt is None:
            return text + ('; the finished runs are stored, but the sweep cannot be resumed '
                           '(continuable=False, or a job that does not pickle)'
                           if self._s.automatic_storing else '')
        module = __name__ if __name__ != '__main__' else 'minipypet'
        return text + ('; resume with env.f_continue_run(%r), or from the command line: '
                       'python -m %s resume %s' % (cnt, module, _shell_quote(cnt)))

    def _refresh_runs(self):
        """After workers stored runs themselves, read which runs the store holds."""
        service = self._traj.v_storage_service
        if self._s.executor is None and self._s.multiproc and isinstance(service, _FileService) \
                and _store_mode(service, self._s.wrap_mode) != 'parent':
            state = service._load_state(self._traj.v_name, data=set())
            self._traj.__dict__['_runs'] = _RunTable.from_plain(state['runs'])

    def _postprocess(self, func, results, args, kwargs):
        traj = self._traj
        ret = func(traj, sorted(results, key=lambda r: r[0]), *args, **kwargs)
        if ret is None:
            return None
        if isinstance(ret, dict):
            traj.f_expand(ret)
            return None
        if isinstance(ret, tuple) and ret and (ret[0] is None or isinstance(ret[0], dict)):
            if len(ret) > 5:
                raise ConfigurationError('post-processing may return at most (expand_dict, '
                                         'run_args, run_kwargs, postproc_args, '
                                         'postproc_kwargs), got %d items' % len(ret))
            if ret[0]:
                traj.f_expand(ret[0])
            if len(ret) > 3:
                self._postproc = (func, tuple(ret[3]), ret[4] if len(ret) > 4 else kwargs)
            if len(ret) > 1:
                return tuple(ret[1]), ret[2] if len(ret) > 2 else {}
            return None
        logger.warning('post-processing returned %s, which is not understood (return None, '
                       'a dict to expand, or a tuple starting with one); ignored',
                       _short_repr(ret))
        return None

    def _check_parallel(self, service):
        if not (self._s.multiproc or self._s.executor is not None):
            return
        if self._s.multiproc and self._s.wrap_mode == WRAP_MODE_NONE and \
                not getattr(service, 'multiproc_safe', False):
            raise ConfigurationError(
                "wrap_mode='NONE' needs a storage service that is safe for several processes; "
                "%s is not (set multiproc_safe=True on your own service if it is); use "
                "wrap_mode='QUEUE' or 'LOCK'" % type(service).__name__)

    # -- the runs ----------------------------------------------------------------------------
    def _run_pending(self, job, args, kwargs, per_run, pending, cnt):
        if not pending:
            return _Returns()
        sweep = _Sweep(self, job, args, kwargs, per_run, pending, cnt)
        try:
            return sweep.run()
        finally:
            self._stopped = sweep.stopped

    # -- resume ------------------------------------------------------------------------------
    def _fingerprint(self, legacy=False):
        """SHA-1 of the parameters and their ranges, the same in every process (sets are
        encoded sorted: a set's order, and so its pickle, follows the hash seed).
        `legacy`: as .cnt files of minipypet 0.3 hold it."""
        traj = self._traj
        h = hashlib.sha1()
        for name, leaf in sorted(traj.f_get_parameters().items()):
            if leaf.f_is_empty():
                continue
            if legacy:
                data = leaf._store()
                try:
                    h.update(('%s=%s;' % (name, _to_json(data))).encode())
                except PypetError:
                    h.update(('%s=%r;' % (name, data)).encode())
                continue
            if isinstance(leaf, PickleParameter):  # (the values, not their pickles)
                data = (leaf._default, leaf._explored_range)
            else:
                data = leaf._store()
            h.update(('%s=%s;' % (name, _canonical(data))).encode('utf-8', 'surrogatepass'))
        return h.hexdigest()

    def _store_first(self, job, args, kwargs, per_run):
        """The store before the runs and the .cnt (its path, or None): into a file service
        under the file's lock, the .cnt first, so that a sweep stored always has one."""
        traj = self._traj
        service = traj.v_storage_service
        self._apply_hdf5_config()
        snapshot = self._continue_snapshot(job, args, kwargs, per_run)
        write = None if snapshot is None else functools.partial(_write_continue, *snapshot)
        if isinstance(service, _FileService):
            wrote = []  # [the .cnt's bytes before (None: there was none)] once written

            def write_cnt():
                try:
                    with open(snapshot[0], 'rb') as f:
                        old = f.read()
                except FileNotFoundError:
                    old = None
                write()
                wrote.append(old)
            try:
                service._store_trajectory(traj, only_init=True,
                                          before=None if write is None else write_cnt)
            except StorageError as exc:
                if not wrote:
                    raise
                # (the .cnt of a sweep that never started misleads: the one before, if any)
                _restore_continue(snapshot[0], wrote[0])
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
                raise StorageError(
                    'the runs of %r could not start: the store before them into %s failed: '
                    '%s. Nothing of them is stored and the .cnt is as it was; once that is '
                    'mended, run them again' % (
                        traj.v_name, service.filename, getattr(exc, 'reason', None)
                        or _disk_error_text(service.filename, cause))) from exc
            traj.__dict__['_stored'] = True
        else:
            traj.f_store(only_init=True)
            if write is not None:
                write()
        return None if snapshot is None else snapshot[0]

    def _write_continue_file(self, job, args, kwargs, per_run):
        """The .cnt of the runs post-processing added (their ranges are stored already)."""
        snapshot = self._continue_snapshot(job, args, kwargs, per_run)
        if snapshot is None:
            return None
        try:
            _write_continue(*snapshot)
        except StorageError as exc:  # the .cnt before cannot resume the expanded trajectory
            if os.path.exists(snapshot[0]):
                os.remove(snapshot[0])
            raise StorageError(
                '%s; the .cnt of the runs before is removed (it cannot resume the added runs): '
                'once that is mended, load the trajectory into an Environment and f_run the '
                'job, which runs the runs not completed' % exc) from exc.__cause__
        return snapshot[0]

    def _continue_snapshot(self, job, args, kwargs, per_run):
        """(.cnt path, its bytes), or None where the sweep cannot be resumed."""
        if not self._s.continuable or isinstance(self._traj.v_storage_service,
                                               LazyStorageService):
            return None
        path = self.v_continue_file
        if path is None:
            return None
        service = self._traj.v_storage_service
        filename = getattr(service, 'filename', None)
        snapshot = {'format': 1, 'minipypet': __version__, 'trajectory': self._traj.v_name,
                    'service': type(service).__name__ if isinstance(service, _FileService)
                    else None, 'filename': os.path.abspath(filename) if filename else None,
                    'cnt_folder': os.path.dirname(os.path.abspath(path)),  # (see _resumed_file)
                    'service_settings': service._settings() if isinstance(
                        service, _FileService) else {},
                    'service_object': None if isinstance(service, _FileService) else service,
                    'job': job, 'args': args, 'kwargs': kwargs, 'per_run': per_run,
                    'postproc': self._postproc, 'fingerprint': None,
                    'fingerprint2': self._fingerprint(),
                    'length': len(self._traj),
                    'settings': self._s.config(service),
                    'dynamic_imports': sorted(k for k in self._traj._dynamic_imports
                                              if ':' in k)}
        try:
            data = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            culprit = _find_unpicklable(job, args, kwargs) or '%s: %s' % (type(exc).__name__,
                                                                          exc)
            logger.warning('continuable: %s cannot be pickled, so this sweep runs but cannot '
                           'be resumed with f_continue_run (its finished runs are stored '
                           'anyway); pass continuable=False to silence this', culprit)
            return None
        return path, data

    def f_continue_run(self, continue_file: str | os.PathLike | None = None,
                       trajectory_name: str | None = None,
                       continue_folder: str | os.PathLike | None = None,
                       job: collections.abc.Callable | None = None,
                       allow_pickle: bool | None = None) -> list:
        """Resume a crashed sweep from its .cnt file: run exactly the runs that are not
        stored as completed; return all results (earlier ones from the .cnt results log).

        Args:
            continue_file: the .cnt file (or give trajectory_name and continue_folder).
            job: run this function instead of the job the .cnt names (a fixed version, or
                the job of a script that ran the sweep as __main__, which another script
                cannot import).
            allow_pickle: the .cnt, its .cnt.results and the data file's pickled data are
                unpickled if this user wrote them (signed); True: even if not (a sweep
                from someone you trust; see "Trust model" in the README)."""
        if continue_file is None:
            if trajectory_name is None:
                raise ConfigurationError('f_continue_run needs the .cnt file (or resume needs '
                                         'the trajectory name)')
            continue_file = os.path.join(continue_folder or self._s.continue_folder or '.',
                                         trajectory_name + '.cnt')
            if not os.path.exists(continue_file) and continue_folder is not None:
                alt = os.path.join(continue_folder, trajectory_name, trajectory_name + '.cnt')
                continue_file = alt if os.path.exists(alt) else continue_file
        continue_file = os.fspath(continue_file)
        if job is not None and not callable(job):
            raise ConfigurationError('f_continue_run: job must be a function called as '
                                     'job(traj, ...), got %s' % _short_repr(job))
        snapshot = _read_continue_file(continue_file, job is not None, allow_pickle)
        if job is not None:
            snapshot['job'] = job
        elif isinstance(snapshot['job'], _Missing):
            raise ResumeError(snapshot['job'].hint(continue_file))
        name = snapshot['trajectory']
        if snapshot['service_object'] is not None:
            service = snapshot['service_object']
        else:
            filename = snapshot['filename'] = _resumed_file(continue_file, snapshot)
            classes = {cls.__name__: cls for cls in STORAGE_SERVICES.values()}
            if snapshot['service'] not in classes:
                raise ResumeError('%s was written with the storage service %s, which is not '
                                  'in STORAGE_SERVICES here; register it first'
                                  % (continue_file, snapshot['service']))
            service = classes[snapshot['service']](filename,
                                                   **snapshot.get('service_settings', {}))
        traj = Trajectory(name, storage_service=service,
                          dynamic_imports=list(self._traj._dynamic_imports.values()))
        try:
            traj.f_load(name=name, load_parameters=LOAD_DATA, load_derived_parameters=LOAD_DATA,
                        load_results=LOAD_SKELETON, load_other_data=LOAD_DATA,
                        allow_pickle=allow_pickle)
        except DataNotInStorageError as exc:
            raise ResumeError('%s names trajectory %r, which is not in %s: %s (a sweep '
                              'stopped before its first store has nothing to resume: run it '
                              'again)' % (continue_file, name, snapshot['filename'], exc)) \
                from exc
        old_traj = self._traj
        self._traj = traj
        if self._fingerprint(legacy='fingerprint2' not in snapshot) != snapshot.get(
                'fingerprint2', snapshot['fingerprint']) or len(traj) != snapshot['length']:
            self._traj = old_traj
            raise ResumeError('%s does not match trajectory %r in %s: its parameters or '
                              'exploration changed since the snapshot; it cannot be resumed'
                              % (continue_file, name, snapshot['filename']))
        traj.__dict__['_environment_hexsha'] = self._hexsha
        traj.__dict__['_environment_name'] = self._name
        settings = snapshot['settings']
        mine = self._s
        if not mine.multiproc and mine.executor is None:  # (as the sweep ran before)
            for key in ('multiproc', 'ncores', 'use_pool', 'wrap_mode', 'freeze_input'):
                setattr(mine, key, settings[key])
        mine.continuable = True
        self._add_config()
        self._resumed = True
        self._postproc = snapshot['postproc'] or self._postproc
        self._s.continue_folder = os.path.dirname(os.path.abspath(continue_file))
        damage = []
        earlier = dict(_read_results_log(continue_file + '.results', allow_pickle, damage))
        done = [(i, earlier.get(i)) for i in range(len(traj)) if traj._runs.completed[i]]
        lost = [i for i, _ in done if i not in earlier] if damage and damage[0] else ()
        if lost:  # (what the runs stored is intact: only what they returned is gone)
            logger.warning('%s.results is damaged, and holds no return value of %d finished '
                           'run(s) (%s%s): what this resume returns holds None for them (the '
                           'lost values among them, and those that returned None), what they '
                           'stored is intact' % (continue_file, len(lost),
                                                 ', '.join(map(str, lost[:10])),
                                                 ', ...' if len(lost) > 10 else ''))
        return self._execute(snapshot['job'], snapshot['args'], snapshot['kwargs'],
                             snapshot['per_run'], earlier=done)

    def f_resume(self, trajectory_name: str | None = None,
                 resume_folder: str | os.PathLike | None = None) -> list:
        """pypet 0.7's spelling of f_continue_run: by trajectory name and folder."""
        return self.f_continue_run(None, trajectory_name, resume_folder)


# ============================================================================================
# Continue files - resuming a sweep
# ============================================================================================
_CNT_MAGIC = b'MINIPYPET-CNT\n'  # then the signature (_sign) of the pickle, a newline, it


def _write_continue(path, data):
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(_CNT_MAGIC + _sign(['cnt', data]).encode('ascii') + b' sha1=' +
                    hashlib.sha1(data).hexdigest().encode('ascii') + b'\n')
            f.write(data)
    try:
        _atomic_write(path, write)
    except OSError as exc:
        raise StorageError('cannot write the continue file %s: %s; the runs stored before '
                           'stay stored' % (path, _disk_error_text(path, exc))) from exc


def _restore_continue(path, old):
    """Put back the .cnt's bytes from before (None: remove it)."""
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(old)
    try:
        if old is not None:
            return _atomic_write(path, write)
    except OSError:  # (no room for it: none is better than one that cannot resume)
        pass
    os.remove(path)


def _resumed_file(path, snapshot):
    """The data file the .cnt `path` resumes. A .cnt moved or copied with the folder of
    its sweep resumes the data beside it, where it was relative to the .cnt (a copy must
    not resume the original, nor a moved one find nothing); else the file it names."""
    filename, was = snapshot['filename'], snapshot.get('cnt_folder')
    here = os.path.dirname(os.path.abspath(path))
    if filename is None or was == here:
        return filename
    beside = os.path.join(here, os.path.basename(filename))  # (0.3.0 recorded no folder)
    if was is not None:
        try:
            beside = os.path.normpath(os.path.join(here, os.path.relpath(filename, was)))
        except ValueError:  # (Windows: another drive)
            pass
    for candidate in (beside, filename):
        if os.path.exists(candidate) or os.path.exists(candidate + '.journal'):
            if candidate != filename:
                logger.info('%s was moved (or copied) from %s: resuming the data beside it, '
                            '%s', path, was or os.path.dirname(filename), candidate)
            return candidate
    raise ResumeError('%s resumes %s, which is not there (nor its journal), and neither is %s '
                      'beside the .cnt: put the data file (with its .segments folder and '
                      '.journal) back where the .cnt finds it' % (path, filename, beside))


def _continue_payload(raw, path):
    """(signature or None, pickle) of a .cnt's bytes (minipypet 0.3: unsigned); a
    ResumeError where its SHA-1 (written since 0.3.1) says it is damaged: damage must
    not pass for another user's file, which allow_pickle=True would then load."""
    if raw.startswith(_CNT_MAGIC):
        line, _, payload = raw[len(_CNT_MAGIC):].partition(b'\n')
        signature, _, digest = line.partition(b' sha1=')
        if digest and hashlib.sha1(payload).hexdigest().encode('ascii') != digest:
            raise ResumeError('%s is damaged: its checksum does not match its content '
                              '(changed or truncated after it was written), so it is not '
                              'read; what the sweep stored is safe: load its trajectory '
                              '(load_trajectory) into an Environment and f_run the job: it '
                              'runs the runs not completed' % path)
        return signature.decode('ascii', 'replace'), payload
    return None, raw


class _Missing:
    """What a .cnt names but this process cannot import (a job of another __main__)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args, **kwargs):
        raise ResumeError('%s.%s could not be imported when the sweep was resumed'
                          % (self.module, self.name))

    def hint(self, path):
        where = 'the script that ran the sweep (__main__)' if self.module == '__main__' \
            else 'module %s' % self.module
        return ('%s names %s from %s, which cannot be imported here: to resume from another '
                'script or the command line, the job must be importable from a module (define '
                'it in a .py file and import it from there), or pass it: '
                'env.f_continue_run(%r, job=%s)' % (path, self.name, where, path,
                                                     self.name.rpartition('.')[2]))


class _ContinueUnpickler(pickle.Unpickler):
    """Reads a .cnt; with `lenient`, what cannot be imported becomes a _Missing."""

    def __init__(self, f, lenient):
        super().__init__(f)
        self.lenient = lenient

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (AttributeError, ImportError):
            if not self.lenient:
                raise
            return _Missing(module, name)


def _read_continue_file(path, lenient, allow_pickle=None):
    """The snapshot dict of a .cnt file, or a ResumeError that says what to do. The .cnt is
    unpickled (it names the job) only if this user wrote it or allow_pickle=True."""
    try:
        with open(path, 'rb') as f:
            signature, payload = _continue_payload(f.read(), path)
    except FileNotFoundError:
        raise ResumeError('%s does not exist; nothing to resume' % path) from None
    except OSError as exc:
        raise ResumeError('%s cannot be read: %s' % (path, exc)) from exc
    if allow_pickle is not True and not _trusted(['cnt', payload], signature):
        raise ResumeError(_untrusted_text(path, path, resume=True))

    def load(lenient):
        return _ContinueUnpickler(io.BytesIO(payload), lenient).load()
    try:
        snapshot = load(lenient)
    except (AttributeError, ImportError) as exc:
        try:  # which name is missing, to say how to pass it
            job = load(True).get('job')
        except Exception:
            job = None
        if isinstance(job, _Missing):
            raise ResumeError(job.hint(path)) from exc
        raise ResumeError('%s cannot be read: %s (the job, its arguments and post-processing '
                          'must be importable from a module to be resumed)' % (path, exc)) \
            from exc
    except Exception as exc:
        raise ResumeError('%s cannot be read (%s: %s)' % (path, type(exc).__name__, exc)) \
            from exc
    if not isinstance(snapshot, dict) or snapshot.get('format') != 1:
        raise ResumeError('%s is not a minipypet .cnt file' % path)
    for key, kind in (('trajectory', str), ('length', int), ('settings', dict),
                      ('args', (tuple, list)), ('kwargs', dict)):
        if not isinstance(snapshot.get(key), kind):
            raise ResumeError('%s is damaged: its %r is missing or not a %s'
                              % (path, key, getattr(kind, '__name__', 'list')))
    missing = {'multiproc', 'ncores', 'use_pool', 'wrap_mode', 'freeze_input'} - set(
        snapshot['settings'])
    if missing or not isinstance(snapshot.get('service'), (str, type(None))):
        raise ResumeError('%s is damaged: its settings are incomplete' % path)
    try:
        _check_stored_name(snapshot.get('trajectory'), 'trajectory name', path)
    except StorageError as exc:
        raise ResumeError(str(exc)) from None
    missing = [v for k in ('args', 'kwargs', 'postproc', 'service_object')
               for v in _flat(snapshot.get(k)) if isinstance(v, _Missing)]
    if missing:
        raise ResumeError('%s names %s.%s, which cannot be imported here; it must be '
                          'importable from a module to be resumed'
                          % (path, missing[0].module, missing[0].name))
    return snapshot


def _flat(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flat(v)
    else:
        yield value


def _shell_quote(text):
    import shlex
    return shlex.quote(text) if os.name != 'nt' else '"%s"' % text


_BOOTSTRAP_HINT = (
    "a worker process started by the 'spawn' or 'forkserver' start method (macOS, Windows, "
    "Python 3.14's Linux default) imports your script, and the script started a sweep again. "
    "Start sweeps below `if __name__ == '__main__':` and define the job at module level")


def _bootstrapping():
    """True while multiprocessing imports the main script into a new worker process."""
    # Such a process runs multiprocessing's bootstrap, so the module is there already; not
    # importing it otherwise spares a serial sweep ~4 ms (it imports socket and more).
    multiprocessing = sys.modules.get('multiprocessing')
    return multiprocessing is not None and bool(
        getattr(multiprocessing.current_process(), '_inheriting', False))


def _store_mode(service, wrap_mode):
    """How workers store: through the queue writer, under a lock, directly, or not at
    all (the record comes back to the main process, which stores it)."""
    if getattr(service, 'keeps_runs', False) or isinstance(service, LazyStorageService):
        return 'parent'
    return {WRAP_MODE_QUEUE: 'queue', WRAP_MODE_LOCK: 'lock', WRAP_MODE_NONE: 'direct',
            WRAP_MODE_LOCAL: 'parent', WRAP_MODE_PIPE: 'queue'}[wrap_mode]


# ============================================================================================
# The sweep - the run loop in every mode
# ============================================================================================
class _Sweep:
    """The runs of one f_run call (or post-processing round, or resume), carried out
    serially, in a pool, a process per run or on an Executor; results come back in index
    order, and Ctrl+C (graceful_exit) or a failed run stops handing out new runs."""

    def __init__(self, env, job, args, kwargs, per_run, pending, cnt):
        self.env, self.traj = env, env._traj
        self.job, self.args, self.kwargs, self.per_run = job, args, kwargs, per_run
        self.pending = pending
        self.service = self.traj.v_storage_service
        self.mode = 'parent' if env._s.executor is not None else _store_mode(
            self.service, env._s.wrap_mode)
        self.results_path = cnt + '.results' if cnt else None
        self.results_log = _Journal(self.results_path, folder_lock=False) if cnt else None
        self.progress = _Progress(env._s.report_progress, len(pending), env._live)
        self.results, self.stopped, self.interrupts = _Returns(), False, 0

    def run(self):
        env = self.env
        self._clear_retried()
        if isinstance(self.service, _FileService) and (env._s.multiproc or env._s.executor):
            self.service._journal.quiesce()  # no timer thread alive when workers fork
        old_handler = self._install_sigint()
        try:
            if env._s.executor is not None:
                self._on_executor()
            elif env._s.multiproc and env._s.use_pool:
                self._in_pool()
            elif env._s.multiproc:
                self._process_per_run()
            else:
                self._serially()
            return self.results
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if self.results_log is not None:
                self.results_log.close(sync=False)  # the final store fsyncs the runs' data
            self.traj._place_held()  # (a run whose store failed keeps its results)
            self.traj.__dict__.update(_is_run=False, _new_leaves=[])  # even after Ctrl+C
            self.traj.__dict__.pop('_run_stored', None)
            self.traj.f_restore_default()

    def _clear_retried(self):
        """A run tried before (it failed: its record is stored, not completed) starts afresh,
        in every mode: what the failed attempt left under its run groups is deleted first,
        so that the retry's results replace it (it may add other names, or fewer)."""
        runs = self.traj._runs
        retried = [i for i in self.pending if runs.finish_timestamp[i] or runs.error[i]]
        if not retried:
            return
        names = ['%s.runs.%s' % (branch, _run_name(i)) for i in retried
                 for branch in ('results', 'derived_parameters')]
        for i in retried:  # (kept in memory with clean_up_runs=False, or loaded and not
            for branch in ('results', 'derived_parameters'):  # made yet: made to go now,
                group = self.traj._run_group(branch, i)  # else the final store would put
                if group is not None:  # back what the failed attempt stored)
                    self.traj._remove_subtree(group)
        if isinstance(self.service, _FileService):
            self.service._delete(names, trajectory=self.traj, recursive=True)

    def _install_sigint(self):
        sigint_handling.hit = False  # (pypet's flag, for scripts that read it: per sweep)
        if not self.env._s.graceful_exit or \
                threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self.interrupts += 1
            if self.interrupts == 1:
                self.stopped = sigint_handling.hit = True
                self.progress.clear()
                logger.warning('Ctrl+C: no new runs are started; running ones finish and are '
                               'stored (press Ctrl+C again to stop at once)')
            else:
                raise KeyboardInterrupt
        return signal.signal(signal.SIGINT, handler)

    def _extra(self, idx):
        return self.per_run[idx] if self.per_run is not None else None

    # -- serially ----------------------------------------------------------------------------
    def _serially(self):
        self.traj._fast_attributes(True)
        journal = self.service._journal if isinstance(self.service, _FileService) else None
        # What exists before the loop is frozen out of the garbage collector's passes:
        # a full pass rescans every object of the process (the imported libraries, the
        # tree), ~25 ms at 10k runs, and a sweep's runs trigger one every ~70k objects.
        # (Not where the process froze objects itself: unfreeze would thaw those too.)
        freeze = gc.isenabled() and not gc.get_freeze_count()
        if freeze:
            gc.freeze()
        try:
            if journal is not None:
                journal.hold()
            self._serial_loop()
        finally:
            if freeze:
                gc.unfreeze()
            if journal is not None:
                journal.release()
            self.traj._fast_attributes(False)

    def _serial_loop(self):
        env, traj, service = self.env, self.traj, self.service
        store = service._store_run if isinstance(service, _FileService) else \
            functools.partial(service.store, SINGLE_RUN)
        clean_up = env._s.clean_up_runs and not getattr(service, 'keeps_runs', False)
        # (locals: this loop's own cost is part of every run's)
        job, per_run, now, log = self.job, self.per_run, time.time, self.results_log
        keep, step = self.results.add, self.progress.step
        args, kwargs = self.args, self.kwargs
        graceful = self.env._s.graceful_exit
        for idx in self.pending:
            if self.stopped or graceful and sigint_handling.hit:  # (pypet's flag: a job
                self.stopped = True  # may set it, as pypet's tests do)
                break
            traj._start_run(idx)
            if per_run is not None:  # (run_map: each run its own arguments)
                extra = per_run[idx]
                args, kwargs = (self.args, self.kwargs) if extra is None else extra
            start = now()
            try:
                ret = job(traj, *args, **kwargs)
            except Exception as exc:
                record = traj._run_record(idx, start, time.time(), 0, _format_exc(exc))
                store(record)
                traj._finish_run(record, clean_up, restore=False)
                if not env._s.record_failed_runs:
                    _note_run(exc, traj, idx)
                    raise
                self.progress.clear()
                logger.error('run %d failed (recorded, going on): %s', idx, _format_exc(exc))
                self.progress.step(failed=True)
                continue
            record = traj._run_record(idx, start, now(), 1)
            _log_return(log, idx, ret)  # before the run counts as stored
            store(record)
            traj._finish_run(record, clean_up, restore=False)
            keep(idx, ret)
            step()

    # -- what other processes get ------------------------------------------------------------
    def _context(self, plumbing=None):
        """The frozen context (trajectory without ranges, job, arguments, how to store) and
        a key unique to this sweep: workers of a reused executor cache contexts by it."""
        ctx = _RunContext(self.traj._worker_copy(), self.job, self.args, self.kwargs,
                          self.mode, None if self.mode == 'parent' else self.service,
                          log_setup=self.env._log,
                          results_path=None if self.mode == 'parent' else self.results_path)
        executor = self.env._s.executor
        if executor is None or _is_local_pool(executor):  # (not a cluster's workers)
            ctx.watch, ctx.niceness = self._watch(), self.env._s.niceness
        return ctx, '%s-%s' % (self.traj.v_name, os.urandom(8).hex())

    def _watch(self):
        return (os.getpid(), self.env._s.start_method)

    def _payload(self, ctx, what):
        try:
            return pickle.dumps(ctx, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            culprit = _find_unpicklable(self.job, self.args, self.kwargs) or '%s: %s' % (
                type(exc).__name__, exc)
            raise ConfigurationError('%s: everything sent to other processes must pickle, '
                                     'and %s does not; %s' % (what, culprit, {
                                         'pool': 'use use_pool=False (with the fork start '
                                                 'method data is inherited, not pickled)',
                                         'executor': 'an executor needs picklable jobs and '
                                                     'arguments (define the job at module '
                                                     'level)',
                                         'process': "use the 'fork' start method, or make it "
                                                    "picklable"}[what.split()[0]])) from exc

    def _mp(self):
        import multiprocessing
        _libc()  # (loaded here once: forked helpers inherit it, see _die_with_parent)
        return multiprocessing.get_context(self.env._s.start_method)

    def _start_plumbing(self, mp, ctx):
        """The Manager, its queue or lock and the queue writer process, as the mode needs.
        LOCK with a file service needs no lock: each journal append is one write to a
        file opened O_APPEND under the folder's shared flock, so appends of several
        processes never interleave and a checkpoint never drops one (as with NONE); a
        Manager lock cost two round trips a batch, and one held by a worker killed -9
        was never given back."""
        plumbing = {'manager': None, 'queue': None, 'lock': None, 'writer': None,
                    'writer_conn': None}
        if self.mode == 'queue' or self.mode == 'lock' and \
                not isinstance(self.service, _FileService):
            from multiprocessing.managers import SyncManager
            manager = plumbing['manager'] = SyncManager(ctx=mp)
            try:
                manager.start(_die_with_main, (self._watch(),))
            except EOFError:  # its process ended before it answered
                if mp.get_start_method() == 'fork':
                    raise
                raise WorkerDiedError('the Manager process of the sweep ended as it started; %s'
                                      % _BOOTSTRAP_HINT) from None
            if self.mode == 'queue':
                size = self.env._s.queue_maxsize
                size = 2 * self.env._s.ncores if size == -1 else size
                plumbing['queue'] = manager.Queue(maxsize=size)
                here, there = mp.Pipe(duplex=False)
                writer = mp.Process(target=_queue_writer, name='QueueProcess',
                                    args=(plumbing['queue'], self.service, there,
                                          self.env._log, self._watch()))
                writer.daemon = True
                writer.start()
                there.close()
                plumbing['writer'], plumbing['writer_conn'] = writer, here
            else:
                plumbing['lock'] = manager.Lock()
        ctx.queue, ctx.lock = plumbing['queue'], plumbing['lock']
        return plumbing

    def _stop_plumbing(self, plumbing, ok=True):
        error = None
        writer = plumbing['writer']
        try:
            if writer is not None:
                if writer.is_alive():
                    try:
                        plumbing['queue'].put(None)
                    except Exception:  # the Manager is gone: the writer ends on its own
                        pass
                error = self._writer_status(plumbing)
        finally:
            if plumbing['manager'] is not None:
                plumbing['manager'].shutdown()
        if error is not None and ok:
            raise StorageError('storing through the queue failed; the runs it did not store '
                               'are not completed and a resume repeats them:\n%s' % error)

    def _writer_status(self, plumbing):
        """The queue writer's error (None if it stored everything); it is ended either
        way. The fold of the runs it stored goes to the service (_take_over)."""
        writer, conn = plumbing['writer'], plumbing['writer_conn']
        status = None
        try:
            # it drains the queue first: a huge backlog can take long, not forever
            if conn.poll(3600 if writer.is_alive() else 1):
                status = conn.recv()
        except (EOFError, OSError):
            status = None
        error = None
        if status is not None and status[0] == 'err':
            error = status[1]
        elif status is not None and status[2] is not None:
            self.service._take_over(status[2])
        elif status is None:
            writer.join(5)
            error = 'the queue writer process %s' % (
                'died with %s' % _describe_exit(writer.exitcode) if not writer.is_alive()
                else 'did not finish within an hour')
        writer.join(30)
        if writer.is_alive():
            writer.terminate()
        return error

    def _lost(self, what, idx, pid, exitcode):
        """The error for a worker that died carrying out run idx (or a batch of runs)."""
        method = self._mp().get_start_method()
        if isinstance(idx, list) and len(idx) == 1:
            idx = idx[0]
        runs = 'run %d (%s)' % (idx, _run_name(idx)) if not isinstance(idx, list) else \
            'runs %s (a batch; those of it not stored as completed run again when '\
            'resumed)' % ', '.join(
                map(str, idx))
        return WorkerDiedError(
            '%s: %s %d died with %s while carrying %s out (killed, os._exit or out of '
            'memory); every finished run is stored, resume with env.f_continue_run(%r)%s'
            % (runs, what, pid, _describe_exit(exitcode),
               'them' if isinstance(idx, list) else 'it',
               self.env.v_continue_file, '' if method == 'fork' or exitcode != 1 else
               '. With the %r start method a worker that ends at once with exit code 1 is '
               'often a script without the guard (see its error above): %s'
               % (method, _BOOTSTRAP_HINT)))

    # -- a pool ------------------------------------------------------------------------------
    def _in_pool(self):
        mp = self._mp()
        ctx, key = self._context()
        self._payload(ctx, 'pool (use_pool=True)')  # fail before starting anything
        plumbing = self._start_plumbing(mp, ctx)
        workers, ok = [], False
        try:
            payload = self._payload(ctx, 'pool (use_pool=True)')
            # Each worker gets the whole context once, and without freeze_input the
            # trajectory, the job and its arguments that every run starts from
            # (unpickling the Manager proxies per run would cost Manager round trips).
            fresh = None if self.env._s.freeze_input else pickle.dumps(
                (ctx.traj, ctx.job, ctx.args, ctx.kwargs), protocol=pickle.HIGHEST_PROTOCOL)
            for _ in range(min(self.env._s.ncores, len(self.pending))):
                here, there = mp.Pipe()
                process = mp.Process(target=_pool_worker, args=(there, key, payload, fresh),
                                     name='PoolWorker-%d' % (len(workers) + 1))
                process.daemon = True
                process.start()
                there.close()
                workers.append(_Worker(process, here))
            self._dispatch(workers, plumbing)
            ok = True
        finally:
            for w in workers:
                try:
                    if w.process.is_alive():
                        w.conn.send(None)
                except (OSError, ValueError):
                    pass
            for w in workers:
                w.process.join(5 if ok else 0.5)
                if w.process.is_alive():
                    w.process.terminate()
                    w.process.join()
                w.conn.close()
            if isinstance(self.service, _FileService) and self.mode in ('lock', 'direct'):
                self.service._follow_journal(claim=True)  # (the workers are gone)
            self._stop_plumbing(plumbing, ok)

    # A pool hands out batches of runs that take about this long (by the runs so far, as
    # the workers time them: a round trip's latency, ~1-10 ms on a busy machine, counted
    # per run kept batches of trivial runs at ~30): a message and a store per batch
    # instead of per run (~0.1-0.3 ms each), while a worker that dies loses at most this
    # much work, and a batch's finished runs wait at most about this long for their store.
    BATCH_SECONDS = 0.01
    MAX_BATCH = 128

    def _batch_size(self, per_run, todo, nworkers):
        """Runs in the next batch: ~BATCH_SECONDS of work, one at first and with
        graceful_exit (Ctrl+C starts no new run), and a share of what is left that keeps
        every worker busy until the end."""
        if per_run is None or self.env._s.graceful_exit:
            return 1
        size = min(self.MAX_BATCH, int(self.BATCH_SECONDS / max(per_run, 1e-7)),
                   todo // (2 * nworkers))
        return max(1, size)

    def _dispatch(self, workers, plumbing):
        """Hand batches of runs to idle pool workers in index order; collect results;
        detect deaths."""
        from multiprocessing.connection import wait
        traj = self.traj
        todo = collections.deque(self.pending)
        idle, busy, failure = list(workers), {}, None
        writer_conn = plumbing['writer_conn']
        per_run = None  # seconds a run takes, as the batches so far say
        follow = self.mode in ('lock', 'direct') and isinstance(self.service, _FileService)
        came = False  # (results came since the workers' runs were last folded)
        while todo or busy:
            while idle and todo and not self.stopped and failure is None:
                w = idle.pop()
                size = self._batch_size(per_run, len(todo), len(workers))
                w.idx = chunk = [todo.popleft() for _ in range(min(size, len(todo)))]
                w.conn.send([(i, traj._run_values(i), self._extra(i)) for i in chunk])
                busy[w.conn] = w
            if not busy:
                break
            if follow and came:  # (while the workers run)
                self.service._follow_journal()
                came = False
            watch = list(busy) + [w.process.sentinel for w in busy.values()]
            if writer_conn is not None:
                watch.append(writer_conn)
            for ready in wait(watch):
                if ready is writer_conn:
                    raise self._writer_failed(plumbing)
                w = busy.get(ready) or next(
                    (x for x in busy.values() if x.process.sentinel == ready), None)
                if w is None:
                    continue  # handled already in this round
                try:
                    result, took = w.conn.recv() if w.conn.poll() else (None, 0.0)
                except (EOFError, OSError):  # its end of the pipe closed: it is gone
                    result = None
                if result is None:
                    if w.process.is_alive() and ready is w.conn:
                        continue
                    w.process.join(5)
                    del busy[w.conn]
                    raise self._lost('worker process', w.idx, w.process.pid,
                                     w.process.exitcode)
                del busy[w.conn]
                idle.append(w)
                came = True
                took /= max(1, len(result))
                per_run = took if per_run is None else 0.7 * per_run + 0.3 * took
                for r in result:
                    failure = self._handle(r) or failure
                ran = {r.idx for r in result}
                skipped = [i for i in w.idx if i not in ran]  # after a failed run
                if skipped and failure is None and not self.stopped:
                    todo.extendleft(reversed(skipped))  # a recorded failure: go on
        if failure is not None:
            self._fail(*failure)

    def _handle(self, result):
        """One run's outcome in this process: bookkeeping, storing records sent back."""
        status, idx, value, exc_bytes, record = result
        traj = self.traj
        if self.mode == 'parent':
            if status != 'err':
                _log_return(self.results_log, idx, value)
            if getattr(self.service, 'keeps_runs', False):
                traj._apply_run_record(record)
            else:
                _store_run(self.service, record)
            traj._runs.set(idx, *record.info)
        # Otherwise a worker or the queue writer stored the run: the store, not this
        # message, says whether it is completed (Environment._refresh_runs).
        if status != 'err':
            if status == 'stop' and self.env._s.graceful_exit:
                self.stopped = True  # (as the parent's Ctrl+C: no new runs)
            self.results.append((idx, value))
            self.progress.step()
            return None
        exc = None
        if exc_bytes is not None:
            try:
                exc = pickle.loads(exc_bytes)
            except Exception:  # an exception class the main process cannot rebuild
                exc = None
        if self.env._s.record_failed_runs and not getattr(exc, 'minipypet_store_failure',
                                                           False):
            self.progress.clear()
            logger.error('run %d failed (recorded, going on):\n%s', idx, value)
            self.progress.step(failed=True)
            return None
        self.stopped = True  # no new runs; the running ones finish and are stored
        return idx, value, exc

    def _fail(self, idx, tb_text, exc):
        """Re-raise a run's exception in the main process, its traceback attached."""
        label = _run_label(self.traj, idx)
        if exc is None:
            raise RunFailedError('%s failed:\n%s' % (label, tb_text))
        exc.__cause__ = _RemoteTraceback('\n"""\nTraceback of %s:\n%s"""' % (label, tb_text))
        raise exc

    # -- a process per run -------------------------------------------------------------------
    def _writer_failed(self, plumbing):
        process = getattr(plumbing.get('manager'), '_process', None)  # (BaseManager's)
        cause = '' if process is None or process.is_alive() else (
            ' because the multiprocessing Manager process %s, which carries the queue, died '
            'with %s (killed, or out of memory)' % (process.pid,
                                                     _describe_exit(process.exitcode)))
        return StorageError('the queue writer failed%s; finished runs that reached the file '
                            'stay stored, resume with env.f_continue_run(%r):\n%s'
                            % (cause, self.env.v_continue_file, self._writer_status(plumbing)))

    def _process_per_run(self):
        from multiprocessing.connection import wait
        traj = self.traj
        mp = self._mp()
        ctx, key = self._context()
        method = mp.get_start_method()
        what = "process per run (use_pool=False) with the %r start method" % method
        if method != 'fork':
            self._payload(ctx, what)  # fail before starting anything
        plumbing = self._start_plumbing(mp, ctx)
        todo = collections.deque(self.pending)
        running, failure, ok = {}, None, False
        try:
            payload = ctx if method == 'fork' else self._payload(ctx, what)
            while todo or running:
                while todo and len(running) < self.env._s.ncores and not self.stopped and \
                        failure is None:
                    idx = todo.popleft()
                    here, there = mp.Pipe(duplex=False)
                    process = mp.Process(target=_process_run, name='Run-%d' % idx, args=(
                        there, key, payload, idx, traj._run_values(idx), self._extra(idx)))
                    process.daemon = True
                    process.start()
                    there.close()
                    running[here] = (idx, process)
                if not running:
                    break
                watch = list(running) + [p.sentinel for _, p in running.values()]
                if plumbing['writer_conn'] is not None:  # (its end: workers would block on
                    watch.append(plumbing['writer_conn'])  # the full queue for good)
                for ready in wait(watch):
                    if ready is plumbing['writer_conn']:
                        raise self._writer_failed(plumbing)
                    if ready not in running:
                        continue  # a sentinel: its pipe reports the outcome
                    idx, process = running.pop(ready)
                    try:
                        result = ready.recv()
                    except EOFError:
                        result = None
                    process.join()
                    if result is None:
                        raise self._lost('its process', idx, process.pid, process.exitcode)
                    failure = self._handle(result) or failure
            ok = True
        finally:
            for idx, process in running.values():
                process.terminate()
                process.join()
            self._stop_plumbing(plumbing, ok)
        if failure is not None:
            self._fail(*failure)

    # -- an Executor -------------------------------------------------------------------------
    def _on_executor(self):
        """Hand runs to a concurrent.futures Executor; this process stores every record."""
        import concurrent.futures as cf
        executor = self.env._s.executor
        ctx, key = self._context()
        payload = self._payload(ctx, 'executor')
        # No more runs in flight than workers (when the executor says how many): what is
        # submitted starts at once, so after Ctrl+C or a failure no other run starts.
        window = getattr(executor, '_max_workers', 0) or 32
        # A task per run costs a round trip through the executor (~0.5 ms CPU for a local
        # ProcessPoolExecutor, ~6 ms for dask) and a trip of the context: batches of runs
        # amortise both. A batch stops at its first failing run. With graceful_exit, one run
        # a task: Ctrl+C must not leave a batch of not-yet-started runs going.
        batch = 1 if self.env._s.graceful_exit else max(
            1, min(64, len(self.pending) // (4 * window)))
        todo = collections.deque(self.pending)
        futures, failure = {}, None
        try:
            while todo or futures:
                while todo and len(futures) < window and not self.stopped and failure is None:
                    chunk = [todo.popleft() for _ in range(min(batch, len(todo)))]
                    try:
                        fut = executor.submit(_executor_batch, key, payload, [
                            (i, self.traj._run_values(i), self._extra(i)) for i in chunk])
                    except Exception as exc:  # broken since the last wait (a worker died)
                        self._executor_broke(futures, [], exc)
                    futures[fut] = chunk
                if not futures:
                    break
                done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    chunk = futures.pop(fut)
                    try:
                        batch_results = fut.result()
                    except Exception as exc:
                        self._executor_broke(futures, chunk, exc)
                    for result in batch_results:
                        failure = self._handle(result) or failure
                    ran = {r.idx for r in batch_results}
                    skipped = [i for i in chunk if i not in ran]  # after a failed run
                    if skipped and failure is None and not self.stopped:
                        todo.extendleft(reversed(skipped))  # recorded failure: go on
        finally:
            for fut in futures:
                fut.cancel()
        if failure is not None:
            self._fail(*failure)

    def _executor_broke(self, futures, chunk, exc):
        """A broken executor fails every pending run and cannot say which worker died:
        store what finished meanwhile, then name every run it lost."""
        import concurrent.futures as cf
        cf.wait(list(futures), timeout=5)
        for fut in [f for f in futures if f.done() and not f.cancelled() and
                    f.exception() is None]:
            futures.pop(fut)
            for result in fut.result():
                self._handle(result)
        lost = sorted(chunk + [i for f, c in futures.items()
                               if not f.done() or f.exception() is not None for i in c])
        raise WorkerDiedError('runs %s: the executor lost them (%s: %s; a worker died?); every '
                              'finished run is stored, resume with env.f_continue_run(%r)'
                              % (', '.join(map(str, lost)) or '(none in flight)',
                                 type(exc).__name__, exc, self.env.v_continue_file)) from exc


# ============================================================================================
# Returned results and progress
# ============================================================================================
class _Returns:
    """The (run index, return value) pairs of a sweep, held as an index array and a list of
    values until they are handed out (as a million runs' tuples and ints they took ~90 MB,
    through the end-of-sweep store)."""

    __slots__ = ('idxs', 'values')

    def __init__(self):
        self.idxs, self.values = array.array('q'), []

    def add(self, idx, value):
        self.idxs.append(idx)
        self.values.append(value)

    def append(self, pair):
        self.add(*pair)

    def __len__(self):
        return len(self.values)

    def pairs(self):
        return list(zip(self.idxs, self.values))


def _result_parts(idx, blob):
    return ['result', str(idx), blob]


def _read_results_log(path, allow_pickle=None, damage=None):
    """(idx, return value) pairs a continuable sweep logged; damaged records are
    skipped (`damage`, a list: gets the damaged bytes and records that did not load). A
    return value is unpickled if this user logged it (signed), or with allow_pickle=True;
    anything else refuses the resume (ResumeError)."""
    def loads(data):
        try:
            return _safe_loads(data)  # (the record's frame: plain data)
        except PickleRefusedError:  # (minipypet 0.3 logged (idx, value) unsigned)
            if allow_pickle is not True:
                raise ResumeError(_untrusted_text(path, path, resume=True)) from None
            return pickle.loads(data)
        except Exception:
            return None
    try:
        _, records, _, skipped = _Journal.read(path, loads=loads)
    except StorageError:
        return []
    if damage is not None:
        damage.append(skipped + records.count(None))
    out = []
    for r in records:
        if type(r) is tuple and len(r) == 4 and r[0] == 'signed':
            parts = _result_parts(r[1], r[2])
            if _LOAD_POLICY.collect is not None:
                _LOAD_POLICY.collect.add(_signed_message(parts).hex())
                continue
            if allow_pickle is not True and not _trusted(parts, r[3]):
                raise ResumeError(_untrusted_text(path, path, resume=True))
            out.append((r[1], pickle.loads(r[2])))
        elif type(r) is tuple and len(r) == 2:
            out.append(r)
    return out


class _Progress:
    """Logs progress with an ETA every `step` percent of the runs (and moves the live line)."""

    def __init__(self, setting, total, live=None):
        self.live = live
        if live is not None:
            live.begin()
        self.on = bool(setting) and total > 0
        if not self.on:
            return
        self.step_pct, self.target, self.level = setting
        self.total, self.done, self.start, self.next = total, 0, time.time(), 0

    def clear(self):
        """Erase the live line, so that a log message printed next gets a line of its own."""
        if self.live is not None:
            self.live.draw('')

    def step(self, failed=False):
        if self.live is not None:
            self.live.step(failed)
        if not self.on:
            return
        self.done += 1
        pct = self.done * 100.0 / self.total
        if pct + 1e-9 < self.next and self.done < self.total:
            return
        self.next = (int(pct / self.step_pct) + 1) * self.step_pct
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        bar = int(self.done * 20 // self.total)  # (pypet's words and bar)
        text = 'PROGRESS: Finished %d/%d runs [%s%s] %5.1f%%, remaining: %s' % (
            self.done, self.total, '=' * bar, ' ' * (20 - bar), pct,
            datetime.timedelta(seconds=int(eta)))
        if self.target == 'print':
            print(text)
        else:
            logging.getLogger(self.target).log(self.level, text)


class _LiveLine:
    """The live progress line on stderr: runs done/total, failed, rate, elapsed, ETA; then a
    one-line summary. Shown when stderr is a terminal or a Jupyter output (which honours the
    carriage return), never in a pipe or a log file, and redrawn at most every 0.2 s."""

    INTERVAL = 0.2

    def __init__(self, traj, stream):
        self.traj, self.stream = traj, stream
        self.start = self.last = time.time()
        self.done = self.failed = self.ran = 0
        self.total = 0
        self.width = 0

    @classmethod
    def make(cls, setting, traj):
        """A live line for show_progress (None: only on a terminal or in Jupyter)."""
        stream = sys.stderr
        if setting is False or stream is None:
            return None
        if setting is None:
            try:
                tty = stream.isatty()
            except (AttributeError, ValueError):
                tty = False
            jupyter = type(stream).__module__.startswith('ipykernel')
            if not (tty or jupyter) or os.environ.get('TERM') == 'dumb':
                return None
        return cls(traj, stream)

    def begin(self):
        """A new batch of runs (the first, or after post-processing expanded)."""
        traj = self.traj
        self.total = len(traj)
        self.done = sum(traj._runs.completed) if len(traj._runs) else 0
        self.draw()

    def step(self, failed):
        self.ran += 1
        if failed:
            self.failed += 1
        else:
            self.done += 1
        now = time.time()
        if now - self.last >= self.INTERVAL or self.done + self.failed >= self.total:
            self.last = now
            self.draw()

    def text(self):
        elapsed = time.time() - self.start
        rate = self.ran / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done - self.failed
        eta = _duration(left / rate) if rate > 0 else '?'
        return '%s: %d/%d runs%s, %s runs/s, elapsed %s, ETA %s' % (
            self.traj.v_name, self.done, self.total,
            ', %d failed' % self.failed if self.failed else '',
            ('%.1f' % rate) if rate < 100 else '%d' % rate, _duration(elapsed), eta)

    def draw(self, text=None, end=''):
        text = self.text() if text is None else text
        pad = max(0, self.width - len(text))
        self.width = len(text) if not end else 0
        try:
            self.stream.write('\r' + text + ' ' * pad + ('\r' if not text else '') + end)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: progress is not worth dying
            pass

    def close(self, filename):
        """Replace the line by the summary: runs, failed, time and file."""
        elapsed = _duration(time.time() - self.start)
        text = '%s: %d of %d runs done%s in %s%s' % (
            self.traj.v_name, self.done, self.total,
            ', %d failed' % self.failed if self.failed else '', elapsed,
            ', stored in %s' % filename if filename else '')
        self.draw(text, end='\n')


def _duration(seconds):
    """'4.2 s' below a minute, else '0:01:05' (h:mm:ss)."""
    if seconds < 59.95:
        return '%.1f s' % seconds
    return str(datetime.timedelta(seconds=int(seconds)))


# ============================================================================================
# Coming from pypet - the rest of the public names
# ============================================================================================
class HasSlots:
    """pypet's base of classes with __slots__: pickles the slots of every class it is made of."""
    __slots__ = ('__weakref__',)
    __all_slots__ = frozenset(('__weakref__',))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__all_slots__ = frozenset(name for klass in cls.__mro__ for name in (
            lambda slots: (slots,) if isinstance(slots, str) else slots)(
                getattr(klass, '__slots__', ())))

    def __getstate__(self):
        state = dict(getattr(self, '__dict__', {}))
        for name in self.__all_slots__:
            if name != '__weakref__' and hasattr(self, name):
                state[name] = getattr(self, name)
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)


class HasLogger(HasSlots):
    """pypet's base of classes with a logger: `self._set_logger()`, then `self._logger`."""
    __slots__ = ('_logger',)

    def __getstate__(self):
        state = super().__getstate__()
        if '_logger' in state:  # (a logger does not pickle: its name does)
            state['_logger'] = state['_logger'].name
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if '_logger' in state:
            self._set_logger(state['_logger'])

    def _set_logger(self, name=None):
        if name is None:
            name = '%s.%s' % (type(self).__module__, type(self).__name__)
        self._logger = logging.getLogger(name)


class KnowsTrajectory:
    """pypet's marker of classes whose constructor takes the trajectory (`trajectory=`)."""
    KNOWS_TRAJECTORY = True


def rename_log_file(filename: str, trajectory: Trajectory | None = None,
                    env_name: str | None = None, traj_name: str | None = None,
                    set_name: str | None = None, run_name: str | None = None,
                    process_name: str | None = None, host_name: str | None = None) -> str:
    """Replace pypet's wildcards $env, $traj, $run, $set, $proc and $host in `filename`."""
    def value(given, from_traj):
        if given is not None:
            return given
        if trajectory is None:
            raise ConfigurationError('rename_log_file(%r): pass trajectory=... or the names '
                                     'its wildcards stand for' % filename)
        return from_traj()
    for wildcard, get in (
            ('$env', lambda: value(env_name, lambda: trajectory.v_environment_name)),
            ('$traj', lambda: value(traj_name, lambda: trajectory.v_name)),
            ('$run', lambda: value(run_name, lambda: trajectory.f_wildcard('$'))),
            ('$set', lambda: value(set_name, lambda: trajectory.f_wildcard('$set'))),
            ('$proc', lambda: process_name or '%s-%d' % (
                __import__('multiprocessing').current_process().name, os.getpid())),
            ('$host', lambda: host_name or platform.node().replace('.', '-'))):
        if wildcard in filename:
            filename = filename.replace(wildcard, get())
    return filename


def racedirs(path: str) -> None:
    """os.makedirs that tolerates another process making the same folders at the same time."""
    if os.path.isfile(path):
        raise OSError('%s is a file, not a folder' % path)
    os.makedirs(path, exist_ok=True)


def compact_hdf5_file(filename: str, name: str | None = None, index: int | None = None,
                      keep_backup: bool = True) -> None:
    """A no-op, kept for pypet scripts: minipypet replaces a file at each store (and
    writes run data once, into segments); a file shared by several trajectories is
    patched in a copy and written whole every 16th time, so the freed space that pypet's
    ptrepack call reclaims does not pile up. Returns 0, as ptrepack does on success."""
    del name, index, keep_backup
    logger.info('compact_hdf5_file(%r): nothing to do; minipypet files are rewritten '
                'whole often enough to hold little freed space', filename)
    return 0


def is_debug():
    """True under a debugger (pypet: PyCharm's pydevd; here any tracing debugger too)."""
    return 'pydevd' in sys.modules or sys.gettrace() is not None


def flatten_dictionary(nested_dict, separator):
    """{'a': {'b': 1}} -> {'a<separator>b': 1}."""
    flat = {}
    for key, value in nested_dict.items():
        if isinstance(value, dict):
            for inner, v in flatten_dictionary(value, separator).items():
                flat[key + separator + inner] = v
        else:
            flat[key] = value
    return flat


def nest_dictionary(flat_dict, separator):
    """Inverse of flatten_dictionary."""
    nested = {}
    for key, value in flat_dict.items():
        *heads, last = key.split(separator)
        target = nested
        for head in heads:
            target = target.setdefault(head, {})
        target[last] = value
    return nested


def get_matching_kwargs(func, kwargs):
    """The keyword arguments of `kwargs` that `func` (or a class's __init__) accepts."""
    import inspect
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return dict(kwargs)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def result_sort(result_list, start_index=0):
    """Sort [(run index, result), ...] by run index in place, from `start_index` on."""
    result_list[start_index:] = sorted(result_list[start_index:], key=lambda pair: pair[0])
    return result_list


class IteratorChain:
    """Iterators chained one after another; more can be added while iterating."""

    def __init__(self, *iterables):
        self._chain, self._current = collections.deque(iterables), iter(())

    def add(self, *iterables):
        self._chain.extend(iterables)

    def __next__(self):
        while True:
            try:
                return next(self._current)
            except StopIteration:
                if not self._chain:
                    raise
                self._current = iter(self._chain.popleft())

    next = __next__

    def __iter__(self):
        return self


def nested_equal(a, b):
    """Equality that goes into lists, dicts, numpy arrays, pandas data and sparse matrices."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    if _is_frame_or_sparse(a) or _is_frame_or_sparse(b):
        if type(a) is not type(b) and not (_pandas_kind(a) and _pandas_kind(a) == _pandas_kind(b)):
            return False
        if _pandas_kind(a) is None:  # sparse
            return a.shape == b.shape and (a != b).nnz == 0
        try:
            sys.modules['pandas'].testing.assert_frame_equal(a, b) if _pandas_kind(
                a) == 'DataFrame' else sys.modules['pandas'].testing.assert_series_equal(a, b)
            return True
        except AssertionError:
            return False
    if _is_numpy(a) or _is_numpy(b):
        np = _require('numpy')
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or (a.dtype.kind in 'US') != (b.dtype.kind in 'US'):
            return False
        if a.dtype.kind == 'O' or b.dtype.kind == 'O':
            return all(nested_equal(x, y) for x, y in zip(a.ravel(), b.ravel()))
        return bool(np.all((a == b) | (a != a) & (b != b))) if a.dtype.kind in 'fc' \
            else bool(np.all(a == b))
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and \
            all(nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and \
            len(a) == len(b) and all(nested_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, collections.abc.Mapping) and isinstance(b, collections.abc.Mapping):
        return a.keys() == b.keys() and all(nested_equal(a[k], b[k]) for k in a)
    try:
        equal = a == b
        if bool(equal) or (a != a and b != b):  # (NaN)
            return True
    except (TypeError, ValueError):
        return False
    if type(a).__eq__ is object.__eq__ and type(b).__eq__ is object.__eq__:
        # objects compared by identity: equal if their attributes are (as pypet's)
        attributes = _attributes(a), _attributes(b)
        try:
            return None not in attributes and nested_equal(*attributes)
        except RecursionError:  # (objects that refer to each other in a cycle)
            return False
    return False


def _attributes(obj):
    """An object's attributes from its __dict__ and __slots__, or None if it has neither."""
    found = dict(vars(obj)) if hasattr(obj, '__dict__') else None
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get('__slots__', ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name not in ('__dict__', '__weakref__') and hasattr(obj, name):
                found = {} if found is None else found
                found[name] = getattr(obj, name)
    return found


def parameters_equal(a, b):
    """pypet's comparison of two parameters: full name, value and range (not the comment)."""
    if not a.v_is_parameter and not b.v_is_parameter:
        raise ValueError('neither %r nor %r is a parameter' % (a, b))
    if not (a.v_is_parameter and b.v_is_parameter) or a.v_full_name != b.v_full_name:
        return False
    if a.f_is_empty() or b.f_is_empty():
        return a.f_is_empty() and b.f_is_empty()
    if not nested_equal(a._default, b._default) or a.f_has_range() != b.f_has_range():
        return False
    return not a.f_has_range() or nested_equal(a.f_get_range(copy=False),
                                               b.f_get_range(copy=False))


def results_equal(a, b):
    """pypet's comparison of two results: full name and items (not the comment)."""
    if a.v_is_parameter and b.v_is_parameter:
        raise ValueError('neither %r nor %r is a result' % (a, b))
    if a.v_is_parameter or b.v_is_parameter or a.v_full_name != b.v_full_name:
        return False
    da, db = a.f_to_dict(copy=False), b.f_to_dict(copy=False)
    return da.keys() == db.keys() and all(nested_equal(da[k], db[k]) for k in da)


def retry(n, errors, wait=0.0, logger_name=None):
    """Decorator: call the function again, up to `n` more times, while it raises `errors`."""
    def decorator(func):
        @functools.wraps(func)
        def retrying(*args, **kwargs):
            for attempt in range(n + 1):
                try:
                    return func(*args, **kwargs)
                except errors:
                    if attempt == n:
                        raise
                    if logger_name:
                        logging.getLogger(logger_name).debug(
                            'retrying %s (attempt %d failed)', func.__name__, attempt + 1)
                    if wait:
                        time.sleep(wait)
        return retrying
    return decorator


def manual_run(turn_into_run: bool = True, store_meta_data: bool = True, clean_up: bool = True
               ) -> collections.abc.Callable:
    """Decorator: `func(traj, ...)` becomes a run of the run `traj` is set to (f_start_run,
    then f_finalize_run), for runs without an Environment (pypet's manual runs)."""
    def decorator(func):
        @functools.wraps(func)
        def run(traj, *args, **kwargs):
            if traj._is_run:  # (already a run: an Environment carries it out)
                return func(traj, *args, **kwargs)
            traj.f_start_run(turn_into_run=turn_into_run)
            result = func(traj, *args, **kwargs)
            traj.f_finalize_run(store_meta_data=store_meta_data, clean_up=clean_up)
            return result
        return run
    return decorator


class _SigintHandler:
    """pypet's `sigint_handling`: the first Ctrl+C sets `hit` (finish what runs, start
    nothing new), the second raises KeyboardInterrupt."""

    def __init__(self):
        self.hit = self.started = False
        self.original_handler = None

    def start(self):
        if not self.started:
            self.original_handler = signal.signal(signal.SIGINT, self._handle_sigint)
            self.started = True

    def finalize(self):
        if self.started:
            signal.signal(signal.SIGINT, self.original_handler)
        self.hit = self.started = False

    def _handle_sigint(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt('a second SIGINT: exiting at once')
        self.hit = True
        sys.stderr.write('\nSIGINT: finishing the runs under way; press Ctrl+C again to '
                         'exit at once\n')


sigint_handling = _SigintHandler()


class DisableAllLogging:
    """Context manager: no logging at all inside (pypet's helper for noisy tests)."""

    def __enter__(self):
        logging.disable(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        logging.disable(logging.NOTSET)


# Shared data: pypet lets runs read and write parts of one HDF5 array or table in place.
# minipypet never edits a stored file in place (segments are written once, the main file is
# replaced whole, which is what keeps files uncorrupted), so these hold data in memory and
# store it as an ordinary result; writing into the file from runs is refused with the way.
_SHARED_REPLACEMENT = ('minipypet never edits a stored file in place; let each run add its '
                       'part as a result (traj.f_add_result(name, value)) and combine them in '
                       'post-processing (traj.f_get_from_runs(name)), or store a whole array '
                       'with traj.f_add_result(name, array) before the runs')


class StorageContextManager:
    """`with StorageContextManager(traj):` pypet's "keep the file open" block; minipypet
    opens files per operation, so this just hands over the trajectory."""

    def __init__(self, trajectory: Trajectory) -> None:
        self._traj = trajectory

    def __enter__(self):
        return self._traj

    def __exit__(self, *exc):
        return None

    def f_open_store(self) -> None:
        """Nothing to open: every storage operation opens and closes its file."""

    def f_close(self) -> None:
        """Nothing to close: every storage operation opens and closes its file."""

    def f_flush_store(self) -> None:
        """Nothing to flush: every store is written and synced when it returns."""


class SharedData:
    """pypet's shared array/table item of a SharedResult: data in memory, stored ordinarily."""

    def __init__(self, name: str | None = None, trajectory: Trajectory | None = None,
                 **kwargs: object) -> None:
        self._name, self._traj, self._data = name, trajectory, None
        if kwargs:
            self.create_shared_data(**kwargs)

    def create_shared_data(self, data: object = None, obj: object = None, **kwargs: object
                           ) -> object:
        """Keep `data` (or `obj`); it is stored with the result, as an ordinary item."""
        self._data = data if data is not None else obj
        return self._data

    def read(self) -> object:
        """The data kept; an error naming the replacement when nothing was kept."""
        if self._data is None:
            raise PypetError('shared data %r holds nothing: ' % self._name + _SHARED_REPLACEMENT)
        return self._data

    def __getitem__(self, key):
        return self.read()[key]

    def __setitem__(self, key, value):
        raise PypetError('shared data %r: writing into stored data in place is not '
                         'supported: %s' % (self._name, _SHARED_REPLACEMENT))

    def __len__(self):
        return len(self.read())


class SharedArray(SharedData):
    """pypet's shared HDF5 array (see SharedData)."""


class SharedCArray(SharedArray):
    """pypet's shared chunked array (see SharedData)."""


class SharedEArray(SharedArray):
    """pypet's shared extendable array (see SharedData)."""


class SharedVLArray(SharedArray):
    """pypet's shared variable-length array (see SharedData)."""


class SharedTable(SharedData):
    """pypet's shared table (see SharedData)."""


class SharedPandasFrame(SharedData):
    """pypet's shared pandas frame (see SharedData)."""


class SharedResult(Result, KnowsTrajectory):
    """pypet's result of shared data items; here the items are stored like a Result's."""

    def __init__(self, full_name: str, trajectory: Trajectory | None = None, *args: object,
                 comment: str = '', **kwargs: object) -> None:
        super().__init__(full_name, *args, comment=comment, **kwargs)

    def f_set_single(self, name: str, item: object) -> None:
        """Add an item; a SharedData item is stored as the data it holds."""
        if isinstance(item, SharedData):
            item = item.read()
        super().f_set_single(name, item)


_BUILTIN_LEAVES['SharedResult'] = SharedResult


def make_ordinary_result(result: Result, key: str, trajectory: Trajectory | None = None,
                         reload: bool = True) -> Result:
    """pypet: turn a SharedResult's item into an ordinary one; here they always are."""
    del key, trajectory, reload
    return result


def make_shared_result(result: Result, key: str, trajectory: Trajectory | None,
                       new_class: type | None = None) -> Result:
    """pypet: turn a result's item into shared data stored in place; refused, with the way."""
    raise PypetError('make_shared_result(%s, %r): %s' % (result.v_full_name, key,
                                                           _SHARED_REPLACEMENT))


# ============================================================================================
# Aliases - the unprefixed spellings of pypet 0.7, one table, one loop
# ============================================================================================
_ALIASES = {
    NNGroupNode: ['f_add_parameter', 'f_add_result', 'f_add_derived_parameter', 'f_add_config',
                  'f_add_parameter_group', 'f_add_result_group',
                  'f_add_derived_parameter_group', 'f_add_config_group', 'f_add_group',
                  'f_add_leaf', 'f_add_link', 'f_remove_link', 'f_get', 'f_get_default',
                  'f_contains', 'f_iter_nodes', 'f_iter_leaves', 'f_to_dict', 'f_children',
                  'f_get_children', 'f_has_children', 'f_remove_child', 'f_get_all',
                  'f_store_child', 'f_load_child', 'f_get_parent'],
    Trajectory: ['f_explore', 'f_expand', 'f_shrink', 'f_store', 'f_store_item',
                 'f_store_items', 'f_load', 'f_load_item', 'f_load_items', 'f_load_skeleton',
                 'f_delete_item', 'f_delete_items', 'f_remove_item', 'f_remove_items',
                 'f_set_crun', 'f_restore_default', 'f_iter_runs', 'f_idx_to_run',
                 'f_get_run_names', 'f_get_run_information', 'f_is_completed',
                 'f_get_from_runs', 'f_find_idx', 'f_get_config', 'f_get_parameters',
                 'f_get_explored_parameters', 'f_get_derived_parameters', 'f_get_results',
                 'f_lock_parameters', 'f_lock_derived_parameters', 'f_add_to_dynamic_imports',
                 'f_add_wildcard_functions', 'f_wildcard', 'f_set_properties', 'f_backup'],
    BaseParameter: ['f_get', 'f_set', 'f_get_range', 'f_has_range', 'f_get_range_length',
                    'f_is_empty', 'f_empty', 'f_lock', 'f_unlock', 'f_get_default',
                    'f_supports', 'f_val_to_str', 'v_explored', 'v_locked', 'v_name',
                    'v_full_name', 'v_comment', 'v_location'],
    Result: ['f_set', 'f_set_single', 'f_get', 'f_to_dict', 'f_is_empty', 'f_empty',
             'f_translate_key', 'f_val_to_str'],
    Environment: ['f_run', 'f_run_map', 'f_pipeline', 'f_pipeline_map',
                  'f_add_postprocessing', 'f_resume', 'f_continue_run',
                  'f_disable_logging', 'v_trajectory', 'v_traj', 'v_name',
                  'v_hexsha', 'v_time', 'v_timestamp'],
}
_RENAMED = {'v_trajectory': 'trajectory', 'v_traj': 'traj', 'f_resume': 'resume',
            'f_children': 'children'}


def _alias_name(target):
    return _RENAMED.get(target, target[2:])


_ABBREVIATIONS = {'f_apar': 'f_add_parameter', 'f_adpar': 'f_add_derived_parameter',
                  'f_ares': 'f_add_result', 'f_aconf': 'f_add_config'}  # pypet's short names


def _install_aliases():
    for short, target in _ABBREVIATIONS.items():
        setattr(NNGroupNode, short, NNGroupNode.__dict__[target])
        setattr(NNGroupNode, short[2:], NNGroupNode.__dict__[target])

    def family(cls):  # the class and its subclasses in this module that override things
        yield cls
        for sub in cls.__subclasses__():
            if sub.__module__ == cls.__module__:
                yield from family(sub)
    for cls, targets in _ALIASES.items():
        for target in targets:
            alias = _alias_name(target)
            for klass in family(cls):
                if klass is cls or target in klass.__dict__:
                    setattr(klass, alias, _static_attr(klass, target))


def _static_attr(cls, name):
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    raise AttributeError(name)


_install_aliases()
_GROUP_KINDS = {'parameters': 'ParameterGroup', 'config': 'ConfigGroup',
                'derived_parameters': 'DerivedParameterGroup', 'results': 'ResultGroup'}
for _branch, _kind in _GROUP_KINDS.items():  # pypet's group classes, one per branch
    globals()[_kind] = _BRANCH_GROUP[_branch] = type(_kind, (NNGroupNode,), {
        '_BRANCH': _branch, '__module__': __name__,
        '__doc__': "pypet's group below `%s`: traj.%s.g = %s('g') adds it there (a "
                   "group of another kind there is a TypeError, as in pypet)"
                   % (_branch, _branch, _kind)})
del _branch, _kind


# ============================================================================================
# Coming from pypet - an opt-in alias
# ============================================================================================
class _PypetModule(types.ModuleType):
    """A module of the pypet alias; ObjectTable (it needs pandas) is made when asked for."""

    def __getattr__(self, name):
        if name == 'ObjectTable':
            return _object_table()
        raise AttributeError('module %r (minipypet) has no attribute %r' % (self.__name__, name))


def _pypet_test(predicate=None):
    """pypet.test() runs pypet's own test suite, which minipypet does not ship."""
    del predicate
    raise PypetError("pypet.test() runs pypet's own test suite; minipypet's is "
                     "test_minipypet.py (python -m pytest), and tools/pypet_unittests.py runs "
                     "pypet's unit tests against minipypet")


_pypet_test.__name__ = _pypet_test.__qualname__ = 'test'  # (it is pypet.test in the alias)


def install_as_pypet() -> types.ModuleType:
    """Make `import pypet` and the submodules pypet scripts import resolve to minipypet.

    Nothing is aliased unless this is called (or a script runs through
    `python -m minipypet run script.py`). Returns the fake `pypet` module."""
    me = sys.modules[__name__]

    def module(name, **attrs):
        mod = _PypetModule(name)
        mod.__dict__.update(attrs)
        mod.__minipypet__ = True
        return mod
    constants = module('pypet.pypetconstants', **{k: v for k, v in vars(pypetconstants).items()
                                                   if not k.startswith('_')})
    groups = {kind: me.__dict__[kind] for kind in _GROUP_KINDS.values()}
    leaves = dict(Parameter=Parameter, ArrayParameter=ArrayParameter,
                  PickleParameter=PickleParameter, BaseParameter=BaseParameter, Result=Result,
                  PickleResult=PickleResult, BaseResult=BaseResult,
                  SparseParameter=SparseParameter, SparseResult=SparseResult)
    shared = dict(StorageContextManager=StorageContextManager, SharedResult=SharedResult,
                  SharedArray=SharedArray, SharedCArray=SharedCArray, SharedData=SharedData,
                  SharedEArray=SharedEArray, SharedVLArray=SharedVLArray,
                  SharedTable=SharedTable, SharedPandasFrame=SharedPandasFrame,
                  make_ordinary_result=make_ordinary_result,
                  make_shared_result=make_shared_result)
    utils = {
        'explore': dict(cartesian_product=cartesian_product,
                        find_unique_points=find_unique_points),
        'helpful_functions': dict(is_debug=is_debug, racedirs=racedirs,
                                  progressbar=progressbar, flatten_dictionary=flatten_dictionary,
                                  nest_dictionary=nest_dictionary, result_sort=result_sort,
                                  get_matching_kwargs=get_matching_kwargs),
        'comparisons': dict(nested_equal=nested_equal, parameters_equal=parameters_equal,
                            results_equal=results_equal),
        'decorators': dict(manual_run=manual_run, retry=retry),
        'mpwrappers': dict(LockWrapper=LockWrapper, ReferenceWrapper=LockWrapper,
                           QueueStorageServiceSender=QueueStorageServiceSender,
                           PipeStorageServiceSender=QueueStorageServiceSender),
        'siginthandling': dict(sigint_handling=sigint_handling),
        'hdf5compression': dict(compact_hdf5_file=compact_hdf5_file),
        'trajectory_utils': dict(merge_all_in_folder=merge_all_in_folder),
        'helpful_classes': dict(ChainMap=collections.ChainMap, IteratorChain=IteratorChain),
    }
    submodules = {'pypet.utils.' + k: module('pypet.utils.' + k, **v) for k, v in utils.items()}
    submodules['pypet.utils'] = module('pypet.utils', **{
        k: submodules['pypet.utils.' + k] for k in utils})
    submodules.update({
        'pypet.pypetconstants': constants,
        'pypet.trajectory': module('pypet.trajectory', Trajectory=Trajectory,
                                   load_trajectory=load_trajectory),
        'pypet.environment': module('pypet.environment', Environment=Environment,
                                    MultiprocContext=MultiprocContext),
        'pypet.parameter': module('pypet.parameter', **leaves),
        'pypet.naturalnaming': module('pypet.naturalnaming', NNGroupNode=NNGroupNode,
                                      NNLeafNode=NNLeafNode, NNTreeNode=NNTreeNode,
                                      KnowsTrajectory=KnowsTrajectory,
                                      NotUniqueNodeError=NotUniqueNodeError, **groups),
        'pypet.storageservice': module('pypet.storageservice',
                                       HDF5StorageService=HDF5StorageService,
                                       LazyStorageService=LazyStorageService,
                                       StorageService=StorageService),
        'pypet.pypetexceptions': module('pypet.pypetexceptions', **{
            k: v for k, v in vars(me).items() if isinstance(v, type) and
            issubclass(v, PypetError)}),
        'pypet.pypetlogging': module('pypet.pypetlogging', HasLogger=HasLogger,
                                     rename_log_file=rename_log_file,
                                     DisableAllLogging=DisableAllLogging),
        'pypet.shareddata': module('pypet.shareddata', **shared),
        'pypet.slots': module('pypet.slots', HasSlots=HasSlots),
        'pypet.annotations': module('pypet.annotations', Annotations=Annotations),
    })
    pypet = module('pypet', **{k: getattr(me, k) for k in __all__})
    pypet.__all__ = list(__all__) + list(groups) + ['merge_all_in_folder'] + (
        ['ObjectTable'] if importlib.util.find_spec('pandas') is not None else [])
    pypet.__dict__.update(groups, merge_all_in_folder=merge_all_in_folder,
                          __version__=__version__, install_as_pypet=install_as_pypet,
                          test=_pypet_test)
    pypet.__all__.append('test')
    for name, mod in submodules.items():
        setattr(pypet, name.split('.')[1], mod) if name.count('.') == 1 else None
    sys.modules['pypet'] = pypet
    sys.modules.update(submodules)
    return pypet


def find_unique_points(explored_parameters: collections.abc.Iterable) -> list:
    """[(point, [run indices])] grouping the runs that share a parameter point."""
    params = list(explored_parameters)
    ranges = [p.f_get_range(copy=False) for p in params]
    groups = collections.OrderedDict()
    for idx, point in enumerate(zip(*ranges)):
        groups.setdefault(_point_key(point), (point, []))[1].append(idx)
    return list(groups.values())


# ============================================================================================
# Working with results - what f_get_from_runs returns, the runs table
# ============================================================================================
class _RunValues(collections.abc.Mapping):
    """{run name (or index): value}, read-only and ordered by run, as f_get_from_runs(...,
    fast_access=True, auto_load=True) returns it: the run names are made only when asked
    for (1M names and a dict of them cost ~1 s and ~100 MB more than the values)."""

    __slots__ = ('_idxs', '_values', '_by_index')

    def __init__(self, idxs, values, by_index):
        self._idxs, self._values, self._by_index = idxs, values, by_index

    def _pos(self, key):
        idx = None
        if self._by_index:
            if hasattr(key, '__index__') and not isinstance(key, bool):
                idx = key.__index__()
        elif isinstance(key, str) and key.startswith(RUN_NAME) and \
                key[len(RUN_NAME):].isdigit():
            idx = int(key[len(RUN_NAME):])
            idx = idx if FORMATTED_RUN_NAME % idx == key else None
        pos = bisect.bisect_left(self._idxs, idx) if idx is not None else len(self._idxs)
        if pos == len(self._idxs) or self._idxs[pos] != idx:
            raise KeyError(key)
        return pos

    def __getitem__(self, key):
        value = self._values[self._pos(key)]
        return value.item() if hasattr(self._values, 'dtype') else value

    def __contains__(self, key):
        try:
            self._pos(key)
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self):
        return iter(self._idxs) if self._by_index else \
            map(FORMATTED_RUN_NAME.__mod__, self._idxs)

    def __len__(self):
        return len(self._idxs)

    def values(self):
        return _ListView(self)

    def items(self):
        return _ListView(self, True)

    def __repr__(self):
        shown = ', '.join('%r: %r' % kv for kv in zip(itertools.islice(self, 20),
                                                      _py_values(self._values[:20])))
        more = ', ... (%d runs)' % len(self) if len(self) > 20 else ''
        return '{%s%s}' % (shown, more)


class _RunLeaves(collections.abc.Sequence):
    """The leaves `name` of pending runs (see _PendingRuns) at `idxs`, each run made
    when its leaf is asked for (f_get_from_runs, through _RunValues)."""

    __slots__ = ('idxs', '_kids', '_name', '_fast', '_asked', '_nodes', '__weakref__')
    live = weakref.WeakSet()  # (see freeze)

    def __init__(self, idxs, kids, name, fast):
        self.idxs, self._kids, self._name, self._fast = idxs, kids, name, fast
        self._asked, self._nodes = 0, None
        _RunLeaves.live.add(self)

    @classmethod
    def freeze(cls, traj):
        """Before nodes of `traj` are removed: its views take their leaves, so that they
        hold what they held, as the dict f_get_from_runs returned before did."""
        for view in list(cls.live):
            kids = view._kids
            if kids.group._traj is traj and view._nodes is None:
                if kids.pending():
                    kids.make()
                view._nodes = [kids[_run_name(i)]._children[view._name] for i in view.idxs]
                cls.live.discard(view)

    def __len__(self):
        return len(self.idxs)

    def __iter__(self):
        if self._kids.pending():  # (all asked for: made in one batch, ~4x faster)
            self._kids.make()
        return map(self.__getitem__, range(len(self)))

    def __getitem__(self, pos):
        if isinstance(pos, slice):
            return [self[k] for k in range(*pos.indices(len(self)))]
        self._asked += 1
        if self._asked == 64 and self._kids.pending():  # (a loop of lookups: the rest
            self._kids.make()  # in one batch)
        node = self._nodes[pos] if self._nodes is not None else \
            self._kids[_run_name(self.idxs[pos])]._children[self._name]
        if self._fast and node.f_supports_fast_access():
            return node._fast_value()
        return node


class _ListView(collections.abc.Collection):
    """A values() or items() view of _RunValues, at list speed."""

    __slots__ = ('_of', '_zip')

    def __init__(self, of, zipped=False):
        self._of, self._zip = of, zipped

    def __iter__(self):
        values = _py_values(self._of._values)
        return zip(iter(self._of), values) if self._zip else iter(values)

    def __len__(self):
        return len(self._of)

    def __contains__(self, item):
        return any(item == x for x in self)

    def __repr__(self):
        return '%s(%r)' % ('run_items' if self._zip else 'run_values', list(self))


class _WorkerRunTable(_RunTable):
    """A worker's run table: only the runs it carried out, so it pickles in O(1)."""

    def __init__(self, n=0):
        self.n = n
        self.timestamp, self.finish_timestamp = {}, {}
        self.completed = collections.defaultdict(int)
        self.hexsha, self.error = {}, {}

    def __len__(self):
        return self.n


def _state_of(source, name=None, index=None):
    """A plain-data state from a Trajectory (memory over its stored file) or a filename."""
    if isinstance(source, Trajectory):
        mem = source._to_state()
        service = source.v_storage_service
        if isinstance(service, _FileService) and source.v_stored:
            try:
                state = service._load_state(source.v_name, data='scalars')
            except DataNotInStorageError:
                return mem
            _merge_memory(state, mem, STORE_DATA, False)
            return state
        return mem
    service = _make_service(None, source, mode='load')
    return service._load_state(name, index, data='scalars')


def _is_scalar(value):
    return type(value) in (bool, int, float, str, complex) or (
        _is_numpy(value) and getattr(value, 'ndim', 1) == 0)


def runs_table(source: Trajectory | str | os.PathLike, name: str | None = None,
               index: int | None = None) -> list:
    """One dict per run: explored parameter values, run information and every scalar result.

    `source` is a Trajectory or a filename (then `name`/`index` pick the trajectory; big
    arrays are not read)."""
    state = _state_of(source, name, index)
    n = state['length']
    runs = state['runs']
    rows = [{'idx': i, 'name': _run_name(i)} for i in range(n)]
    taken = set(_RUN_INFO_COLUMNS)  # a parameter or result named like them: a longer name
    short = {}
    for full in state['explored']:
        short[full] = next(k for k in (full.rpartition('.')[2], full.partition('.')[2], full)
                           if k not in taken or k == full)
        taken.add(short[full])
    keys = {}  # a result's column: its short name, else its full name
    for full in state['explored']:
        data = (state['nodes'].get(full) or {}).get('data') or {}
        values = list(data.get('explored_data') or [])
        for i, row in enumerate(rows):
            value = values[i] if i < len(values) else None
            row[short[full]] = value if _is_scalar(value) or value is None else \
                _short_repr(value, 64)
    for i, row in enumerate(rows):
        start, finish = runs['timestamp'][i], runs['finish_timestamp'][i]
        row['completed'] = runs['completed'][i]
        row['failed'] = bool(runs['error'][i])
        row['error'] = runs['error'][i]
        row['runtime'] = finish - start if finish else None
        row['finish_time'] = _now_strings(finish)[0] if finish else ''
    for template in sorted(state['columns']):
        branch, _, rest = template.partition('.')
        rel = '.'.join(p for p in rest.split('.') if p not in ('runs', '$', '$set'))
        leaf = rel.rpartition('.')[2]
        prefix = '' if branch == 'results' else 'dpar.'
        for idx, (_, _, _, data) in state['columns'][template].items():
            if idx >= n or not data:
                continue
            for item, value in data.items():
                if not _is_scalar(value):
                    continue
                key = prefix + (rel if item in (leaf, 'data') else rel + '.' + item)
                if key not in keys:
                    keys[key] = key if key not in taken else \
                        template.replace('.$', '') + ('' if item in (leaf, 'data') else
                                                      '.' + item)
                rows[idx][keys[key]] = value.item() if _is_numpy(value) else value
    return rows


_RUN_INFO_COLUMNS = ('idx', 'name', 'completed', 'failed', 'error', 'runtime', 'finish_time')


def runs_dataframe(source: Trajectory | str | os.PathLike, name: str | None = None,
                   index: int | None = None) -> object:
    """runs_table as a pandas DataFrame indexed by run index (needs pandas)."""
    pandas = _require('pandas', 'pandas')
    return pandas.DataFrame(runs_table(source, name, index)).set_index('idx')


def runs_csv(source: Trajectory | str | os.PathLike,
             path_or_file: str | os.PathLike | io.TextIOBase, name: str | None = None,
             index: int | None = None) -> list:
    """Write runs_table as CSV to a path or an open text file."""
    import csv
    rows = runs_table(source, name, index)
    fields = list(dict.fromkeys(k for row in rows for k in row))

    def write(f):
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    if hasattr(path_or_file, 'write'):
        write(path_or_file)
    else:
        with open(path_or_file, 'w', newline='') as f:
            write(f)
    return rows


# ============================================================================================
# Command line - python -m minipypet
# ============================================================================================
def _cli_state(args, data):
    service = _make_service(None, args.file, mode='load')
    return service._load_state(args.name, None if args.name else args.index, data=data)


def _cli_list(args, out):
    service = _make_service(None, args.file, mode='load')
    names = service.list_trajectories()
    print('%-40s %8s %10s  %-20s %s' % ('trajectory', 'runs', 'completed', 'time', 'comment'),
          file=out)
    for name in names:
        state = service._load_state(name, data=set())
        print('%-40s %8d %10d  %-20s %s' % (name, state['length'],
                                            sum(state['runs']['completed']), state['time'],
                                            state['comment']), file=out)
    return 0


def _cli_show(args, out):
    state = _cli_state(args, data=True)
    n = state['length']
    done = sum(state['runs']['completed'])
    failed = sum(1 for e in state['runs']['error'] if e)
    print('trajectory %s  (time %s, written by version %s)' % (state['name'], state['time'],
                                                      state['version']), file=out)
    if state['comment']:
        print('comment: %s' % state['comment'], file=out)
    print('runs: %d, completed: %d, failed: %d, pending: %d' % (n, done, failed,
                                                               n - done - failed), file=out)
    print('explored parameters:', file=out)
    for full in state['explored']:
        data = (state['nodes'].get(full) or {}).get('data') or {}
        print('  %s = %s' % (full, _short_repr(data.get('explored_data'), 100)), file=out)
    print('tree:', file=out)
    for full in sorted(state['nodes']):
        rec = state['nodes'][full]
        if full.startswith('config.') and not args.config:
            continue
        if rec['kind'] == 'link':
            line = '%s -> %s' % (full, rec['target'])
        elif rec['kind'] == 'group':
            line = '%s/' % full
        else:
            line = '%s  [%s] %s' % (full, rec['class'], _cli_value(rec['class'], rec['data']))
        if rec.get('comment'):
            line += '  # ' + rec['comment']
        print('  ' + line, file=out)
    for template in sorted(state['columns']):
        rows = state['columns'][template]
        first = rows[min(rows)] if rows else None
        print('  %s  [%s] in %d runs%s' % (template, first[0] if first else '?', len(rows),
                                          '  # ' + first[1] if first and first[1] else ''),
              file=out)
    return 0


def _cli_value(cls, data):
    if data is None:
        return '(empty)'
    if cls.startswith('Pickle'):
        return '(pickled, not unpickled)'
    return _value_summary(data, 80)


def _cli_runs(args, out):
    rows = runs_table(args.file, args.name, None if args.name else args.index)
    if args.format == 'csv':
        target = open(args.output, 'w', newline='') if args.output else out
        try:
            _write_csv(rows, target)
        finally:
            if args.output:
                target.close()
    elif args.format == 'json':
        text = json.dumps(rows, default=repr, indent=1)
        if args.output:
            with open(args.output, 'w') as f:
                f.write(text)
        else:
            print(text, file=out)
    else:
        lines = _aligned(rows)
        if args.output:
            with open(args.output, 'w') as f:
                f.write('\n'.join(lines) + '\n')
        else:
            print('\n'.join(lines), file=out)
    return 0


def _aligned(rows):
    """The runs table as text lines in aligned columns (numbers to the right)."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(k)) for k in fields] for row in rows]
    widths = [max([len(f)] + [len(c[i]) for c in cells]) for i, f in enumerate(fields)]
    right = [all(isinstance(row.get(k), (int, float)) or row.get(k) is None for row in rows)
             for k in fields]

    def line(texts):
        return '  '.join(t.rjust(w) if r else t.ljust(w)
                         for t, w, r in zip(texts, widths, right)).rstrip()
    return [line(fields)] + [line(c) for c in cells]


def _write_csv(rows, f):
    import csv
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def _cli_provenance(args, out):
    state = _cli_state(args, data={'config'})
    envs, commits = {}, {}
    for full, rec in state['nodes'].items():
        parts = full.split('.')
        if rec['kind'] != 'leaf' or len(parts) < 4:
            continue
        if parts[1] == 'environment':
            envs.setdefault(parts[2], {})['.'.join(parts[3:])] = (rec['data'] or {}).get('data')
        elif parts[1] == 'git':
            commits.setdefault(parts[2], {})['.'.join(parts[3:])] = (rec['data'] or {}).get(
                'data')
    print('environments of %s:' % state['name'], file=out)
    for env in sorted(envs):
        print('  %s' % env, file=out)
        for key in sorted(envs[env]):
            print('    %s = %s' % (key, envs[env][key]), file=out)
    print('git commits:%s' % ('' if commits else ' none recorded'), file=out)
    for commit in sorted(commits):
        print('  %s' % commit, file=out)
        for key in sorted(commits[commit]):
            print('    %s = %s' % (key, commits[commit][key]), file=out)
    return 0


def plot_runs(source: Trajectory | str | os.PathLike, result: str, x: str, hue: str | None = None,
              heatmap: bool = False, filename: str | os.PathLike | None = None,
              name: str | None = None, index: int | None = None) -> object:
    """Plot a scalar result against an explored parameter (needs matplotlib).

    One line per value of `hue`, or with heatmap=True a heatmap over x and hue. Runs
    that share a point (a third explored parameter) are averaged. Returns the matplotlib
    Figure and saves it to `filename` when given.

    Args:
        source: a Trajectory or a filename (then name/index pick the trajectory).
        result: a column of runs_table, e.g. 'z'.
        x, hue: explored parameters (their runs_table names, e.g. 'x').
    """
    _require('matplotlib')
    from matplotlib.figure import Figure
    rows = runs_table(source, name, index)
    for key in (result, x, hue):
        if key is not None and rows and not any(key in row for row in rows):
            columns = [k for k in dict.fromkeys(k for row in rows for k in row)
                       if k not in _RUN_INFO_COLUMNS]
            raise ConfigurationError('the runs have no column %r; they have %s%s'
                                     % (key, columns, _did_you_mean(key, columns)))
    if heatmap and hue is None:
        raise ConfigurationError('a heatmap needs two parameters: pass hue=... (--hue)')
    points = collections.defaultdict(list)
    for row in rows:
        value = row.get(result)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            points[(row.get(x), row.get(hue) if hue else None)].append(value)
    if not points:
        raise ConfigurationError('no run has a number for %r to plot' % result)
    mean = {k: sum(v) / len(v) for k, v in points.items()}
    averaged = any(len(v) > 1 for v in points.values())
    xs = sorted({k[0] for k in mean}, key=_sort_key)
    hues = sorted({k[1] for k in mean}, key=_sort_key)
    numeric = all(isinstance(v, (int, float)) for v in xs)
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    if heatmap:
        grid = [[mean.get((xv, hv), float('nan')) for xv in xs] for hv in hues]
        image = ax.imshow(grid, origin='lower', aspect='auto', interpolation='nearest')
        ax.set_xticks(range(len(xs)), [_cell(v) for v in xs])
        ax.set_yticks(range(len(hues)), [_cell(v) for v in hues])
        ax.set_ylabel(hue)
        fig.colorbar(image, ax=ax, label=result)
    else:
        for hv in hues:
            line = [(xv if numeric else i, mean[(xv, hv)]) for i, xv in enumerate(xs)
                    if (xv, hv) in mean]
            ax.plot([p[0] for p in line], [p[1] for p in line], marker='o',
                    label='%s = %s' % (hue, _cell(hv)) if hue else None)
        if not numeric:
            ax.set_xticks(range(len(xs)), [_cell(v) for v in xs])
        if hue:
            ax.legend()
        ax.set_ylabel(result + (' (mean over the other parameters)' if averaged else ''))
    ax.set_xlabel(x)
    ax.set_title('%s: %s' % (_traj_label(source, name, index), result))
    if filename is not None:
        fig.savefig(filename)
    return fig


def _traj_label(source, name, index):
    if isinstance(source, Trajectory):
        return source.v_name
    return name or os.path.basename(os.fspath(source))


def _sort_key(value):
    return (0, value, '') if isinstance(value, (int, float)) else (1, 0, repr(value))


def _cli_plot(args, out):
    target = args.output or '%s.png' % args.result.replace('.', '_')
    plot_runs(args.file, args.result, args.x, hue=args.hue, heatmap=args.heatmap,
              filename=target, name=args.name, index=None if args.name else args.index)
    print('wrote %s' % target, file=out)
    return 0


def _cli_resume(args, out):
    env = Environment(show_progress=None)
    results = env.f_continue_run(args.file, allow_pickle=True if args.allow_pickle else None)
    print('resumed %s: %d of %d runs completed' % (env.v_trajectory.v_name,
                                                   sum(env.v_trajectory._runs.completed),
                                                   len(env.v_trajectory)), file=out)
    del results
    return 0


def _cli_run(args, out):
    import runpy
    if not os.path.isfile(args.script):
        print('minipypet: error: no script %s' % args.script, file=sys.stderr)
        return 2
    install_as_pypet()
    sys.argv = [args.script] + list(args.args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))
    runpy.run_path(args.script, run_name='__main__')
    return 0


def main(argv: list | None = None, out: io.TextIOBase | None = None) -> int:
    """The command line: list, show, runs, provenance and plot of the trajectories in a
    file, resume of a .cnt file, and run of a pypet script.

    Only `resume` (and `run`) unpickle anything, and `resume` only what this user wrote
    (or trusted with `trust`), so files from others are safe to look at."""
    import argparse
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog='minipypet', description='Look into minipypet '
                                     '(and pypet) files: trajectories, trees, runs, provenance. '
                                     'Nothing is ever unpickled.')
    parser.add_argument('--version', action='version', version='minipypet %s' % __version__)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument('file', help='an .hdf5 or .pkl file written by minipypet (or pypet)')
        if name != 'list':
            p.add_argument('--name', help='the trajectory (default: the newest)')
            p.add_argument('--index', type=int, default=-1,
                           help='the trajectory by position, -1 = newest (default)')
        p.set_defaults(func=func)
        return p
    command('list', _cli_list, 'list the trajectories in a file with their run counts')
    show = command('show', _cli_show, "show a trajectory's tree, comments, explored "
                                      "parameters and run status")
    show.add_argument('--config', action='store_true', help='include the config branch')
    runs = command('runs', _cli_runs, 'print or export the runs table (one row per run: '
                                      'parameters, run information, scalar results)')
    runs.add_argument('--format', choices=('table', 'csv', 'json'), default='table')
    runs.add_argument('--output', '-o', help='write to this file instead of standard output')
    command('provenance', _cli_provenance, 'show the environments and git commits that '
                                           'produced a trajectory')
    plot = command('plot', _cli_plot, 'plot a scalar result against an explored parameter '
                   '(a line per value of --hue, or a heatmap); needs matplotlib')
    plot.add_argument('result', help="the result's column in the runs table, e.g. z")
    plot.add_argument('--x', required=True, help='the explored parameter on the x axis')
    plot.add_argument('--hue', help='a second explored parameter: a line per value')
    plot.add_argument('--heatmap', action='store_true',
                      help='a heatmap over --x and --hue instead of lines')
    plot.add_argument('--output', '-o', help='the image file (default: RESULT.png)')
    resume = sub.add_parser('resume', help='resume a sweep from its .cnt file (this unpickles '
                            'the .cnt: resume only your own sweeps)',
                            description='resume a sweep from its .cnt file; its job must be '
                            'importable (defined in a module), as the .cnt names it')
    resume.add_argument('file', help='the .cnt file beside the data file')
    resume.add_argument('--allow-pickle', action='store_true',
                        help='unpickle the .cnt and the data even if another user wrote them '
                        '(only for sweeps from someone you trust)')
    resume.set_defaults(func=_cli_resume)
    trust = sub.add_parser('trust', help='trust a data file or .cnt someone else wrote: its '
                           'pickled data loads from then on without allow_pickle=True',
                           description='record the pickled data in a minipypet data file (or a '
                           '.cnt file and its .cnt.results) as trusted by you; unpickling data '
                           'runs code, so trust only files from someone you trust')
    trust.add_argument('file', help='an .hdf5 or .pkl data file, or a .cnt file')
    trust.set_defaults(func=_cli_trust)
    check = sub.add_parser('check', help="read a data file whole and check every part's "
                           'checksum (loading skips the check of HDF5 files over 128 MB)',
                           description="read every trajectory of a data file whole, checking "
                           "the checksum of its main file and of each segment, big ones "
                           "included; exit status 1 names what is damaged")
    check.add_argument('file', help='an .hdf5 or .pkl data file written by minipypet')
    check.set_defaults(func=_cli_check)
    run = sub.add_parser('run', help='run a pypet script with `import pypet` resolving to '
                         'minipypet', description='run a pypet script unchanged: `import pypet` '
                         'resolves to minipypet')
    run.add_argument('script')
    run.add_argument('args', nargs=argparse.REMAINDER)
    run.set_defaults(func=_cli_run)
    args = parser.parse_args(argv)
    if args.command == 'run':
        return _cli_run(args, out)
    old = _LOAD_POLICY.allow_pickle
    _LOAD_POLICY.allow_pickle = None if args.command == 'resume' else False
    try:
        return args.func(args, out)
    except BrokenPipeError:  # (piped into `head`): stop quietly, as `cat` does
        if out is sys.stdout:
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
        return 1
    except (PypetError, OSError) as exc:
        print('minipypet: error: %s' % _one_line(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # (a damaged file the checks missed: one line, no traceback)
        print('minipypet: error: %s cannot be read (%s: %s)'
              % (getattr(args, 'file', ''), type(exc).__name__, _one_line(exc)),
              file=sys.stderr)
        return 1
    finally:
        _LOAD_POLICY.allow_pickle = old


def _one_line(exc):
    return ' '.join(str(exc).split())[:2000]


def _cli_check(args, out):
    """Read every trajectory of a file whole (nothing unpickled), every file's checksum
    checked whatever its size."""
    service = _make_service(None, args.file, mode='load')
    old, _VERIFY_MAX[0] = _VERIFY_MAX[0], None
    try:
        names = service.list_trajectories()
        for name in names:
            state = service._load_state(name, data=True)
            print('%s: %s is intact (%d runs, %d of them completed)'
                  % (args.file, name, state['length'], sum(state['runs']['completed'])),
                  file=out)
    finally:
        _VERIFY_MAX[0] = old
    if not names:
        raise StorageError('%s holds no trajectory' % args.file)
    return 0


def _cli_trust(args, out):
    """Record the digests of every pickled item of a file (or a .cnt and its results) as
    trusted by this user (see _trusted)."""
    path = args.file
    collected = set()
    old = _LOAD_POLICY.collect
    _LOAD_POLICY.collect = collected
    try:
        with open(path, 'rb') as f:
            head = f.read(len(_CNT_MAGIC))
        if head == _CNT_MAGIC or path.endswith('.cnt'):
            with open(path, 'rb') as f:
                collected.add(_signed_message(['cnt', _continue_payload(f.read(),
                                                                        path)[1]]).hex())
            if os.path.exists(path + '.results'):
                _read_results_log(path + '.results', allow_pickle=False)
        else:
            service = _make_service(None, path, mode='load')
            for name in service.list_trajectories():
                Trajectory(name, storage_service=service).f_load(name=name, load_all=LOAD_DATA)
    finally:
        _LOAD_POLICY.collect = old
    new = _add_trusted(collected)
    print('trusted %s: %d signatures of pickled data (%d new) recorded in %s'
          % (path, len(collected), new, os.path.join(_config_folder(), 'trusted')), file=out)
    return 0


if __name__ == '__main__':
    # Under `python -m` this file runs as __main__; import it under its real name so
    # that its classes pickle by a name other processes can import.
    _spec = globals().get('__spec__')
    _real = importlib.import_module(_spec.name) if _spec is not None and _spec.name != \
        '__main__' else sys.modules[__name__]
    sys.exit(_real.main())
