import sys

from data_prep.label.cli import main

sys.exit(main())
