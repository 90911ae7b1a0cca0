import sys

from data_prep.tables.cli import main

sys.exit(main())
