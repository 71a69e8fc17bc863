import sys

from kdray.cli.commands import main

sys.exit(main())
