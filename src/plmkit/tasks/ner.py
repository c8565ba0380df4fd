"""Named-entity recognition: token classification over CoNLL files (`token<TAB>tag` or `token tag`, blank line between
sentences; BIO/IOB2 or BIOES tags; one character per line for Chinese), or JSON lines
``{"tokens": [...], "tags": [...]}`` (``ner_tags`` as in Hugging Face datasets, but tag names, not ids).

Labels are aligned to word pieces: the first piece of a word carries the word's tag, the other
pieces -100 (ignored by the loss); predictions are read at first pieces and mapped back to words.
A sentence longer than max_length is cut into overlapping windows of word pieces (`stride` pieces
shared by consecutive windows, max_length // 4 by default); training uses every window, and
prediction takes each word from the window where it is most central (`WindowMerger`), so every
word of the sentence gets exactly one prediction.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from plmkit.errors import ConfigError, DataError
from plmkit.evaluation import EntityMetrics
from plmkit.tasks.base import Task, TaskSettings, need_two_labels
from plmkit.tasks.common import default_stride, forward_batches, mean, pipeline_records, unzip, window_starts
from plmkit.tasks.fields import TEXT, WORDS, each_record, field, only_one
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.settings import is_int, setting
from plmkit.utils.text import check_file, parse_json_lines, read_lines

PREFIXES = ("B", "I", "E", "S", "L", "U")
_OPENS_OBJECT = re.compile(r"""\s*\{\s*["']""")  # {"key" (or a Python dict's {'key')


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str] | None
    line: int  # line of the first token
    tag_lines: list[int] | None = None


def read_ner(path: str | Path, require_tags: bool | None = True) -> list[Sentence]:
    """Sentences of a CoNLL file (`read_conll`), or of a JSON-lines file (`read_ner_jsonl`): one whose
    first line is a JSON object, or opens one with a key, so that a malformed first line is reported as
    JSON (a CoNLL token `{` is followed by its tag). `require_tags` None: tags where they are given
    (distillation's transfer data): per record in JSON lines, per file in CoNLL (a tag column or not)."""
    path = check_file(path)
    lines = read_lines(path)
    first = next(line for line in lines if line.strip())
    try:
        jsonl = isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):  # malformed, or beyond what Python reads (a 5,000-digit number)
        jsonl = _OPENS_OBJECT.match(first) is not None
    if jsonl:
        return read_ner_jsonl(lines, path, require_tags)
    return read_conll(path, _has_tags(lines) if require_tags is None else require_tags, lines)


def read_ner_jsonl(lines: list[str], path, require_tags: bool | None = True) -> list[Sentence]:
    """Sentences of JSON lines ``{"tokens": [words], "tags" (or "ner_tags"): [tags]}``, one per line
    (`require_tags` None: the tags of the records that have them)."""
    sentences = []
    for lineno, row in parse_json_lines(lines, path):
        where = f"{path}:{lineno}"
        tokens = field(row, "tokens", where, WORDS)
        tags = None
        if require_tags or require_tags is None and ("tags" in row or "ner_tags" in row):
            key = only_one(row, ("tags", "ner_tags"), where) or "tags"
            if isinstance(row.get(key), list) and any(is_int(t) for t in row[key]):
                raise DataError(f"{where}: '{key}' holds integers (class ids); give the tag names ('B-PER', 'O', ...)")
            tags = field(row, key, where, WORDS)
            if len(tags) != len(tokens):
                raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} {key}; give one tag per token")
            for tag in tags:
                check_tag(tag, where)
        sentences.append(Sentence(tokens, tags, lineno, [lineno] * len(tokens)))
    return sentences


def read_conll(path: str | Path, require_tags: bool = True, text: list[str] | None = None) -> list[Sentence]:
    """Sentences of a CoNLL file (its lines `text` when read already): the token in the first column,
    the tag in the last; every line has the same number of columns (CoNLL-2003's four: token, POS,
    chunk, NER), so a short line cannot turn another column into the tag."""
    path = Path(path)
    sentences, tokens, tags, lines = [], [], [], []
    columns: tuple[int, int] | None = None  # (count, first line)

    def close():
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags) if require_tags else None, lines[0], list(lines)))
            tokens.clear(), tags.clear(), lines.clear()

    for lineno, line in enumerate(read_lines(path) if text is None else text, 1):
        if not line.strip():
            close()
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p for p in parts if p != ""]
        if columns is None:
            columns = (len(parts), lineno)
        elif len(parts) != columns[0]:
            raise DataError(f"{path}:{lineno}: {len(parts)} column(s), but the file's lines have {columns[0]} (from line "
                            f"{columns[1]}): every line needs the same columns, the token first and the tag last")
        if require_tags:
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}: expected 'token<TAB>tag', got {line!r}")
            tag = parts[-1].strip()
            check_tag(tag, f"{path}:{lineno}")
            tags.append(tag)
        tokens.append(parts[0])
        lines.append(lineno)
    close()
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences


def check_tag(tag: str, where: str) -> None:
    if tag == "O":
        return
    prefix, _, kind = tag.partition("-")
    if prefix not in PREFIXES or not kind:
        raise DataError(f"{where}: tag {tag!r} is not 'O' or B-/I-/E-/S-TYPE (BIO or BIOES)")


def scheme_of(tags: list[str]) -> str:
    """'BIOES' when any E-/S-/L-/U- tag is used, else 'BIO'."""
    return "BIOES" if any(t[:2] in ("E-", "S-", "L-", "U-") for t in tags) else "BIO"


def run_scheme(tags: list[str], given: str | None, path) -> str:
    """The tag scheme a fine-tuning run scores entities by: the training tags' (`scheme_of`), which must be
    `given` (the run's scheme) when it gives one; tags that are all 'O' are of either."""
    found = scheme_of(tags)
    if given is None or given == found or tags == ["O"]:
        return given or found
    why = ("some tags are E-/S- (or L-/U-)" if found == "BIOES"
           else "no tag is E- or S-, as every BIOES entity's last is")
    raise DataError(f"{path}: scheme is {given} (given), but the training tags are {found}: {why}; give tags of "
                    f"that scheme, or leave scheme out")


def tag_names(sentences: list[Sentence]) -> list[str]:
    """'O' first, then the tags sorted by entity type and prefix."""
    tags = {t for s in sentences for t in s.tags}
    order = {p: i for i, p in enumerate(PREFIXES)}
    return ["O"] + sorted((t for t in tags if t != "O"), key=lambda t: (t[2:], order[t[0]]))


def encode_sentences(tokenizer, sentences: list[Sentence], max_length: int, label2id: dict[str, int] | None,
                     path="data", stride: int | None = None) -> list[dict]:
    """Word-piece windows with first-piece labels, one feature per window (see `window_features`);
    `_sentence` indexes `sentences`. A sentence that fits in max_length gives one window."""
    words = [w for s in sentences for w in s.tokens]
    pieces = tokenizer.backend_tokenizer.encode_batch(words, add_special_tokens=False) if words else []
    features, k = [], 0
    for i, s in enumerate(sentences):
        ids, word_of, labels = [], [], []
        for w in range(len(s.tokens)):
            piece_ids = pieces[k + w].ids or [tokenizer.unk_token_id]
            label = IGNORE_INDEX
            if label2id is not None and s.tags is not None:
                tag = s.tags[w]
                if tag not in label2id:
                    line = s.tag_lines[w] if s.tag_lines else s.line
                    raise DataError(f"{path}:{line}: unknown tag {tag!r}; the model knows {', '.join(label2id)}")
                label = label2id[tag]
            ids += piece_ids
            word_of += [w] * len(piece_ids)
            labels += [label] + [IGNORE_INDEX] * (len(piece_ids) - 1)
        k += len(s.tokens)
        labelled = label2id is not None and s.tags is not None
        for f in window_features(tokenizer, ids, word_of, max_length, stride, labels if labelled else None):
            features.append({**f, "_sentence": i})
    return features


def window_features(tokenizer, ids: list[int], word_of: list[int], max_length: int, stride: int | None = None,
                    labels: list[int] | None = None) -> list[dict]:
    """[CLS] window [SEP] features over a sentence's word pieces `ids` (`word_of`: the word of each
    piece, `labels`: per piece). Windows hold max_length - 2 pieces; consecutive windows share
    `stride` pieces (default `default_stride`), so every piece is in some window. `_word_index` maps
    each position to its word, or -1 for [CLS]/[SEP] and for the tail pieces of a word that starts in
    an earlier window (a word is read at its first piece); `_window` numbers the windows."""
    room = max_length - 2
    overlap = default_stride(max_length) if stride is None else stride
    if room < 1 or not 0 <= overlap < room:
        raise ConfigError(f"NER windows: stride={overlap} must be at least 0 and below max_length - 2 "
                          f"(max_length={max_length})")
    first = list(range(len(word_of)))  # first[p]: position of the first piece of p's word
    for p in range(1, len(first)):
        if word_of[p - 1] == word_of[p]:
            first[p] = first[p - 1]
    features = []
    for n, start in enumerate(window_starts(len(ids), room, overlap)):
        end = min(start + room, len(ids))
        window = [tokenizer.cls_token_id] + ids[start:end] + [tokenizer.sep_token_id]
        f = {"input_ids": window, "token_type_ids": [0] * len(window), "_window": n,
             "_word_index": [-1] + [word_of[p] if first[p] >= start else -1 for p in range(start, end)] + [-1]}
        if labels is not None:
            f["labels"] = [IGNORE_INDEX] + labels[start:end] + [IGNORE_INDEX]
        features.append(f)
    return features


class WindowMerger:
    """One value per word of each sentence from overlapping windows: the value at the word's first
    piece in the window where that piece is most central (farthest from the nearer window edge;
    the earlier window on a tie), BERT's "max context" rule for SQuAD windows. Windows may come in
    any order, e.g. spread over length-sorted batches; only the chosen values are kept."""

    def __init__(self):
        self.best: dict[tuple[int, int], tuple[tuple[int, int], object]] = {}  # (sentence, word) -> (rank, value)

    def add(self, feature: dict, token_values: list) -> None:
        """`token_values`: one value per position of `feature`'s input_ids (extra ones are ignored)."""
        word_index = feature["_word_index"]
        last = len(word_index) - 1
        for pos, w in enumerate(word_index):
            if w < 0 or (pos > 0 and word_index[pos - 1] == w):
                continue
            key, rank = (feature["_sentence"], w), (min(pos, last - pos), -feature["_window"])
            self._keep(key, rank, token_values[pos])

    def _keep(self, key: tuple[int, int], rank: tuple[int, int], value) -> None:
        if key not in self.best or rank > self.best[key][0]:
            self.best[key] = (rank, value)

    def merge(self, chosen: list) -> None:
        """Add the (key, (rank, value)) items other mergers chose (windows merged elsewhere)."""
        for key, (rank, value) in chosen:
            self._keep(key, rank, value)

    def words(self, sentence: int, n_words: int) -> list:
        """The sentence's per-word values (None for a word no window holds)."""
        return [self.best[(sentence, w)][1] if (sentence, w) in self.best else None for w in range(n_words)]


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of each entity in BIO or BIOES tags (lenient: a stray I-
    or E- starts an entity, as conlleval does)."""
    spans, kind, start = [], None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        prefix = {"L": "E", "U": "S"}.get(prefix, prefix)
        continues = kind is not None and t == kind and prefix in ("I", "E")
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and not continues):
            kind, start = t, i
        if kind is not None and prefix in ("E", "S"):
            spans.append((kind, start, i + 1))
            kind = None
    return spans


@dataclass
class NerSettings(TaskSettings):
    section = "ner"
    scheme: str | None = setting(None, "BIO or BIOES; off: set from the training tags (given: the tags must be of "
                                       "it)", cli=False, choices=("BIO", "BIOES"))
    stride: int | None = setting(None, "word pieces shared by consecutive windows of a sentence longer than "
                                       "--max-length; off: max length / 4", metavar="N", at_least=0)

    def validate(self) -> None:
        """A window is [CLS] pieces [SEP]: consecutive windows must share fewer pieces than one holds."""
        length = self.max_length
        self.need(length is not None and length >= 3, f"{self._named('max_length')} must be at least 3 for NER "
                                                      f"windows ([CLS] pieces [SEP]), got {length}")
        stride = default_stride(length) if self.stride is None else self.stride
        self.need(stride < length - 2, f"{self._named('stride')}={stride} must be below {length - 2}, the word pieces "
                                       f"of a max_length={length} window, so that consecutive windows move on")


class NerTask(Task):
    name = "ner"
    model_task = "token-classification"
    settings_class = NerSettings
    pipelines = ("token-classification", "ner")
    pipeline_arguments = ("aggregation_strategy", "ignore_labels")
    description = "CoNLL token<TAB>tag, or JSONL tokens + tags; BIO or BIOES"
    reader = staticmethod(read_ner)

    def discover(self, examples, path) -> list[str]:
        labels = tag_names(examples)
        self.settings.scheme = run_scheme(labels, self.settings.scheme, path)
        return need_two_labels(labels, path)

    def soft_targets(self) -> str:
        return "token"

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        return encode_sentences(tokenizer, examples, self.settings.max_length, label2id, path, self.settings.stride)

    sharded_evaluation = True

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32, part=None) -> dict[str, float]:
        """Windows of one sentence may land in different batches: merge per word, then score. Shared
        by several processes (`part`), each merges its windows and rank 0 gathers their words (seqeval
        needs every sentence) and scores; the others return nothing."""
        merger = WindowMerger()  # (predicted tag id, cross-entropy) per word
        for idx, batch, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id, part):
            logits = out.logits.float()  # (B, T, C)
            token_loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")  # (B, T)
            for row, i in enumerate(idx):
                merger.add(features[i], list(zip(logits[row].argmax(-1).tolist(), token_loss[row].tolist())))
        if part is not None:
            chosen = part.gather(list(merger.best.items()))
            if chosen is None:
                return {}
            merger.merge(chosen)
        words = [merger.words(k, len(s.tokens)) for k, s in enumerate(examples)]
        metric = EntityMetrics(self.settings.scheme or "BIO")
        metric.update([[model.config.id2label[tag] for tag, _ in w] for w in words], [s.tags for s in examples])
        word_loss = [x for w in words for _, x in w]  # each word once, from the window it is predicted in
        return {**metric.compute(), "loss": sum(word_loss) / max(len(word_loss), 1)}

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True) -> list[dict]:
        """'tokens' records: tags per word and entities by word index; 'text' records: entities by
        character offsets (`predict_texts`)."""
        examples = self.to_examples(records, where, lines)
        if not examples:
            return []
        if isinstance(examples[0], str):
            return self.predict_texts(model, tokenizer, examples, batch_size)
        features = self.encode(tokenizer, examples, None, path=where)
        merger = self._windows(model, features, batch_size, tokenizer.pad_token_id)
        results = []
        for k, sentence in enumerate(examples):
            tokens = sentence.tokens
            tag_ids, scores = unzip(merger.words(k, len(tokens)))
            tags = [model.config.id2label[t] for t in tag_ids]
            entities = [{"entity_group": kind, "score": mean(scores[s:e]), "word": _join(tokens[s:e]),
                         "start": s, "end": e} for kind, s, e in entity_spans(tags)]
            results.append({"tokens": tokens, "tags": tags, "entities": entities})
        return results

    def predict_texts(self, model, tokenizer, texts: list[str], batch_size: int = 32) -> list[dict]:
        """Entities in raw texts: the tokenizer's words (its pre-tokenizer; each CJK character is a
        word) are tagged at their first piece, long texts in windows as in training; entity spans are
        character offsets into the text."""
        encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        features, chars = [], []  # chars[i]: word -> [first character, end character] in texts[i]
        for i, enc in enumerate(encodings):
            spans: dict[int, list[int]] = {}
            for w, (start, end) in zip(enc.word_ids, enc.offsets):
                spans.setdefault(w, [start, end])[1] = end
            chars.append(spans)
            for f in window_features(tokenizer, enc.ids, enc.word_ids, self.settings.max_length, self.settings.stride):
                features.append({**f, "_sentence": i})
        merger = self._windows(model, features, batch_size, tokenizer.pad_token_id)
        results = []
        for i, text in enumerate(texts):
            order = sorted(chars[i])
            values = merger.words(i, order[-1] + 1 if order else 0)
            tag_ids, scores = unzip([values[w] for w in order])
            entities = []
            for kind, s, e in entity_spans([model.config.id2label[t] for t in tag_ids]):
                start, end = chars[i][order[s]][0], chars[i][order[e - 1]][1]
                entities.append({"entity_group": kind, "score": mean(scores[s:e]), "word": text[start:end],
                                 "start": start, "end": end})
            results.append({"text": text, "entities": entities})
        return results

    @staticmethod
    def _windows(model, features: list[dict], batch_size: int, pad: int) -> WindowMerger:
        """(tag id, probability) per word, merged over each sentence's windows."""
        merger = WindowMerger()
        for idx, _, out in forward_batches(model, features, batch_size, pad):
            best, ids = out.logits.float().softmax(-1).max(-1)  # (B, T) each
            for row, i in enumerate(idx):
                merger.add(features[i], list(zip(ids[row].tolist(), best[row].tolist())))
        return merger

    def to_examples(self, records, where: str, lines=None) -> list:
        """Sentences ('tokens' records) or texts ('text' records or strings), not a mix."""
        out = []
        for n, r in each_record(records, where, lines, text_field="text"):
            place = f"{where}:{n}"
            if only_one(r, ("text", "tokens"), place) == "tokens":
                out.append(Sentence(field(r, "tokens", place, WORDS), None, n))
            else:
                out.append(field(r, "text", place, TEXT, name="'text' (or 'tokens', a list of words)"))
        if out and len({isinstance(x, str) for x in out}) > 1:
            raise DataError(f"{where}: give either 'text' or 'tokens' in every record, not a mix")
        return out

    def read_prediction_input(self, path: str) -> tuple[list, list[int]]:
        """CoNLL files (.conll/.txt/.bio/.iob; tags optional) as 'tokens' records; otherwise JSONL (or '-')."""
        if path != "-" and Path(path).suffix.lower() in (".conll", ".txt", ".bio", ".iob"):
            lines = read_lines(path)  # once: a pipe cannot be read twice
            sentences = read_conll(path, require_tags=_has_tags(lines), text=lines)
            return [{"tokens": s.tokens} for s in sentences], [s.line for s in sentences]
        return super().read_prediction_input(path)

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, aggregation_strategy: str | None = None,
                 ignore_labels=("O",)):
        """Hugging Face's token-classification output for texts: one dict per word piece ("none", HF's default),
        or entities grouped by "simple", "first", "average" or "max" (`hf_entities`), those tagged as in
        ``ignore_labels`` left out. A text longer than max_length is read in windows, each piece from the window
        where it is most central. (`predict`, plmkit predict's and the server's, tags words instead.)"""
        strategy = "none" if aggregation_strategy is None else str(aggregation_strategy).lower()
        if strategy not in AGGREGATIONS:
            raise ConfigError(f"{name} pipeline: aggregation_strategy={aggregation_strategy!r}: Hugging Face's are "
                              f"{', '.join(AGGREGATIONS)}")
        records, single = pipeline_records(inputs, name, text_field="text")
        texts = self.to_examples(records, "inputs")
        if texts and not isinstance(texts[0], str):
            raise DataError(f"{name} pipeline: give texts; words ('tokens' records) are tagged by plmkit predict")
        encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        features = [{**f, "_sentence": i} for i, enc in enumerate(encodings) for f in window_features(
            tokenizer, enc.ids, list(range(len(enc.ids))), self.settings.max_length, self.settings.stride)]
        merger = WindowMerger()  # each piece's class probabilities
        for idx, _, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
            probs = out.logits.float().softmax(-1)
            for row, i in enumerate(idx):
                merger.add(features[i], probs[row])
        ignored = set(ignore_labels or ())
        out = [[e for e in hf_entities(tokenizer, text, enc, merger.words(i, len(enc.ids)), model.config.id2label,
                                       strategy) if e.get("entity", e.get("entity_group")) not in ignored]
               for i, (text, enc) in enumerate(zip(texts, encodings))]
        return out[0] if single else out


AGGREGATIONS = ("none", "simple", "first", "average", "max")


def hf_entities(tokenizer, text: str, encoding, probs: list, id2label: dict[int, str], strategy: str) -> list[dict]:
    """Hugging Face's TokenClassificationPipeline output for one text: `encoding` its word pieces (no special
    tokens), `probs` their class probabilities (C,); `strategy` one of AGGREGATIONS."""
    backend = tokenizer.backend_tokenizer
    prefix = getattr(backend.model, "continuing_subword_prefix", None)
    pieces = []
    for p, (token, piece_id, (start, end), scores) in enumerate(zip(encoding.tokens, encoding.ids, encoding.offsets,
                                                                     probs)):
        ref = text[start:end]
        subword = len(token) != len(ref) if prefix else start > 0 and " " not in text[start - 1:start + 1]
        if piece_id == tokenizer.unk_token_id:
            token, subword = ref, False
        pieces.append({"word": token, "scores": scores, "start": start, "end": end, "index": p + 1,
                       "subword": subword})

    def tokens_to_string(tokens: list[str]) -> str:
        return backend.decoder.decode(tokens) if backend.decoder is not None else " ".join(tokens)

    def tagged(scores, **fields) -> dict:
        best = int(scores.argmax())
        return {"entity": id2label[best], "score": float(scores[best]), **fields}

    if strategy in ("none", "simple"):
        entities = [tagged(q["scores"], index=q["index"], word=q["word"], start=q["start"], end=q["end"])
                    for q in pieces]
        if strategy == "none":
            return entities
    else:
        words: list[list[dict]] = []
        for q in pieces:
            if q["subword"] and words:
                words[-1].append(q)
            else:
                words.append([q])
        pick = {"first": lambda w: w[0]["scores"], "max": lambda w: max((q["scores"] for q in w), key=torch.max),
                "average": lambda w: torch.stack([q["scores"] for q in w]).mean(0)}[strategy]
        entities = [tagged(pick(w), word=tokens_to_string([q["word"] for q in w]), start=w[0]["start"],
                           end=w[-1]["end"]) for w in words]
    groups: list[list[dict]] = []  # runs of one type, each started by a B- tag or a change of type
    for e in entities:
        bi, kind = _bi_tag(e["entity"])
        if groups and bi != "B" and kind == _bi_tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(e)
        else:
            groups.append([e])
    return [{"entity_group": _bi_tag(g[0]["entity"])[1], "score": mean([e["score"] for e in g]),
             "word": tokens_to_string([e["word"] for e in g]), "start": g[0]["start"], "end": g[-1]["end"]}
            for g in groups]


def _bi_tag(label: str) -> tuple[str, str]:
    """Hugging Face's reading of a label: ("B" or "I", its type); a label without B-/I- is an I- of itself."""
    return (label[0], label[2:]) if label[:2] in ("B-", "I-") else ("I", label)


def _join(tokens: list[str]) -> str:
    """Words of an entity: joined without spaces when they are single CJK characters."""
    if all(len(t) == 1 and "\u4e00" <= t <= "\u9fff" for t in tokens):
        return "".join(tokens)
    return " ".join(tokens)


def _has_tags(lines: list[str]) -> bool:
    first = next((line for line in lines if line.strip()), "")
    return len(first.split("\t") if "\t" in first else first.split()) >= 2
