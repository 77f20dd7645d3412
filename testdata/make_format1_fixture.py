#!/usr/bin/env python
"""Writes minipypet_format1.hdf5.gz: a file in minipypet's file format 1 (every leaf a
dataset), which later versions must still read.

Format 1 was written by minipypet 0.1; pass that module's path (for example
`git show c3a30bb:minipypet.py > /tmp/mp01/minipypet.py`):

    python make_format1_fixture.py /tmp/mp01/minipypet.py

The values stored are those test_minipypet.py's test_format1_file_still_loads expects.
"""

import gzip
import importlib.util
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def old_module(module_path):
    """An earlier minipypet, imported from its file (also used by make_shape_fixture.py)."""
    spec = importlib.util.spec_from_file_location('minipypet_old', module_path)
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    return mp


def gzip_here(path, name):
    """Gzip the file at `path` into this folder as `name`.gz."""
    with open(path, 'rb') as src, gzip.open(os.path.join(HERE, name + '.gz'), 'wb') as dst:
        shutil.copyfileobj(src, dst)


def main(module_path):
    mp = old_module(module_path)
    assert mp.FORMAT_VERSION == 1, 'this needs a minipypet that writes format 1'
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, 'format1.hdf5')
    env = mp.Environment(trajectory='old', filename=path, overwrite_file=True,
                         log_config=None, report_progress=False, add_time=False,
                         comment='written in format 1')
    traj = env.v_trajectory
    traj.f_add_parameter('x', 1.0, comment='explored')
    traj.f_add_parameter('n', 3, comment='an int')
    traj.f_add_parameter('flag', True)
    traj.f_add_parameter('label', 'héllo ', comment='text')
    traj.f_add_parameter('values', [1, 2, 3])
    traj.f_add_config('cfg', 'config value')
    traj.f_add_result('summary', 'trajectory-level', comment='a str result')
    traj.f_explore({'x': [1.0, 2.0, 3.0]})
    env.f_run(job)
    env.f_disable_logging()
    gzip_here(path, 'minipypet_format1.hdf5')
    shutil.rmtree(tmp)


def job(traj):
    traj.f_add_result('z', traj.x * traj.n, comment='x times n')


if __name__ == '__main__':
    main(sys.argv[1])
