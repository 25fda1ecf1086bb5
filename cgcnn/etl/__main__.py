"""``python -m cgcnn.etl run|snapshot|prepare …`` (same as ``python -m cgcnn etl …``)."""

import sys

from cgcnn.etl.cli import main

sys.exit(main())
