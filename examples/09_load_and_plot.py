"""Lesson 9: loading a finished sweep and looking at it.

What to notice:
  * load_trajectory(filename=..., index=-1) loads the newest trajectory of a file (its name
    has the creation time appended, unless add_time=False);
  * runs_table gives one row per run: parameter values, run information, scalar results -
    ready for a loop, a CSV file or pandas (runs_dataframe);
  * plot_runs draws a result against a parameter, a line per value of a second one (needs
    matplotlib); `python -m minipypet plot FILE z --x x --hue y -o z.png` does the same
    from the command line, and `python -m minipypet show FILE` prints the tree.

Run it: python examples/09_load_and_plot.py (a second or two).
"""
import os
import shutil

import minipypet as pypet


def damped(traj):
    """A damped oscillator's amplitude after time t."""
    import math
    amplitude = math.exp(-traj.damping * traj.t) * abs(math.cos(traj.t))
    traj.f_add_result('amplitude', amplitude)


def make_sweep(filename):
    env = pypet.Environment(trajectory='oscillator', filename=filename, log_config=None)
    traj = env.v_trajectory
    traj.f_add_parameter('damping', 0.1, comment='damping rate')
    traj.f_add_parameter('t', 0.0, comment='time')
    traj.f_explore(pypet.cartesian_product({'damping': [0.1, 0.3, 1.0],
                                            't': [0.5 * i for i in range(13)]}))
    env.f_run(damped)


def main():
    folder = os.path.join('hdf5', 'example_09')
    filename = os.path.join(folder, 'oscillator.hdf5')
    make_sweep(filename)

    # ... later, in an analysis script:
    traj = pypet.load_trajectory(filename=filename, index=-1, load_results=2)
    print(traj)
    traj.f_print_tree(max_children=3)

    rows = pypet.runs_table(traj)
    strongest = max(rows, key=lambda r: r['amplitude'] if r['t'] > 0 else 0)
    print('largest amplitude after t=0: %.3f at damping=%s, t=%s'
          % (strongest['amplitude'], strongest['damping'], strongest['t']))

    image = os.path.join(folder, 'amplitude.png')
    try:
        pypet.plot_runs(traj, 'amplitude', x='t', hue='damping', filename=image)
    except pypet.MissingDependencyError:          # (matplotlib is optional)
        print('(no plot: pip install matplotlib)')
    else:
        print('plotted amplitude against t into %s (%d bytes)'
              % (os.path.basename(image), os.path.getsize(image)))
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
