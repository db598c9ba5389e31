import sys

from cortex_ray.cli.main import main

sys.exit(main())
