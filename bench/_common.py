"""Shared helpers for the benches: thread pinning, timing, the fp32 matmul peak, multilingual test texts.

This module needs only the standard library, numpy and torch, and never imports `m3core`: the FlagEmbedding
driver imports it too, from FlagEmbedding's own venv, so both sides of a comparison pin threads, time and build
inputs in exactly the same way.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Sequence

# One sentence per language and script. Written for these benches (not taken from any corpus); mixing them gives
# inputs that exercise every kind of tokenizer path: Latin with diacritics, Cyrillic, Greek, Arabic and Hebrew
# (right to left), Devanagari, Thai (no spaces), CJK (no spaces) and Hangul.
SENTENCES: dict[str, list[str]] = {
    "en": [
        "The library closes early on Sundays, so plan your visit before noon.",
        "A small change in the configuration file fixed the slow start of the server.",
        "Rivers carry sediment from the mountains down to the wide coastal plains.",
    ],
    "de": [
        "Die Straßenbahn fährt heute wegen Bauarbeiten nur bis zum Hauptbahnhof.",
        "Bitte überprüfen Sie die Einstellungen, bevor Sie das Programm neu starten.",
    ],
    "fr": [
        "Le marché du samedi propose des légumes frais et du fromage de la région.",
        "Cette commande affiche la liste des fichiers modifiés depuis la dernière sauvegarde.",
    ],
    "es": [
        "El tren nocturno llega a la estación central poco después de las seis.",
        "¿Dónde está la biblioteca más cercana con acceso a internet gratuito?",
    ],
    "ru": [
        "Вечером в парке зажглись фонари, и на скамейках собрались соседи.",
        "Эта программа сжимает файлы без потери качества изображения.",
    ],
    "el": ["Το μουσείο είναι ανοιχτό κάθε μέρα εκτός από τη Δευτέρα."],
    "ar": [
        "تفتح المكتبة أبوابها في الصباح الباكر وتغلق عند غروب الشمس.",
        "يمكنك تغيير كلمة المرور من صفحة الإعدادات في أي وقت.",
    ],
    "he": ["הרכבת לירושלים יוצאת כל שעה מהתחנה המרכזית."],
    "hi": ["यह कार्यक्रम आपकी फ़ाइलों को स्वचालित रूप से सुरक्षित रखता है।"],
    "th": ["ร้านกาแฟเล็กๆ แห่งนี้เปิดทุกวันตั้งแต่เช้าจนถึงค่ำ"],
    "zh": [
        "这个命令会列出当前目录中所有被修改过的文件。",
        "春天的时候，公园里的樱花开得非常漂亮。",
    ],
    "ja": [
        "この設定を変更すると、次回の起動時に反映されます。",
        "駅の近くに新しいパン屋が開店しました。",
    ],
    "ko": ["이 프로그램은 네트워크 연결 상태를 주기적으로 확인합니다."],
}
ALL_SENTENCES: list[str] = [s for group in SENTENCES.values() for s in group]


def pin_threads(n: int) -> int:
    """Give torch exactly `n` intra-op threads (and one inter-op thread); returns `n`.

    Call before any torch work: the inter-op pool cannot be resized once used.
    """
    import torch

    torch.set_num_threads(n)
    # Fails once the inter-op pool was used in this process; the intra-op threads are what matter here.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of `repeats` calls (seconds): the least disturbed run on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 FLOP/s of one `n`×`n` @ `n`×`n` torch matmul on the current threads (best of `repeats`)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    torch.mm(a, b)  # warm-up: thread pool, allocator
    seconds = best_time(lambda: torch.mm(a, b), repeats)
    return 2.0 * n**3 / seconds


def forward_flops(lengths: list[int], config, colbert_dim: int, outputs: str) -> float:
    """Forward FLOPs of an encoder over texts of the given (unpadded) token lengths: per layer
    2·n·(4H² + 2·H·F) for the projections and feed-forward plus 4·n²·H for attention scores and the weighted sum;
    with `outputs == "all"` also the sparse and ColBERT heads (2·n·H·(colbert_dim + 1)). `config` is a
    transformers encoder config (hidden_size, intermediate_size, num_hidden_layers)."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    per_layer = 2 * tokens * (4 * h * h + 2 * h * f) + 4 * squares * h
    heads = 2 * tokens * h * (colbert_dim + 1) if outputs == "all" else 0
    return float(layers * per_layer + heads)


def make_texts(n: int, sentences_per_text: int | tuple[int, int], seed: int = 0) -> list[str]:
    """`n` texts, each joining random sentences (mixed languages and scripts, possibly within one text).

    `sentences_per_text` is a count or an inclusive (low, high) range. Deterministic for a given `seed`.
    """
    rng = random.Random(seed)
    low, high = (
        (sentences_per_text, sentences_per_text)
        if isinstance(sentences_per_text, int)
        else sentences_per_text
    )
    out = []
    for i in range(n):
        k = rng.randint(low, high)
        # A number makes every text distinct, so no cache or dedup anywhere can make one side look faster.
        out.append(f"{i}. " + " ".join(rng.choice(ALL_SENTENCES) for _ in range(k)))
    return out


def exact_length_texts(tokenizer, n: int, n_tokens: int, seed: int = 0) -> list[str]:
    """`n` texts of exactly `n_tokens` tokens each under `tokenizer` (a Hugging Face fast tokenizer; special
    tokens included): the multilingual sentences of `make_texts`, joined until long enough and cut after a token.

    Deterministic for a given tokenizer and `seed`. Each text starts with its number, so all are distinct. A cut
    is checked by tokenizing the cut text again: a prefix can tokenize differently at its end (SentencePiece's
    lone "▁" before some words goes when the text ends there), so the cut moves a few tokens either way, and
    where no cut nearby gives the exact count the text is drawn again.
    """
    specials = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])
    body = n_tokens - specials
    if body < 1:
        raise ValueError(f"{n_tokens} tokens leave no room for text next to {specials} special tokens")
    rng = random.Random(seed)
    want = body + 8  # a few tokens to spare, for moving the cut
    shifts = [0, -1, 1, -2, 2, -3, 3, -4, 4]
    out = []
    for i in range(n):
        for _attempt in range(20):
            text = f"{i}."
            # grow: ~20 tokens a sentence, so ask for what is missing (truncated: no length warnings)
            while True:
                enc = tokenizer(
                    text,
                    add_special_tokens=False,
                    return_offsets_mapping=True,
                    truncation=True,
                    max_length=want,
                )
                have = len(enc["input_ids"])
                if have == want:
                    break
                text += " " + " ".join(rng.choice(ALL_SENTENCES) for _ in range(max(1, (want - have) // 15)))
            ends = [end for _, end in enc["offset_mapping"]]
            for shift in shifts:
                k = body + shift
                if not 1 <= k <= want:
                    continue
                cut = text[: ends[k - 1]].rstrip()
                if len(tokenizer(cut, truncation=True, max_length=n_tokens + 1)["input_ids"]) == n_tokens:
                    out.append(cut)
                    break
            else:
                continue
            break
        else:
            raise RuntimeError(f"could not cut text {i} to exactly {n_tokens} tokens")
    return out


def env_summary(threads: int) -> dict[str, object]:
    """What a reader needs to compare figures: torch version, threads, CPU model."""
    import torch

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "threads": threads,
        "cpu": cpu,
        "cores": os.cpu_count(),
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table (stdout)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            print("  ".join("-" * w for w in widths))


# ----------------------------------------------------------------------------- peak memory of one call (Linux)
def proc_status_kib(field: str) -> int:
    """A `/proc/self/status` memory field in KiB, e.g. `VmRSS` (resident now) or `VmHWM` (peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so a later VmHWM is the peak since now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mem_available_mib() -> float:
    """The machine's available memory (`MemAvailable` of /proc/meminfo), MiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("MemAvailable not in /proc/meminfo")


def _pid_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # gone already
        pass
    return 0.0


class ChildKilled(RuntimeError):
    """A `ForkedRunner` call its watchdog stopped: `why` is `"time"` (past `timeout_s`) or `"memory"` (the
    machine's available memory fell under `min_available_mib`); `seconds` it ran, the child's largest RSS seen."""

    def __init__(self, message: str, why: str, seconds: float, max_rss_mib: float):
        super().__init__(message)
        self.why, self.seconds, self.max_rss_mib = why, seconds, max_rss_mib


def _forked_child(target: Callable, args: tuple, conn) -> None:
    import traceback

    # If the machine runs out of memory anyway, the kernel's OOM killer takes this child first, not another
    # process on the machine.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    try:
        conn.send(("ok", target(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class ForkedRunner:
    """Call a function in a fresh child process per call, forked from a server that has `preload` imported.

    A fresh process per call gives each its own peak RSS; forking from a server with the libraries already
    imported (multiprocessing's forkserver) saves the 10-20 s that importing torch and transformers costs a new
    interpreter on a busy machine. The server does no torch work, so forking it is safe. `env` is set for the
    server (it reads its environment once, when it starts) and restored in this process afterwards.
    """

    def __init__(self, preload: Sequence[str], env: dict[str, str] | None = None):
        import multiprocessing
        from multiprocessing import forkserver

        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(list(preload))
        env = env or {}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            forkserver.ensure_running()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def __call__(
        self,
        target: Callable,
        *args: object,
        timeout_s: float | None = None,
        min_available_mib: float | None = None,
    ) -> object:
        """`target(*args)` in a new child; returns its (picklable) result or raises with the child's traceback.

        With `timeout_s` or `min_available_mib`, a watchdog polls the child every 50 ms and kills it (SIGKILL)
        once it has run past `timeout_s` seconds or the machine's available memory is under `min_available_mib`,
        raising `ChildKilled`.
        """
        receive, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_forked_child, args=(target, args, send))
        start = time.monotonic()
        proc.start()
        send.close()
        max_rss = 0.0
        try:
            while (timeout_s is not None or min_available_mib is not None) and not receive.poll(0.05):
                seconds = time.monotonic() - start
                max_rss = max(max_rss, _pid_rss_mib(proc.pid))
                if timeout_s is not None and seconds > timeout_s:
                    why, message = "time", f"did not finish in {timeout_s:.0f} s"
                elif min_available_mib is not None and (available := mem_available_mib()) < min_available_mib:
                    why = "memory"
                    message = (
                        f"the machine's available memory fell to {available:.0f} MiB "
                        f"(under {min_available_mib:.0f}) after {seconds:.0f} s"
                    )
                else:
                    continue
                proc.kill()
                proc.join()
                raise ChildKilled(
                    f"{target.__name__}: killed, {message} (its RSS reached {max_rss:.0f} MiB)",
                    why,
                    seconds,
                    max_rss,
                )
            status, payload = receive.recv()
        except EOFError:
            proc.join()
            raise RuntimeError(f"{target.__name__}{args!r:.200} died (exit code {proc.exitcode})") from None
        proc.join()
        if status != "ok":
            raise RuntimeError(f"{target.__name__}{args!r:.200} failed:\n{payload}")
        return payload
