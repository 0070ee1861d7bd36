import logging
import os
import sys

from .serving.main import main

code = main(sys.argv[1:])
# Leave without interpreter finalisation: the engine's loop thread, torch's own threads and the daemon
# threads (heartbeat, housekeeping, webhooks) may still be inside C code, and tearing the interpreter down
# under them can abort the process (SIGABRT) after a clean drain. Everything that matters is already
# stored; only the logs are left to flush.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
