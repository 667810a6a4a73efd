"""The built-in sample corpus: deterministic, filtered, split without overlap, refuses foreign dirs."""

import ast
import json
import shutil
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from tempering.data.sample_corpus import (
    default_stdlib_dir,
    split_documents,
    write_sample_corpus,
)
from tempering.errors import UserError

STDLIB = default_stdlib_dir()
KEPT = ["bisect.py", "colorsys.py", "json/__init__.py", "json/decoder.py", "this.py"]
FILES = [f"{domain}/{split}.jsonl" for domain in ("prose", "code") for split in ("train", "val")]
CHAT_FILES = [f"chat/{name}_{split}.jsonl" for name in ("chat", "preference") for split in ("train", "val")]


@pytest.fixture
def tiny_stdlib(tmp_path: Path) -> Path:
    """A few real stdlib files, plus one of each kind the corpus must leave out."""
    root = tmp_path / "stdlib"
    for relative in KEPT:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(STDLIB / relative, root / relative)
    for excluded in ["test/test_bisect.py", "json/tests/test_x.py", "idlelib/idle_test/t.py",
                     "site-packages/pkg/m.py"]:
        (root / excluded).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(STDLIB / "bisect.py", root / excluded)
    (root / "encodings").mkdir()
    shutil.copy(STDLIB / "encodings/cp1252.py", root / "encodings/cp1252.py")
    (root / "_sysconfigdata__linux.py").write_text("build_time_vars = {}\n")
    (root / "latin1.py").write_bytes(b"# caf\xe9\nx = 1\n")
    (root / "huge.py").write_text("x = 1\n" * 40_000)  # 240 KB
    (root / "notes.txt").write_text("not python")
    return root


def read_split(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_corpus(output: Path) -> dict[str, list[dict]]:
    return {name: read_split(output / name) for name in FILES}


def test_code_domain_holds_exactly_the_eligible_files(tiny_stdlib, tmp_path):
    write_sample_corpus(tmp_path / "out", stdlib_dir=tiny_stdlib)
    corpus = read_corpus(tmp_path / "out")
    code = corpus["code/train.jsonl"] + corpus["code/val.jsonl"]
    assert sorted(doc["id"] for doc in code) == [f"stdlib-source/{name}" for name in KEPT]
    bisect_doc = next(doc for doc in code if doc["id"] == "stdlib-source/bisect.py")
    assert bisect_doc == {"id": "stdlib-source/bisect.py", "source": "stdlib-source",
                          "text": (STDLIB / "bisect.py").read_text(encoding="utf-8")}


def test_prose_is_topics_plus_docstrings_of_modules_with_enough_of_them(tiny_stdlib, tmp_path):
    write_sample_corpus(tmp_path / "out", stdlib_dir=tiny_stdlib)
    corpus = read_corpus(tmp_path / "out")
    prose = {doc["id"]: doc for doc in corpus["prose/train.jsonl"] + corpus["prose/val.jsonl"]}
    topic_ids = {f"pydoc-topic/{name}" for name in topics}
    # this.py has no docstrings; the rest have >= 200 chars of them.
    docstring_ids = {f"stdlib-docstrings/{name}" for name in KEPT if name != "this.py"}
    assert set(prose) == topic_ids | docstring_ids
    assert prose["pydoc-topic/assert"]["text"] == topics["assert"]
    colorsys_module_doc = ast.get_docstring(ast.parse((STDLIB / "colorsys.py").read_text()))
    assert prose["stdlib-docstrings/colorsys.py"]["text"] == colorsys_module_doc
    json_doc = prose["stdlib-docstrings/json/__init__.py"]["text"]
    assert json_doc.startswith("JSON (JavaScript Object Notation)")
    assert "Serialize ``obj`` as a JSON formatted stream" in json_doc  # a function docstring, later on


def test_writes_are_byte_identical_and_rewriting_own_output_is_allowed(tiny_stdlib, tmp_path):
    first = write_sample_corpus(tmp_path / "a", stdlib_dir=tiny_stdlib)
    second = write_sample_corpus(tmp_path / "b", stdlib_dir=tiny_stdlib)
    again = write_sample_corpus(tmp_path / "a", stdlib_dir=tiny_stdlib)
    assert first == second == again
    for name in FILES + CHAT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*")) == sorted(
        ["chat", "code", "prose", *FILES, *CHAT_FILES]
    )


def test_splits_are_non_empty_disjoint_and_match_the_summary(tiny_stdlib, tmp_path):
    summary = write_sample_corpus(tmp_path / "out", stdlib_dir=tiny_stdlib)
    corpus = read_corpus(tmp_path / "out")
    all_ids = [doc["id"] for docs in corpus.values() for doc in docs]
    assert len(all_ids) == len(set(all_ids))
    for domain in ("prose", "code"):
        for split in ("train", "val"):
            docs = corpus[f"{domain}/{split}.jsonl"]
            assert docs, f"{domain}/{split} is empty"
            assert summary[domain][split] == {
                "documents": len(docs),
                "bytes": sum(len(doc["text"].encode()) for doc in docs),
                "file_bytes": (tmp_path / "out" / f"{domain}/{split}.jsonl").stat().st_size,
            }


def test_code_cap_takes_files_in_sorted_order(tiny_stdlib, tmp_path):
    cap = (tiny_stdlib / "bisect.py").stat().st_size + 1
    write_sample_corpus(tmp_path / "out", stdlib_dir=tiny_stdlib, max_code_bytes=cap)
    corpus = read_corpus(tmp_path / "out")
    code = corpus["code/train.jsonl"] + corpus["code/val.jsonl"]
    # A single document goes to train; val stays empty rather than stealing it.
    assert [doc["id"] for doc in code] == ["stdlib-source/bisect.py"]


def test_refuses_a_directory_holding_other_files(tiny_stdlib, tmp_path):
    output = tmp_path / "out"
    (output / "prose").mkdir(parents=True)
    (output / "prose" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"out.*not a sample corpus.*prose/mine\.txt"):
        write_sample_corpus(output, stdlib_dir=tiny_stdlib)
    assert sorted(p.name for p in output.rglob("*")) == ["mine.txt", "prose"]


def test_a_python_without_sources_is_a_user_error(tmp_path):
    (tmp_path / "stdlib" / "test").mkdir(parents=True)
    shutil.copy(STDLIB / "bisect.py", tmp_path / "stdlib" / "test" / "bisect.py")
    with pytest.raises(UserError, match=r"no readable standard-library \.py sources under .*stdlib"):
        write_sample_corpus(tmp_path / "out", stdlib_dir=tmp_path / "stdlib")
    assert not (tmp_path / "out").exists()


def test_rejects_val_fraction_outside_zero_one(tmp_path):
    with pytest.raises(UserError, match="val_fraction"):
        write_sample_corpus(tmp_path / "out", val_fraction=1.0)
    assert not (tmp_path / "out").exists()


def test_split_is_a_stable_hash_with_non_empty_fallbacks():
    documents = [{"id": f"doc-{index}", "text": ""} for index in range(2000)]
    train, val = split_documents(documents, 0.05)
    assert 60 <= len(val) <= 140 and len(train) + len(val) == 2000
    assert split_documents(list(reversed(documents)), 0.05)[1] == list(reversed(val))
    train, val = split_documents(documents[:2], 0.01)
    assert len(train) == 1 and len(val) == 1


@pytest.mark.slow
def test_full_install_corpus_has_both_domains_at_the_planned_sizes(tmp_path):
    summary = write_sample_corpus(tmp_path / "out")
    prose_bytes = sum(summary["prose"][split]["bytes"] for split in ("train", "val"))
    code_bytes = sum(summary["code"][split]["bytes"] for split in ("train", "val"))
    assert prose_bytes > 1_000_000 and 1_000_000 < code_bytes <= 10_000_000
    ids = [json.loads(line)["id"] for name in FILES for line in (tmp_path / "out" / name).open()]
    assert len(ids) == len(set(ids)) == sum(
        summary[domain][split]["documents"] for domain in ("prose", "code") for split in ("train", "val")
    )
    assert not any("/test/" in doc_id or "/tests/" in doc_id or "site-packages" in doc_id for doc_id in ids)
