import sys

from refllm.cli.main import main

sys.exit(main())
