"""The paper's analyses: memorization (Fig 1, Table 1), precision of modification (Fig 4), qualitative
modifications (Fig 3), Δrel and train-fraction sweeps (Fig 5, 6), CAM + Pointing Game (Table 4), and
``wsml report``.

Training-time measurements are engine callbacks, registered in wsml.train.callbacks as ``memorization`` and
``modification`` (``callbacks: [memorization, modification]`` in a config). Everything else runs on
finished run folders: ``wsml analyze ...`` and ``wsml report ...`` (wsml.cli.analysis).
"""
