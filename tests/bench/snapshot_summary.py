#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Helpers for tests/bench/snapshot_bench.sh, and its summary table.

The shell script drives the run; this file does what is awkward in shell:
timing with a monotonic clock, readiness (sd_notify READY=1, Redis PING),
Redis's wire protocol, and the final table and JSON. Standard library only.

  snapshot_summary.py supervise --ready notify|ping:PORT --ready-file F --log L -- CMD...
      Start CMD, time from fork to readiness (READY=1 on a NOTIFY_SOCKET this
      creates, or +PONG from a Redis on 127.0.0.1:PORT), write {"ready_s",
      "pid"} to F, then stay CMD's parent: forward SIGTERM/SIGINT, reap it and
      exit with its status. The caller waits on this process, so nothing is
      left to PID 1 (which need not reap in a container).
  snapshot_summary.py timeit --stdout F -- CMD...
      Run CMD with stdout to F; print the wall seconds; exit with its status.
  snapshot_summary.py jget FILE KEY[.KEY...]
      Print a value from a JSON document (nothing when absent).
  snapshot_summary.py fio-bw FILE read|write
      Print the bandwidth of fio's JSON output in bytes/s.
  snapshot_summary.py free-port
      Print a free TCP port on 127.0.0.1.
  snapshot_summary.py redis-fill --port P --blocks N --block B [--seed S]
      SET N keys with incompressible values of B bytes (pipelined RESP).
  snapshot_summary.py redis-cmd --port P CMD [ARG...]
      Send one command; print the reply (bulk strings as they are).
  snapshot_summary.py summary RAW OUT.json
      RAW holds "key<TAB>value" lines (a key repeated once per repetition);
      print the table of figures, baselines, ratios and targets and write
      every raw number, with medians, to OUT.json.
"""
import json
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

GIB = float(1 << 30)


# ---- process helpers --------------------------------------------------------

def _ping(port, sock_holder):
    """One PING; True on +PONG. Reuses a connection while Redis is loading."""
    try:
        if sock_holder[0] is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            sock_holder[0] = s
        s = sock_holder[0]
        s.sendall(b"PING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed")
            reply += chunk
        return reply.startswith(b"+PONG")
    except OSError:
        if sock_holder[0] is not None:
            sock_holder[0].close()
            sock_holder[0] = None
        return False


def cmd_supervise(args):
    opts, cmd = _split(args)
    ready = opts["--ready"]
    ready_file = opts["--ready-file"]
    log = open(opts["--log"], "ab")
    env = dict(os.environ)
    nsock = None
    if ready == "notify":
        path = ready_file + ".notify"
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        nsock.bind(path)
        env["NOTIFY_SOCKET"] = path
    elif ready.startswith("ping:"):
        port = int(ready[5:])
    else:
        sys.exit("supervise: --ready must be notify or ping:PORT")

    t0 = time.monotonic()
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def forward(sig, _frame):
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    def publish(doc):
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, ready_file)

    ready_s = None
    holder = [None]
    while ready_s is None and child.poll() is None:
        if nsock is not None:
            r, _, _ = select.select([nsock], [], [], 0.05)
            if r:
                msg = nsock.recv(65536).decode(errors="replace")
                if "READY=1" in msg.split("\n"):
                    ready_s = time.monotonic() - t0
        elif _ping(port, holder):
            ready_s = time.monotonic() - t0
        else:
            time.sleep(0.002)
    if holder[0] is not None:
        holder[0].close()
    if nsock is not None:
        nsock.close()
        os.unlink(env["NOTIFY_SOCKET"])
    if ready_s is None:
        publish({"error": "exited with status %d before it was ready" % child.returncode, "pid": child.pid})
    else:
        publish({"ready_s": ready_s, "pid": child.pid})
    rc = child.wait()
    sys.exit(128 - rc if rc < 0 else rc)


def cmd_timeit(args):
    opts, cmd = _split(args)
    with open(opts["--stdout"], "wb") as out:
        t0 = time.monotonic()
        rc = subprocess.call(cmd, stdout=out)
        dt = time.monotonic() - t0
    print("%.6f" % dt)
    sys.exit(rc)


def _split(args):
    """--opt value pairs, then -- and a command."""
    if "--" not in args:
        sys.exit("expected -- COMMAND")
    i = args.index("--")
    head, cmd = args[:i], args[i + 1:]
    if len(head) % 2 or not cmd:
        sys.exit("bad arguments: %r" % (args,))
    return dict(zip(head[::2], head[1::2])), cmd


# ---- small queries ------------------------------------------------------------

def cmd_jget(args):
    path, key = args
    try:
        with open(path) as f:
            v = json.load(f)
    except (OSError, ValueError):
        return
    for k in key.split("."):
        if not isinstance(v, dict) or k not in v:
            return
        v = v[k]
    if isinstance(v, (dict, list)):
        print(json.dumps(v))
    elif isinstance(v, bool):
        print("true" if v else "false")
    elif v is not None:
        print(v)


def cmd_fio_bw(args):
    path, rw = args
    with open(path) as f:
        text = f.read()
    # fio may print notes before the JSON document.
    doc = json.loads(text[text.index("{"):])
    print(sum(j[rw]["bw_bytes"] for j in doc["jobs"]))


def cmd_free_port(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


# ---- Redis --------------------------------------------------------------------

def _resp(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out.append(b"$%d\r\n" % len(p))
        out.append(p)
        out.append(b"\r\n")
    return b"".join(out)


def _read_reply(f):
    line = f.readline()
    if not line:
        raise OSError("connection closed")
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b"-", b":"):
        return line[:-2].decode(errors="replace")
    if t == b"$":
        n = int(rest)
        if n < 0:
            return "(nil)"
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if t == b"*":
        return "\n".join(_read_reply(f) for _ in range(int(rest)))
    raise OSError("unexpected reply %r" % line)


def cmd_redis_cmd(args):
    port = int(args[1])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(_resp(*args[2:]))
    print(_read_reply(s.makefile("rb")))
    s.close()


def cmd_redis_fill(args):
    o = dict(zip(args[::2], args[1::2]))
    port, n, block = int(o["--port"]), int(o["--blocks"]), int(o["--block"])
    # Incompressible values, like kvfill's xorshift blocks: slices of a random
    # buffer at distinct offsets, each led by its index. LZF (rdbcompression)
    # gives up on random bytes, so the RDB holds what kvpool's snapshot holds
    # either way.
    rng = random.Random(int(o.get("--seed", "1")))
    span = 64 << 20
    pool = memoryview(rng.randbytes(span + block))
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    f = s.makefile("rb")
    t0 = time.monotonic()
    pending = 0
    for i in range(n):
        off = (i * 1048583 * 7) % span
        key = b"kvbench:%d" % i
        head = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, block)
        s.sendall(head + i.to_bytes(8, "little"))
        s.sendall(pool[off + 8:off + block])
        s.sendall(b"\r\n")
        pending += 1
        if pending == 32:
            for _ in range(pending):
                r = _read_reply(f)
                if r != "+OK":
                    sys.exit("redis-fill: SET answered %s" % r)
            pending = 0
    for _ in range(pending):
        r = _read_reply(f)
        if r != "+OK":
            sys.exit("redis-fill: SET answered %s" % r)
    dt = time.monotonic() - t0
    s.close()
    print("%.6f" % dt)


# ---- summary ------------------------------------------------------------------

def _load_raw(path):
    raw = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or "\t" not in line:
                continue
            k, v = line.split("\t", 1)
            try:
                v = float(v) if any(c in v for c in ".eE") else int(v)
            except ValueError:
                pass
            raw.setdefault(k, []).append(v)
    return raw


def _median(vals):
    nums = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(nums) if nums else None


def cmd_summary(args):
    raw_path, out_path = args
    raw = _load_raw(raw_path)
    med = {k: _median(v) for k, v in raw.items()}
    one = {k: v[-1] for k, v in raw.items()}

    def m(k):
        return med.get(k)

    def per_s(nbytes, secs):
        return nbytes / secs / GIB if nbytes and secs else None

    # fio: the best configuration of the grid, and the median of its repetitions.
    fio = {}
    for rw in ("write", "read"):
        best = one.get("fio.%s.best" % rw)
        if best:
            fio[rw] = {"config": best, "gib_per_s": m("fio.%s.%s" % (rw, best)) / GIB,
                       "runs": [x / GIB for x in raw["fio.%s.%s" % (rw, best)]],
                       "grid": {k.split(".", 2)[2]: [x / GIB for x in v] for k, v in raw.items()
                                if k.startswith("fio.%s." % rw) and k != "fio.%s.best" % rw}}

    # fio's write made durable: a write over the file fio had just written,
    # with end_fsync=1 (fio's runtime includes the fsync). A snapshot is only
    # done once it is fdatasync'ed, so this is the like-for-like baseline;
    # the write above, whose data may still sit in the disk's write cache,
    # is reported beside it. The grid's best durable configuration is run
    # again right after each persist ("paired"): their median is the
    # baseline; without paired runs, the grid's best.
    durable = {k.split(".", 2)[2]: _median(v) for k, v in raw.items()
               if k.startswith("fio.write_durable.") and k != "fio.write_durable.best"}
    if durable:
        cfg = one.get("fio.write_durable.best") or max(durable, key=durable.get)
        paired = [x for x in raw.get("fio.write_paired", []) if isinstance(x, (int, float))]
        fio["write_durable"] = {"config": cfg + (" paired" if paired else ""),
                                "gib_per_s": (statistics.median(paired) if paired
                                              else durable.get(cfg, max(durable.values()))) / GIB,
                                "paired_runs": [x / GIB for x in paired],
                                "grid": {k: v / GIB for k, v in durable.items()}}

    data = m("kv.persist.bytes") or m("kv.fill_bytes")
    persist_file = m("kv.persist.file_bytes") or data
    figs = {}
    if m("kv.persist.wall_s"):
        # The first persist writes a new file; the later ones are written
        # over the spare it left (steady state for a daemon that persists
        # at every stop): the headline figure is theirs, the first is shown
        # beside it.
        runs_w = raw["kv.persist.wall_s"]
        recycled = ['"recycled_spare":true' in j for j in raw.get("kv.persist.json", [])]
        over_spare = [w for w, r in zip(runs_w, recycled) if r]
        new_file = [w for w, r in zip(runs_w, recycled) if not r] or runs_w
        steady = _median(over_spare) if over_spare else _median(runs_w)
        figs["persist_file_gib_s"] = per_s(persist_file, steady)
        figs["persist_data_gib_s"] = per_s(data, steady)
        figs["persist_first_file_gib_s"] = per_s(persist_file, _median(new_file))
        figs["persist_daemon_file_gib_s"] = per_s(persist_file, m("kv.persist.daemon_s"))
    if m("kv.restore.wall_s"):
        rfile = m("kv.restore.file_bytes") or persist_file
        figs["restore_file_gib_s"] = per_s(rfile, m("kv.restore.wall_s"))
        figs["restore_data_gib_s"] = per_s(m("kv.restore.bytes") or data, m("kv.restore.wall_s"))
        figs["restore_daemon_file_gib_s"] = per_s(rfile, m("kv.restore.daemon_s"))
    if m("kv.start_restore.ready_s"):
        figs["start_restore_data_gib_s"] = per_s(data, m("kv.start_restore.ready_s"))
    rbytes = m("redis.bytes")
    if m("redis.save_s"):
        figs["redis_save_gib_s"] = per_s(rbytes, m("redis.save_s"))
    if m("redis.load_ready_s"):
        figs["redis_load_gib_s"] = per_s(rbytes, m("redis.load_ready_s"))

    rows = []

    def row(name, value, unit, base_name, base, target, higher=True):
        ratio = value / base if value is not None and base else None
        if target is None:
            verdict = "info"
        elif isinstance(target, tuple):  # an absolute bound: ("<", 0.1)
            verdict = "n/a" if value is None else ("PASS" if value < target[1] else "MISS")
        else:
            verdict = "n/a" if ratio is None else ("PASS" if ratio >= target else "MISS")
        rows.append({"figure": name, "value": value, "unit": unit, "baseline": base_name,
                     "baseline_value": base, "ratio": ratio,
                     "target": (">= %gx" % target) if isinstance(target, float) else
                               ("< %g %s" % (target[1], unit)
                                if isinstance(target, tuple) else "-"),
                     "verdict": verdict})

    fw = fio.get("write", {})
    fr = fio.get("read", {})
    row("persist (file bytes / wall s)", figs.get("persist_file_gib_s"), "GiB/s",
        "fio seq write %s" % fw.get("config", "-"), fw.get("gib_per_s"), 0.9)
    row("persist into a new file (no spare yet)", figs.get("persist_first_file_gib_s"), "GiB/s",
        "fio seq write %s" % fw.get("config", "-"), fw.get("gib_per_s"), None)
    fd = fio.get("write_durable", {})
    row("persist (file bytes / wall s)", figs.get("persist_file_gib_s"), "GiB/s",
        "fio write + end_fsync %s" % fd.get("config", "-"), fd.get("gib_per_s"), 0.9)
    row("restore (file bytes / wall s)", figs.get("restore_file_gib_s"), "GiB/s",
        "fio seq read %s" % fr.get("config", "-"), fr.get("gib_per_s"), 0.9)
    row("persist (data bytes / wall s)", figs.get("persist_data_gib_s"), "GiB/s",
        "redis SAVE", figs.get("redis_save_gib_s"), 3.0)
    row("restore (data bytes / wall s)", figs.get("restore_data_gib_s"), "GiB/s",
        "redis restart-load", figs.get("redis_load_gib_s"), 2.0)
    row("start -> READY=1, restoring (data / s)", figs.get("start_restore_data_gib_s"), "GiB/s",
        "redis start -> PONG", figs.get("redis_load_gib_s"), None)
    ra = m("kv.reattach.ready_s")
    row("warm restart %s pool -> READY=1" % _size(m("kv.reattach.size")),
        ra * 1000 if ra is not None else None, "ms", "-", None, ("<", 100.0))
    sr = m("kv.start_restore.ready_s")
    row("start -> READY=1 with %s snapshot" % _size(data),
        sr, "s", "-", None, None)

    doc = {"raw": raw, "median": med, "fio": fio, "figures": figs, "table": rows,
           "info": {k[5:]: v for k, v in one.items() if k.startswith("info.")}}
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)

    def fmt(v, unit=""):
        if v is None:
            return "-"
        return ("%.1f" % v if unit == "ms" else "%.3f" % v) + (" " + unit if unit else "")

    info = doc["info"]
    print("date %s; %s cores (%s), %s RAM; kernel %s" % (info.get("date", "?"), info.get("nproc", "?"),
                                                       info.get("cpu", "?"), info.get("mem", "?"),
                                                       info.get("kernel", "?")))
    print("filesystem %s; device %s; dir %s" % (info.get("filesystem", "?"), info.get("device", "?"),
                                                info.get("dir", "?")))
    print("fio %s, redis %s; kvpool %s" % (info.get("fio_version", "?"), info.get("redis_version", "?"),
                                           info.get("git", "?")))
    print()
    hdr = ("figure", "kvpool", "baseline", "base value", "ratio", "target", "result")
    lines = [(r["figure"], fmt(r["value"], r["unit"]), r["baseline"],
              fmt(r["baseline_value"], r["unit"] if r["baseline_value"] is not None else ""),
              "-" if r["ratio"] is None else "%.2fx" % r["ratio"], r["target"], r["verdict"])
             for r in rows]
    w = [max(len(x[i]) for x in lines + [hdr]) for i in range(len(hdr))]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)).rstrip())
    print("  ".join("-" * w[i] for i in range(len(hdr))))
    for x in lines:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(x)).rstrip())

    print()
    print("details (medians of %s repetitions; all runs in %s):" % (one.get("info.reps", "?"), out_path))

    def runs(key, scale=1.0, unit="s"):
        v = raw.get(key)
        return "-" if not v else ", ".join(("%.3f" % (x * scale)) for x in v) + " " + unit

    for rw in ("write", "read"):
        if rw in fio:
            grid = ", ".join("%s %.2f" % (k, statistics.median(v)) for k, v in fio[rw]["grid"].items())
            print("  fio %-5s grid GiB/s: %s" % (rw, grid))
            if rw == "write" and "write_durable" in fio:
                fd = fio["write_durable"]
                print("  fio write over its file + end_fsync grid GiB/s: %s" % ", ".join(
                    "%s %.2f" % kv for kv in fd["grid"].items()))
                if fd["paired_runs"]:
                    print("  fio write + end_fsync %s, each right after a persist: %s GiB/s" % (
                        fd["config"], ", ".join("%.3f" % x for x in fd["paired_runs"])))
            print("  fio %-5s best %s runs: %s GiB/s" % (rw, fio[rw]["config"],
                                                     ", ".join("%.3f" % x for x in fio[rw]["runs"])))
    if data:
        print("  snapshot: %d blocks, data %s, file %s" % (m("kv.blocks") or 0, _size(data), _size(persist_file)))
    print("  kvpool persist wall: %s; daemon: %s (%s GiB/s file)" % (
        runs("kv.persist.wall_s"), runs("kv.persist.daemon_s"), fmt(figs.get("persist_daemon_file_gib_s"))))
    print("  kvpool restore wall: %s; daemon: %s (%s GiB/s file)" % (
        runs("kv.restore.wall_s"), runs("kv.restore.daemon_s"), fmt(figs.get("restore_daemon_file_gib_s"))))
    print("  kvpool start->READY restoring: %s; daemon restore: %s" % (
        runs("kv.start_restore.ready_s"), runs("kv.start_restore.daemon_s")))
    print("  kvpool warm restart (%s, %s filled): %s" % (
        _size(m("kv.reattach.size")), _size(m("kv.reattach.fill_bytes")), runs("kv.reattach.ready_s", 1000, "ms")))
    if rbytes:
        print("  redis %s (%s): %d keys, %s data, RDB %s; fill %.2f s" % (
            one.get("info.redis_version", "?"), one.get("info.redis_config", "?"), m("redis.keys") or 0,
            _size(rbytes), _size(m("redis.rdb_bytes")), m("redis.fill_s") or 0))
        print("  redis SAVE: %s; start->PONG: %s; log 'DB loaded': %s" % (
            runs("redis.save_s"), runs("redis.load_ready_s"), runs("redis.load_log_s")))
    for k in sorted(one):
        if k.startswith("note."):
            print("  note: %s" % one[k])


def _size(n):
    if not n:
        return "-"
    for unit, div in (("GiB", GIB), ("MiB", float(1 << 20))):
        if n >= div:
            return "%.2f %s" % (n / div, unit)
    return "%d B" % n


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmds = {"supervise": cmd_supervise, "timeit": cmd_timeit, "jget": cmd_jget, "fio-bw": cmd_fio_bw, 
            "free-port": cmd_free_port, "redis-fill": cmd_redis_fill, "redis-cmd": cmd_redis_cmd,
            "summary": cmd_summary}
    fn = cmds.get(sys.argv[1])
    if fn is None:
        sys.exit(__doc__)
    fn(sys.argv[2:])


if __name__ == "__main__":
    main()
