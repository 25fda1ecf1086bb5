"""``python -m cgcnn.etl run|snapshot|prepare …`` (same as ``python -m cgcnn etl …``)."""

import sys

from cgcnn.etl.commands import main

sys.exit(main())
