"""The append-only JSONL log with an identity header (search trace, synthesize progress, finetune run file)."""
import json
import logging

import pytest
from torn import Crash, crash_while_writing, whole_lines

from mtprune import jsonlog
from mtprune.errors import ConfigError, DataError
from mtprune.jsonlog import IdentityMismatch, JsonLog, identity_differences

KIND = "test log"
IDENTITY = {"model": "m", "settings": {"prompt": "chat", "shots": 3}, "pairs": [["en-de", "abc"]]}


def test_records_come_back_in_order_with_their_line_numbers(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    log = JsonLog.create(path, KIND, IDENTITY)
    log.append({"n": 1})
    log.append({"text": "zwei\u2028lines"})  # a line separator inside a string is not a line end
    again = JsonLog.resume(path, KIND, IDENTITY, advice="")
    assert again.records == [(2, {"n": 1}), (3, {"text": "zwei\u2028lines"})]
    header = whole_lines(path)[0]
    assert header["type"] == "header" and header["kind"] == KIND and header["identity"] == IDENTITY


def test_every_append_is_fsynced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(jsonlog.os, "fsync", lambda fd: synced.append(fd))
    log = JsonLog.create(tmp_path / "log.jsonl", KIND, IDENTITY)
    log.append({"n": 1})
    log.append({"n": 2})
    assert len(synced) == 3  # the header and each record


def test_torn_last_line_is_cut_off_before_the_next_append_and_resumes_twice(tmp_path, monkeypatch, caplog):
    path = tmp_path / "log.jsonl"
    log = JsonLog.create(path, KIND, IDENTITY)
    log.append({"n": 1})
    crash_while_writing(monkeypatch, after=0)
    with pytest.raises(Crash):
        log.append({"n": 2})
    monkeypatch.undo()
    assert not path.read_text().endswith("\n")

    with caplog.at_level(logging.INFO, logger="mtprune.jsonlog"):
        first = JsonLog.resume(path, KIND, IDENTITY, advice="")
        assert first.records == [(2, {"n": 1})]
        assert f"{path}:3: an incomplete last line" in caplog.text
        first.append({"n": 2})
    assert "cut off the incomplete last line" in caplog.text
    second = JsonLog.resume(path, KIND, IDENTITY, advice="")  # the case that failed: line 3 was {"n": {"n": 2}
    second.append({"n": 3})
    assert [r for _, r in JsonLog.resume(path, KIND, IDENTITY, advice="").records] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert len(whole_lines(path)) == 4


def test_a_crash_while_creating_leaves_no_log(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"type": "header", "ide')
    assert JsonLog.read(path, KIND) is None
    log = JsonLog.resume(path, KIND, IDENTITY, advice="")
    log.append({"n": 1})
    assert [line.get("n") for line in whole_lines(path)] == [None, 1]


def test_another_identity_is_named_field_by_field_with_advice(tmp_path):
    path = tmp_path / "log.jsonl"
    JsonLog.create(path, KIND, IDENTITY).append({"n": 1})
    now = {**IDENTITY, "model": "other", "settings": {"prompt": "fewshot", "shots": 3}}
    with pytest.raises(IdentityMismatch) as caught:
        JsonLog.resume(path, KIND, now, advice="pass --force to start over, or write to another folder")
    message = str(caught.value)
    assert f"{path}: this {KIND} was made with other settings:" in message
    assert "  model: 'm' in the log, 'other' now" in message
    assert "  settings.prompt: 'chat' in the log, 'fewshot' now" in message and "shots" not in message
    assert message.endswith("pass --force to start over, or write to another folder")
    assert isinstance(caught.value, ConfigError) and set(caught.value.differences) == {"model", "settings.prompt"}
    assert json.loads(path.read_text().split("\n")[1]) == {"n": 1}  # refused: the log is untouched


def test_replace_if_changed_starts_a_new_log(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    JsonLog.create(path, KIND, IDENTITY).append({"n": 1})
    with caplog.at_level(logging.WARNING, logger="mtprune.jsonlog"):
        log = JsonLog.resume(path, KIND, {**IDENTITY, "model": "other"}, advice="", replace_if_changed=True)
    assert log.records == [] and "model differ" in caplog.text
    assert whole_lines(path)[0]["identity"]["model"] == "other" and len(whole_lines(path)) == 1
    same = JsonLog.resume(path, KIND, {**IDENTITY, "model": "other"}, advice="", replace_if_changed=True)
    assert same.identity["model"] == "other"


def test_identity_differences_treat_tuples_as_the_lists_they_read_back_as():
    assert identity_differences({"a": [1, 2], "b": None}, {"a": (1, 2), "b": None}) == {}
    assert identity_differences({"a": 1}, {"b": 1}) == {"a": (1, None), "b": (None, 1)}


def test_a_damaged_line_in_the_middle_says_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    JsonLog.create(path, KIND, IDENTITY).append({"n": 1})
    with open(path, "a") as fh:
        fh.write("not json\n" + '{"n": 3}\n')
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON"):
        JsonLog.read(path, KIND)
    path.write_text(json.dumps({"type": "header", "identity": {}}) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=rf"{path}:2: not a record"):
        JsonLog.read(path, KIND)


def test_a_file_that_is_no_such_log_is_refused(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"n": 1}\n')
    with pytest.raises(DataError, match=rf"{path}:1: not an mtprune {KIND} \(no header line\)"):
        JsonLog.read(path, KIND)
    JsonLog.create(path, "another log", IDENTITY)
    with pytest.raises(DataError, match=f"the header says 'another log', not '{KIND}'"):
        JsonLog.read(path, KIND)


def test_logs_of_earlier_versions_are_read(tmp_path, caplog):
    """No ``kind`` in the header; a torn line that the next record was appended onto."""
    path = tmp_path / "trace.jsonl"
    header = {"type": "header", "identity": IDENTITY, "created": "2026-11-28T10:00:00+0000"}
    path.write_text(json.dumps(header) + "\n" + '{"key": "a", "value": 1}\n' + '{"key": "b", "value": {"sc'
                    + '{"key": "c", "value": {"score": 2}}\n' + '{"key": "d", "value": 3}\n')
    with caplog.at_level(logging.WARNING, logger="mtprune.jsonlog"):
        log = JsonLog.resume(path, KIND, IDENTITY, advice="")
    assert [r["key"] for _, r in log.records] == ["a", "c", "d"]  # b was lost when it was written
    assert f"{path}:3: a record cut short by an earlier crash" in caplog.text
