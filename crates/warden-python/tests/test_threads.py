"""Threads deciding at once with one engine: sessions stay exact under contention (the GIL is
released while deciding, so the threads really do run in the engine together)."""

from __future__ import annotations

import threading

import warden
from conftest import SUPPORT_POLICY

THREADS = 8
ROUNDS = 300


def run_threads(target) -> list:
    errors: list = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_each_threads_sessions_decide_exactly():
    engine = warden.Engine.from_file(str(SUPPORT_POLICY))
    verdicts: dict = {}

    def work(i: int) -> None:
        seen = []
        for r in range(ROUNDS):
            s = f"t{i}"
            seen.append(engine.decide({"session": s, "tool": "send_email", "args": {"to": "a@customer.test"}}).verdict)
            seen.append(engine.decide({"session": s, "tool": "crm.read_customer", "args": {"id": r}}).verdict)
            seen.append(engine.decide({"session": s, "tool": "send_email", "args": {"to": "a@customer.test"}}).rule or "allow")
            seen.append(engine.decide({"session": s, "tool": "human_approve"}).verdict)
        verdicts[i] = seen

    assert run_threads(work) == []
    for i in range(THREADS):
        assert verdicts[i] == ["allow", "allow", "no-exfil", "allow"] * ROUNDS


def test_one_session_shared_by_every_thread():
    engine = warden.Engine.from_file(str(SUPPORT_POLICY))
    before, after = threading.Barrier(THREADS), threading.Barrier(THREADS)
    outcomes: list = []
    lock = threading.Lock()

    def work(i: int) -> None:
        mine = [engine.decide({"session": "shared", "tool": "kb.search"}).verdict for _ in range(ROUNDS)]
        before.wait()
        if i == 0:
            engine.decide({"session": "shared", "tool": "crm.read_customer"})
        after.wait()
        mine += [engine.decide({"session": "shared", "tool": "send_email"}).rule for _ in range(ROUNDS)]
        with lock:
            outcomes.append(mine)

    assert run_threads(work) == []
    assert len(outcomes) == THREADS
    for mine in outcomes:
        assert mine == ["allow"] * ROUNDS + ["no-exfil"] * ROUNDS


def test_guarded_functions_in_threads():
    engine = warden.Engine.from_file(str(SUPPORT_POLICY))

    @warden.guard(tool="send_email", engine=engine, check_results=False)
    def send(to: str) -> str:
        return to

    @warden.guard(tool="crm.read_customer", engine=engine, check_results=False)
    def read(id: int) -> int:
        return id

    denied = [0] * THREADS

    def work(i: int) -> None:
        with warden.session(f"g{i}"):
            for r in range(50):
                send("a@customer.test")
                read(r)
                try:
                    send("a@customer.test")
                except warden.PolicyDenied:
                    denied[i] += 1
                engine.decide({"session": f"g{i}", "tool": "human_approve"})

    assert run_threads(work) == []
    assert denied == [50] * THREADS


def test_the_gil_is_released_while_deciding():
    # A busy Python thread waits for the GIL while the main thread is in the engine; it can
    # only count during `decide_many` if the engine let the GIL go (no Python code runs in
    # the main thread during the call).
    engine = warden.Engine.from_file(str(SUPPORT_POLICY))
    requests = [{"session": f"gil{i % 64}", "tool": "kb.search"} for i in range(20_000)]
    count = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin() -> None:
        started.set()
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    before = count[0]
    decisions = engine.decide_many(requests)
    during = count[0] - before
    stop.set()
    t.join()
    assert len(decisions) == len(requests) and all(d.allowed for d in decisions)
    assert during > 0
