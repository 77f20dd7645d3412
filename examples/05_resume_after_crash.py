"""Lesson 5: a sweep that crashes, and how nothing finished is lost.

What to notice:
  * with continuable=True (the default) the environment writes `<trajectory>.cnt` beside the
    data file: which trajectory, which job, and a fingerprint of the exploration;
  * every finished run is journalled before it counts as done, so a crash (here: the
    process is killed in run 6, as `kill -9`, a power cut or a batch scheduler would) loses at
    most the run that was computing;
  * `env.f_continue_run(cnt)` (or `python -m minipypet resume <cnt>`) runs exactly the runs
    that are missing, and returns every result.

Run it: python examples/05_resume_after_crash.py (a second or two).
"""
import multiprocessing
import os
import shutil

import minipypet as pypet

FOLDER = os.path.join('hdf5', 'example_05')
FILENAME = os.path.join(FOLDER, 'crash.hdf5')


def square(traj):
    """The job. In the first attempt, run 6 'crashes' the whole process."""
    if traj.v_idx == 6 and os.environ.get('EXAMPLE_05_CRASH') == '1':
        os._exit(1)                  # dies at once, like kill -9: no cleanup, no finally
    traj.f_add_result('sq', traj.x ** 2)
    return traj.x ** 2


def first_attempt():
    os.environ['EXAMPLE_05_CRASH'] = '1'
    env = pypet.Environment(trajectory='crash', filename=FILENAME, add_time=False,
                            log_config=None)
    env.v_trajectory.f_add_parameter('x', 0)
    env.v_trajectory.f_explore({'x': list(range(10))})
    env.f_run(square)


def main():
    # The first attempt runs in another process, which dies in the middle of the sweep.
    crashing = multiprocessing.Process(target=first_attempt)
    crashing.start()
    crashing.join()
    print('the first attempt died with exit code %d' % crashing.exitcode)

    stored = pypet.load_trajectory(filename=FILENAME, index=-1)
    done = [i for i in range(len(stored)) if stored.f_is_completed(i)]
    print('runs stored before the crash: %s' % done)

    # Resume: the .cnt names the job; only runs 6..9 execute again.
    env = pypet.Environment(log_config=None)
    results = env.f_continue_run(os.path.join(FOLDER, 'crash.cnt'))
    print('after the resume: %s' % results)
    shutil.rmtree('hdf5')


if __name__ == '__main__':
    main()
