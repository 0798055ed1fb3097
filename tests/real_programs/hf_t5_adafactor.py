"""Sequence-to-sequence training of T5 with the Adafactor optimizer, in the
style of transformers' ``examples/pytorch/translation/run_translation_no_trainer.py``
with Adafactor as the T5 documentation recommends
(``Adafactor(..., scale_parameter=True, relative_step=True, warmup_init=True,
lr=None)``).

A tiny ``T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8,
d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0))``,
random weights; batch 4, source 12 tokens, target 8 tokens with -100 padding;
3 steps.

A tracer must get right: an encoder-decoder library model whose decoder inputs
are made inside the model by shifting ``labels`` right
(``_shift_right``: new_zeros, slice-assign clone, ``masked_fill_`` of -100),
relative position buckets (integer ops, ``torch.where``, ``log``) computed in
the first layer and shared with later ones, T5LayerNorm (RMS, no mean, no
bias), cross-attention, the loss computed inside the model, and
``transformers.optimization.Adafactor``: a library optimizer with its own
factored second-moment state (row/column averages), relative step sizes
computed from the step count, and in-place ``p.data`` updates
(``p.copy_``/``add_`` on the parameters under no_grad).
"""
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.optimization import Adafactor

torch.manual_seed(0)

config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                  relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0)
model = T5ForConditionalGeneration(config)
optimizer = Adafactor(model.parameters(), scale_parameter=True, relative_step=True, warmup_init=True, lr=None)


def make_batch():
    input_ids = torch.randint(1, config.vocab_size, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0
    input_ids[attention_mask == 0] = config.pad_token_id
    labels = torch.randint(1, config.vocab_size, (4, 8))
    labels[1, 6:] = -100  # padded label positions are ignored by the loss
    return input_ids, attention_mask, labels


batches = [make_batch() for _ in range(3)]
model.train()
for step, (input_ids, attention_mask, labels) in enumerate(batches):
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    loss = outputs.loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    print(f"step {step} loss {loss.item():.6f}")

model.eval()
with torch.no_grad():
    input_ids, attention_mask, labels = batches[0]
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
print(f"eval loss {outputs.loss.item():.6f}")
