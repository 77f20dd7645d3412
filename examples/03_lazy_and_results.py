"""Quick experiments with the LazyStorageService: nothing is written to disk, but every
run's results stay in memory, so you can look at them right after the runs."""
import minipypet as pypet


def simulate(traj):
    """A made-up 'simulation' that produces a result with several items."""
    steps = list(range(traj.n))
    values = [traj.rate * s for s in steps]
    traj.f_add_result('trace', steps, values, comment='time steps and values')
    traj.f_add_result('final', values[-1], comment='the last value')
    traj.f_add_result('stats', total=sum(values), mean=sum(values) / len(values))
    return values[-1]


def main():
    env = pypet.Environment(trajectory='quick', add_time=False,
                            storage_service=pypet.LazyStorageService, log_config=None)
    traj = env.v_trajectory
    traj.f_add_parameter('n', 5, comment='number of steps')
    traj.f_add_parameter('rate', 1.0, comment='growth per step')
    traj.f_explore(pypet.cartesian_product({'n': [3, 5], 'rate': [0.5, 1.0, 2.0]}))

    results = env.f_run(simulate)
    print('returned:', results)

    # One node per run, collected from results.runs.run_XXXXXXXX.
    finals = traj.f_get_from_runs('final', fast_access=True)
    for run_name, value in finals.items():
        print('%s final=%s' % (run_name, value))

    # Which runs had rate 2.0 and more than 3 steps?
    idx = list(traj.f_find_idx(['rate', 'n'], lambda rate, n: rate == 2.0 and n > 3))
    print('runs with rate 2.0 and n > 3:', idx)
    for i in idx:
        traj.v_idx = i
        trace = traj.crun.trace   # a result with two positional items: trace, trace_1
        stats = traj.crun.stats
        print('  run %d: steps=%s values=%s total=%s mean=%s' % (
            i, trace.f_get(0), trace.f_get(1), stats.total, stats['mean']))
    traj.f_restore_default()


if __name__ == '__main__':
    main()
