import sys

from data_prep.images.cli import main

if __name__ == "__main__":  # spawned shard writers import this module too; they must not run the CLI
    sys.exit(main())
