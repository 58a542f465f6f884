"""`m3 encode`: encode texts (arguments, a file, or a built-in multilingual example) and print all three outputs."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "encode"
HELP = "Encode texts with an M3 model: dense vectors, lexical weights, ColBERT vectors; optional pair scores."

EXAMPLE_QUERIES = ["How do I list the files in a directory?", "Wie komprimiere ich eine Datei?"]
EXAMPLE_PASSAGES = [
    "ls lists information about the files in a directory, sorted alphabetically by default.",
    "gzip reduziert die Größe der angegebenen Dateien mit Lempel-Ziv-Kodierung.",
    "grep cherche des motifs dans chaque fichier et affiche les lignes correspondantes.",
]
# The keys of m3core.retrieval.sparse_formats.SPARSE_FORMATS (a test checks it), spelled out here because
# importing that module loads the retrieval package (faiss, scipy), and building the `m3` parser stays cheap.
SPARSE_FORMAT_NAMES = ("ids", "tokens", "qdrant", "milvus", "elasticsearch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", help="texts to encode (default: a built-in multilingual example)")
    p.add_argument(
        "--model", help="model directory or Hub id (default: build a tiny random model, for a smoke run)"
    )
    p.add_argument("--file", help="read texts from this file, one per line ('-' for stdin)")
    p.add_argument("--max-length", type=int, help="truncate to this many tokens")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mcls", action="store_true", help="MCLS mode for long documents")
    p.add_argument("--output", help="write a JSON file with all outputs (ColBERT vectors included)")
    p.add_argument(
        "--sparse-format",
        choices=SPARSE_FORMAT_NAMES,
        default="ids",
        help=(
            "how --output writes each text's lexical weights: ids = {token id: weight} (the encoder's own; "
            "default); tokens = {token text: weight}; qdrant = {indices, values} (a Qdrant SparseVector); "
            "milvus = {token id: weight} sorted by id (JSON keys are strings: int(key) is Milvus's index); "
            "elasticsearch = {token text: weight} for a sparse_vector field (zero weights left out). "
            "Where ids decode to the same text, the text keeps the largest weight. The file names the format "
            "under 'sparse_format' (not written for ids). A scipy CSR matrix has no JSON form: use "
            "m3core.retrieval.sparse_formats.to_csr from Python"
        ),
    )


def run(args: argparse.Namespace) -> int:

    if args.sparse_format != "ids" and not args.output:
        raise ValueError(f"--sparse-format {args.sparse_format} says how --output writes: give --output FILE")

    from m3core import M3Embedder, scoring

    texts = list(args.texts)
    if args.file:
        fh = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        with fh:
            texts += [line.rstrip("\n") for line in fh if line.strip()]
    example = not texts
    if example:
        texts = EXAMPLE_QUERIES + EXAMPLE_PASSAGES
    model = args.model or _tiny_model(texts)
    emb = M3Embedder(model, batch_size=args.batch_size, show_progress=not args.quiet)
    out = emb.encode(
        texts,
        max_length=args.max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
        mcls=args.mcls,
    )
    for i, text in enumerate(texts):
        top = sorted(emb.convert_id_to_token(out["lexical_weights"][i]).items(), key=lambda kv: -kv[1])[:5]
        print(f"[{i}] {text[:70]!r}")
        print(
            f"    dense[{out['dense_vecs'].shape[1]}] = {[round(float(x), 4) for x in out['dense_vecs'][i][:4]]}..."
        )
        print(f"    lexical = {{{', '.join(f'{t!r}: {w:.3f}' for t, w in top)}}}")
        print(f"    colbert = {out['colbert_vecs'][i].shape[0]} vectors x {out['colbert_vecs'][i].shape[1]}")
    if example:
        q, p = slice(0, len(EXAMPLE_QUERIES)), slice(len(EXAMPLE_QUERIES), None)
        s = {
            "dense": scoring.dense_scores(out["dense_vecs"][q], out["dense_vecs"][p]),
            "sparse": scoring.lexical_scores(out["lexical_weights"][q], out["lexical_weights"][p]),
            "colbert": scoring.colbert_scores(out["colbert_vecs"][q], out["colbert_vecs"][p]),
        }
        s["hybrid"] = scoring.hybrid_scores(s["dense"], s["sparse"], s["colbert"])
        print("\nquery x passage scores (rows: queries, columns: passages)")
        for mode, m in s.items():
            print(f"  {mode:8s} " + " | ".join(" ".join(f"{x:7.3f}" for x in row) for row in m))
    if args.output:
        from m3core.retrieval.sparse_formats import SPARSE_FORMATS

        result = {
            "texts": texts,
            "dense_vecs": out["dense_vecs"].tolist(),
            "lexical_weights": SPARSE_FORMATS[args.sparse_format](out["lexical_weights"], emb.tokenizer),
            "colbert_vecs": [v.tolist() for v in out["colbert_vecs"]],
        }
        if args.sparse_format != "ids":
            result["sparse_format"] = args.sparse_format
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
        print(
            f"wrote {args.output}"
            + ("" if args.sparse_format == "ids" else f" ({args.sparse_format} lexical weights)")
        )
    return 0


def _tiny_model(texts: list[str]):
    import logging

    from m3core import build_tiny_model

    logging.getLogger("m3").warning(
        "no --model given: using a tiny random model built on the fly (smoke run)"
    )
    return build_tiny_model(None, texts * 20, vocab_size=200)
