#!/usr/bin/env python3
"""The body of scripts/soak.sh (which builds the binary and makes the tree): runs
`datasafe watch SRC DST`, churns SRC at random for a while, then checks that DST
mirrors SRC and that the watcher's memory stayed flat.

usage: soak.py --bin BIN --src SRC --dst DST --tmp TMP [--minutes M] [--rate OPS]
               [--debounce D] [--settle S] [--seed N]

Churn: create, modify (new size), same-size rewrite, append, delete, rename (in and
across folders), mkdir (with a file), rmdir (a folder the churn made, with what is in
it), in random proportions at about --rate operations a second.
Memory: VmRSS of the watcher every 5 s. "start" is taken when the start-up reconcile is
done (status says watching) and churn begins; "end" once DST mirrors SRC afterwards.
PASS needs: the watcher alive throughout; DST == SRC (type, size, mode, mtime in ns,
symlink target, content) within --settle seconds after churn stops; `datasafe verify DST
--source SRC` exit 0; end RSS <= start RSS * 1.5 + 8 MiB; exit 0 on SIGTERM.
"""
import argparse, json, os, random, signal, stat, subprocess, sys, time

MIB = 1024 * 1024


def rss_kib(pid):
    """VmRSS and VmHWM of pid, in KiB (None if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except FileNotFoundError:
        return None
    return out


def status_of(state_dir, pid):
    try:
        with open(os.path.join(state_dir, "datasafe", f"status-{pid}.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def snapshot(root):
    """{relative path: (kind, size, mode, mtime_ns, link target)} below root, without
    root/.datasafe."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            rel_dir = ""
            dirnames[:] = [d for d in dirnames if d != ".datasafe"]
        for name in dirnames + filenames:
            rel = os.path.join(rel_dir, name)
            try:
                st = os.lstat(os.path.join(root, rel))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, stat.S_IMODE(st.st_mode), st.st_mtime_ns, None)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, 0, 0, os.readlink(os.path.join(root, rel)))
            else:
                out[rel] = ("file", st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns, None)
    return out


def differences(src, dst, contents):
    """Human-readable differences between the two trees (empty if they match)."""
    a, b = snapshot(src), snapshot(dst)
    diffs = []
    for rel in sorted(a.keys() | b.keys()):
        if rel not in b:
            diffs.append(f"missing in DST: {rel}")
        elif rel not in a:
            diffs.append(f"extra in DST: {rel}")
        elif a[rel] != b[rel]:
            diffs.append(f"differs: {rel}: SRC {a[rel]} DST {b[rel]}")
        elif contents and a[rel][0] == "file":
            with open(os.path.join(src, rel), "rb") as f1, open(os.path.join(dst, rel), "rb") as f2:
                if f1.read() != f2.read():
                    diffs.append(f"content differs: {rel}")
    return diffs


class Churn:
    """Random changes to a tree, keeping in memory what it holds (after the initial
    walk) so each pick is O(1)."""

    OPS = [  # (name, weight)
        ("create", 20), ("modify", 15), ("same_size", 15), ("append", 10),
        ("delete", 15), ("rename", 12), ("mkdir", 7), ("rmdir", 6),
    ]

    def __init__(self, root, rnd, log):
        self.root, self.rnd, self.log = root, rnd, log
        self.files, self.dirs, self.made_dirs = [], [""], []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            self.dirs.extend(os.path.join(rel, d) for d in dirnames)
            self.files.extend(os.path.join(rel, f) for f in filenames)
        self.counter = 0
        self.last = ""  # what the last op touched, for the churn log
        self.done = {name: 0 for name, _ in self.OPS}
        self.names = [n for n, _ in self.OPS]
        self.weights = [w for _, w in self.OPS]

    def path(self, rel):
        return os.path.join(self.root, rel)

    def fresh_name(self, prefix):
        self.counter += 1
        return f"{prefix}{os.getpid()}_{self.counter}"

    def take(self, items):
        """Removes and returns a random element (swap-remove)."""
        i = self.rnd.randrange(len(items))
        items[i], items[-1] = items[-1], items[i]
        return items.pop()

    def data(self, size):
        return self.rnd.randbytes(size)

    def step(self):
        op = self.rnd.choices(self.names, self.weights)[0]
        try:
            getattr(self, op)()
            self.done[op] += 1
            self.log.write(f"{time.time():.3f} {op} {self.last}\n")
        except (FileNotFoundError, NotADirectoryError, OSError):
            # A pick that an earlier op invalidated (a renamed folder): try another.
            pass

    def create(self):
        d = self.rnd.choice(self.dirs)
        rel = os.path.join(d, self.fresh_name("new") + self.rnd.choice([".txt", ".dat", ""]))
        with open(self.path(rel), "wb") as f:
            f.write(self.data(self.rnd.randint(0, 4096)))
        self.files.append(rel)
        self.last = rel

    def pick_file(self):
        if not self.files:
            raise FileNotFoundError
        self.last = self.files[self.rnd.randrange(len(self.files))]
        return self.last

    def modify(self):
        with open(self.path(self.pick_file()), "wb") as f:
            f.write(self.data(self.rnd.randint(0, 8192)))

    def same_size(self):
        p = self.path(self.pick_file())
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            f.write(self.data(size))

    def append(self):
        with open(self.path(self.pick_file()), "ab") as f:
            f.write(self.data(self.rnd.randint(1, 512)))

    def delete(self):
        if len(self.files) < 100:
            return self.create()
        rel = self.take(self.files)
        self.last = rel
        os.unlink(self.path(rel))

    def rename(self):
        if not self.files:
            raise FileNotFoundError
        i = self.rnd.randrange(len(self.files))
        old = self.files[i]
        d = os.path.dirname(old) if self.rnd.random() < 0.5 else self.rnd.choice(self.dirs)
        new = os.path.join(d, self.fresh_name("mv"))
        os.rename(self.path(old), self.path(new))
        self.files[i] = new
        self.last = f"{old} -> {new}"

    def mkdir(self):
        parent = self.rnd.choice(self.dirs)
        rel = os.path.join(parent, self.fresh_name("dir"))
        os.mkdir(self.path(rel))
        self.dirs.append(rel)
        self.made_dirs.append(rel)
        self.last = rel
        if self.rnd.random() < 0.7:
            f = os.path.join(rel, self.fresh_name("f"))
            with open(self.path(f), "wb") as fh:
                fh.write(self.data(self.rnd.randint(0, 2048)))
            self.files.append(f)

    def rmdir(self):
        """Removes a folder the churn made (and what is in it: files only, since made
        folders get no subfolders unless picked as a parent, which is handled)."""
        if not self.made_dirs:
            return self.mkdir()
        rel = self.take(self.made_dirs)
        self.last = rel
        prefix = rel + os.sep
        for dirpath, dirnames, filenames in os.walk(self.path(rel), topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                os.rmdir(os.path.join(dirpath, name))
        os.rmdir(self.path(rel))
        self.files = [f for f in self.files if not f.startswith(prefix)]
        self.dirs = [d for d in self.dirs if d != rel and not d.startswith(prefix)]
        self.made_dirs = [d for d in self.made_dirs if not d.startswith(prefix)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--debounce", default="200ms")
    ap.add_argument("--settle", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    env = dict(os.environ, XDG_STATE_HOME=os.path.join(a.tmp, "state"),
               XDG_CONFIG_HOME=os.path.join(a.tmp, "config"))
    log = open(os.path.join(a.tmp, "watch.log"), "wb")
    watch = subprocess.Popen([a.bin, "watch", a.src, a.dst, "--debounce", a.debounce, "-q",
                              "--log-file", os.path.join(a.tmp, "datasafe.log")],
                             env=env, stdout=log, stderr=subprocess.STDOUT)
    state_home = env["XDG_STATE_HOME"]
    failures = []
    t0 = time.monotonic()

    def alive():
        return watch.poll() is None

    # Start-up: the first reconcile of the whole tree.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and alive():
        st = status_of(state_home, watch.pid)
        if st and st["pairs"] and st["pairs"][0]["state"] == "watching":
            break
        time.sleep(0.5)
    else:
        failures.append("the watcher did not reach 'watching' within 600 s")
    print(f"start-up reconcile: {time.monotonic() - t0:.1f} s", flush=True)

    samples = []  # (seconds since churn began, VmRSS KiB)

    def sample(t_churn):
        r = rss_kib(watch.pid)
        if r:
            samples.append((t_churn, r["VmRSS"]))
        return r

    churn = Churn(a.src, random.Random(a.seed), open(os.path.join(a.tmp, "churn.log"), "w"))
    print(f"churning {len(churn.files)} files in {len(churn.dirs)} folders for "
          f"{a.minutes:g} min at ~{a.rate:g} ops/s", flush=True)
    start = time.monotonic()
    sample(0.0)
    next_sample, next_report, ops = start + 5, start + 60, 0
    end = start + a.minutes * 60
    while not failures:
        now = time.monotonic()
        if now >= end:
            break
        if not alive():
            failures.append(f"the watcher exited during churn (code {watch.returncode})")
            break
        # Pace: ops so far should match the rate; sleep off any lead.
        lead = ops / a.rate - (now - start)
        if lead > 0:
            time.sleep(min(lead, 0.05))
            continue
        churn.step()
        ops += 1
        if now >= next_sample:
            sample(now - start)
            next_sample += 5
        if now >= next_report:
            rss = samples[-1][1] / 1024 if samples else float("nan")
            print(f"  {(now - start) / 60:5.1f} min: {ops} ops, VmRSS {rss:.1f} MiB, "
                  f"{len(churn.files)} files", flush=True)
            next_report += 60
    churn_s = time.monotonic() - start
    print(f"churn done: {ops} ops in {churn_s:.0f} s ({ops / max(churn_s, 1e-9):.0f}/s): "
          + ", ".join(f"{k} {v}" for k, v in churn.done.items()), flush=True)

    # Settle: wait until DST mirrors SRC (metadata first, cheap; then content).
    settled_in = None
    if not failures:
        t_stop = time.monotonic()
        deadline = t_stop + a.settle
        diffs = ["not checked yet"]
        next_sample = t_stop
        while time.monotonic() < deadline and alive():
            if time.monotonic() >= next_sample:
                sample(time.monotonic() - start)
                next_sample += 5
            diffs = differences(a.src, a.dst, contents=False)
            if not diffs:
                diffs = differences(a.src, a.dst, contents=True)
                if not diffs:
                    settled_in = time.monotonic() - t_stop
                    break
            time.sleep(1)
        if settled_in is None:
            failures.append(f"DST does not mirror SRC {a.settle:g} s after churn stopped "
                            f"({len(diffs)} differences)")
            for d in diffs[:20]:
                print("  " + d)
        else:
            print(f"DST mirrors SRC {settled_in:.1f} s after churn stopped "
                  "(type, size, mode, mtime ns, link target, content)", flush=True)
    end_rss = sample(time.monotonic() - start)

    if alive() and not failures:
        v = subprocess.run([a.bin, "verify", a.dst, "--source", a.src, "-q"], env=env,
                           capture_output=True, text=True)
        if v.returncode != 0:
            failures.append(f"datasafe verify DST --source SRC exited {v.returncode}")
            print(v.stdout[-3000:] + v.stderr[-3000:])
        else:
            print("datasafe verify DST --source SRC: exit 0", flush=True)

    if alive():
        watch.send_signal(signal.SIGTERM)
        try:
            code = watch.wait(timeout=60)
            if code != 0:
                failures.append(f"the watcher exited {code} on SIGTERM")
        except subprocess.TimeoutExpired:
            watch.kill()
            failures.append("the watcher did not exit within 60 s of SIGTERM")
    elif not failures:
        failures.append(f"the watcher exited on its own (code {watch.returncode})")

    # Memory.
    if samples:
        start_kib, peak_kib = samples[0][1], max(s[1] for s in samples)
        end_kib = end_rss["VmRSS"] if end_rss else samples[-1][1]
        limit = start_kib * 1.5 + 8 * 1024
        print(f"VmRSS start {start_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB, "
              f"end {end_kib / 1024:.1f} MiB (flat means end <= {limit / 1024:.1f} MiB); "
              f"{len(samples)} samples")
        if end_kib > limit:
            failures.append(f"RSS grew: end {end_kib / 1024:.1f} MiB > {limit / 1024:.1f} MiB")
    if end_rss:
        print(f"VmHWM {end_rss['VmHWM'] / 1024:.1f} MiB")
    with open(os.path.join(a.tmp, "rss.tsv"), "w") as f:
        f.writelines(f"{t:.0f}\t{k}\n" for t, k in samples)

    print(f"ops done: {ops}")
    if failures:
        for f in failures:
            print("FAIL: " + f)
        print(f"logs: {a.tmp}/watch.log (output), datasafe.log (every operation), "
              "churn.log (every change made)")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
