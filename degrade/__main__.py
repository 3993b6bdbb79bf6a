import sys

from degrade.cli import main

sys.exit(main())
