"""Record a real Hugging Face Trainer run (tiny random BERT, synthetic data, CPU).

Usage: python hf_trainer.py [--tqdm-only | --diverge | --every-10]
  --tqdm-only: logging_steps larger than the run and no evaluation, so only
               the tqdm bar and the final summary dict appear.
  --diverge:   plain SGD, learning_rate=1e6, no grad clipping, so training blows up to nan (shows what
               the Trainer prints then; note logging_nan_inf_filter=True is the default).
  --every-10:  logging_steps=10 and an evaluation every 20 steps, so the log says 10, 20, 30 ... and
               evaluates at 20, 40, 60 (the steps a person reads off it).
"""
import os
import sys
import tempfile

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, set_seed

TQDM_ONLY = "--tqdm-only" in sys.argv
DIVERGE = "--diverge" in sys.argv
EVERY_10 = "--every-10" in sys.argv


class SyntheticDataset(Dataset):
    def __init__(self, n, seq_len=16, vocab=200, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab, (n, seq_len), generator=g)
        # learnable label: whether the first token is in the upper half of the vocab
        self.labels = (self.input_ids[:, 0] >= vocab // 2).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": torch.ones_like(self.input_ids[i]),
            "labels": self.labels[i],
        }


def main():
    set_seed(42)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, vocab_size=200, max_position_embeddings=64, num_labels=2,
    )
    model = BertForSequenceClassification(config)
    train_ds = SyntheticDataset(160, seed=0)
    eval_ds = SyntheticDataset(48, seed=1)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=3,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=16,
            learning_rate=float(os.environ.get("DIVERGE_LR", "1e30")) if DIVERGE else 5e-4,
            optim="sgd" if DIVERGE else "adamw_torch",
            max_grad_norm=0.0 if DIVERGE else 1.0,  # 0 = no clipping, so the run can blow up
            logging_strategy="steps",
            logging_steps=1000 if TQDM_ONLY else 10 if EVERY_10 else 5,
            eval_strategy="no" if TQDM_ONLY else "steps" if EVERY_10 else "epoch",
            eval_steps=20 if EVERY_10 else None,
            save_strategy="no",
            report_to=[],
            disable_tqdm=False,
            use_cpu=True,
            seed=42,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds)
        trainer.train()


if __name__ == "__main__":
    main()
