"""Text from outside abflow is inert (issue 26, point 6).

A recipe whose log is an attack on the terminal (it sets the window title, clears the screen and
prints a fake "all ABs succeeded") and an archive whose error text is one: the console of a real
run in a terminal (a pseudo-terminal: every byte that reaches it is read), ``abflow watch``, the
end summary, a followed console log and the AB monitor page show the escape sequences as text
(``\\x1b]0;pwned\\x07``), never as bytes. The page links only files inside the night's
directories; ``abflow status -F`` exports only those.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DATE, ROOT, SNAKEFILE, place_raw_files, write_config

from abflow.cli import main
from abflow.example.generate import fan_cascade, make_dfo_tree, write_night
from abflow.model.config import load_settings
from abflow.model.load import load_night
from abflow.state.layout import JobId, Step
from abflow.state.text import inert

# what the recipe prints (printf's octal escapes): a window title (OSC), clear screen and cursor
# home (CSI), a fake summary line, a C1 CSI (U+009B) and a right-to-left override (U+202E)
RECIPE = (r"printf 'esorex: \033]0;pwned\007\033[2J\033[Habflow: 2 of 2 ABs succeeded"
          r"\302\233\342\200\256gnp.exe\n'; exit 3")  # fmt: skip
ARCHIVE = r"printf 'archive: \033[31mNO\033]0;owned\007 such file\r\n' >&2; exit 1"
SHOWN = ("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[Habflow: 2 of 2 ABs succeeded\\x9b\\u202egnp.exe",
         "archive: \\x1b[31mNO\\x1b]0;owned\\x07 such file")  # fmt: skip
HOSTILE = re.compile("[\x1b\x07\x9b\u202e]")  # what must not reach a terminal or the page


def test_inert_escapes_controls_and_keeps_text() -> None:
    assert inert("a\x1b[2Jb\x07\x00\x7f\x85\u202e\u2066é 日本\tx\ny") == (
        "a\\x1b[2Jb\\x07\\x00\\x7f\\x85\\u202e\\u2066é 日本\tx\ny"
    )
    assert inert("one\r\ntwo\rthree") == "one\ntwo\\rthree"  # a lone \r would overwrite
    assert inert("a\nb\tc", line=True) == "a\\nb\\tc"  # one line stays one line
    assert inert(inert("\x1b")) == "\\x1b"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two ABs run by the real Snakemake with abflow's console on a terminal: X's recipe
    prints the attack and fails; Y's raw file comes from an archive that answers with one."""
    base = tmp_path_factory.mktemp("hostile")
    dfo = make_dfo_tree(base / "dfo")
    x, y = write_night(fan_cascade([2]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    place_raw_files(dfo)
    settings = load_settings(None, [f"date={DATE}", *(f"dfo.{k}={v}" for k, v in dfo.items())])
    for path in load_night(settings)[y].raw_inputs:
        os.unlink(path)
    cfg = write_config(base / "config.yaml", dfo, status_export_dir=str(base / "web"),
                       retries={"download": 0},
                       commands={"process_ab": RECIPE, "download": ARCHIVE})  # fmt: skip
    out = _in_a_terminal(["snakemake", "-s", str(SNAKEFILE), "--profile",
                          str(ROOT / "profiles" / "local"), "--configfile", str(cfg),
                          "--cores", "2"], base)  # fmt: skip
    return {"base": base, "cfg": cfg, "dfo": dfo, "x": x, "y": y, "console": out}


def _in_a_terminal(argv: list[str], cwd: Path) -> bytes:
    """Everything ``argv`` writes to its terminal (a pseudo-terminal), byte for byte."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DFO_", "DFS_", "ABFLOW_"))}
    env.update(TERM="xterm-256color", PYTHONWARNINGS="ignore",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")  # fmt: skip
    env.pop("CONDOR_CONFIG", None)
    main_fd, term = pty.openpty()
    proc = subprocess.Popen(argv, stdin=term, stdout=term, stderr=term, cwd=cwd, env=env,
                            start_new_session=True)  # fmt: skip
    os.close(term)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 1 << 16)
        except OSError:  # the terminal's last writer has gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert proc.wait(timeout=300) != 0
    return b"".join(chunks)


def test_the_console_shows_a_hostile_log_and_archive_escaped(night) -> None:
    raw = night["console"]
    text = raw.decode("utf-8", "replace")
    # the console's own redrawing of its progress line is its own; nothing else escapes
    assert not HOSTILE.search(text.replace("\r\x1b[K", "")), text
    assert SHOWN[0] in text and SHOWN[1] in text, text
    assert not re.search(r"^abflow: 2 of 2 ABs succeeded", text.replace("\r\n", "\n"), re.M)
    assert f"{night['x']}" in text and "0 of 2 ABs succeeded" in text


def test_watch_summary_and_followed_log_show_it_escaped(night, capsys) -> None:
    assert main(["watch", "--interval", "0", "--configfile", str(night["cfg"])]) == 0
    out = capsys.readouterr().out
    assert not HOSTILE.search(out), out
    assert SHOWN[0] in out and SHOWN[1] in out  # the log tail and the archive's answer
    assert "\r" not in out
    from abflow.views.follow import copy_new

    log = night["base"] / "console.log"
    log.write_bytes("line \x1b]0;pwned\x07 \u202e\n".encode())
    shown = io.StringIO()
    assert copy_new(str(log), 0, shown) == log.stat().st_size
    assert shown.getvalue() == "line \\x1b]0;pwned\\x07 \\u202e\n"


def test_the_page_shows_it_escaped(night) -> None:
    assert main(["status", "--configfile", str(night["cfg"])]) == 0
    page = Path(night["dfo"]["mon_dir"], f"status_{DATE}.html").read_text()
    assert not HOSTILE.search(page)
    reason = re.findall(r'<td class="reason">([^<]*)</td>', page)
    assert "archive: \\x1b[31mNO\\x1b]0;owned\\x07 such file" in "".join(reason), reason


def test_snakemakes_own_console_shows_it_escaped_too(night) -> None:
    """--logger-abflow-snakemake: Snakemake's own output (its error block quotes the log's
    last lines), in its own colours, the log's sequences escaped."""
    out = _in_a_terminal(["snakemake", "-s", str(SNAKEFILE), "--profile",
                          str(ROOT / "profiles" / "local"), "--configfile", str(night["cfg"]),
                          "--cores", "2", "--logger-abflow-snakemake"], night["base"])  # fmt: skip
    text = out.decode("utf-8", "replace")
    assert "Error in rule" in text and SHOWN[0] in text, text  # Snakemake's own, escaped
    assert not re.search("\x1b\\]|\x07|\x9b|\u202e|\x1b\\[2J", text), text


# ----- links and export ---------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path, dfo: dict[str, str]) -> dict[str, Any]:
    """A night whose QC results name /etc/passwd and a javascript: URL, whose log directory
    holds a link to a file outside every configured directory, and a report inside."""
    (a,) = write_night(fan_cascade([1]), dfo["ab_dir"], dfo["mon_dir"], DATE)
    outside = tmp_path / "outside" / "secret.txt"
    outside.parent.mkdir()
    outside.write_text("not the night's")
    logs = Path(dfo["log_dir"], DATE)
    logs.mkdir(parents=True)
    stem = a.removesuffix(".ab")
    (logs / f"{stem}.qc.html").write_text("<h1>QC</h1>")
    (logs / f"{stem}.qc.link").symlink_to(outside)
    cfg = write_config(tmp_path / "config.yaml", dfo, status_export_dir=str(tmp_path / "web"),
                       qc_reports="{log_dir}/{date}/{ab_stem}.qc.*")  # fmt: skip
    layout = load_settings(str(cfg)).layout
    log = Path(layout.log(JobId(Step.PROCESS_AB, a)))
    log.parent.mkdir(parents=True)
    log.symlink_to("/etc/passwd")  # its own log: a link out of the state directory
    record = {"ab": a, "step": "process_ab", "status": "SUCCESSFUL", "log": str(log),
              "start": f"{DATE}T20:00:00+00:00", "end": f"{DATE}T20:00:01+00:00",
              "duration_s": 1.0, "host": "h"}  # fmt: skip
    qc = {
        **record,
        "step": "process_qc",
        "results": {"png": "/etc/passwd", "paf": "javascript:alert(1)", "QC.MEDIAN": 1},
    }
    for path, data in ((layout.record(JobId(Step.PROCESS_AB, a)), record),
                       (layout.record(JobId(Step.PROCESS_QC, a)), qc)):  # fmt: skip
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data))
    return {"cfg": cfg, "dfo": dfo, "ab": a, "web": tmp_path / "web", "outside": outside}


def test_the_page_links_only_files_of_the_night(linked) -> None:
    assert main(["status", "--configfile", str(linked["cfg"])]) == 0
    page = Path(linked["dfo"]["mon_dir"], f"status_{DATE}.html").read_text()
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs == [f"../log/{DATE}/{linked['ab'].removesuffix('.ab')}.qc.html"], hrefs
    assert "javascript:" not in "".join(hrefs) and "passwd" not in "".join(hrefs)
    # what is refused is shown as text, not linked
    assert page.count('class="unlinked"') == 4  # log, PNG, PAF, the link out of the log dir
    assert "not linked" in page and "javascript:alert(1)" in page


def test_export_copies_only_files_of_the_night(linked, capsys) -> None:
    assert main(["status", "-F", "--configfile", str(linked["cfg"])]) == 0
    err = capsys.readouterr().err
    files = sorted(p.name for p in Path(linked["web"], DATE, "files").iterdir())
    assert files == [f"{linked['ab'].removesuffix('.ab')}.qc.html"]
    lines = [ln for ln in err.splitlines() if "not exported" in ln]
    assert len(lines) == 1 and "/etc/passwd" in lines[0] and "javascript:alert(1)" in lines[0]
    assert ".qc.link" in lines[0]
    page = Path(linked["web"], DATE, f"status_{DATE}.html").read_text()
    assert "not the night's" not in page and "root:" not in page
    assert re.findall(r'href="([^"]*)"', page) == [f"files/{files[0]}"]


def test_a_file_named_like_a_url_is_linked_as_a_path(tmp_path) -> None:
    from abflow.views.monitor import href_of, relative_link

    target = tmp_path / "javascript:alert(1)"
    target.write_text("x")
    assert relative_link(str(tmp_path / "page.html"))(str(target)) == "./javascript:alert%281%29"
    assert href_of("a b/#c?.png") == "a%20b/%23c%3F.png"
