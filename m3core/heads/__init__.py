"""The three M3 heads over one backbone pass: dense (pooling), sparse (token weights), multi-vector (ColBERT)."""

from m3core.heads.colbert import ColbertHead
from m3core.heads.dense import dense_embedding
from m3core.heads.sparse import SparseHead, special_token_ids

__all__ = ["ColbertHead", "SparseHead", "dense_embedding", "special_token_ids"]
