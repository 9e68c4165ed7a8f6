"""The proxy's CPU work per request as instructions (valgrind's callgrind), which noise does not move.

Run on demand (pytest never collects it; needs ``valgrind``)::

    .venv/bin/python tests/bench/bench_instructions.py [--requests N] [--compare DIR ...]

On a shared two-core machine the CPU time per request that ``bench_proxy.py`` reports moves by 20%
from one minute to the next, which hides a change of 5%. Instructions executed do not depend on the
machine's other load (only the scheduling of the proxy's own event loop does, a little), so two trees
can be compared with a few hundred requests each.

The proxy of each tree (this one, and every ``--compare`` checkout, e.g. a ``git worktree`` of an
older commit) runs under ``valgrind --tool=callgrind`` with instrumentation off; the daemon runs
normally. After a warm-up, instrumentation is switched on for ``--requests`` 1-token chat
completions, or (in a second, fresh proxy) ``--requests`` x 2.5 ``GET /v1/models``, on one
keep-alive connection (http.client, as ``bench_proxy.py``), and the counts are dumped per thread:
``main`` is the event loop, ``writer`` the database's writer thread. Each tree uses its own
``tests/bench/bench_proxy.py`` to start its stack, so a tree from before a rename still starts its
own commands.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_bench(tree: Path) -> ModuleType:
    """``tree``'s own bench_proxy module (its commands, its way of creating keys); this process
    measures one tree, with that tree first on ``sys.path``."""
    sys.path.insert(0, str(tree))
    spec = importlib.util.spec_from_file_location("bench_proxy", tree / "tests/bench/bench_proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_proxy"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def measure(tree: Path, requests: int) -> dict[str, dict[str, float]]:
    """Instructions per request, per thread, of ``tree``'s proxy: {mode: {thread: Ir/request}}."""
    bp = load_bench(tree)
    out = Path(tempfile.mkdtemp(prefix="llms-ir-"))
    plain_process = bp.process

    def process(name: str, cmd: list[str], env: dict[str, str], log: Path):  # type: ignore[no-untyped-def]
        if name == "proxy":
            cmd = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                f"--callgrind-out-file={out}/cg.%p", *cmd,
            ]  # fmt: skip
        return plain_process(name, cmd, env, log)

    setattr(bp, "process", process)  # noqa: B010 (a module's attribute, replaced for this run)
    from runtime.backends.demo import demo_model_path

    model = demo_model_path()
    results: dict[str, dict[str, float]] = {}
    for mode, n in (("chat", requests), ("models", int(requests * 2.5))):  # a fresh proxy for each
        with tempfile.TemporaryDirectory(prefix="llms-ir-") as tmp, ExitStack() as stack:
            side, _ = bp.start_stack(stack, Path(tmp), model, 0)
            conn = bp.Conn(side)
            body = bp.one_token_body()
            for _ in range(30):
                conn.post("/v1/chat/completions", body)
            http_models = http.client.HTTPConnection(bp.HOST, side.port)
            for f in glob.glob(f"{out}/cg.*"):
                os.unlink(f)
            _control(side.pid, "-i", "on")
            for _ in range(n):
                if mode == "chat":
                    conn.post("/v1/chat/completions", body)
                else:
                    http_models.request("GET", "/v1/models", headers=side.headers())
                    reply = http_models.getresponse()
                    reply.read()
                    assert reply.status == 200
            _control(side.pid, "-d")
            time.sleep(0.5)  # the dump is written by the proxy's process
            results[mode] = _per_thread(out, n)
    shutil.rmtree(out, ignore_errors=True)
    return results


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _per_thread(out: Path, n: int) -> dict[str, float]:
    counts: dict[str, float] = {}
    for path in glob.glob(f"{out}/cg.*"):
        thread = path.rsplit("-", 1)[-1]
        with open(path) as f:
            total = next((int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:"))), 0)
        if total / n >= 1000:
            counts[thread] = total / n
    main = counts.pop("01", 0.0)
    writer = max(counts.values(), default=0.0)  # the busiest other thread: the database writer
    return {"main": main, "writer": writer, "all": main + sum(counts.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="1-token chats per tree (models: 2.5x)")
    parser.add_argument("--compare", type=Path, action="append", default=[], help="another checkout to measure")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # measure this tree, print JSON
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure(args.one, args.requests)))
        return 0
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    trees = [ROOT, *[p.resolve() for p in args.compare]]
    measured = {}
    for tree in trees:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cmd = [sys.executable, __file__, "--one", str(tree), "--requests", str(args.requests)]
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
        measured[tree] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'tree':40s} {'mode':7s} {'main Ir/req':>12s} {'writer':>10s} {'all':>10s} {'all / this':>10s}")
    for tree, results in measured.items():
        for mode, r in results.items():
            ratio = r["all"] / measured[ROOT][mode]["all"]
            figures = f"{r['main']:12,.0f} {r['writer']:10,.0f} {r['all']:10,.0f} {ratio:10.3f}"
            print(f"{str(tree)[-40:]:40s} {mode:7s} {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
