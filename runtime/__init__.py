"""The runtime: `llama-swap` and what it serves.

Importing the package first decides whether the modules compiled at install (mypyc) or
their Python sources run; see `native`.
"""

import os

from llama_swap.runtime import native

native.install_guard(os.path.dirname(os.path.abspath(__file__)))
