import sys

from mmrface.cli import main

sys.exit(main())
