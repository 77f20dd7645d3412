"""Lesson 8: runs that produce big numpy arrays.

What to notice:
  * a Result holds numpy arrays as they are; HDF5 stores each run's array as a row of one
    compressed dataset (pickle files work too, without PyTables);
  * loading is lazy where you want it: load_results=1 (a skeleton) reads no array data, and
    f_load_item reads one run's array alone - handy when a sweep holds gigabytes;
  * f_get_from_runs(..., auto_load=True) collects one result of every run.

Needs numpy (`pip install numpy`; PyTables for HDF5: `pip install tables numpy`).
Run it: python examples/08_big_arrays.py (a second or two).
"""
import os
import shutil

import minipypet as pypet

try:
    import numpy as np
except ImportError:
    np = None


def diffuse(traj):
    """A 1-D diffusion: `steps` time steps of a heat pulse on a 2,000-cell rod."""
    rod = np.zeros(2000)
    rod[1000] = 1.0
    history = np.empty((traj.steps, rod.size))
    for t in range(traj.steps):
        rod[1:-1] += traj.rate * (rod[2:] - 2 * rod[1:-1] + rod[:-2])
        history[t] = rod
    traj.f_add_result('history', history, comment='the rod at every step (steps x 2000)')
    traj.f_add_result('width', float((rod > 1e-3).sum()), comment='cells above 1e-3 at the end')
    return history.nbytes


def main():
    if np is None:
        print('this example needs numpy: pip install numpy')
        return
    folder = os.path.join('hdf5', 'example_08')
    filename = os.path.join(folder, 'rod.hdf5')
    env = pypet.Environment(trajectory='rod', filename=filename, add_time=False,
                            log_config=None)
    traj = env.v_trajectory
    traj.f_add_parameter('rate', 0.1, comment='diffusion per step (stable below 0.5)')
    traj.f_add_parameter('steps', 200, comment='time steps')
    traj.f_explore(pypet.cartesian_product({'rate': [0.1, 0.2, 0.4], 'steps': [200, 400]}))
    sizes = env.f_run(diffuse)
    print('stored %.1f MB of arrays in %d runs' % (sum(s for _, s in sizes) / 1e6, len(sizes)))

    # A skeleton load: the tree, no array data read
    loaded = pypet.load_trajectory(filename=filename, index=-1, load_results=1)
    history = loaded.f_get('results.runs.run_00000005.history')
    print('as loaded: %r' % history)
    loaded.f_load_item(history)                      # now read this run's array alone
    print('after f_load_item: %r' % history)
    widths = loaded.f_get_from_runs('width', fast_access=True, auto_load=True)
    for run_name, width in widths.items():
        loaded.f_set_crun(run_name)
        print('%s rate=%.1f steps=%d: width %d cells' % (run_name, loaded.rate, loaded.steps,
                                                        width))
    loaded.f_restore_default()
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
