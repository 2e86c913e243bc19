"""Languages as data: which characters a language set writes, and the names prompts use.

`language_set("en,ja")` resolves `--langs` once; everything downstream takes the `LanguageSet`.
"""

from gguf_trim.langs.languages import DEFAULT, Language, LanguageSet, file_langs, known_codes, language_set

__all__ = ["DEFAULT", "Language", "LanguageSet", "file_langs", "known_codes", "language_set"]
