"""Reading NER files: JSONL/JSON (string or id tags), CoNLL columns, Parquet; bad rows counted by file:line."""

import json

import pytest

from tempering.config.schema import NerConfig, PrepConfig
from tempering.data.ner.records import ReadReport, read_sentences
from tempering.errors import UserError

LENIENT = PrepConfig(max_bad_line_fraction=0.5)


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_jsonl_bad_rows_are_skipped_counted_and_named(tmp_path, capsys):
    good = {"tokens": ["Ada", "Lovelace", "wrote"], "ner_tags": ["B-PER", "I-PER", "O"]}
    file = write_jsonl(tmp_path / "data.jsonl", [
        good,
        {"tokens": ["a", "b"], "ner_tags": ["O"]},  # 2: length mismatch
        {"tokens": ["a"], "ner_tags": ["X-PER"]},  # 3: malformed tag
        "{not json",  # 4
        {"tokens": ["a", " "], "ner_tags": ["O", "O"]},  # 5: empty word
        {"text": "no tokens"},  # 6
        good, good, good, good, good, good])
    report = ReadReport()
    sentences = read_sentences([str(file)], NerConfig(), LENIENT, report)
    assert len(sentences) == 7 and report.num_bad_rows == 5
    assert sentences[0].words == ("Ada", "Lovelace", "wrote") and sentences[0].where == f"{file}:1"
    err = capsys.readouterr().err
    assert f"{file}:2: 2 tokens but 1 tags; line skipped" in err
    assert f"{file}:3: tag 'X-PER' is not O, B-TYPE or I-TYPE" in err


def test_too_many_bad_rows_fail_the_file_under_preps_policy(tmp_path):
    file = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["a"], "ner_tags": ["O", "O"]}] * 3
                       + [{"tokens": ["a"], "ner_tags": ["O"]}])
    with pytest.raises(UserError, match=r"bad.jsonl:1: 3 of 4 lines are malformed .*prep.max_bad_line_fraction"):
        read_sentences([str(file)], NerConfig(), PrepConfig())


def test_id_tags_need_a_label_list_from_the_file_or_the_config(tmp_path):
    labels = ["O", "B-PER", "I-PER"]
    file = write_jsonl(tmp_path / "ids.jsonl", [{"labels": labels}, {"tokens": ["Ada", "L"], "ner_tags": [1, 2]},
                                                {"tokens": ["x"], "ner_tags": [7]}, {"tokens": ["y"], "ner_tags": [0]}])
    report = ReadReport()
    sentences = read_sentences([str(file)], NerConfig(), LENIENT, report)
    assert [s.tags for s in sentences] == [("B-PER", "I-PER"), ("O",)] and report.num_bad_rows == 1
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"tokens": ["Ada"], "ner_tags": [1]}])
    assert read_sentences([str(bare)], NerConfig(labels=labels), PrepConfig())[0].tags == ("B-PER",)
    document = tmp_path / "doc.json"
    document.write_text(json.dumps({"labels": labels, "rows": [{"tokens": ["Ada"], "ner_tags": [1]}]}))
    assert read_sentences([str(document)], NerConfig(), PrepConfig())[0].tags == ("B-PER",)


def test_a_closed_label_set_makes_other_tags_bad_rows(tmp_path):
    file = write_jsonl(tmp_path / "d.jsonl", [{"tokens": ["Ada"], "ner_tags": ["B-PER"]},
                                              {"tokens": ["Rome"], "ner_tags": ["B-LOC"]}])
    report = ReadReport()
    sentences = read_sentences([str(file)], NerConfig(labels=["O", "B-PER", "I-PER"]), LENIENT, report)
    assert len(sentences) == 1 and report.num_bad_rows == 1


def test_conll_columns_docstart_blank_lines_and_a_row_without_tag(tmp_path):
    file = tmp_path / "train.conll"
    file.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\nbroken\nline O\n\nJapan NNP B-NP B-LOC\n")
    report = ReadReport()
    sentences = read_sentences([str(file)], NerConfig(), LENIENT, report)
    assert [s.words for s in sentences] == [("EU", "rejects", "German"), ("Peter", "Blackburn"), ("Japan",)]
    assert sentences[1].tags == ("B-PER", "I-PER") and sentences[1].where == f"{file}:7"
    assert report.num_bad_rows == 1


def test_iob2_violations_are_repaired_or_refused(tmp_path):
    file = write_jsonl(tmp_path / "iob1.jsonl", [{"tokens": ["the", "EU", "Commission"], "ner_tags": ["O", "I-ORG",
                                                                                                     "I-ORG"]}])
    report = ReadReport()
    assert read_sentences([str(file)], NerConfig(), PrepConfig(), report)[0].tags == ("O", "B-ORG", "I-ORG")
    assert report.num_repaired == 1
    with pytest.raises(UserError, match=r"iob1.jsonl:1: I-ORG at token 1 does not continue an entity .*scheme_errors"):
        read_sentences([str(file)], NerConfig(scheme_errors="error"), PrepConfig())


def test_parquet_rows(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow
    import pyarrow.parquet

    table = pyarrow.table({"tokens": [["Ada", "wrote"], ["x"]], "ner_tags": [["B-PER", "O"], ["O", "O"]]})
    pyarrow.parquet.write_table(table, tmp_path / "d.parquet")
    report = ReadReport()
    sentences = read_sentences([str(tmp_path / "d.parquet")], NerConfig(), LENIENT, report)
    assert [s.tags for s in sentences] == [("B-PER", "O")] and report.num_bad_rows == 1


def test_unknown_extension_and_empty_inputs_are_user_errors(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(UserError, match="not an NER file"):
        read_sentences([str(tmp_path / "notes.md")], NerConfig(), PrepConfig())
    with pytest.raises(UserError, match="no such file"):
        read_sentences([str(tmp_path / "missing.jsonl")], NerConfig(), PrepConfig())
