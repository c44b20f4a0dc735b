"""A tiny random sentence-transformer on the first 3,000 word pieces of the default model's
vocabulary: a static table distils from it in about a second, so distillation is tested for
real without minutes of CPU."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_sentence_transformer(folder: Path, seed: int) -> Path:
    """A 1-layer, 32-wide BERT with mean pooling, saved as a sentence-transformers folder;
    another seed gives other weights (another fingerprint)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from detectors.embedder import resolve_model_path

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    spec = json.loads((Path(resolve_model_path(None)) / "tokenizer.json").read_text())
    kept = [w for w, i in sorted(spec["model"]["vocab"].items(), key=lambda x: x[1])
            if i < 4_000 and not w.startswith("[unused")]
    ids = {w: i for i, w in enumerate(kept)}
    spec["model"]["vocab"] = ids
    for token in spec["added_tokens"]:
        token["id"] = ids[token["content"]]
    for token in spec["post_processor"]["special_tokens"].values():
        token["ids"] = [ids[t] for t in token["tokens"]]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = models.Transformer(str(folder), max_seq_length=64)
    SentenceTransformer(modules=[transformer, models.Pooling(32, "mean")]).save(str(folder))
    return folder


def halve_checkpoint(folder: Path) -> None:
    """The saved model's weights in fp16 and no dtype in its config, as older checkpoints
    (the default model's) are saved: transformers 5 then loads it in fp16."""
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v
               for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config))


def attention_spy(monkeypatch: object) -> list[bool]:
    """Whether cuDNN's attention was allowed at each call of torch's SDPA from now on."""
    import torch

    allowed: list[bool] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> object:
        allowed.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)  # type: ignore[attr-defined]
    return allowed
