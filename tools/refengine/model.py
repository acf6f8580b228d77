# SPDX-License-Identifier: MIT
"""A Llama-architecture decoder over a paged KV cache.

RMSNorm, rotary positions (rotate-half form), grouped-query attention and a
SwiGLU MLP, with random weights drawn from a fixed seed (nothing can be
downloaded here). The forward pass takes a flat batch of tokens from several
requests and reads/writes K and V through vLLM-style block tables and slot
mappings, so a request whose prefix is already in the paged cache only
computes its suffix.

Determinism: for a given thread count, the same inputs and the same cached
K/V give bit-identical outputs, whether the K/V were computed by this
process, found in its prefix cache or loaded from another process. That is
what makes reuse verifiable bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .vllm_types import FlashAttentionMetadata


@dataclass(frozen=True)
class ModelSpec:
    """Dimensions of a Llama-style model; ``name`` goes into the kvpool manifest."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position: int = 8192
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    seed: int = 0

    def hf_config(self) -> SimpleNamespace:
        """The Hugging Face config fields vLLM's ModelConfig reads."""
        return SimpleNamespace(
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
            hidden_size=self.hidden_size, vocab_size=self.vocab_size,
            intermediate_size=self.intermediate_size,
        )


# "tiny": for tests, milliseconds per step. "demo" (tools/demo.sh): a
# 500-token prefill takes a few hundred milliseconds on one core, so that
# several engine processes show prefill in their TTFT and still finish in
# seconds; one block of KV is 64 KiB in float32. "bench": sized so that a
# 2,000-token prefill takes well over a second on two cores, while a
# 32-token suffix over a cached prefix takes a small fraction of that;
# one 16-token block of KV (all layers, K and V) is 128 KiB in float32.
PRESETS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("refengine-tiny", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=16, intermediate_size=128),
    "demo": ModelSpec("refengine-demo", vocab_size=8192, hidden_size=256, num_layers=4, num_heads=4,
                      num_kv_heads=2, head_dim=64, intermediate_size=768),
    "bench": ModelSpec("refengine-bench", vocab_size=32000, hidden_size=512, num_layers=8,
                       num_heads=8, num_kv_heads=2, head_dim=64, intermediate_size=1408),
}


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    var = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(var + eps)).to(x.dtype) * w


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


LayerHook = Callable[[int], None]


class LlamaModel:
    """Weights and forward pass; holds no KV cache (the runner passes it in)."""

    # Query rows per attention matmul (bounds the score matrix of a long prefill).
    ATTN_CHUNK = 256

    def __init__(self, spec: ModelSpec, dtype: torch.dtype = torch.float32) -> None:
        self.spec = spec
        self.dtype = dtype
        s = spec
        g = torch.Generator().manual_seed(s.seed)

        def w(*shape: int, std: float) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) * std).to(dtype)

        hd = s.hidden_size
        std = hd ** -0.5
        self.embed = w(s.vocab_size, hd, std=1.0)
        self.layers = []
        for _ in range(s.num_layers):
            self.layers.append({
                "attn_norm": torch.ones(hd, dtype=dtype) + w(hd, std=0.05),
                # q, k, v fused as one [out, in] matrix: one GEMM per layer.
                "wqkv": w((s.num_heads + 2 * s.num_kv_heads) * s.head_dim, hd, std=std),
                "wo": w(hd, s.num_heads * s.head_dim, std=(s.num_heads * s.head_dim) ** -0.5),
                "mlp_norm": torch.ones(hd, dtype=dtype) + w(hd, std=0.05),
                "w13": w(2 * s.intermediate_size, hd, std=std),
                "w2": w(hd, s.intermediate_size, std=s.intermediate_size ** -0.5),
            })
        self.final_norm = torch.ones(hd, dtype=dtype)
        self.lm_head = w(s.vocab_size, hd, std=std * 4)
        inv = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.float64) / s.head_dim))
        ang = torch.outer(torch.arange(s.max_position, dtype=torch.float64), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.cos = ang.cos().to(dtype)
        self.sin = ang.sin().to(dtype)
        self._fingerprint: bytes | None = None

    def named_weights(self) -> list[tuple[str, torch.Tensor]]:
        out = [("embed", self.embed)]
        for i, layer in enumerate(self.layers):
            out += [(f"layers.{i}.{k}", v) for k, v in layer.items()]
        out += [("final_norm", self.final_norm), ("lm_head", self.lm_head)]
        return out

    def fingerprint(self) -> bytes:
        """sha256 over every weight's name, shape, dtype and bytes, in a fixed order."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, t in self.named_weights():
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
                h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.digest()
        return self._fingerprint

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        meta: FlashAttentionMetadata,
        before_attn: LayerHook | None = None,
        after_attn: LayerHook | None = None,
    ) -> torch.Tensor:
        """Hidden states of the step's tokens (num_tokens, hidden).

        Per layer, as vLLM's attention layer does: ``before_attn(i)`` (the
        connector's wait_for_layer_load), then K/V of all the step's tokens
        are written to their slots, attention reads each request's context
        through its block table, then ``after_attn(i)`` (save_kv_layer).
        """
        s = self.spec
        x = self.embed[input_ids]
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        bs = kv_caches[0].shape[2]
        slot_blk = torch.div(meta.slot_mapping, bs, rounding_mode="floor")
        slot_off = meta.slot_mapping % bs
        nq, nkv, d = s.num_heads, s.num_kv_heads, s.head_dim
        for i, layer in enumerate(self.layers):
            h = _rms_norm(x, layer["attn_norm"], s.rms_eps)
            qkv = h @ layer["wqkv"].t()
            q = qkv[:, :nq * d].view(-1, nq, d)
            k = qkv[:, nq * d:(nq + nkv) * d].view(-1, nkv, d)
            v = qkv[:, (nq + nkv) * d:].view(-1, nkv, d)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if before_attn is not None:
                before_attn(i)
            kv = kv_caches[i]
            kv[0][slot_blk, slot_off] = k
            kv[1][slot_blk, slot_off] = v
            attn = self._paged_attention(q, kv, meta, positions)
            if after_attn is not None:
                after_attn(i)
            x = x + attn @ layer["wo"].t()
            h = _rms_norm(x, layer["mlp_norm"], s.rms_eps)
            gu = h @ layer["w13"].t()
            gate, up = gu[:, :s.intermediate_size], gu[:, s.intermediate_size:]
            x = x + (torch.nn.functional.silu(gate) * up) @ layer["w2"].t()
        return x

    def _paged_attention(
        self, q: torch.Tensor, kv: torch.Tensor, meta: FlashAttentionMetadata, positions: torch.Tensor
    ) -> torch.Tensor:
        s = self.spec
        nkv, g, d = s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim
        bs = kv.shape[2]
        out = torch.empty(q.shape[0], s.num_heads * d, dtype=q.dtype)
        qsl = meta.query_start_loc.tolist()
        seq_lens = meta.seq_lens.tolist()
        for r in range(len(seq_lens)):
            a, b, n_ctx = qsl[r], qsl[r + 1], seq_lens[r]
            nblk = (n_ctx + bs - 1) // bs
            table = meta.block_table[r, :nblk]
            # Gather the request's blocks, one contiguous copy per request:
            # keys (nkv, d, ctx), values (nkv, ctx, d).
            keys = kv[0].index_select(0, table).reshape(-1, nkv, d)[:n_ctx].permute(1, 2, 0).contiguous()
            vals = kv[1].index_select(0, table).reshape(-1, nkv, d)[:n_ctx].permute(1, 0, 2).contiguous()
            # Query rows in chunks bound the score matrix; a chunk attends
            # only to keys up to its last position. The g query heads of a
            # KV head are stacked as rows of one matrix: (nkv, g * n, d).
            for c0 in range(a, b, self.ATTN_CHUNK):
                c1 = min(c0 + self.ATTN_CHUNK, b)
                n = c1 - c0
                qpos = positions[c0:c1]
                kmax = int(qpos.max()) + 1
                qr = q[c0:c1].view(n, nkv, g, d).permute(1, 2, 0, 3).reshape(nkv, g * n, d)
                scores = torch.bmm(qr, keys[:, :, :kmax]).float() * (d ** -0.5)   # (nkv, g*n, kmax)
                mask = (torch.arange(kmax).unsqueeze(0) > qpos.unsqueeze(1)).repeat(g, 1)
                scores.masked_fill_(mask, float("-inf"))
                p = torch.softmax(scores, dim=-1).to(q.dtype)
                o = torch.bmm(p, vals[:, :kmax])                                  # (nkv, g*n, d)
                out[c0:c1] = o.view(nkv, g, n, d).permute(2, 0, 1, 3).reshape(n, -1)
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits of the given hidden rows."""
        return (_rms_norm(hidden, self.final_norm, self.spec.rms_eps) @ self.lm_head.t()).float()
