"""Sphinx extension: the unnumbered first chapter numbers its figures and equations (0.k).

Parts I-IV of _toc.yml are numbered, so chapter NN's own figures and displays are "Fig. NN.k"
and "(NN.k)" and never collide with the paper's Fig. 1-3 and Eq. 1-8. "How to use this book"
stands outside the numbered parts, and Sphinx would number its figure plain "Fig. 1" -- the
paper's Fig. 1 is a different figure. This gives that chapter the prefix 0, like its file name.
"""

UNNUMBERED_CHAPTERS = ("book/00_how_to_use",)


def _prefix_zero(app, env):
    # Runs after the toctree collector assigned the numbers (env-get-updated, default priority 500).
    for docname in UNNUMBERED_CHAPTERS:
        for numbers in env.toc_fignumbers.get(docname, {}).values():
            for node_id, number in numbers.items():
                if len(number) == 1:
                    numbers[node_id] = (0, *number)
    return []


def setup(app):
    app.connect("env-get-updated", _prefix_zero, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
