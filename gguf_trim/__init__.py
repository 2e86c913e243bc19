"""gguf-trim: rewrite a GGUF's vocabulary to English + Vietnamese, losslessly.

Public API: `trim`, `plan`, `make_selection`, `CompactOptions`, `verify`, `inspect`, `diff_vocabs`,
`GGUFFile`, `Vocab`, and the errors `TrimError` (bad input), `GGUFError`, `InternalError`. The pipeline's stages
live in subpackages: format, vocab, selection, rewrite, runtime, translate, extend, bench; cli is the command.
"""

__version__ = "0.1.0"

from gguf_trim.api import CompactOptions, diff_vocabs, inspect, make_selection, plan, trim  # noqa: E402
from gguf_trim.errors import GGUFError, InternalError, TrimError  # noqa: E402
from gguf_trim.format.gguffile import GGUFFile  # noqa: E402
from gguf_trim.rewrite.verify import verify  # noqa: E402
from gguf_trim.vocab.vocabulary import Vocab  # noqa: E402

__all__ = ["trim", "plan", "make_selection", "CompactOptions", "verify", "inspect", "diff_vocabs", "GGUFFile",
           "Vocab", "GGUFError", "InternalError", "TrimError", "__version__"]
