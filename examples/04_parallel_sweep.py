"""Lesson 4: a parallel sweep on all your cores.

What to notice:
  * the job is a plain module-level function: worker processes must be able to find it;
  * everything that starts the sweep sits below `if __name__ == '__main__':`, because on macOS
    and Windows (and with Python 3.14 on Linux) each worker starts by importing this script;
  * multiproc=True + use_pool=True: `ncores` workers take runs one after the other;
  * wrap_mode='QUEUE': one extra process writes everything the workers send (one writer, so
    the file never sees two writers at once); 'LOCK' lets workers write in turn instead.

Run it: python examples/04_parallel_sweep.py (a few seconds; stdlib only is fine).
"""
import os
import shutil

import minipypet as pypet


def estimate_pi(traj):
    """Estimate pi from `traj.samples` pseudo-random points (a deterministic generator,
    seeded per run, so every run is reproducible)."""
    state = traj.seed
    inside = 0
    for _ in range(traj.samples):
        state = (1103515245 * state + 12345) % 2 ** 31     # a tiny LCG, no numpy needed
        x = state / 2 ** 31
        state = (1103515245 * state + 12345) % 2 ** 31
        y = state / 2 ** 31
        inside += x * x + y * y <= 1.0
    estimate = 4.0 * inside / traj.samples
    traj.f_add_result('pi', estimate, comment='the estimate of this run')
    return estimate


def main():
    folder = os.path.join('hdf5', 'example_04')
    env = pypet.Environment(trajectory='pi', filename=os.path.join(folder, 'pi.hdf5'),
                            add_time=False, multiproc=True, ncores=2, use_pool=True,
                            wrap_mode=pypet.pypetconstants.WRAP_MODE_QUEUE, log_config=None)
    traj = env.v_trajectory
    traj.f_add_parameter('samples', 1000, comment='points per estimate')
    traj.f_add_parameter('seed', 1, comment='seed of the generator')
    # 3 sample sizes x 4 seeds = 12 runs, shared out over 2 worker processes
    traj.f_explore(pypet.cartesian_product({'samples': [1000, 10000, 40000],
                                            'seed': [1, 2, 3, 4]}))
    results = env.f_run(estimate_pi)   # [(run index, return value)], in run order

    # More samples, less spread: the mean error per sample size
    for samples in (1000, 10000, 40000):
        idxs = list(traj.f_find_idx('samples', lambda s, n=samples: s == n))
        error = sum(abs(results[i][1] - 3.141592653589793) for i in idxs) / len(idxs)
        print('samples=%5d: mean error %.4f over %d runs' % (samples, error, len(idxs)))
    print('%d runs done in parallel' % len(results))
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
