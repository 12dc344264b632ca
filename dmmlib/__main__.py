import sys

from dmmlib.cli import main

sys.exit(main())
