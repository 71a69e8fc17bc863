import sys

from kdray.commands import main

sys.exit(main())
