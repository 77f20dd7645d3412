#!/usr/bin/env python
"""Writes minipypet_0.2.0_shape.hdf5.gz: a file in which a node changed from leaf to group
between two stores, as minipypet 0.2.0 (file format 2) wrote it: the leaf and the nodes
below it are both in the file, which 0.2.0 itself could not load again. Later versions keep
the newest shape when they store, and load such a file leaving out what is below the leaf.

Pass the path of minipypet 0.2.0's module (`git show 111cde6:minipypet.py > /tmp/mp020/
minipypet.py`):

    python make_shape_fixture.py /tmp/mp020/minipypet.py

The values stored are those test_minipypet.py's
test_a_file_of_0_2_0_with_a_leaf_and_nodes_below_it_loads expects.
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_format1_fixture import gzip_here, old_module  # noqa: E402


def main(module_path):
    mp = old_module(module_path)
    assert mp.__version__ == '0.2.0', 'this needs minipypet 0.2.0'
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, 'shape.hdf5')
    for version, job in ((1, job_v1), (2, job_v2)):
        env = mp.Environment(trajectory='shape', filename=path, log_config=None,
                             report_progress=False, add_time=False, continuable=False)
        traj = env.v_trajectory
        traj.f_add_parameter('x', 0)
        traj.f_explore({'x': [1, 2]})
        if version == 1:
            traj.f_add_result('summary', 1.0)
        else:
            traj.f_add_result('summary.mean', 3.0)
        env.f_run(job)
        env.f_disable_logging()
    gzip_here(path, 'minipypet_0.2.0_shape.hdf5')
    shutil.rmtree(tmp)


def job_v1(traj):
    traj.f_add_result('z', traj.x)


def job_v2(traj):
    traj.f_add_result('z.mean', traj.x * 10)


if __name__ == '__main__':
    main(sys.argv[1])
