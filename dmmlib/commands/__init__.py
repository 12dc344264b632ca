"""The command line, one module per command: ``python -m dmmlib <command>``.

Argparse stops here. Each module provides ``configure(parser)`` to add its arguments
and ``main(args) -> int`` to run; ``main`` turns the parsed arguments into the library's
own objects (paths, option dataclasses, models) and calls the library, which never sees
an ``argparse.Namespace``. :mod:`dmmlib.cli` lists the commands.
"""
