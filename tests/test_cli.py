"""Tests of ``python -m pycds``: every subcommand, its errors and ``--help``."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

PY = sys.executable
PYCDS_VARS = ("PYCDSMODE", "PYCDSLIST", "PYCDSARCHIVE", "PYCDSVERBOSE")
SUBCOMMANDS = ("trace", "dump", "run", "inspect", "verify", "bench")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_for(**values):
    env = {k: v for k, v in os.environ.items() if k not in PYCDS_VARS}
    env.update({k: os.fspath(v) for k, v in values.items()})
    return env


def cli(*args, cwd=None, timeout=300, **values):
    return subprocess.run([PY, "-m", "pycds", *map(os.fspath, args)], cwd=cwd,
                          env=env_for(**values), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def ok(p):
    assert p.returncode == 0, "exit status %d\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout, p.stderr)
    return p


def fails(p, status, *words):
    """One error line on stderr, no traceback, the expected status."""
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("pycds: error: "), p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def archive_names(path):
    code = "import pycds, sys; print('\\n'.join(pycds.load(sys.argv[1]).keys()))"
    p = subprocess.run([PY, "-c", code, os.fspath(path)], env=env_for(),
                       capture_output=True, text=True, check=True)
    return p.stdout.split()


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    """A small program (``main.py`` importing ``helper.py`` and some stdlib modules),
    traced and dumped with the CLI."""
    d = tmp_path_factory.mktemp("cli")
    (d / "helper.py").write_text("def greet():\n    return 'hello'\n", encoding="utf-8")
    (d / "main.py").write_text(textwrap.dedent("""\
        import json, decimal, helper
        print(helper.greet(), json.dumps([str(decimal.Decimal(1) / 4)]))
        """), encoding="utf-8")
    lst, img = d / "main.lst", d / "main.img"
    ok(cli("trace", "-o", lst, "--", "main.py", cwd=d))
    ok(cli("dump", lst, "-o", img, cwd=d))
    return {"dir": d, "list": lst, "archive": img}


# -- help, usage errors -------------------------------------------------------------------

def test_help():
    p = ok(cli("--help"))
    assert p.stdout.startswith("usage: python -m pycds")
    for sub in SUBCOMMANDS:
        assert sub in p.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(sub):
    p = ok(cli(sub, "--help"))
    assert p.stdout.startswith("usage: python -m pycds %s" % sub)
    assert p.stderr == ""


def test_version():
    p = ok(cli("--version"))
    assert re.match(r"pycds \d+\.\d+\.\d+ \(format \d+\.\d+\)$", p.stdout.strip())


@pytest.mark.parametrize("args, words", [
    ((), ["choose a command"]),
    (("frobnicate",), ["invalid choice"]),
    (("trace", "--", "-c", "pass"), ["-o/--output"]),
    (("trace", "-o", "x.lst"), ["missing the Python command"]),
    (("run", "--archive", "x.img"), ["missing the Python command"]),
    (("dump",), ["required"]),
    (("inspect",), ["required"]),
    (("inspect", "x.img", "--top", "many"), ["invalid int value"]),
    (("inspect", "x.img", "--", "extra"), ["unexpected arguments after '--'"]),
    (("verify", "a.img", "b.img"), ["unrecognized arguments"]),
    (("bench", "-n", "0", "--", "-c", "pass"), ["-n must be at least 1"]),
    (("bench", "--bogus", "--", "-c", "pass"), ["unrecognized arguments"]),
])
def test_usage_errors(tmp_path, args, words):
    fails(cli(*args, cwd=tmp_path), 2, *words)


# -- trace --------------------------------------------------------------------------------

def test_trace(tmp_path):
    lst = tmp_path / "t.lst"
    p = cli("trace", "-o", lst, "--", "-c", "import json, sys; print('out'); sys.exit(3)",
            cwd=tmp_path)
    assert p.returncode == 3  # the program's status
    assert p.stdout == "out\n"
    assert re.fullmatch(r"pycds: .*t\.lst: \d+ modules \(\d+ new\)\n", p.stderr)
    names = lst.read_text(encoding="utf-8").split()
    assert "json" in names and "__main__" not in names
    # Appends; --fresh starts over; -q is quiet.
    p = ok(cli("trace", "-o", lst, "-q", "--", "-c", "import csv", cwd=tmp_path))
    assert p.stderr == ""
    names2 = lst.read_text(encoding="utf-8").split()
    assert "csv" in names2 and "json" in names2
    ok(cli("trace", "-o", lst, "--fresh", "--", "-c", "import csv", cwd=tmp_path))
    names3 = lst.read_text(encoding="utf-8").split()
    assert "csv" in names3 and "json" not in names3


def test_trace_without_double_dash(tmp_path):
    (tmp_path / "s.py").write_text("import json\nprint('script')\n", encoding="utf-8")
    p = ok(cli("trace", "-o", "t.lst", "s.py", cwd=tmp_path))
    assert p.stdout == "script\n"
    assert "json" in (tmp_path / "t.lst").read_text(encoding="utf-8").split()


def test_trace_errors(tmp_path):
    fails(cli("trace", "-o", tmp_path / "no" / "dir" / "t.lst", "--", "-c", "pass"), 1,
          "does not exist")
    fails(cli("trace", "-o", tmp_path, "--", "-c", "pass"), 1, "is a directory")
    # A program that ends through os._exit writes no list.
    fails(cli("trace", "-o", tmp_path / "t.lst", "--", "-c", "import os; os._exit(0)"), 1,
          "no module list")


# -- dump ---------------------------------------------------------------------------------

def test_dump(proj, tmp_path):
    lst = tmp_path / "d.lst"
    lst.write_text(proj["list"].read_text(encoding="utf-8") + "no_such_module_xyz\n",
                   encoding="utf-8")
    img = tmp_path / "d.img"
    p = ok(cli("dump", lst, "-o", img, cwd=proj["dir"]))
    m = re.fullmatch(r"wrote .*d\.img: (\d+) modules, [\d.]+ [kM]?B \((\d+) bytes\), "
                     r"1 skipped\n  \(use -v to see why modules were skipped\)\n", p.stdout)
    assert m, p.stdout
    assert int(m.group(2)) == img.stat().st_size
    names = archive_names(img)
    assert int(m.group(1)) == len(names)
    assert {"json", "decimal", "helper"} <= set(names)
    p = ok(cli("dump", lst, "-o", img, "-v", cwd=proj["dir"]))
    assert "  skipped no_such_module_xyz: not found\n" in p.stdout


def test_dump_does_not_run_the_program(tmp_path):
    (tmp_path / "noisy.py").write_text("print('NOISY RAN')\n", encoding="utf-8")
    (tmp_path / "l.lst").write_text("noisy\n__main__\njson\n", encoding="utf-8")
    p = ok(cli("dump", "l.lst", "-o", "n.img", "-v", cwd=tmp_path))
    assert "NOISY RAN" not in p.stdout + p.stderr
    assert {"noisy", "json"} <= set(archive_names(tmp_path / "n.img"))
    assert "__main__" not in archive_names(tmp_path / "n.img")


def test_dump_in_directory_shadowing_stdlib(tmp_path):
    # The program's directory may hold modules named like stdlib ones: the dump (and its
    # report to the CLI) must not trip over them.
    (tmp_path / "json.py").write_text("raise SystemExit('local json imported')\n",
                                      encoding="utf-8")
    (tmp_path / "l.lst").write_text("csv\n", encoding="utf-8")
    # -P: keep the CLI process itself (python -m) from importing the local json.
    p = ok(subprocess.run([PY, "-P", "-m", "pycds", "dump", "l.lst", "-o", "s.img"],
                          cwd=tmp_path, env=env_for(), capture_output=True, text=True))
    assert p.stdout.startswith("wrote s.img: 1 modules")


def test_dump_path_and_python_options(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libmod.py").write_text("assert False, 'asserts on'\nX = 1\n", encoding="utf-8")
    (tmp_path / "l.lst").write_text("libmod\n", encoding="utf-8")
    p = ok(cli("dump", "l.lst", "-o", "a.img", "-v", cwd=tmp_path))
    assert "skipped libmod: not found" in p.stdout
    ok(cli("dump", "l.lst", "-o", "a.img", "--path", lib, "--", "-O", cwd=tmp_path))
    assert archive_names(tmp_path / "a.img") == ["libmod"]
    # Dumped under -O: served to -O processes.
    p = ok(cli("run", "--archive", "a.img", "-v", "--", "-O", "-c", "import libmod",
               cwd=tmp_path, PYTHONPATH=lib))
    assert "pycds: served libmod" in p.stderr


def test_dump_errors(proj, tmp_path):
    fails(cli("dump", tmp_path / "none.lst", "-o", tmp_path / "x.img"), 1, "none.lst",
          "no such module list")
    fails(cli("dump", tmp_path, "-o", tmp_path / "x.img"), 1, "not a regular file")
    fails(cli("dump", proj["list"], "-o", tmp_path / "no" / "x.img"), 1, "does not exist")
    fails(cli("dump", proj["list"], "-o", tmp_path), 1, "is a directory")
    # An undecodable list: the dump process fails; reported in one line.
    bad = tmp_path / "bad.lst"
    bad.write_bytes(b"\xff\xfe\x00bad\n")
    fails(cli("dump", bad, "-o", tmp_path / "x.img"), 1, "cannot dump")
    assert not (tmp_path / "x.img").exists()


# -- run ----------------------------------------------------------------------------------

def test_run(proj):
    plain = subprocess.run([PY, "main.py"], cwd=proj["dir"], env=env_for(),
                           capture_output=True, text=True, check=True)
    p = ok(cli("run", "--archive", proj["archive"], "--", "main.py", cwd=proj["dir"]))
    assert p.stdout == plain.stdout == "hello [\"0.25\"]\n"
    assert p.stderr == ""
    p = ok(cli("run", "-a", proj["archive"], "-v", "--", "main.py", cwd=proj["dir"]))
    assert p.stdout == plain.stdout
    served = [ln.split()[-1] for ln in p.stderr.splitlines()]
    assert {"helper", "json", "decimal"} <= set(served)
    p = cli("run", "-a", proj["archive"], "--", "-c", "import sys; sys.exit(7)")
    assert p.returncode == 7 and p.stderr == ""


def test_run_errors(proj, tmp_path):
    fails(cli("run", "--archive", tmp_path / "none.img", "--", "-c", "print(1)"), 1,
          "none.img", "no such archive")
    fails(cli("run", "--archive", tmp_path, "--", "-c", "print(1)"), 1, "not a regular file")
    # A damaged archive is the hook's business: one warning (when the program first
    # imports something: the archive is opened then), the program runs normally.
    bad = tmp_path / "bad.img"
    bad.write_bytes(proj["archive"].read_bytes()[:1000])
    p = cli("run", "--archive", bad, "--", "-c", "import json; print(1)")
    assert p.returncode == 0 and p.stdout == "1\n"
    assert len(p.stderr.splitlines()) == 1 and "pycds: warning" in p.stderr


# -- inspect / verify ---------------------------------------------------------------------

def test_inspect(proj):
    p = ok(cli("inspect", proj["archive"], "--top", "2"))
    out = p.stdout
    n = len(archive_names(proj["archive"]))
    assert "format version: 1." in out
    assert re.search(r"^modules: +%d " % n, out, re.M)
    assert "usable here:    yes" in out
    assert "fingerprint:\n" in out and "  magic=" in out and "  hexversion=" in out
    assert "modules by size (top 2 of %d; --all for all):" % n in out
    rows = out.split("modules by size")[1].splitlines()[1:]
    assert len(rows) == 2
    sizes = [int(r.split()[0]) for r in rows]
    assert sizes == sorted(sizes, reverse=True)
    p = ok(cli("inspect", proj["archive"], "--all"))
    rows = p.stdout.split("modules by size:\n")[1].splitlines()
    assert len(rows) == n
    assert any(r.split()[1] == "helper" and r.endswith("helper.py") for r in rows)
    sizes = [int(r.split()[0]) for r in rows]
    assert sizes == sorted(sizes, reverse=True)


def test_inspect_json(proj):
    info = json.loads(ok(cli("inspect", "--json", proj["archive"])).stdout)
    assert info["usable"] is True and info["refused_because"] is None
    assert info["file_bytes"] == proj["archive"].stat().st_size
    names = [m["name"] for m in info["modules"]]
    assert sorted(names) == sorted(archive_names(proj["archive"]))
    helper = info["modules"][names.index("helper")]
    assert helper["origin"] == str(proj["dir"] / "helper.py") and helper["package"] is False
    assert any(m["package"] for m in info["modules"])  # json is a package


def _other_python():
    mine = "%d.%d" % sys.version_info[:2]
    for v in ("3.11", "3.12", "3.13"):
        exe = os.path.join(ROOT, ".venv", v, "bin", "python")
        if v != mine and os.access(exe, os.X_OK):
            r = subprocess.run([exe, "-c", "import pycds"], env=env_for(),
                               capture_output=True)
            if r.returncode == 0:
                return exe
    return None


def test_inspect_foreign_archive(tmp_path):
    other = _other_python()
    if other is None:
        pytest.skip("no pycds installation for another Python version")
    img = tmp_path / "other.img"
    subprocess.run([other, "-c", "import pycds, sys; pycds.save(sys.argv[1], "
                    "{'c': compile('x = 1', 'f', 'exec')})", img], env=env_for(), check=True)
    p = ok(cli("inspect", img))
    assert "usable here:    no: " in p.stdout
    # verify checks archives of any supported version.
    ok(cli("verify", img))
    # SHARE refuses it with one warning (when the program first imports something).
    p = subprocess.run([PY, "-c", "import json; print(1)"], env=env_for(PYCDSMODE="SHARE",
                       PYCDSARCHIVE=img), capture_output=True, text=True)
    assert p.stdout == "1\n" and len(p.stderr.splitlines()) == 1


def test_verify(proj):
    p = ok(cli("verify", proj["archive"]))
    n = len(archive_names(proj["archive"]))
    assert re.fullmatch(r".*main\.img: OK \(Python \d\.\d+, %d modules, \d+ spans, "
                        r"\d+ objects\)\n" % n, p.stdout)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "garbage", "truncated",
                                  "bitflip"])
@pytest.mark.parametrize("sub", ["inspect", "verify"])
def test_inspect_verify_errors(proj, tmp_path, kind, sub):
    bad = tmp_path / "bad.img"
    data = proj["archive"].read_bytes()
    if kind == "directory":
        bad.mkdir()
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "garbage":
        bad.write_bytes(b"\x00garbage" * 100)
    elif kind == "truncated":
        bad.write_bytes(data[:len(data) - 100])
    elif kind == "bitflip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        bad.write_bytes(bytes(b))
    p = cli(sub, bad)
    if kind == "bitflip" and sub == "inspect":
        # inspect reads tables, not every span: it may still describe the archive.
        assert p.returncode in (0, 1) and "Traceback" not in p.stderr
        return
    fails(p, 1, "bad.img")


def test_inspect_broken_pipe(proj):
    p = subprocess.run("%s -m pycds inspect --all %s | head -n 1" % (PY, proj["archive"]),
                       shell=True, env=env_for(), capture_output=True, text=True)
    assert p.stdout.startswith("archive:")
    assert "Traceback" not in p.stderr and "Error" not in p.stderr


# -- bench --------------------------------------------------------------------------------

def test_bench(proj, tmp_path):
    out = tmp_path / "b.json"
    work = tmp_path / "work"
    p = ok(cli("bench", "-n", "3", "--warmup", "1", "--workdir", work, "--json", out,
               "--", "main.py", cwd=proj["dir"]))
    line = p.stdout.strip()
    m = re.fullmatch(r"plain ([\d.]+) ms  pycds ([\d.]+) ms  ratio ([\d.]+) \(median of 3 "
                     r"pairs\)  modules served (\d+)/(\d+)  archive [\d.]+ [kM]?B", line)
    assert m, line
    served, archived = int(m.group(4)), int(m.group(5))
    assert 0 < served <= archived
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["pairs"] == 3 and len(r["plain_ms"]) == len(r["pycds_ms"]) == 3
    assert len(r["ratios"]) == 3 and r["ratio_median"] > 0
    assert r["modules_served"] == served and r["modules_archived"] == archived
    assert r["command"] == ["main.py"]
    assert r["archive_bytes"] == (work / "bench.img").stat().st_size
    assert "helper" in (work / "bench.lst").read_text(encoding="utf-8").split()
    assert "helper" in archive_names(work / "bench.img")


def test_bench_script_elsewhere(proj, tmp_path):
    # The script's own modules are found although it is not in the current directory.
    p = ok(cli("bench", "-n", "1", "--warmup", "0", "--workdir", tmp_path, "--",
               proj["dir"] / "main.py", cwd=tmp_path))
    assert "modules served" in p.stdout
    assert "helper" in archive_names(tmp_path / "bench.img")


def test_bench_errors(tmp_path):
    fails(cli("bench", "-n", "1", "--", "no_such_script.py", cwd=tmp_path), 1,
          "failed with exit status 2")
    fails(cli("bench", "-n", "1", "--", "-c", "import sys; sys.exit(4)", cwd=tmp_path), 1,
          "exit status 4")
    fails(cli("bench", "-n", "1", "--", cwd=tmp_path), 2, "missing the Python command")
    # Output that differs between runs (here: every run) is caught before timing...
    code = "import os; print(os.getpid())"
    fails(cli("bench", "-n", "1", "--", "-c", code, cwd=tmp_path), 1, "stdout", "differs")
    # ...unless --no-check.
    p = ok(cli("bench", "-n", "1", "--warmup", "0", "--no-check", "--", "-c", code,
               cwd=tmp_path))
    assert "ratio" in p.stdout
    fails(cli("bench", "-n", "1", "--warmup", "0", "--json", tmp_path / "no" / "x.json",
              "--", "-c", "pass", cwd=tmp_path), 1, "x.json")
