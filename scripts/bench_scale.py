#!/usr/bin/env python3
"""The scale part of the benchmarks (issue 15): how time and memory grow with the tree.

Driven by scripts/bench_scale.sh (which builds the binary and checks the tools); see its
header for the options. For every place (tmpfs, disk) and size (files), in that order:

  1. the source tree: scripts/mktree.py SRC --files N --size-kib K --seed 1 (reproducible;
     files spread over N/10 folders, nested up to 3 deep);
  2. first mirror   `datasafe sync -q SRC DST` vs `rsync -a SRC/ DST/` (on disk also
     `rsync ... && sync -f DST`, as datasafe ends with syncfs(2));
  3. no-op resync   `datasafe sync -q --json SRC DST` vs `rsync -a --delete SRC/ DST/`, each
     tool on its own mirror from 2.; every datasafe run's JSON is checked to copy nothing;
  4. watch          `datasafe watch SRC DST --rescan R` on datasafe's up-to-date mirror:
     start-up time, RSS, then the CPU of one fallback rescan (see `watch_probe`).

Timings follow scripts/bench.sh: a warm-up run of every command, then RUNS rounds in which
the tools take turns (the order rotates), the median reported; before each run the
previous output is moved aside (deleted on tmpfs, where no ext4 inode bookkeeping makes
the next creations slower) and `sync` flushes; each run waits for the machine to be idle
and is redone (up to --redo times) if other processes used more than a tenth of a core
meanwhile. Peak RSS is `/usr/bin/time -f %M` of each timed run (the largest single process
of the tool; rsync runs as two or three processes), the maximum over the runs.

Sizes of 1,000,000 files and more (--big-from) get one timed run (--big-runs), their first
mirror no warm-up (the tree was just written, so it is in the page cache anyway, and
another copy of a million files would cost minutes and gigabytes), no "rsync +sync" row,
and the tools run one after the other, on tmpfs each tool's mirror deleted before the next
starts, so that at most the source and one copy are in memory at once. A size is skipped, with a message, if the place has
not room for its copies (on tmpfs the machine's free memory counts too). The output says
all of this where it happens.

Results go to a TSV (merged by place, files, case and tool with what the file already
holds, so sizes can be run separately) and a plot made from that TSV with gnuplot.
"""

import argparse
import datetime
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BIG = 1_000_000  # sizes from here on get --big-runs timed runs
TSV_FIELDS = ["place", "files", "case", "tool", "wall_s", "min_s", "max_s", "cpu_s",
              "rss_mib", "runs", "redone", "binary", "date", "note"]
# What each case's columns mean (written at the top of the TSV).
TSV_HELP = """\
# datasafe scale benchmark (scripts/bench_scale.sh, issue 15). One row per place, file count, case, tool.
# first_mirror, noop_resync: wall_s = median of `runs` timed runs (min_s, max_s), cpu_s = median user+sys,
#   rss_mib = peak RSS (/usr/bin/time %M, largest over the runs).
# watch_line: wall_s = process start until the line containing "watching" (printed before the watches
#   are installed and before the start-up reconcile).
# watch_startup: wall_s = process start until the start-up reconcile is done (the status file says
#   "watching"; the time of the watcher's last CPU tick before that), cpu_s = CPU until then,
#   rss_mib = VmHWM (peak) once started.
# watch_idle: rss_mib = VmRSS after a few idle seconds of watching, cpu_s = CPU over those seconds.
# rescan: cpu_s = CPU seconds of one timer-driven fallback rescan, wall_s = its duration,
#   rss_mib = VmHWM after it.
"""


# --- the timer (as scripts/bench.sh's) ---------------------------------------------------

def kthreads():
    """CPU seconds spent by kernel threads (writeback, block I/O) since they started."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        if int(f[6]) & 0x00200000:  # PF_KTHREAD
            total += int(f[11]) + int(f[12])
    return total / HZ


def busy():
    """CPU seconds the machine has spent busy since boot, kernel threads excluded: they do
    the writeback that a run's own syncfs or page cache causes."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / HZ - kthreads()


def wait_idle(limit):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        b0, t0 = busy(), time.monotonic()
        time.sleep(0.3)
        if (busy() - b0) / (time.monotonic() - t0) < 0.1:
            return True
    return False


class Cmd:
    """One command to time: what it is called, the shell line, what runs before it."""

    def __init__(self, tool, line, prepare):
        self.tool, self.line, self.prepare = tool, line, prepare


def time_cmds(a, cmds, runs, warmup, rss_dir, env):
    """Times `cmds` (warm-up, then `runs` rotating rounds); returns one dict per command."""
    not_idle = [0]

    def one(c, tag):
        rss_file = os.path.join(rss_dir, "rss")
        for attempt in range(a.redo + 1):
            subprocess.run(c.prepare, shell=True, check=True)
            if not wait_idle(a.idle_wait):
                not_idle[0] += 1
            run_env = dict(env, BENCH_RUN=f"{tag}.{attempt}")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            b0 = busy()
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file, "sh", "-c", c.line],
                           check=True, stdout=subprocess.DEVNULL, env=run_env)
            wall = time.perf_counter() - t0
            foreign = busy() - b0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            foreign -= cpu
            if foreign <= 0.1 * wall + 2.0 / HZ:
                break
        rss_kib = int(open(rss_file).read().split()[-1])
        return {"wall": wall, "cpu": cpu, "redone": attempt, "rss": rss_kib / 1024}

    if warmup:
        for i, c in enumerate(cmds):
            one(c, f"{i}.warmup")
    got = [[] for _ in cmds]
    for r in range(runs):
        for k in range(len(cmds)):
            i = (k + r) % len(cmds)
            got[i].append(one(cmds[i], f"{i}.{r}"))
    out = []
    for c, g in zip(cmds, got):
        walls = [x["wall"] for x in g]
        res = {"tool": c.tool, "wall_s": statistics.median(walls), "min_s": min(walls),
               "max_s": max(walls), "cpu_s": statistics.median(x["cpu"] for x in g),
               "rss_mib": max(x["rss"] for x in g), "runs": len(g),
               "redone": sum(x["redone"] for x in g)}
        out.append(res)
        print(f"    {res['wall_s']:8.3f}s median ({res['min_s']:.3f} .. {res['max_s']:.3f}),"
              f" cpu {res['cpu_s']:.2f}s, peak {res['rss_mib']:6.1f} MiB,"
              f" redone {res['redone']}   {c.tool}: {c.line}", flush=True)
    if not_idle[0]:
        print(f"    ({not_idle[0]} runs started before the machine was idle:"
              f" it was not within {a.idle_wait:.0f} s)")
    return out


# --- the watcher -------------------------------------------------------------------------

def cpu_of(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    stat = open(f"/proc/{pid}/stat").read()
    f = stat[stat.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / HZ


def mem_of(pid):
    """VmRSS and VmHWM of `pid`, in MiB."""
    got = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            got[key] = int(value.split()[0]) / 1024
    return got


def status_state(path):
    """The first pair's state in a watcher's status file, or None."""
    try:
        pairs = json.load(open(path)).get("pairs") or []
    except (OSError, ValueError):
        return None
    return pairs[0].get("state") if pairs else None


def watch_probe(a, src, dst, files, env, state_home, log_path):
    """Starts `datasafe watch SRC DST --rescan R` and measures, in one process:

    - when the line containing "watching" appears (datasafe prints it before it installs
      the watches and runs the start-up reconcile, so it is not the end of start-up);
    - when start-up is done: the status file ($XDG_STATE_HOME/datasafe/status-PID.json,
      rewritten about once a second) lists the pair only after the start-up reconcile, in
      state "watching"; the start-up time is that of the watcher's last CPU tick before
      the file said so (sampled every 20 ms), the file's own time being up to 1 s late;
    - VmHWM and VmRSS after --watch-idle seconds of idle watching, and the CPU meanwhile;
    - one fallback rescan, which the timer starts R after the start-up reconcile ended:
      the CPU (utime + stime) from before it starts until the watcher has been quiet for
      a second and the status file says "watching" again;
    - then SIGTERM; the summary's "Unchanged" count, divided by the file count, says how
      many full passes ran (2 expected: start-up and the rescan).
    """
    cmd = [a.bin, "watch", src, dst, "--rescan", f"{a.rescan}s"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    with open(os.path.join(a.results, "pids"), "a") as f:
        f.write(f"{proc.pid}\n")
    status_path = os.path.join(state_home, "datasafe", f"status-{proc.pid}.json")
    seen = {"line": None, "limit": False}
    log = open(log_path, "wb")

    def reader():
        for raw in proc.stdout:
            log.write(raw)
            log.flush()
            text = raw.decode(errors="replace")
            if seen["line"] is None and "watching" in text:
                seen["line"] = time.monotonic() - t0
            if "cannot watch" in text or "max_user_watches" in text:
                seen["limit"] = True

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    res = {}
    try:
        # Start-up.
        last_cpu, last_change = 0.0, 0.0
        deadline = t0 + a.watch_timeout
        ready = None
        while ready is None:
            if proc.poll() is not None:
                raise RuntimeError(f"watch exited with {proc.returncode} during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"watch did not finish starting within {a.watch_timeout} s")
            now = time.monotonic() - t0
            cpu = cpu_of(proc.pid)
            if cpu != last_cpu:
                last_cpu, last_change = cpu, now
            if status_state(status_path) == "watching":
                ready = (last_change, now, cpu)
                break
            time.sleep(0.02)
        res["line_s"] = seen["line"]
        res["startup_s"], res["status_s"], res["startup_cpu"] = ready
        hwm0 = mem_of(proc.pid)["VmHWM"]
        # Idle.
        c0 = cpu_of(proc.pid)
        time.sleep(a.watch_idle)
        m = mem_of(proc.pid)
        res["idle_rss"], res["idle_hwm"] = m["VmRSS"], m["VmHWM"]
        res["startup_hwm"] = hwm0
        res["idle_cpu"] = cpu_of(proc.pid) - c0
        # One fallback rescan.
        base = cpu_of(proc.pid)
        t_wait = time.monotonic()
        began = None
        while began is None:
            if proc.poll() is not None:
                raise RuntimeError(f"watch exited with {proc.returncode} before the rescan")
            if time.monotonic() - t_wait > a.rescan + 120:
                raise RuntimeError("no rescan started within --rescan + 120 s")
            cpu = cpu_of(proc.pid)
            if cpu - base >= 0.02 or status_state(status_path) == "reconciling":
                began = time.monotonic()
            time.sleep(0.02)
        last_cpu, last_change = cpu_of(proc.pid), time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"watch exited with {proc.returncode} during the rescan")
            if time.monotonic() - began > a.watch_timeout:
                raise RuntimeError(f"the rescan did not end within {a.watch_timeout} s")
            now = time.monotonic()
            cpu = cpu_of(proc.pid)
            if cpu != last_cpu:
                last_cpu, last_change = cpu, now
            elif now - last_change >= 1.0 and status_state(status_path) == "watching":
                break
            time.sleep(0.02)
        res["rescan_cpu"] = last_cpu - base
        res["rescan_wall"] = last_change - began
        res["rescan_hwm"] = mem_of(proc.pid)["VmHWM"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        th.join(timeout=10)
        log.close()
    text = open(log_path, errors="replace").read()
    m = re.search(r"Unchanged: (\d+)", text)
    res["passes"] = int(m.group(1)) / files if m and files else None
    # A rescan of a small tree can stay under the 20 ms that mark its start, and the
    # CPU from `base` on then spans more than one: what it spent is shared out over the
    # rescans the summary counted (each pass finds every file unchanged).
    res["rescans"] = 1
    if res["passes"] is not None and res["passes"] > 2.5 and res["passes"] == int(res["passes"]):
        res["rescans"] = int(res["passes"]) - 1
        res["rescan_cpu"] /= res["rescans"]
    res["limit"] = seen["limit"]
    return res


# --- results -------------------------------------------------------------------------------

def read_tsv(path):
    rows = []
    if not os.path.exists(path):
        return rows
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if parts[0] == "place":
            continue
        rows.append(dict(zip(TSV_FIELDS, parts)))
    return rows


def write_tsv(path, new):
    """Merges `new` into the TSV at `path` (a row replaces the one with the same place,
    files, case and tool)."""
    key = lambda r: (r["place"], str(r["files"]), r["case"], r["tool"])
    rows = {key(r): r for r in read_tsv(path)}
    for r in new:
        rows[key(r)] = r
    order = {"tmpfs": 0, "disk": 1}
    cases = ["first_mirror", "noop_resync", "watch_line", "watch_startup", "watch_idle", "rescan"]
    srt = sorted(rows.values(), key=lambda r: (order.get(r["place"], 9), int(r["files"]),
                                                cases.index(r["case"]) if r["case"] in cases else 9,
                                                r["tool"]))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(TSV_HELP)
        f.write("\t".join(TSV_FIELDS) + "\n")
        for r in srt:
            f.write("\t".join(fmt(r.get(k, "")) for k in TSV_FIELDS) + "\n")


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v).replace("\t", " ")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def label(n):
    n = int(n)
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def report(tsv):
    """Prints the scale tables from the TSV (what BENCHMARKS.md shows)."""
    rows = read_tsv(tsv)
    get = {}
    for r in rows:
        get[(r["place"], int(r["files"]), r["case"], r["tool"])] = r
    places = sorted({r["place"] for r in rows}, key=lambda p: {"tmpfs": 0, "disk": 1}.get(p, 9))
    sizes = sorted({int(r["files"]) for r in rows})
    print("sync: median time and peak RSS; ratio = datasafe / rsync (lower is better)")
    print(f"| where | files | case | datasafe | rsync | ratio | datasafe peak | rsync peak | ratio | runs |")
    print(f"|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    for p in places:
        for n in sizes:
            for case, other, name in (("first_mirror", "rsync", "first mirror"),
                                      ("first_mirror", "rsync +sync", "first mirror (rsync +sync)"),
                                      ("noop_resync", "rsync", "no-op resync")):
                ds, rs = get.get((p, n, case, "datasafe")), get.get((p, n, case, other))
                if not ds or (not rs and other != "rsync"):
                    continue
                dw, dm = num(ds["wall_s"]), num(ds["rss_mib"])
                if rs:
                    rw, rm = num(rs["wall_s"]), num(rs["rss_mib"])
                    print(f"| {p} | {label(n)} | {name} | {dw:.2f} s | {rw:.2f} s | {dw / rw:.2f}× |"
                          f" {dm:.0f} MiB | {rm:.0f} MiB | {dm / rm:.1f}× | {ds['runs']} |")
                else:
                    print(f"| {p} | {label(n)} | {name} | {dw:.2f} s | – | – | {dm:.0f} MiB | – | – |"
                          f" {ds['runs']} |")
                    rw = rm = None
                base = get.get((p, n, case, "base"))
                if base and other == "rsync" and rs:
                    bw, bm = num(base["wall_s"]), num(base["rss_mib"])
                    print(f"| {p} | {label(n)} | {name}, --base build | {bw:.2f} s | {rw:.2f} s |"
                          f" {bw / rw:.2f}× | {bm:.0f} MiB | {rm:.0f} MiB | {bm / rm:.1f}× | {base['runs']} |")
    if any(r["case"].startswith("watch") or r["case"] == "rescan" for r in rows):
        print()
        print("watch on datasafe's up-to-date mirror (one run each)")
        print("| where | files | tool | \"watching\" printed | start-up done | start-up CPU |"
              " peak RSS (VmHWM) | RSS idle | rescan CPU | rescan took | full passes |")
        print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for p in places:
            for n in sizes:
                for tool in ("datasafe", "base"):
                    st = get.get((p, n, "watch_startup", tool))
                    if not st:
                        continue
                    ln = get.get((p, n, "watch_line", tool)) or {}
                    idle = get.get((p, n, "watch_idle", tool)) or {}
                    rs = get.get((p, n, "rescan", tool)) or {}
                    cell = lambda r, k, f: (f.format(num(r.get(k))) if num(r.get(k)) is not None else "–")
                    print(f"| {p} | {label(n)} | {tool} | {cell(ln, 'wall_s', '{:.2f} s')} |"
                          f" {cell(st, 'wall_s', '{:.2f} s')} | {cell(st, 'cpu_s', '{:.2f} s')} |"
                          f" {cell(st, 'rss_mib', '{:.0f} MiB')} | {cell(idle, 'rss_mib', '{:.0f} MiB')} |"
                          f" {cell(rs, 'cpu_s', '{:.2f} s')} | {cell(rs, 'wall_s', '{:.2f} s')} |"
                          f" {rs.get('note', '') or '–'} |")
    bins = sorted({(r["binary"], r["date"][:10]) for r in rows})
    print()
    print("binaries: " + "; ".join(f"{b} ({d})" for b, d in bins))


def plot(tsv, png):
    """Draws time and peak RSS against file count (log-log) from the TSV with gnuplot:
    rows first mirror and no-op resync, columns time and peak RSS; datasafe blue, rsync
    orange, tmpfs solid, disk dashed; the watcher's start-up peak in green."""
    gp = shutil.which("gnuplot")
    if not gp:
        print(f"plot skipped: gnuplot is not installed (apt-get install gnuplot-nox);"
              f" the figures are in {tsv}")
        return False
    rows = read_tsv(tsv)
    if not rows:
        print("plot skipped: no rows in", tsv)
        return False
    tmp = tempfile.mkdtemp(prefix="scale-plot.")
    series = {}  # (case, tool, place) -> [(files, wall, rss)]
    for r in rows:
        series.setdefault((r["case"], r["tool"], r["place"]), []).append(
            (int(r["files"]), num(r["wall_s"]), num(r["rss_mib"])))
    files = {}
    for k, pts in series.items():
        path = os.path.join(tmp, "-".join(k).replace(" ", "_").replace("+", "p") + ".dat")
        with open(path, "w") as f:
            for n, w, m in sorted(pts):
                f.write(f"{n} {w if w is not None else 'NaN'} {m if m is not None else 'NaN'}\n")
        files[k] = path
    colours = {"datasafe": "#1f77b4", "rsync": "#ff7f0e", "base": "#7f7f7f"}
    names = {"datasafe": "datasafe", "rsync": "rsync", "base": "datasafe (base)"}
    dashes = {"tmpfs": 1, "disk": 2}
    sizes = sorted({int(r["files"]) for r in rows})
    bins = sorted({r["binary"] for r in rows})
    date = max(r["date"] for r in rows)[:16]
    lines = [
        "set terminal pngcairo size 1200,900 font ',10' noenhanced",
        f"set output '{png}'",
        "set logscale xy",
        "set grid xtics ytics mxtics mytics lc rgb '#dddddd'",
        "set key box opaque",
        "set xtics (" + ", ".join(f"'{label(n)}' {n}" for n in sizes) + ")",
        f"set xrange [{sizes[0] / 1.5}:{sizes[-1] * 1.5}]",
        "set format y '%g'",
        "set xlabel 'files'",
        "set multiplot layout 2,2 title 'datasafe sync vs rsync by file count (log-log; solid tmpfs,"
        f" dashed disk); {', '.join(bins)}, {date}'",
    ]
    for case, title in (("first_mirror", "first mirror"), ("noop_resync", "no-op resync")):
        for col, what in ((2, "time (s)"), (3, "peak RSS (MiB)")):
            plots = []
            for tool in ("datasafe", "base", "rsync"):
                for place in ("tmpfs", "disk"):
                    k = (case, tool, place)
                    if k in files:
                        plots.append(f"'{files[k]}' using 1:{col} with linespoints lw 2 pt 7 ps 0.8"
                                     f" lc rgb '{colours[tool]}' dt {dashes[place]}"
                                     f" title '{names[tool]} {place}'")
            if col == 3 and case == "noop_resync":
                for place in ("tmpfs", "disk"):
                    k = ("watch_startup", "datasafe", place)
                    if k in files:
                        plots.append(f"'{files[k]}' using 1:3 with linespoints lw 2 pt 5 ps 0.8"
                                     f" lc rgb '#2ca02c' dt {dashes[place]}"
                                     f" title 'datasafe watch start-up {place}'")
            if col == 3:
                plots.append("64 with lines lc rgb '#999999' dt 3 title 'target 64 MiB'")
            lines.append("set key top left" if col == 2 else "set key bottom right")
            lines.append(f"set title '{title}: {what}'")
            lines.append(f"set ylabel '{what}'")
            lines.append("plot " + ", \\\n     ".join(plots) if plots else "plot NaN notitle")
    lines.append("unset multiplot")
    script = os.path.join(tmp, "scale.gp")
    open(script, "w").write("\n".join(lines) + "\n")
    r = subprocess.run([gp, script], capture_output=True, text=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode != 0:
        print("plot failed:", r.stderr.strip())
        return False
    print(f"plot: {png}")
    return True


# --- the run --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", help="the datasafe binary")
    ap.add_argument("--base", help="another datasafe binary, timed beside")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--where", default="tmpfs,disk")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big-runs", type=int, default=1)
    ap.add_argument("--big-from", type=int, default=BIG)
    ap.add_argument("--tools", default="datasafe,rsync,base")
    ap.add_argument("--size-kib", type=float, default=1.0)
    ap.add_argument("--redo", type=int, default=5)
    ap.add_argument("--idle-wait", type=float, default=120.0)
    ap.add_argument("--no-watch", action="store_true")
    ap.add_argument("--rescan", type=float, default=10.0)
    ap.add_argument("--watch-idle", type=float, default=5.0)
    ap.add_argument("--watch-timeout", type=float, default=900.0)
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--results", help="a folder for logs and pids")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    if a.report_only:
        report(a.tsv)
        plot(a.tsv, a.png)
        return 0
    if a.rescan < a.watch_idle + 3:
        ap.error("--rescan must be at least --watch-idle + 3 s (the idle window ends before it)")
    sizes = [int(s) for s in a.sizes.split(",") if s]
    places = {"tmpfs": os.environ.get("BENCH_TMPFS", "/dev/shm"),
              "disk": os.environ.get("BENCH_DISK", "/var/tmp")}
    where = [w for w in a.where.split(",") if w]
    for w in where:
        if w not in places:
            ap.error(f"--where: {w} is neither tmpfs nor disk")
    os.makedirs(a.results, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    binary = describe(a.bin)
    mktree = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mktree.py")
    new_rows = []
    for place in where:
        root = tempfile.mkdtemp(prefix="datasafe-scale.", dir=places[place])
        tmpfs = place == "tmpfs"
        fs = subprocess.run(["df", "-T", root], capture_output=True, text=True).stdout.split("\n")[1].split()
        print(f"\n=== {place}: {root} ({fs[1]} on {fs[0]}, {int(fs[4]) // 1048576} GiB free)", flush=True)
        state = os.path.join(root, "state")
        os.makedirs(state)
        env = dict(os.environ, XDG_STATE_HOME=state, XDG_CONFIG_HOME=state)
        try:
            for n in sizes:
                new_rows += one_size(a, place, tmpfs, root, n, env, mktree, binary, now)
                write_tsv(a.tsv, new_rows)
                d = os.path.join(root, f"n{n}")
                if os.path.exists(d) and not a.keep:
                    t = time.monotonic()
                    subprocess.run(["rm", "-rf", d])
                    print(f"  (deleted the {label(n)} trees in {time.monotonic() - t:.0f} s)",
                          flush=True)
        finally:
            if a.keep:
                print(f"kept {root}")
            else:
                t = time.monotonic()
                shutil.rmtree(root, ignore_errors=True)
                print(f"  (deleted {root} in {time.monotonic() - t:.0f} s)")
    print(f"\n== results ({a.tsv}, merged with what it held)")
    report(a.tsv)
    plot(a.tsv, a.png)
    return 0


def describe(path):
    """The binary, and the commit of the checkout it was built in (if it is one)."""
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    r = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return path
    dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--", "src",
                            "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout
    return f"{os.path.basename(top)}@{r.stdout.strip()}{'+src changes' if dirty.strip() else ''}"


def copy_bytes(n, size_kib):
    """Roughly what one copy of an n-file tree takes: a 4 KiB block or page per non-empty
    small file, plus the folders (4.0 KiB a file measured at 100k files of ~1 KiB; 4.3
    leaves room for datasafe's index), plus ~1 KiB of inode and dentry per file (memory
    on tmpfs, the inode table on disk)."""
    import math
    nonempty = math.exp(-1 / (size_kib * 1024))  # sizes are exponential; int() rounds down
    return int(n * (1024 + nonempty * (4.3 * 1024 + size_kib * 1024)))


def room(path, tmpfs):
    """Bytes that can still be written at `path`: free space, and on tmpfs also the
    memory the machine has left (tmpfs pages cannot be evicted; there is no swap), less
    a margin for everything else running."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if tmpfs:
        avail = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo")
                     if l.startswith("MemAvailable:"))
        return min(free, avail - (4 << 30))
    return free - (5 << 30)


def one_size(a, place, tmpfs, root, n, env, mktree, binary, now):
    """Measures one tree size at one place; returns the TSV rows."""
    q = shlex.quote
    big = n >= a.big_from
    runs = a.big_runs if big else a.runs
    d = os.path.join(root, f"n{n}")
    src = os.path.join(d, "src")
    trash = os.path.join(d, "trash")

    def out(name):
        return os.path.join(d, name)

    def aside(path):
        # tmpfs: delete (no ext4 inode bookkeeping there, and it is memory); disk: move
        # into the trash, deleted once this size is done (see scripts/bench.sh on ext4's
        # recently deleted inodes: the next size's tree is written in between).
        if tmpfs:
            return f"rm -rf {q(path)}; sync"
        return f"if [ -e {q(path)} ]; then mv {q(path)} {q(trash)}/$(date +%s%N); fi; sync"

    js = os.path.join(a.results, f"noop-{place}-{n}.json")
    # Every tool: its first-mirror command and output, its no-op command, its watcher.
    tools = [{"tool": "datasafe", "out": out("m_ds"), "watch": a.bin,
              "first": f"{q(a.bin)} sync -q {q(src)} {q(out('m_ds'))}",
              "noop": f"{q(a.bin)} sync -q --json {q(src)} {q(out('m_ds'))} > {q(js)}.$BENCH_RUN"},
             {"tool": "rsync", "out": out("m_rs"), "watch": None,
              "first": f"rsync -a {q(src)}/ {q(out('m_rs'))}/",
              "noop": f"rsync -a --delete {q(src)}/ {q(out('m_rs'))}/"}]
    if not tmpfs and not big:
        # sync -f on tmpfs does nothing: the row is for disks. Not from --big-from on:
        # another copy of a million files and its deletion take ~10 minutes on this disk.
        tools.append({"tool": "rsync +sync", "out": out("m_rss"), "watch": None,
                      "first": f"rsync -a {q(src)}/ {q(out('m_rss'))}/ && sync -f {q(d)}",
                      "noop": None})
    if a.base:
        tools.append({"tool": "base", "out": out("m_base"), "watch": a.base,
                      "first": f"{q(a.base)} sync -q {q(src)} {q(out('m_base'))}",
                      "noop": f"{q(a.base)} sync -q {q(src)} {q(out('m_base'))}"})
    tools = [t for t in tools if t["tool"].split()[0] in a.tools.split(",")]
    # Below --big-from every tool runs in the same rounds (interleaved, as bench.sh). From
    # it on, one tool after the other (with one timed run there is nothing to interleave)
    # and on tmpfs each mirror is deleted before the next tool starts, so that at most the
    # source and one copy exist at once there: a million files take ~4.3 GB a copy, in
    # memory. On disk they stay until the size is done: deleting a million files takes
    # minutes there, and its writeback would land on the next tool's runs.
    print(f"\n== {place}, {label(n)} files", flush=True)
    have = room(os.path.dirname(d), tmpfs)
    drop = tmpfs  # delete each group's mirrors before the next group starts
    if big:
        groups = [[t for t in tools if t["tool"] == "datasafe"],
                  [t for t in tools if t["tool"].startswith("rsync")],
                  [t for t in tools if t["tool"] == "base"]]
        groups = [g for g in groups if g]
        copies = 1 + max(len(g) for g in groups)
        if not tmpfs and copy_bytes(n, a.size_kib) * (1 + len(tools)) <= have:
            copies = 1 + len(tools)
        elif not tmpfs:
            drop = True
            print("  (not room for every mirror at once: each tool's mirror is deleted before"
                  " the next tool runs)")
    else:
        groups = [tools]
        copies = 1 + len(tools) * (1 if tmpfs else 1 + runs)
    need = copy_bytes(n, a.size_kib) * copies
    # Inodes too: mktree makes n/10 folders, nested (1.15 n all told); /dev/shm's limit
    # is a fraction of its size, and other work may hold many of them.
    st = os.statvfs(os.path.dirname(d))
    inodes = int(n * 1.2) * copies
    if st.f_files and inodes > st.f_favail:
        print(f"  SKIPPED: needs ~{inodes / 1e6:.1f}M inodes ({copies} copies of the tree) but"
              f" {place} has {st.f_favail / 1e6:.1f}M free (df -i)", flush=True)
        return []
    if need > have:
        print(f"  SKIPPED: needs ~{need / 2**30:.1f} GiB ({copies} copies of the tree) but"
              f" {place} has ~{max(have, 0) / 2**30:.1f} GiB to spare"
              f"{' (free memory counts: tmpfs lives in RAM, and there is no swap)' if tmpfs else ''}",
              flush=True)
        return []
    os.makedirs(trash)
    t = time.monotonic()
    subprocess.run([sys.executable, mktree, src, "--files", str(n), "--size-kib",
                    str(a.size_kib), "--seed", "1"], check=True)
    subprocess.run(["sync"], check=True)
    print(f"  tree made in {time.monotonic() - t:.0f} s", flush=True)
    rows = []

    def row(case, tool, **kw):
        r = {"place": place, "files": n, "case": case, "tool": tool, "runs": 1, "redone": 0,
             "binary": describe(a.base) if tool == "base" else binary, "date": now}
        r.update(kw)
        rows.append(r)

    for group in groups:
        names = ", ".join(t["tool"] for t in group)
        how = "interleaved" if len(group) > 1 else "one tool at a time"
        # First mirror.
        warm = not big
        print(f"  first mirror: {names} ({runs} timed runs each, {how}"
              f"{', after one warm-up' if warm else ', no warm-up: the tree was just written'})",
              flush=True)
        cmds = [Cmd(t["tool"], t["first"], aside(t["out"])) for t in group]
        for r in time_cmds(a, cmds, runs, warm, a.results, env):
            row("first_mirror", r.pop("tool"), **r)
        for t in group:
            if t["noop"] is None:
                subprocess.run(["rm", "-rf", t["out"]])  # not needed any more
        # No-op resync, each tool on its own mirror.
        cmds = [Cmd(t["tool"], t["noop"], "sync") for t in group if t["noop"]]
        print(f"  no-op resync: {', '.join(c.tool for c in cmds)} ({runs} timed runs each,"
              f" {how}, after one warm-up)", flush=True)
        for r in time_cmds(a, cmds, runs, True, a.results, env):
            row("noop_resync", r.pop("tool"), **r)
        if any(t["tool"] == "datasafe" for t in group):
            check_noop(js, a.results, rows)
        # watch on datasafe's up-to-date mirror.
        for t in group:
            if t["watch"] and not a.no_watch:
                watch_rows(a, t, place, n, src, env, row)
        if drop:
            for t in group:
                subprocess.run(["rm", "-rf", t["out"]])
    return rows


def check_noop(js, results, rows):
    """Every datasafe no-op run's JSON must say nothing was copied, deleted or failed."""
    bad = []
    for name in sorted(os.listdir(results)):
        if name.startswith(os.path.basename(js) + "."):
            path = os.path.join(results, name)
            lines = [l for l in open(path) if l.strip()]
            s = json.loads(lines[-1]) if lines else {}
            if not s or any(s.get(k) for k in ("copied", "updated", "deleted", "failed")):
                bad.append((name, s))
            os.remove(path)
    print("  no-op check: " + ("every datasafe run copied, deleted and failed nothing" if not bad
                               else f"NOT A NO-OP: {bad}"), flush=True)
    if bad:
        for r in rows:
            if r["case"] == "noop_resync" and r["tool"] == "datasafe":
                r["note"] = "NOT A NO-OP"


def watch_rows(a, t, place, n, src, env, row):
    """Runs `watch_probe` for one datasafe binary and adds its rows."""
    tool = t["tool"]
    print(f"  watch ({tool}): start-up, {a.watch_idle:.0f} s idle, one rescan"
          f" (--rescan {a.rescan:g}s)", flush=True)
    if not wait_idle(a.idle_wait):
        print(f"    (the machine was not idle within {a.idle_wait:.0f} s; measuring anyway)")
    sub = argparse.Namespace(**vars(a))
    sub.bin = t["watch"]
    log_path = os.path.join(a.results, f"watch-{tool}-{place}-{n}.log")
    try:
        w = watch_probe(sub, src, t["out"], n, env, env["XDG_STATE_HOME"], log_path)
    except RuntimeError as e:
        print(f"    FAILED: {e} (log: {log_path})")
        return
    passes = w["passes"]
    note = (f"{passes:.2f}" if passes is not None else "?") + (
        f" (CPU shared over {w['rescans']} rescans)" if w["rescans"] > 1 else "") + (
        "; watch limit reached" if w["limit"] else "")
    line = f"{w['line_s']:.2f} s" if w["line_s"] is not None else "never"
    print(f"    \"watching\" printed {line}; start-up done {w['startup_s']:.2f} s"
          f" (status file {w['status_s']:.2f} s), CPU {w['startup_cpu']:.2f} s;"
          f" VmHWM {w['startup_hwm']:.1f} MiB; after {a.watch_idle:.0f} s idle VmRSS"
          f" {w['idle_rss']:.1f} MiB (CPU {w['idle_cpu']:.2f} s)")
    print(f"    rescan: {w['rescan_cpu']:.2f} s CPU over {w['rescan_wall']:.2f} s;"
          f" VmHWM after {w['rescan_hwm']:.1f} MiB; full passes seen in the summary:"
          f" {note}", flush=True)
    row("watch_line", tool, wall_s=w["line_s"])
    row("watch_startup", tool, wall_s=w["startup_s"], cpu_s=w["startup_cpu"],
        rss_mib=w["startup_hwm"], note=f"status file at {w['status_s']:.2f} s")
    row("watch_idle", tool, cpu_s=w["idle_cpu"], rss_mib=w["idle_rss"],
        note=f"after {a.watch_idle:g} s idle")
    row("rescan", tool, wall_s=w["rescan_wall"], cpu_s=w["rescan_cpu"],
        rss_mib=w["rescan_hwm"], note=note)

if __name__ == "__main__":
    sys.exit(main())
