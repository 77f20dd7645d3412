"""Lesson 7: an adaptive search - post-processing that adds runs.

What to notice:
  * env.f_add_postprocessing(f) calls f(traj, results) after the runs;
  * when f returns a dict {parameter: new values}, those runs are added (f_expand), run, and
    f is called again, with all results so far; when it returns None, the sweep ends;
  * so a search can zoom in on where things are interesting, all in one stored trajectory.

Here: find the x in [0, 4] where a bumpy curve is highest, by refining around the best point.

Run it: python examples/07_adaptive_search.py (instant).
"""
import math
import os
import shutil

import minipypet as pypet


def curve(traj):
    """The 'experiment': a bumpy function with its highest point near x = 2.615."""
    y = math.sin(3 * traj.x) + 0.5 * traj.x - 0.1 * traj.x ** 2
    traj.f_add_result('y', y)
    return y


def refine(traj, results, rounds):
    """Called after each batch of runs: zoom in around the best x, `rounds` times."""
    xs = traj.f_get('x').f_get_range()
    done = (len(xs) - 5) // 2                     # rounds so far: five runs, then two a round
    best_idx, best_y = max(results, key=lambda r: r[1])
    if done == rounds:
        print('best after %d runs: x=%.4f, y=%.4f' % (len(xs), xs[best_idx], best_y))
        return None                               # the sweep ends here
    step = 0.5 / 2 ** done                        # halve the step each round
    return {'x': [xs[best_idx] - step, xs[best_idx] + step]}   # two more runs


def main():
    folder = os.path.join('hdf5', 'example_07')
    env = pypet.Environment(trajectory='search', filename=os.path.join(folder, 'search.hdf5'),
                            add_time=False, log_config=None)
    traj = env.v_trajectory
    traj.f_add_parameter('x', 0.0, comment='where we look')
    traj.f_explore({'x': [0.0, 1.0, 2.0, 3.0, 4.0]})     # a coarse first look
    env.f_add_postprocessing(refine, rounds=8)
    env.f_run(curve)
    print('explored x: %s' % ', '.join('%.3f' % x for x in traj.f_get('x').f_get_range()))
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
