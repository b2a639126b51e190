import sys

from prnseg.cli import main

sys.exit(main())
