#!/usr/bin/env bash
# Everything `rsync -aHSXA` keeps (issue 16), side by side in one run: the first mirror of
# a tree with owners, hard links, extended attributes, ACLs and a sparse file, by
#   datasafe sync -q --xattrs --acls SRC DST     vs    rsync -aHSXA SRC/ DST/
# (and the "+sync" row: rsync followed by `sync -f DST`, as datasafe ends with syncfs(2)),
# on tmpfs and on the disk, then prints medians and the ratio (issue 16: <= 1.0x).
# Each run writes into a fresh DST; the tools take turns run by run, after one warm-up of
# each. Every datasafe mirror is checked against the source (owners, modes, link groups,
# xattrs, ACLs, sparse blocks) once, so a fast wrong result cannot pass.
#
# The tree (scripts/mktree.py --seed 1, then made deterministic from the same seed):
#   FILES files of ~1 KiB; a third owned by 65534:65534, a third by 1234:4321;
#   every 10th file has two user.* attributes, every 20th an ACL with a named user (uid
#   65534), every folder a default ACL when it holds an ACL'd file; 300 hard-link pairs
#   and 100 triples across folders; one 2 GiB file with 1 MiB of data (--no-sparse: none).
#
# usage: scripts/bench_meta.sh [--files N] [--runs N] [--where tmpfs,disk] [--bin PATH]
#                              [--no-sparse] [--keep]
# Environment: BENCH_TMPFS (default /dev/shm), BENCH_DISK (default /var/tmp).
# Needs: root (owners), rsync, setfattr/setfacl (Debian: attr, acl), python3.
set -euo pipefail

files=10000 runs=5 where=tmpfs,disk bin= sparse=1 keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --files) files=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --where) where=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --no-sparse) sparse=0; shift ;;
        --keep) keep=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench_meta.sh needs root (it mirrors owners)" >&2; exit 2; }
for tool in rsync setfattr setfacl getfacl python3; do
    command -v $tool >/dev/null || { echo "needs $tool (apt-get install rsync attr acl)" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release -q)
    bin=$here/target/release/datasafe
fi

make_tree() { # DIR
    local src=$1
    python3 "$here/scripts/mktree.py" "$src" --files "$files" --seed 1 >/dev/null
    python3 - "$src" "$sparse" <<'EOF'
import os, random, subprocess, sys
src, sparse = sys.argv[1], sys.argv[2] == "1"
rng = random.Random(1)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
acl_dirs = set()
for i, f in enumerate(files):
    if i % 3 == 1:
        os.chown(f, 65534, 65534)
    elif i % 3 == 2:
        os.chown(f, 1234, 4321)
    if i % 10 == 0:
        os.setxattr(f, "user.origin", b"bench-%d" % i)
        os.setxattr(f, "user.checked", bytes(rng.randrange(256) for _ in range(16)))
    if i % 20 == 0:
        subprocess.run(["setfacl", "-m", "u:65534:rw", f], check=True)
        acl_dirs.add(os.path.dirname(f))
for d in sorted(acl_dirs):
    subprocess.run(["setfacl", "-d", "-m", "u:65534:rx", d], check=True)
pool = files[:]
rng.shuffle(pool)
n = 0
for group in [2] * 300 + [3] * 100:
    first = pool.pop()
    for k in range(1, group):
        other = pool.pop()
        os.unlink(other)
        os.link(first, other)
        n += 1
if sparse:
    with open(os.path.join(src, "disk.img"), "wb") as f:
        f.truncate(2 << 30)
        f.seek(100 << 20)
        f.write(os.urandom(1 << 20))
print(f"tree: {len(files)} files, {n} extra hard-link names, sparse file: {sparse}", file=sys.stderr)
EOF
}

check() { # SRC DST: what rsync -aHSXA would keep, compared
    python3 - "$1" "$2" <<'EOF'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
def facts(root):
    out, groups = {}, {}
    for d, dirs, fs in os.walk(root):
        dirs[:] = [x for x in dirs if not (d == root and x == ".datasafe")]
        for n in dirs + fs:
            p = os.path.join(d, n); st = os.lstat(p); rel = os.path.relpath(p, root)
            xs = {} if os.path.islink(p) else {a: os.getxattr(p, a, follow_symlinks=False) for a in os.listxattr(p, follow_symlinks=False)}
            groups.setdefault(st.st_ino, []).append(rel)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, sorted(xs.items()),
                        st.st_blocks * 512 < st.st_size // 2 if st.st_size > 1 << 20 else None)
    return out, sorted(sorted(g) for g in groups.values() if len(g) > 1)
a, b = facts(src), facts(dst)
bad = [k for k in a[0] if a[0][k] != b[0].get(k)]
if bad or a[1] != b[1]:
    print(f"MISMATCH in {dst}: {bad[:5]} groups equal: {a[1] == b[1]}", file=sys.stderr); sys.exit(1)
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

for place in ${where//,/ }; do
    case $place in
        tmpfs) base=${BENCH_TMPFS:-/dev/shm} ;;
        disk) base=${BENCH_DISK:-/var/tmp} ;;
        *) echo "unknown place $place" >&2; exit 2 ;;
    esac
    work=$(mktemp -d "$base/bench_meta.XXXXXX")
    make_tree "$work/src"
    declare -A t=()
    for r in $(seq 0 "$runs"); do
        for tool in datasafe rsync rsync+sync; do
            rm -rf "$work/dst"; sync -f "$work" 2>/dev/null || sync
            start=$(now)
            case $tool in
                datasafe) "$bin" sync -q --xattrs --acls "$work/src" "$work/dst" >/dev/null ;;
                rsync) rsync -aHSXA "$work/src/" "$work/dst/" ;;
                rsync+sync) rsync -aHSXA "$work/src/" "$work/dst/"; sync -f "$work/dst" ;;
            esac
            took=$(echo "$(now) - $start" | bc)
            if [ "$r" = 0 ]; then
                check "$work/src" "$work/dst" || exit 1 # the warm-up run is checked
            else
                t[$tool]+="$took "
            fi
        done
    done
    ds=$(echo ${t[datasafe]} | tr ' ' '\n' | median)
    rs=$(echo ${t[rsync]} | tr ' ' '\n' | median)
    rss=$(echo ${t[rsync+sync]} | tr ' ' '\n' | median)
    printf '| %s | %d files | datasafe %.2f s | rsync -aHSXA %.2f s (%.2fx) | +sync %.2f s (%.2fx) |\n' \
        "$place" "$files" "$ds" "$rs" "$(echo "$ds / $rs" | bc -l)" "$rss" "$(echo "$ds / $rss" | bc -l)"
    [ "$keep" = 1 ] && echo "kept $work" || rm -rf "$work"
done
