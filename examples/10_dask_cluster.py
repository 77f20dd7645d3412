"""Lesson 10: running the runs on a dask cluster (here a LocalCluster on this machine).

What to notice:
  * Environment(executor=...) takes any concurrent.futures-style executor: a dask Client's
    get_executor(), mpi4py's MPIPoolExecutor, a ProcessPoolExecutor;
  * only each run's parameter values and a frozen copy of the job travel to the workers; the
    results come back and this process stores them (one writer, whatever the cluster size);
  * for a real cluster, swap LocalCluster for dask_jobqueue's SLURMCluster(...) and scale it:
    nothing else changes.

Needs dask.distributed (`pip install "dask[distributed]"`).
Run it: python examples/10_dask_cluster.py (a few seconds to start the cluster).
"""
import os
import shutil

import minipypet as pypet


def collatz_steps(traj):
    """Steps of the Collatz sequence from n down to 1."""
    n, steps = traj.n, 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    traj.f_add_result('steps', steps)
    return steps


def main():
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        print('this example needs dask.distributed: pip install "dask[distributed]"')
        return
    folder = os.path.join('hdf5', 'example_10')
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        env = pypet.Environment(trajectory='collatz', filename=os.path.join(folder, 'c.hdf5'),
                                add_time=False, executor=client.get_executor(),
                                log_config=None)
        env.v_trajectory.f_add_parameter('n', 1)
        env.v_trajectory.f_explore({'n': list(range(1, 41))})
        results = env.f_run(collatz_steps)
    longest = max(results, key=lambda r: r[1])
    print('%d runs on the cluster; n=%d takes the most steps: %d'
          % (len(results), longest[0] + 1, longest[1]))
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
