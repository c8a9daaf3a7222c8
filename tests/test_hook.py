"""End-to-end tests of the import hook: real interpreter processes driven through the
environment workflow (``PYCDSMODE`` = TRACE, DUMP, SHARE, AUTO) of ``pycds.pth``.

Every process is ``sys.executable`` (the virtual environment pycds is installed in).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

PY = sys.executable
PYCDS_VARS = ("PYCDSMODE", "PYCDSLIST", "PYCDSARCHIVE", "PYCDSVERBOSE")

# The W1 workload (a broad slice of the standard library), followed by a little work so
# the program has output to compare, and an epilogue reporting module attributes and what
# the hook did to the file named by $PYCDS_TEST_REPORT.
W1_IMPORTS = (
    "import asyncio, json, email.mime.multipart, http.server, urllib.request, "
    "logging.handlers, argparse, typing, dataclasses, decimal, unittest, "
    "xml.etree.ElementTree, sqlite3, csv, tarfile, zipfile, subprocess, "
    "concurrent.futures, inspect, pathlib, tomllib, ssl, uuid, random, statistics"
)

REPORT_EPILOGUE = r'''
def _pycds_test_report():
    import os, sys, json
    out = os.environ.get("PYCDS_TEST_REPORT")
    if not out:
        return
    missing = "<missing>"
    attrs = {}
    for name, mod in sorted(sys.modules.items()):
        spec = getattr(mod, "__spec__", None)
        if mod is None or spec is None:
            continue
        path = getattr(mod, "__path__", missing)
        ssl_ = spec.submodule_search_locations
        attrs[name] = {
            "__name__": getattr(mod, "__name__", missing),
            "__file__": getattr(mod, "__file__", missing),
            "__cached__": getattr(mod, "__cached__", missing),
            "__package__": getattr(mod, "__package__", missing),
            "__path__": path if path is missing else list(path),
            "origin": spec.origin,
            "has_location": spec.has_location,
            "cached": spec.cached,
            "submodule_search_locations": None if ssl_ is None else list(ssl_),
            "parent": spec.parent,
            "loader_bases": [c.__name__ for c in type(spec.loader).__mro__
                             if c.__module__ != "pycds._hook"],
        }
    pycds = sys.modules.get("pycds")
    stats = pycds.stats() if pycds is not None else None
    if stats is not None:
        stats.pop("load", None)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"attrs": attrs, "stats": stats}, f)


_pycds_test_report()
'''

W1_SCRIPT = W1_IMPORTS + "\nimport sys\n" + textwrap.dedent('''
    d = decimal.Decimal(1) / decimal.Decimal(7)
    print(json.dumps({"d": str(d), "mean": statistics.mean([1, 2, 3, 4]),
                      "toml": tomllib.loads("a = 1"), "path": str(pathlib.PurePosixPath("/a", "b"))},
                     sort_keys=True))
    print(xml.etree.ElementTree.tostring(xml.etree.ElementTree.Element("x", a="1")).decode())
    msg = email.mime.multipart.MIMEMultipart()
    msg["Subject"] = "hi"
    print(msg["Subject"], typing.get_type_hints(lambda: None), argparse.ArgumentParser(prog="p").prog)
    print(sorted(n for n in sys.modules if n.startswith("email.")))
''') + REPORT_EPILOGUE


def env_for(**values):
    """The test process's environment without PYCDS* variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in PYCDS_VARS}
    for k, v in values.items():
        if v is not None:
            env[k] = os.fspath(v)
    return env


def run(args, cwd=None, stdin=subprocess.DEVNULL, timeout=120, **values):
    """Run ``python *args`` with PYCDS*/other variables from ``values``."""
    return subprocess.run([PY, *args], cwd=cwd, env=env_for(**values), stdin=stdin,
                          capture_output=True, text=True, timeout=timeout)


def ok(p):
    assert p.returncode == 0, "exit status %d\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout, p.stderr)
    return p


def read_report(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_list(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def served_lines(stderr):
    return [ln[len("pycds: served "):] for ln in stderr.splitlines()
            if ln.startswith("pycds: served ")]


def without_served(stderr):
    return "".join(ln for ln in stderr.splitlines(keepends=True)
                   if not ln.startswith("pycds: served "))


def archive_names(path):
    code = "import pycds, sys; print('\\n'.join(pycds.load(sys.argv[1]).keys()))"
    return ok(run(["-c", code, os.fspath(path)])).stdout.split()


def span_of(path, name):
    """(start, length) in the file of the span holding root ``name`` (read with the
    specification's independent reader)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "spec", "reader"))
    try:
        import arena_reader
    finally:
        del sys.path[0]
    with open(path, "rb") as f:
        a = arena_reader.Arena(f.read())
    root = next(r for r in a.roots if r.name == name.encode())
    span = a.spans[root.span]
    return span.start, span.length


def trace_dump(args, cwd, lst, img, **values):
    """TRACE ``python *args``, then DUMP with a bare ``python`` in ``cwd``."""
    ok(run(args, cwd=cwd, PYCDSMODE="TRACE", PYCDSLIST=lst, **values))
    ok(run([], cwd=cwd, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img, **values))
    assert os.path.isfile(img)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))


# -- the W1 workload ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def w1(tmp_path_factory):
    d = tmp_path_factory.mktemp("w1")
    script = d / "w1.py"
    script.write_text(W1_SCRIPT, encoding="utf-8")
    lst, img = d / "w1.lst", d / "w1.img"
    plain = ok(run([str(script)], cwd=d, PYCDS_TEST_REPORT=d / "plain.json"))
    trace_dump([str(script)], d, lst, img)
    shared = ok(run([str(script)], cwd=d, PYCDSMODE="SHARE", PYCDSARCHIVE=img,
                    PYCDS_TEST_REPORT=d / "shared.json"))
    return {"dir": d, "script": script, "list": lst, "archive": img, "plain": plain,
            "shared": shared, "plain_report": read_report(d / "plain.json"),
            "shared_report": read_report(d / "shared.json")}


def test_w1_trace_lists_the_workload(w1):
    names = read_list(w1["list"])
    assert len(names) == len(set(names))
    for name in ("asyncio", "json", "email.mime.multipart", "http.server", "decimal",
                 "xml.etree.ElementTree", "sqlite3", "tomllib", "statistics"):
        assert name in names
    assert "__main__" not in names and "w1" not in names
    assert sorted(archive_names(w1["archive"])) == sorted(names)


def test_w1_share_serves_expected_modules(w1):
    # Modules imported at start-up before the hook is installed cannot be served; every
    # other archived module the program imports must be.
    # (A script, as the W1 run is: `-c` makes 3.13 import linecache at start-up.)
    probe = w1["dir"] / "startup_modules.py"
    probe.write_text("import sys; m = sorted(sys.modules); import json, pycds; "
                     "print(json.dumps([m, pycds.stats()['served']]))\n", encoding="utf-8")
    before, served_at_startup = json.loads(ok(run(
        [str(probe)], PYCDSMODE="SHARE", PYCDSARCHIVE=w1["archive"])).stdout)
    preloaded = set(before) - set(served_at_startup)
    archived = set(archive_names(w1["archive"]))
    stats = w1["shared_report"]["stats"]
    assert stats["mode"] == "share"
    assert stats["fallbacks"] == []
    served = stats["served"]
    assert len(served) == len(set(served))
    assert set(served) == archived - preloaded
    assert len(served) > 100


def test_w1_output_identical(w1):
    assert w1["shared"].stdout == w1["plain"].stdout
    assert w1["shared"].stderr == w1["plain"].stderr == ""
    assert "Decimal" not in w1["plain"].stdout and "0.142857" in w1["plain"].stdout


def test_w1_module_attributes_identical(w1):
    plain = w1["plain_report"]["attrs"]
    shared = w1["shared_report"]["attrs"]
    served = w1["shared_report"]["stats"]["served"]
    assert served
    for name in served:
        assert shared[name] == plain[name], name
    # Source modules, packages and C extension modules (found through the archive's
    # module index: same spec and loader class as a path search gives).
    assert any(plain[n]["submodule_search_locations"] for n in served)
    files = [shared[n]["__file__"] for n in served]
    assert sum(f.endswith(".py") for f in files) > 100
    exts = [n for n, f in zip(served, files) if f.endswith(".so")]
    assert "_json" in exts and "_sqlite3" in exts
    assert all(shared[n]["loader_bases"][0] == "ExtensionFileLoader" for n in exts)


def test_w1_verbose_lines(w1):
    p = ok(run([str(w1["script"])], cwd=w1["dir"], PYCDSMODE="SHARE",
               PYCDSARCHIVE=w1["archive"], PYCDSVERBOSE="1"))
    assert sorted(served_lines(p.stderr)) == sorted(w1["shared_report"]["stats"]["served"])
    assert without_served(p.stderr) == ""
    assert p.stdout == w1["plain"].stdout


# -- a small project: a script directory and a library directory on PYTHONPATH ------------

APP = '''\
import localmod
import fbpkg
import fbpkg.edited
import fbpkg.kept
import fbpkg.cli
import shadowed
try:
    import fbpkg.deleted
    print("deleted:", fbpkg.deleted.VALUE)
except ImportError:
    print("deleted: gone")
print("local:", localmod.VALUE)
print("edited:", fbpkg.edited.value())
print("kept:", fbpkg.kept.VALUE)
print("shadowed:", shadowed.WHO)
'''


@pytest.fixture
def project(tmp_path):
    """``app/app.py`` importing ``app/localmod.py`` and modules of ``lib/`` (PYTHONPATH),
    traced and dumped the documented way."""
    app, lib = tmp_path / "app", tmp_path / "lib"
    write(app / "app.py", APP + REPORT_EPILOGUE)
    write(app / "localmod.py", 'VALUE = "local"\n')
    write(lib / "fbpkg" / "__init__.py", '"""A package."""\n')
    write(lib / "fbpkg" / "edited.py", 'def value():\n    return "old"\n')
    write(lib / "fbpkg" / "kept.py", 'VALUE = "kept"\n')
    write(lib / "fbpkg" / "deleted.py", 'VALUE = "present"\n')
    write(lib / "fbpkg" / "cli.py", '''\
        import sys
        if __name__ == "__main__":
            print("main:", __name__, __spec__.name, __file__ == __spec__.origin)
            report = __import__("os").environ.get("PYCDS_TEST_REPORT")
            if report:
                pycds = sys.modules.get("pycds")
                with open(report, "w", encoding="utf-8") as f:
                    f.write(repr(pycds.stats()["served"] if pycds else None))
        ''')
    write(lib / "fbpkg" / "warner.py", '''\
        import warnings
        warnings.warn("warned from module body")
        ''')
    write(lib / "fbpkg" / "boom.py", '''\
        def boom():
            x = 1
            raise ValueError("boom %d" % x)
        ''')
    write(lib / "shadowed.py", 'WHO = "lib"\n')
    lst, img = tmp_path / "app.lst", tmp_path / "app.img"
    env = {"PYTHONPATH": str(lib)}
    ok(run(["app.py"], cwd=app, PYCDSMODE="TRACE", PYCDSLIST=lst, **env))
    # Modules only used by some runs below: trace them too.
    ok(run(["-c", "import fbpkg.warner, fbpkg.boom"], cwd=app, PYCDSMODE="TRACE",
           PYCDSLIST=lst, **env))
    ok(run([], cwd=app, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img, **env))
    names = archive_names(img)
    for n in ("localmod", "fbpkg", "fbpkg.edited", "fbpkg.kept", "fbpkg.deleted",
              "fbpkg.cli", "fbpkg.warner", "fbpkg.boom", "shadowed"):
        assert n in names
    plain = ok(run(["app.py"], cwd=app, **env))
    assert plain.stdout == ("deleted: present\nlocal: local\nedited: old\nkept: kept\n"
                            "shadowed: lib\n")
    return {"dir": tmp_path, "app": app, "lib": lib, "list": lst, "archive": img,
            "env": env, "plain": plain}


def share(project, args, verbose="1", **values):
    values = {**project["env"], **values}
    return run(args, cwd=project["app"], PYCDSMODE="SHARE",
               PYCDSARCHIVE=project["archive"], PYCDSVERBOSE=verbose, **values)


def test_project_served_with_same_output(project):
    p = ok(share(project, ["app.py"]))
    assert p.stdout == project["plain"].stdout
    served = served_lines(p.stderr)
    for n in ("localmod", "fbpkg", "fbpkg.edited", "fbpkg.kept", "fbpkg.deleted",
              "fbpkg.cli", "shadowed"):
        assert n in served


def test_fallback_source_edited(project):
    edited = project["lib"] / "fbpkg" / "edited.py"
    edited.write_text('def value():\n    return "new and longer"\n', encoding="utf-8")
    report = project["dir"] / "r.json"
    p = ok(share(project, ["app.py"], PYCDS_TEST_REPORT=report))
    assert "edited: new and longer\n" in p.stdout
    served = served_lines(p.stderr)
    assert "fbpkg.edited" not in served and "fbpkg.kept" in served
    assert ["fbpkg.edited", "source file changed"] in read_report(report)["stats"]["fallbacks"]


def test_fallback_source_edited_same_size(project):
    edited = project["lib"] / "fbpkg" / "edited.py"
    st = edited.stat()
    edited.write_text('def value():\n    return "NEW"\n', encoding="utf-8")
    assert edited.stat().st_size == st.st_size
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    p = ok(share(project, ["app.py"]))
    assert "edited: NEW\n" in p.stdout
    assert "fbpkg.edited" not in served_lines(p.stderr)


def test_fallback_source_deleted(project):
    os.unlink(project["lib"] / "fbpkg" / "deleted.py")
    report = project["dir"] / "r.json"
    p = ok(share(project, ["app.py"], PYCDS_TEST_REPORT=report))
    assert "deleted: gone\n" in p.stdout
    assert "fbpkg.deleted" not in served_lines(p.stderr)
    assert ["fbpkg.deleted", "source file missing"] in read_report(report)["stats"]["fallbacks"]


def test_fallback_shadowed_earlier_on_path(project):
    write(project["app"] / "shadowed.py", 'WHO = "app dir, earlier on sys.path"\n')
    report = project["dir"] / "r.json"
    p = ok(share(project, ["app.py"], PYCDS_TEST_REPORT=report))
    assert "shadowed: app dir, earlier on sys.path\n" in p.stdout
    assert "shadowed" not in served_lines(p.stderr)
    assert "fbpkg.kept" in served_lines(p.stderr)
    fallbacks = dict(map(tuple, read_report(report)["stats"]["fallbacks"]))
    assert "shadowed" in fallbacks["shadowed"]


def test_fallback_shadowed_by_a_directory_inside_a_zip_file(project):
    # A sys.path entry inside a zip file (zip/sub/dir) is a path importer's business: a
    # module there shadows the archived one, source and extension modules alike (BUG-R5).
    import zipfile
    z = project["dir"] / "fake.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("pre/fix/shadowed.py", 'WHO = "zip subdir"\n')
        f.writestr("pre/fix/_json.py", 'WHO = "fake _json"\n')
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import shadowed, _json, fbpkg.kept; "
            "print(shadowed.WHO, getattr(_json, 'WHO', 'real _json'))")
    plain = ok(run(["-c", code, str(z / "pre" / "fix")], cwd=project["app"], **project["env"]))
    assert plain.stdout == "zip subdir fake _json\n"
    p = ok(share(project, ["-c", code, str(z / "pre" / "fix")], verbose="2"))
    assert p.stdout == plain.stdout
    assert "fbpkg.kept" in served_lines(p.stderr)
    assert "shadowed" not in served_lines(p.stderr)


def test_fallback_shadowed_by_package(project):
    # A new package of the same name earlier on the path shadows the archived module.
    write(project["app"] / "shadowed" / "__init__.py", 'WHO = "package"\n')
    p = ok(share(project, ["app.py"]))
    assert "shadowed: package\n" in p.stdout


def test_fallback_shadowed_in_its_own_directory(project):
    # In one directory FileFinder prefers a package to name.py, and an extension module
    # to both: one added next to an archived module wins over the archive too.
    write(project["lib"] / "shadowed" / "__init__.py", 'WHO = "package next to it"\n')
    p = ok(share(project, ["app.py"], verbose="2"))
    assert "shadowed: package next to it\n" in p.stdout
    assert "pycds: fallback shadowed: shadowed by another module in its own directory" \
        in p.stderr
    assert "fbpkg.kept" in served_lines(p.stderr)
    import shutil
    shutil.rmtree(project["lib"] / "shadowed")
    ext = subprocess.run([PY, "-c", "import _json, importlib.machinery as m;"
                          "print(_json.__file__); print(m.EXTENSION_SUFFIXES[0])"],
                         capture_output=True, text=True, check=True).stdout.split()
    shutil.copy(ext[0], project["lib"] / ("shadowed" + ext[1]))
    plain = run(["app.py"], cwd=project["app"], **project["env"])
    shared = share(project, ["app.py"], verbose="2")
    # CPython now loads the (wrong) extension, and so does the shared run.
    assert plain.returncode == shared.returncode == 1
    assert "PyInit_shadowed" in plain.stderr and "PyInit_shadowed" in shared.stderr
    assert "shadowed" not in served_lines(shared.stderr)


def test_full_object_check_mode_serves_the_same(project):
    p = ok(share(project, ["app.py"], PYCDS_CHECK="full"))
    assert p.stdout == project["plain"].stdout
    assert "fbpkg.kept" in served_lines(p.stderr)


def test_other_compiler_flags_fall_back_quietly(project):
    # A child started with -X no_debug_ranges would compile other line tables: the
    # archive is not for it, without a warning (as with -O), and AUTO leaves it alone.
    before = project["archive"].read_bytes()
    for mode in ("SHARE", "AUTO"):
        p = ok(run(["-X", "no_debug_ranges", "app.py"], cwd=project["app"], PYCDSMODE=mode,
                   PYCDSARCHIVE=project["archive"], **project["env"]))
        assert p.stdout == project["plain"].stdout and p.stderr == "", mode
        p = ok(run(["-X", "no_debug_ranges", "-c", "import json, pycds; "
                    "print(json.dumps(pycds.stats()))"], cwd=project["app"], PYCDSMODE=mode,
                   PYCDSARCHIVE=project["archive"], PYCDSVERBOSE="2", **project["env"]))
        stats = json.loads(p.stdout)
        assert stats["served"] == [] and "no_debug_ranges" in stats["unused_because"]
        assert "not using archive" in p.stderr and "warning" not in p.stderr
    assert project["archive"].read_bytes() == before


def test_damaged_span_of_a_module_the_warning_path_could_need(tmp_path):
    # Reporting a damaged span must not import anything (formatting the archive's path
    # as a pathlib.Path once imported pathlib, whose dependencies were being imported).
    write(tmp_path / "app.py", "import argparse, ipaddress\nprint('ok')\n")
    lst, img = tmp_path / "app.lst", tmp_path / "app.img"
    ok(run(["app.py"], cwd=tmp_path, PYCDSMODE="TRACE", PYCDSLIST=lst))
    ok(run([], cwd=tmp_path, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img))
    data = bytearray(img.read_bytes())
    for name in ("re._compiler", "ipaddress", "functools"):
        start, length = span_of(img, name)
        data[start + length // 2] ^= 0x08
    img.write_bytes(bytes(data))
    p = ok(run(["app.py"], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img, timeout=60))
    assert p.stdout == "ok\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pycds: warning: ") and "damaged" in lines[0]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="isolated sub-interpreters: 3.12+")
def test_isolated_subinterpreter_is_quiet():
    code = textwrap.dedent("""\
        try:
            import _interpreters as I
        except ImportError:
            import _xxsubinterpreters as I
        iid = I.create()
        I.run_string(iid, 'import json')
        print('ok')
        """)
    p = ok(run(["-c", code], PYCDSMODE="SHARE", PYCDSARCHIVE="/nonexistent.img"))
    assert p.stdout == "ok\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "/nonexistent.img" in lines[0], p.stderr


def test_archive_writable_by_others_is_refused(project):
    # An archive is code: one that other users can change is refused, with the fix.
    img = project["archive"]
    os.chmod(img, 0o664)
    p = ok(share(project, ["app.py"]))
    assert p.stdout == project["plain"].stdout and served_lines(p.stderr) == []
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "writable by other users" in lines[0]
    assert "chmod go-w" in lines[0] and lines[0].endswith("importing normally")
    os.chmod(img, 0o644)
    d = project["dir"]
    os.chmod(d, 0o777)
    try:
        p = ok(share(project, ["app.py"]))
        assert "lets other users replace it" in p.stderr and served_lines(p.stderr) == []
        os.chmod(d, 0o1777)  # sticky, like /tmp: others cannot replace our file
        p = ok(share(project, ["app.py"]))
        assert "fbpkg.kept" in served_lines(p.stderr)
    finally:
        os.chmod(d, 0o755)
    # The data API checks every object and does not apply this rule.
    os.chmod(img, 0o666)
    ok(run(["-c", "import pycds, sys; pycds.load(sys.argv[1])['fbpkg.kept']", str(img)]))


def test_archive_descriptor_does_not_shift_the_programs_descriptors(project):
    # The archive stays open (to read modules on first use), on a high descriptor number:
    # the files the program opens get the numbers they get in a normal run.
    code = ("import fbpkg.kept, os; fd = os.open(os.devnull, os.O_RDONLY); "
            "print(fd, sorted(int(x) for x in os.listdir('/proc/self/fd'))[:fd])")
    plain = ok(run(["-c", code], cwd=project["app"], **project["env"]))
    shared = ok(share(project, ["-c", code]))
    assert "fbpkg.kept" in served_lines(shared.stderr)
    assert shared.stdout == plain.stdout


def test_served_spec_equals_a_normal_imports_spec(project):
    # pydoc.importfile-style comparisons: the served module's spec (CDSLoader) equals the
    # spec importlib makes for the same file, from both sides.
    code = ("import fbpkg.kept, json, importlib.util as u, _json; "
            "s = u.spec_from_file_location('fbpkg.kept', fbpkg.kept.__file__); "
            "e = u.spec_from_file_location('_json', _json.__file__); "
            "print(s == fbpkg.kept.__spec__, fbpkg.kept.__spec__ == s, "
            "hash(s.loader) == hash(fbpkg.kept.__loader__), e == _json.__spec__, "
            "type(fbpkg.kept.__loader__).__name__)")
    p = ok(share(project, ["-c", code]))
    assert "fbpkg.kept" in served_lines(p.stderr)
    assert p.stdout == "True True True True CDSLoader\n"


def test_share_start_up_loads_nothing_until_the_first_import(project):
    # SHARE puts one small stand-in on sys.meta_path at start-up; the pycds package, its
    # extension and the archive are loaded by the first import, not before.
    code = ("import sys; m = sorted(k for k in sys.modules if 'pycds' in k); "
            "f = [getattr(x, '__name__', '') for x in sys.meta_path]; "
            "f = f[f.index('PathFinder') - 1:]; "
            "import fbpkg.kept; print(m, f, 'pycds._pycds' in sys.modules)")
    p = ok(share(project, ["-c", code]))
    # (other finders, e.g. setuptools' DistutilsMetaFinder, may come first)
    assert p.stdout == "['_pycds_boot'] ['_pycds_boot', 'PathFinder'] True\n"
    assert "fbpkg.kept" in served_lines(p.stderr)


@pytest.mark.parametrize("first", ["atexit", "_thread", "zipimport", "fbpkg.kept"])
def test_first_import_of_any_kind(project, first):
    # SHARE activates on the first import, whatever finder answers it (builtin, frozen,
    # from the archive); the import system may be iterating sys.meta_path meanwhile.
    p = ok(share(project, ["-c", "import %s, fbpkg.edited; print('ok')" % first]))
    assert p.stdout == "ok\n"
    assert "fbpkg.edited" in served_lines(p.stderr)


def test_custom_path_hooks_see_the_imports(project):
    # A program that installs its own path hook expects it to take part in its imports:
    # modules are then imported normally.
    code = textwrap.dedent("""\
        import sys
        calls = []
        def hook(path):
            calls.append(path)
            raise ImportError
        sys.path_hooks.insert(0, hook)
        sys.path_importer_cache.clear()
        import fbpkg.kept
        print(bool(calls))
        """)
    p = ok(share(project, ["-c", code], verbose="2"))
    assert p.stdout == "True\n"
    assert "pycds: fallback fbpkg: sys.path_hooks changed" in p.stderr
    assert "fbpkg.kept" not in served_lines(p.stderr)


def test_fallback_not_on_path(project):
    # Without the library directory on sys.path, its modules are not importable at all.
    p = share(project, ["-c", "import fbpkg"], verbose="2", PYTHONPATH="")
    assert p.returncode == 1 and "ModuleNotFoundError" in p.stderr
    assert "pycds: fallback fbpkg: not on the search path" in p.stderr


def test_fallback_cwd_changed(project, tmp_path):
    # '' on sys.path is the current directory at import time, not at the first lookup.
    other = tmp_path / "other"
    write(other / "localmod.py", 'VALUE = "other directory"\n')
    code = ("import json, os, sys; os.chdir(sys.argv[1]); import localmod; "
            "print(localmod.VALUE)")
    p = ok(share(project, ["-c", code, str(other)]))
    assert p.stdout == "other directory\n"
    assert "json" in served_lines(p.stderr)


def test_fallback_optimization_level(project):
    # The archive holds code compiled without -O: under -O it must not be used (asserts
    # and docstrings differ), and the program behaves as without pycds.
    write(project["lib"] / "withassert.py", '''\
        """Doc."""
        def f():
            assert False, "assert ran"
            return "assert skipped"
        ''')
    lst, img = project["dir"] / "o.lst", project["dir"] / "o.img"
    code = ("import withassert\ntry: print(withassert.f(), withassert.__doc__)\n"
            "except AssertionError as e: print(e, withassert.__doc__)")
    trace_dump(["-c", code], project["app"], lst, img, **project["env"])
    for opt, out in ((["-O"], "assert skipped Doc.\n"), (["-OO"], "assert skipped None\n"),
                     ([], "assert ran Doc.\n")):
        p = ok(run([*opt, "-c", code], cwd=project["app"], PYCDSMODE="SHARE",
                   PYCDSARCHIVE=img, PYCDSVERBOSE="2", **project["env"]))
        assert p.stdout == out, opt
        assert ("withassert" in served_lines(p.stderr)) == (not opt)
    # And an archive dumped under -O serves -O processes.
    img2 = project["dir"] / "o2.img"
    ok(run(["-O"], cwd=project["app"], PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img2,
           **project["env"]))
    p = ok(run(["-O", "-c", code], cwd=project["app"], PYCDSMODE="SHARE", PYCDSARCHIVE=img2,
               PYCDSVERBOSE="1", **project["env"]))
    assert p.stdout == "assert skipped Doc.\n"
    assert "withassert" in served_lines(p.stderr)


def test_python_dash_m_archived_module(project):
    report = project["dir"] / "served.txt"
    plain = ok(run(["-m", "fbpkg.cli"], cwd=project["app"], **project["env"]))
    p = ok(share(project, ["-m", "fbpkg.cli"], PYCDS_TEST_REPORT=report))
    assert p.stdout == plain.stdout == "main: __main__ fbpkg.cli True\n"
    assert "fbpkg.cli" in eval(report.read_text(encoding="utf-8"))
    assert "fbpkg.cli" in served_lines(p.stderr)


def test_warning_points_at_archived_module(project):
    args = ["-W", "always", "-c", "import fbpkg.warner"]
    plain = ok(run(args, cwd=project["app"], **project["env"]))
    p = ok(share(project, args))
    assert "fbpkg.warner" in served_lines(p.stderr)
    path = str(project["lib"] / "fbpkg" / "warner.py")
    expected = "%s:2: UserWarning: warned from module body\n" % path
    assert expected in plain.stderr
    assert without_served(p.stderr) == plain.stderr
    assert 'warnings.warn("warned from module body")' in plain.stderr


def test_traceback_shows_source_lines(project):
    args = ["-c", "import fbpkg.boom; fbpkg.boom.boom()"]
    plain = run(args, cwd=project["app"], **project["env"])
    p = share(project, args)
    assert p.returncode == plain.returncode == 1
    assert "fbpkg.boom" in served_lines(p.stderr)
    assert without_served(p.stderr) == plain.stderr
    path = str(project["lib"] / "fbpkg" / "boom.py")
    assert 'File "%s", line 3, in boom' % path in plain.stderr
    assert 'raise ValueError("boom %d" % x)' in plain.stderr


def test_inspect_getsource_of_archived_module(project):
    code = ("import inspect, fbpkg.edited, fbpkg.boom; "
            "print(inspect.getsource(fbpkg.edited.value), end=''); "
            "print(inspect.getsource(fbpkg.boom), end=''); "
            "print(inspect.getsourcefile(fbpkg.boom.boom))")
    plain = ok(run(["-c", code], cwd=project["app"], **project["env"]))
    p = ok(share(project, ["-c", code]))
    assert {"fbpkg.edited", "fbpkg.boom"} <= set(served_lines(p.stderr))
    assert p.stdout == plain.stdout
    assert p.stdout.startswith('def value():\n    return "old"\ndef boom():\n')


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "empty", "directory",
                                  "fifo"])
def test_bad_archive_falls_back(project, kind):
    bad = project["dir"] / "bad.img"
    if kind == "truncated":
        data = project["archive"].read_bytes()
        bad.write_bytes(data[:len(data) // 2])
    elif kind == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "directory":
        bad.mkdir()
    elif kind == "fifo":
        os.mkfifo(bad)
    p = run(["app.py"], cwd=project["app"], timeout=60, PYCDSMODE="SHARE",
            PYCDSARCHIVE=bad, **project["env"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == project["plain"].stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "pycds" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_damaged_module_in_archive(tmp_path):
    # A bit flip inside one module's data: that module imports normally, with one warning
    # (SHARE); AUTO says nothing and replaces the archive at exit.
    # (Not identifier-like, so not interned: a str of the module's span, not an extern.)
    write(tmp_path / "big.py", "DATA = %r\n" % ("0123456789 bcdef" * 2000))
    code = "import big; print(len(big.DATA))"
    lst, img = tmp_path / "b.lst", tmp_path / "b.img"
    lst.write_text("big\n", encoding="utf-8")  # only it: its data fills the archive
    ok(run([], cwd=tmp_path, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img))
    assert archive_names(img) == ["big"]
    data = bytearray(img.read_bytes())
    data[len(data) // 2] ^= 0x10
    img.write_bytes(bytes(data))
    p = ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img))
    assert p.stdout == "32000\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pycds: warning: ") and "big" in lines[0]
    assert "damaged" in lines[0]
    p = ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="AUTO", PYCDSARCHIVE=img))
    assert p.stdout == "32000\n" and p.stderr == ""
    p = ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="AUTO", PYCDSARCHIVE=img,
               PYCDSVERBOSE="1"))
    assert p.stdout == "32000\n" and "big" in served_lines(p.stderr)


def test_archive_of_other_module_set_is_harmless(project, w1):
    # An archive that does not contain the program's modules changes nothing.
    p = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="SHARE", PYCDSARCHIVE=w1["archive"],
               **project["env"]))
    assert p.stdout == project["plain"].stdout and p.stderr == ""


# -- AUTO -------------------------------------------------------------------------------

def test_auto_mode(project):
    img = project["dir"] / "auto.img"
    r1, r2, r3 = (project["dir"] / ("auto%d.json" % i) for i in (1, 2, 3))
    p1 = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="AUTO", PYCDSARCHIVE=img,
                PYCDS_TEST_REPORT=r1, **project["env"]))
    assert p1.stdout == project["plain"].stdout and p1.stderr == ""
    assert img.is_file()
    s1 = read_report(r1)["stats"]
    assert s1["mode"] == "auto" and s1["served"] == []
    assert {"localmod", "fbpkg.edited", "shadowed"} <= set(archive_names(img))

    p2 = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="AUTO", PYCDSARCHIVE=img,
                PYCDS_TEST_REPORT=r2, **project["env"]))
    assert p2.stdout == project["plain"].stdout and p2.stderr == ""
    s2 = read_report(r2)["stats"]
    assert {"localmod", "fbpkg", "fbpkg.edited", "fbpkg.kept", "shadowed"} <= set(s2["served"])
    assert s2["fallbacks"] == []
    # The served modules' attributes are those of the normal run.
    plain_attrs = read_report(r1)["attrs"]
    shared_attrs = read_report(r2)["attrs"]
    for name in s2["served"]:
        assert shared_attrs[name] == plain_attrs[name], name

    # A changed module runs its new code, and the archive is refreshed at exit.
    edited = project["lib"] / "fbpkg" / "edited.py"
    edited.write_text('def value():\n    return "auto-new"\n', encoding="utf-8")
    p3 = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="AUTO", PYCDSARCHIVE=img,
                **project["env"]))
    assert "edited: auto-new\n" in p3.stdout
    p4 = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="AUTO", PYCDSARCHIVE=img,
                PYCDS_TEST_REPORT=r3, **project["env"]))
    assert "edited: auto-new\n" in p4.stdout
    assert "fbpkg.edited" in read_report(r3)["stats"]["served"]


def test_auto_mode_replaces_damaged_archive(project):
    img = project["dir"] / "auto.img"
    img.write_bytes(b"not an archive")
    p = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="AUTO", PYCDSARCHIVE=img,
               **project["env"]))
    assert p.stdout == project["plain"].stdout and p.stderr == ""
    p = ok(run(["app.py"], cwd=project["app"], PYCDSMODE="AUTO", PYCDSARCHIVE=img,
               PYCDSVERBOSE="1", **project["env"]))
    assert "localmod" in served_lines(p.stderr)


# -- TRACE and DUMP ---------------------------------------------------------------------

TRACE_FD_SCRIPT = r'''
import os, subprocess, sys, json
lst = os.path.realpath(os.environ["PYCDSLIST"])

def fds_on_list():
    bad = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target == lst or target.startswith(lst + " "):
            bad.append(fd)
    return bad

results = {"self": fds_on_list()}
# A forked child inherits every descriptor, close-on-exec or not.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, json.dumps(fds_on_list()).encode())
    os._exit(0)
os.close(w)
with os.fdopen(r, "rb") as f:
    results["fork"] = json.loads(f.read())
os.waitpid(pid, 0)
# A spawned interpreter (itself traced: same environment) with all inheritable fds.
child = "import os, json, sys; lst = sys.argv[1]; print(json.dumps([fd for fd in os.listdir('/proc/self/fd') if os.path.realpath('/proc/self/fd/' + fd) == lst]))"
out = subprocess.run([sys.executable, "-c", child, lst], close_fds=False,
                     capture_output=True, text=True, check=True).stdout
results["spawn"] = json.loads(out)
import json as _json
print(_json.dumps(results, sort_keys=True))
'''


def test_trace_opens_no_fd_before_exit(tmp_path):
    lst = tmp_path / "t.lst"
    lst.write_text("previously.traced\n", encoding="utf-8")
    script = tmp_path / "fds.py"
    script.write_text(TRACE_FD_SCRIPT, encoding="utf-8")
    p = ok(run([str(script)], cwd=tmp_path, PYCDSMODE="TRACE", PYCDSLIST=lst))
    assert json.loads(p.stdout) == {"fork": [], "self": [], "spawn": []}
    assert p.stderr == ""
    names = read_list(lst)
    assert names[0] == "previously.traced"
    assert "subprocess" in names and "json" in names
    assert len(names) == len(set(names))


def test_relative_paths_survive_chdir(tmp_path):
    # PYCDSLIST / PYCDSARCHIVE are relative to the directory the program started in,
    # even when the list or archive is written at exit after an os.chdir().
    (tmp_path / "elsewhere").mkdir()
    code = "import os, json; os.chdir('elsewhere'); print('ok')"
    ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="TRACE", PYCDSLIST="rel.lst"))
    assert "json" in read_list(tmp_path / "rel.lst")
    ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="AUTO", PYCDSARCHIVE="rel.img"))
    assert "json" in archive_names(tmp_path / "rel.img")
    assert os.listdir(tmp_path / "elsewhere") == []
    p = ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="AUTO", PYCDSARCHIVE="rel.img",
               PYCDSVERBOSE="1"))
    assert "json" in served_lines(p.stderr)


def test_no_encoding_warning(tmp_path):
    flags = ["-X", "warn_default_encoding", "-W", "error::EncodingWarning"]
    write(tmp_path / "m.py", "VALUE = 1\n")
    code = "import m, json; print(m.VALUE)"
    lst, img = tmp_path / "e.lst", tmp_path / "e.img"
    for args, values in (
            ([*flags, "-c", code], {"PYCDSMODE": "TRACE", "PYCDSLIST": lst}),
            (flags, {"PYCDSMODE": "DUMP", "PYCDSLIST": lst, "PYCDSARCHIVE": img,
                     "PYCDSVERBOSE": "2"}),
            ([*flags, "-c", code], {"PYCDSMODE": "SHARE", "PYCDSARCHIVE": img,
                                    "PYCDSVERBOSE": "2"}),
            ([*flags, "-c", code], {"PYCDSMODE": "AUTO",
                                    "PYCDSARCHIVE": tmp_path / "a.img"})):
        p = ok(run(args, cwd=tmp_path, **values))
        assert "EncodingWarning" not in p.stderr and "pycds: warning" not in p.stderr, p.stderr
    assert "m" in read_list(lst)
    p = ok(run([*flags, "-c", code], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img,
               PYCDSVERBOSE="1"))
    assert "m" in served_lines(p.stderr)


def test_dump_never_executes_main(tmp_path):
    write(tmp_path / "app.py", '''\
        import json
        print("APP MAIN RAN")
        ''')
    lst, img = tmp_path / "m.lst", tmp_path / "m.img"
    p = ok(run(["-m", "app"], cwd=tmp_path, PYCDSMODE="TRACE", PYCDSLIST=lst))
    assert p.stdout == "APP MAIN RAN\n"
    names = read_list(lst)
    assert "json" in names and "__main__" not in names
    # Even when the list names the program and __main__, DUMP only compiles.
    with open(lst, "a", encoding="utf-8") as f:
        f.write("app\n__main__\n")
    p = ok(run([], cwd=tmp_path, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img,
               PYCDSVERBOSE="2"))
    assert "APP MAIN RAN" not in p.stdout + p.stderr
    names = archive_names(img)
    assert "app" in names and "json" in names and "__main__" not in names
    # python -m app with the archive prints once, as without it.
    p = ok(run(["-m", "app"], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img))
    assert p.stdout == "APP MAIN RAN\n"


def test_dump_finds_script_directory_modules(tmp_path):
    # DUMP runs during start-up, before sys.path[0] exists: it must still find the
    # modules of the current directory (a bare `python`) or of the script's directory.
    write(tmp_path / "proj" / "helper.py", "X = 1\n")
    write(tmp_path / "proj" / "main.py", "import helper\nprint(helper.X)\n")
    lst = tmp_path / "h.lst"
    ok(run([str(tmp_path / "proj" / "main.py")], cwd=tmp_path, PYCDSMODE="TRACE",
           PYCDSLIST=lst))
    assert "helper" in read_list(lst)
    img1, img2 = tmp_path / "h1.img", tmp_path / "h2.img"
    ok(run([], cwd=tmp_path / "proj", PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img1))
    assert "helper" in archive_names(img1)
    ok(run([str(tmp_path / "proj" / "main.py")], cwd=tmp_path, PYCDSMODE="DUMP",
           PYCDSLIST=lst, PYCDSARCHIVE=img2))
    assert "helper" in archive_names(img2)
    for img in (img1, img2):
        p = ok(run([str(tmp_path / "proj" / "main.py")], cwd=tmp_path, PYCDSMODE="SHARE",
                   PYCDSARCHIVE=img, PYCDSVERBOSE="1"))
        assert p.stdout == "1\n" and "helper" in served_lines(p.stderr)


def test_dump_reports_missing_list(tmp_path):
    p = ok(run(["-c", "print('still runs')"], cwd=tmp_path, PYCDSMODE="DUMP",
               PYCDSLIST=tmp_path / "nope.lst", PYCDSARCHIVE=tmp_path / "x.img"))
    assert p.stdout == "still runs\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pycds: ") and "nope.lst" in lines[0]


@pytest.mark.parametrize("values", [
    {"PYCDSMODE": "bogus"},
    {"PYCDSMODE": "SHARE"},
    {"PYCDSMODE": "TRACE"},
    {"PYCDSMODE": "DUMP", "PYCDSLIST": "x.lst"},
])
def test_misconfiguration_is_one_warning(tmp_path, values):
    p = ok(run(["-c", "print('ok')"], cwd=tmp_path, **values))
    assert p.stdout == "ok\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pycds: warning: ")


def test_pth_does_nothing_without_mode(tmp_path):
    for values in ({}, {"PYCDSMODE": ""}):
        p = ok(run(["-X", "importtime", "-c", "pass"], cwd=tmp_path, **values))
        assert "pycds" not in p.stderr
        assert "site" in p.stderr  # importtime output is there
        p = ok(run(["-c", "import sys; print(sorted(m for m in sys.modules if 'pycds' in m))"],
                   cwd=tmp_path, PYCDSLIST="x", PYCDSARCHIVE="y", **values))
        assert p.stdout == "[]\n"


def test_unusual_packages_and_self_reimport(tmp_path):
    # A namespace package (``__path__`` is a _NamespacePath), a package that replaces its
    # ``__path__`` with a tuple, a module that imports itself while it runs, and a module
    # reloaded with importlib.reload: all served, all behaving as in a normal import.
    write(tmp_path / "ns" / "sub.py", "VALUE = 'ns.sub'\n")
    write(tmp_path / "tpkg" / "__init__.py", "__path__ = tuple(__path__)\n")
    write(tmp_path / "tpkg" / "child.py", "VALUE = 'tpkg.child'\n")
    write(tmp_path / "selfimp.py", """\
        import selfimp
        FIRST = selfimp is __import__('sys').modules[__name__]
        COUNT = 1
    """)
    write(tmp_path / "reloaded.py", """\
        import sys
        RUNS = getattr(sys.modules[__name__], 'RUNS', 0) + 1
    """)
    write(tmp_path / "main.py", """\
        import importlib, ns.sub, tpkg.child, selfimp, reloaded
        importlib.reload(reloaded)
        print(ns.sub.VALUE, type(ns.__path__).__name__, tpkg.child.VALUE, type(tpkg.__path__).__name__,
              selfimp.FIRST, selfimp.COUNT, reloaded.RUNS)
    """)
    plain = ok(run(["main.py"], cwd=tmp_path))
    lst, img = tmp_path / "u.lst", tmp_path / "u.img"
    trace_dump(["main.py"], tmp_path, lst, img)
    p = ok(run(["main.py"], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img, PYCDSVERBOSE="1"))
    assert p.stdout == plain.stdout
    assert plain.stdout.split() == ["ns.sub", "_NamespacePath", "tpkg.child", "tuple", "True", "1", "2"]
    served = served_lines(p.stderr)
    for name in ("ns.sub", "tpkg", "tpkg.child", "selfimp", "reloaded"):
        assert name in served, (name, p.stderr)
    assert without_served(p.stderr) == ""


RELEASE_MODULES = {
    "bodies.py": '''\
        """Module docstring."""
        import sys
        LIMIT = (1, 2, 3)
        NAME = "a string constant with spaces"

        def check(x):
            return x in {"alpha", "beta", "gamma"}

        class Outer:
            """Outer docstring."""
            X = 1.5

            class Inner:
                Y = ("nested", b"bytes", 10**30)

                def method(self):
                    return self.Y

            def boom(self):
                raise ValueError("from a method")

        if check("beta"):
            SELECTED = [k for k in sorted({"b": 1, "a": 2})]
        ''',
    "keepframe.py": '''\
        import sys
        FRAME = sys._getframe()
        ''',
    "keepclass.py": '''\
        import sys
        class A:
            BODY = sys._getframe().f_code
        ''',
}

RELEASE_MAIN = '''\
import gc, importlib, inspect, marshal, sys, traceback
import bodies, keepframe, keepclass
import pycds
arc = pycds._hook._state["archive"]
released = {n: arc.get(n) is None for n in ("bodies", "keepframe", "keepclass")}
stats = pycds.stats()["load"]
gc.collect()
o = bodies.Outer()
try:
    o.boom()
except ValueError:
    tb = traceback.format_exc()
body = keepframe.FRAME.f_code
print(json.dumps({
    "released": released,
    "counts": [stats["released"], stats["kept"], stats["released_bytes"] > 0],
    "values": [bodies.__doc__, bodies.LIMIT, bodies.NAME, bodies.check("gamma"), bodies.check("x"),
               bodies.Outer.__doc__, bodies.Outer.X, repr(bodies.Outer.Inner().method()),
               bodies.SELECTED, bodies.Outer.__qualname__, bodies.Outer.Inner.__qualname__],
    "source": inspect.getsource(bodies.Outer.Inner),
    "tb": "raise ValueError" in tb and "bodies.py" in tb,
    "kept_body": [body.co_name, body.co_filename == keepframe.__file__,
                  marshal.loads(marshal.dumps(body)) == body,
                  keepclass.A.BODY.co_name],
}))
importlib.reload(bodies)
print(bodies.check("alpha"), bodies.Outer.Inner().method()[0], arc.get("bodies") is None)
'''


def test_module_bodies_are_released_after_they_ran(tmp_path):
    # Module and class-body code (a transient span per module) is given back once the body
    # ran, unless something still holds it; what stays (functions, classes, constants) and
    # a reload behave as in a normal import.
    for name, text in RELEASE_MODULES.items():
        write(tmp_path / name, text)
    write(tmp_path / "main.py", "import json\n" + RELEASE_MAIN)
    plain = run(["main.py"], cwd=tmp_path)
    assert plain.returncode == 1 and "AttributeError" in plain.stderr  # no archive: no state
    lst, img = tmp_path / "r.lst", tmp_path / "r.img"
    trace_dump(["-c", "import bodies, keepframe, keepclass"], tmp_path, lst, img)
    p = ok(run(["main.py"], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img))
    out, reload_line = p.stdout.splitlines()
    r = json.loads(out)
    assert r["released"] == {"bodies": True, "keepframe": False, "keepclass": False}
    released, kept, some_bytes = r["counts"]
    assert kept == 2 and released >= 1 and some_bytes
    assert r["values"] == [
        "Module docstring.", [1, 2, 3], "a string constant with spaces", True, False,
        "Outer docstring.", 1.5, repr(("nested", b"bytes", 10**30)), ["a", "b"],
        "Outer", "Outer.Inner",
    ]
    assert "class Inner:" in r["source"] and r["tb"]
    assert r["kept_body"] == ["<module>", True, True, "A"]
    assert reload_line == "True nested True"


def test_traced_module_bodies_are_kept(tmp_path):
    # Under sys.settrace the bodies' code is instrumented (runtime state): never given back.
    for name, text in RELEASE_MODULES.items():
        write(tmp_path / name, text)
    write(tmp_path / "main.py", """\
        import sys
        events = []
        sys.settrace(lambda f, e, a: events.append(e) or None)
        import bodies
        sys.settrace(None)
        import pycds
        s = pycds.stats()["load"]
        print(s["released"], s["kept"], bodies.check("beta"), "call" in events)
        """)
    lst, img = tmp_path / "r.lst", tmp_path / "r.img"
    trace_dump(["-c", "import bodies"], tmp_path, lst, img)
    p = ok(run(["main.py"], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img))
    assert p.stdout.split() == ["0", "1", "True", "True"]


def test_frozenset_constant_shared_by_body_and_function(tmp_path):
    # CPython merges equal constants across a module: the body's and the function's
    # ``in {...}`` are one frozenset, archived in both the module's spans.
    write(tmp_path / "fsmod.py", """\
        def f(x):
            return x in {1, 2, 3, "a"}
        HIT = [x for x in (0, 1, "a", "b") if x in {1, 2, 3, "a"}]
        class C:
            IN = 3 in {1, 2, 3, "a"}
        """)
    lst, img = tmp_path / "f.lst", tmp_path / "f.img"
    trace_dump(["-c", "import fsmod"], tmp_path, lst, img)
    assert "fsmod" in archive_names(img)
    p = ok(run(["-c", "import fsmod, pycds; print(fsmod.HIT, fsmod.f(2), fsmod.f(9), fsmod.C.IN,"
                " pycds.stats()['load']['released'])"],
               cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img, PYCDSVERBOSE="1"))
    assert p.stdout == "[1, 'a'] True False True 1\n"
    assert "fsmod" in served_lines(p.stderr)


def test_module_body_shares_its_file_name_with_its_functions(tmp_path):
    # After a normal import a module's code objects share one co_filename string (marshal
    # writes it once); the body's code (a transient span) refers to the kept span's.
    write(tmp_path / "fnmod.py", """\
        import sys
        def f():
            return sys._getframe().f_code.co_filename
        class C:
            BODY = sys._getframe().f_code.co_filename
            def m(self):
                return 1
        BODY = sys._getframe().f_code.co_filename
        SAME = (BODY is f.__code__.co_filename, C.BODY is f.__code__.co_filename,
                f() is C.m.__code__.co_filename, BODY == __file__)
        """)
    write(tmp_path / "nofunc.py", "import sys\nNAME = sys._getframe().f_code.co_filename\n")
    lst, img = tmp_path / "f.lst", tmp_path / "f.img"
    trace_dump(["-c", "import fnmod, nofunc"], tmp_path, lst, img)
    code = "import fnmod, nofunc; print(fnmod.SAME, nofunc.NAME == nofunc.__file__)"
    plain = ok(run(["-c", code], cwd=tmp_path))
    assert plain.stdout == "(True, True, True, True) True\n"
    p = ok(run(["-c", code], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img,
               PYCDSVERBOSE="1"))
    assert p.stdout == plain.stdout
    assert {"fnmod", "nofunc"} <= set(served_lines(p.stderr))


def test_damaged_kept_span_fails_only_its_module_when_checked(tmp_path):
    # A module's kept span is checked after its transient span (load order); when it is
    # damaged, that module fails and the next module still loads.
    write(tmp_path / "m0.py", "DATA = %r\ndef f():\n    return DATA\n" % ("0123456789 bcdef" * 2000))
    write(tmp_path / "m1.py", "VALUE = 'm1 value'\n")
    lst, img = tmp_path / "m.lst", tmp_path / "m.img"
    lst.write_text("m0\nm1\n", encoding="utf-8")
    ok(run([], cwd=tmp_path, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img))
    data = bytearray(img.read_bytes())
    at = bytes(data).index(b"0123456789 bcdef" * 4) + 1000
    data[at] ^= 0x10
    img.write_bytes(bytes(data))
    code = """\
import pycds, sys
for check in (True, False):
    arc = pycds.load(sys.argv[1], check=check)
    try:
        arc["m0"]
        print("m0 loaded")
    except pycds.CorruptArchiveError:
        print("m0 refused")
    print(arc["m1"].co_name)
"""
    p = ok(run(["-c", code, str(img)], cwd=tmp_path))
    assert p.stdout.split("\n")[:4] == ["m0 refused", "<module>", "m0 refused", "<module>"]


def _own_copy(tmp_path):
    """A copy of the installed ``pycds`` package and ``_pycds_boot`` without any ``.pyc``,
    in a directory that shadows the installed ones through ``PYTHONPATH``."""
    import pycds
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(pycds.__file__), site / "pycds",
                    ignore=shutil.ignore_patterns("__pycache__"))
    boot = os.path.join(os.path.dirname(os.path.dirname(pycds.__file__)), "_pycds_boot.py")
    shutil.copy2(boot, site / "_pycds_boot.py")
    return site


def test_dump_writes_missing_bytecode_of_pycds_start_up_modules(tmp_path):
    # Installed without compiling and run with PYTHONDONTWRITEBYTECODE, pycds's own
    # start-up modules would be compiled by every process with PYCDSMODE set. DUMP writes
    # their .pyc once (only where missing or stale); SHARE then loads them.
    site = _own_copy(tmp_path)
    tag = sys.implementation.cache_tag
    pycs = {site / "__pycache__" / ("_pycds_boot.%s.pyc" % tag)} | {
        site / "pycds" / "__pycache__" / ("%s.%s.pyc" % (m, tag))
        for m in ("__init__", "_hook", "_startup")}
    write(tmp_path / "app.py", "import json\nprint(json.dumps([1]))\n")
    lst, img = tmp_path / "a.lst", tmp_path / "a.img"
    common = {"PYTHONPATH": site, "PYTHONDONTWRITEBYTECODE": "1"}
    ok(run(["app.py"], cwd=tmp_path, PYCDSMODE="TRACE", PYCDSLIST=lst, **common))
    assert not any(p.exists() for p in pycs)
    ok(run([], cwd=tmp_path, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img, **common))
    assert all(p.exists() for p in pycs), sorted(map(str, pycs))
    assert not (site / "pycds" / "__pycache__" / ("__main__.%s.pyc" % tag)).exists()
    # SHARE uses them: no pycds module is compiled from source.
    p = ok(run(["-v", "app.py"], cwd=tmp_path, PYCDSMODE="SHARE", PYCDSARCHIVE=img,
               PYCDSVERBOSE="1", **common))
    assert p.stdout == "[1]\n" and "json" in served_lines(p.stderr)
    for pyc in pycs:  # (pycds._startup runs in the other modes)
        assert ("# %s matches " % pyc in p.stderr) != pyc.name.startswith("_startup."), pyc
    # Up to date: nothing written again (the API reports what it wrote).
    api = ("import json, sys, pycds; r = pycds.dump(sys.argv[1], sys.argv[2]); "
           "print(json.dumps(r['bytecode_written']))")
    p = ok(run(["-c", api, lst, tmp_path / "b.img"], cwd=tmp_path, **common))
    assert json.loads(p.stdout) == []
    # Stale (the source's mtime changed) or foreign (another magic number): rewritten.
    hook_pyc = site / "pycds" / "__pycache__" / ("_hook.%s.pyc" % tag)
    st = os.stat(site / "pycds" / "_hook.py")
    os.utime(site / "pycds" / "_hook.py", (st.st_atime, st.st_mtime - 10))
    init_pyc = site / "pycds" / "__pycache__" / ("__init__.%s.pyc" % tag)
    init_pyc.write_bytes(b"\0\0\0\0" + init_pyc.read_bytes()[4:])
    p = ok(run(["-c", api, lst, tmp_path / "b.img"], cwd=tmp_path, **common))
    assert sorted(json.loads(p.stdout)) == sorted([str(hook_pyc), str(init_pyc)])
    # Hash-based .pyc files are honoured as the import system honours them.
    import py_compile
    py_compile.compile(str(site / "_pycds_boot.py"), cfile=str(site / "__pycache__" / (
        "_pycds_boot.%s.pyc" % tag)), invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    p = ok(run(["-c", api, lst, tmp_path / "b.img"], cwd=tmp_path, **common))
    assert json.loads(p.stdout) == []
    with open(site / "_pycds_boot.py", "a", encoding="utf-8") as f:
        f.write("\n# changed\n")
    p = ok(run(["-c", api, lst, tmp_path / "b.img"], cwd=tmp_path, **common))
    assert json.loads(p.stdout) == [str(site / "__pycache__" / ("_pycds_boot.%s.pyc" % tag))]
    # python -m pycds dump says so.
    hook_pyc.unlink()
    p = ok(run(["-m", "pycds", "dump", lst, "-o", tmp_path / "d.img"], cwd=tmp_path, **common))
    assert p.stdout.endswith("wrote %s (pycds's own start-up code had no current .pyc)\n"
                             % hook_pyc), p.stdout
    # A location that cannot be written is left alone; the dump itself succeeds.
    shutil.rmtree(site / "pycds" / "__pycache__")
    (site / "pycds" / "__pycache__").write_bytes(b"not a directory")
    p = ok(run(["-c", api, lst, tmp_path / "c.img"], cwd=tmp_path, **common))
    assert json.loads(p.stdout) == [] and (tmp_path / "c.img").exists()
    assert (site / "pycds" / "__pycache__").read_bytes() == b"not a directory"
