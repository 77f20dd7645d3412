"""Lesson 11: an existing pypet script, unchanged.

This file is written for pypet 0.7 (`import pypet`, `Environment(...)`, `traj.f_add_parameter`,
`env.run`, pypet's keyword arguments). Run it with minipypet, without editing it:

    python -m minipypet run examples/11_pypet_script.py

`run` makes `import pypet` (and `from pypet import ...`, `pypet.pypetconstants`, ...) resolve
to minipypet. In your own code, `import minipypet; minipypet.install_as_pypet()` does the same.
Takes a second.
"""
import os
import shutil

from pypet import Environment, cartesian_product, pypetconstants


def multiply(traj):
    """pypet's classic example: z = x * y."""
    z = traj.x * traj.y
    traj.f_add_result('z', z, comment='Result of our simulation!')


def main():
    filename = os.path.join('hdf5', 'example_11', 'pypet_style.hdf5')
    env = Environment(trajectory='Multiplication', filename=filename,
                      file_title='Example_11', comment='pypet code, run by minipypet',
                      large_overview_tables=True, log_config=None,
                      wrap_mode=pypetconstants.WRAP_MODE_LOCK, add_time=False)
    traj = env.trajectory                            # pypet 0.7's spelling of v_trajectory
    traj.add_parameter('x', 1.0, comment='I am the first dimension!')
    traj.add_parameter('y', 1.0, comment='I am the second dimension!')
    traj.f_explore(cartesian_product({'x': [1.0, 2.0, 3.0, 4.0], 'y': [6.0, 7.0, 8.0]}))
    env.run(multiply)
    env.disable_logging()

    traj.f_load(load_results=pypetconstants.LOAD_DATA)
    zs = traj.f_get_from_runs('z', fast_access=True)
    print('pypet script ran %d runs; z of the last run: %s' % (len(zs), zs['run_00000011']))
    import pypet
    print('pypet here is %s' % ('minipypet' if getattr(pypet, '__minipypet__', False)
                                else 'the real pypet'))
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
