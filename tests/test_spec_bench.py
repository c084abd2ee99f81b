"""bench.e2e.spec_bench reads Spec-Bench's question file: first turns per task group, bad files refused."""

import json

import pytest

from bench.e2e.spec_bench import GROUPS, group_of, read_questions


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_first_turns_by_group_with_mt_bench_categories_in_turn(tmp_path):
    records = [{"question_id": i, "category": c, "turns": [f"{c} {i}", "second turn"]}
               for i, c in enumerate(["writing", "writing", "coding", "translation", "rag", "translation", "roleplay"])]
    groups = read_questions(write(tmp_path / "q.jsonl", records), per_group=3)
    assert groups == {"mt_bench": ["writing 0", "roleplay 6", "coding 2"], "translation": ["translation 3", "translation 5"], "rag": ["rag 4"]}
    assert read_questions(tmp_path / "q.jsonl", per_group=1)["mt_bench"] == ["writing 0"]


def test_every_group_has_its_categories():
    assert group_of("stem") == "mt_bench" and group_of("math_reasoning") == "math_reasoning"
    assert len(GROUPS) == 6 and sum(len(c) for c in GROUPS.values()) == 13
    with pytest.raises(ValueError, match="unknown Spec-Bench category 'poetry'"):
        group_of("poetry")


@pytest.mark.parametrize("line, message", [("not json", "not a Spec-Bench question"), ('{"category": "qa"}', "not a Spec-Bench question"),
                                           ('{"category": "qa", "turns": []}', "no first turn")])
def test_bad_question_files_are_refused(tmp_path, line, message):
    (tmp_path / "q.jsonl").write_text(line + "\n")
    with pytest.raises(SystemExit, match=message):
        read_questions(tmp_path / "q.jsonl", 3)
    with pytest.raises(SystemExit, match="no such file"):
        read_questions(tmp_path / "missing.jsonl", 3)
