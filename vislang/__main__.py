import sys

from vislang.cli import main

sys.exit(main())
