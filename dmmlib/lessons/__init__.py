"""What exists only to teach: the book's chapters import these; the library never does.

* :mod:`~dmmlib.lessons.settings` -- every chapter's per-profile sizes, in one place;
* :mod:`~dmmlib.lessons.viz` -- ``show_source``, static and live sliders, the pipeline diagram, mask overlays;
* :mod:`~dmmlib.lessons.toy` -- the coins photograph, the LP relaxation with HiGHS, exact projections (Part I);
* :mod:`~dmmlib.lessons.convergence` -- the convergence study and the explorer (chapter 3);
* :mod:`~dmmlib.lessons.cost_learning` -- learning an Eq. 1 embedding through the layer (chapter 4);
* :mod:`~dmmlib.lessons.measure` -- scoring a model on val videos, matching margins, training curves;
* :mod:`~dmmlib.lessons.book_models` -- the book's shared models: the proposal net and its caches, f_theta's
  starting weights, the DMM-Nets as cached, resumable units of work (chapters 6-9, 11);
* :mod:`~dmmlib.lessons.head_study` -- how the paper's plain head and the pass-through head start to learn (chapter 8);
* :mod:`~dmmlib.lessons.table4` -- Table 4 on our benchmark: rows, baselines, evaluation units (chapter 9);
* :mod:`~dmmlib.lessons.table4_report` -- its summaries per difficulty, paired comparisons, targets, curves;
* :mod:`~dmmlib.lessons.stats` -- the paired bootstrap over seeds and videos;
* :mod:`~dmmlib.lessons.real_benchmarks` -- the paper's targets and the reproduction commands (chapter 10);
* :mod:`~dmmlib.lessons.fixtures` -- tiny datasets in the real DAVIS / YouTube-VOS / SegTrack v2 formats;
* ``static/`` -- the JavaScript and CSS the static (kernel-free) figures embed.
"""
