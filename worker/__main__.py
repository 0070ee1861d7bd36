import sys

from .serving.main import main

sys.exit(main(sys.argv[1:]))
