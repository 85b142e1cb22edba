import sys

from persona.cli import main

sys.exit(main())
