"""A 4-layer BERT classifier from Hugging Face transformers, built from a config: nothing is downloaded.

    gradcheck scan docs/examples/hf_bert.py

example_inputs() returns a dict, so every pass calls model(**inputs): token ids, an attention mask that
hides the padding at the end of the second half of the batch, and segment ids. The model returns a
SequenceClassifierOutput; gradcheck differentiates its `logits` with a cross-entropy loss.
"""

import torch
from transformers import BertConfig, BertForSequenceClassification

BATCH, TOKENS, VOCAB = 8, 32, 1000


def build_model():
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def example_inputs():
    attention_mask = torch.ones(BATCH, TOKENS, dtype=torch.long)
    attention_mask[BATCH // 2 :, TOKENS // 2 :] = 0  # the second half of the batch is padded
    return {
        "input_ids": torch.randint(0, VOCAB, (BATCH, TOKENS)),
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros(BATCH, TOKENS, dtype=torch.long),
    }
