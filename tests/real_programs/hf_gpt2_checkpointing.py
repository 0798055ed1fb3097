"""Causal-LM training of GPT-2 with gradient checkpointing, in the style of
transformers' ``examples/pytorch/language-modeling/run_clm_no_trainer.py`` with
``--gradient_checkpointing`` (the Trainer's ``gradient_checkpointing=True``).

A tiny ``GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32,
n_layer=2, n_head=2))``, random weights; ``model.config.use_cache = False``, non-reentrant checkpointing enabled,
``model.train()``, AdamW; batch 4, sequence 16; 3 steps with
``labels=input_ids`` (the model shifts them itself).

transformers 5.x renamed ``model.gradient_checkpointing_enable(
gradient_checkpointing_kwargs={"use_reentrant": False})`` to
``model.activation_checkpointing_enable(activation_checkpointing_kwargs=...)``
(the old name still works but raises a FutureWarning), so the new name is used where
it exists (transformers 4, for torch before 2.6, has only the old one).
transformers also logs, in plain untraced use of this tiny config, that GPT-2's
default bos/eos id 50256 is outside the vocabulary and that ``loss_type=None``
is unrecognized; ``transformers.logging.set_verbosity_error()`` silences those.

A tracer must get right: non-reentrant activation checkpointing
(``torch.utils.checkpoint``): each GPT2Block's forward runs once in the forward
pass with its activations discarded and AGAIN during backward (recomputed ops
inside backward, with saved-tensor hooks), the forward hook that
``enable_input_require_grads`` puts on the input embeddings (its output made to
require grad in place), Conv1D layers (addmm with a
transposed weight layout), the tied ``lm_head``/``wte`` weight, the causal mask
made inside the library, the loss computed inside the model from shifted
labels, and dropout in training.
"""
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

transformers.logging.set_verbosity_error()
torch.manual_seed(0)

config = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)
model = GPT2LMHeadModel(config)
model.config.use_cache = False
if hasattr(model, "activation_checkpointing_enable"):
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
else:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.train()

optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

batches = [torch.randint(0, config.vocab_size, (4, 16)) for _ in range(3)]
for step, input_ids in enumerate(batches):
    outputs = model(input_ids=input_ids, labels=input_ids)
    loss = outputs.loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    print(f"step {step} loss {loss.item():.6f}")

model.eval()
with torch.no_grad():
    logits = model(input_ids=batches[0]).logits
print(f"eval logits {tuple(logits.shape)} mean {logits.mean().item():.6f}")
