"""`gguf-trim demo [MODEL]` (or `python -m gguf_trim.demo`): trim Gemma-3-270m to English+Vietnamese
and show that nothing changed.

It trims the model, checks tokenization and logits against the original on a small built-in sample,
prints a before/after table, then translates one sentence with both files: a lossless trim must give
the same greedy output, token for token, from a smaller file that unmodified llama.cpp loads.
The sample lines were written for this demo; they are not taken from any corpus.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from gguf_trim.api import trim
from gguf_trim.errors import TrimError
from gguf_trim.rewrite.verify import verify
from gguf_trim.runtime.llama import load_llama
from gguf_trim.tables import text_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
LOGITS_LINES = 4

EN_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send the report to the whole team before Friday afternoon.",
    "It's raining again, so we'll have to postpone the picnic.",
    "The train to Edinburgh leaves from platform 4 at 9:45 a.m.",
    "She paid $12.50 for two coffees and a croissant.",
    "Machine translation has improved a lot over the last ten years.",
    "\u201cWhere did you put my keys?\u201d he asked, looking under the sofa.",
    "Our office is closed on public holidays \u2014 see the calendar for details.",
    "The recipe calls for 200 g of flour, 2 eggs and a pinch of salt.",
    "Could you explain how this function handles empty input?",
    "The museum's new exhibition opens on 3 March 2025.",
    "Children under 12 travel free when accompanied by an adult.",
    "Run `pip install -e .` and then execute the test suite.",
    "The river flooded the lower part of the town after three days of heavy rain.",
    "I'm not sure whether the meeting starts at ten or half past ten.",
    "Temperatures will drop below 5 \u00b0C overnight.",
    "He has been learning to play the violin since he was six.",
    "The company reported a 7% increase in revenue for the third quarter.",
    "Don't forget to water the plants while I'm away!",
    "Most of the world's rice is grown in Asia.",
    "Visit https://example.com/docs for the full documentation.",
    "The library lends books, films and board games for free.",
    "Our flight was delayed by two hours because of fog.",
    "Wash your hands before cooking and after handling raw meat.",
    "The committee will publish its decision next week.",
    "What time does the pharmacy on Main Street close?",
    "A good night's sleep helps you concentrate the next day.",
    "The bridge, built in 1889, is still used by thousands of cyclists.",
    "Thank you for your patience while we fix the problem.",
    "Email support@example.org if you need a refund.",
    "Grandma's apple pie tastes even better the next morning.",
    "The hikers reached the summit just before sunset.",
]

VI_LINES = [
    "Hà Nội là thủ đô của nước Cộng hòa Xã hội Chủ nghĩa Việt Nam.",
    "Mỗi sáng, bà tôi đi chợ mua rau, cá và trái cây tươi.",
    "Phở bò là món ăn sáng quen thuộc của nhiều người Việt.",
    "Hôm qua trời mưa to nên đường phố bị ngập nước.",
    "Tôi đang học lập trình Python để xử lý dữ liệu văn bản.",
    "Bạn có thể nói chậm hơn một chút được không?",
    "Giá một ổ bánh mì thịt là 25.000 đồng (khoảng 1 đô la Mỹ).",
    "Chuyến bay từ Thành phố Hồ Chí Minh đến Đà Nẵng mất khoảng một giờ mười lăm phút.",
    "Các em học sinh đang chuẩn bị cho kỳ thi tốt nghiệp trung học phổ thông.",
    "Vịnh Hạ Long được UNESCO công nhận là di sản thiên nhiên thế giới.",
    "\u201cCó công mài sắt, có ngày nên kim\u201d là một câu tục ngữ quen thuộc.",
    "Xin lỗi, tôi không hiểu câu hỏi của anh.",
    "Mô hình ngôn ngữ lớn cần nhiều bộ nhớ GPU để chạy nhanh.",
    "Sông Mê Kông chảy qua sáu quốc gia trước khi đổ ra Biển Đông.",
    "Cô ấy thích đọc sách vào những buổi tối yên tĩnh.",
    "Nhiệt độ hôm nay dao động từ 24°C đến 31°C.",
    "Ông ấy đã làm việc ở nhà máy dệt hơn hai mươi năm.",
    "Vui lòng tắt điện thoại di động trong suốt buổi hòa nhạc.",
    "Tết Nguyên Đán là dịp để các gia đình sum họp và chúc nhau năm mới an khang.",
    "Chúng tôi sẽ gửi hóa đơn cho quý khách qua thư điện tử.",
    "Cà phê sữa đá ở Sài Gòn vừa đậm vừa ngọt.",
    "Đừng quên khóa cửa trước khi ra khỏi nhà nhé!",
    "Thư viện mở cửa từ thứ Hai đến thứ Bảy, 8 giờ sáng \u2013 5 giờ chiều.",
    "Nông dân miền Tây thường trồng lúa và nuôi cá trên cùng một cánh đồng.",
    "Anh ấy chạy bộ quanh hồ Hoàn Kiếm mỗi buổi sáng sớm.",
    "Tiếng Việt có sáu thanh điệu: ngang, huyền, sắc, hỏi, ngã và nặng.",
    "Hệ thống sẽ tự động sao lưu dữ liệu vào lúc nửa đêm.",
    "Những ngọn núi ở Sa Pa phủ đầy sương mù vào mùa đông.",
    "Bác sĩ khuyên tôi nên uống nhiều nước và ngủ đủ giấc.",
    "Cảm ơn bạn rất nhiều vì đã giúp đỡ tôi trong lúc khó khăn.",
    "Trẻ em cần được vui chơi, học tập và chăm sóc sức khỏe đầy đủ.",
    "Đường dây nóng hỗ trợ khách hàng hoạt động 24/7.",
]

# Few-shot pairs: Gemma-3-270m is too small to follow an instruction, but it continues a pattern.
FEW_SHOT = [
    ("Good morning.", "Chào buổi sáng."),
    ("Where is the train station?", "Nhà ga xe lửa ở đâu?"),
    ("I would like a cup of coffee, please.", "Làm ơn cho tôi một tách cà phê."),
    ("My family lives in a small village near the river.", "Gia đình tôi sống ở một ngôi làng nhỏ gần con sông."),
]
SOURCE = "The weather is very nice today."


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def translation_prompt(sentence: str) -> str:
    shots = "".join(f"English: {en}\nVietnamese: {vi}\n\n" for en, vi in FEW_SHOT)
    return f"{shots}English: {sentence}\nVietnamese:"


def translate(model: Path, prompt: str) -> str:
    """Greedy, so that the two files can be compared exactly."""
    llm = load_llama(model, n_ctx=512)
    try:
        out = llm.create_completion(prompt, max_tokens=48, temperature=0.0, stop=["\n"])
    finally:
        llm.close()
    return out["choices"][0]["text"].strip()


def check_sample(model: Path, trimmed: Path) -> dict:
    """verify() reads text files: write the built-in lines to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="gguf-trim-demo-") as tmp:
        paths = []
        for lang, lines in (("en", EN_LINES), ("vi", VI_LINES)):
            p = Path(tmp) / f"{lang}.txt"
            p.write_text("\n".join(lines) + "\n", encoding="utf-8")
            paths.append(p)
        return verify(model, trimmed, paths, logits=LOGITS_LINES)


def print_table(rep: dict, seconds: float) -> None:
    en, vi = rep["files"]

    def fid(f: dict) -> str:
        return f"{f['line_fidelity']:.1%} ({f['identical_lines']}/{f['lines']})"

    rows = [
        ("n_vocab", f"{rep['n_vocab_original']:,}", f"{rep['n_vocab_trimmed']:,}"),
        ("file size", mib(rep["size_original"]), mib(rep["size_trimmed"])),
        ("line fidelity en", "reference", fid(en)),
        ("line fidelity vi", "reference", fid(vi)),
        ("logits max |diff|", "reference", f"{rep['logits_max_abs_diff']:g} ({rep['logits_lines']} lines)"),
        ("trim seconds", "-", f"{seconds:.1f}"),
    ]
    print("\n" + text_table([("", "original", "trimmed"), *rows], (20, 16, 24), "lrr"))


def run(model: str | Path | None = None) -> int:
    """The whole demo on `model` (default: Gemma-3-270m from `make models`); the exit code: 0 when the
    trim was lossless on the sample and both files translate alike, 1 when not, 2 on bad input."""
    model = Path(model) if model else DEFAULT_MODEL
    if not model.is_file():
        print(f"{model}: not found (run `make models` first)", file=sys.stderr)
        return 2
    trimmed = model.with_name(model.stem + ".envi.gguf")
    try:
        print(f"trimming {model.name} to en+vi -> {trimmed.name}")
        t0 = time.perf_counter()
        trim(model, trimmed, langs="en,vi")
        seconds = time.perf_counter() - t0
        rep = check_sample(model, trimmed)
    except TrimError as e:
        print(f"gguf-trim demo: error: {e}", file=sys.stderr)
        return 2
    print_table(rep, seconds)

    prompt = translation_prompt(SOURCE)
    print(f"\nEn->Vi, greedy, {len(FEW_SHOT)}-shot: {SOURCE!r}")
    outputs = [translate(path, prompt) for path in (model, trimmed)]
    for name, text in zip(("original", "trimmed"), outputs, strict=True):
        print(f"  {name:<9} {text}")
    same = outputs[0] == outputs[1]
    print("identical outputs: the trim changed nothing for this text" if same
          else "outputs DIFFER: the trim was not lossless for this text")
    lossless = all(f["line_fidelity"] == 1.0 for f in rep["files"]) and rep["logits_max_abs_diff"] == 0
    return 0 if same and lossless else 1


if __name__ == "__main__":  # the old entry point: `gguf-trim demo`
    # The CLI replaces this process, named in a string: the library does not import the CLI.
    import os

    os.execv(sys.executable, [sys.executable, "-c", "from gguf_trim.cli import main; main(prog_name='gguf-trim')",
                              "demo", *sys.argv[1:]])
