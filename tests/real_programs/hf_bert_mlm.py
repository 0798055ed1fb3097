"""Masked-language-model fine-tuning with Hugging Face transformers, in the
style of transformers' ``examples/pytorch/language-modeling/run_mlm_no_trainer.py``
(its training loop, with the tokenizer and DataCollatorForLanguageModeling
replaced by a masked batch made by hand).

A tiny ``BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32,
num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
max_position_embeddings=64))``, random weights (nothing downloaded); batch 4,
sequence 16, padding at the end of two rows; 15% of the real tokens replaced by
the mask id and labels -100 elsewhere; ``torch.optim.AdamW`` with weight-decay
groups, ``get_linear_schedule_with_warmup``; 3 steps.

A tracer must get right: a large library model called with keyword arguments
(``input_ids``, ``attention_mask``, ``labels``) returning a ``ModelOutput``
whose ``.loss`` is computed inside the library (CrossEntropy with
``ignore_index=-100``), the extended attention mask built inside the model,
the MLM head's decoder weight tied to the word embeddings, dropout in
training, a LambdaLR scheduler from transformers stepped after each optimizer
step, and ``model.eval()`` + ``torch.no_grad()`` at the end.
"""
import torch
from transformers import BertConfig, BertForMaskedLM, get_linear_schedule_with_warmup

torch.manual_seed(0)

MASK_ID = 4
PAD_ID = 0
vocab_size = 100
batch_size = 4
seq_len = 16

config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD_ID)
model = BertForMaskedLM(config)


def make_batch():
    """A batch as DataCollatorForLanguageModeling would give it (without its 80/10/10 split)."""
    input_ids = torch.randint(5, vocab_size, (batch_size, seq_len))
    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    attention_mask[1, 12:] = 0
    attention_mask[3, 10:] = 0
    input_ids[attention_mask == 0] = PAD_ID
    labels = input_ids.clone()
    probability_matrix = torch.full(labels.shape, 0.15)
    probability_matrix.masked_fill_(attention_mask == 0, value=0.0)
    masked_indices = torch.bernoulli(probability_matrix).bool()
    labels[~masked_indices] = -100  # we only compute loss on masked tokens
    input_ids[masked_indices] = MASK_ID
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


batches = [make_batch() for _ in range(3)]

no_decay = ["bias", "LayerNorm.weight"]
optimizer_grouped_parameters = [
    {
        "params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
        "weight_decay": 0.01,
    },
    {
        "params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
        "weight_decay": 0.0,
    },
]
optimizer = torch.optim.AdamW(optimizer_grouped_parameters, lr=5e-4)
num_training_steps = len(batches)
lr_scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=num_training_steps)

model.train()
for step, batch in enumerate(batches):
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    loss = outputs.loss
    loss.backward()
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad()
    print(f"step {step} loss {loss.item():.6f} lr {lr_scheduler.get_last_lr()[0]:.6e}")

model.eval()
with torch.no_grad():
    outputs = model(**batches[0])
print(f"eval loss {outputs.loss.item():.6f} logits {tuple(outputs.logits.shape)}")
