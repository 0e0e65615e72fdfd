import sys

from omnilake.cli import main

sys.exit(main())
