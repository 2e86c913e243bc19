"""What the English/Vietnamese grammar (`gguf-trim export`) costs in stock llama-server, against the file's
suppress key alone.

Why: the grammar is what runtimes without the key fall back on, and it is also the stronger constraint
(it follows UTF-8 across tokens), so whether one would run it everywhere depends on its price in decode
speed. One llama-server, one slot, sequential requests alternating without/with the grammar on the same
prompts and seeds; tok/s is the server's own count of generated tokens over its own decode time
(`timings.predicted_n / predicted_ms`: sampling, grammar included, but not the prompt).

    gguf-trim bench grammar models/qwen2.5-coder-0.5b-instruct.envi.gguf --n 12 --tokens 64
"""

from __future__ import annotations

import statistics
from pathlib import Path

from gguf_trim.export import grammar_gbnf
from gguf_trim.runtime.server import LlamaServer
from gguf_trim.tables import markdown_table

# En->Vi and Vi->En paragraphs (the project's use), long enough that most answers reach 64 tokens.
PROMPTS = (
    "Translate into Vietnamese: If you know the files you want are under a particular folder, go to that folder. "
    "You can open, copy, delete, or otherwise work with your files from the search results, just as you would "
    "from any folder in the file manager.",
    "Translate into English: Đừng để pin cạn hết. Luôn luôn sạc pin trước khi pin gần hết, mặc dù hầu hết pin có "
    "bảo vệ chống xuống quá thấp. Sạc khi pin đang xả thì hiệu quả hơn.",
    "Translate into Vietnamese: The meeting has been moved to Thursday afternoon because of the storm. Please bring "
    "the printed reports and tell the rest of the team that the room on the third floor is still available.",
    "Translate into English: Nếu bạn đã kết nối đến router không dây nhưng vẫn không thể truy cập Internet, router "
    "của bạn có lẽ không được thiết lập đúng, hoặc nhà cung cấp dịch vụ Internet của bạn gặp vấn đề kỹ thuật.",
    "Translate into Vietnamese: Please restart the computer after the update has finished installing. Save your "
    "work first, because any open documents will be closed and unsaved changes will be lost.",
    "Translate into English: Mất một lúc để cập nhật danh sách mạng không dây. Nếu bạn mới bật máy hoặc chuyển "
    "sang chỗ khác, chờ khoảng một phút và kiểm tra lại.",
)


def measure(model: str | Path, n: int = 12, tokens: int = 64, temperature: float = 0.8, threads: int = 2,
            seed: int = 1) -> dict:
    """Decode tok/s of `n` chat completions of at most `tokens` tokens, key only and with the grammar,
    in pairs on one server (one warm-up request first, not counted). Both the pooled rate and the median of
    the per-pair ratios are given: on a shared machine the pairs, run back to back, see the same load."""
    grammar = grammar_gbnf()
    got: dict[str, list[tuple[int, float]]] = {"key": [], "grammar": []}  # (generated tokens, decode ms)
    with LlamaServer(model, n_ctx=1024, threads=threads, parallel=1) as s:
        s.chat([{"role": "user", "content": PROMPTS[0]}], max_tokens=8, temperature=0)
        for i in range(n):
            msgs = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            for mode, extra in (("key", {}), ("grammar", {"grammar": grammar})):
                t = s.chat(msgs, max_tokens=tokens, temperature=temperature, seed=seed + i, **extra)["timings"]
                got[mode].append((int(t["predicted_n"]), float(t["predicted_ms"])))
    rate = {m: sum(n for n, _ in v) / (sum(ms for _, ms in v) / 1000) for m, v in got.items()}
    pairs = [(g[0] / g[1]) / (k[0] / k[1]) for k, g in zip(got["key"], got["grammar"]) if k[0] and g[0]]
    return {"model": str(model), "n": n, "tokens": tokens, "temperature": temperature, "threads": threads,
            "tokens_key": sum(n for n, _ in got["key"]), "tokens_grammar": sum(n for n, _ in got["grammar"]),
            "tok_s_key": rate["key"], "tok_s_grammar": rate["grammar"], "ratio": rate["grammar"] / rate["key"],
            "median_pair_ratio": statistics.median(pairs)}


def table(r: dict) -> str:
    return markdown_table(
        ["model", "completions", "tokens (key / grammar)", "tok/s key only", "tok/s grammar", "ratio",
         "median pair ratio"],
        [[Path(r["model"]).name, r["n"], f"{r['tokens_key']} / {r['tokens_grammar']}", f"{r['tok_s_key']:.1f}",
          f"{r['tok_s_grammar']:.1f}", f"{r['ratio']:.2f}", f"{r['median_pair_ratio']:.2f}"]], align="lrrrrrr")
