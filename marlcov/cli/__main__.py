import sys

from marlcov.cli import main

sys.exit(main())
