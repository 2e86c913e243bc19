"""Build small per-language test texts and English-X pairs from gettext catalogues in Debian packages.

Why: trimming a vocabulary to some languages must be checked on real text in those languages, and the
only text reachable here without a model hub is software translations. The packages are downloaded
with `apt-get download` (never installed), unpacked with `dpkg-deb -x` into a temporary folder, and
their .mo files read with `gettext.GNUTranslations`. The output keeps each program's licence (GPL/LGPL
mostly), so it is built on demand into `models/langs/` (git-ignored), never committed.
"""

from __future__ import annotations

import argparse
import gettext
import glob
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

# Pinned by name: packages that ship many translated catalogues (checked with `dpkg-deb -c`). The GNU
# tools cover the big languages; the GNOME stack (GTK, GLib, Nautilus...) is what covers th hi ar fa bn.
PACKAGES = [
    "coreutils", "tar", "bash", "gettext", "wget", "diffutils", "findutils", "apt", "dpkg", "gnupg-l10n",
    "man-db", "nano", "libc-l10n", "util-linux-locales", "libglib2.0-data", "libgtk-3-common",
    "libgtk-4-common", "gnome-control-center-data", "nautilus-data", "evolution-data-server-common",
]
# language code -> gettext locales, first present one wins per catalogue
LANGS = {
    "ko": ["ko"], "ja": ["ja"], "ru": ["ru"], "th": ["th"], "hi": ["hi"], "ar": ["ar"], "zh-Hans": ["zh_CN"],
    "zh-Hant": ["zh_TW", "zh_HK"], "fr": ["fr"], "de": ["de"], "es": ["es"], "pt": ["pt", "pt_BR"],
    "it": ["it"], "id": ["id"], "tr": ["tr"], "uk": ["uk"], "fa": ["fa"], "bn": ["bn", "bn_IN"], "vi": ["vi"],
}
# expected script of non-Latin languages: catches untranslated or mislabelled entries
SCRIPTS = {
    "ko": [(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)],
    "ja": [(0x3040, 0x30FF), (0x4E00, 0x9FFF), (0x3400, 0x4DBF)],
    "ru": [(0x0400, 0x04FF)], "uk": [(0x0400, 0x04FF)], "th": [(0x0E00, 0x0E7F)], "hi": [(0x0900, 0x097F)],
    "ar": [(0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)],
    "zh-Hans": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF)], "zh-Hant": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF)],
    "bn": [(0x0980, 0x09FF)],
}
SCRIPTS["fa"] = SCRIPTS["ar"]
PLACEHOLDER = re.compile(
    r"%(\d+\$|\([\w-]+\))?[-+ #0']*(\d+|\*)?(\.(\d+|\*))?(hh|h|ll|l|j|z|t|L|q)?[diouxXeEfFgGaAcspn%]"
    r"|%<PRI\w+>|\{[^{}]*\}|\$\{?\w+\}?|<[^<>]+>"
)


def clean(text: str) -> str:
    """NFC, no control characters, tabs or newlines, single spaces: one TSV field."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())


def in_script(text: str, ranges: list[tuple[int, int]]) -> bool:
    """At least 10% of the letters (placeholders removed) are in the script: CJK mixed with API names passes."""
    letters = [ord(c) for c in PLACEHOLDER.sub(" ", text) if c.isalpha()]
    hits = sum(any(lo <= c <= hi for lo, hi in ranges) for c in letters)
    return bool(letters) and hits >= 0.1 * len(letters)


def keep(en: str, tr: str, code: str) -> bool:
    """The filters of the brief: >= 3 English words besides placeholders, <= 300 chars, really translated."""
    if not en or not tr or en == tr or len(en) > 300 or len(tr) > 300:
        return False
    if len(re.findall(r"[A-Za-z]{2,}", PLACEHOLDER.sub(" ", en))) < 3:
        return False
    if not any(c.isalpha() for c in PLACEHOLDER.sub(" ", tr)):
        return False
    return code not in SCRIPTS or in_script(tr, SCRIPTS[code])


def fetch(debs: Path) -> dict[str, Path]:
    """Download the pinned packages into the cache (once), running `apt-get update` only if needed."""
    debs.mkdir(parents=True, exist_ok=True)
    found = {p: sorted(debs.glob(f"{p}_*.deb")) for p in PACKAGES}
    missing = [p for p, hits in found.items() if not hits]
    if missing:
        if not glob.glob("/var/lib/apt/lists/*_Packages*"):
            subprocess.run(["apt-get", "update", "-qq"], check=True)
        res = subprocess.run(["apt-get", "download", "-qq", *missing], cwd=debs, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"error: apt-get download failed: {res.stderr.strip().splitlines()[-1:]}")
        found = {p: sorted(debs.glob(f"{p}_*.deb")) for p in PACKAGES}
    return {p: hits[-1] for p, hits in found.items()}


def read_package(deb: Path) -> dict[str, list[tuple[str, str]]]:
    """(english, translation) pairs per language code from one package's .mo files."""
    out: dict[str, list[tuple[str, str]]] = {code: [] for code in LANGS}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        base = Path(tmp, "usr/share/locale")
        domains = sorted({p.name for p in base.glob("*/LC_MESSAGES/*.mo")})
        for code, locales in LANGS.items():
            for domain in domains:
                mo = next((base / loc / "LC_MESSAGES" / domain for loc in locales
                           if (base / loc / "LC_MESSAGES" / domain).is_file()), None)
                if mo is None:
                    continue
                try:
                    with open(mo, "rb") as f:
                        catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    print(f"skipping {deb.name}:{mo.relative_to(base)} ({exc})", file=sys.stderr)
                    continue
                for key, value in catalog.items():
                    if isinstance(key, tuple):  # plural forms: keep the singular only
                        if key[1] != 0:
                            continue
                        key = key[0]
                    en, tr = clean(key.split("\x04")[-1]), clean(value)
                    if keep(en, tr, code):
                        out[code].append((en, tr))
    return out


def select(pairs: list[tuple[str, str, str]], limit: int) -> tuple[list[tuple[str, str, str]], int]:
    """Deduplicate (each English and each translation once), then sorted + even stride: no randomness."""
    seen_en: set[str] = set()
    seen_tr: set[str] = set()
    unique = []
    for en, tr, pkg in sorted(pairs):
        if en not in seen_en and tr not in seen_tr:
            seen_en.add(en)
            seen_tr.add(tr)
            unique.append((en, tr, pkg))
    if len(unique) <= limit:
        return unique, len(unique)
    return [unique[i * len(unique) // limit] for i in range(limit)], len(unique)


def write(path: Path, text: str) -> None:
    """Atomic write: temp file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def readme(debs: dict[str, Path], rows: list[tuple[str, int, int, int, int]], limit: int) -> str:
    """The folder's README: sources, counts, licence note."""
    lines = [
        "# Per-language test text (built, not committed)", "",
        "Made by `make lang-texts` (`scripts/build_lang_texts.py`) from the gettext catalogues of these Debian",
        "packages (downloaded with `apt-get download`, cached in `.debs/`, never installed):", "",
        *[f"- `{deb.name}`" for deb in debs.values()], "",
        "Files: `en-<code>.tsv` (`english<TAB>translation<TAB>package`), `<code>.txt` (the translations, one",
        "a line). Filters: NFC, one line, >= 3 English words, <= 300 chars, really translated, in the expected",
        f"script; each English and each translation once; at most {limit} pairs, sorted then taken at an even stride.",
        "It is software language (menus, messages, command help), not general prose.", "",
        "Licences: each text keeps its program's licence (GPL/LGPL mostly), so it is built here, not committed.", "",
        "`available`: unique pairs before the cap.", "",
        "| language | pairs | lines | bytes | available |", "|---|---:|---:|---:|---:|",
        *[f"| {code} | {n} | {lines} | {size} | {avail} |" for code, n, lines, size, avail in rows], "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/langs"))
    ap.add_argument("--max-pairs", type=int, default=2000)
    ap.add_argument("--min-pairs", type=int, default=200)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    debs = fetch(args.out / ".debs")
    pairs: dict[str, list[tuple[str, str, str]]] = {code: [] for code in LANGS}
    for pkg, deb in debs.items():
        for code, found in read_package(deb).items():
            pairs[code].extend((en, tr, pkg) for en, tr in found)
    rows = []
    for code in LANGS:
        chosen, avail = select(pairs[code], args.max_pairs)
        txt = "".join(f"{tr}\n" for _, tr, _ in chosen)
        write(args.out / f"en-{code}.tsv", "".join(f"{en}\t{tr}\t{pkg}\n" for en, tr, pkg in chosen))
        write(args.out / f"{code}.txt", txt)
        rows.append((code, len(chosen), txt.count("\n"), len(txt.encode()), avail))
    write(args.out / "README.md", readme(debs, rows, args.max_pairs))
    print(f"{'language':<9} {'pairs':>6} {'lines':>6} {'bytes':>8} {'available':>9}")
    for code, n, lines, size, avail in rows:
        print(f"{code:<9} {n:>6} {lines:>6} {size:>8} {avail:>9}")
    short = [f"{code}={n}" for code, n, *_ in rows if n < args.min_pairs]
    if short:
        print(f"error: fewer than {args.min_pairs} pairs for {', '.join(short)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
