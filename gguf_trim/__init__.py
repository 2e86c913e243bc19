"""gguf-trim: rewrite a GGUF's vocabulary to English + Vietnamese, losslessly.

Public API: `trim`, `make_selection`, `CompactOptions`, `verify`, `inspect`, `diff_vocabs`, `GGUFFile`,
`Vocab`.
"""

__version__ = "0.1.0"

from gguf_trim.api import CompactOptions, diff_vocabs, inspect, make_selection, trim  # noqa: E402
from gguf_trim.errors import GGUFError, TrimError  # noqa: E402
from gguf_trim.format.gguffile import GGUFFile  # noqa: E402
from gguf_trim.rewrite.verify import verify  # noqa: E402
from gguf_trim.vocab.vocabulary import Vocab  # noqa: E402

__all__ = ["trim", "make_selection", "CompactOptions", "verify", "inspect", "diff_vocabs", "GGUFFile", "Vocab",
           "GGUFError", "TrimError", "__version__"]
