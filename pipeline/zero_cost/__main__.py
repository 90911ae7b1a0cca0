"""`python -m pipeline.zero_cost ...`: see pipeline/zero_cost/cli.py."""
from pipeline.zero_cost.cli import main

raise SystemExit(main())
