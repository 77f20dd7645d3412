"""Lesson 6: debugging a job quickly, without files.

What to notice:
  * lazy_debug=True stores nothing while you develop (LazyStorageService), and every run's
    results stay in memory to look at; `python -O script.py` turns storage back on without
    editing the script;
  * a serial sweep runs your job in this process: breakpoints and `pdb` work as usual;
  * when a run fails, the exception names the run and its parameter values, and
    record_failed_runs=True records the failure and carries on with the other runs;
  * one run can be replayed by hand: f_set_crun(i) gives the trajectory that run's values.

Run it: python examples/06_debugging_with_lazy_storage.py (instant).
"""
import minipypet as pypet


def ratio(traj):
    """A job with a bug: it divides by (b - 2), which is 0 in some runs."""
    value = traj.a / (traj.b - 2)
    traj.f_add_result('ratio', value, comment='a / (b - 2)')
    return value


def main():
    # (it warns on standard error that nothing is written: you will not forget it is on)
    env = pypet.Environment(trajectory='debug', add_time=False, lazy_debug=True,
                            log_config=None, record_failed_runs=True)
    traj = env.v_trajectory
    traj.f_add_parameter('a', 1.0)
    traj.f_add_parameter('b', 0.0)
    traj.f_explore(pypet.cartesian_product({'a': [1.0, 3.0], 'b': [1.0, 2.0, 4.0]}))
    print(traj)                                   # name, runs, explored parameters

    results = env.f_run(ratio)                    # failed runs are recorded, not raised
    print('runs that returned: %s' % [idx for idx, _ in results])
    for idx in range(len(traj)):
        info = traj.f_get_run_information(idx)
        if info['error']:
            print('run %d failed: %s' % (idx, info['error']))

    # Results of the lazy sweep are in memory; show a part of the tree
    traj.res.runs.f_print_tree(max_children=2)

    # Replay the first failing run by hand (put `import pdb; pdb.set_trace()` in the job,
    # or run this under a debugger, to step through it)
    traj.f_set_crun(1)
    print('run 1 has a=%s, b=%s' % (traj.a, traj.b))
    try:
        ratio(traj)
    except ZeroDivisionError as exc:
        print('replayed: %s: %s' % (type(exc).__name__, exc))
    traj.f_restore_default()


if __name__ == '__main__':
    main()
