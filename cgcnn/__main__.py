import sys

from cgcnn.cli import main

sys.exit(main())
