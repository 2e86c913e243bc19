"""gguf-trim: rewrite a GGUF's vocabulary to English + Vietnamese, losslessly.

Public API: `trim`, `make_selection`, `CompactOptions`, `verify`, `inspect`, `diff_vocabs`, `GGUFFile`,
`Vocab`.
"""

__version__ = "0.1.0"

from .api import CompactOptions, diff_vocabs, inspect, make_selection, trim  # noqa: E402
from .errors import GGUFError, TrimError  # noqa: E402
from .gguf_io import GGUFFile  # noqa: E402
from .verify import verify  # noqa: E402
from .vocab import Vocab  # noqa: E402

__all__ = ["trim", "make_selection", "CompactOptions", "verify", "inspect", "diff_vocabs", "GGUFFile", "Vocab",
           "GGUFError", "TrimError", "__version__"]
