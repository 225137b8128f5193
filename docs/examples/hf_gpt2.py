"""A 4-layer GPT-2 language model from Hugging Face transformers, built from a config: nothing is
downloaded. Its output projection `lm_head` shares its weight with the token embedding `wte`.

    gradcheck scan docs/examples/hf_gpt2.py --vocab-size 2000 --seq-len 64

No example_inputs(): with --vocab-size, gradcheck feeds int64 token ids below 2000 of shape
(--batch-size, --seq-len) and reads the (batch, tokens, vocabulary) logits as a language model's,
with a per-token cross-entropy loss.
"""

from transformers import GPT2Config, GPT2LMHeadModel


def build_model():
    # bos/eos ids must lie inside the small vocabulary (GPT-2's own are 50256)
    config = GPT2Config(
        vocab_size=2000, n_positions=128, n_embd=128, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)
