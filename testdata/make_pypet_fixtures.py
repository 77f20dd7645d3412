"""Generate small pypet-0.7-written HDF5 fixture files for minipypet tests.

Run with the reference environment (NOT with minipypet's own env):

    cd /work/main/testdata && /work/pypet312/bin/python make_pypet_fixtures.py [--gzip]

It writes into the directory containing this script:

    pypet07_basic.hdf5              trajectory 'basic', 6 runs, all common value types
    pypet07_resumed_partial.hdf5    trajectory 'partial', 4 runs; SIGINT during run 1
                                    with graceful_exit=True -> runs 0,1 completed,
                                    runs 2,3 completed=0; explored ArrayParameter,
                                    str and PickleParameter; numpy/complex/unicode results
    pypet07_crashed_raw.hdf5        trajectory 'crashed', 4 runs; run 2 raises -> only
                                    pypet's initial skeleton + results of runs 0,1
                                    (no parameters, all run rows completed=0)
    pypet07_two_trajs.hdf5          trajectories 'first' (2 runs) and 'second' (3 runs)
    pypet_fixtures_expected.json    expected values, read back through pypet itself
                                    (crashed file: read with plain PyTables)
    pypet07_layout.txt              text dump of the HDF5 structure of every file
                                    (via dump_h5_layout.py in this directory)

With --gzip the four .hdf5 files are replaced by .hdf5.gz copies. With --frames only
pypet07_frames.hdf5.gz is written (pandas objects in results; see make_frames).
Timestamps, runtimes, environment hexshas and config paths change on every
regeneration (the JSON is regenerated together with the files).

Only pypet's documented public API is used (Environment, Trajectory,
f_add_parameter, f_explore, cartesian_product, f_add_result,
f_add_derived_parameter, f_load, f_get_from_runs, f_get_run_information,
Environment(graceful_exit=True)).
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pypet
import tables
from pypet import (
    ArrayParameter,
    Environment,
    PickleParameter,
    PickleResult,
    Trajectory,
    cartesian_product,
)

HERE = os.path.dirname(os.path.abspath(__file__))

BASIC = os.path.join(HERE, "pypet07_basic.hdf5")
PARTIAL = os.path.join(HERE, "pypet07_resumed_partial.hdf5")
TWO = os.path.join(HERE, "pypet07_two_trajs.hdf5")
CRASHED = os.path.join(HERE, "pypet07_crashed_raw.hdf5")
EXPECTED = os.path.join(HERE, "pypet_fixtures_expected.json")
LAYOUT = os.path.join(HERE, "pypet07_layout.txt")

# Keep the files small and reproducible-ish.
ENV_KW = dict(
    log_config=None,
    multiproc=False,
    complevel=9,
    add_time=False,
)


def _env(trajectory, filename, comment, overwrite):
    return Environment(
        trajectory=trajectory,
        comment=comment,
        filename=filename,
        overwrite_file=overwrite,
        **ENV_KW,
    )


# --------------------------------------------------------------------------
# 1. basic
# --------------------------------------------------------------------------


def job_basic(traj):
    traj.f_add_result("z", traj.x * traj.y, comment="product")
    traj.f_add_result(
        "group.data",
        arr=np.array([traj.y, traj.y + 1]),
        s="hi",
        lst=[1, 2],
        d={"k": 1.5},
    )
    traj.f_add_derived_parameter("dp", traj.x + 1)


def make_basic():
    env = _env("basic", BASIC, "fixture basic", overwrite=True)
    traj = env.trajectory
    traj.f_add_parameter("x", 1.0, comment="x coord")
    traj.f_add_parameter("y", 2)
    traj.f_add_parameter("name.s", "abc")
    traj.f_add_parameter("flags.b", True)
    traj.f_add_parameter("vec", [1, 2, 3])
    traj.f_add_parameter("tup", (1.0, 2.0))
    traj.f_add_parameter(ArrayParameter, "arr", np.arange(4.0))
    traj.f_add_parameter(PickleParameter, "pick", {"a": 1, "b": [1, 2]})
    traj.f_explore(cartesian_product({"x": [1.0, 2.0, 3.0], "y": [10, 20]}))
    traj.f_add_result("summary.total", 42, comment="top")
    traj.f_add_result(PickleResult, "pres", {"set": {1, 2}})
    env.run(job_basic)
    env.disable_logging()


# --------------------------------------------------------------------------
# 2. partial (job raises in run 2)
# --------------------------------------------------------------------------


class FixtureError(RuntimeError):
    pass


def job_partial(traj):
    # pypet's documented graceful exit: with Environment(graceful_exit=True)
    # a SIGINT lets the current run finish and store, then no further runs
    # are started and the trajectory is stored as it is (incomplete runs keep
    # completed=0 in the run-info table).
    if traj.v_idx == 1:
        os.kill(os.getpid(), signal.SIGINT)
    traj.f_add_result("r", traj.a * 100 + float(traj.v.sum()), comment="a*100+sum(v)")
    # numpy scalars, complex and non-ASCII text, as real jobs often produce
    traj.f_add_result(
        "misc",
        f64=np.float64(traj.a) / 4,
        i16=np.int16(traj.a),
        c=complex(traj.a, 1),
        u="\u00e4\u20ac" + traj.lbl,
    )


def make_partial():
    env = Environment(
        trajectory="partial",
        comment="fixture partial",
        filename=PARTIAL,
        overwrite_file=True,
        graceful_exit=True,
        **ENV_KW,
    )
    traj = env.trajectory
    traj.f_add_parameter("a", 0, comment="explored int")
    # explored ArrayParameter / str Parameter / PickleParameter, to show how
    # explored ranges of those types are stored
    traj.f_add_parameter(ArrayParameter, "v", np.zeros(2), comment="explored array")
    traj.f_add_parameter("lbl", "none")
    traj.f_add_parameter(PickleParameter, "pp", {"n": 0}, comment="explored pickle")
    traj.f_explore(
        {
            "a": [1, 2, 3, 4],
            "v": [
                np.array([0.5, 0.5]),
                np.array([1.0, 2.0]),
                np.array([0.5, 0.5]),
                np.array([3.0, 4.0]),
            ],
            "lbl": ["p", "q", "rr", "s"],  # NB: non-ASCII here crashes pypet 0.7 (run-table summary)
            "pp": [{"n": 1}, {"n": 2}, {"n": 1}, {"n": 4}],
        }
    )
    old_handler = signal.getsignal(signal.SIGINT)
    try:
        env.run(job_partial)
    finally:
        signal.signal(signal.SIGINT, old_handler)
    env.disable_logging()


def job_crash(traj):
    if traj.v_idx == 2:
        raise FixtureError("deliberate failure in run 2")
    traj.f_add_result("r", traj.a * 10)


def make_crashed_raw():
    """A run raises -> the exception propagates out of env.run() and pypet
    never does its final store: the file has only the initial skeleton
    (overview tables, placeholder run rows with completed=0 for ALL runs,
    even the finished ones) and the per-run results of runs 0 and 1.
    No parameters, no config.  pypet itself cannot f_load() it fully."""
    env = _env("crashed", CRASHED, "fixture crashed", overwrite=True)
    traj = env.trajectory
    traj.f_add_parameter("a", 0)
    traj.f_explore({"a": [1, 2, 3, 4]})
    try:
        env.run(job_crash)
    except FixtureError as exc:
        print("crashed: caught expected exception:", exc)
    else:  # pragma: no cover
        raise AssertionError("job_crash should have raised")
    env.disable_logging()


# --------------------------------------------------------------------------
# 3. two trajectories in one file
# --------------------------------------------------------------------------


def job_first(traj):
    traj.f_add_result("r", traj.a * 10)


def job_second(traj):
    traj.f_add_result("r", traj.b * 2)


def make_two():
    env = _env("first", TWO, "fixture first", overwrite=True)
    traj = env.trajectory
    traj.f_add_parameter("a", 0)
    traj.f_explore({"a": [1, 2]})
    env.run(job_first)
    env.disable_logging()

    env = _env("second", TWO, "fixture second", overwrite=False)
    traj = env.trajectory
    traj.f_add_parameter("b", "")
    traj.f_explore({"b": ["u", "v", "w"]})
    env.run(job_second)
    env.disable_logging()


# --------------------------------------------------------------------------
# expected values, read back with pypet
# --------------------------------------------------------------------------


def jsonable(v):
    """Convert a value to JSON, tagging types that JSON cannot express."""
    if isinstance(v, np.ndarray):
        return {"__ndarray__": v.tolist(), "dtype": str(v.dtype), "shape": list(v.shape)}
    if isinstance(v, np.generic):
        return {"__npscalar__": jsonable(v.item()), "dtype": str(v.dtype)}
    if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, complex):
        return {"__complex__": [v.real, v.imag]}
    if isinstance(v, tuple):
        return {"__tuple__": [jsonable(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"__set__": sorted(jsonable(x) for x in v)}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    raise TypeError("cannot make %r jsonable" % (type(v),))


def typename(v):
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__name__)


def describe_param(p):
    d = {
        "class": type(p).__name__,
        "comment": p.v_comment,
        "default": jsonable(p.f_get_default() if p.f_has_range() else p.f_get()),
        "default_type": typename(p.f_get_default() if p.f_has_range() else p.f_get()),
        "explored": bool(p.v_explored),
    }
    if p.v_explored:
        rng = p.f_get_range()
        d["range"] = [jsonable(x) for x in rng]
        d["range_types"] = [typename(x) for x in rng]
    return d


def describe_result(r):
    data = r.f_to_dict()
    return {
        "class": type(r).__name__,
        "comment": r.v_comment,
        "items": {k: jsonable(v) for k, v in sorted(data.items())},
        "item_types": {k: typename(v) for k, v in sorted(data.items())},
    }


def describe_traj(filename, name):
    traj = Trajectory(name, filename=filename, add_time=False)
    traj.f_load(name=name, load_parameters=2, load_derived_parameters=2, load_results=2,
                load_other_data=2)
    out = {
        "name": traj.v_name,
        "comment": traj.v_comment,
        "length": len(traj),
        "run_names": list(traj.f_get_run_names()),
        "parameters": {},
        "explored": sorted(p.v_full_name for p in traj.f_get_explored_parameters().values()),
        "results": {},
        "derived_parameters": {},
        "runs": {},
    }
    for full, p in sorted(traj.f_get_parameters().items()):
        out["parameters"][full] = describe_param(p)
    for full, r in sorted(traj.f_get_results().items()):
        out["results"][full] = describe_result(r)
    for full, p in sorted(traj.f_get_derived_parameters().items()):
        out["derived_parameters"][full] = describe_param(p)
    info = traj.f_get_run_information(copy=True)
    for rn in out["run_names"]:
        out["runs"][rn] = {k: jsonable(v) for k, v in sorted(info[rn].items())}
    return out


def describe_crashed_raw(filename, name):
    """pypet cannot load this file fully (no parameters), so describe it
    with plain PyTables."""
    out = {"name": name, "note": make_crashed_raw.__doc__.strip()}
    with tables.open_file(filename, "r") as h5:
        root = h5.get_node("/" + name)
        out["SRVC_INIT_COMMENT"] = str(root._v_attrs["SRVC_INIT_COMMENT"])
        out["has_parameters_group"] = "parameters" in root
        out["has_config_group"] = "config" in root
        runs = h5.get_node("/%s/overview/runs" % name)
        out["overview_runs_rows"] = [
            {c: jsonable(_dec(row[c])) for c in runs.colnames} for row in runs.read()
        ]
        expl = h5.get_node("/%s/overview/explorations" % name)
        out["explorations"] = [_dec(r["explorations"]) for r in expl.read()]
        res = {}
        for run_group in h5.get_node("/%s/results/runs" % name):
            leaf = h5.get_node(run_group, "r/r")
            res[run_group._v_name] = jsonable(leaf.read())
        out["results_r"] = dict(sorted(res.items()))
    return out


def _dec(v):
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------
# 5. frames (pandas objects in results; `--frames` writes only this file)
# --------------------------------------------------------------------------

FRAMES = os.path.join(HERE, "pypet07_frames.hdf5")


def job_frames(traj):
    import pandas as pd
    traj.f_add_result("s", pd.Series([traj.x, traj.x * 2.0], index=["a", "b"]))


def make_frames():
    """Trajectory 'frames', 2 runs (x in [1.0, 2.0]): per-run Series `s` (index a, b;
    values x, 2x) and a trajectory-level result `tables` with `numbers` (float and int
    columns 'f', 'i', float index 0.5, 1.5), `objects` (object dtype, as an empty frame
    filled with .loc: columns 5.0, 7.5, index 0.0, 0.1, values 1.0..4.0) and `series`."""
    import pandas as pd
    env = _env("frames", FRAMES, "fixture frames", overwrite=True)
    traj = env.trajectory
    traj.f_add_parameter("x", 1.0)
    traj.f_explore({"x": [1.0, 2.0]})
    objects = pd.DataFrame(columns=[5.0, 7.5], index=[0.0, 0.1])
    for k, (i, c) in enumerate([(0.0, 5.0), (0.0, 7.5), (0.1, 5.0), (0.1, 7.5)]):
        objects.loc[i, c] = float(k + 1)
    traj.f_add_result("tables", numbers=pd.DataFrame({"f": [1.5, 2.5], "i": [3, 4]},
                                                     index=[0.5, 1.5]),
                      objects=objects, series=pd.Series([1.0, 2.0, 3.0], index=["p", "q", "r"]))
    env.run(job_frames)
    env.disable_logging()
    with open(FRAMES, "rb") as src, gzip.open(FRAMES + ".gz", "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    os.remove(FRAMES)
    print("%8d  %s" % (os.path.getsize(FRAMES + ".gz"), os.path.basename(FRAMES) + ".gz"))


def main():
    warnings.simplefilter("ignore")
    if "--frames" in sys.argv[1:]:
        make_frames()
        return
    make_basic()
    make_partial()
    make_crashed_raw()
    make_two()

    expected = {
        "_about": (
            "Values read back with pypet %s from the fixture files; written by "
            "make_pypet_fixtures.py. Tagged JSON: {'__ndarray__': list, 'dtype', 'shape'}, "
            "{'__tuple__': [...]}, {'__set__': [...]}, {'__complex__': [re, im]}, {'__npscalar__': v, 'dtype'}. "
            "Keys of 'parameters'/'results'/'derived_parameters' are full names without "
            "the trajectory name; per-run results live under "
            "results.runs.run_XXXXXXXX.<name>." % pypet.__version__
        ),
        "versions": {
            "pypet": pypet.__version__,
            "tables": tables.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "files": {
            "pypet07_basic.hdf5": {"basic": describe_traj(BASIC, "basic")},
            "pypet07_resumed_partial.hdf5": {"partial": describe_traj(PARTIAL, "partial")},
            "pypet07_two_trajs.hdf5": {
                "first": describe_traj(TWO, "first"),
                "second": describe_traj(TWO, "second"),
            },
        },
        "raw_files": {
            "pypet07_crashed_raw.hdf5": {"crashed": describe_crashed_raw(CRASHED, "crashed")},
        },
    }
    # f_get_from_runs view, as a convenience for tests
    for fname, trajs in expected["files"].items():
        path = os.path.join(HERE, fname)
        for tname, d in trajs.items():
            traj = Trajectory(tname, filename=path, add_time=False)
            traj.f_load(name=tname, load_parameters=2, load_results=2)
            rname = "z" if tname == "basic" else "r"
            got = traj.f_get_from_runs(rname, fast_access=True)
            d["f_get_from_runs_%s" % rname] = {k: jsonable(v) for k, v in got.items()}

    with open(EXPECTED, "w") as fh:
        json.dump(expected, fh, indent=1, sort_keys=False)
        fh.write("\n")

    # full dump of the basic file, the others without their (identically
    # structured) config subtree, to keep the text file short
    dumper = [sys.executable, os.path.join(HERE, "dump_h5_layout.py")]
    with open(LAYOUT, "w") as fh:
        subprocess.run(dumper + [os.path.basename(BASIC)], stdout=fh, check=True, cwd=HERE)
        subprocess.run(dumper + ["--skip", "/*/config"] + [os.path.basename(f) for f in (PARTIAL, CRASHED, TWO)],
                       stdout=fh, check=True, cwd=HERE)
    outputs = [BASIC, PARTIAL, CRASHED, TWO, EXPECTED, LAYOUT]
    if "--gzip" in sys.argv[1:]:
        # optional: keep only gzip-compressed copies (pypet's HDF5 files are
        # ~75-85 % metadata padding and compress 4-5x); tests must then
        # gunzip them to a temporary directory before opening
        for i, f in enumerate(outputs[:4]):
            with open(f, "rb") as src, gzip.open(f + ".gz", "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
            os.remove(f)
            outputs[i] = f + ".gz"
    for f in outputs:
        print("%8d  %s" % (os.path.getsize(f), os.path.basename(f)))


if __name__ == "__main__":
    main()
