"""momctl policy check | eval | test: the offline policy tools.

Run in-process through ``main(argv)`` (exit code returned, output captured
with capsys), plus one run of ``python -m momservice.cli.momctl``.
Every policy used here is written to tmp_path by the test itself.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import momservice
from momservice.cli import exitcodes
from momservice.cli.momctl import main

PROJECT_ROOT = Path(momservice.__file__).resolve().parents[1]


def momctl(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def json_lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]


def test_exit_codes_are_distinct():
    assert (exitcodes.OK, exitcodes.POLICY_ERROR, exitcodes.INVALID_ARGUMENT) == (0, 1, 2)


# -- check --------------------------------------------------------------------

def test_check_ok_set(tmp_path, capsys):
    a = write(tmp_path / "00-defines.policy", "(defvar low 0.15)\n(def half (x) (/ x 2))\n")
    b = write(tmp_path / "10-balloon.policy",
              "# comment\n(with Guests g (g.Control \"balloon_target\" (half 4)))\n")
    code, out, err = momctl(capsys, "policy", "check", str(a), str(b))
    assert code == exitcodes.OK
    assert err == ""
    assert "00-defines" in out and "10-balloon" in out


def test_check_error_reports_file_and_line(tmp_path, capsys):
    good = write(tmp_path / "good.policy", "(defvar x 1)\n")
    bad = write(tmp_path / "bad.policy", "(defvar x 1)\n\n(if 1 2)\n(defvar y 2)\n")
    code, out, err = momctl(capsys, "policy", "check", str(good), str(bad))
    assert code == exitcodes.POLICY_ERROR
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{bad}:3: ")
    assert "if" in lines[0]


def test_check_warns_of_a_call_that_fails_only_when_evaluated(tmp_path, capsys):
    # MoM loads a policy with ("text") in a branch never taken: so do we,
    # and check says where it is without failing the set.
    lazy = write(tmp_path / "lazy.policy", '(defvar x 1)\n(if 0\n    ("text")\n    x)\n')
    code, out, err = momctl(capsys, "policy", "check", str(lazy))
    assert code == exitcodes.OK
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{lazy}:3: ")
    assert "warning" in lines[0] and "symbol" in lines[0]
    assert "1 policies OK" in out


def test_check_syntax_error_line(tmp_path, capsys):
    bad = write(tmp_path / "syntax.policy", "1\n2\n3\n(+ 1 017)\n")
    code, _, err = momctl(capsys, "policy", "check", str(bad))
    assert code == exitcodes.POLICY_ERROR
    assert err.splitlines()[0].startswith(f"{bad}:4: ")


def test_check_reports_every_bad_file(tmp_path, capsys):
    bad1 = write(tmp_path / "a.policy", "(+ 1)\n")
    bad2 = write(tmp_path / "b.policy", "\n\n\n\n(let x 1)\n")
    ok = write(tmp_path / "c.policy", "1\n")
    code, _, err = momctl(capsys, "policy", "check", str(bad1), str(ok), str(bad2))
    assert code == exitcodes.POLICY_ERROR
    lines = err.splitlines()
    assert len(lines) == 2
    assert any(line.startswith(f"{bad1}:1: ") for line in lines)
    assert any(line.startswith(f"{bad2}:5: ") for line in lines)


def test_check_directory_reads_only_policy_files(tmp_path, capsys):
    d = tmp_path / "policies"
    write(d / "01-first.policy", "(defvar x 1)\n")
    write(d / "02-second.policy", "(defvar y 2)\n")
    # Ignored: hidden, other suffixes, backup copies; all would fail.
    write(d / ".hidden.policy", "(((\n")
    write(d / "notes.txt", "(((\n")
    write(d / "03-old.policy.bak", "(((\n")
    write(d / "README", "not a policy )\n")
    code, out, err = momctl(capsys, "policy", "check", str(d))
    assert code == exitcodes.OK, err
    assert "01-first" in out and "02-second" in out
    assert "hidden" not in out and "notes" not in out and "old" not in out


def test_check_directory_error_names_the_file(tmp_path, capsys):
    d = tmp_path / "policies"
    write(d / "01-first.policy", "(defvar x 1)\n")
    write(d / "02-second.policy", "(defvar y 2)\n(defvar z)\n")
    code, _, err = momctl(capsys, "policy", "check", str(d))
    assert code == exitcodes.POLICY_ERROR
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{d / '02-second.policy'}:2: ")


def test_check_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.policy"
    code, out, err = momctl(capsys, "policy", "check", str(missing))
    assert code == exitcodes.INVALID_ARGUMENT
    assert "nope.policy" in err
    assert out == ""


# -- eval ----------------------------------------------------------------------

EVAL_TEXT = """\
1
"text"
(< 1 2)
(> 1 2)
nil
(with Guests g 1)
2.5
(def f (x) (* x 2))
(f 21)
(/ 11 2)
"""
EVAL_VALUES = [1, "text", True, False, None, [], 2.5, "f", 42, 5.5]


def test_eval_prints_one_json_value_per_line(tmp_path, capsys):
    path = write(tmp_path / "e.policy", EVAL_TEXT)
    code, out, err = momctl(capsys, "policy", "eval", str(path))
    assert code == exitcodes.OK, err
    assert json_lines(out) == EVAL_VALUES
    lines = out.splitlines()
    assert lines[2:5] == ["true", "false", "null"]


def test_eval_list_values(tmp_path, capsys):
    # A list value: the results of a `with` over a list built by `+`.
    path = write(tmp_path / "l.policy",
                 "(defvar l (+ (with Guests g 1) (with Guests g 2)))\n"
                 "(with Guests g 3)\n")
    code, out, _ = momctl(capsys, "policy", "eval", str(path))
    assert code == exitcodes.OK
    assert json_lines(out) == [[], []]
    assert out.splitlines() == ["[]", "[]"]


@pytest.mark.parametrize("argv", [["-"], []], ids=["dash", "default"])
def test_eval_reads_stdin(argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(EVAL_TEXT))
    code, out, err = momctl(capsys, "policy", "eval", *argv)
    assert code == exitcodes.OK, err
    assert json_lines(out) == EVAL_VALUES


def test_eval_runtime_error_has_line_and_exit_1(tmp_path, capsys):
    path = write(tmp_path / "bad.policy", '1\n"two"\n(+ 1 "a")\n4\n')
    code, out, err = momctl(capsys, "policy", "eval", str(path))
    assert code == exitcodes.POLICY_ERROR
    assert err.splitlines()[-1].startswith(f"{path}:3: ")
    # Values before the error are still printed; nothing after it.
    assert json_lines(out) == [1, "two"]


def test_eval_syntax_error_has_line_and_exit_1(tmp_path, capsys):
    path = write(tmp_path / "bad.policy", "1\n2\n(+ 1\n")
    code, out, err = momctl(capsys, "policy", "eval", str(path))
    assert code == exitcodes.POLICY_ERROR
    assert err.splitlines()[-1].startswith(f"{path}:3: ")
    assert out == ""


def test_eval_stdin_error_names_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\n\nundefined_thing\n"))
    code, out, err = momctl(capsys, "policy", "eval", "-")
    assert code == exitcodes.POLICY_ERROR
    assert err.splitlines()[-1].startswith("<stdin>:3: ")
    assert "undefined_thing" in err
    assert json_lines(out) == [1]


def test_eval_missing_file(tmp_path, capsys):
    code, out, err = momctl(capsys, "policy", "eval", str(tmp_path / "absent.policy"))
    assert code == exitcodes.INVALID_ARGUMENT
    assert "absent.policy" in err
    assert out == ""


def test_eval_debug_goes_to_stderr(tmp_path, capsys):
    path = write(tmp_path / "d.policy", '(debug "hello" 7)\n')
    code, out, err = momctl(capsys, "policy", "eval", str(path))
    assert code == exitcodes.OK
    assert json_lines(out) == [7]
    assert "hello" in err


def test_eval_huge_integer_value_does_not_crash(tmp_path, capsys):
    # Once a traceback (json.dumps refuses ints over 4300 digits); number
    # literals are now bounded, so the text is refused with its line.
    path = write(tmp_path / "h.policy", "1\n0x" + "F" * 4000 + "\n")
    code, out, err = momctl(capsys, "policy", "eval", str(path))
    assert code == exitcodes.POLICY_ERROR
    assert f"{path}:2:" in err and "Traceback" not in err


# -- test ------------------------------------------------------------------------

BALLOON = """\
(Host.Control "ksm_run" (if (< Host.mem_free 100) 1 0))
(with Guests g (g.Control "balloon_target" (* g.balloon_cur 2)))
"""


def test_test_host_and_guest_controls_in_order(tmp_path, capsys):
    path = write(tmp_path / "p.policy", BALLOON)
    code, out, err = momctl(
        capsys, "policy", "test", "--host", '{"mem_free": 50}',
        "--guest", '{"name": "b", "balloon_cur": 20}',
        "--guest", '{"name": "a", "balloon_cur": 10}',
        "--guest", '{"name": "c", "balloon_cur": 5}', str(path))
    assert code == exitcodes.OK, err
    assert json.loads(out) == {
        "host": {"ksm_run": 1},
        "guests": [{"balloon_target": 40}, {"balloon_target": 20},
                   {"balloon_target": 10}],
    }


def test_test_without_guests(tmp_path, capsys):
    path = write(tmp_path / "p.policy", BALLOON)
    code, out, _ = momctl(capsys, "policy", "test", "--host", '{"mem_free": 500}', str(path))
    assert code == exitcodes.OK
    assert json.loads(out) == {"host": {"ksm_run": 0}, "guests": []}


def test_test_name_uuid_pid_are_properties(tmp_path, capsys):
    path = write(tmp_path / "p.policy", """\
(with Guests g {
  (g.Control "name" (g.Prop "name"))
  (g.Control "uuid" (g.Prop "uuid"))
  (g.Control "pid" (g.Prop "pid"))
  (g.Control "cur" g.balloon_cur)
})
""")
    code, out, err = momctl(
        capsys, "policy", "test",
        "--guest", '{"name": "vm1", "uuid": "u-1", "pid": 42, "balloon_cur": 7}',
        "--guest", '{"name": "vm2", "uuid": "u-2", "pid": 43, "balloon_cur": 8}',
        str(path))
    assert code == exitcodes.OK, err
    assert json.loads(out)["guests"] == [
        {"name": "vm1", "uuid": "u-1", "pid": 42, "cur": 7},
        {"name": "vm2", "uuid": "u-2", "pid": 43, "cur": 8},
    ]


def test_test_properties_are_not_statistics(tmp_path, capsys):
    path = write(tmp_path / "p.policy", '(with Guests g (g.Control "x" (g.Stat "name")))\n')
    code, out, _ = momctl(capsys, "policy", "test",
                          "--guest", '{"name": "vm1", "balloon_cur": 1}', str(path))
    assert code == exitcodes.OK
    (row,) = json.loads(out)["guests"]
    assert set(row) == {"error"}


def test_test_other_keys_are_present_statistics(tmp_path, capsys):
    # A key that is no standard field still counts as a statistic; a
    # standard field left out reads as nil; history holds the one sample.
    path = write(tmp_path / "p.policy", """\
(with Guests g {
  (g.Control "custom" (g.Stat "my_custom_stat"))
  (g.Control "avg" (g.StatAvg "my_custom_stat"))
  (g.Control "swap_known" (valid g.swap_in))
  (g.Control "dotted" g.my_custom_stat)
})
(Host.Control "host_custom" Host.site_stat)
""")
    code, out, err = momctl(capsys, "policy", "test", "--host", '{"site_stat": "abc"}',
                            "--guest", '{"name": "vm", "my_custom_stat": 12}', str(path))
    assert code == exitcodes.OK, err
    assert json.loads(out) == {
        "host": {"host_custom": "abc"},
        "guests": [{"custom": 12, "avg": 12.0, "swap_known": False, "dotted": 12}],
    }


def test_test_guest_error_is_per_guest(tmp_path, capsys):
    path = write(tmp_path / "p.policy", """\
(Host.Control "ran" 1)
(with Guests g
  (g.Control "balloon_target"
    (/ 100 g.balloon_cur)))
""")
    code, out, err = momctl(
        capsys, "policy", "test",
        "--guest", '{"name": "a", "balloon_cur": 4}',
        "--guest", '{"name": "b", "balloon_cur": 0}',
        "--guest", '{"name": "c", "balloon_cur": 5}', str(path))
    assert code == exitcodes.OK, err
    result = json.loads(out)
    assert result["host"] == {"ran": 1}
    a, b, c = result["guests"]
    assert a == {"balloon_target": 25.0}
    assert c == {"balloon_target": 20.0}
    assert set(b) == {"error"}
    assert b["error"].startswith(f"{path}:")
    assert "division by zero" in b["error"]


@pytest.mark.parametrize("param,expected", [
    ("x=1", 1), ("x=2.5", 2.5), ("x=true", True), ("x=false", False),
    ("x=null", None), ("x=[1,2]", [1, 2]), ('x="quoted"', "quoted"),
    ("x=abc", "abc"), ("x=", ""), ("x=a=b", "a=b"), ("x={bad", "{bad"),
])
def test_test_param_values(tmp_path, capsys, param, expected):
    path = write(tmp_path / "p.policy", '(defvar x "default")\n(Host.Control "x" x)\n')
    code, out, err = momctl(capsys, "policy", "test", "--param", param, str(path))
    assert code == exitcodes.OK, err
    assert json.loads(out)["host"] == {"x": expected}


def test_test_param_default_and_several(tmp_path, capsys):
    path = write(tmp_path / "p.policy", '(defvar x "default")\n(defvar y 0)\n'
                                        '(Host.Control "x" x)\n(Host.Control "y" y)\n')
    code, out, _ = momctl(capsys, "policy", "test", str(path))
    assert code == exitcodes.OK
    assert json.loads(out)["host"] == {"x": "default", "y": 0}
    code, out, _ = momctl(capsys, "policy", "test", "--param", "x=1",
                          "--param", "y=[true]", str(path))
    assert code == exitcodes.OK
    assert json.loads(out)["host"] == {"x": 1, "y": [True]}


@pytest.mark.parametrize("param", ["noequals", "=1", 'x={"a": 1}'])
def test_test_bad_param(tmp_path, capsys, param):
    path = write(tmp_path / "p.policy", "1\n")
    code, out, err = momctl(capsys, "policy", "test", "--param", param, str(path))
    assert code == exitcodes.INVALID_ARGUMENT
    assert out == "" and err


@pytest.mark.parametrize("option,value", [
    ("--host", "{not json"), ("--host", "[1, 2]"), ("--host", '"text"'),
    ("--guest", "{bad"), ("--guest", "3"),
])
def test_test_malformed_json_is_exit_2(tmp_path, capsys, option, value):
    path = write(tmp_path / "p.policy", BALLOON)
    code, out, err = momctl(capsys, "policy", "test", option, value, str(path))
    assert code == exitcodes.INVALID_ARGUMENT
    assert option in err
    assert out == ""


def test_test_host_from_file(tmp_path, capsys):
    path = write(tmp_path / "p.policy", BALLOON)
    host = write(tmp_path / "host.json", '{"mem_free": 10}')
    code, out, _ = momctl(capsys, "policy", "test", "--host", f"@{host}", str(path))
    assert code == exitcodes.OK
    assert json.loads(out)["host"] == {"ksm_run": 1}


def test_test_policy_error_outside_guest_items(tmp_path, capsys):
    path = write(tmp_path / "p.policy", """\
(with Guests g (g.Control "balloon_target" 1))
(Host.Control "ksm_run" 1)

(Host.Control "bad" (+ 1 "x"))
""")
    code, out, err = momctl(capsys, "policy", "test",
                            "--guest", '{"name": "a", "balloon_cur": 1}', str(path))
    assert code == exitcodes.POLICY_ERROR
    assert out == ""  # no control of a failed evaluation is shown
    assert err.splitlines()[-1].startswith(f"{path}:4: ")


def test_test_compile_error(tmp_path, capsys):
    path = write(tmp_path / "p.policy", "1\n(if)\n")
    code, out, err = momctl(capsys, "policy", "test", str(path))
    assert code == exitcodes.POLICY_ERROR
    assert out == ""
    assert err.splitlines()[-1].startswith(f"{path}:2: ")


def test_test_files_form_one_set_in_name_order(tmp_path, capsys):
    # Given in reverse order on the command line; evaluated in name order,
    # so the defaults of 00 are bound before 10 uses them.
    late = write(tmp_path / "10-use.policy", '(Host.Control "v" (+ base 1))\n')
    early = write(tmp_path / "00-defs.policy", "(defvar base 41)\n")
    code, out, err = momctl(capsys, "policy", "test", str(late), str(early))
    assert code == exitcodes.OK, err
    assert json.loads(out)["host"] == {"v": 42}


def test_test_missing_file(tmp_path, capsys):
    code, out, err = momctl(capsys, "policy", "test", str(tmp_path / "gone.policy"))
    assert code == exitcodes.INVALID_ARGUMENT
    assert "gone.policy" in err


def test_test_huge_integer_control_does_not_crash(tmp_path, capsys):
    path = write(tmp_path / "p.policy", '(Host.Control "x" 0x' + "F" * 4000 + ")\n")
    code, _, err = momctl(capsys, "policy", "test", str(path))
    assert code == exitcodes.POLICY_ERROR
    assert f"{path}:1:" in err and "Traceback" not in err


def test_test_largest_integer_control_is_printed(tmp_path, capsys):
    # The biggest integer arithmetic may build still prints as JSON.
    path = write(tmp_path / "p.policy", '(Host.Control "x" (- (<< 1 4095) 1))\n')
    code, out, _ = momctl(capsys, "policy", "test", str(path))
    assert code == exitcodes.OK
    assert json.loads(out)["host"]["x"] == (1 << 4095) - 1


# -- module entry -------------------------------------------------------------------

def test_python_dash_m_entry(tmp_path):
    path = write(tmp_path / "e.policy", '1\n"two"\n(< 1 2)\n(+ nil 1)\n')
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "momservice.cli.momctl", "policy", "eval", str(path)],
        capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == exitcodes.POLICY_ERROR, proc.stderr
    assert proc.stdout.splitlines() == ["1", '"two"', "true"]
    assert proc.stderr.splitlines()[-1].startswith(f"{path}:4: ")
