"""Metric writers ("backends") behind one small interface; :mod:`mappo.logger` composes them.

A backend is built as ``Backend(cfg, run_dir)`` and has three methods:

    log(row)                      one iteration's metrics: a flat dict of numbers (None when
                                  undefined) that always holds ``iteration`` and ``env_steps``,
                                  the x-axis every backend plots against
    log_file(kind, path, step)    a file the run produced: kind "checkpoint" or "video"
                                  (most backends ignore it)
    close()

A new backend is one file in this folder plus one line in ``mappo.logger.BACKENDS``.
"""
