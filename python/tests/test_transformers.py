"""fusekit swapped into a small random-weight Hugging Face Qwen3-MoE model (no download):
prefill and decode logits before and after the swap, against the same model in fp32, and the
greedy tokens. Runs on CUDA when present, else on the CPU backends (when torch and
transformers are installed)."""

import copy

import pytest

from conftest import HAVE_CUDA, needs_transformers, rel_l2

pytestmark = needs_transformers

PROMPT_LEN = 24
DECODE_STEPS = 4


def tiny_model(seed, device):
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        max_position_embeddings=64,  # the swap's cos/sin cache grows past it (decode below goes further)
        attn_implementation="sdpa",
    )
    model = Qwen3MoeForCausalLM(cfg).eval()
    with torch.no_grad():
        # HF initialises RMSNorm weights to ones; random ones make the q/k norm weights matter.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    return model.to(device)


def run(model, ids, forced):
    """Prefill on ids, then decode the `forced` tokens one by one; logits of every step (fp32)."""
    import torch

    with torch.no_grad():
        out = model(ids, use_cache=True)
        logits = [out.logits[:, -1].float()]
        prefill = out.logits.float()
        cache = out.past_key_values
        for s in range(forced.shape[1]):
            out = model(forced[:, s : s + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits.append(out.logits[:, -1].float())
    return prefill, torch.stack(logits, 1)


@pytest.mark.parametrize("moe_mode", ["block", "experts", False])
def test_swap_matches_hf_qwen3_moe(moe_mode):
    import torch

    from fusekit.integrations.transformers import swap_qwen3_moe

    device = "cuda" if HAVE_CUDA else "cpu"
    model32 = tiny_model(1234, device)
    model = copy.deepcopy(model32).to(torch.bfloat16)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 512, (2, PROMPT_LEN), generator=g).to(device)
    # Decode steps run past max_position_embeddings = 64 to exercise the rotary cache growth.
    ids = torch.cat([ids, torch.randint(0, 512, (2, 48), generator=g).to(device)], 1)

    # Greedy continuation of the HF bf16 model, fed to every model (teacher forcing).
    toks = []
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(DECODE_STEPS):
            toks.append(tok)
            out = model(tok, past_key_values=cache, use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    forced = torch.cat(toks, 1)

    ref_prefill, ref_steps = run(model32, ids, forced)
    hf_prefill, hf_steps = run(model, ids, forced)
    keys_before = {k: v.clone() for k, v in model.state_dict().items()}

    summary = swap_qwen3_moe(model, moe=moe_mode, max_tokens=16)  # grows to the prefill's 144 tokens
    assert summary["qk_norm"] == 4 and summary["rotary_fused"]
    assert summary["moe"] == (4 if moe_mode else 0)
    fk_prefill, fk_steps = run(model, ids, forced)

    # The swap changed no weight (the packed QKV weight is the same numbers, as views).
    after = model.state_dict()
    assert set(after) == set(keys_before)
    assert all(torch.equal(after[k], v) for k, v in keys_before.items())

    for what, fk, hf, ref in (("prefill", fk_prefill, hf_prefill, ref_prefill), ("decode", fk_steps, hf_steps, ref_steps)):
        assert not torch.isnan(fk).any()
        err_fk = rel_l2(fk.cpu(), ref.cpu())
        err_hf = rel_l2(hf.cpu(), ref.cpu())
        # fusekit (fp32 math inside each op) is at least about as close to the fp32 model as
        # HF's own bf16 path, and close to the bf16 model it replaces.
        assert err_fk <= max(1.5 * err_hf, 0.01), f"{what}: fusekit {err_fk:.4f} vs fp32, HF bf16 {err_hf:.4f}"
        assert rel_l2(fk.cpu(), hf.cpu()) < 0.05, f"{what}: fusekit vs HF bf16"

    # Greedy tokens agree with HF bf16's at every decode step, except where HF bf16's own top-2
    # gap is within bf16 noise (then the fp32 model decides between the two).
    fk_tok = fk_steps.argmax(-1)
    hf_tok = hf_steps.argmax(-1)
    for b, s in (fk_tok != hf_tok).nonzero().tolist():
        row = hf_steps[b, s]
        gap = float(row[hf_tok[b, s]] - row[fk_tok[b, s]])
        assert gap < 0.05 * float(row.abs().max()), f"token mismatch at batch {b} step {s}: HF margin {gap}"
    assert (fk_tok == hf_tok).float().mean() >= 0.75


def test_swap_twice_is_an_error_and_unswap_restores():
    import torch

    from fusekit.integrations.transformers import swap_qwen3_moe, unswap_qwen3_moe

    model = tiny_model(1, "cuda" if HAVE_CUDA else "cpu")
    ids = torch.randint(0, 512, (1, 8), device=model.device)
    with torch.no_grad():
        before = model(ids).logits
    swap_qwen3_moe(model, moe="experts")
    with pytest.raises(RuntimeError, match="already swapped"):
        swap_qwen3_moe(model)
    unswap_qwen3_moe(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
    with pytest.raises(ValueError, match="moe"):
        swap_qwen3_moe(tiny_model(2, "cpu"), moe="router")
