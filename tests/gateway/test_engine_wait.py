"""server/vllm_plugins/engine_wait.py on vLLM's own shared-memory queue: a waiting engine-core reader sleeps instead of
spinning, every notification reaches it, and every message arrives in order."""

from __future__ import annotations

import threading
import time

import pytest

from server.vllm_plugins import engine_wait

shm_broadcast = pytest.importorskip("vllm.distributed.device_communicators.shm_broadcast")
zmq = pytest.importorskip("zmq")


@pytest.fixture
def vllm_spin_condition(monkeypatch):
    """Restore vLLM's SpinCondition after the test, whatever it patched."""
    cls = shm_broadcast.SpinCondition
    monkeypatch.setattr(cls, "__init__", cls.__init__)
    monkeypatch.setattr(cls, "wait", cls.wait)
    return cls


@pytest.fixture
def engine_core_queue(vllm_spin_condition):
    """A real queue whose writer notifies reliably and whose reader sleeps, as the plugin sets up the
    worker-to-engine-core queue."""
    vllm_spin_condition.__init__ = engine_wait._reliable_init
    vllm_spin_condition.wait = engine_wait.sleeping_wait(vllm_spin_condition.wait)
    writer = shm_broadcast.MessageQueue(n_reader=1, n_local_reader=1)
    reader = shm_broadcast.MessageQueue.create_from_handle(writer.export_handle(), 0)
    ready = threading.Thread(target=writer.wait_until_ready)
    ready.start()
    reader.wait_until_ready()
    ready.join()
    # ZeroMQ's slow joiner: the reader's subscription reaches the writer a moment after it connects, and
    # notifications sent before that are not delivered (the engine's 20 ms poll covers it); wait for it here
    socket, deadline = reader._spin_condition.local_notify_socket, time.monotonic() + 60
    while True:
        writer.enqueue("hello")
        notified = socket.poll(timeout=100)
        assert reader.dequeue(timeout=5) == "hello"
        if notified:
            break
        assert time.monotonic() < deadline, "the reader's subscription never arrived"
    while socket.poll(timeout=0):
        socket.recv()
    yield writer, reader
    reader.shutdown()


def test_an_active_reader_sleeps_instead_of_spinning(engine_core_queue):
    _, reader = engine_core_queue
    condition = reader._spin_condition
    condition.record_read()  # active: vLLM's wait would return at once, after a sched_yield, and spin
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(10):
        condition.wait()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert wall >= 10 * engine_wait.ACTIVE_POLL_MS / 1000 * 0.9  # each wait slept until its bound
    assert cpu < wall / 2


def test_every_message_notifies_the_reader(engine_core_queue):
    writer, reader = engine_core_queue
    socket = reader._spin_condition.local_notify_socket
    for step in range(50):
        writer.enqueue({"step": step})
        assert socket.poll(timeout=5000), f"notification {step} was dropped"  # vLLM's own drop all but one
        while socket.poll(timeout=0):
            socket.recv()
        assert reader.dequeue(timeout=5)["step"] == step


def test_messages_arrive_in_order_while_the_reader_sleeps(engine_core_queue):
    writer, reader = engine_core_queue
    received = []

    def read() -> None:
        for _ in range(300):
            received.append(reader.dequeue(timeout=10)["step"])

    thread = threading.Thread(target=read)
    thread.start()
    for step in range(300):
        writer.enqueue({"step": step})
        if step % 30 == 0:
            time.sleep(0.01)  # let the reader fall asleep now and then
    thread.join(timeout=30)
    assert received == list(range(300))


def test_outside_the_engine_core_only_writers_change(vllm_spin_condition):
    vllm_wait = vllm_spin_condition.wait
    engine_wait.register()  # this test process is not vLLM's engine core
    assert vllm_spin_condition.wait is vllm_wait  # nobody here sleeps where vLLM spins
    context = zmq.Context()
    writer = vllm_spin_condition(is_reader=False, context=context, notify_address="inproc://flywheel-test")
    assert writer.local_notify_socket.getsockopt(zmq.SNDHWM) == engine_wait.NOTIFY_QUEUE
    writer.local_notify_socket.close(linger=0)
    context.term()
