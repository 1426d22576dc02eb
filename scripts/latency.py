#!/usr/bin/env python3
"""Measure change-to-mirror latency of a running mirror command.

usage: latency.py --src DIR --dst DIR [--n 50] [--gz] [--idle 20] [--timeout 60]
                  [--probe-timeout S] [--resize] [--same-size N] [--flood N] [--rss] [--log FILE] [--json FILE]
                  [--resident NAME]
                  -- COMMAND...

Starts COMMAND (which must mirror --src into --dst), waits until a probe file
appears in the destination (startup), then n times: writes a new file with
unique content into the source and times until the destination holds the same
bytes (or, with --gz, a NAME.gz whose gunzipped bytes match). Then it modifies
and deletes files and times those too. Prints p50/p90/max in milliseconds per
kind of change, and the command's CPU seconds while idle for --idle seconds.

Note that the create and modify bodies have the same length, and the modify follows
the create by ~50 ms plus the create's latency: it is usually a same-size rewrite in
the same second.

Extensions over the original /work/shared/bench/latency.py (its output lines are
kept as they were, so anything parsing them still works):

  --probe-timeout S  how long each probe waits (default --timeout, which then only
                 bounds start-up): a tool that misses changes costs S per miss.
  --resize       one more kind per round, "resize": after the modify, the file is
                 rewritten one byte longer (a change size-and-mtime tools see).
  --same-size N  N same-size rewrites within one second: a file is mirrored with
                 'zzzz', then at the start of a wall-clock second 'aaaa' is
                 written and 100 ms later 'bbbb' (same size, same mtime second).
                 Counts how many mirrors end with 'bbbb' (within --same-size-wait
                 seconds, and again at the end of the run). A mirror left at
                 'aaaa' is a missed change.
  --flood N      after everything else: creates N files as fast as possible in
                 SRC/flood (a folder made before COMMAND starts, so it is watched)
                 and times from the first create until all N are in DST/flood,
                 then checks every file's content.
  --rss          VmRSS/VmHWM of COMMAND after start-up and after the idle window.
  --json FILE    every result as JSON too.
  --flood-stop   SIGSTOP the command's process group while the flood is written and
                 SIGCONT it after, so the kernel queue surely overflows (the time
                 then includes the recovery: a rescan or restart).
  --log FILE     COMMAND's output (default: latency-cmd.log next to --src).
  --pidfile FILE COMMAND's pid (its own session and process group) for clean-up.
  --resident NAME  a process of COMMAND's group named NAME (e.g. ssh: the lasting
                 connection of a mirror to another machine) belongs to the steady
                 state: start-up does not wait for it to exit, and --rss also reports
                 the VmRSS of those processes (repeatable).

Latency probes start, and the idle window starts, only after start-up has finished:
once the command's process group has no process but the command itself (lsyncd runs
its start-up rsync as a child) and used less than 0.01 s CPU in the last second (at
most --settle-max s).
(The original started probing as soon as the start-up probe was mirrored.) Idle CPU
is reported as utime+stime (+ reaped children, e.g. lsyncd's rsync runs) from
/proc/PID/stat in clock ticks (the original measure), and also from
/proc/PID/task/*/schedstat in nanoseconds (own threads only, exact), with the
number of context switches (wake-ups) in the window.
"""
import argparse, gzip, json, os, signal, subprocess, sys, time

def read(path, gz):
    try:
        if gz:
            with gzip.open(path + ".gz", "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, EOFError, OSError):
        return None

def wait_for(pred, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.001)
    return None

def cpu_seconds(pid):
    # utime+stime of the process and its reaped children, in seconds
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        total = sum(int(x) for x in fields[11:15]) / tck
    except OSError:
        pass
    return total

def cpu_precise(pid):
    """(seconds on CPU of every live thread, context switches of every live thread)."""
    ns, switches = 0, 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return float("nan"), 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except OSError:
            pass
    return ns / 1e9, switches

def memory(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(line.split()[1])  # kB (Threads: a count)
    except OSError:
        pass
    return out

def group(pgid):
    """Pids of the live processes in process group pgid (the command and, e.g., rsync runs)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        pids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return pids

def group_cpu(pgid):
    """CPU seconds of the whole group: live members' utime+stime, plus what the leader reaped."""
    total = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for pid in group(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:13]) / tck
            if pid == pgid:
                total += sum(int(x) for x in fields[13:15]) / tck
        except OSError:
            pass
    return total

RESIDENT = set()  # --resident: names of lasting helper processes in the command's group

def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None

def residents(pid):
    """Pids of the command's group other than itself whose name is in --resident."""
    return [p for p in group(pid) if p != pid and comm(p) in RESIDENT]

def settle(pid, limit):
    """Waits until start-up is over: no process of the command's group other than the
    command itself (lsyncd's start-up rsync is a child, whose CPU the parent sees only
    once it exits), and the group used < 0.01 s CPU in the last second. Returns the
    seconds waited, or None after `limit`."""
    t0 = time.monotonic()
    last = group_cpu(pid) + cpu_precise(pid)[0]
    while time.monotonic() - t0 < limit:
        time.sleep(1.0)
        now = group_cpu(pid) + cpu_precise(pid)[0]
        others = [p for p in group(pid) if p != pid and comm(p) not in RESIDENT]
        if now - last < 0.01 and not others:
            return time.monotonic() - t0
        last = now
    return None

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

def write(path, body):
    with open(path, "wb") as f:
        f.write(body)

def same_size_probe(a, res):
    """'zzzz' mirrored; then 'aaaa' at a second's start and 'bbbb' 100 ms later."""
    probes = []
    for i in range(a.same_size):
        name = f"samesize-{i}"
        s, d = os.path.join(a.src, name), os.path.join(a.dst, name)
        write(s, b"zzzz")
        if wait_for(lambda: read(d, a.gz) == b"zzzz", a.probe_timeout) is None:
            probes.append({"name": name, "error": "initial zzzz never mirrored"})
            continue
        # start 30 ms into the next wall-clock second, so both writes share its mtime second
        now = time.time()
        time.sleep((1.03 - (now % 1.0)) % 1.0 or 1.0)
        write(s, b"aaaa")
        t_a = os.stat(s).st_mtime_ns
        time.sleep(0.1)
        seen_before_b = read(d, a.gz)
        t0 = time.monotonic()
        write(s, b"bbbb")
        t_b = os.stat(s).st_mtime_ns
        dt = wait_for(lambda: read(d, a.gz) == b"bbbb", a.same_size_wait)
        probes.append({
            "name": name,
            "same_mtime_second": t_a // 10**9 == t_b // 10**9,
            "dst_before_bbbb": (seen_before_b or b"").decode(errors="replace"),
            "bbbb_ms": None if dt is None else dt * 1000,
            "dst_after_wait": (read(d, a.gz) or b"").decode(errors="replace"),
        })
    res["same_size"] = probes

def flood(a, res, proc):
    src, dst = os.path.join(a.src, "flood"), os.path.join(a.dst, "flood")
    n = a.flood
    names = [f"f{i:06d}" for i in range(n)]
    if a.flood_stop:
        os.killpg(proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    for i, name in enumerate(names):
        fd = os.open(os.path.join(src, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"%d\n" % i)
        os.close(fd)
    t_written = time.monotonic() - t0
    if a.flood_stop:
        os.killpg(proc.pid, signal.SIGCONT)
    present, t_all = 0, None
    while time.monotonic() - t0 < a.flood_timeout:
        try:
            present = sum(1 for e in os.scandir(dst) if e.name.startswith("f") and e.name in wanted)
        except FileNotFoundError:
            present = 0
        if present == n:
            t_all = time.monotonic() - t0
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    correct = sum(1 for i, name in enumerate(names) if read(os.path.join(dst, name), a.gz) == b"%d\n" % i)
    res["flood"] = {
        "files": n,
        "write_s": t_written,
        "all_present_s": t_all,
        "present": present,
        "correct": correct,
        "exited": proc.poll(),
        "stopped_while_writing": a.flood_stop,
    }
    print(f"flood: {n} files written in {t_written:.2f} s"
          + (" (command stopped meanwhile); " if a.flood_stop else "; ")
          + (f"all in DST after {t_all:.2f} s" if t_all is not None else f"only {present} in DST after {time.monotonic() - t0:.0f} s")
          + f"; {correct}/{n} with the right content"
          + (f"; the command exited with {proc.poll()}" if proc.poll() is not None else ""))

wanted = set()

def on_term(signum, frame):
    raise KeyboardInterrupt  # so the finally below stops the command

def main():
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--gz", action="store_true")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--idle", type=float, default=10)
    ap.add_argument("--probe-timeout", type=float, help="wait per probe (default: --timeout)")
    ap.add_argument("--resize", action="store_true")
    ap.add_argument("--settle-max", type=float, default=300)
    ap.add_argument("--same-size", type=int, default=0)
    ap.add_argument("--same-size-wait", type=float, default=3)
    ap.add_argument("--flood", type=int, default=0)
    ap.add_argument("--flood-timeout", type=float, default=600)
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--log")
    ap.add_argument("--pidfile", help="write COMMAND's pid (= its process group) here")
    ap.add_argument("--flood-stop", action="store_true",
                    help="SIGSTOP the command while the flood is written (forces a queue overflow)")
    ap.add_argument("--json")
    ap.add_argument("--resident", action="append", default=[])
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    a.probe_timeout = a.probe_timeout or a.timeout
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    RESIDENT.update(a.resident)
    os.makedirs(a.src, exist_ok=True)
    if a.flood:
        os.makedirs(os.path.join(a.src, "flood"), exist_ok=True)
        wanted.update(f"f{i:06d}" for i in range(a.flood))
    log = open(a.log or os.path.join(os.path.dirname(a.src.rstrip("/")) or ".", "latency-cmd.log"), "wb")
    res = {"cmd": cmd}
    t_start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(f"{proc.pid}\n")
    try:
        probe = os.path.join(a.src, "latency-probe-start")
        with open(probe, "wb") as f:
            f.write(b"start")
        up = wait_for(lambda: read(os.path.join(a.dst, "latency-probe-start"), a.gz) == b"start", a.timeout)
        if up is None:
            print("startup: the probe never reached the destination", file=sys.stderr)
            return 1
        res["startup_s"] = time.monotonic() - t_start
        print(f"startup-to-first-mirror: {time.monotonic() - t_start:.2f} s")
        waited = settle(proc.pid, a.settle_max)
        res["settled_s"] = None if waited is None else time.monotonic() - t_start
        if a.rss:
            res["mem_after_startup_kb"] = memory(proc.pid)
            if a.resident:
                res["resident_after_startup_kb"] = sum(memory(p).get("VmRSS", 0) for p in residents(proc.pid))
        res["latency"] = {"create": [], "modify": [], "delete": []}
        if a.resize:
            res["latency"]["resize"] = []
        lat = res["latency"]
        missed = 0
        for i in range(a.n):
            name = f"latency-probe-{i}"
            s, d = os.path.join(a.src, name), os.path.join(a.dst, name)
            body = f"create {i} {time.time_ns()}".encode() * 10
            t0 = time.monotonic()
            with open(s, "wb") as f:
                f.write(body)
            dt = wait_for(lambda: read(d, a.gz) == body, a.probe_timeout)
            (lat["create"].append(dt) if dt is not None else None); missed += dt is None
            time.sleep(0.05)
            body2 = f"modify {i} {time.time_ns()}".encode() * 10
            with open(s, "wb") as f:
                f.write(body2)
            dt = wait_for(lambda: read(d, a.gz) == body2, a.probe_timeout)
            (lat["modify"].append(dt) if dt is not None else None); missed += dt is None
            if a.resize:
                time.sleep(0.05)
                body3 = body2 + b"+"
                with open(s, "wb") as f:
                    f.write(body3)
                dt = wait_for(lambda: read(d, a.gz) == body3, a.probe_timeout)
                (lat["resize"].append(dt) if dt is not None else None); missed += dt is None
            time.sleep(0.05)
            os.remove(s)
            dt = wait_for(lambda: read(d, a.gz) is None, a.probe_timeout)
            (lat["delete"].append(dt) if dt is not None else None); missed += dt is None
        if a.n:
            for k, xs in lat.items():
                ms = [x * 1000 for x in xs]
                print(f"{k:7s} n={len(ms):3d}  p50={pct(ms, .5):8.1f} ms  p90={pct(ms, .9):8.1f} ms  max={max(ms) if ms else float('nan'):8.1f} ms")
            print(f"missed: {missed}")
        res["latency_ms"] = {k: {"n": len(xs), "p50": pct([x * 1000 for x in xs], .5),
                                  "p90": pct([x * 1000 for x in xs], .9),
                                  "max": max(xs) * 1000 if xs else None} for k, xs in lat.items()}
        res["missed"] = missed
        del res["latency"]
        if a.same_size:
            same_size_probe(a, res)
        if a.idle:
            settle(proc.pid, a.settle_max)
            c0, (p0, w0) = cpu_seconds(proc.pid), cpu_precise(proc.pid)
            time.sleep(a.idle)
            c1, (p1, w1) = cpu_seconds(proc.pid), cpu_precise(proc.pid)
            res["idle"] = {"seconds": a.idle, "cpu_ticks_s": c1 - c0, "cpu_threads_s": p1 - p0, "switches": w1 - w0}
            print(f"idle cpu over {a.idle:.0f} s: {c1 - c0:.3f} s")
            print(f"idle cpu over {a.idle:.0f} s (schedstat, own threads): {p1 - p0:.4f} s, {w1 - w0} context switches")
        if a.rss:
            res["mem_after_idle_kb"] = memory(proc.pid)
            if a.resident:
                res["resident_after_idle_kb"] = sum(memory(p).get("VmRSS", 0) for p in residents(proc.pid))
                print(f"resident helpers ({', '.join(sorted(RESIDENT))}) after idle: VmRSS "
                      f"{res['resident_after_idle_kb'] / 1024:.1f} MiB")
            m0, m1 = res["mem_after_startup_kb"], res["mem_after_idle_kb"]
            print(f"memory after start-up: VmRSS {m0.get('VmRSS', 0) / 1024:.1f} MiB, VmHWM {m0.get('VmHWM', 0) / 1024:.1f} MiB; "
                  f"after idle: VmRSS {m1.get('VmRSS', 0) / 1024:.1f} MiB, VmHWM {m1.get('VmHWM', 0) / 1024:.1f} MiB")
        if a.same_size:
            time.sleep(1)
            for p in res["same_size"]:
                if "error" not in p:
                    p["dst_at_end"] = (read(os.path.join(a.dst, p["name"]), a.gz) or b"").decode(errors="replace")
            ok = sum(1 for p in res["same_size"] if p.get("dst_at_end") == "bbbb")
            fast = sum(1 for p in res["same_size"] if p.get("bbbb_ms") is not None)
            same = sum(1 for p in res["same_size"] if p.get("same_mtime_second"))
            between = sum(1 for p in res["same_size"] if p.get("dst_before_bbbb") == "aaaa")
            res["same_size_ok"] = ok
            res["missed"] += a.same_size - ok
            print(f"same-size rewrite: {ok}/{a.same_size} mirrors end with 'bbbb' ({fast} within {a.same_size_wait:.0f} s; "
                  f"{same} pairs of writes shared an mtime second; 'aaaa' was mirrored in between {between} times)")
        if a.flood:
            flood(a, res, proc)
            if res["flood"]["correct"] != a.flood:
                res["missed"] += a.flood - res["flood"]["correct"]
        return 1 if res["missed"] else 0
    finally:
        res["exit_before_stop"] = proc.poll()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # in case we were stopped mid-flood
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)

if __name__ == "__main__":
    sys.exit(main())
