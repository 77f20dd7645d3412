"""First steps: explore x and y, store z = x * y in every run, then read it back.

Run it with `python examples/01_first_steps.py`; it needs nothing but the standard library
(with PyTables installed the file is HDF5, otherwise minipypet falls back to a pickle file).
The data goes to ./hdf5/ (ignored by git) and the file is removed at the end.
"""
import os
import shutil

import minipypet as pypet


def multiply(traj):
    """The job: called once per run with the trajectory set to that run's point."""
    z = traj.x * traj.y
    traj.f_add_result('z', z, comment='Product of x and y')
    return z


def main():
    folder = os.path.join('hdf5', 'example_01')
    filename = os.path.join(folder, 'example_01.hdf5')
    env = pypet.Environment(trajectory='Multiplication', filename=filename,
                            overwrite_file=True, comment='x times y, the classic',
                            log_config=None)
    traj = env.v_trajectory

    # The parameters with their default values; each gets a comment.
    traj.f_add_parameter('x', 1.0, comment='First dimension')
    traj.f_add_parameter('y', 1.0, comment='Second dimension')

    # Every combination of x and y is one run (y varies fastest).
    traj.f_explore(pypet.cartesian_product({'x': [1.0, 2.0, 3.0], 'y': [6.0, 7.0]}))

    results = env.f_run(multiply)
    print('f_run returned %d (run index, value) pairs: %s' % (len(results), results))

    # Read everything back from the file, as a later analysis script would.
    loaded = pypet.load_trajectory(name=traj.v_name, filename=filename, load_all=2)
    print('loaded %s with %d runs' % (loaded.v_name, len(loaded)))
    for run_name in loaded.f_get_run_names():
        loaded.f_set_crun(run_name)
        print('%s: x=%s, y=%s, z=%s' % (run_name, loaded.x, loaded.y, loaded.crun.z))
    loaded.f_restore_default()

    shutil.rmtree(folder)
    try:
        os.rmdir('hdf5')  # only if nothing else is in it
    except OSError:
        pass


if __name__ == '__main__':
    main()
