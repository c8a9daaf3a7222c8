"""Concurrency: processes starting while the archive is re-published, threads importing
archived modules at the same time, ``os.fork`` and ``multiprocessing`` children.

Run (the interpreter must have pycds installed; the driver itself can be any Python 3.8+)::

    python3 compat/concurrency.py --python /tmp/robust-venvs/3.12/bin/python [--seconds 60]
        [--repeat 20] [--json FILE]

Parts:

A. *Re-publishing under load*: for ``--seconds``, 16 driver threads each start the test
   program (``robustlib.write_app``) in a loop, alternately in SHARE and AUTO mode, while
   another process re-dumps the archive over and over (``PYCDSMODE=DUMP``, which publishes
   atomically with a rename), alternating between the full module list and half of it;
   every fourth cycle the archive is deleted first, so AUTO processes publish archives of
   their own at exit at the same time. Oracles: every run has the plain run's stdout and
   exit status, no crash; an AUTO run prints no warning; a SHARE run prints at most one
   warning, and only "No such file" (the archive was deleted at that moment) -- a torn or
   partial file would show as any other warning. Afterwards the archive passes
   ``python -m pycds verify``.
B. *Threads*: 8 threads, started together by a barrier, each import a disjoint set of
   archived modules (their shared dependencies are imported concurrently too), with a
   tiny switch interval; repeated ``--repeat`` times.
C. *fork*: the parent loads the archive and some modules, then forks 4 children, each
   importing other archived modules (spans loaded after the fork, through the inherited
   descriptor); the parent imports more after the children exit.
D. *multiprocessing* with the ``spawn``, ``fork`` and ``forkserver`` start methods: pool
   workers import archived modules.

For B, C and D the oracles are: stdout equal to the plain run, no crash, no warning, and
the modules imported only in the threads / children are really served (``pycds: served``
lines, ``PYCDSVERBOSE=1``; forked and spawned children write to the same stderr).
Exit status 1 if anything failed.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import robustlib as R  # noqa: E402

# Disjoint sets of modules per thread / child (their dependencies overlap on purpose).
GROUPS = [
    ["json", "csv", "difflib"],
    ["fractions", "statistics", "numbers"],
    ["email.message", "email.utils", "email.parser"],
    ["argparse", "gettext", "shlex"],
    ["ipaddress", "urllib.parse", "html"],
    ["dataclasses", "pprint", "textwrap"],
    ["calendar", "string", "base64"],
    ["tomllib", "zipfile", "tarfile"],
]

USE = R.PROBES

THREADS_PROG = '''\
"""8 threads import disjoint sets of modules at the same time."""
import sys
import threading
GROUPS = %r
%s
sys.setswitchinterval(1e-6)
results = {}
barrier = threading.Barrier(len(GROUPS))


def work(i):
    barrier.wait()
    results[i] = [use(n) for n in GROUPS[i]]


threads = [threading.Thread(target=work, args=(i,)) for i in range(len(GROUPS))]
for t in threads:
    t.start()
for t in threads:
    t.join()
for i in sorted(results):
    print(i, results[i])
''' % (GROUPS, USE)

FORK_PROG = '''\
"""The parent loads some modules, forks 4 children that import others."""
import os
import sys
GROUPS = %r
%s
print("parent", use("json"), use("textwrap"))
sys.stdout.flush()
pids = []
for i in range(4):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = " ".join(use(n) for n in GROUPS[i] if n != "json")
        os.write(w, out.encode())
        os.close(w)
        sys.stderr.flush()
        os._exit(0)
    os.close(w)
    pids.append((pid, r))
for i, (pid, r) in enumerate(pids):
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    _, status = os.waitpid(pid, 0)
    print("child", i, os.waitstatus_to_exitcode(status), data.decode())
print("parent again", " ".join(use(n) for n in GROUPS[4]))
''' % (GROUPS, USE)

MP_PROG = '''\
"""multiprocessing pool workers import archived modules."""
import multiprocessing
import sys
GROUPS = %r
%s


def work(i):
    return i, [use(n) for n in GROUPS[i]]


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        for i, res in sorted(pool.map(work, range(1, len(GROUPS)))):
            print(i, res)
''' % (GROUPS, USE)


def modules_only_in_children(groups_used):
    return {n for g in groups_used for n in g}


def part_program(ctx, name, text, args, children_modules, repeat):
    """Trace, dump and run a program ``repeat`` times in SHARE mode."""
    d = os.path.join(ctx.work, name)
    os.makedirs(d)
    prog = os.path.join(d, "prog.py")
    with open(prog, "w", encoding="utf-8") as f:
        f.write(text)
    cmd = [prog] + args
    plain = R.run([ctx.python] + cmd, env=R.base_env(), cwd=d, timeout=120)
    row = {"part": name, "runs": 0, "failures": [], "served_min": None, "served_max": None,
           "children_served": None}
    if plain.rc != 0:
        row["failures"].append("plain run failed: %s" % plain.err[-800:])
        return row
    lst, archive = os.path.join(d, "prog.lst"), os.path.join(d, "prog.img")
    # Forked children leave through os._exit, so they never write a trace: record the
    # modules of every group in one process first (TRACE appends to the list).
    warm = "import " + ", ".join(sorted(children_modules | {"json", "textwrap"}))
    w = R.run([ctx.python, "-c", warm], env=R.base_env(PYCDSMODE="TRACE", PYCDSLIST=lst),
              cwd=d, timeout=120)
    if w.rc != 0:
        row["failures"].append("warm-up trace failed: %s" % w.err[-800:])
        return row
    R.trace_and_dump(ctx.python, cmd, lst, archive, cwd=d)
    served_children = set()
    counts = []
    for i in range(repeat):
        res = R.run([ctx.python] + cmd, env=R.base_env(PYCDSMODE="SHARE", PYCDSARCHIVE=archive,
                                                     PYCDSVERBOSE="1"), cwd=d, timeout=120)
        row["runs"] += 1
        crash = R.crash_reason(res)
        lines = R.pycds_lines(res.err)
        served = lines.served
        counts.append(len(served))
        served_children |= set(served) & children_modules
        problems = []
        if crash:
            problems.append("CRASH: " + crash)
        if res.out != plain.out:
            problems.append("stdout differs: %s" % first_diff(plain.out, res.out))
        if res.rc != plain.rc:
            problems.append("exit status %s" % res.rc)
        if lines.warnings:
            problems.append("warning: %s" % lines.warnings[0])
        if len(served) != len(set(served)):
            dup = sorted({n for n in served if served.count(n) > 1})
            if name not in ("fork", ) and not name.startswith("mp-"):
                problems.append("served twice in one process: %s" % dup[:5])
        if problems:
            row["failures"].append("run %d: %s | stderr: %s" % (i, "; ".join(problems),
                                                               res.err[-600:]))
    row["served_min"], row["served_max"] = min(counts), max(counts)
    row["children_served"] = "%d/%d" % (len(served_children), len(children_modules))
    missing = children_modules - served_children
    if missing:
        row["failures"].append("never served in threads/children: %s" % sorted(missing))
    return row


def first_diff(a, b):
    for x, y in zip(a.splitlines(), b.splitlines()):
        if x != y:
            return "%r vs %r" % (x, y)
    return "lengths %d vs %d" % (len(a), len(b))


def part_republish(ctx, seconds, nproc=16):
    d = os.path.join(ctx.work, "republish")
    os.makedirs(d)
    app = os.path.join(d, "app")
    main = R.write_app(app)
    plain = R.run([ctx.python, main], env=R.base_env(), cwd=app, timeout=120)
    lst, archive = os.path.join(d, "app.lst"), os.path.join(d, "app.img")
    R.trace_and_dump(ctx.python, [main], lst, archive, cwd=app)
    with open(lst) as f:
        names = [n for n in f.read().split() if n]
    half = os.path.join(d, "half.lst")
    with open(half, "w") as f:
        f.write("\n".join(names[::2]) + "\n")
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    stats = {"SHARE": 0, "AUTO": 0, "dumps": 0, "dump_failures": [], "deletes": 0,
             "served_runs": 0, "served_total": 0, "missing_warnings": 0}
    failures = []

    def dumper():
        cycle = 0
        while time.monotonic() < stop:
            cycle += 1
            if cycle % 4 == 0:
                try:
                    os.unlink(archive)
                    with lock:
                        stats["deletes"] += 1
                except FileNotFoundError:
                    pass
                time.sleep(0.3)
            r = R.run([ctx.python, "-c", "pass"],
                      env=R.base_env(PYCDSMODE="DUMP", PYCDSLIST=lst if cycle % 2 else half,
                                     PYCDSARCHIVE=archive), cwd=app, timeout=300)
            with lock:
                stats["dumps"] += 1
                if r.rc != 0 or "warning" in r.err or R.crash_reason(r):
                    stats["dump_failures"].append(r.err[-400:] or "rc %s" % r.rc)

    def starter(k):
        n = 0
        while time.monotonic() < stop:
            mode = "SHARE" if (k + n) % 2 == 0 else "AUTO"
            n += 1
            res = R.run([ctx.python, main], env=R.base_env(PYCDSMODE=mode, PYCDSARCHIVE=archive,
                                                          PYCDSVERBOSE="1"),
                        cwd=app, timeout=300)
            lines = R.pycds_lines(res.err)
            problems = []
            crash = R.crash_reason(res)
            if crash:
                problems.append("CRASH: " + crash)
            if res.out != plain.out or res.rc != 0:
                problems.append("output/exit status differs (rc %s)" % res.rc)
            missing = [w for w in lines.warnings if "No such file" in w]
            if mode == "AUTO" and lines.warnings:
                problems.append("AUTO warned: %s" % lines.warnings[0])
            if mode == "SHARE" and (len(lines.warnings) > 1 or len(missing) != len(lines.warnings)):
                problems.append("SHARE warnings: %s" % lines.warnings)
            with lock:
                stats[mode] += 1
                stats["missing_warnings"] += len(missing)
                if lines.served:
                    stats["served_runs"] += 1
                    stats["served_total"] += len(lines.served)
                if problems:
                    failures.append("%s run: %s | %s" % (mode, "; ".join(problems),
                                                         res.err[-500:]))

    threads = [threading.Thread(target=dumper)] + [threading.Thread(target=starter, args=(k,))
                                                   for k in range(nproc)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    # The archive left behind (by DUMP or an AUTO process) must be complete.
    if os.path.exists(archive):
        v = R.run([ctx.python, "-m", "pycds", "verify", archive], env=R.base_env(), timeout=120)
        if v.rc != 0:
            failures.append("final archive does not verify: %s" % (v.out + v.err)[-400:])
        verify = (v.out + v.err).strip()
    else:
        verify = "no archive left (deleted in the last cycle)"
    leftovers = [f for f in os.listdir(d) if f not in ("app", "app.lst", "half.lst", "app.img")]
    failures.extend("dump failed: %s" % f for f in stats["dump_failures"])
    return {"part": "republish", "seconds": round(elapsed, 1), "stats": stats,
            "failures": failures, "verify": verify, "leftover_files": leftovers}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--repeat", type=int, default=20, help="runs of each program in B, C, D")
    ap.add_argument("--processes", type=int, default=16)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()

    class Ctx:
        pass
    ctx = Ctx()
    ctx.python = args.python
    ctx.work = tempfile.mkdtemp(prefix="pycds-concurrency-", dir=args.workdir)
    version = R.interpreter_version(args.python)
    print("python: %s (%s); work directory %s" % (args.python, version, ctx.work))
    groups = GROUPS if tuple(map(int, version.split(".")[:2])) >= (3, 11) else GROUPS[:-1]

    print("A. %d processes in SHARE/AUTO while the archive is re-dumped, %.0f s ..."
          % (args.processes, args.seconds))
    sys.stdout.flush()
    a = part_republish(ctx, args.seconds, args.processes)
    rows = []
    print("B/C/D. threads, fork, multiprocessing (%d runs each) ..." % args.repeat)
    sys.stdout.flush()
    rows.append(part_program(ctx, "threads", THREADS_PROG, [], modules_only_in_children(groups),
                             args.repeat))
    rows.append(part_program(ctx, "fork", FORK_PROG, [],
                             modules_only_in_children(groups[:4]) - {"json"}, args.repeat))
    for method in ("spawn", "fork", "forkserver"):
        rows.append(part_program(ctx, "mp-" + method, MP_PROG, [method],
                                 modules_only_in_children(groups[1:]), args.repeat))

    print()
    s = a["stats"]
    print(R.table([[a["seconds"], args.processes, s["SHARE"], s["AUTO"], s["dumps"],
                    s["deletes"], s["missing_warnings"],
                    "%d (%.0f modules/run)" % (s["served_runs"], s["served_total"]
                                               / max(1, s["served_runs"])),
                    len(a["failures"])]],
                  ["seconds", "processes", "SHARE runs", "AUTO runs", "re-dumps",
                   "deletions", "'No such file' warnings", "runs served", "failures"]))
    print("final archive: %s" % a["verify"])
    if a["leftover_files"]:
        print("left-over files in the archive directory: %s" % a["leftover_files"])
    for f in a["failures"][:20]:
        print("  FAIL %s" % f)
    print()
    print(R.table([[r["part"], r["runs"], "%s-%s" % (r["served_min"], r["served_max"]),
                    r["children_served"], len(r["failures"])] for r in rows],
                  ["part", "runs", "modules served per run", "modules of threads/children served",
                   "failures"]))
    for r in rows:
        for f in r["failures"][:10]:
            print("  FAIL %s: %s" % (r["part"], f))
    n_fail = len(a["failures"]) + sum(len(r["failures"]) for r in rows)
    print()
    print("%d failures; wall time %.0f s" % (n_fail, time.monotonic() - t0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"republish": a, "programs": rows}, f, indent=1)
    if not args.keep:
        shutil.rmtree(ctx.work, ignore_errors=True)
    sys.exit(1 if n_fail else 0)


if __name__ == "__main__":
    main()
